//! Which entries go into an archive, and in which order: git's (`archive.c`).
//!
//! git reads the tree depth first in stored order, skips what the pathspecs cannot
//! match and `export-ignore` directories, and writes a directory only once the walk
//! reaches a file, link or submodule below it that the pathspecs match, before
//! looking at that entry's own `export-ignore`. So a directory whose files are all
//! ignored is in the archive, empty, while one holding only ignored directories, or
//! that a pathspec only passes through, is not. The walk here does the same with an
//! explicit stack, so a deeply nested tree cannot overflow the thread's stack.
//!
//! It runs twice per request. The first pass reads trees only: it counts entries and
//! blob sizes against the limits, checks that every pathspec matches something, and
//! collects the `.gitattributes` blobs, all before the first byte of the archive is
//! sent, so a refusal is a clean error rather than a truncated archive. The second
//! pass reads the blobs and writes.

use gix::ObjectId;
use gix::bstr::{BStr, BString, ByteSlice, ByteVec};
use gix::pathspec::Search;

/// Raw tree entry modes.
pub const TREE: u32 = 0o040000;
pub const GITLINK: u32 = 0o160000;
pub const LINK: u32 = 0o120000;

/// How much one request may archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Files, links and directories.
    pub max_entries: u64,
    /// Sum of the blob sizes (before end-of-line conversion).
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 200_000,
            max_bytes: 4 << 30,
        }
    }
}

/// The largest single blob: gix reads a blob whole into memory, so this bounds what
/// one archive request holds at once (git streams blobs above 512 MiB instead).
pub const MAX_FILE: u64 = 100 << 20;

/// The pathspecs of a request: one search for the walk and one per pathspec for
/// git's "did not match any files" check, which tests each on its own.
pub struct Pathspecs {
    all: Option<Search>,
    each: Vec<(String, Search)>,
}

impl Pathspecs {
    /// Parse `paths` with git's default pathspec magic; `Err` is the message.
    pub fn new(paths: &[String]) -> Result<Self, String> {
        let parse = |p: &String| {
            gix::pathspec::parse(p.as_bytes(), Default::default())
                .map_err(|e| format!("pathspec '{p}': {e}"))
        };
        let search = |patterns: Vec<gix::pathspec::Pattern>| {
            Search::from_specs(patterns, None, std::path::Path::new(""))
                .map_err(|e| format!("invalid pathspec: {e}"))
        };
        let everything = || Pathspecs {
            all: None,
            each: Vec::new(),
        };
        // An empty pathspec matches everything, and git does not check it.
        if paths.is_empty() || paths.iter().any(String::is_empty) {
            return Ok(everything());
        }
        let patterns = paths.iter().map(parse).collect::<Result<Vec<_>, _>>()?;
        if let Some((p, _)) = paths
            .iter()
            .zip(&patterns)
            .find(|(_, pattern)| !pattern.attributes.is_empty())
        {
            // Matching on attributes needs every `.gitattributes` of the tree before
            // the walk that finds them: not supported, and said so rather than
            // matching nothing.
            return Err(format!(
                "pathspec '{p}': the 'attr' magic is not supported by this server"
            ));
        }
        // So does one that names the top (`.`, `a/..`); gix's search would take it
        // literally, so it is left out and the other pathspecs decide.
        let names_top = |pattern: &gix::pathspec::Pattern| {
            let mut pattern = pattern.clone();
            !pattern.is_excluded()
                && pattern
                    .normalize(std::path::Path::new(""), std::path::Path::new(""))
                    .is_ok_and(|p| p.is_nil())
        };
        let (paths, patterns): (Vec<_>, Vec<_>) = paths
            .iter()
            .zip(patterns)
            .filter(|(_, pattern)| !names_top(pattern))
            .unzip();
        if patterns.is_empty() {
            return Ok(everything());
        }
        let mut each = Vec::with_capacity(paths.len());
        for (p, pattern) in paths.iter().zip(&patterns) {
            each.push(((*p).clone(), search(vec![pattern.clone()])?));
        }
        Ok(Pathspecs {
            all: Some(search(patterns)?),
            each,
        })
    }

    /// Whether anything below directory `path` may match (git's
    /// `tree_entry_interesting`).
    fn dir_wanted(&self, path: &BStr) -> bool {
        self.all
            .as_ref()
            .is_none_or(|s| s.can_match_relative_path(path, Some(true)))
    }

    fn file_wanted(&mut self, path: &BStr) -> bool {
        self.all.as_mut().is_none_or(|s| matches(s, path, false))
    }

    /// Note which single pathspecs `path` satisfies (git's `path_exists`).
    fn mark_found(&mut self, path: &BStr, is_dir: bool) {
        self.each.retain_mut(|(_, s)| !matches(s, path, is_dir));
    }

    /// The first pathspec that matched nothing.
    pub fn unmatched(&self) -> Option<&str> {
        self.each.first().map(|(p, _)| p.as_str())
    }
}

fn matches(search: &mut Search, path: &BStr, is_dir: bool) -> bool {
    search
        .pattern_matching_relative_path(path, Some(is_dir), &mut |_, _, _, _| false)
        .is_some_and(|m| !m.is_excluded())
}

/// What the walk tells its visitor, in git's order.
pub trait Visitor {
    /// A directory the pathspecs may want; `true` to walk into it.
    fn enter(&mut self, path: &BStr, id: ObjectId) -> crate::Result<bool>;
    /// The end of the directory last entered.
    fn leave(&mut self);
    /// A blob, link or submodule in a directory walked; `wanted` if the pathspecs
    /// match it.
    fn entry(&mut self, path: &BStr, id: ObjectId, mode: u32, wanted: bool) -> crate::Result<()>;
}

struct Frame {
    entries: Vec<(BString, u32, ObjectId)>,
    next: usize,
    /// Length of the walk's path up to and including this directory's `/`.
    base: usize,
}

/// Walk `tree` depth first in stored order, as git's `read_tree` does.
pub fn walk(
    repo: &gix::Repository,
    tree: ObjectId,
    specs: &mut Pathspecs,
    visitor: &mut dyn Visitor,
) -> crate::Result<()> {
    let mut path = BString::default();
    let mut stack = vec![Frame {
        entries: read_tree(repo, tree)?,
        next: 0,
        base: 0,
    }];
    while let Some(frame) = stack.last_mut() {
        let Some((name, mode, id)) = frame.entries.get(frame.next).cloned() else {
            stack.pop();
            if !stack.is_empty() {
                visitor.leave();
            }
            continue;
        };
        frame.next += 1;
        path.truncate(frame.base);
        path.push_str(&name);
        if mode == TREE {
            if specs.dir_wanted(path.as_ref()) && visitor.enter(path.as_ref(), id)? {
                specs.mark_found(path.as_ref(), true);
                let entries = read_tree(repo, id)?;
                path.push(b'/');
                stack.push(Frame {
                    entries,
                    next: 0,
                    base: path.len(),
                });
            }
        } else {
            let wanted = specs.file_wanted(path.as_ref());
            if wanted {
                specs.mark_found(path.as_ref(), mode == GITLINK);
            }
            visitor.entry(path.as_ref(), id, mode, wanted)?;
        }
    }
    Ok(())
}

fn read_tree(repo: &gix::Repository, id: ObjectId) -> crate::Result<Vec<(BString, u32, ObjectId)>> {
    let tree = repo
        .find_object(id)
        .map_err(|e| format!("cannot read tree {id}: {e}"))?
        .try_into_tree()
        .map_err(|_| format!("not a tree object: {id}"))?;
    let decoded = tree.decode().map_err(|e| format!("bad tree {id}: {e}"))?;
    Ok(decoded
        .entries
        .iter()
        .map(|e| {
            (
                e.filename.to_owned(),
                u32::from(e.mode.value()),
                e.oid.to_owned(),
            )
        })
        .collect())
}

/// The first pass: what the second will write, as far as the limits are concerned.
pub struct Plan {
    pub entries: u64,
    pub bytes: u64,
    /// `(path, blob)` of every `.gitattributes` in the directories walked, sorted by
    /// path (what gix's attribute stack looks them up in).
    pub attributes: Vec<(BString, ObjectId)>,
}

struct Planner<'a> {
    repo: &'a gix::Repository,
    limits: Limits,
    plan: Plan,
}

impl Planner<'_> {
    fn count(&mut self, bytes: u64) -> crate::Result<()> {
        self.plan.entries += 1;
        self.plan.bytes += bytes;
        if self.plan.entries > self.limits.max_entries {
            return Err(format!(
                "archive refused: more than {} files and directories (this server's limit)",
                self.limits.max_entries
            )
            .into());
        }
        if self.plan.bytes > self.limits.max_bytes {
            return Err(format!(
                "archive refused: more than {} bytes of file content (this server's limit)",
                self.limits.max_bytes
            )
            .into());
        }
        Ok(())
    }
}

impl Visitor for Planner<'_> {
    fn enter(&mut self, _: &BStr, _: ObjectId) -> crate::Result<bool> {
        self.count(0)?;
        Ok(true)
    }

    fn leave(&mut self) {}

    fn entry(&mut self, path: &BStr, id: ObjectId, mode: u32, wanted: bool) -> crate::Result<()> {
        let name = path.rsplit_str("/").next().unwrap_or(path);
        if name == b".gitattributes".as_slice() && mode & 0o170000 == 0o100000 {
            self.plan.attributes.push((path.to_owned(), id));
        }
        if !wanted {
            return Ok(());
        }
        let size = if mode == GITLINK {
            0
        } else {
            let header = self
                .repo
                .find_header(id)
                .map_err(|e| format!("cannot read '{id}': {e}"))?;
            header.size()
        };
        if size > MAX_FILE {
            return Err(format!(
                "archive refused: {} is {size} bytes, above this server's limit of {MAX_FILE} per file",
                crate::escape(path)
            )
            .into());
        }
        self.count(size)
    }
}

/// Run the first pass. `Err` carries the message for the client.
pub fn plan(
    repo: &gix::Repository,
    tree: ObjectId,
    specs: &mut Pathspecs,
    limits: Limits,
) -> crate::Result<Plan> {
    let mut planner = Planner {
        repo,
        limits,
        plan: Plan {
            entries: 0,
            bytes: 0,
            attributes: Vec::new(),
        },
    };
    walk(repo, tree, specs, &mut planner)?;
    let mut plan = planner.plan;
    plan.attributes.sort();
    Ok(plan)
}
