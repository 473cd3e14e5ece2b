//! The second pass: read each blob, apply what git applies on the way out
//! (`export-ignore`, end-of-line and `ident` conversion), and append it to the
//! archive in the requested format.
//!
//! Attributes come from the archived tree's `.gitattributes` (found by the first
//! pass) and `$GIT_DIR/info/attributes`, as `git archive` reads them in a bare
//! repository. Filter *drivers* (`filter.<name>.smudge`, `.process`) are never
//! run: gitd runs no program a repository configures. `export-subst` is not
//! supported (it needs git's whole `--pretty` formatter): such files are archived
//! unchanged, and the client is warned when one holds a `$Format:…$` placeholder.

use std::io::Write;

use gix::ObjectId;
use gix::bstr::{BStr, BString, ByteSlice};
use gix::filter::plumbing::driver::apply::Delay;
use gix::filter::plumbing::pipeline::convert::{ToWorktreeOutcome, to_worktree};

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
    /// `export-ignore`, `export-subst` and `diff`.
    outcome: gix::attrs::search::Outcome,
    pipeline: gix::filter::plumbing::Pipeline,
    /// Directories entered but not written yet: `(path/, tree id, written)`.
    pending: Vec<(BString, ObjectId, bool)>,
    /// Files holding `$Format:` placeholders that were left unexpanded.
    pub unsubstituted: Vec<BString>,
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
            ["export-ignore", "export-subst", "diff"],
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

    /// Look up the selected attributes of `path`; `(export-ignore, export-subst,
    /// binary by the diff attribute)`.
    fn attributes(&mut self, path: &BStr, mode: u32) -> crate::Result<(bool, bool, Option<bool>)> {
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
        let binary = match states.next() {
            Some(StateRef::Unset) => Some(true),
            Some(StateRef::Value(driver)) => self
                .repo
                .config_snapshot()
                .boolean(format!("diff.{}.binary", driver.as_bstr()).as_str()),
            _ => None,
        };
        Ok((ignore, subst, binary))
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
        if self.attributes(path, super::walk::TREE)?.0 {
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
        let (ignore, subst, binary) = self.attributes(path, mode)?;
        if ignore {
            return Ok(());
        }
        self.write_pending()?;
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
        let attributes = &mut self.attributes;
        let objects = &self.repo.objects;
        let converted = self.pipeline.convert_to_worktree(
            &blob.data,
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
                unknown_encoding: to_worktree::UnknownEncoding::Fail,
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
        self.out.write(path, id, mode, data, binary)
    }
}

/// Whether `data` holds a `$Format:…$` placeholder that git would expand.
fn has_placeholder(data: &[u8]) -> bool {
    data.find(b"$Format:")
        .is_some_and(|at| data[at + 8..].contains(&b'$'))
}
