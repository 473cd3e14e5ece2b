//! The part of a fetch both protocol versions share: the arguments (`want`,
//! `shallow`, `deepen*`, `filter`, flags), checking the wants against what may be
//! served, and planning the pack.

use gix::ObjectId;
use gix::bstr::BString;
use gix::hashtable::HashSet;

use super::config::UploadPackConfig;
use super::not_our_ref;
use super::refs::AdvertisedRef;
use crate::pack::filter::Filter;
use crate::{ClientError, Result};

/// What the client asked for about history depth.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeepenRequest {
    /// `deepen <n>`.
    pub depth: Option<u32>,
    /// `deepen-since <timestamp>`.
    pub since: Option<i64>,
    /// `deepen-not <ref>` (repeatable).
    pub not: Vec<BString>,
    /// `deepen-relative`: depth counts from the client's current shallow boundary.
    pub relative: bool,
}

impl DeepenRequest {
    /// True if the client asked for a new shallow boundary.
    pub fn requested(&self) -> bool {
        self.depth.is_some() || self.since.is_some() || !self.not.is_empty()
    }
}

/// Everything one fetch asked for (v0: the want section; v2: the `fetch` arguments).
#[derive(Debug, Clone, Default)]
pub struct FetchArgs {
    pub wants: Vec<ObjectId>,
    /// v2 `want-ref <name>`.
    pub want_refs: Vec<BString>,
    /// v2 only: v0 sends haves in rounds after the want section.
    pub haves: Vec<ObjectId>,
    /// The client's current shallow commits.
    pub shallows: Vec<ObjectId>,
    pub deepen: DeepenRequest,
    pub filter: Option<Filter>,
    pub done: bool,
    pub wait_for_done: bool,
    pub thin_pack: bool,
    pub ofs_delta: bool,
    pub no_progress: bool,
    pub include_tag: bool,
    pub sideband_all: bool,
}

impl FetchArgs {
    /// Parse a line both versions spell the same (`shallow`, `deepen`,
    /// `deepen-since`, `deepen-not`, `filter`). False if the line is none of them.
    pub fn parse_shared(&mut self, line: &[u8], cfg: &UploadPackConfig) -> Result<bool> {
        let invalid = |what: &str| ClientError::boxed(format!("{what}: {}", crate::escape(line)));
        if let Some(hex) = line.strip_prefix(b"shallow ") {
            let id = ObjectId::from_hex(hex).map_err(|_| invalid("invalid shallow line"))?;
            if !self.shallows.contains(&id) {
                self.shallows.push(id);
            }
        } else if let Some(n) = line.strip_prefix(b"deepen ") {
            let n = std::str::from_utf8(n)
                .ok()
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| *n > 0);
            self.deepen.depth = Some(n.ok_or_else(|| invalid("Invalid deepen"))?);
        } else if let Some(ts) = line.strip_prefix(b"deepen-since ") {
            let ts = std::str::from_utf8(ts)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
                .filter(|t| *t > 0);
            self.deepen.since = Some(ts.ok_or_else(|| invalid("Invalid deepen-since"))?);
        } else if let Some(r) = line.strip_prefix(b"deepen-not ") {
            self.deepen.not.push(r.into());
        } else if line == b"deepen-relative" {
            self.deepen.relative = true;
        } else if let Some(spec) = line.strip_prefix(b"filter ").filter(|_| cfg.allow_filter) {
            // Without `uploadpack.allowFilter` the line is not an argument at all (v2:
            // "unexpected line"); v0 refuses it earlier, as not negotiated.
            if self.filter.is_some() {
                return Err(ClientError::boxed(
                    "multiple filter-specs cannot be combined",
                ));
            }
            let filter = Filter::parse(spec)?;
            filter.check_allowed(cfg)?;
            self.filter = Some(filter);
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// `deepen` with `deepen-since`/`deepen-not` is refused, as git refuses it.
    pub fn check_deepen(&self) -> Result<()> {
        if self.deepen.depth.is_some()
            && (self.deepen.since.is_some() || !self.deepen.not.is_empty())
        {
            return Err(ClientError::boxed(
                "git upload-pack: deepen and deepen-since (or deepen-not) cannot be used together",
            ));
        }
        Ok(())
    }
}

/// v2: any object we have may be wanted, whatever the configuration (git's
/// `parse_want` only looks the object up).
pub fn check_wants_exist(repo: &gix::Repository, wants: &[ObjectId]) -> Result<()> {
    match wants.iter().find(|w| !repo.has_object(w)) {
        Some(missing) => Err(not_our_ref(missing)),
        None => Ok(()),
    }
}

/// v0/v1: check that every want may be served (git's `receive_needs`/`check_non_tip`):
/// advertised tips always; hidden tips with `allowTipSHA1InWant`; with
/// `allowReachableSHA1InWant`, commits reachable from a ref and any tree or blob (git
/// asks `rev-list`, which ignores those); anything with `allowAnySHA1InWant`.
/// `refs` are all refs, hidden ones included.
pub fn check_wants(
    repo: &gix::Repository,
    cfg: &UploadPackConfig,
    refs: &[AdvertisedRef],
    wants: &[ObjectId],
) -> Result<()> {
    check_wants_exist(repo, wants)?;
    if cfg.allow.any {
        return Ok(());
    }
    let mut ours: HashSet<ObjectId> = HashSet::default();
    let mut hidden: HashSet<ObjectId> = HashSet::default();
    for r in refs {
        if let Some(t) = r.target {
            if cfg.is_hidden(r.name.as_ref()) {
                hidden.insert(t);
            } else {
                ours.insert(t);
            }
        }
    }
    let allowed_tip = |w: &ObjectId| {
        ours.contains(w) || ((cfg.allow.tip || cfg.allow.reachable) && hidden.contains(w))
    };
    let non_tips: Vec<ObjectId> = wants.iter().copied().filter(|w| !allowed_tip(w)).collect();
    let Some(first) = non_tips.first() else {
        return Ok(());
    };
    if !cfg.allow.reachable {
        return Err(not_our_ref(first));
    }
    // Only commits (tags peeled) need to be reachable.
    let non_tips: Vec<(ObjectId, ObjectId)> = non_tips
        .iter()
        .filter_map(|w| {
            let obj = repo.find_object(*w).ok()?.peel_tags_to_end().ok()?;
            (obj.kind == gix::object::Kind::Commit).then_some((*w, obj.id))
        })
        .collect();
    // Reachable from some ref (hidden ones count): walk from all tips.
    let tips: Vec<ObjectId> = ours.iter().chain(hidden.iter()).copied().collect();
    let mut pending: HashSet<ObjectId> = non_tips.iter().map(|(_, c)| *c).collect();
    let mut seen: HashSet<ObjectId> = HashSet::default();
    let mut buf = Vec::new();
    let mut stack: Vec<ObjectId> = Vec::new();
    for tip in tips {
        if let Ok(obj) = repo.find_object(tip)
            && let Ok(c) = obj.peel_tags_to_end()
        {
            pending.remove(&tip);
            stack.push(c.id);
        }
    }
    while let Some(id) = stack.pop() {
        if pending.is_empty() {
            break;
        }
        if !seen.insert(id) {
            continue;
        }
        pending.remove(&id);
        let Ok(commit) = repo
            .objects
            .find_commit_iter(&id, &mut buf)
            .map(|c| c.parent_ids().collect::<Vec<_>>())
        else {
            continue;
        };
        stack.extend(commit);
    }
    match non_tips.iter().find(|(_, c)| pending.contains(c)) {
        Some((w, _)) => Err(not_our_ref(w)),
        None => Ok(()),
    }
}

use gix::objs::FindExt;
