//! The connectivity check: before anything moves out of the quarantine, every new
//! ref value and everything reachable from it must exist, in the pushed pack or in
//! the repository (git's `check_connected` after `index-pack`).
//!
//! The walk starts at the new values and descends through the quarantined objects
//! only: an object the repository already has ends the walk there, because the
//! repository's objects are complete (everything gitd moves in has passed this
//! check). git instead stops at what its refs reach (`rev-list --not --all`); the
//! difference only shows in a repository that is already corrupt. The walk visits
//! each pushed object at most once, so its cost is bounded by the pack's size.

use std::collections::HashSet;

use gix::ObjectId;
use gix::objs::{CommitRefIter, Exists, Find, FindHeader, Kind};

use super::fsck;

use crate::Result;

/// What the walk found for one starting point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Connected,
    /// An object is missing: `missing necessary objects`.
    Missing,
    /// The history reaches one of the client's shallow commits that the repository
    /// lacks: `shallow update not allowed` (as git with `receive.shallowUpdate`
    /// unset).
    Shallow,
}

/// Objects of the repository and of the quarantine, looked up without refreshing
/// the repository's pack list on every miss (most pushed objects are misses there).
pub struct Checker {
    existing: gix::odb::Handle,
    /// The repository as opened for the push, to confirm a miss after a refresh
    /// (a concurrent `git repack` may have renamed packs).
    repo: gix::Repository,
    incoming: gix::odb::Handle,
    /// The client's shallow commits the repository does not have.
    their_shallow: HashSet<ObjectId>,
    /// Pushed objects whose whole closure is known to be present.
    good: HashSet<ObjectId>,
    /// What git's `rev-list` would have told the pusher about an object it could
    /// not parse (`error: …` lines, then `fatal: …`).
    pub messages: Vec<String>,
}

impl Checker {
    pub fn new(
        repo: &gix::Repository,
        incoming: &std::path::Path,
        shallow: &[ObjectId],
    ) -> Result<Self> {
        let mut existing = gix::odb::at(repo.objects.store_ref().path(), gix::hash::Kind::Sha1)?;
        existing.refresh_never();
        let mut incoming = gix::odb::at(incoming, gix::hash::Kind::Sha1)?;
        incoming.refresh_never();
        let their_shallow = shallow
            .iter()
            .filter(|id| !repo.has_object(*id))
            .copied()
            .collect();
        Ok(Checker {
            existing,
            repo: repo.clone(),
            incoming,
            their_shallow,
            good: HashSet::new(),
            messages: Vec::new(),
        })
    }

    fn exists(&self, id: &ObjectId) -> bool {
        id.is_empty_tree() || self.existing.exists(id)
    }

    /// Walk from `tip`. Objects found complete are remembered, so walks from
    /// several refs sharing history visit it once.
    pub fn check(&mut self, tip: ObjectId) -> Result<Verdict> {
        let mut seen: HashSet<ObjectId> = HashSet::new();
        let mut stack = vec![tip];
        let mut buf = Vec::new();
        while let Some(id) = stack.pop() {
            if self.good.contains(&id) || !seen.insert(id) || self.exists(&id) {
                continue;
            }
            // Blobs are not read: one may be larger than the memory gitd has.
            let Some(header) = self.incoming.try_header(&id)? else {
                if self.repo.has_object(id) {
                    continue;
                }
                return Ok(Verdict::Missing);
            };
            if header.kind == Kind::Blob {
                continue;
            }
            let Some(data) = self.incoming.try_find(&id, &mut buf)? else {
                return Ok(Verdict::Missing);
            };
            if let Err(why) = fsck::parse(&id, data.kind, data.data) {
                // git's rev-list: the parser's error, then it gives up on the object.
                if data.kind == Kind::Tree {
                    self.messages.push(format!("fatal: {why}\n"));
                } else {
                    self.messages.push(format!("error: {why}\n"));
                    self.messages.push(format!("fatal: bad object {id}\n"));
                }
                return Ok(Verdict::Missing);
            }
            match data.kind {
                Kind::Blob => {}
                Kind::Tree => {
                    for entry in
                        gix::objs::TreeRefIter::from_bytes(data.data, gix::hash::Kind::Sha1)
                    {
                        let Ok(entry) = entry else {
                            return Ok(self.unreadable(id));
                        };
                        // Submodule commits live in other repositories.
                        if !entry.mode.is_commit() {
                            stack.push(entry.oid.to_owned());
                        }
                    }
                }
                Kind::Commit => {
                    if self.their_shallow.contains(&id) {
                        return Ok(Verdict::Shallow);
                    }
                    let commit = || CommitRefIter::from_bytes(data.data, gix::hash::Kind::Sha1);
                    let Ok(tree) = commit().tree_id() else {
                        return Ok(self.unreadable(id));
                    };
                    stack.push(tree);
                    stack.extend(commit().parent_ids());
                }
                Kind::Tag => {
                    let tag = gix::objs::TagRefIter::from_bytes(data.data, gix::hash::Kind::Sha1);
                    let Ok(target) = tag.target_id() else {
                        return Ok(self.unreadable(id));
                    };
                    stack.push(target);
                }
            }
        }
        // Everything this walk saw is complete.
        self.good.extend(seen);
        Ok(Verdict::Connected)
    }

    /// An object git's parser took but gix's does not: it cannot be walked.
    fn unreadable(&mut self, id: ObjectId) -> Verdict {
        if self.messages.is_empty() {
            self.messages.push(format!("fatal: bad object {id}\n"));
        }
        Verdict::Missing
    }
}
