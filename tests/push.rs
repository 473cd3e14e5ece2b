//! Pushes with the real `git` client to gitd's receive-pack, checked against the
//! server repository afterwards and, for refusals, against what git's own
//! receive-pack (through `file://`) tells the same client about the same push.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::{
    Gitd, Raw, fixture, git, git_bounded, git_cmd, pkt, pkt_lines, refs_of, scratch, wait_until,
};

const PUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// gitd serving `dir`, receive-pack enabled by flag.
fn gitd(dir: &Path) -> Gitd {
    Gitd::start(
        dir,
        &[
            &format!("--base-path={}", dir.display()),
            "--export-all",
            "--informative-errors",
            "--enable=receive-pack",
        ],
    )
}

/// A non-bare clone of `repo` to make commits in.
fn work(dir: &Path, repo: &Path, name: &str) -> PathBuf {
    let wc = dir.join(name);
    git(
        dir,
        &["clone", "-q", repo.to_str().unwrap(), wc.to_str().unwrap()],
    );
    wc
}

/// A new commit on the checked-out branch with a file of its own; its id.
fn commit(wc: &Path, name: &str) -> String {
    std::fs::write(wc.join(name), format!("{name}\n").repeat(50)).unwrap();
    git(wc, &["add", name]);
    git(wc, &["commit", "-q", "-m", name]);
    git(wc, &["rev-parse", "HEAD"]).trim().to_string()
}

fn push(wc: &Path, url: &str, args: &[&str]) -> Output {
    let mut all = vec!["push", url];
    all.extend_from_slice(args);
    git_bounded(wc, &all, PUSH_TIMEOUT)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn fsck(repo: &Path) {
    let out = git_bounded(repo, &["fsck", "--full", "--strict"], PUSH_TIMEOUT);
    assert!(out.status.success(), "fsck: {}", stderr(&out));
}

fn rev(repo: &Path, spec: &str) -> Option<String> {
    let out = git_bounded(repo, &["rev-parse", "--verify", "-q", spec], PUSH_TIMEOUT);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn has_object(repo: &Path, id: &str) -> bool {
    git_bounded(repo, &["cat-file", "-e", id], PUSH_TIMEOUT)
        .status
        .success()
}

/// Leftover quarantine directories in a repository.
fn quarantines(repo: &Path) -> Vec<String> {
    std::fs::read_dir(repo.join("objects"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tmp_objdir-incoming-"))
        .collect()
}

fn hook(repo: &Path, name: &str, script: &str) {
    let path = repo.join("hooks").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, format!("#!/bin/sh\n{script}")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A copy of `repo` (hooks and config included) for git's own receive-pack.
fn twin(repo: &Path) -> PathBuf {
    let copy = repo.with_extension("twin.git");
    let status = Command::new("cp")
        .args(["-a", repo.to_str().unwrap(), copy.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    copy
}

/// What the pusher saw, with the remote's URL and git's padding of `remote:`
/// lines taken out.
fn seen(out: &Output, urls: &[&str]) -> String {
    let mut text = stderr(out);
    for url in urls {
        text = text.replace(url, "URL");
    }
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    format!("{}\nexit {:?}", lines.join("\n"), out.status.code())
}

/// Payloads of a receive-pack advertisement, the agent masked.
fn mask_agent(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .map(|l| match l.find(" agent=") {
            Some(i) => format!("{} agent=AGENT", &l[..i]),
            None => l.trim_end().to_string(),
        })
        .collect()
}

/// gitd's receive-pack advertisement for `path`.
fn advertisement(port: u16, path: &str) -> Vec<String> {
    let mut raw = Raw::connect(port);
    raw.send_pkt(format!("git-receive-pack {path}\0host=127.0.0.1\0").as_bytes());
    let lines = raw
        .read_until_flush()
        .iter()
        .map(|r| r.text())
        .collect::<Vec<_>>();
    raw.send(b"0000");
    mask_agent(lines)
}

/// git's, for the same repository.
fn git_advertisement(repo: &Path) -> Vec<String> {
    let out = git_bounded(
        repo,
        &["receive-pack", "--advertise-refs", "."],
        PUSH_TIMEOUT,
    );
    let mut lines = support::pkt_lines(&out.stdout);
    if lines.last().is_some_and(|l| l == "0000") {
        lines.pop();
        lines.push("Flush".into());
    }
    mask_agent(lines)
}

/// Push the same to gitd and to git's receive-pack on a copy of the repository
/// made beforehand; both must tell the client the same and end with the same refs.
struct Differential {
    ours: PathBuf,
    theirs: PathBuf,
    url: String,
    file_url: String,
}

impl Differential {
    fn new(gitd: &Gitd, repo: &Path) -> Self {
        let theirs = twin(repo);
        let name = repo.file_name().unwrap().to_str().unwrap();
        Differential {
            ours: repo.to_owned(),
            file_url: format!("file://{}", theirs.display()),
            theirs,
            url: gitd.url(&format!("/{name}")),
        }
    }

    /// Push from `wc` with `args` to both; returns what the client saw from gitd.
    fn push(&self, wc: &Path, args: &[&str]) -> String {
        let ours = push(wc, &self.url, args);
        let theirs = push(wc, &self.file_url, args);
        let urls = [self.url.as_str(), self.file_url.as_str()];
        let (ours, theirs) = (seen(&ours, &urls), seen(&theirs, &urls));
        assert_eq!(ours, theirs, "gitd and git differ for push {args:?}");
        assert_eq!(refs_of(&self.ours, "refs/"), refs_of(&self.theirs, "refs/"));
        ours
    }
}

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
    for v in ["0", "1"] {
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
    git(&wc, &["reset", "-q", "--hard", "HEAD~3"]);
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

/// The pack git would send for `range`, made in `wc`.
fn pack_of(wc: &Path, range: &str) -> Vec<u8> {
    let mut child = git_cmd(wc)
        .args(["pack-objects", "--stdout", "--revs", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{range}\n").as_bytes())
        .unwrap();
    let out = support::wait_bounded(child, PUSH_TIMEOUT);
    assert!(out.status.success());
    out.stdout
}

#[test]
fn a_push_cut_off_mid_pack_changes_nothing() {
    let dir = scratch("push-cut");
    let repo = fixture(&dir, "repo.git", 3);
    let wc = work(&dir, &repo, "wc");
    let old = rev(&repo, "main").unwrap();
    // Incompressible content, so that half the pack is half of an object.
    let noise: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(wc.join("noise.bin"), &noise).unwrap();
    git(&wc, &["add", "noise.bin"]);
    git(&wc, &["commit", "-q", "-m", "noise"]);
    let new = git(&wc, &["rev-parse", "HEAD"]).trim().to_string();
    let pack = pack_of(&wc, &format!("{new}\n^{old}"));
    let packs_before = std::fs::read_dir(repo.join("objects/pack"))
        .unwrap()
        .count();
    let gitd = gitd(&dir);

    let mut raw = Raw::connect(gitd.port);
    raw.send_pkt(b"git-receive-pack /repo.git\0host=127.0.0.1\0");
    let adv = raw.read_until_flush();
    assert!(adv[0].text().contains("report-status"), "{adv:?}");
    raw.send_pkt(
        format!("{old} {new} refs/heads/main\0 report-status side-band-64k quiet").as_bytes(),
    );
    raw.send(b"0000");
    raw.send(&pack[..pack.len() / 2]);
    std::thread::sleep(Duration::from_millis(300));
    drop(raw);

    assert!(
        wait_until(Duration::from_secs(20), || gitd
            .logs()
            .contains("service=\"receive-pack\"")),
        "{}",
        gitd.logs()
    );
    assert_eq!(rev(&repo, "main").as_deref(), Some(old.as_str()));
    assert!(!has_object(&repo, &new));
    assert!(wait_until(Duration::from_secs(5), || quarantines(&repo).is_empty()));
    assert_eq!(
        std::fs::read_dir(repo.join("objects/pack"))
            .unwrap()
            .count(),
        packs_before
    );
    assert!(
        wait_until(Duration::from_secs(5), || gitd.logs().contains("hung up")),
        "{}",
        gitd.logs()
    );

    // A pusher that sends everything and leaves while pre-receive runs.
    hook(&repo, "pre-receive", "cat >/dev/null\nsleep 1\n");
    let mut raw = Raw::connect(gitd.port);
    raw.send_pkt(b"git-receive-pack /repo.git\0host=127.0.0.1\0");
    raw.read_until_flush();
    raw.send_pkt(format!("{old} {new} refs/heads/main\0 report-status quiet").as_bytes());
    raw.send(b"0000");
    raw.send(&pack);
    std::thread::sleep(Duration::from_millis(300));
    drop(raw);
    assert!(
        wait_until(Duration::from_secs(20), || gitd
            .logs()
            .contains("hung up before the refs were updated")),
        "{}",
        gitd.logs()
    );
    assert_eq!(rev(&repo, "main").as_deref(), Some(old.as_str()));
    assert!(!has_object(&repo, &new));
    assert!(wait_until(Duration::from_secs(5), || quarantines(&repo).is_empty()));
    std::fs::remove_file(repo.join("hooks/pre-receive")).unwrap();

    // The server is still there, and the same push done properly goes through.
    let out = push(&wc, &gitd.url("/repo.git"), &["main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rev(&repo, "main").as_deref(), Some(new.as_str()));
    fsck(&repo);
}

#[test]
fn of_two_racing_pushes_one_wins_and_the_other_fails_cleanly() {
    let dir = scratch("push-race");
    let repo = fixture(&dir, "repo.git", 3);
    // Both pushes wait here after their checks, so both expect the same old value.
    hook(&repo, "pre-receive", "cat >/dev/null\nsleep 1\n");
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
    let both = Differential::new(&gitd, &repo);
    commit(&wc, "x");
    let told = both.push(&wc, &["--force", "HEAD:refs/heads/side"]);
    assert!(told.contains("(deny updating a hidden ref)"), "{told}");

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

/// The pkt-lines after the advertisement: what a server answered to `input`.
fn answer(bytes: &[u8]) -> Vec<String> {
    let lines = pkt_lines(bytes);
    let start = lines.iter().position(|l| l == "0000").map_or(0, |i| i + 1);
    lines[start..].to_vec()
}

/// gitd's answer to `input` after the advertisement of `path`.
fn raw_push(port: u16, path: &str, input: &[u8]) -> Vec<String> {
    let mut raw = Raw::connect(port);
    raw.send_pkt(format!("git-receive-pack {path}\0host=127.0.0.1\0").as_bytes());
    raw.send(input);
    let mut out = Vec::new();
    let _ = std::io::Read::read_to_end(&mut raw.stream, &mut out);
    answer(&out)
}

/// git's receive-pack's answer to the same input, on a pipe.
fn git_push(repo: &Path, input: &[u8]) -> Vec<String> {
    let mut child = git_cmd(repo)
        .args(["receive-pack", "."])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = support::wait_bounded(child, PUSH_TIMEOUT);
    writer.join().unwrap();
    answer(&out.stdout)
}

#[test]
fn malformed_pushes_get_clear_answers() {
    let dir = scratch("push-malformed");
    let repo = fixture(&dir, "repo.git", 3);
    let theirs = twin(&repo);
    let gitd = gitd(&dir);
    let old = rev(&repo, "main").unwrap();
    let side = rev(&repo, "side").unwrap();
    let zero = "0".repeat(40);

    // A pack that is not one: the report says why, without side-band (report-status v1).
    let mut input = pkt(format!("{zero} {old} refs/heads/copy\0 report-status").as_bytes());
    input.extend_from_slice(b"0000KCAP\0\0\0\x02\0\0\0\x01");
    let ours = raw_push(gitd.port, "/repo.git", &input);
    assert_eq!(
        ours,
        [
            "unpack protocol error (pack signature mismatch detected)\n",
            "ng refs/heads/copy unpacker error\n",
            "0000"
        ]
    );
    assert_eq!(ours, git_push(&theirs, &input));

    // A deletion with a stale old value, and a delete-only push (no pack at all).
    let mut input = pkt(format!("{old} {zero} refs/heads/side\0 report-status").as_bytes());
    input.extend(pkt(format!("{side} {zero} refs/heads/topic").as_bytes()));
    input.extend_from_slice(b"0000");
    let ours = raw_push(gitd.port, "/repo.git", &input);
    assert_eq!(ours[0], "unpack ok\n");
    assert_eq!(ours[1], "ng refs/heads/side failed to update ref\n");
    assert_eq!(ours[2], "ng refs/heads/topic failed to update ref\n");
    assert_eq!(ours, git_push(&theirs, &input));
    assert!(rev(&repo, "refs/heads/side").is_some());

    // A line that is no command: an ERR line, and the server goes on.
    let mut raw = Raw::connect(gitd.port);
    raw.send_pkt(b"git-receive-pack /repo.git\0host=127.0.0.1\0");
    raw.read_until_flush();
    raw.send_pkt(b"abc refs/heads/x").send(b"0000");
    let reply = raw.read().text();
    assert!(
        reply.contains("protocol error: expected old/new/ref, got 'abc refs/heads/x'"),
        "{reply}"
    );
    let out = git_bounded(&dir, &["ls-remote", &gitd.url("/repo.git")], PUSH_TIMEOUT);
    assert!(out.status.success());
}
