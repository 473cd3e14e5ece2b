//! What the client has below the edge commits, found the way git's sparse walk
//! finds it (`pack.useSparse`, git's default since 2.27: `revision.c:
//! mark_trees_uninteresting_sparse`).
//!
//! Marking every object of every edge commit's tree costs a full tree walk per
//! edge, and a client announces all its refs as haves: old tags and maintenance
//! branches whose trees share little with each other. For a fetch of a few commits
//! that walk was most of the time the pack took. The sparse walk reads trees only
//! where it matters: trees of sent and edge commits are grouped by path, and only
//! a path where both a sent tree and a tree the client has sit is looked into. The
//! children of the client's trees there are marked as the client's; paths the sent
//! commits did not change hold no tree that is sent, so they are not read at all.
//!
//! Like git's, the walk can miss an object the client has at another path (a file
//! copied or moved across directories): it is then sent again, as git sends it.

use gix::ObjectId;
use std::collections::HashMap;

use gix::hashtable::HashSet;
use gix::object::Kind;
use gix::objs::TreeRefIter;

use super::read::Reader;
use crate::Result;

/// Sent commits up to which the sparse walk is the cheaper one. It reads the trees
/// of every path the sent commits changed; with a long history to send that is
/// about every tree of it, read again by the walk of what is sent, while walking
/// the edge commits' trees whole costs one tree per edge, however many commits.
pub const SPARSE_MAX_COMMITS: usize = 256;

/// Add to `seen` the trees `client` (the edge commits' root trees) and what the
/// sparse walk finds below them, next to the root trees of the `sent` commits.
/// Objects already in `seen` count as the client's.
pub fn mark_sparse(
    repo: &gix::Repository,
    reader: &mut Reader<'_>,
    client: &[ObjectId],
    sent: &[ObjectId],
    seen: &mut HashSet<ObjectId>,
) -> Result<()> {
    seen.extend(client.iter().copied());
    let mut root: Vec<ObjectId> = client.iter().chain(sent).copied().collect();
    root.sort_unstable();
    root.dedup();
    let mut groups = vec![root];
    while let Some(group) = groups.pop() {
        // Only a path with trees of both kinds can hide something the client has
        // below a sent tree.
        let ours = group.iter().filter(|id| seen.contains(*id)).count();
        if ours == 0 || ours == group.len() {
            continue;
        }
        let mut by_name: HashMap<Vec<u8>, Vec<ObjectId>> = HashMap::new();
        for tree in &group {
            let theirs = seen.contains(tree);
            let data = reader.object(repo, tree, None, Kind::Tree)?;
            for entry in TreeRefIter::from_bytes(&data, gix::hash::Kind::Sha1) {
                let entry = entry?;
                if entry.mode.is_commit() {
                    continue;
                }
                if theirs {
                    seen.insert(entry.oid.to_owned());
                }
                if entry.mode.is_tree() {
                    by_name
                        .entry(entry.filename.to_vec())
                        .or_default()
                        .push(entry.oid.to_owned());
                }
            }
        }
        for (_, mut trees) in by_name {
            trees.sort_unstable();
            trees.dedup();
            groups.push(trees);
        }
    }
    Ok(())
}
