//! The second pass: read each blob, apply what git applies on the way out
//! (`export-ignore`, end-of-line and `ident` conversion), and append it to the
//! archive in the requested format.
//!
//! `working-tree-encoding` to UTF-16 and UTF-32 is done by [`super::encoding`],
//! other encodings by gix; one that neither knows is left as UTF-8, with a warning.
//!
//! Attributes come from the archived tree's `.gitattributes` (found by the first
//! pass) and `$GIT_DIR/info/attributes`, as `git archive` reads them in a bare
//! repository. Filter *drivers* (`filter.<name>.smudge`, `.process`) are never
//! run: gitd runs no program a repository configures, so such files are archived
//! as stored, and the client is warned. `export-subst` is not supported (it needs
//! git's whole `--pretty` formatter): such files are archived unchanged, and the
//! client is warned when one holds a `$Format:…$` placeholder.

use std::io::Write;

use gix::ObjectId;
use gix::bstr::{BStr, BString, ByteSlice};
use gix::filter::plumbing::driver::apply::Delay;
use gix::filter::plumbing::pipeline::convert::{ToWorktreeOutcome, to_worktree};

use super::encoding::Utf;
use super::tar::{Gzip, TarWriter};
use super::walk::{GITLINK, LINK, Visitor};
use super::zip::ZipWriter;
use super::{Entry, Sink};

/// The archive being written.
pub enum Archive {
    Tar(TarWriter<Sink>),
    TarGz(TarWriter<Gzip<Sink>>),
    Zip(ZipWriter<Sink>),
}

impl Archive {
    fn entry(&mut self, e: &Entry<'_>, binary: Option<bool>) -> std::io::Result<()> {
        match self {
            Archive::Tar(w) => w.entry(e),
            Archive::TarGz(w) => w.entry(e),
            Archive::Zip(w) => w.entry(e, binary),
        }
    }

    /// Write what ends the archive and flush it to the channel.
    pub fn finish(self, commit: Option<ObjectId>) -> std::io::Result<()> {
        let mut sink = match self {
            Archive::Tar(w) => w.finish()?,
            Archive::TarGz(w) => w.finish()?.finish()?,
            Archive::Zip(w) => {
                let warnings: Vec<String> = w
                    .non_utf8
                    .iter()
                    .map(|p| format!("warning: path is not valid UTF-8: {}\n", crate::escape(p)))
                    .collect();
                let mut sink = w.finish(commit)?;
                for warning in warnings {
                    sink.message(warning)?;
                }
                sink
            }
        };
        sink.flush()
    }

    /// Send `text` to the client's standard error.
    pub fn message(&mut self, text: String) -> std::io::Result<()> {
        self.sink().message(text)
    }

    fn sink(&mut self) -> &mut Sink {
        match self {
            Archive::Tar(w) => w.sink(),
            Archive::TarGz(w) => w.sink().sink(),
            Archive::Zip(w) => w.sink(),
        }
    }
}

/// Where entries go: the archive, with the prefix in front of every path.
pub struct Out {
    pub archive: Archive,
    pub prefix: Vec<u8>,
    /// `-v`: name every entry on the client's standard error.
    pub verbose: bool,
    path: Vec<u8>,
}

impl Out {
    pub fn new(archive: Archive, prefix: Vec<u8>, verbose: bool) -> Self {
        Out {
            archive,
            prefix,
            verbose,
            path: Vec::new(),
        }
    }

    /// Write `rel` (a path without the prefix) with the prefix in front.
    fn write(
        &mut self,
        rel: &[u8],
        id: ObjectId,
        mode: u32,
        data: &[u8],
        binary: Option<bool>,
    ) -> crate::Result<()> {
        self.path.clear();
        if mode != PREFIX_DIR {
            self.path.extend_from_slice(&self.prefix);
        }
        self.path.extend_from_slice(rel);
        if self.verbose {
            let line = format!("{}\n", self.path.as_bstr());
            self.archive.sink().message(line)?;
        }
        let entry = Entry {
            path: &self.path,
            id,
            mode,
            data,
        };
        self.archive.entry(&entry, binary)?;
        Ok(())
    }
}

/// The mode git gives the directory entry of a prefix ending in `/`.
const PREFIX_DIR: u32 = 0o040777;

/// The writing visitor.
pub struct Writer<'a> {
    pub repo: &'a gix::Repository,
    pub out: Out,
    attributes: gix::worktree::Stack,
    /// `export-ignore`, `export-subst`, `diff`, `ident`, `filter` and
    /// `working-tree-encoding`.
    outcome: gix::attrs::search::Outcome,
    pipeline: gix::filter::plumbing::Pipeline,
    /// Directories entered but not written yet: `(path/, tree id, written)`.
    pending: Vec<(BString, ObjectId, bool)>,
    /// Files holding `$Format:` placeholders that were left unexpanded.
    pub unsubstituted: Vec<BString>,
    /// Files whose filter driver git would have run.
    pub unfiltered: Vec<BString>,
    /// Files left in UTF-8 for want of their `working-tree-encoding`.
    pub unencoded: Vec<BString>,
}

impl<'a> Writer<'a> {
    pub fn new(
        repo: &'a gix::Repository,
        out: Out,
        attribute_files: Vec<(BString, ObjectId)>,
    ) -> crate::Result<Self> {
        use gix::worktree::stack::state::{Attributes, attributes::Source};
        let mut buf = Vec::new();
        let mut collection = Default::default();
        let globals = gix::attrs::Search::new_globals(
            std::iter::empty::<std::path::PathBuf>(),
            &mut buf,
            &mut collection,
        )?;
        let info = repo.common_dir().join("info").join("attributes");
        let state = Attributes::new(globals, Some(info), Source::IdMapping, collection);
        let attributes = gix::worktree::Stack::new(
            repo.git_dir(),
            gix::worktree::stack::State::AttributesStack(state),
            gix::glob::pattern::Case::Sensitive,
            buf,
            attribute_files,
        );
        let mut outcome = gix::attrs::search::Outcome::default();
        outcome.initialize_with_selection(
            attributes.attributes_collection(),
            [
                "export-ignore",
                "export-subst",
                "diff",
                "ident",
                "filter",
                "working-tree-encoding",
            ],
        );
        let mut options = gix::filter::Pipeline::options(repo)?;
        // Never run programs the repository configures.
        options.drivers.clear();
        let pipeline =
            gix::filter::plumbing::Pipeline::new(Default::default(), repo.object_hash(), options);
        Ok(Writer {
            repo,
            out,
            attributes,
            outcome,
            pipeline,
            pending: Vec::new(),
            unsubstituted: Vec::new(),
            unfiltered: Vec::new(),
            unencoded: Vec::new(),
        })
    }

    /// git writes a directory entry for a prefix ending in `/` first.
    pub fn start(&mut self, tree: ObjectId) -> crate::Result<()> {
        let prefix = &self.out.prefix;
        if prefix.last() == Some(&b'/') {
            let mut len = prefix.len();
            while len > 1 && prefix[len - 2] == b'/' {
                len -= 1;
            }
            let path = prefix[..len].to_vec();
            self.out.write(&path, tree, PREFIX_DIR, &[], None)?;
        }
        Ok(())
    }

    /// Look up the selected attributes of `path`.
    fn attributes(&mut self, path: &BStr, mode: u32) -> crate::Result<Attrs> {
        use gix::attrs::StateRef;
        let index_mode = match mode {
            super::walk::TREE | GITLINK => gix::index::entry::Mode::DIR,
            LINK => gix::index::entry::Mode::SYMLINK,
            _ => gix::index::entry::Mode::FILE,
        };
        let platform = self
            .attributes
            .at_entry(path, Some(index_mode), &self.repo.objects)?;
        self.outcome.reset();
        platform.matching_attributes(&mut self.outcome);
        let mut states = self.outcome.iter_selected().map(|m| m.assignment.state);
        let ignore = states.next().is_some_and(|s| s.is_set());
        let subst = states.next().is_some_and(|s| s.is_set());
        let diff = states.next();
        let ident = states.next().is_some_and(|s| s.is_set());
        let config = self.repo.config_snapshot();
        // git runs a driver only when one is configured for the attribute's value.
        let driver = match states.next() {
            Some(StateRef::Value(name)) => ["smudge", "process"].iter().any(|key| {
                config
                    .string(format!("filter.{}.{key}", name.as_bstr()).as_str())
                    .is_some()
            }),
            _ => false,
        };
        let encoding = match states.next() {
            Some(StateRef::Value(label)) => Some(label.as_bstr().to_owned()),
            _ => None,
        };
        let binary = match diff {
            Some(StateRef::Unset) => Some(true),
            Some(StateRef::Value(driver)) => {
                config.boolean(format!("diff.{}.binary", driver.as_bstr()).as_str())
            }
            _ => None,
        };
        Ok(Attrs {
            ignore,
            subst,
            binary,
            ident,
            driver,
            encoding,
        })
    }

    /// Write the directories above the next entry that are not written yet.
    fn write_pending(&mut self) -> crate::Result<()> {
        for i in 0..self.pending.len() {
            if !self.pending[i].2 {
                self.pending[i].2 = true;
                let (path, id) = (self.pending[i].0.clone(), self.pending[i].1);
                self.out.write(&path, id, super::walk::TREE, &[], None)?;
            }
        }
        Ok(())
    }
}

impl Visitor for Writer<'_> {
    fn enter(&mut self, path: &BStr, id: ObjectId) -> crate::Result<bool> {
        if self.attributes(path, super::walk::TREE)?.ignore {
            return Ok(false);
        }
        let mut dir = path.to_owned();
        dir.push(b'/');
        self.pending.push((dir, id, false));
        Ok(true)
    }

    fn leave(&mut self) {
        self.pending.pop();
    }

    fn entry(&mut self, path: &BStr, id: ObjectId, mode: u32, wanted: bool) -> crate::Result<()> {
        if !wanted {
            return Ok(());
        }
        let Attrs {
            ignore,
            subst,
            binary,
            ident,
            driver,
            encoding,
        } = self.attributes(path, mode)?;
        // git writes the directories above an entry the walk reaches before it looks
        // at the entry's own `export-ignore`: a directory whose files are all
        // ignored is still in the archive, empty.
        self.write_pending()?;
        if ignore {
            return Ok(());
        }
        if mode == GITLINK {
            let mut dir = path.to_owned();
            dir.push(b'/');
            return self.out.write(&dir, id, mode, &[], None);
        }
        let blob = self
            .repo
            .find_object(id)
            .map_err(|e| format!("cannot read '{id}': {e}"))?
            .detach();
        if mode == LINK {
            return self.out.write(path, id, mode, &blob.data, binary);
        }
        // git expands `$Id$` before the other conversions, and spells it
        // `$Id: <hex> $`; gix's pipeline would write `$Id: <hex>$`, and then finds
        // no `$Id$` left to expand.
        let expanded = ident.then(|| ident_to_worktree(&blob.data, id)).flatten();
        let attributes = &mut self.attributes;
        let objects = &self.repo.objects;
        let converted = self.pipeline.convert_to_worktree(
            expanded.as_deref().unwrap_or(&blob.data),
            path,
            &mut |p, out| {
                if let Ok(platform) =
                    attributes.at_entry(p, Some(gix::index::entry::Mode::FILE), objects)
                {
                    platform.matching_attributes(out);
                }
            },
            to_worktree::Options {
                can_delay: Delay::Forbid,
                // Encodings gix does not know are handled below.
                unknown_encoding: to_worktree::UnknownEncoding::Ignore,
            },
        )?;
        let data = match converted {
            ToWorktreeOutcome::Unchanged(d) | ToWorktreeOutcome::Buffer(d) => d,
            ToWorktreeOutcome::Process(_) => {
                return Err("a filter driver was requested, but gitd runs none".into());
            }
        };
        if subst && has_placeholder(data) {
            self.unsubstituted.push(path.to_owned());
        }
        if driver {
            self.unfiltered.push(path.to_owned());
        }
        let mut encoded = None;
        if let Some(label) = &encoding {
            if let Some(utf) = Utf::from_label(label) {
                encoded = utf.encode(data);
                if encoded.is_none() {
                    // git's words; it, too, then archives the content as it is.
                    let text = format!(
                        "error: failed to encode '{}' from UTF-8 to {}\n",
                        crate::escape(path),
                        crate::escape(label)
                    );
                    self.out.archive.message(text)?;
                }
            } else {
                // encoding_rs knows some labels (`UCS-2`, `unicode`) only to write
                // UTF-8 for them.
                let encoded_by_gix = gix::filter::plumbing::encoding::Encoding::for_label(label)
                    .is_some_and(|e| e.output_encoding() == e);
                if !encoded_by_gix {
                    self.unencoded.push(path.to_owned());
                }
            }
        }
        let data = encoded.as_deref().unwrap_or(data);
        self.out.write(path, id, mode, data, binary)
    }
}

/// The attributes that decide how an entry is archived.
struct Attrs {
    /// `export-ignore`: left out.
    ignore: bool,
    /// `export-subst`: git would expand `$Format:…$` placeholders.
    subst: bool,
    /// Binary or not by the `diff` attribute, for zip's text flag.
    binary: Option<bool>,
    /// `ident`: expand `$Id$`.
    ident: bool,
    /// `filter=<name>` with a driver configured, which git would run.
    driver: bool,
    /// `working-tree-encoding=<label>`.
    encoding: Option<BString>,
}

/// git's `ident_to_worktree`: every `$Id$`, and every `$Id:…$` without a line break
/// or inner space, becomes `$Id: <blob id> $`. `None` when there is none.
fn ident_to_worktree(src: &[u8], id: ObjectId) -> Option<Vec<u8>> {
    if !src.windows(4).any(|w| w == b"$Id$" || w == b"$Id:") {
        return None;
    }
    let replacement = format!("Id: {id} $");
    let mut out = Vec::with_capacity(src.len() + 64);
    let mut rest = src;
    let mut changed = false;
    while let Some(dollar) = rest.find_byte(b'$') {
        out.extend_from_slice(&rest[..=dollar]);
        rest = &rest[dollar + 1..];
        if rest.len() < 3 || &rest[..2] != b"Id" {
            continue;
        }
        if rest[2] == b'$' {
            rest = &rest[3..];
        } else if rest[2] == b':' {
            let Some(end) = rest[3..].find_byte(b'$').map(|n| n + 3) else {
                break;
            };
            if rest[3..end].contains(&b'\n') {
                continue;
            }
            if end > 4
                && rest[4..end]
                    .find_byte(b' ')
                    .is_some_and(|spc| 4 + spc < end - 1)
            {
                continue;
            }
            rest = &rest[end + 1..];
        } else {
            continue;
        }
        out.extend_from_slice(replacement.as_bytes());
        changed = true;
    }
    out.extend_from_slice(rest);
    changed.then_some(out)
}

/// Whether `data` holds a `$Format:…$` placeholder that git would expand.
fn has_placeholder(data: &[u8]) -> bool {
    data.find(b"$Format:")
        .is_some_and(|at| data[at + 8..].contains(&b'$'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ident_expands_as_git_does() {
        let id = ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").unwrap();
        let expanded =
            |s: &str| ident_to_worktree(s.as_bytes(), id).map(|v| String::from_utf8(v).unwrap());
        let full = format!("$Id: {id} $");
        assert_eq!(expanded("a $Id$ b"), Some(format!("a {full} b")));
        // An expansion that crept into the repository is replaced.
        assert_eq!(expanded("$Id: old $ $Id$"), Some(format!("{full} {full}")));
        assert_eq!(expanded("x $Id:abc$ y"), Some(format!("x {full} y")));
        // Other systems' ids (inner spaces) and ones broken by a newline stay.
        assert_eq!(expanded("$Id: a b $"), None);
        assert_eq!(expanded("$Id: x\n$"), None);
        assert_eq!(expanded("$Id"), None);
        assert_eq!(expanded("no keyword $ at all"), None);
    }
}
