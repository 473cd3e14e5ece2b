//! The refs a repository advertises, shared by the v0 advertisement and v2 `ls-refs`.

use gix::ObjectId;
use gix::bstr::BString;

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

/// `HEAD` first, then every ref in name order, as git advertises them.
///
/// Refs that cannot be resolved (dangling symrefs other than `HEAD`, refs to missing
/// objects) are skipped like git skips broken refs.
pub fn collect(repo: &gix::Repository) -> Result<Vec<AdvertisedRef>> {
    let mut out = Vec::new();
    if let Some(head) = repo.try_find_reference("HEAD")? {
        if let Some(r) = describe(head, true)? {
            out.push(r);
        }
    }
    let platform = repo.references()?;
    for r in platform.all()? {
        let Ok(r) = r else { continue };
        if let Some(r) = describe(r, false)? {
            out.push(r);
        }
    }
    Ok(out)
}

fn describe(mut r: gix::Reference<'_>, allow_unborn: bool) -> Result<Option<AdvertisedRef>> {
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
    let Ok(peeled) = r.peel_to_id() else {
        return Ok(None);
    };
    let peeled = peeled.detach();
    Ok(Some(AdvertisedRef {
        name,
        target: Some(target),
        peeled: (peeled != target).then_some(peeled),
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
