//! Commit walks that honour shallow grafts, for shallow fetches.
//!
//! gix walks commits with hidden tips, but cannot pretend that a commit has no
//! parents. A shallow fetch needs exactly that on both sides of the walk (git's
//! `register_shallow`): the new boundary must not pull in older history, and the
//! client's own boundary must not make us believe it has history it lacks. So this
//! is git's `revision.c: limit_list` over [`Commits`], which applies the grafts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use gix::ObjectId;
use gix::hashtable::{HashMap, HashSet};
use gix::objs::FindExt;
use gix::objs::commit::ref_iter::Token;

use crate::Result;

/// What a walk needs to know about one commit.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    /// Committer time, what git orders walks by. Unsigned, as git's `timestamp_t`
    /// (a negative time wraps around the same way in both).
    pub time: u64,
    pub tree: ObjectId,
    /// The parents, or none for a graft.
    pub parents: Vec<ObjectId>,
}

/// Parsed commits, cached, with grafted commits seen as parentless.
pub struct Commits<'r> {
    pub repo: &'r gix::Repository,
    grafts: HashSet<ObjectId>,
    cache: HashMap<ObjectId, CommitInfo>,
    buf: Vec<u8>,
}

impl<'r> Commits<'r> {
    pub fn new(repo: &'r gix::Repository, grafts: HashSet<ObjectId>) -> Self {
        Commits {
            repo,
            grafts,
            cache: HashMap::default(),
            buf: Vec::new(),
        }
    }

    /// Parse `id` (once) and return what walks need of it.
    pub fn info(&mut self, id: ObjectId) -> Result<&CommitInfo> {
        if !self.cache.contains_key(&id) {
            let iter = self.repo.objects.find_commit_iter(&id, &mut self.buf)?;
            let (mut tree, mut parents, mut time) = (None, Vec::new(), 0);
            for token in iter {
                match token? {
                    Token::Tree { id } => tree = Some(id),
                    Token::Parent { id } => parents.push(id),
                    Token::Committer { signature } => {
                        time = signature.seconds() as u64;
                        break;
                    }
                    _ => {}
                }
            }
            if self.grafts.contains(&id) {
                parents.clear();
            }
            let tree = tree.ok_or_else(|| format!("commit {id} has no tree"))?;
            self.cache.insert(
                id,
                CommitInfo {
                    time,
                    tree,
                    parents,
                },
            );
        }
        Ok(&self.cache[&id])
    }

    /// Parents of `id` (none for a graft).
    pub fn parents(&mut self, id: ObjectId) -> Result<Vec<ObjectId>> {
        Ok(self.info(id)?.parents.clone())
    }

    fn parsed(&self, id: &ObjectId) -> bool {
        self.cache.contains_key(id)
    }
}

/// Peel `id` through tags; `None` unless it ends at a commit we have.
pub fn peel_to_commit(repo: &gix::Repository, id: ObjectId) -> Option<ObjectId> {
    let obj = repo.find_object(id).ok()?.peel_tags_to_end().ok()?;
    (obj.kind == gix::object::Kind::Commit).then_some(obj.id)
}

/// The result of [`limit_walk`].
#[derive(Debug, Default)]
pub struct Walked {
    /// Commits reachable from the tips and not from the hidden commits, in the
    /// order git's walk lists them (newest first, ties in the order found).
    pub commits: Vec<ObjectId>,
    /// Every commit found to be reachable from a hidden one.
    pub hidden: HashSet<ObjectId>,
}

/// How many more commits git walks once only hidden ones are left, in case commit
/// times are skewed (`revision.c: SLOP`).
const SLOP: u32 = 5;

/// git's `limit_list` (and, without hidden commits, `get_revision_1`): walk from
/// `start` — each commit paired with whether it is hidden (`^commit`) — in
/// commit-time order. With `since`, older commits are left out (`--max-age`): when
/// some commit is hidden git marks them hidden (so their ancestors are too),
/// otherwise it just stops walking there, and so do we.
pub fn limit_walk(
    commits: &mut Commits<'_>,
    start: &[(ObjectId, bool)],
    since: Option<u64>,
) -> Result<Walked> {
    let mut w = Walk::default();
    let limited = start.iter().any(|(_, hidden)| *hidden);
    // git sorts the start commits by time, keeping the given order for ties.
    for &(id, hidden) in start {
        if hidden {
            w.mark_hidden(commits, id)?;
            for p in commits.parents(id)? {
                w.mark_hidden(commits, p)?;
            }
        }
    }
    for &(id, _) in start {
        w.push(commits, id)?;
    }

    let (mut date, mut slop) = (u64::MAX, SLOP);
    let mut listed = Vec::new();
    while let Some((time, _, id)) = w.queue.pop() {
        w.queued.remove(&id);
        if !w.hidden.contains(&id) {
            w.queued_visible -= 1;
        }
        if since.is_some_and(|since| time < since) {
            if !limited {
                continue;
            }
            w.mark_hidden(commits, id)?;
        }
        // process_parents
        let hidden = w.hidden.contains(&id);
        for p in commits.parents(id)? {
            if hidden {
                w.mark_hidden(commits, p)?;
                for pp in commits.parents(p)? {
                    w.mark_hidden(commits, pp)?;
                }
            }
            w.push(commits, p)?;
        }
        if hidden {
            // still_interesting: stop a few commits after only hidden ones are left.
            slop = match w.queue.peek() {
                None => 0,
                Some((head, _, _)) if date <= *head || w.queued_visible > 0 => SLOP,
                Some(_) => slop - 1,
            };
            if slop == 0 {
                break;
            }
            continue;
        }
        date = time;
        listed.push(id);
    }
    // Commits found hidden after they were listed are dropped, as git's
    // get_revision drops them.
    listed.retain(|id| !w.hidden.contains(id));
    Ok(Walked {
        commits: listed,
        hidden: w.hidden,
    })
}

/// The state of one [`limit_walk`].
#[derive(Default)]
struct Walk {
    /// Commit time, then insertion order for ties (git's `commit_list_insert_by_date`).
    queue: BinaryHeap<(u64, Reverse<u64>, ObjectId)>,
    seq: u64,
    /// Ever queued (git's SEEN).
    seen: HashSet<ObjectId>,
    /// In the queue now.
    queued: HashSet<ObjectId>,
    /// How many queued commits are not hidden.
    queued_visible: usize,
    /// git's UNINTERESTING.
    hidden: HashSet<ObjectId>,
}

impl Walk {
    fn push(&mut self, commits: &mut Commits<'_>, id: ObjectId) -> Result<()> {
        if !self.seen.insert(id) {
            return Ok(());
        }
        let time = commits.info(id)?.time;
        self.seq += 1;
        self.queue.push((time, Reverse(self.seq), id));
        self.queued.insert(id);
        if !self.hidden.contains(&id) {
            self.queued_visible += 1;
        }
        Ok(())
    }

    /// Mark `id` hidden, and the ancestors git has parsed already
    /// (`mark_one_parent_uninteresting`).
    fn mark_hidden(&mut self, commits: &mut Commits<'_>, id: ObjectId) -> Result<()> {
        let mut stack = vec![id];
        while let Some(id) = stack.pop() {
            if !self.hidden.insert(id) {
                continue;
            }
            if self.queued.contains(&id) {
                self.queued_visible -= 1;
            }
            if commits.parsed(&id) {
                stack.extend(commits.parents(id)?);
            }
        }
        Ok(())
    }
}
