//! Shallow boundaries: `deepen`, `deepen-since`, `deepen-not`, `deepen-relative` and
//! the client's existing `shallow` commits.

use gix::ObjectId;

use super::fetch::FetchArgs;
use crate::{ClientError, Result};

/// One line of the shallow-info section (v2) or the shallow list (v0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShallowLine {
    Shallow(ObjectId),
    Unshallow(ObjectId),
}

/// The shallow side of a fetch: what to tell the client and how to walk history.
#[derive(Debug, Clone, Default)]
pub struct ShallowPlan {
    /// `shallow`/`unshallow` lines to send.
    pub lines: Vec<ShallowLine>,
    /// True if a shallow list must be sent (a deepen request was made).
    pub send_list: bool,
    /// Commits whose parents the pack walk must not follow (new boundary commits
    /// and the client's shallow commits that stay shallow).
    pub grafts: Vec<ObjectId>,
    /// Wants added by unshallowing (parents of commits that are no longer shallow).
    pub extra_wants: Vec<ObjectId>,
    /// Commits the client has that the walk must treat as edges (unshallowed ones).
    pub extra_edges: Vec<ObjectId>,
}

/// Compute the shallow plan for `args` (wants already checked).
pub fn plan(_repo: &gix::Repository, args: &FetchArgs) -> Result<ShallowPlan> {
    if args.deepen.requested() || !args.shallows.is_empty() {
        return Err(ClientError::boxed("shallow fetches are not supported yet"));
    }
    Ok(ShallowPlan::default())
}
