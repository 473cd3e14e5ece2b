//! Pushes whose objects must not reach the repository as they are: branches
//! pointing at trees or blobs, malformed objects, and what is left behind when a
//! push stops half-way. Each refusal is compared with what git's own receive-pack
//! tells the same client, and the repository must stay `git fsck`-clean.

mod support;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::push::*;
use support::{Raw, fixture, git, git_cmd, pkt, refs_of, scratch, wait_until};

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

/// A new object written as it is, whatever its content.
fn literally(wc: &Path, kind: &str, content: &[u8]) -> String {
    let mut child = git_cmd(wc)
        .args(["hash-object", "--literally", "-w", "--stdin", "-t", kind])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(content).unwrap();
    let out = support::wait_bounded(child, PUSH_TIMEOUT);
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A pack of exactly `ids` (no walk: they need not parse).
fn pack_of_ids(wc: &Path, ids: &[&str]) -> Vec<u8> {
    pack_objects(wc, &[], &format!("{}\n", ids.join("\n")))
}

/// The same push to gitd and to git's receive-pack on `theirs`: what each told the
/// pusher on side-band 2 and in its report must be the same.
fn same_answer(port: u16, theirs: &Path, input: &[u8]) -> (String, Vec<String>) {
    let ours = demux(&raw_push_bytes(port, "/repo.git", input));
    assert_eq!(ours, demux(&git_push_bytes(theirs, input)));
    ours
}

#[test]
fn malformed_objects_are_reported_as_git_reports_them() {
    let dir = scratch("push-malformed-objects");
    let repo = fixture(&dir, "repo.git", 3);
    let wc = work(&dir, &repo, "wc");
    let theirs = twin(&repo);
    let gitd = gitd(&dir);
    let zero = "0".repeat(40);
    let before = refs_of(&repo, "refs/");
    let push = |new: &str, pack: &[u8]| {
        let mut input = pkt(format!(
            "{zero} {new} refs/heads/bad\0 report-status side-band-64k quiet"
        )
        .as_bytes());
        input.extend_from_slice(b"0000");
        input.extend_from_slice(pack);
        input
    };

    let garbage = literally(&wc, "commit", b"garbage\n");
    let garbage_push = push(&garbage, &pack_of_ids(&wc, &[&garbage]));
    let mut entry = b"999999 f\0".to_vec();
    entry.extend_from_slice(&[0xaa; 20]);
    let tree = literally(&wc, "tree", &entry);
    let author = "author A U Thor <a@example.com> 1700000000 +0000";
    let on_bad_tree = literally(
        &wc,
        "commit",
        format!("tree {tree}\n{author}\ncommitter C <c@example.com> 1700000000 +0000\n\nx\n")
            .as_bytes(),
    );
    let bad_tree_push = push(&on_bad_tree, &pack_of_ids(&wc, &[&on_bad_tree, &tree]));
    let good_tree = git(&wc, &["rev-parse", "HEAD^{tree}"]).trim().to_string();
    let no_author = literally(
        &wc,
        "commit",
        format!("tree {good_tree}\ncommitter C <c@example.com> 1700000000 +0000\n\nx\n").as_bytes(),
    );
    let no_author_push = push(&no_author, &pack_of_ids(&wc, &[&no_author]));

    // Without fsck: the pack is taken, the walk from the new value fails.
    let (text, report) = same_answer(gitd.port, &theirs, &garbage_push);
    assert_eq!(
        text,
        format!("error: bogus commit object {garbage}\nfatal: bad object {garbage}\n")
    );
    assert_eq!(
        report,
        [
            "unpack ok\n",
            "ng refs/heads/bad missing necessary objects\n",
            "0000"
        ]
    );
    let (text, _) = same_answer(gitd.port, &theirs, &bad_tree_push);
    assert_eq!(text, "fatal: malformed mode in tree entry\n");
    assert_eq!(refs_of(&repo, "refs/"), before);
    fsck(&repo);

    // With fsck: the unpacker refuses the pack, named as git would have run it.
    for r in [&repo, &theirs] {
        git(r, &["config", "receive.fsckObjects", "true"]);
    }
    let (text, report) = same_answer(gitd.port, &theirs, &garbage_push);
    assert_eq!(
        text,
        format!("error: bogus commit object {garbage}\nfatal: invalid commit\n")
    );
    assert_eq!(
        report,
        [
            "unpack unpack-objects abnormal exit\n",
            "ng refs/heads/bad unpacker error\n",
            "0000"
        ]
    );
    let (text, _) = same_answer(gitd.port, &theirs, &bad_tree_push);
    assert!(
        text.contains("badTree: cannot be parsed as a tree"),
        "{text}"
    );
    for r in [&repo, &theirs] {
        git(r, &["config", "transfer.unpackLimit", "1"]);
    }
    let (text, report) = same_answer(gitd.port, &theirs, &no_author_push);
    assert_eq!(
        text,
        format!(
            "error: object {no_author}: missingAuthor: invalid format - expected 'author' line\nfatal: fsck error in packed object\n"
        )
    );
    assert_eq!(report[0], "unpack index-pack abnormal exit\n");
    assert_eq!(refs_of(&repo, "refs/"), before);
    assert!(!has_object(&repo, &no_author));
    assert!(quarantines(&repo).is_empty());
    fsck(&repo);

    // Without fsck a commit without author walks fine, and is taken.
    for r in [&repo, &theirs] {
        git(r, &["config", "receive.fsckObjects", "false"]);
    }
    let (_, report) = same_answer(gitd.port, &theirs, &no_author_push);
    assert_eq!(report[1], "ok refs/heads/bad\n");
}

#[test]
fn quarantines_go_on_every_exit() {
    let dir = scratch("push-quarantine-exit");
    let repo = fixture(&dir, "repo.git", 3);
    let wc = work(&dir, &repo, "wc");
    let old = rev(&repo, "main").unwrap();
    let new = noise_commit(&wc, 400_000);
    let pack = pack_of(&wc, &format!("{new}\n^{old}"));
    let mut gitd = gitd(&dir);

    // A push stalled mid-pack outlives the shutdown grace period.
    let mut raw = Raw::connect(gitd.port);
    raw.send_pkt(b"git-receive-pack /repo.git\0host=127.0.0.1\0");
    raw.read_until_flush();
    raw.send_pkt(format!("{old} {new} refs/heads/main\0 report-status").as_bytes());
    raw.send(b"0000").send(&pack[..pack.len() / 2]);
    assert!(wait_until(Duration::from_secs(10), || quarantines(&repo)
        .len()
        == 1));
    // SAFETY: signalling our own child by PID.
    unsafe { libc::kill(gitd.child.id() as i32, libc::SIGTERM) };
    let status = gitd.wait_exit(Duration::from_secs(60)).expect("exits");
    assert!(status.success(), "{}", gitd.logs());
    assert!(gitd.logs().contains("still open after"), "{}", gitd.logs());
    assert_eq!(quarantines(&repo), Vec::<String>::new());
    drop(raw);

    // What a killed gitd left: its lock file, unlocked. Next to it one whose owner
    // lives (locked) and one of git's own receive-pack (no lock file).
    let objects = repo.join("objects");
    let plant = |name: &str, lock: bool| {
        let q = objects.join(format!("tmp_objdir-incoming-{name}"));
        std::fs::create_dir_all(q.join("pack")).unwrap();
        std::fs::write(q.join("pack/tmp_pack_x"), b"partial").unwrap();
        lock.then(|| std::fs::File::create(q.join("gitd.lock")).unwrap())
    };
    plant("stale1", true);
    let live = plant("live01", true).unwrap();
    // SAFETY: flock on a file we just opened.
    assert_eq!(unsafe { libc::flock(live.as_raw_fd(), libc::LOCK_EX) }, 0);
    plant("gits01", false);
    let gitd = gitd.restart(
        &[
            &format!("--base-path={}", dir.display()),
            "--export-all",
            "--enable=receive-pack",
        ],
        None,
    );
    assert!(
        wait_until(Duration::from_secs(10), || quarantines(&repo).len() == 2),
        "{:?} {}",
        quarantines(&repo),
        gitd.logs()
    );
    let mut left = quarantines(&repo);
    left.sort();
    assert_eq!(
        left,
        ["tmp_objdir-incoming-gits01", "tmp_objdir-incoming-live01"]
    );
    // A push that fails after its pack came leaves nothing either.
    let out = push(
        &wc,
        &gitd.url("/repo.git"),
        &[&format!("{new}:refs/heads/x")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    hook(&repo, "pre-receive", "exit 1\n");
    commit(&wc, "refused");
    let out = push(&wc, &gitd.url("/repo.git"), &["HEAD:refs/heads/y"]);
    assert!(!out.status.success());
    assert_eq!(quarantines(&repo).len(), 2);
    drop(live);
    fsck(&repo);
}

/// The peak resident memory of a process, in KiB (`VmHWM`).
fn peak_kib(pid: u32) -> u64 {
    support::vm_kib(pid, "VmHWM:")
}

#[test]
fn a_big_blob_is_indexed_in_bounded_memory() {
    const MIB: u64 = 1 << 20;
    let dir = scratch("push-big-blob");
    let repo = fixture(&dir, "repo.git", 3);
    let wc = work(&dir, &repo, "wc");
    // 96 MiB of zeros: a pack of about 100 KiB.
    let file = std::fs::File::create(wc.join("zeros.bin")).unwrap();
    file.set_len(96 * MIB).unwrap();
    drop(file);
    git(&wc, &["add", "zeros.bin"]);
    git(&wc, &["commit", "-q", "-m", "zeros"]);
    let new = git(&wc, &["rev-parse", "HEAD"]).trim().to_string();
    let gitd = gitd(&dir);
    let url = gitd.url("/repo.git");
    let before = peak_kib(gitd.child.id());

    let out = push(&wc, &url, &["HEAD:refs/heads/main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let grown = peak_kib(gitd.child.id()) - before;
    // Holding the blob whole would take 96 MiB at least.
    assert!(grown < 40 * 1024, "peak grew by {grown} KiB");
    assert_eq!(rev(&repo, "main").as_deref(), Some(new.as_str()));
    fsck(&repo);

    // 64 MiB that do not compress: a pack as large as the blob.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..8 * MIB)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    std::fs::write(wc.join("noise.bin"), &noise).unwrap();
    drop(noise);
    git(&wc, &["add", "noise.bin"]);
    git(&wc, &["commit", "-q", "-m", "noise"]);
    let out = push(&wc, &url, &["HEAD:refs/heads/noise"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let grown = peak_kib(gitd.child.id()) - before;
    assert!(grown < 40 * 1024, "peak grew by {grown} KiB");
    fsck(&repo);

    // Two big blobs of one pack, one a delta of the other: the base is resolved
    // whole, and both are in the index.
    let mut content = vec![7u8; 40 * MIB as usize];
    for (i, b) in content.iter_mut().enumerate().step_by(4096) {
        *b = (i / 4096) as u8;
    }
    std::fs::write(wc.join("a.bin"), &content).unwrap();
    content[12345] ^= 0xff;
    std::fs::write(wc.join("b.bin"), &content).unwrap();
    git(&wc, &["add", "a.bin", "b.bin"]);
    git(&wc, &["commit", "-q", "-m", "pair"]);
    let pair = git(&wc, &["rev-parse", "HEAD"]).trim().to_string();
    let out = push(&wc, &url, &["HEAD:refs/heads/pair"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rev(&repo, "pair").as_deref(), Some(pair.as_str()));
    for f in ["a.bin", "b.bin", "zeros.bin"] {
        assert!(has_object(&repo, &format!("{pair}:{f}")), "{f}");
    }
    fsck(&repo);
}

#[test]
fn thin_pushes_are_completed_from_the_repository() {
    let dir = scratch("push-thin");
    let repo = fixture(&dir, "repo.git", 3);
    let wc = work(&dir, &repo, "wc");
    let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(wc.join("text"), &text).unwrap();
    git(&wc, &["add", "text"]);
    git(&wc, &["commit", "-q", "-m", "text"]);
    let gitd = gitd(&dir);
    let url = gitd.url("/repo.git");
    let out = push(&wc, &url, &["HEAD:refs/heads/main"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // One line changed: the client sends a delta against the server's blob.
    std::fs::write(wc.join("text"), text.replace("line 777\n", "line 777!\n")).unwrap();
    git(&wc, &["commit", "-q", "-a", "-m", "edit"]);
    let new = git(&wc, &["rev-parse", "HEAD"]).trim().to_string();
    let out = push(&wc, &url, &["--progress", "HEAD:refs/heads/main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Total 3 (delta 2)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(rev(&repo, "main").as_deref(), Some(new.as_str()));
    fsck(&repo);
    // The pack of that push holds the base it was sent without.
    let counts = git(&repo, &["count-objects", "-v"]);
    let in_pack: usize = counts
        .lines()
        .find_map(|l| l.strip_prefix("in-pack: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(in_pack >= 3 + 3 + 2, "{counts}");
    let clone = dir.join("clone");
    let out = support::git_bounded(
        &dir,
        &["clone", "-q", &url, clone.to_str().unwrap()],
        PUSH_TIMEOUT,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(clone.join("text")).unwrap().len(),
        text.len() + 1
    );
}

/// `--max-request-memory` bounds what a push may make gitd hold: a pack announcing
/// more objects than its index tables fit in is refused from its header, with the
/// reason, before any of it is read; the repository is unchanged and no quarantine
/// stays. The same push fits a larger budget.
#[test]
fn the_request_memory_budget_bounds_pushed_packs() {
    let dir = scratch("push-budget");
    let repo = fixture(&dir, "repo.git", 3);
    let wc = work(&dir, &repo, "wc");
    // 8,000 new blobs: more than 1 MiB of index tables at 160 bytes an object.
    for i in 0..8000 {
        let d = wc.join(format!("d{}", i % 40));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), format!("{i}\n")).unwrap();
    }
    git(&wc, &["add", "."]);
    git(&wc, &["commit", "-q", "-m", "many"]);
    let before = refs_of(&repo, "refs/");
    let base = format!("--base-path={}", dir.display());
    let flags = [
        "--export-all",
        "--informative-errors",
        "--enable=receive-pack",
    ];
    let mut args = vec![base.as_str(), "--max-request-memory=1m"];
    args.extend(flags);
    let small = support::Gitd::start(&dir, &args);
    let out = push(&wc, &small.url("/repo.git"), &["HEAD:refs/heads/many"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("more than this server indexes in --max-request-memory=1 MiB"),
        "{err}"
    );
    assert_eq!(refs_of(&repo, "refs/"), before);
    assert!(quarantines(&repo).is_empty(), "{:?}", quarantines(&repo));
    fsck(&repo);

    let mut args = vec![base.as_str(), "--max-request-memory=16m"];
    args.extend(flags);
    let large = support::Gitd::start(&dir, &args);
    let out = push(&wc, &large.url("/repo.git"), &["HEAD:refs/heads/many"]);
    assert!(out.status.success(), "{}", stderr(&out));
    fsck(&repo);
}
