//! The object walk under a partial clone filter, built to leave out exactly the
//! objects git's `pack-objects --filter` leaves out.
//!
//! The filters are git's `list-objects-filter.c` state machines: each is asked about
//! every object the walk meets and answers with git's result bits (show it, mark it
//! seen, skip the tree's contents). The traversal mirrors `list-objects.c`: depth
//! first, entries in tree order, one "seen" set that the filters control, and objects
//! the client named in a want ("user given") shown without asking the filter.
//! Emulating the machinery rather than the documented meaning keeps git's corner
//! cases: a tree first met below the `tree:<depth>` limit and later above it is
//! walked again, and each sub-filter of a `combine:` remembers what it has seen.

use gix::ObjectId;
use gix::hashtable::{HashMap, HashSet};
use gix::object::Kind;
use gix::objs::FindExt;

use super::filter::Filter;
use crate::Result;

/// `LOFR_DO_SHOW`: the object goes into the pack.
const SHOW: u8 = 1;
/// `LOFR_MARK_SEEN`: the walk does not look at the object again.
const SEEN: u8 = 2;
/// `LOFR_SKIP_TREE`: the tree's entries are not walked.
const SKIP: u8 = 4;

/// What the filter is asked about (git's `LOFS_*`; tags are never asked about, as
/// pack-objects only meets tags the client named).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Situation {
    Commit,
    BeginTree,
    EndTree,
    Blob,
}

/// One filter's state while walking.
enum State {
    BlobNone,
    BlobLimit(u64),
    /// `filter_trees_depth`: trees are never marked seen, so that a tree met again
    /// closer to the root is walked again; `seen_at` keeps the shallowest depth each
    /// tree was walked at.
    TreeDepth {
        exclude: u64,
        current: u64,
        seen_at: HashMap<ObjectId, u64>,
    },
    ObjectType(Kind),
    Combine(Vec<Sub>),
}

/// A sub-filter of `combine:` with its own seen set and skipped tree (git's
/// `struct subfilter`).
struct Sub {
    state: State,
    seen: HashSet<ObjectId>,
    skipping: Option<ObjectId>,
}

impl State {
    fn new(filter: &Filter) -> Result<State> {
        Ok(match filter {
            Filter::BlobNone => State::BlobNone,
            Filter::BlobLimit(n) => State::BlobLimit(*n),
            Filter::TreeDepth(d) => State::TreeDepth {
                exclude: *d,
                current: 0,
                seen_at: HashMap::default(),
            },
            Filter::ObjectType(kind) => State::ObjectType(*kind),
            Filter::Combine(subs) => State::Combine(
                subs.iter()
                    .map(|f| {
                        Ok(Sub {
                            state: State::new(f)?,
                            seen: HashSet::default(),
                            skipping: None,
                        })
                    })
                    .collect::<Result<_>>()?,
            ),
            Filter::SparseOid(_) => return Err("sparse:oid filters are not supported".into()),
        })
    }

    /// The filter's answer for object `id` in situation `sit`.
    fn ask(&mut self, repo: &gix::Repository, sit: Situation, id: ObjectId) -> Result<u8> {
        use Situation::*;
        Ok(match self {
            State::BlobNone => match sit {
                Blob => SEEN,
                EndTree => 0,
                Commit | BeginTree => SEEN | SHOW,
            },
            State::BlobLimit(limit) => match sit {
                // The size from the object header, without inflating the blob. A blob
                // we cannot find is sent (and then fails), as git sends it.
                Blob => match repo.try_find_header(id)? {
                    Some(h) if h.kind() == Kind::Blob && h.size() >= *limit => SEEN,
                    _ => SEEN | SHOW,
                },
                EndTree => 0,
                Commit | BeginTree => SEEN | SHOW,
            },
            State::TreeDepth {
                exclude,
                current,
                seen_at,
            } => {
                let include = *current < *exclude;
                match sit {
                    Commit => SEEN | SHOW,
                    EndTree => {
                        *current = current.saturating_sub(1);
                        0
                    }
                    Blob if include => SEEN | SHOW,
                    Blob => 0,
                    BeginTree => {
                        let depth = seen_at.entry(id).or_insert(u64::MAX);
                        let r = if *current >= *depth {
                            SKIP
                        } else {
                            *depth = *current;
                            if include { SHOW } else { SKIP }
                        };
                        *current += 1;
                        r
                    }
                }
            }
            State::ObjectType(kind) => match (sit, *kind) {
                (EndTree, _) => 0,
                (Commit, Kind::Commit) | (BeginTree, Kind::Tree) | (Blob, Kind::Blob) => {
                    SEEN | SHOW
                }
                // Only commits or tags wanted: no need to look inside trees.
                (BeginTree, Kind::Commit | Kind::Tag) => SKIP,
                _ => SEEN,
            },
            // `filter_combine`: shown if every sub-filter shows it, seen if every one
            // marks it seen, skipped if every one is skipping.
            State::Combine(subs) => {
                let mut combined = SHOW | SEEN | SKIP;
                for sub in subs {
                    let r = sub.ask(repo, sit, id)?;
                    combined &= r | SKIP;
                    if sub.skipping.is_none() {
                        combined &= !SKIP;
                    }
                }
                combined
            }
        })
    }
}

impl Sub {
    /// git's `process_subfilter`.
    fn ask(&mut self, repo: &gix::Repository, sit: Situation, id: ObjectId) -> Result<u8> {
        if let Some(tree) = self.skipping {
            if sit == Situation::EndTree && tree == id {
                self.skipping = None;
            } else {
                return Ok(0);
            }
        }
        if self.seen.contains(&id) {
            return Ok(0);
        }
        let r = self.state.ask(repo, sit, id)?;
        if r & SEEN != 0 {
            self.seen.insert(id);
        }
        if r & SKIP != 0 {
            self.skipping = Some(id);
        }
        Ok(r)
    }
}

/// Memory for decoded trees during a filtered walk.
const TREE_CACHE_BYTES: usize = 32 << 20;
/// Memory for the delta bases of trees during a filtered walk.
const PACK_CACHE_BYTES: usize = 8 << 20;

/// A step of the depth-first tree walk.
enum Frame {
    Enter {
        id: ObjectId,
        tree: bool,
        user_given: bool,
    },
    Leave {
        id: ObjectId,
        user_given: bool,
    },
}

struct Walk<'a> {
    repo: &'a gix::Repository,
    state: State,
    /// git's SEEN and UNINTERESTING: the client's side is already in here.
    seen: &'a mut HashSet<ObjectId>,
    shown: HashSet<ObjectId>,
    out: &'a mut Vec<ObjectId>,
    /// Wanted trees and blobs, and those of them the walk has met as a root tree or
    /// tree entry before their turn (git's NOT_USER_GIVEN): these are filtered.
    roots: HashSet<ObjectId>,
    not_user_given: HashSet<ObjectId>,
    buf: Vec<u8>,
}

/// Walk `commits` (the commits to send, newest first) and the wanted trees and blobs
/// `roots` under `filter`, appending what is sent to `out`. `wanted` are the commits
/// the client asked for: they are sent whatever the filter says. Objects in `seen`
/// are neither walked nor sent.
pub fn walk(
    repo: &gix::Repository,
    filter: &Filter,
    commits: &[ObjectId],
    wanted: &[ObjectId],
    roots: &[ObjectId],
    seen: &mut HashSet<ObjectId>,
    out: &mut Vec<ObjectId>,
) -> Result<()> {
    // Under `tree:<depth>` a tree may be walked again (met closer to the root), and
    // under `combine:` with it git walks every commit's whole tree again (the
    // sub-filters keep their own seen sets); caching the decoded trees keeps that
    // from inflating each tree once per commit. Other filters read each tree once,
    // and copying it into a cache would only cost time. The pack cache holds delta
    // bases, looked up by hash rather than along a list: most trees are deltas.
    let mut repo = repo.clone();
    if rewalks(filter) {
        repo.object_cache_size_if_unset(TREE_CACHE_BYTES);
    }
    repo.objects.set_pack_cache(|| {
        Box::new(gix::odb::pack::cache::lru::MemoryCappedHashmap::new(
            PACK_CACHE_BYTES,
        ))
    });
    let repo = &repo;
    let mut w = Walk {
        repo,
        state: State::new(filter)?,
        seen,
        shown: HashSet::default(),
        out,
        roots: roots.iter().copied().collect(),
        not_user_given: HashSet::default(),
        buf: Vec::new(),
    };
    let wanted: HashSet<ObjectId> = wanted.iter().copied().collect();
    let mut trees = Vec::with_capacity(commits.len());
    for &commit in commits {
        let r = w.ask(Situation::Commit, commit, wanted.contains(&commit))?;
        w.apply(commit, r);
        let tree = repo.find_commit(commit)?.tree_id()?.detach();
        if w.roots.contains(&tree) {
            w.not_user_given.insert(tree);
        }
        trees.push(tree);
    }
    // git's pending list: the wanted trees and blobs in want order, then the root
    // trees in commit order.
    for &root in roots {
        let tree = repo.find_header(root)?.kind() == Kind::Tree;
        let user_given = !w.not_user_given.contains(&root);
        w.process(root, tree, user_given)?;
    }
    for tree in trees {
        w.process(tree, true, false)?;
    }
    Ok(())
}

/// Whether the walk may read a tree more than once under `filter`.
fn rewalks(filter: &Filter) -> bool {
    match filter {
        Filter::TreeDepth(_) => true,
        Filter::Combine(subs) => subs.iter().any(rewalks),
        _ => false,
    }
}

impl Walk<'_> {
    fn ask(&mut self, sit: Situation, id: ObjectId, user_given: bool) -> Result<u8> {
        match (user_given, sit) {
            (true, Situation::EndTree) => Ok(0),
            (true, _) => Ok(SEEN | SHOW),
            (false, _) => self.state.ask(self.repo, sit, id),
        }
    }

    fn apply(&mut self, id: ObjectId, r: u8) {
        if r & SEEN != 0 {
            self.seen.insert(id);
        }
        if r & SHOW != 0 && self.shown.insert(id) {
            self.out.push(id);
        }
    }

    /// git's `process_tree`/`process_blob` for `root` and, unless skipped, everything
    /// below it. Submodule commits are not followed.
    fn process(&mut self, root: ObjectId, tree: bool, user_given: bool) -> Result<()> {
        let mut stack = vec![Frame::Enter {
            id: root,
            tree,
            user_given,
        }];
        while let Some(frame) = stack.pop() {
            let (id, tree, user_given) = match frame {
                Frame::Leave { id, user_given } => {
                    let r = self.ask(Situation::EndTree, id, user_given)?;
                    self.apply(id, r);
                    continue;
                }
                Frame::Enter {
                    id,
                    tree,
                    user_given,
                } => (id, tree, user_given),
            };
            if self.seen.contains(&id) {
                continue;
            }
            if !tree {
                let r = self.ask(Situation::Blob, id, user_given)?;
                self.apply(id, r);
                continue;
            }
            let r = self.ask(Situation::BeginTree, id, user_given)?;
            self.apply(id, r);
            stack.push(Frame::Leave { id, user_given });
            if r & SKIP != 0 {
                continue;
            }
            let mark = stack.len();
            for entry in self.repo.objects.find_tree_iter(&id, &mut self.buf)? {
                let entry = entry?;
                if entry.mode.is_commit() {
                    continue;
                }
                let id = entry.oid.to_owned();
                if self.roots.contains(&id) {
                    self.not_user_given.insert(id);
                }
                stack.push(Frame::Enter {
                    id,
                    tree: entry.mode.is_tree(),
                    user_given: false,
                });
            }
            // Entries are walked in tree order.
            stack[mark..].reverse();
        }
        Ok(())
    }
}
