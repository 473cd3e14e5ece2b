//! Delta bases for objects that would otherwise be sent whole, chosen by path.
//!
//! git's pack-objects sorts candidates by type, path hash and size and tries a window
//! of neighbours; in an incremental fetch the neighbour that wins is nearly always
//! the object at the same path one commit earlier. That pairing is what this finds:
//! each sent commit's tree is compared with its first parent's, and wherever a path
//! names a different blob (or tree) in both, the new object is paired with the old
//! one. Only trees that differ are read, so a few commits of small edits cost a few
//! tree reads.
//!
//! A base is usable when the client has it (thin packs only) or when it is already
//! written to the pack being sent: an object not yet written may later become a
//! delta itself, and only "written before" rules out cycles. Chains of pairs are
//! followed, so with loose objects sent newest first the newest version of a file is
//! based on the client's version a few commits back, and each older version on the
//! newer one just written.

use std::cmp::Ordering;

use gix::ObjectId;
use gix::hashtable::{HashMap, HashSet};
use gix::object::Kind;
use gix::objs::commit::ref_iter::Token;
use gix::objs::tree::EntryRef;
use gix::objs::{CommitRefIter, TreeRefIter};
use tracing::debug;

use super::read::Reader;
use crate::Result;

/// Trees read to pair objects, per pack: bounds the work of a fetch of many commits,
/// where most new objects are stored deltas copied as they are anyway.
const MAX_TREES: usize = 2048;
/// Sent commits looked at, newest first.
pub const MAX_COMMITS: usize = 512;
/// Steps down a chain of pairs in search of a usable base.
const MAX_STEPS: usize = 16;
/// The longest delta chain a new delta may extend (git's `pack.depth`).
pub const MAX_DEPTH: u32 = 50;

/// A usable base for an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The client has it; named by id in a thin pack.
    Client(ObjectId),
    /// Written to this pack at `offset`, as a delta chain of `depth`.
    InPack {
        id: ObjectId,
        offset: u64,
        depth: u32,
    },
}

impl Base {
    pub fn id(&self) -> &ObjectId {
        match self {
            Base::Client(id) | Base::InPack { id, .. } => id,
        }
    }

    /// Depth of a delta against this base.
    pub fn depth(&self) -> u32 {
        match self {
            Base::Client(_) => 1,
            Base::InPack { depth, .. } => depth + 1,
        }
    }
}

/// Objects paired by path, and what became of them in the pack being written.
#[derive(Default)]
pub struct Bases {
    /// New object → the object at its path in the parent commit.
    older: HashMap<ObjectId, ObjectId>,
    /// The other way round.
    newer: HashMap<ObjectId, ObjectId>,
    /// Objects of `older` the client has and is not sent (thin packs only).
    client: HashSet<ObjectId>,
    /// Where paired objects went in the pack, and their delta depth.
    written: HashMap<ObjectId, (u64, u32)>,
}

impl Bases {
    /// Pair the objects of `commits` (newest first) with their parents' by path.
    /// Best effort: an object that cannot be read ends the pairing of its commit,
    /// never the pack (the writer reports objects that are really missing).
    pub fn pair(repo: &gix::Repository, reader: &mut Reader<'_>, commits: &[ObjectId]) -> Bases {
        let mut pairing = Pairing {
            repo,
            reader,
            trees: HashMap::default(),
            budget: MAX_TREES,
            bases: Bases::default(),
        };
        for commit in commits.iter().take(MAX_COMMITS) {
            if pairing.budget == 0 {
                break;
            }
            if let Err(err) = pairing.commit(commit) {
                debug!("no delta bases from {commit}: {err}");
            }
        }
        pairing.bases
    }

    pub fn is_empty(&self) -> bool {
        self.older.is_empty()
    }

    /// The older objects of all pairs: the candidates for thin bases.
    pub fn olders(&self) -> impl Iterator<Item = &ObjectId> {
        self.older.values()
    }

    /// Record that the client has `id` (and it is not sent).
    pub fn client_has(&mut self, id: ObjectId) {
        self.client.insert(id);
    }

    /// Whether `id` is in a pair: its place in the pack must be [`Bases::written`].
    pub fn is_paired(&self, id: &gix::hash::oid) -> bool {
        self.older.contains_key(id) || self.newer.contains_key(id)
    }

    pub fn written(&mut self, id: ObjectId, offset: u64, depth: u32) {
        self.written.insert(id, (offset, depth));
    }

    /// Usable bases for `id`, best first: down its chain of older versions to the
    /// first the client has or the pack holds, and the next newer version if the pack
    /// already holds it.
    pub fn for_object(&self, id: &gix::hash::oid) -> Vec<Base> {
        let mut out = Vec::with_capacity(2);
        let mut at = self.older.get(id);
        for _ in 0..MAX_STEPS {
            let Some(base) = at else { break };
            if let Some(b) = self.in_pack(base) {
                out.push(b);
                break;
            }
            if self.client.contains(base) {
                out.push(Base::Client(*base));
                break;
            }
            at = self.older.get(base);
        }
        if let Some(b) = self.newer.get(id).and_then(|n| self.in_pack(n)) {
            out.push(b);
        }
        out
    }

    fn in_pack(&self, id: &ObjectId) -> Option<Base> {
        let (offset, depth) = *self.written.get(id)?;
        (depth < MAX_DEPTH).then_some(Base::InPack {
            id: *id,
            offset,
            depth,
        })
    }
}

/// The sent commits reachable from `wants` through sent commits, newest first as
/// far as a depth-first walk from the tips goes; at most [`MAX_COMMITS`]. For packs
/// chosen with a bitmap, whose sent set does not list commits apart.
pub fn sent_commits(
    repo: &gix::Repository,
    wants: &[ObjectId],
    sent: impl Fn(&gix::hash::oid) -> bool,
) -> Vec<ObjectId> {
    let mut out = Vec::new();
    let mut seen = HashSet::default();
    let mut stack: Vec<ObjectId> = wants
        .iter()
        .filter_map(|id| {
            let obj = repo.find_object(*id).ok()?.peel_tags_to_end().ok()?;
            (obj.kind == Kind::Commit).then_some(obj.id)
        })
        .rev()
        .collect();
    while let Some(id) = stack.pop() {
        if out.len() >= MAX_COMMITS {
            break;
        }
        if !seen.insert(id) || !sent(&id) {
            continue;
        }
        let Ok(commit) = repo.find_commit(id) else {
            continue;
        };
        out.push(id);
        let parents: Vec<ObjectId> = commit.parent_ids().map(|p| p.detach()).collect();
        stack.extend(parents.into_iter().rev());
    }
    out
}

struct Pairing<'a, 'r> {
    repo: &'a gix::Repository,
    reader: &'a mut Reader<'r>,
    /// Tree and first parent of commits read so far.
    trees: HashMap<ObjectId, (ObjectId, Option<ObjectId>)>,
    budget: usize,
    bases: Bases,
}

impl Pairing<'_, '_> {
    fn commit(&mut self, id: &ObjectId) -> Result<()> {
        let (tree, parent) = self.tree_and_parent(id)?;
        let Some(parent) = parent else {
            return Ok(());
        };
        let (old, _) = self.tree_and_parent(&parent)?;
        // The root trees are a pair too: the largest tree of a small change.
        self.pair(tree, old);
        self.diff(tree, old)
    }

    fn pair(&mut self, new: ObjectId, old: ObjectId) {
        if new != old {
            self.bases.older.entry(new).or_insert(old);
            self.bases.newer.entry(old).or_insert(new);
        }
    }

    fn tree_and_parent(&mut self, id: &ObjectId) -> Result<(ObjectId, Option<ObjectId>)> {
        if let Some(known) = self.trees.get(id) {
            return Ok(*known);
        }
        let data = self.reader.object(self.repo, id, None, Kind::Commit)?;
        let (mut tree, mut parent) = (None, None);
        for token in CommitRefIter::from_bytes(&data, gix::hash::Kind::Sha1) {
            match token? {
                Token::Tree { id } => tree = Some(id),
                Token::Parent { id } => {
                    parent = Some(id);
                    break;
                }
                _ => break,
            }
        }
        let found = (tree.ok_or("a commit without a tree")?, parent);
        self.trees.insert(*id, found);
        Ok(found)
    }

    /// Pair what differs between the trees `new` and `old`, recursively.
    fn diff(&mut self, new: ObjectId, old: ObjectId) -> Result<()> {
        let mut stack = vec![(new, old)];
        while let Some((new, old)) = stack.pop() {
            if new == old || self.budget < 2 {
                continue;
            }
            self.budget -= 2;
            let new_data = self.reader.object(self.repo, &new, None, Kind::Tree)?;
            let old_data = self.reader.object(self.repo, &old, None, Kind::Tree)?;
            let mut olds = TreeRefIter::from_bytes(&old_data, gix::hash::Kind::Sha1).peekable();
            for entry in TreeRefIter::from_bytes(&new_data, gix::hash::Kind::Sha1) {
                let entry = entry?;
                // Both trees are sorted the git way: skip the old entries before this.
                let matching = loop {
                    match olds.peek() {
                        Some(Ok(o)) => match tree_order(o, &entry) {
                            Ordering::Less => {
                                olds.next();
                            }
                            Ordering::Equal => break olds.next().and_then(|o| o.ok()),
                            Ordering::Greater => break None,
                        },
                        Some(Err(_)) => return Err("a tree does not parse".into()),
                        None => break None,
                    }
                };
                let Some(o) = matching else { continue };
                if o.oid == entry.oid || entry.mode.is_commit() || o.mode.is_commit() {
                    continue;
                }
                let (n, o_id) = (entry.oid.to_owned(), o.oid.to_owned());
                if entry.mode.is_tree() {
                    stack.push((n, o_id));
                }
                self.pair(n, o_id);
            }
        }
        Ok(())
    }
}

/// git's order of tree entries: by name, a tree's name compared as if it ended in
/// `/`. Entries of equal names and different kinds compare unequal, and are not
/// paired (a file that became a directory).
fn tree_order(a: &EntryRef<'_>, b: &EntryRef<'_>) -> Ordering {
    let (an, bn): (&[u8], &[u8]) = (a.filename.as_ref(), b.filename.as_ref());
    let end = |e: &EntryRef<'_>| if e.mode.is_tree() { b'/' } else { 0 };
    let n = an.len().min(bn.len());
    an[..n].cmp(&bn[..n]).then_with(|| {
        let next = |name: &[u8], e| name.get(n).copied().unwrap_or_else(|| end(e));
        next(an, a)
            .cmp(&next(bn, b))
            .then(an.len().cmp(&bn.len()))
            .then(end(a).cmp(&end(b)))
    })
}
