//! Which objects a pack must contain: everything reachable from the wants that is
//! not reachable from what the client has.
//!
//! gix can walk commits with hidden tips, but has no object-level exclusion, so the
//! tree part is ours and follows git's `--objects-edge`: the trees of the *edge*
//! commits (parents the client has of commits we send) are marked as seen first (as
//! far as git's sparse walk looks into them when few commits are sent, [`edges`]),
//! so what the client already holds is not walked or sent again. The same seen-set then tells the pack writer
//! which objects a thin pack's deltas may refer to. Under a partial clone filter the
//! walk below the commits is [`filtered::walk`]'s.

use gix::ObjectId;
use gix::hashtable::HashSet;

use super::edges;
use super::filter::Filter;
use super::filtered;
use super::packs::Packs;
use super::progress::Meter;
use super::read::Reader;
use super::walk;
use crate::Result;

/// The object ids to send, in the order they were found (commits first, then the
/// trees and blobs of each commit, then tags).
#[derive(Debug, Default)]
pub struct ObjectSet {
    pub ids: Vec<ObjectId>,
    pub commits: usize,
    /// Everything in `ids` plus what the client is known to have: the edge and common
    /// commits and all objects of their trees. This is the walk's own seen-set, kept
    /// rather than copied, so a thin pack costs no second set.
    pub known: HashSet<ObjectId>,
    /// True if `known` holds anything the client has (there were common commits).
    pub client_has_objects: bool,
}

/// What a pack is built from, after negotiation.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The client's wants (any object kind).
    pub wants: Vec<ObjectId>,
    /// Objects we share with the client (acknowledged haves).
    pub common: Vec<ObjectId>,
    /// For `include-tag`: annotated tags as (tag object, peeled object).
    pub include_tags: Vec<(ObjectId, ObjectId)>,
    /// Commits whose parents are not walked: the shallow boundary (git's grafts).
    pub grafts: Vec<ObjectId>,
    /// Further commits the client has, treated as edges (unshallowed commits).
    pub extra_edges: Vec<ObjectId>,
    /// Partial clone filter.
    pub filter: Option<Filter>,
}

/// Enumerate the objects to send for `sel`, reporting their number to `meter`.
/// Trees are read from `packs` where they have them.
pub fn enumerate(
    repo: &gix::Repository,
    packs: &Packs,
    sel: &Selection,
    meter: &mut Meter,
) -> Result<ObjectSet> {
    let mut seen: HashSet<ObjectId> = HashSet::default();
    let mut out = ObjectSet::default();
    let mut reader = Reader::new(packs);

    // Wants: tags are sent as they are and peeled, commits walked, trees and blobs
    // sent with everything they contain.
    let mut tips = Vec::new();
    let mut roots = Vec::new();
    let mut tags = Vec::new();
    for want in &sel.wants {
        peel_want(repo, *want, &mut tips, &mut roots, &mut tags)?;
    }

    // Commits the client has, peeled from whatever it named.
    let mut hidden = Vec::new();
    for id in &sel.common {
        if let Ok(obj) = repo.find_object(*id)
            && let Ok(obj) = obj.peel_tags_to_end()
            && obj.kind == gix::object::Kind::Commit
        {
            hidden.push(obj.id);
        }
    }

    let wanted_commits = if sel.filter.is_some() {
        tips.clone()
    } else {
        Vec::new()
    };
    // With haves, git's limited walk: it stops a few commits past the point where
    // only the client's commits are left, where gix's hidden walk paints the haves'
    // history down to the root.
    let limited = !hidden.is_empty() || !sel.grafts.is_empty() || !sel.extra_edges.is_empty();
    let (commits, edges) = if !limited {
        // pack-objects walks newest first; the order can matter to a filter.
        walk_commits(repo, tips, &hidden, &mut seen, sel.filter.is_some(), meter)?
    } else {
        walk_grafted(repo, tips, &hidden, sel, &mut seen)?
    };
    meter.set(commits.len());

    // Edge commits: parents we do not send, so the client has them. They and what
    // the sparse walk finds in their trees are known to the client and excluded from
    // the walk below. (Commits we send are already in `seen`, so `insert` skips them.)
    out.client_has_objects = !hidden.is_empty() || !sel.extra_edges.is_empty();
    let mut edge_trees = Vec::new();
    for edge in edges {
        if seen.insert(edge)
            && let Ok(commit) = repo.find_commit(edge)
        {
            edge_trees.push(commit.tree_id()?.detach());
        }
    }
    if edge_trees.is_empty() {
        // A clone: the client has nothing.
    } else if commits.len() <= edges::SPARSE_MAX_COMMITS {
        let mut sent_trees = Vec::with_capacity(commits.len());
        for commit in &commits {
            sent_trees.push(repo.find_commit(*commit)?.tree_id()?.detach());
        }
        edges::mark_sparse(repo, &mut reader, &edge_trees, &sent_trees, &mut seen)?;
    } else {
        for tree in edge_trees {
            walk_tree(repo, tree, &mut seen, None, &mut reader)?;
        }
    }

    out.commits = commits.len();
    if let Some(filter) = &sel.filter {
        filtered::walk(
            repo,
            filter,
            &commits,
            &wanted_commits,
            &roots,
            &mut seen,
            &mut out.ids,
        )?;
        meter.set(out.ids.len());
    } else {
        out.ids.extend_from_slice(&commits);
        for commit in &commits {
            let tree = repo.find_commit(*commit)?.tree_id()?.detach();
            walk_tree(repo, tree, &mut seen, Some(&mut out.ids), &mut reader)?;
            meter.set(out.ids.len());
        }
        for root in roots {
            if repo.find_header(root)?.kind() == gix::object::Kind::Tree {
                walk_tree(repo, root, &mut seen, Some(&mut out.ids), &mut reader)?;
            } else if seen.insert(root) {
                out.ids.push(root);
            }
        }
    }

    // include-tag: annotated tags whose peeled object is in the pack, with every tag
    // of their chain (git's `add_tag_chain`).
    let sent: HashSet<ObjectId> = if sel.include_tags.is_empty() {
        HashSet::default()
    } else {
        out.ids.iter().copied().collect()
    };
    for (tag, peeled) in &sel.include_tags {
        if sent.contains(peeled) {
            peel_tag_chain(repo, *tag, &mut tags)?;
        }
    }
    for tag in tags {
        if seen.insert(tag) {
            out.ids.push(tag);
        }
    }
    meter.set(out.ids.len());
    out.known = seen;
    Ok(out)
}

/// The commits to send (added to `seen`) and the edge commits (the client has them),
/// with gix's walk: the edges are the parents we do not send, and the commits the
/// client has.
fn walk_commits(
    repo: &gix::Repository,
    tips: Vec<ObjectId>,
    hidden: &[ObjectId],
    seen: &mut HashSet<ObjectId>,
    newest_first: bool,
    meter: &mut Meter,
) -> Result<(Vec<ObjectId>, Vec<ObjectId>)> {
    let mut commits = Vec::new();
    let mut parents = Vec::new();
    if !tips.is_empty() {
        let mut walk = repo.rev_walk(tips).with_hidden(hidden.iter().copied());
        if newest_first {
            walk = walk.sorting(gix::revision::walk::Sorting::ByCommitTime(
                Default::default(),
            ));
        }
        for info in walk.all()? {
            let info = info?;
            if seen.insert(info.id) {
                commits.push(info.id);
                meter.set(commits.len());
                if !hidden.is_empty() {
                    parents.extend(info.parent_ids.iter().copied());
                }
            }
        }
    }
    parents.extend(hidden.iter().copied());
    Ok((commits, parents))
}

/// The same with git's limited walk, for fetches with haves and shallow fetches. In
/// the latter grafted commits have no parents on either side: on ours the boundary
/// stops the walk, on theirs the client's shallow commits do (below them it has
/// nothing). The unshallowed commits (`extra_edges`) are commits the client has, so
/// edges too, like git's `--not` after the haves.
fn walk_grafted(
    repo: &gix::Repository,
    tips: Vec<ObjectId>,
    hidden: &[ObjectId],
    sel: &Selection,
    seen: &mut HashSet<ObjectId>,
) -> Result<(Vec<ObjectId>, Vec<ObjectId>)> {
    let grafts = sel.grafts.iter().chain(&sel.extra_edges).copied().collect();
    let mut graph = walk::Commits::new(repo, grafts);
    let start: Vec<(ObjectId, bool)> = tips
        .into_iter()
        .map(|id| (id, false))
        .chain(hidden.iter().chain(&sel.extra_edges).map(|id| (*id, true)))
        .collect();
    let walked = walk::limit_walk(&mut graph, &start, None)?;
    seen.extend(walked.commits.iter().copied());
    let mut edges = Vec::new();
    for id in &walked.commits {
        edges.extend(
            graph
                .parents(*id)?
                .into_iter()
                .filter(|p| !seen.contains(p)),
        );
    }
    // In a shallow fetch the client's commits are edges too, as in git's
    // `--objects-edge-aggressive`. Else, as in git, only the parents of sent commits
    // are: a client announces all its refs as haves, and the trees of old tags and
    // branches hold little of what is sent and cost a lot to read.
    if !sel.grafts.is_empty() || !sel.extra_edges.is_empty() {
        edges.extend(hidden.iter().chain(&sel.extra_edges).copied());
    }
    Ok((walked.commits, edges))
}

/// Sort a wanted object into commit tips, tree/blob roots or tags (following tags).
fn peel_want(
    repo: &gix::Repository,
    id: ObjectId,
    tips: &mut Vec<ObjectId>,
    roots: &mut Vec<ObjectId>,
    tags: &mut Vec<ObjectId>,
) -> Result<()> {
    match peel_tag_chain(repo, id, tags)? {
        (id, gix::object::Kind::Commit) => tips.push(id),
        (id, _) => roots.push(id),
    }
    Ok(())
}

/// Follow a chain of tag objects starting at `id`, adding each tag to `tags`.
/// Returns the first object that is not a tag.
pub(crate) fn peel_tag_chain(
    repo: &gix::Repository,
    mut id: ObjectId,
    tags: &mut Vec<ObjectId>,
) -> Result<(ObjectId, gix::object::Kind)> {
    loop {
        let obj = repo.find_object(id)?;
        if obj.kind != gix::object::Kind::Tag {
            return Ok((id, obj.kind));
        }
        tags.push(id);
        id = obj.into_tag().target_id()?.detach();
    }
}

/// Add `root` and every tree and blob below it that is not in `seen` to `out` (or
/// only to `seen` when `out` is `None`). Submodule commits are not followed.
fn walk_tree(
    repo: &gix::Repository,
    root: ObjectId,
    seen: &mut HashSet<ObjectId>,
    mut out: Option<&mut Vec<ObjectId>>,
    reader: &mut Reader<'_>,
) -> Result<()> {
    if !seen.insert(root) {
        return Ok(());
    }
    if let Some(out) = out.as_deref_mut() {
        out.push(root);
    }
    let mut stack = vec![root];
    while let Some(tree) = stack.pop() {
        let data = reader.object(repo, &tree, None, gix::object::Kind::Tree)?;
        for entry in gix::objs::TreeRefIter::from_bytes(&data, gix::hash::Kind::Sha1) {
            let entry = entry?;
            if entry.mode.is_commit() || !seen.insert(entry.oid.to_owned()) {
                continue;
            }
            if let Some(out) = out.as_deref_mut() {
                out.push(entry.oid.to_owned());
            }
            if entry.mode.is_tree() {
                stack.push(entry.oid.to_owned());
            }
        }
    }
    Ok(())
}
