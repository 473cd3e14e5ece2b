//! Pushes with the real `git` client to gitd's receive-pack, checked against the
//! server repository afterwards and, for refusals, against what git's own
//! receive-pack (through `file://`) tells the same client about the same push.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::push::*;
use support::{Gitd, fixture, git, git_bounded, git_cmd, refs_of, scratch};

#[test]
fn receive_pack_is_off_unless_enabled() {
    let dir = scratch("push-off");
    let repo = fixture(&dir, "repo.git", 3);
    let wc = work(&dir, &repo, "wc");
    let new = commit(&wc, "a");
    let gitd = Gitd::start(
        &dir,
        &[
            &format!("--base-path={}", dir.display()),
            "--export-all",
            "--informative-errors",
        ],
    );
    let url = gitd.url("/repo.git");
    let out = push(&wc, &url, &["HEAD:refs/heads/main"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("service not enabled"),
        "{}",
        stderr(&out)
    );
    assert!(!has_object(&repo, &new));

    // A repository may enable it for itself.
    git(&repo, &["config", "daemon.receivepack", "true"]);
    let out = push(&wc, &url, &["HEAD:refs/heads/main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rev(&repo, "main").as_deref(), Some(new.as_str()));
    fsck(&repo);
}

#[test]
fn plain_force_and_delete_pushes_update_the_repository() {
    let dir = scratch("push-plain");
    let repo = fixture(&dir, "repo.git", 5);
    let wc = work(&dir, &repo, "wc");
    let gitd = gitd(&dir);
    let url = gitd.url("/repo.git");

    // Fast-forward of main, and a new branch, over each protocol version asked.
    let first = commit(&wc, "one");
    let out = push(&wc, &url, &["main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rev(&repo, "main").as_deref(), Some(first.as_str()));
    for v in ["0", "1", "2"] {
        let id = commit(&wc, &format!("v{v}"));
        let out = git_bounded(
            &wc,
            &[
                "-c",
                &format!("protocol.version={v}"),
                "push",
                &url,
                &format!("HEAD:refs/heads/new-v{v}"),
            ],
            PUSH_TIMEOUT,
        );
        assert!(out.status.success(), "v{v}: {}", stderr(&out));
        assert!(stderr(&out).contains("[new branch]"));
        assert_eq!(
            rev(&repo, &format!("new-v{v}")).as_deref(),
            Some(id.as_str())
        );
    }
    fsck(&repo);
    assert!(quarantines(&repo).is_empty());
    // The pack's .keep is gone once the refs point into it.
    let keeps = std::fs::read_dir(repo.join("objects/pack"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "keep")
        })
        .count();
    assert_eq!(keeps, 0);

    // A rewritten history needs --force.
    git(&wc, &["reset", "-q", "--hard", &format!("{first}~1")]);
    let rewritten = commit(&wc, "rewritten");
    let out = push(&wc, &url, &["main"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("[rejected]"), "{}", stderr(&out));
    let out = push(&wc, &url, &["--force", "main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("(forced update)"));
    assert_eq!(rev(&repo, "main").as_deref(), Some(rewritten.as_str()));

    // A branch that already has all its objects on the server: an empty pack.
    let out = push(&wc, &url, &["main:refs/heads/copy"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rev(&repo, "copy").as_deref(), Some(rewritten.as_str()));

    // Deletion, without a pack.
    let out = push(&wc, &url, &[":copy", ":new-v0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rev(&repo, "refs/heads/copy"), None);
    assert_eq!(rev(&repo, "refs/heads/new-v0"), None);
    fsck(&repo);

    // Nothing left to push: the client sends no command.
    let out = push(&wc, &url, &["main"]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("Everything up-to-date"));

    // Into an empty repository (no refs: a `capabilities^{}` advertisement).
    let empty = dir.join("empty.git");
    git(&dir, &["init", "-q", "--bare", empty.to_str().unwrap()]);
    let out = push(&wc, &gitd.url("/empty.git"), &["main", "--tags"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut expected = refs_of(&wc, "refs/tags/");
    expected.push(format!("{rewritten} refs/heads/main"));
    expected.sort();
    let mut got = refs_of(&empty, "refs/");
    got.sort();
    assert_eq!(got, expected);
    fsck(&empty);

    // Debian's git 2.39 pushes too.
    let id = commit(&wc, "old-git");
    let mut cmd = Command::new("/usr/bin/git");
    for (k, v) in git_cmd(&wc).get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let child = cmd
        .current_dir(&wc)
        .args(["push", &url, "HEAD:refs/heads/from-239"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = support::wait_bounded(child, PUSH_TIMEOUT);
    assert!(out.status.success(), "git 2.39: {}", stderr(&out));
    assert_eq!(rev(&repo, "from-239").as_deref(), Some(id.as_str()));
    fsck(&repo);
}

#[test]
fn refusals_read_as_git_words_them() {
    let dir = scratch("push-refusals");
    let repo = fixture(&dir, "repo.git", 5);
    git(&repo, &["config", "receive.denyNonFastForwards", "true"]);
    git(&repo, &["config", "receive.denyDeletes", "true"]);
    hook(
        &repo,
        "update",
        "case \"$1\" in refs/heads/blocked*) echo \"update: $1 is blocked\"; exit 1;; esac\n",
    );
    let wc = work(&dir, &repo, "wc");
    let gitd = gitd(&dir);
    let both = Differential::new(&gitd, &repo);

    // A non-fast-forward forced past the client, refused by the server.
    git(&wc, &["reset", "-q", "--hard", "HEAD~1"]);
    let id = commit(&wc, "diverged");
    let seen = both.push(&wc, &["--force", "main"]);
    assert!(seen.contains("! [remote rejected] main -> main (non-fast-forward)"));
    assert!(seen.contains("remote: error: denying non-fast-forward refs/heads/main"));
    assert!(seen.ends_with("exit Some(1)"));
    assert_ne!(rev(&repo, "main").as_deref(), Some(id.as_str()));

    // A non-fast-forward the client refuses itself.
    let seen = both.push(&wc, &["main"]);
    assert!(seen.contains("! [rejected]"), "{seen}");

    // Deletion.
    let seen = both.push(&wc, &[":side"]);
    assert!(seen.contains("(deletion prohibited)"), "{seen}");
    assert!(rev(&repo, "refs/heads/side").is_some());

    // The update hook refuses one ref of two; the other goes through.
    let seen = both.push(&wc, &["HEAD:refs/heads/ok", "HEAD:refs/heads/blocked"]);
    assert!(seen.contains("remote: update: refs/heads/blocked is blocked"));
    assert!(seen.contains("(hook declined)"));
    assert!(seen.contains("[new branch]      HEAD -> ok"));
    assert_eq!(rev(&repo, "ok").as_deref(), Some(id.as_str()));

    // Atomic: one refusal, nothing updated.
    let next = commit(&wc, "atomic");
    let seen = both.push(
        &wc,
        &[
            "--atomic",
            "HEAD:refs/heads/ok",
            "HEAD:refs/heads/blocked2",
            "HEAD:refs/heads/fresh",
        ],
    );
    assert!(seen.contains("(atomic push failure)"), "{seen}");
    assert_eq!(rev(&repo, "ok").as_deref(), Some(id.as_str()));
    assert_eq!(rev(&repo, "refs/heads/fresh"), None);
    // ...and atomic success updates them all.
    both.push(
        &wc,
        &["--atomic", "HEAD:refs/heads/ok", "HEAD:refs/heads/fresh"],
    );
    assert_eq!(rev(&repo, "fresh").as_deref(), Some(next.as_str()));
    fsck(&repo);
}

#[test]
fn pre_receive_refusal_leaves_no_objects_behind() {
    let dir = scratch("push-pre-receive");
    let repo = fixture(&dir, "repo.git", 3);
    // The hook sees the pushed objects through the quarantine, and refuses.
    hook(
        &repo,
        "pre-receive",
        r#"while read old new ref; do
  echo "checking $ref: $(git cat-file -t $new)"
done
case "$GIT_QUARANTINE_PATH" in */objects/tmp_objdir-incoming-*) echo quarantined;; esac
echo "policy: no pushes today" >&2
exit 1
"#,
    );
    let wc = work(&dir, &repo, "wc");
    let gitd = gitd(&dir);
    let both = Differential::new(&gitd, &repo);
    let before = refs_of(&repo, "refs/");
    let new = commit(&wc, "refused");
    let seen = both.push(&wc, &["main", "HEAD:refs/heads/other"]);
    assert!(
        seen.contains("remote: checking refs/heads/main: commit"),
        "{seen}"
    );
    assert!(seen.contains("remote: quarantined"));
    assert!(seen.contains("remote: policy: no pushes today"));
    assert!(seen.contains("! [remote rejected] main -> main (pre-receive hook declined)"));
    assert_eq!(refs_of(&repo, "refs/"), before);
    assert!(!has_object(&repo, &new), "the pushed commit stayed");
    assert!(quarantines(&repo).is_empty());
}

#[test]
fn hooks_get_push_options_and_post_receive_its_input() {
    let dir = scratch("push-hooks");
    let repo = fixture(&dir, "repo.git", 3);
    git(&repo, &["config", "receive.advertisePushOptions", "true"]);
    let record = r#"{
  echo "count=${GIT_PUSH_OPTION_COUNT-unset}"
  i=0
  while [ "$i" -lt "${GIT_PUSH_OPTION_COUNT:-0}" ]; do
    eval "echo option=\$GIT_PUSH_OPTION_$i"
    i=$((i+1))
  done
  cat
} >> "$(basename "$0").log"
"#;
    hook(&repo, "pre-receive", record);
    hook(
        &repo,
        "post-receive",
        &format!("{record}echo post-receive ran\n"),
    );
    hook(
        &repo,
        "post-update",
        "echo \"post-update $*\" >> post-update.log\n",
    );
    let wc = work(&dir, &repo, "wc");
    let gitd = gitd(&dir);
    let both = Differential::new(&gitd, &repo);
    let old = rev(&repo, "main").unwrap();
    let new = commit(&wc, "with-options");
    let seen = both.push(
        &wc,
        &[
            "-o",
            "ci.skip",
            "-o",
            "reviewer=someone else",
            "main",
            "HEAD:refs/heads/topic2",
            ":refs/heads/does-not-exist",
        ],
    );
    assert!(seen.contains("remote: post-receive ran"), "{seen}");
    for name in ["pre-receive.log", "post-receive.log", "post-update.log"] {
        let ours = std::fs::read_to_string(repo.join(name)).unwrap();
        let theirs = std::fs::read_to_string(both.theirs.join(name)).unwrap();
        assert_eq!(ours, theirs, "{name}");
    }
    let post = std::fs::read_to_string(repo.join("post-receive.log")).unwrap();
    assert!(post.contains("count=2\noption=ci.skip\noption=reviewer=someone else\n"));
    assert!(post.contains(&format!("{old} {new} refs/heads/main\n")));
    assert!(!post.contains("does-not-exist"), "not fed to post-receive");

    // Without options, the count is unset.
    let _ = std::fs::remove_file(repo.join("pre-receive.log"));
    commit(&wc, "without");
    let out = push(&wc, &both.url, &["main"]);
    assert!(out.status.success());
    let pre = std::fs::read_to_string(repo.join("pre-receive.log")).unwrap();
    assert!(pre.starts_with("count=unset\n"), "{pre}");
}

#[test]
fn of_two_racing_pushes_one_wins_and_the_other_fails_cleanly() {
    let dir = scratch("push-race");
    let repo = fixture(&dir, "repo.git", 3);
    // Both pushes wait here after reading the same advertisement, so both expect
    // the same old value when they reach the ref update.
    hook(&repo, "pre-receive", "cat >/dev/null\nsleep 2\n");
    let a = work(&dir, &repo, "a");
    let b = work(&dir, &repo, "b");
    let (ida, idb) = (commit(&a, "from-a"), commit(&b, "from-b"));
    let gitd = gitd(&dir);
    let url = gitd.url("/repo.git");
    let (ua, ub) = (url.clone(), url.clone());
    let (pa, pb) = (a.clone(), b.clone());
    let ta = std::thread::spawn(move || push(&pa, &ua, &["main"]));
    let tb = std::thread::spawn(move || push(&pb, &ub, &["main"]));
    let (oa, ob) = (ta.join().unwrap(), tb.join().unwrap());
    assert_ne!(
        oa.status.success(),
        ob.status.success(),
        "exactly one wins:\n{}\n{}",
        stderr(&oa),
        stderr(&ob)
    );
    let (winner, loser) = if oa.status.success() {
        (ida, ob)
    } else {
        (idb, oa)
    };
    assert!(
        stderr(&loser).contains("(failed to update ref)"),
        "{}",
        stderr(&loser)
    );
    assert!(stderr(&loser).contains("cannot lock ref 'refs/heads/main'"));
    assert_eq!(rev(&repo, "main").as_deref(), Some(winner.as_str()));
    fsck(&repo);
}

#[test]
fn oversized_and_shallow_pushes_are_refused() {
    let dir = scratch("push-limits");
    let repo = fixture(&dir, "repo.git", 3);
    let wc = work(&dir, &repo, "wc");
    let gitd = gitd(&dir);
    let url = gitd.url("/repo.git");

    git(&repo, &["config", "receive.maxInputSize", "100"]);
    let big = commit(&wc, "big");
    let out = push(&wc, &url, &["main"]);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(text.contains("pack exceeds maximum allowed size"), "{text}");
    assert!(text.contains("(unpacker error)"), "{text}");
    assert!(!has_object(&repo, &big));
    git(&repo, &["config", "--unset", "receive.maxInputSize"]);
    // The same limit for every repository, from the command line.
    let limited = Gitd::start(
        &dir,
        &[
            &format!("--base-path={}", dir.display()),
            "--export-all",
            "--enable=receive-pack",
            "--max-input-size=100",
        ],
    );
    let out = push(&wc, &limited.url("/repo.git"), &["main"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("pack exceeds maximum allowed size"));
    assert!(!has_object(&repo, &big));

    // A shallow clone pushing history whose root the server lacks.
    let empty = dir.join("empty.git");
    git(&dir, &["init", "-q", "--bare", empty.to_str().unwrap()]);
    let shallow = dir.join("shallow");
    git(
        &dir,
        &[
            "clone",
            "-q",
            "--depth=1",
            &format!("file://{}", repo.display()),
            shallow.to_str().unwrap(),
        ],
    );
    commit(&shallow, "on-shallow");
    let out = push(&shallow, &gitd.url("/empty.git"), &["HEAD:refs/heads/main"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("shallow update not allowed"),
        "{}",
        stderr(&out)
    );
    assert!(quarantines(&empty).is_empty());
    // Pushing on top of history the server has is fine from a shallow clone.
    let id = commit(&shallow, "again");
    let out = push(&shallow, &url, &["HEAD:refs/heads/from-shallow"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rev(&repo, "from-shallow").as_deref(), Some(id.as_str()));
}

#[test]
fn hidden_refs_and_checked_out_branches_are_refused_like_git() {
    let dir = scratch("push-hidden");
    let repo = fixture(&dir, "repo.git", 3);
    git(&repo, &["config", "receive.hideRefs", "refs/heads/side"]);
    let wc = work(&dir, &repo, "wc");
    let gitd = gitd(&dir);
    let url = gitd.url("/repo.git");
    let ours = advertisement(gitd.port, "/repo.git");
    assert!(
        !ours.iter().any(|l| l.contains("refs/heads/side")),
        "{ours:?}"
    );
    assert!(ours.iter().any(|l| l.contains("refs/heads/main")));
    assert_eq!(ours, git_advertisement(&repo));
    // Upload-pack still shows it: receive.hideRefs is for pushes only.
    assert!(git(&wc, &["ls-remote", &url]).contains("refs/heads/side"));
    // The advertisement of an empty repository, and with push options.
    let empty = dir.join("empty.git");
    git(&dir, &["init", "-q", "--bare", empty.to_str().unwrap()]);
    git(&empty, &["config", "receive.advertisePushOptions", "true"]);
    let ours = advertisement(gitd.port, "/empty.git");
    assert!(ours[0].contains("capabilities^{}"), "{ours:?}");
    assert_eq!(ours, git_advertisement(&empty));
    // A repository borrowing objects: the lender's tips come as `.have` lines.
    let fork = dir.join("fork.git");
    git(
        &dir,
        &[
            "clone",
            "-q",
            "--bare",
            "--shared",
            repo.to_str().unwrap(),
            fork.to_str().unwrap(),
        ],
    );
    git(&repo, &["branch", "lender-only", "main~1"]);
    let ours = advertisement(gitd.port, "/fork.git");
    let lender = rev(&repo, "lender-only").unwrap();
    assert!(ours.contains(&format!("{lender} .have")), "{ours:?}");
    assert_eq!(ours, git_advertisement(&fork));
    let both = Differential::new(&gitd, &repo);
    commit(&wc, "x");
    let told = both.push(&wc, &["--force", "HEAD:refs/heads/side"]);
    assert!(told.contains("(deny updating a hidden ref)"), "{told}");
    // git's atomic transaction covers only the refs that passed the early checks:
    // next to a hidden ref, main is still updated.
    let id = commit(&wc, "y");
    let told = both.push(
        &wc,
        &["--atomic", "HEAD:refs/heads/main", "HEAD:refs/heads/side"],
    );
    assert!(told.contains("(deny updating a hidden ref)"), "{told}");
    assert_eq!(rev(&repo, "main").as_deref(), Some(id.as_str()));

    // A non-bare repository: its checked-out branch is not pushed to unless
    // receive.denyCurrentBranch allows it.
    let nonbare = dir.join("nonbare");
    git(
        &dir,
        &[
            "clone",
            "-q",
            repo.to_str().unwrap(),
            nonbare.to_str().unwrap(),
        ],
    );
    git(&nonbare, &["config", "receive.denyDeleteCurrent", "refuse"]);
    let both = Differential::new(&gitd, &nonbare.join(".git"));
    let ours_url = gitd.url("/nonbare");
    let theirs_url = format!("file://{}", both.theirs.display());
    let id = commit(&wc, "to-nonbare");
    let o = push(&wc, &ours_url, &["HEAD:refs/heads/main"]);
    let t = push(&wc, &theirs_url, &["HEAD:refs/heads/main"]);
    let urls = [ours_url.as_str(), theirs_url.as_str()];
    assert_eq!(seen(&o, &urls), seen(&t, &urls));
    assert!(stderr(&o).contains("refusing to update checked out branch: refs/heads/main"));
    assert!(stderr(&o).contains("(branch is currently checked out)"));
    let o = push(&wc, &ours_url, &["HEAD:refs/heads/elsewhere"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(rev(&nonbare, "elsewhere").as_deref(), Some(id.as_str()));
    git(&nonbare, &["config", "receive.denyCurrentBranch", "ignore"]);
    let o = push(&wc, &ours_url, &["HEAD:refs/heads/main"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(rev(&nonbare, "main").as_deref(), Some(id.as_str()));
}

#[test]
fn hooks_are_bounded_in_time_and_output() {
    let dir = scratch("push-bounds");
    let repo = fixture(&dir, "repo.git", 3);
    let wc = work(&dir, &repo, "wc");
    let gitd = Gitd::start(
        &dir,
        &[
            &format!("--base-path={}", dir.display()),
            "--export-all",
            "--enable=receive-pack",
            "--timeout=3",
        ],
    );
    let url = gitd.url("/repo.git");
    // A hook printing 3 MiB: the pusher gets 1 MiB and a note, the push goes on.
    hook(
        &repo,
        "pre-receive",
        "cat >/dev/null\nhead -c 3145728 /dev/zero | tr '\\0' x\n",
    );
    let id = commit(&wc, "chatty");
    let out = push(&wc, &url, &["main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("truncated after 1048576 bytes"),
        "{}",
        &text[text.len() - 300..]
    );
    let xs = text.bytes().filter(|&b| b == b'x').count();
    assert!((1 << 20..(1 << 20) + 1000).contains(&xs), "{xs}");
    assert_eq!(rev(&repo, "main").as_deref(), Some(id.as_str()));

    // A hook that never ends is stopped at --timeout and refuses the push.
    hook(
        &repo,
        "pre-receive",
        "cat >/dev/null\nsleep 30 &\necho waiting\nwait\n",
    );
    let next = commit(&wc, "slow");
    let started = std::time::Instant::now();
    let out = push(&wc, &url, &["main"]);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(text.contains("remote: waiting"), "{text}");
    assert!(text.contains("hook pre-receive timed out"), "{text}");
    assert!(text.contains("(pre-receive hook declined)"), "{text}");
    assert_ne!(rev(&repo, "main").as_deref(), Some(next.as_str()));
    assert!(!has_object(&repo, &next));
}

#[test]
fn symbolic_refs_pushed_with_their_target_are_updated_once_like_git() {
    let dir = scratch("push-symref");
    let repo = fixture(&dir, "repo.git", 3);
    git(
        &repo,
        &["symbolic-ref", "refs/heads/alias", "refs/heads/main"],
    );
    let wc = work(&dir, &repo, "wc");
    let gitd = gitd(&dir);
    let both = Differential::new(&gitd, &repo);
    // Through the symbolic ref alone.
    let one = commit(&wc, "via-alias");
    both.push(&wc, &["HEAD:refs/heads/alias"]);
    assert_eq!(rev(&repo, "main").as_deref(), Some(one.as_str()));
    // With its target, the same update: done once, both reported ok.
    let two = commit(&wc, "both");
    let told = both.push(&wc, &["HEAD:refs/heads/alias", "HEAD:refs/heads/main"]);
    assert!(told.ends_with("exit Some(0)"), "{told}");
    assert_eq!(rev(&repo, "main").as_deref(), Some(two.as_str()));
    // Different updates: both refused.
    commit(&wc, "three");
    let other = git(
        &wc,
        &[
            "commit-tree",
            "-p",
            "HEAD~1",
            "-m",
            "other",
            "HEAD~1^{tree}",
        ],
    );
    let other = format!("{}:refs/heads/main", other.trim());
    let told = both.push(&wc, &["HEAD:refs/heads/alias", &other]);
    assert!(
        told.contains("refusing inconsistent update between symref 'refs/heads/alias'"),
        "{told}"
    );
    assert!(told.contains("(inconsistent aliased update)"), "{told}");
    assert_eq!(rev(&repo, "main").as_deref(), Some(two.as_str()));
}
