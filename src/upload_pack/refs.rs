//! The refs a repository advertises, shared by the v0 advertisement and v2 `ls-refs`.

use gix::ObjectId;
use gix::bstr::{BString, ByteSlice};

use crate::Result;

/// One advertised ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedRef {
    /// Full name, e.g. `HEAD` or `refs/heads/main`.
    pub name: BString,
    /// What the ref points at (the tag object for annotated tags); `None` for an
    /// unborn symbolic ref such as `HEAD` in an empty repository.
    pub target: Option<ObjectId>,
    /// For annotated tags: the object at the end of the tag chain.
    pub peeled: Option<ObjectId>,
    /// For symbolic refs: the ref pointed to.
    pub symref_target: Option<BString>,
}

impl AdvertisedRef {
    /// An annotated tag under `refs/tags/`: (tag object, peeled object). Used for
    /// `include-tag`.
    pub fn as_annotated_tag(&self) -> Option<(ObjectId, ObjectId)> {
        match (
            self.name.starts_with(b"refs/tags/"),
            self.target,
            self.peeled,
        ) {
            (true, Some(tag), Some(peeled)) => Some((tag, peeled)),
            _ => None,
        }
    }
}

/// What a listing must produce.
#[derive(Debug, Clone, Copy)]
pub struct Listing<'a> {
    /// Fill in [`AdvertisedRef::peeled`]; without it no tag object is read.
    pub peel: bool,
    /// Only refs whose names start with one of these (all when empty): v2
    /// `ref-prefix`, applied before any per-ref work.
    pub prefixes: &'a [Vec<u8>],
}

impl Listing<'_> {
    /// Everything, peeled: the v0 advertisement and fetches.
    pub const ALL: Listing<'static> = Listing {
        peel: true,
        prefixes: &[],
    };

    fn wants(&self, name: &[u8]) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| name.starts_with(p))
    }
}

/// `HEAD` first, then every ref in name order, as git advertises them.
pub fn collect(repo: &gix::Repository) -> Result<Vec<AdvertisedRef>> {
    list(repo, Listing::ALL)
}

/// [`collect`], restricted to what `listing` asks for.
///
/// Refs that cannot be resolved (dangling symrefs other than `HEAD`, refs to missing
/// objects) are skipped like git skips broken refs.
///
/// Peeled values come from `packed-refs` where git takes them from there: its `^`
/// lines, and under the `fully-peeled` trait (or `peeled`, for `refs/tags/`) a
/// packed ref without one is known not to be an annotated tag, so no object is
/// read. Loose refs, and packed ones without those traits, are peeled by reading
/// the objects, as git does.
pub fn list(repo: &gix::Repository, listing: Listing<'_>) -> Result<Vec<AdvertisedRef>> {
    let packed = Packed::read(repo);
    let mut out = Vec::new();
    if listing.wants(b"HEAD")
        && let Some(head) = repo.try_find_reference("HEAD")?
        && let Some(r) = describe(repo, head, true, listing.peel, packed.as_ref())?
    {
        out.push(r);
    }
    let platform = repo.references()?;
    for r in platform.all()? {
        let Ok(r) = r else { continue };
        if !listing.wants(r.name().as_bstr()) {
            continue;
        }
        if let Some(r) = describe(repo, r, false, listing.peel, packed.as_ref())? {
            out.push(r);
        }
    }
    Ok(out)
}

/// What `packed-refs` says about peeling. Its `^` lines come with the refs gix
/// reads from it (`peeled`); here are the file's traits, and the names that are
/// loose refs too (those win, and git reads their objects).
#[derive(Debug)]
struct Packed {
    /// Names of loose refs, which override packed ones of the same name.
    loose: std::collections::HashSet<BString>,
    /// `fully-peeled`: every packed ref that is an annotated tag has its `^` line.
    fully_peeled: bool,
    /// `peeled`: every packed ref under `refs/tags/` that is one has its `^` line.
    tags_peeled: bool,
}

impl Packed {
    /// `None` without a `packed-refs` header or when the loose refs cannot be
    /// listed: then every ref is peeled by reading.
    fn read(repo: &gix::Repository) -> Option<Self> {
        // The traits are on the header line, which gix reads but does not expose
        // (its buffer starts after it).
        let header = packed_refs_header(&repo.refs.packed_refs_path());
        let traits = header.strip_prefix(b"# pack-refs with:")?;
        let has = |t: &[u8]| traits.split(|&b| b == b' ').any(|w| w == t);
        let loose_refs = repo.refs.loose_iter().ok()?;
        let mut loose = std::collections::HashSet::new();
        for r in loose_refs.flatten() {
            loose.insert(r.name.as_bstr().to_owned());
        }
        Some(Packed {
            loose,
            fully_peeled: has(b"fully-peeled"),
            tags_peeled: has(b"peeled"),
        })
    }

    /// The peeled value of `r` if `packed-refs` tells it: `Some(None)` for "not an
    /// annotated tag". `None` when the objects must be read (a loose ref, or a
    /// packed one the traits say nothing about).
    fn peeled(&self, r: &gix::refs::Reference) -> Option<Option<ObjectId>> {
        let name = r.name.as_bstr();
        if self.loose.contains(name) {
            return None;
        }
        if r.peeled.is_some()
            || self.fully_peeled
            || (self.tags_peeled && name.starts_with(b"refs/tags/"))
        {
            return Some(r.peeled);
        }
        None
    }
}

/// The first line of `packed-refs` (at most 256 bytes: git's header is short).
fn packed_refs_header(path: &std::path::Path) -> Vec<u8> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let line = head[..n].split(|&b| b == b'\n').next().unwrap_or_default();
    if n == head.len() && line.len() == n {
        return Vec::new(); // no end of line in reach: not a header we know
    }
    line.strip_suffix(b"\r").unwrap_or(line).to_vec()
}

fn describe(
    repo: &gix::Repository,
    mut r: gix::Reference<'_>,
    allow_unborn: bool,
    peel: bool,
    packed: Option<&Packed>,
) -> Result<Option<AdvertisedRef>> {
    let name = r.name().as_bstr().to_owned();
    // Read the symbolic target first: peeling rewrites the reference in place.
    let symref_target = match r.target() {
        gix::refs::TargetRef::Symbolic(t) => Some(t.as_bstr().to_owned()),
        gix::refs::TargetRef::Object(_) => None,
    };
    let target = match &symref_target {
        Some(_) => match r.follow_to_object() {
            Ok(id) => id.detach(),
            Err(_) if allow_unborn => {
                return Ok(Some(AdvertisedRef {
                    name,
                    target: None,
                    peeled: None,
                    symref_target,
                }));
            }
            Err(_) => return Ok(None),
        },
        None => r.target().try_id().expect("not symbolic").to_owned(),
    };
    // git skips refs to missing objects (`ref_resolves_to_object`): an index
    // lookup, no object read.
    if !repo.has_object(target) {
        return Ok(None);
    }
    let peeled = if !peel {
        None
    } else {
        let known = match &symref_target {
            // The ref it points to, as packed-refs has it (one lookup).
            Some(t) => repo
                .try_find_reference(t.as_bstr())
                .ok()
                .flatten()
                .filter(|t| t.inner.target.try_id() == Some(target.as_ref()))
                .and_then(|t| packed?.peeled(&t.inner)),
            None => packed.and_then(|p| p.peeled(&r.inner)),
        };
        match known {
            Some(peeled) => peeled,
            None => {
                let Ok(peeled) = r.peel_to_id() else {
                    return Ok(None);
                };
                Some(peeled.detach()).filter(|p| *p != target)
            }
        }
    };
    Ok(Some(AdvertisedRef {
        name,
        target: Some(target),
        peeled,
        symref_target,
    }))
}

/// Format one v2 `ls-refs` line.
pub fn ls_refs_line(r: &AdvertisedRef, symrefs: bool, peel: bool) -> Vec<u8> {
    let mut line: Vec<u8> = match r.target {
        Some(id) => id.to_string().into_bytes(),
        None => b"unborn".to_vec(),
    };
    line.push(b' ');
    line.extend_from_slice(&r.name);
    if symrefs && let Some(t) = &r.symref_target {
        line.extend_from_slice(b" symref-target:");
        line.extend_from_slice(t);
    }
    if peel && let Some(p) = r.peeled {
        line.extend_from_slice(format!(" peeled:{p}").as_bytes());
    }
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_refs_lines() {
        let id = ObjectId::from_hex(b"1111111111111111111111111111111111111111").unwrap();
        let peeled = ObjectId::from_hex(b"2222222222222222222222222222222222222222").unwrap();
        let tag = AdvertisedRef {
            name: "refs/tags/v1".into(),
            target: Some(id),
            peeled: Some(peeled),
            symref_target: None,
        };
        assert_eq!(
            ls_refs_line(&tag, true, true),
            format!("{id} refs/tags/v1 peeled:{peeled}\n").into_bytes()
        );
        assert_eq!(
            ls_refs_line(&tag, true, false),
            format!("{id} refs/tags/v1\n").into_bytes()
        );
        assert_eq!(tag.as_annotated_tag(), Some((id, peeled)));
        let head = AdvertisedRef {
            name: "HEAD".into(),
            target: None,
            peeled: None,
            symref_target: Some("refs/heads/main".into()),
        };
        assert_eq!(
            ls_refs_line(&head, true, true),
            b"unborn HEAD symref-target:refs/heads/main\n".to_vec()
        );
    }
}
