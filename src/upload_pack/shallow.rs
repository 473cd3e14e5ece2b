//! Shallow boundaries: `deepen`, `deepen-since`, `deepen-not`, `deepen-relative` and
//! the client's existing `shallow` commits, as git's `upload-pack.c` computes them
//! (`send_shallow_list`, `deepen`, `deepen_by_rev_list`, `send_shallow`,
//! `send_unshallow`) with `shallow.c`'s `get_shallow_commits` and
//! `get_shallow_commits_by_rev_list`.
//!
//! A served repository is taken to be complete (not itself shallow).

use gix::ObjectId;
use gix::bstr::{BStr, ByteSlice};
use gix::hashtable::{HashMap, HashSet};

use super::config::UploadPackConfig;
use super::fetch::FetchArgs;
use super::refs::AdvertisedRef;
use crate::pack::walk::{self, Commits};
use crate::{ClientError, Result};

/// `deepen 2147483647` (what `git fetch --unshallow` sends) means "everything".
const INFINITE_DEPTH: u32 = 0x7fff_ffff;

/// One line of the shallow-info section (v2) or the shallow list (v0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShallowLine {
    Shallow(ObjectId),
    Unshallow(ObjectId),
}

/// As git sends it: no newline after the id, although gitprotocol-v2 and
/// gitprotocol-pack write the grammar with one (`shallow = "shallow" SP obj-id LF`).
impl std::fmt::Display for ShallowLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShallowLine::Shallow(id) => write!(f, "shallow {id}"),
            ShallowLine::Unshallow(id) => write!(f, "unshallow {id}"),
        }
    }
}

/// The shallow side of a fetch: what to tell the client and how to walk history.
#[derive(Debug, Clone, Default)]
pub struct ShallowPlan {
    /// `shallow`/`unshallow` lines to send.
    pub lines: Vec<ShallowLine>,
    /// True if a shallow list must be sent (a deepen request was made).
    pub send_list: bool,
    /// Commits whose parents the pack walk must not follow: the new boundary and
    /// every shallow commit of the client we know. Unshallowed ones stay in: git
    /// registers them again "to make sure commit traversal conforms to client", and
    /// their parents are sent as wants instead.
    pub grafts: Vec<ObjectId>,
    /// Wants added by unshallowing (parents of commits that are no longer shallow).
    pub extra_wants: Vec<ObjectId>,
    /// Commits the client has that the walk must treat as edges (unshallowed ones).
    pub extra_edges: Vec<ObjectId>,
}

/// What git checks while it reads the request: `shallow` lines must name commits
/// (unknown objects are ignored), `deepen-not` must name exactly one ref. Returns
/// the client's shallow commits we have, and the `deepen-not` commits.
pub fn validate(
    repo: &gix::Repository,
    refs: &[AdvertisedRef],
    args: &FetchArgs,
) -> Result<(Vec<ObjectId>, Vec<ObjectId>)> {
    let mut client = Vec::new();
    for id in &args.shallows {
        match repo.try_find_header(*id)? {
            None => {}
            Some(h) if h.kind() == gix::object::Kind::Commit => client.push(*id),
            Some(_) => return Err(ClientError::boxed(format!("invalid shallow object {id}"))),
        }
    }
    let mut nots = Vec::new();
    for name in &args.deepen.not {
        let id = expand_ref(refs, name.as_ref()).ok_or_else(|| {
            ClientError::boxed(format!(
                "git upload-pack: ambiguous deepen-not: deepen-not {}",
                crate::escape(name)
            ))
        })?;
        if !nots.contains(&id) {
            nots.push(id);
        }
    }
    Ok((client, nots))
}

/// git's `expand_ref`: try `name` with each of the `ref_rev_parse_rules` and succeed
/// only if exactly one ref exists. Hidden refs count: git does not consult
/// `uploadpack.hideRefs` here. gitprotocol-v2 calls the argument a `<rev>` ("the
/// equivalent of rev-list --not <rev>"), but git takes only ref names: an object id
/// or `main~3` is refused as "ambiguous", and so is a name that matches nothing.
fn expand_ref(refs: &[AdvertisedRef], name: &BStr) -> Option<ObjectId> {
    const RULES: [(&str, &str); 6] = [
        ("", ""),
        ("refs/", ""),
        ("refs/tags/", ""),
        ("refs/heads/", ""),
        ("refs/remotes/", ""),
        ("refs/remotes/", "/HEAD"),
    ];
    let mut found = RULES.iter().filter_map(|(prefix, suffix)| {
        let full = [prefix.as_bytes(), name.as_bytes(), suffix.as_bytes()].concat();
        refs.iter().find(|r| r.name == full).and_then(|r| r.target)
    });
    match (found.next(), found.next()) {
        (Some(id), None) => Some(id),
        _ => None,
    }
}

/// Compute the shallow plan for `args` (wants already checked), git's
/// `send_shallow_list`.
pub fn plan(
    repo: &gix::Repository,
    cfg: &UploadPackConfig,
    refs: &[AdvertisedRef],
    args: &FetchArgs,
) -> Result<ShallowPlan> {
    let (client, nots) = validate(repo, refs, args)?;
    let mut commits = Commits::new(repo, HashSet::default());
    // git's NOT_SHALLOW: commits the client gets with their parents.
    let mut not_shallow: HashSet<ObjectId> = HashSet::default();
    let deepen = &args.deepen;
    let boundary = match deepen.depth {
        Some(INFINITE_DEPTH) => {
            not_shallow.extend(client.iter().copied());
            Vec::new()
        }
        Some(depth) if deepen.relative => {
            // The depth counts from the client's current boundary, wherever our refs
            // still reach it. git 2.54 changed this to measure from the wants, so
            // that a merged branch is deepened too; 2.47 works as below.
            let heads = reachable_shallows(&mut commits, cfg, refs, &client)?;
            shallow_commits(&mut commits, &heads, depth as i32 + 1, &mut not_shallow)?
        }
        Some(depth) => shallow_commits(&mut commits, &args.wants, depth as i32, &mut not_shallow)?,
        None if deepen.requested() => shallow_commits_by_rev_list(
            &mut commits,
            &args.wants,
            &nots,
            deepen.since,
            &mut not_shallow,
        )?,
        None => Vec::new(),
    };

    let mut plan = ShallowPlan {
        send_list: deepen.requested(),
        ..Default::default()
    };
    // send_shallow: boundary commits the client does not have as shallow already.
    for id in boundary {
        if !client.contains(&id) && !not_shallow.contains(&id) {
            plan.lines.push(ShallowLine::Shallow(id));
            plan.grafts.push(id);
        }
    }
    // send_unshallow: the client's shallow commits we now send history below.
    for id in client {
        if not_shallow.contains(&id) {
            plan.lines.push(ShallowLine::Unshallow(id));
            plan.extra_wants.extend(commits.parents(id)?);
            plan.extra_edges.push(id);
        }
        plan.grafts.push(id);
    }
    Ok(plan)
}

/// git's `get_shallow_commits`: a depth-first walk from `heads` (following the last
/// parent first) that remembers the smallest depth each commit was reached at and
/// walks a commit again when it is reached at a smaller one. Commits reached at
/// `depth` are the boundary; every commit walked below it goes into `not_shallow`.
/// Returns the boundary in git's list order (the last found first), duplicates
/// included, as git sends them.
fn shallow_commits(
    commits: &mut Commits<'_>,
    heads: &[ObjectId],
    depth: i32,
    not_shallow: &mut HashSet<ObjectId>,
) -> Result<Vec<ObjectId>> {
    let mut result = Vec::new();
    let mut depths: HashMap<ObjectId, i32> = HashMap::default();
    let mut stack: Vec<ObjectId> = Vec::new();
    let mut heads = heads.iter();
    let mut next: Option<ObjectId> = None;
    let mut cur_depth;
    loop {
        let commit = match next.take() {
            Some(c) => {
                cur_depth = depths[&c];
                c
            }
            None => match heads.next() {
                Some(head) => {
                    let Some(c) = walk::peel_to_commit(commits.repo, *head) else {
                        continue;
                    };
                    depths.insert(c, 0);
                    cur_depth = 0;
                    c
                }
                None => match stack.pop() {
                    Some(c) => {
                        cur_depth = depths[&c];
                        c
                    }
                    None => break,
                },
            },
        };
        cur_depth += 1;
        if depth != INFINITE_DEPTH as i32 && cur_depth >= depth {
            result.push(commit);
            continue;
        }
        not_shallow.insert(commit);
        let parents = commits.parents(commit)?;
        let last = parents.len().saturating_sub(1);
        for (i, p) in parents.into_iter().enumerate() {
            match depths.get_mut(&p) {
                Some(d) if cur_depth >= *d => continue,
                Some(d) => *d = cur_depth,
                None => {
                    depths.insert(p, cur_depth);
                }
            }
            if i < last {
                stack.push(p);
            } else {
                next = Some(p);
            }
        }
    }
    result.reverse();
    Ok(result)
}

/// git's `get_shallow_commits_by_rev_list` for `rev-list --max-age=<since> --not
/// <nots> --not <wants>`: every listed commit gets its parents, and the listed
/// commits with a parent not listed are the boundary (in the order listed).
fn shallow_commits_by_rev_list(
    commits: &mut Commits<'_>,
    wants: &[ObjectId],
    nots: &[ObjectId],
    since: Option<u64>,
    not_shallow: &mut HashSet<ObjectId>,
) -> Result<Vec<ObjectId>> {
    let repo = commits.repo;
    let start: Vec<(ObjectId, bool)> = nots
        .iter()
        .map(|id| (*id, true))
        .chain(wants.iter().map(|id| (*id, false)))
        .filter_map(|(id, hidden)| Some((walk::peel_to_commit(repo, id)?, hidden)))
        .collect();
    // `deepen-since 0` adds no `--max-age` at all.
    let listed = walk::limit_walk(commits, &start, since.filter(|s| *s != 0))?.commits;
    if listed.is_empty() {
        return Err(ClientError::boxed(
            "no commits selected for shallow requests",
        ));
    }
    not_shallow.extend(listed.iter().copied());
    let mut boundary = Vec::new();
    for id in listed {
        if commits
            .parents(id)?
            .iter()
            .any(|p| !not_shallow.contains(p))
        {
            boundary.push(id);
        }
    }
    for id in &boundary {
        not_shallow.remove(id);
    }
    Ok(boundary)
}

/// For `deepen-relative`: the client's shallow commits that our refs reach (git's
/// `get_reachable_list`, a `rev-list <shallows> --not <our refs>`). Refs count as
/// git's `is_our_ref` counts them: hidden ones only when tips or reachable commits
/// may be asked for.
fn reachable_shallows(
    commits: &mut Commits<'_>,
    cfg: &UploadPackConfig,
    refs: &[AdvertisedRef],
    client: &[ObjectId],
) -> Result<Vec<ObjectId>> {
    let hidden_count = (cfg.allow.tip || cfg.allow.reachable) && !cfg.allow.any;
    let ours: HashSet<ObjectId> = refs
        .iter()
        .filter(|r| hidden_count || !cfg.is_hidden(r.name.as_ref()))
        .filter_map(|r| r.target)
        .collect();
    let (mut reachable, rest): (Vec<ObjectId>, Vec<ObjectId>) =
        client.iter().partition(|id| ours.contains(*id));
    if rest.is_empty() {
        return Ok(reachable);
    }
    let repo = commits.repo;
    let start: Vec<(ObjectId, bool)> = ours
        .iter()
        .filter_map(|id| Some((walk::peel_to_commit(repo, *id)?, true)))
        .chain(rest.iter().map(|id| (*id, false)))
        .collect();
    // A fresh graph: what this walk hides must not leak into the depth walk.
    let mut fresh = Commits::new(repo, HashSet::default());
    let unreachable: HashSet<ObjectId> = walk::limit_walk(&mut fresh, &start, None)?
        .commits
        .into_iter()
        .collect();
    // git lists these in the order of its object hash table; we keep the client's.
    reachable.extend(rest.into_iter().filter(|id| !unreachable.contains(id)));
    Ok(reachable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, id: u8) -> AdvertisedRef {
        AdvertisedRef {
            name: name.into(),
            target: Some(ObjectId::from_bytes_or_panic(&[id; 20])),
            peeled: None,
            symref_target: None,
        }
    }

    #[test]
    fn deepen_not_names_exactly_one_ref() {
        let refs = [
            r("HEAD", 1),
            r("refs/heads/main", 1),
            r("refs/heads/v1", 2),
            r("refs/tags/v1", 3),
            r("refs/remotes/origin/HEAD", 4),
        ];
        let id = |n| Some(ObjectId::from_bytes_or_panic(&[n; 20]));
        assert_eq!(expand_ref(&refs, "main".into()), id(1));
        assert_eq!(expand_ref(&refs, "refs/heads/main".into()), id(1));
        assert_eq!(expand_ref(&refs, "HEAD".into()), id(1));
        assert_eq!(expand_ref(&refs, "origin".into()), id(4));
        assert_eq!(expand_ref(&refs, "v1".into()), None, "ambiguous");
        assert_eq!(expand_ref(&refs, "nothing".into()), None);
    }
}
