//! The negotiation core shared by protocol v0 and v2: which of the client's `have`s
//! we share, and when we know enough to stop asking (`ready`).
//!
//! This follows git's upload-pack: a `have` we hold is acknowledged; a commit the
//! client has marks its parents as known to the client too (`THEY_HAVE`), and we may
//! give up negotiating once every wanted commit reaches such a commit without walking
//! past the oldest `have` (`ok_to_give_up`, `can_all_from_reach_with_flag`).

use gix::ObjectId;
use gix::hashtable::HashSet;

use crate::Result;

/// Negotiation state for one fetch.
#[derive(Debug, Default)]
pub struct Negotiation {
    /// Wanted objects, peeled to commits where they are commits (others never block
    /// `ready`).
    want_commits: Vec<ObjectId>,
    /// Wants already shown to reach a commit the client has.
    satisfied: HashSet<ObjectId>,
    /// Commits the client has, and their parents.
    they_have: HashSet<ObjectId>,
    /// Acknowledged objects, in the order they were acknowledged (git's `have_obj`).
    common: Vec<ObjectId>,
    /// Commit time of the oldest acknowledged commit: the walk cut-off.
    oldest_have: Option<i64>,
    /// Commits seen as parentless (shallow boundaries, see [`Self::with_grafts`]).
    grafts: HashSet<ObjectId>,
    /// The last [`Self::ok_to_give_up`] said no and no `have` was common since: the
    /// answer cannot have changed. git walks again for every unknown `have` of a
    /// multi_ack round; a flood of them would make a round quadratic.
    still_not_ready: bool,
}

impl Negotiation {
    /// Start negotiating for `wants`.
    pub fn new(repo: &gix::Repository, wants: &[ObjectId]) -> Result<Self> {
        let mut want_commits = Vec::new();
        for want in wants {
            let obj = repo.find_object(*want)?.peel_tags_to_end()?;
            if obj.kind == gix::object::Kind::Commit {
                want_commits.push(obj.id);
            }
        }
        Ok(Negotiation {
            want_commits,
            ..Default::default()
        })
    }

    /// Treat `grafts` as commits without parents. In v0 git computes the shallow
    /// boundary before the haves arrive and registers it as grafts, so the
    /// negotiation of a shallow fetch already sees the cut history.
    pub fn with_grafts(mut self, grafts: impl IntoIterator<Item = ObjectId>) -> Self {
        self.grafts.extend(grafts);
        self
    }

    /// Process one `have`. True if we have the object (it is now common).
    pub fn have(&mut self, repo: &gix::Repository, id: ObjectId) -> Result<bool> {
        let Some(header) = repo.try_find_header(id)? else {
            return Ok(false);
        };
        let mut we_knew_they_have = false;
        if header.kind() == gix::object::Kind::Commit {
            let commit = repo.find_commit(id)?;
            we_knew_they_have = !self.they_have.insert(id);
            let time = commit.time()?.seconds;
            if self.oldest_have.is_none_or(|t| time < t) {
                self.oldest_have = Some(time);
            }
            if !self.grafts.contains(&id) {
                self.they_have
                    .extend(commit.parent_ids().map(|p| p.detach()));
            }
        }
        if !we_knew_they_have {
            self.common.push(id);
        }
        self.still_not_ready = false;
        Ok(true)
    }

    /// Objects the client has told us it has and we have too.
    pub fn common(&self) -> &[ObjectId] {
        &self.common
    }

    /// True once every wanted commit reaches a commit the client has.
    pub fn ok_to_give_up(&mut self, repo: &gix::Repository) -> Result<bool> {
        if self.common.is_empty() || self.still_not_ready {
            return Ok(false);
        }
        for want in self.want_commits.clone() {
            if self.satisfied.contains(&want) {
                continue;
            }
            if !self.reaches_they_have(repo, want)? {
                self.still_not_ready = true;
                return Ok(false);
            }
            self.satisfied.insert(want);
        }
        Ok(true)
    }

    /// Depth-first search from `start` through parents no older than the oldest have.
    fn reaches_they_have(&self, repo: &gix::Repository, start: ObjectId) -> Result<bool> {
        let cutoff = self.oldest_have.unwrap_or(i64::MIN);
        let mut seen = HashSet::default();
        let mut stack = vec![start];
        while let Some(id) = stack.pop() {
            if self.they_have.contains(&id) || self.satisfied.contains(&id) {
                return Ok(true);
            }
            if !seen.insert(id) {
                continue;
            }
            if self.grafts.contains(&id) {
                continue;
            }
            let commit = repo.find_commit(id)?;
            for parent in commit.parent_ids() {
                let parent = parent.detach();
                if self.they_have.contains(&parent) {
                    return Ok(true);
                }
                if seen.contains(&parent) {
                    continue;
                }
                if repo.find_commit(parent)?.time()?.seconds >= cutoff {
                    stack.push(parent);
                }
            }
        }
        Ok(false)
    }
}
