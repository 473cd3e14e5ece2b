//! Clones and fetches with the real `git` client over all protocol versions.

mod support;

use std::path::Path;

use support::{Gitd, fixture, git, git_cmd, git_output, refs_of, scratch};

/// Every object id and ref of a repository (for comparing two repositories).
fn all_objects(repo: &Path) -> Vec<String> {
    let out = git(repo, &["rev-list", "--objects", "--all"]);
    let mut ids: Vec<String> = out.lines().map(|l| l[..40].to_string()).collect();
    ids.sort();
    ids
}

fn fsck(repo: &Path) {
    let out = git_output(repo, &["fsck", "--full", "--strict"]);
    assert!(
        out.status.success(),
        "fsck failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mirror_clone_over_each_protocol_matches_the_served_repository() {
    let dir = scratch("clone-mirror");
    let repo = fixture(&dir, "repo.git", 40);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    for v in ["0", "1", "2"] {
        let dest = dir.join(format!("mirror-v{v}.git"));
        git(
            &dir,
            &[
                "-c",
                &format!("protocol.version={v}"),
                "clone",
                "-q",
                "--mirror",
                &gitd.url("/repo.git"),
                dest.to_str().unwrap(),
            ],
        );
        fsck(&dest);
        assert_eq!(
            refs_of(&dest, "refs/"),
            refs_of(&repo, "refs/"),
            "refs differ over protocol v{v}"
        );
        assert_eq!(
            all_objects(&dest),
            all_objects(&repo),
            "objects differ over protocol v{v}"
        );
        assert_eq!(
            git(&dest, &["symbolic-ref", "HEAD"]).trim(),
            "refs/heads/main"
        );
    }
    let logs = gitd.logs();
    for v in ["protocol=0", "protocol=1", "protocol=2"] {
        assert!(logs.contains(v), "no request logged with {v}:\n{logs}");
    }
}

#[test]
fn normal_clone_checks_out_head_and_gets_annotated_tags() {
    let dir = scratch("clone-normal");
    let repo = fixture(&dir, "repo.git", 30);
    // HEAD names a branch other than the first one, so the symref must really travel.
    git(&repo, &["symbolic-ref", "HEAD", "refs/heads/topic"]);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    for v in ["0", "2"] {
        let dest = dir.join(format!("work-v{v}"));
        git(
            &dir,
            &[
                "-c",
                &format!("protocol.version={v}"),
                "clone",
                "-q",
                &gitd.url("/repo.git"),
                dest.to_str().unwrap(),
            ],
        );
        fsck(&dest);
        assert_eq!(
            git(&dest, &["symbolic-ref", "HEAD"]).trim(),
            "refs/heads/topic",
            "v{v}"
        );
        assert_eq!(
            git(&dest, &["symbolic-ref", "refs/remotes/origin/HEAD"]).trim(),
            "refs/remotes/origin/topic",
            "v{v}"
        );
        assert!(
            dest.join("topic.txt").exists(),
            "worktree of topic checked out (v{v})"
        );
        assert_eq!(
            refs_of(&dest, "refs/tags/"),
            refs_of(&repo, "refs/tags/"),
            "tags (v{v})"
        );
        assert_eq!(git(&dest, &["cat-file", "-t", "v1.0"]).trim(), "tag");
        assert_eq!(git(&dest, &["cat-file", "-t", "nested"]).trim(), "tag");
    }
}

#[test]
fn ls_remote_matches_git_upload_pack() {
    let dir = scratch("ls-remote");
    let repo = fixture(&dir, "repo.git", 20);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    for v in ["0", "2"] {
        let ours = git(
            &dir,
            &[
                "-c",
                &format!("protocol.version={v}"),
                "ls-remote",
                "--symref",
                &gitd.url("/repo.git"),
            ],
        );
        let oracle = git(
            &dir,
            &[
                "-c",
                &format!("protocol.version={v}"),
                "ls-remote",
                "--symref",
                repo.to_str().unwrap(),
            ],
        );
        assert_eq!(ours, oracle, "ls-remote differs over v{v}");
        assert!(ours.contains("ref: refs/heads/main\tHEAD"));
        assert!(ours.contains("refs/tags/v1.0^{}"));
        let prefixed = git(
            &dir,
            &[
                "-c",
                &format!("protocol.version={v}"),
                "ls-remote",
                "--tags",
                &gitd.url("/repo.git"),
            ],
        );
        let oracle = git(
            &dir,
            &[
                "-c",
                &format!("protocol.version={v}"),
                "ls-remote",
                "--tags",
                repo.to_str().unwrap(),
            ],
        );
        assert_eq!(prefixed, oracle);
        assert!(!prefixed.contains("refs/heads/"));
    }
}

/// How many objects the pack that git traced to `trace` (`GIT_TRACE_PACKFILE`)
/// holds: what the server sent, before `index-pack --fix-thin` appends the bases of
/// thin deltas to the stored pack.
fn objects_in_received_pack(trace: &Path) -> usize {
    let pack = std::fs::read(trace).unwrap();
    assert!(pack.starts_with(b"PACK"), "no pack traced");
    u32::from_be_bytes(pack[8..12].try_into().unwrap()) as usize
}

#[test]
fn incremental_fetch_sends_only_the_new_objects() {
    let dir = scratch("fetch");
    let repo = fixture(&dir, "repo.git", 30);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    for v in ["0", "1", "2"] {
        let dest = dir.join(format!("c{v}"));
        let proto = format!("protocol.version={v}");
        git(
            &dir,
            &[
                "-c",
                &proto,
                "clone",
                "-q",
                &gitd.url("/repo.git"),
                dest.to_str().unwrap(),
            ],
        );
        let before = git(&dest, &["rev-parse", "origin/main"]).trim().to_string();
        support::add_commits(&repo, "main", 3, &format!("v{v}"));
        let trace = dir.join(format!("fetch-{v}.pack"));
        let out = git_cmd(&dest)
            .env("GIT_TRACE_PACKFILE", &trace)
            .args([
                "-c",
                &proto,
                "-c",
                "fetch.unpackLimit=1",
                "fetch",
                "-q",
                "origin",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        fsck(&dest);
        let after = git(&dest, &["rev-parse", "origin/main"]).trim().to_string();
        assert_eq!(after, git(&repo, &["rev-parse", "main"]).trim());
        // Exactly what the client lacked: the new commits, trees and blobs.
        let expected = git(
            &repo,
            &["rev-list", "--objects", &after, &format!("^{before}")],
        )
        .lines()
        .count();
        assert_eq!(
            objects_in_received_pack(&trace),
            expected,
            "v{v}: pack should hold only the new objects"
        );
        assert_eq!(
            expected,
            3 * 3 + 3,
            "3 commits × (commit, tree, new file) + 3 README versions"
        );
    }
}

#[test]
fn single_branch_and_divergent_fetches_stay_complete() {
    let dir = scratch("single-branch");
    let repo = fixture(&dir, "repo.git", 30);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    for v in ["0", "2"] {
        let proto = format!("protocol.version={v}");
        let dest = dir.join(format!("side-v{v}"));
        git(
            &dir,
            &[
                "-c",
                &proto,
                "clone",
                "-q",
                "--single-branch",
                "-b",
                "side",
                &gitd.url("/repo.git"),
                dest.to_str().unwrap(),
            ],
        );
        fsck(&dest);
        assert!(dest.join("side.txt").exists());
        // main moves on; the side clone then fetches main, whose history diverged.
        support::add_commits(&repo, "main", 2, &format!("div{v}"));
        git(
            &dest,
            &[
                "-c",
                &proto,
                "fetch",
                "-q",
                "origin",
                "main:refs/remotes/origin/main",
            ],
        );
        fsck(&dest);
        assert_eq!(
            git(&dest, &["rev-parse", "origin/main"]),
            git(&repo, &["rev-parse", "main"])
        );
    }
}

#[test]
fn debians_older_git_clones_too() {
    let old_git = Path::new("/usr/bin/git");
    if !old_git.exists() {
        eprintln!("skipping: no second git at /usr/bin/git");
        return;
    }
    let dir = scratch("old-git");
    let repo = fixture(&dir, "repo.git", 20);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    for v in ["0", "2"] {
        let dest = dir.join(format!("old-v{v}.git"));
        let out = std::process::Command::new(old_git)
            .current_dir(&dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .args([
                "-c",
                &format!("protocol.version={v}"),
                "clone",
                "-q",
                "--mirror",
                &gitd.url("/repo.git"),
                dest.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git 2.39 clone v{v}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fsck(&dest);
        assert_eq!(refs_of(&dest, "refs/"), refs_of(&repo, "refs/"));
    }
}

#[test]
fn empty_repository_clones_with_its_unborn_branch() {
    let dir = scratch("empty");
    let repo = dir.join("empty.git");
    git(
        &dir,
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "trunk",
            repo.to_str().unwrap(),
        ],
    );
    std::fs::write(repo.join("git-daemon-export-ok"), "").unwrap();
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    for v in ["0", "2"] {
        let dest = dir.join(format!("e{v}"));
        let out = git_output(
            &dir,
            &[
                "-c",
                &format!("protocol.version={v}"),
                "clone",
                &gitd.url("/empty.git"),
                dest.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "v{v}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("empty repository"));
        if v == "2" {
            // `ls-refs unborn` tells the client the name of the unborn default branch.
            assert_eq!(
                git(&dest, &["symbolic-ref", "HEAD"]).trim(),
                "refs/heads/trunk"
            );
        }
    }
}
