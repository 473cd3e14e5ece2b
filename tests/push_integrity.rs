//! Pushes whose objects must not reach the repository as they are: branches
//! pointing at trees or blobs, malformed objects, and what is left behind when a
//! push stops half-way. Each refusal is compared with what git's own receive-pack
//! tells the same client, and the repository must stay `git fsck`-clean.

mod support;

use support::push::*;
use support::{fixture, git, refs_of, scratch};

#[test]
fn branches_take_only_commits() {
    let dir = scratch("push-non-commit");
    let repo = fixture(&dir, "repo.git", 3);
    let wc = work(&dir, &repo, "wc");
    commit(&wc, "a");
    let tree = git(&wc, &["rev-parse", "HEAD^{tree}"]).trim().to_string();
    let blob = git(&wc, &["rev-parse", "HEAD:a"]).trim().to_string();
    let gitd = gitd(&dir);
    let both = Differential::new(&gitd, &repo);
    let before = refs_of(&repo, "refs/");

    let seen = both.push(&wc, &[&format!("{tree}:refs/heads/x")]);
    assert!(
        seen.contains(&format!(
            "remote: error: cannot update ref 'refs/heads/x': trying to write non-commit object {tree} to branch 'refs/heads/x'"
        )),
        "{seen}"
    );
    assert!(seen.contains(&format!(
        "! [remote rejected] {tree} -> x (failed to update ref)"
    )));
    let seen = both.push(&wc, &[&format!("{blob}:refs/heads/y")]);
    assert!(seen.contains(&format!(
        "non-commit object {blob} to branch 'refs/heads/y'"
    )));
    assert!(seen.ends_with("exit Some(1)"), "{seen}");

    // Atomic: the transaction fails as a whole, the good branch included.
    let seen = both.push(
        &wc,
        &[
            "--atomic",
            &format!("{blob}:refs/heads/y"),
            "HEAD:refs/heads/z",
        ],
    );
    assert!(seen.contains("(atomic transaction failed)"), "{seen}");
    assert_eq!(refs_of(&repo, "refs/"), before);
    fsck(&repo);

    // A tag may point at a tree.
    let seen = both.push(&wc, &[&format!("{tree}:refs/tags/t")]);
    assert!(seen.contains("[new tag]"), "{seen}");
    assert_eq!(rev(&repo, "refs/tags/t").as_deref(), Some(tree.as_str()));
    fsck(&repo);
}
