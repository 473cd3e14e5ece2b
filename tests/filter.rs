//! Partial clones (`--filter`): the real `git` client against gitd, compared with the
//! same client against `git upload-pack` (file://, the oracle) on the same repository.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{Gitd, Raw, fixture, git, git_cmd, pkt, scratch};

/// Every git process gets this long before the test fails.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Run `cmd` with `input` on stdin to completion within [`TIMEOUT`] (killed and
/// failed otherwise).
fn bounded(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git runs");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    std::thread::spawn(move || stdin.write_all(&input));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// `git <args>` in `dir`, bounded; the output whatever the exit status.
fn run(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = git_cmd(dir);
    cmd.args(args);
    bounded(cmd, b"")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The served repository: the usual fixture plus trees and blobs that occur at several
/// depths (met deep first, then shallow, within one tree and across commits), a big
/// blob, a symlink and a submodule entry. `uploadpack.allowFilter` is on.
fn setup(name: &str) -> (PathBuf, PathBuf, Gitd) {
    let dir = scratch(name);
    let repo = fixture(&dir, "repo.git", 30);
    let work = dir.join("work");
    git(
        &dir,
        &[
            "clone",
            "-q",
            repo.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    let write = |path: &str, content: &[u8]| {
        let p = work.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    };
    // Older commit: the shallow copies.
    write("shared/one.txt", b"shared one\n");
    write("shared/inner/two.txt", b"shared two\n");
    write("dup.txt", b"duplicated blob\n");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "shallow copies"]);
    // Newer commit: deep copies of the same tree and blob, and deep-only content;
    // "a/" sorts before "dup.txt" and "shared/", so the walk meets them deep first.
    write("a/b/c/shared/one.txt", b"shared one\n");
    write("a/b/c/shared/inner/two.txt", b"shared two\n");
    write("a/b/dup.txt", b"duplicated blob\n");
    write("a/b/c/d/e/leaf.txt", b"leaf\n");
    let big: Vec<u8> = (0..6000u32).map(|i| (i * 7 % 251) as u8).collect();
    write("big.bin", &big);
    std::os::unix::fs::symlink("a/b/dup.txt", work.join("link")).unwrap();
    git(&work, &["add", "-A"]);
    let commit = git(&work, &["rev-parse", "HEAD"]);
    git(
        &work,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{},submodule", commit.trim()),
        ],
    );
    git(&work, &["commit", "-q", "-m", "deep copies"]);
    git(&work, &["push", "-q", "origin", "main"]);
    git(&repo, &["config", "uploadpack.allowFilter", "true"]);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    (dir, repo, gitd)
}

/// "<id> <type>" of every object in a repository, sorted.
fn objects(repo: &Path) -> Vec<String> {
    let out = run(
        repo,
        &[
            "cat-file",
            "--batch-all-objects",
            "--batch-check=%(objectname) %(objecttype)",
        ],
    );
    assert!(out.status.success(), "cat-file: {}", stderr(&out));
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// A bare clone of `url` with `extra` options over protocol `v`.
fn clone(dir: &Path, url: &str, v: &str, extra: &[&str], dest: &str) -> (PathBuf, Output) {
    let dest = dir.join(dest);
    let proto = format!("protocol.version={v}");
    let mut args = vec!["-c", &proto, "clone", "--bare"];
    args.extend_from_slice(extra);
    args.extend([url, dest.to_str().unwrap()]);
    let out = run(dir, &args);
    (dest, out)
}

fn file_url(repo: &Path) -> String {
    format!("file://{}", repo.display())
}

const FILTERS: &[&str] = &[
    "blob:none",
    "blob:limit=1k",
    "tree:0",
    "tree:1",
    "tree:3",
    "tree:5",
    "object:type=blob",
    "object:type=tree",
    "object:type=commit",
    "object:type=tag",
    "combine:blob:none+tree:2",
    "combine:tree:4+blob:limit=1k",
];

#[test]
fn filtered_clones_receive_what_git_sends() {
    let (dir, repo, gitd) = setup("filter-clone");
    let all = objects(&repo);
    for v in ["0", "2"] {
        for filter in FILTERS {
            let opt = format!("--filter={filter}");
            let tag = format!("{}-v{v}", filter.replace([':', '=', '+'], "_"));
            let (ours, out) = clone(&dir, &gitd.url("/repo.git"), v, &[&opt], &tag);
            assert!(out.status.success(), "{filter} v{v}: {}", stderr(&out));
            let (theirs, out) = clone(&dir, &file_url(&repo), v, &[&opt], &format!("{tag}.git"));
            assert!(
                out.status.success(),
                "oracle {filter} v{v}: {}",
                stderr(&out)
            );
            let got = objects(&ours);
            assert_eq!(got, objects(&theirs), "objects sent for {filter} over v{v}");
            assert!(got.len() < all.len(), "{filter} v{v}: nothing filtered");
            assert_eq!(
                git(&ours, &["config", "remote.origin.partialclonefilter"]),
                git(&theirs, &["config", "remote.origin.partialclonefilter"]),
            );
            let fsck = |r: &Path| run(r, &["fsck", "--full"]).status.success();
            assert_eq!(fsck(&ours), fsck(&theirs), "fsck of {filter} v{v}");
        }
    }
}

#[test]
fn fetch_into_a_partial_clone_receives_what_git_sends() {
    let (dir, repo, gitd) = setup("filter-fetch");
    for (v, filter) in [("2", "blob:none"), ("0", "tree:1"), ("2", "blob:limit=1k")] {
        let opt = format!("--filter={filter}");
        let tag = format!("{}-v{v}", filter.replace([':', '='], "_"));
        let (ours, _) = clone(&dir, &gitd.url("/repo.git"), v, &[&opt], &tag);
        let (theirs, _) = clone(&dir, &file_url(&repo), v, &[&opt], &format!("{tag}.git"));
        support::add_commits(&repo, "main", 3, &tag);
        for r in [&ours, &theirs] {
            let out = run(
                r,
                &[
                    "-c",
                    &format!("protocol.version={v}"),
                    "fetch",
                    "-q",
                    "origin",
                    "+refs/heads/*:refs/heads/*",
                ],
            );
            assert!(out.status.success(), "fetch {filter}: {}", stderr(&out));
        }
        assert_eq!(
            objects(&ours),
            objects(&theirs),
            "after fetch, {filter} v{v}"
        );
    }
}

#[test]
fn shallow_partial_clones_receive_what_git_sends() {
    let (dir, repo, gitd) = setup("filter-shallow");
    let shallow = |r: &Path| {
        let mut l: Vec<String> = std::fs::read_to_string(r.join("shallow"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        l.sort();
        l
    };
    for v in ["0", "2"] {
        for opts in [
            &["--depth=3", "--filter=blob:none"][..],
            &["--depth=1", "--filter=tree:0"],
            &["--depth=2", "--filter=blob:limit=1k"],
        ] {
            let tag = format!("{}-v{v}", opts.join("").replace([':', '=', '-'], "_"));
            let (ours, out) = clone(&dir, &gitd.url("/repo.git"), v, opts, &tag);
            assert!(out.status.success(), "{opts:?} v{v}: {}", stderr(&out));
            let (theirs, out) = clone(&dir, &file_url(&repo), v, opts, &format!("{tag}.git"));
            assert!(
                out.status.success(),
                "oracle {opts:?} v{v}: {}",
                stderr(&out)
            );
            assert_eq!(objects(&ours), objects(&theirs), "{opts:?} v{v}");
            assert_eq!(shallow(&ours), shallow(&theirs), "{opts:?} v{v}");
            assert!(!shallow(&ours).is_empty(), "{opts:?} v{v}: a shallow clone");
        }
    }
}

#[test]
fn without_allow_filter_the_client_falls_back_to_a_full_clone() {
    let (dir, repo, gitd) = setup("filter-off");
    git(&repo, &["config", "--unset", "uploadpack.allowFilter"]);
    let all = objects(&repo);
    for v in ["0", "2"] {
        let (ours, out) = clone(&dir, &gitd.url("/repo.git"), v, &["--filter=tree:0"], "o");
        assert!(out.status.success(), "{}", stderr(&out));
        let ours_err = stderr(&out);
        let (theirs, out) = clone(&dir, &file_url(&repo), v, &["--filter=tree:0"], "t.git");
        let warning = "warning: filtering not recognized by server, ignoring";
        assert!(stderr(&out).contains(warning), "oracle: {}", stderr(&out));
        assert!(ours_err.contains(warning), "v{v}: {ours_err}");
        assert_eq!(objects(&ours), all);
        assert_eq!(objects(&theirs), all);
        std::fs::remove_dir_all(ours).unwrap();
        std::fs::remove_dir_all(theirs).unwrap();
    }
    // A client that sends a filter anyway gets git's error: v2 has no such argument,
    // v0 did not negotiate the capability.
    let main = git(&repo, &["rev-parse", "main"]).trim().to_string();
    let mut v2 = pkt(b"command=fetch\n");
    v2.extend(b"0001");
    v2.extend(pkt(format!("want {main}\n").as_bytes()));
    v2.extend(pkt(b"filter blob:none\n"));
    v2.extend(b"0000");
    let mut v0 = pkt(format!("want {main} side-band-64k filter\n").as_bytes());
    v0.extend(pkt(b"filter blob:none\n"));
    v0.extend(b"0000");
    for (req, is_v2) in [(v2, true), (v0, false)] {
        let mut raw = Raw::connect(gitd.port);
        let hello: &[u8] = if is_v2 {
            b"git-upload-pack /repo.git\0host=localhost\0\0version=2\0"
        } else {
            b"git-upload-pack /repo.git\0host=localhost\0"
        };
        raw.send_pkt(hello);
        raw.read_until_flush();
        raw.send(&req);
        let reply = raw.read().text();
        let mut cmd = git_cmd(&repo);
        if is_v2 {
            cmd.env("GIT_PROTOCOL", "version=2");
        }
        cmd.args(["upload-pack", "."]);
        let theirs = bounded(cmd, &req);
        let expected = stderr(&theirs).trim().replace("fatal: ", "ERR ");
        assert!(expected.contains("filter"), "{expected}");
        assert_eq!(reply, expected);
    }
}

#[test]
fn uploadpackfilter_settings_refuse_filters_with_gits_messages() {
    let (dir, repo, gitd) = setup("filter-deny");
    // (settings, filter, the refusal git sends or None if it serves the filter)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, Option<&'a str>);
    let cases: &[Case] = &[
        (
            &[("uploadpackfilter.blob:none.allow", "false")],
            "blob:none",
            Some("filter 'blob:none' not supported"),
        ),
        (
            &[
                ("uploadpackfilter.allow", "false"),
                ("uploadpackfilter.tree.allow", "true"),
            ],
            "blob:limit=1k",
            Some("filter 'blob:limit' not supported"),
        ),
        (
            &[
                ("uploadpackfilter.allow", "false"),
                ("uploadpackfilter.tree.allow", "true"),
            ],
            "tree:1",
            None,
        ),
        (
            &[("uploadpackfilter.tree.maxDepth", "1")],
            "tree:2",
            Some("tree filter allows max depth 1, but got 2"),
        ),
        (&[("uploadpackfilter.tree.maxDepth", "1")], "tree:1", None),
        // Subsection names are case-sensitive: "Tree" is not the tree filter.
        (&[("uploadpackfilter.Tree.allow", "false")], "tree:0", None),
        (
            &[("uploadpackfilter.tree.maxDepth", "1")],
            "combine:blob:none+tree:5",
            Some("tree filter allows max depth 1, but got 5"),
        ),
        (
            &[("uploadpackfilter.combine.allow", "false")],
            "combine:blob:none+tree:0",
            Some("filter 'combine' not supported"),
        ),
        (
            &[("uploadpackfilter.object:type.allow", "false")],
            "combine:blob:none+object:type=blob",
            Some("filter 'object:type' not supported"),
        ),
    ];
    for (n, (settings, filter, refusal)) in cases.iter().enumerate() {
        for (key, value) in *settings {
            git(&repo, &["config", key, value]);
        }
        for v in ["0", "2"] {
            let opt = format!("--filter={filter}");
            let (_, ours) = clone(
                &dir,
                &gitd.url("/repo.git"),
                v,
                &[&opt],
                &format!("o{n}{v}"),
            );
            let (_, theirs) = clone(&dir, &file_url(&repo), v, &[&opt], &format!("t{n}{v}"));
            match refusal {
                // git's upload-pack dies with the message (over file:// its stderr
                // is the client's), after sending it as `ERR`; whether its client
                // gets to print the `ERR` is a race, so the oracle is its `fatal:`.
                Some(message) => {
                    assert!(!theirs.status.success() && !ours.status.success());
                    let has = |out: &Output, line: &str| stderr(out).lines().any(|l| l == line);
                    assert!(
                        has(&theirs, &format!("fatal: {message}")),
                        "{}",
                        stderr(&theirs)
                    );
                    let remote = format!("fatal: remote error: {message}");
                    assert!(has(&ours, &remote), "{filter} v{v}: {}", stderr(&ours));
                }
                None => {
                    assert!(theirs.status.success(), "oracle: {}", stderr(&theirs));
                    assert!(ours.status.success(), "{filter} v{v}: {}", stderr(&ours));
                }
            }
        }
        for (key, _) in *settings {
            git(&repo, &["config", "--unset-all", key]);
        }
    }
}

/// A v2 fetch request with `args`, sent to gitd and to `git upload-pack`: returns the
/// protocol lines before the pack and the objects in the pack, for each.
fn v2_fetch(gitd: &Gitd, repo: &Path, args: &[String]) -> [(Vec<String>, Vec<String>); 2] {
    let mut req = pkt(b"command=fetch\n");
    req.extend(b"0001");
    for a in args {
        req.extend(pkt(format!("{a}\n").as_bytes()));
    }
    req.extend(b"0000");
    let mut raw = Raw::connect(gitd.port);
    raw.send_pkt(b"git-upload-pack /repo.git\0host=localhost\0\0version=2\0")
        .send(&req);
    let _ = raw.stream.shutdown(std::net::Shutdown::Write);
    let mut ours = Vec::new();
    raw.stream.read_to_end(&mut ours).unwrap();
    let mut cmd = git_cmd(repo);
    cmd.env("GIT_PROTOCOL", "version=2")
        .args(["upload-pack", "."]);
    let theirs = bounded(cmd, &req).stdout;
    [ours, theirs].map(|bytes| split_response(&bytes))
}

/// Protocol lines (after the capability advertisement) and the objects of the pack.
fn split_response(mut bytes: &[u8]) -> (Vec<String>, Vec<String>) {
    let (mut lines, mut pack) = (Vec::new(), Vec::new());
    let mut flushes = 0;
    while bytes.len() >= 4 {
        let n = usize::from_str_radix(std::str::from_utf8(&bytes[..4]).unwrap(), 16).unwrap();
        if n < 4 {
            flushes += 1;
            bytes = &bytes[4..];
            continue;
        }
        let data = &bytes[4..n];
        bytes = &bytes[n..];
        match data[0] {
            1 => pack.extend_from_slice(&data[1..]),
            2 => {}
            _ if flushes > 0 => lines.push(String::from_utf8_lossy(data).trim_end().to_string()),
            _ => {}
        }
    }
    if pack.is_empty() {
        return (lines, Vec::new());
    }
    let check = scratch("filter-pack");
    git(&check, &["init", "-q", "--bare", "."]);
    let mut cmd = git_cmd(&check);
    cmd.args(["index-pack", "--stdin"]);
    let out = bounded(cmd, &pack);
    assert!(out.status.success(), "index-pack: {}", stderr(&out));
    (lines, objects(&check))
}

#[test]
fn wanted_objects_are_sent_whatever_the_filter_as_git_does() {
    let (_dir, repo, gitd) = setup("filter-raw");
    let rev = |spec: &str| git(&repo, &["rev-parse", spec]).trim().to_string();
    let (main, tree, blob) = (rev("main"), rev("main^{tree}"), rev("main:big.bin"));
    let (sub, old, dup) = (rev("main:a/b"), rev("main~1"), rev("main:dup.txt"));
    let cases: Vec<(&str, Vec<&str>)> = vec![
        // A lazy fetch: blobs by id under blob:none.
        ("blob:none", vec![&blob, &dup]),
        ("blob:limit=1", vec![&blob]),
        // A wanted tree is sent, what is below it is filtered.
        ("tree:0", vec![&sub]),
        ("tree:1", vec![&sub]),
        ("blob:none", vec![&tree]),
        // A wanted tree that is also the root tree of a sent commit is filtered.
        ("tree:0", vec![&main, &tree]),
        ("tree:0", vec![&tree, &main]),
        // Wanted commits are sent even under object:type=blob; their parents not.
        ("object:type=blob", vec![&old, &main]),
        ("object:type=tree", vec![&sub, &blob]),
        ("combine:tree:0+object:type=tree", vec![&main, &sub]),
    ];
    for (filter, wants) in cases {
        let mut args: Vec<String> = wants.iter().map(|w| format!("want {w}")).collect();
        args.extend([
            format!("filter {filter}"),
            "ofs-delta".into(),
            "done".into(),
        ]);
        let [ours, theirs] = v2_fetch(&gitd, &repo, &args);
        assert!(!theirs.1.is_empty(), "oracle sent no pack for {args:?}");
        assert_eq!(ours, theirs, "{args:?}");
    }
    // Spec errors come back as the message git dies with.
    for spec in [
        "blob:limit=1x",
        "tree:-1",
        "combine:tree:0+b&",
        "sparse:path=x",
    ] {
        let args = vec![
            format!("want {main}"),
            format!("filter {spec}"),
            "done".into(),
        ];
        let [ours, _] = v2_fetch(&gitd, &repo, &args);
        let out = {
            let mut cmd = git_cmd(&repo);
            cmd.args(["rev-list", "--objects", &format!("--filter={spec}"), "main"]);
            bounded(cmd, b"")
        };
        let expected = stderr(&out).trim().replace("fatal: ", "ERR ");
        assert_eq!(ours.0.last(), Some(&expected), "{spec}");
    }
    // sparse:oid is refused with git's wording for a filter the server does not allow.
    let args = vec![
        format!("want {main}"),
        "filter sparse:oid=main:dup.txt".to_string(),
        "done".into(),
    ];
    let [ours, _] = v2_fetch(&gitd, &repo, &args);
    assert_eq!(
        ours.0.last().map(String::as_str),
        Some("ERR filter 'sparse:oid' not supported")
    );
}

#[test]
fn lazy_fetches_of_missing_blobs_work_where_git_allows_them() {
    let (dir, repo, gitd) = setup("filter-lazy");
    let blob = git(&repo, &["rev-parse", "main:big.bin"])
        .trim()
        .to_string();
    let expected = run(&repo, &["cat-file", "blob", &blob]).stdout;
    // v2 serves any object; v0 only with allowAnySHA1InWant or allowReachableSHA1InWant.
    let cases = [
        ("2", None, true),
        ("0", None, false),
        ("0", Some("uploadpack.allowAnySHA1InWant"), true),
        ("0", Some("uploadpack.allowReachableSHA1InWant"), true),
    ];
    for (n, (v, setting, works)) in cases.into_iter().enumerate() {
        if let Some(key) = setting {
            git(&repo, &["config", key, "true"]);
        }
        for (url, name) in [(gitd.url("/repo.git"), "ours"), (file_url(&repo), "git")] {
            let dest = format!("lazy-{name}-{n}");
            let (clone, out) = clone(&dir, &url, v, &["--filter=blob:none"], &dest);
            assert!(out.status.success(), "{}", stderr(&out));
            let proto = format!("protocol.version={v}");
            let out = run(&clone, &["-c", &proto, "cat-file", "blob", &blob]);
            assert_eq!(
                out.status.success(),
                works,
                "{name} v{v} {setting:?}: {}",
                stderr(&out)
            );
            if works {
                assert!(out.stdout == expected, "{name} v{v}: wrong content");
            }
        }
        if let Some(key) = setting {
            git(&repo, &["config", "--unset", key]);
        }
    }
    // A checkout fetches every blob it needs on the way.
    let work = dir.join("checkout");
    let out = run(
        &dir,
        &[
            "clone",
            "-q",
            "--filter=blob:none",
            &gitd.url("/repo.git"),
            work.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read(work.join("big.bin")).unwrap() == expected);
    let out = run(&work, &["fsck", "--full"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
