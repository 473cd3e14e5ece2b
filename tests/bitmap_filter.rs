//! Partial clones answered from pack bitmaps: a repository with a bitmap, newer
//! history in a second pack and loose objects on top, cloned and fetched with
//! `--filter` from gitd and from `git upload-pack` (file://, the oracle, which uses
//! the bitmap too). The clients must end up with the same objects, and gitd must
//! have chosen them with the bitmap (its request log says `bitmap=true`).

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use support::{
    Gitd, Raw, add_commits, fixture, git, git_bounded, git_cmd, pkt, scratch, wait_bounded,
};

/// Every git process gets this long before the test fails.
const TIMEOUT: Duration = Duration::from_secs(60);

fn run(dir: &Path, args: &[&str]) -> Output {
    git_bounded(dir, args, TIMEOUT)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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

fn count(objects: &[String], kind: &str) -> usize {
    objects.iter().filter(|l| l.ends_with(kind)).count()
}

fn file_url(repo: &Path) -> String {
    format!("file://{}", repo.display())
}

/// A bare clone of `url` with `extra` options over protocol `v`.
fn clone(dir: &Path, url: &str, v: &str, extra: &[&str], dest: &str) -> PathBuf {
    let dest = dir.join(dest);
    let proto = format!("protocol.version={v}");
    let mut args = vec!["-c", &proto, "clone", "--bare"];
    args.extend_from_slice(extra);
    args.extend([url, dest.to_str().unwrap()]);
    let out = run(dir, &args);
    assert!(
        out.status.success(),
        "clone {url} {extra:?}: {}",
        stderr(&out)
    );
    dest
}

fn fsck(repo: &Path) {
    let out = run(repo, &["fsck", "--full", "--strict"]);
    assert!(out.status.success(), "fsck: {}", stderr(&out));
}

/// The request lines of gitd's log that sent a pack.
fn requests(gitd: &Gitd) -> Vec<String> {
    gitd.logs()
        .lines()
        .filter(|l| l.contains(" request ") && l.contains("objects="))
        .map(str::to_owned)
        .collect()
}

/// The served repository: the usual fixture with large and small blobs (stored as
/// deltas against each other), repacked with a bitmap; then newer commits in a pack
/// of their own and newer still loose, with a large blob, a small one and a tag
/// among them, so that some objects of every kind are outside the bitmapped pack.
fn setup(name: &str) -> (PathBuf, PathBuf, Gitd) {
    let dir = scratch(name);
    let repo = fixture(&dir, "repo.git", 40);
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
    let commit = |files: &[(&str, Vec<u8>)], msg: &str| {
        for (path, content) in files {
            let p = work.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", msg]);
        git(&work, &["push", "-q", "origin", "main"]);
    };
    let big = |seed: u32| -> Vec<u8> {
        (0..6000u32)
            .map(|i| (i * 7 % 251) as u8 ^ seed as u8)
            .collect()
    };
    commit(
        &[("big.bin", big(0)), ("d/e/small.txt", b"s\n".to_vec())],
        "big",
    );
    commit(
        &[("big.bin", big(1)), ("d/f/deep.txt", b"t\n".to_vec())],
        "bigger",
    );
    git(&repo, &["repack", "-adfbq", "--window=50"]);
    commit(
        &[("big.bin", big(2)), ("packed.txt", b"p\n".to_vec())],
        "packed",
    );
    git(&repo, &["repack", "-dq", "--no-write-bitmap-index"]);
    commit(
        &[("big.bin", big(3)), ("d/loose.txt", b"l\n".to_vec())],
        "loose",
    );
    git(&repo, &["tag", "-a", "-m", "new", "v3.0", "main"]);
    let packs = std::fs::read_dir(repo.join("objects/pack"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert_eq!(packs.iter().filter(|p| p.ends_with(".bitmap")).count(), 1);
    assert_eq!(packs.iter().filter(|p| p.ends_with(".pack")).count(), 2);
    git(&repo, &["config", "uploadpack.allowFilter", "true"]);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    (dir, repo, gitd)
}

/// Filters git answers from bitmaps.
const FILTERS: &[&str] = &[
    "blob:none",
    "blob:limit=1k",
    "blob:limit=0",
    "tree:0",
    "object:type=commit",
    "object:type=tree",
    "object:type=blob",
    "object:type=tag",
    "combine:blob:limit=3k+object:type=blob",
    "combine:tree:0+blob:none",
];

#[test]
fn filtered_clones_from_bitmaps_receive_what_git_sends() {
    let (dir, repo, gitd) = setup("bmfilter-clone");
    let all = objects(&repo);
    let mut n = 0;
    for v in ["0", "2"] {
        for filter in FILTERS {
            let opt = format!("--filter={filter}");
            let tag = format!("{}-v{v}", filter.replace([':', '=', '+'], "_"));
            let ours = clone(&dir, &gitd.url("/repo.git"), v, &[&opt], &tag);
            let theirs = clone(&dir, &file_url(&repo), v, &[&opt], &format!("{tag}.git"));
            let got = objects(&ours);
            assert_eq!(got, objects(&theirs), "objects sent for {filter} over v{v}");
            assert!(got.len() < all.len(), "{filter} v{v}: nothing filtered");
            fsck(&ours);
            n += 1;
            let requests = requests(&gitd);
            assert_eq!(requests.len(), n, "{requests:?}");
            // Chosen with the bitmap, and not the stored pack sent whole: at most
            // the objects sent are copied as stretches of it.
            let r = &requests[n - 1];
            assert!(
                r.contains(&format!("objects={} ", got.len())) && r.contains(" bitmap=true"),
                "{filter} v{v}: {r}"
            );
            let reused: usize = r
                .split(" pack_reused=")
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{filter} v{v}: {r}"));
            assert!(reused <= got.len(), "{filter} v{v}: {r}");
        }
    }
    // What the filters leave out, for the record: not a vacuous comparison.
    let blob_none = objects(&dir.join("blob_none-v2"));
    assert_eq!(count(&blob_none, " blob"), 0);
    assert_eq!(count(&blob_none, " tree"), count(&all, " tree"));
    let limited = objects(&dir.join("blob_limit_1k-v2"));
    assert!(count(&limited, " blob") > 0 && count(&limited, " blob") < count(&all, " blob"));
    assert_eq!(count(&objects(&dir.join("tree_0-v2")), " tree"), 0);
}

#[test]
fn filters_that_need_the_walk_do_not_use_the_bitmap() {
    let (dir, repo, gitd) = setup("bmfilter-walk");
    for filter in ["tree:1", "combine:blob:none+tree:2"] {
        let opt = format!("--filter={filter}");
        let tag = filter.replace([':', '=', '+'], "_");
        let ours = clone(&dir, &gitd.url("/repo.git"), "2", &[&opt], &tag);
        let theirs = clone(&dir, &file_url(&repo), "2", &[&opt], &format!("{tag}.git"));
        assert_eq!(objects(&ours), objects(&theirs), "{filter}");
    }
    for r in requests(&gitd) {
        assert!(r.contains("bitmap=false"), "{r}");
    }
}

/// Blobs named by id (as a partial clone fetches what it is missing) come whatever
/// the filter says, from the bitmapped pack and from outside it.
#[test]
fn lazy_fetches_of_missing_blobs_are_served_from_bitmaps() {
    let (dir, repo, gitd) = setup("bmfilter-lazy");
    let partial = clone(
        &dir,
        &gitd.url("/repo.git"),
        "2",
        &["--filter=blob:none"],
        "partial",
    );
    assert_eq!(count(&objects(&partial), " blob"), 0);
    // main:big.bin is loose on the server, main~3:big.bin in the bitmapped pack.
    for spec in ["main:big.bin", "main~3:big.bin", "main~3:d/e/small.txt"] {
        let id = git(&repo, &["rev-parse", spec]).trim().to_string();
        let expected = run(&repo, &["cat-file", "blob", &id]).stdout;
        let out = run(
            &partial,
            &["-c", "protocol.version=2", "cat-file", "blob", &id],
        );
        assert!(out.status.success(), "{spec}: {}", stderr(&out));
        assert!(out.stdout == expected, "{spec}: wrong content");
    }
    let requests = requests(&gitd);
    assert_eq!(requests.len(), 4, "{requests:?}");
    for r in &requests[1..] {
        assert!(
            r.contains("objects=1 ") && r.contains(" bitmap=true"),
            "{r}"
        );
    }
}

/// A fetch into a partial clone: the client's history is subtracted with the bitmap
/// and only then filtered.
#[test]
fn fetches_into_partial_clones_receive_what_git_sends() {
    let (dir, repo, gitd) = setup("bmfilter-fetch");
    for (v, filter) in [("2", "blob:none"), ("0", "tree:0"), ("2", "blob:limit=1k")] {
        let opt = format!("--filter={filter}");
        let tag = format!("{}-v{v}", filter.replace([':', '='], "_"));
        let ours = clone(&dir, &gitd.url("/repo.git"), v, &[&opt], &tag);
        let theirs = clone(&dir, &file_url(&repo), v, &[&opt], &format!("{tag}.git"));
        add_commits(&repo, "main", 2, &tag);
        for r in [&ours, &theirs] {
            let proto = format!("protocol.version={v}");
            let refspec = "+refs/heads/*:refs/heads/*";
            let out = run(r, &["-c", &proto, "fetch", "-q", "origin", refspec]);
            assert!(out.status.success(), "fetch {filter}: {}", stderr(&out));
        }
        assert_eq!(
            objects(&ours),
            objects(&theirs),
            "after fetch, {filter} v{v}"
        );
        fsck(&ours);
    }
    for r in requests(&gitd) {
        assert!(r.contains("bitmap=true"), "{r}");
    }
}

/// A v2 fetch of `args` from gitd and from `git upload-pack`: the objects of each
/// pack, as "<id> <type>" lines.
fn v2_fetch(gitd: &Gitd, repo: &Path, args: &[String]) -> [Vec<String>; 2] {
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
        .args(["upload-pack", "."])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(&req).unwrap();
    let theirs = wait_bounded(child, TIMEOUT).stdout;
    [ours, theirs].map(|bytes| pack_objects(&bytes))
}

/// The objects of the pack in a v2 fetch response (side-band channel 1 after the
/// `packfile` section header), through `git index-pack`.
fn pack_objects(mut bytes: &[u8]) -> Vec<String> {
    let mut pack = Vec::new();
    while bytes.len() >= 4 {
        let n = usize::from_str_radix(std::str::from_utf8(&bytes[..4]).unwrap(), 16).unwrap();
        if n < 4 {
            bytes = &bytes[4..];
            continue;
        }
        if bytes[4] == 1 {
            pack.extend_from_slice(&bytes[5..n]);
        }
        bytes = &bytes[n..];
    }
    assert!(pack.starts_with(b"PACK"), "no pack");
    let check = scratch("bmfilter-pack");
    git(&check, &["init", "-q", "--bare", "."]);
    let mut child = git_cmd(&check)
        .args(["index-pack", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&pack).unwrap();
    let out = wait_bounded(child, TIMEOUT);
    assert!(out.status.success(), "index-pack: {}", stderr(&out));
    objects(&check)
}

/// Objects named in wants are kept whatever the filter, as git's bitmap path keeps
/// its "tips": trees and blobs, commits under `object:type`, and the root tree of a
/// wanted commit when it is wanted too (which git's walk would filter).
#[test]
fn wanted_objects_are_kept_as_git_keeps_them_with_bitmaps() {
    let (_dir, repo, gitd) = setup("bmfilter-raw");
    let rev = |spec: &str| git(&repo, &["rev-parse", spec]).trim().to_string();
    let (main, tree, sub) = (rev("main"), rev("main^{tree}"), rev("main~3:d"));
    let (old, blob, v1) = (rev("main~5"), rev("main~3:big.bin"), rev("v1.0"));
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("blob:none", vec![&blob, &sub]),
        ("blob:limit=1", vec![&blob]),
        ("tree:0", vec![&sub]),
        ("object:type=blob", vec![&old, &main]),
        ("object:type=tree", vec![&sub, &blob]),
        ("object:type=commit", vec![&v1, &tree]),
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
        assert_eq!(ours, theirs, "{args:?}");
    }
    // One difference, on the safe side: a wanted tree that is also the root tree of
    // a wanted commit outside the bitmaps is filtered by git's walk of that commit
    // (it is no longer "user given" when its turn comes); gitd keeps every wanted
    // object it selects, so the client gets that one tree more.
    let args = [
        format!("want {main}"),
        format!("want {tree}"),
        "filter tree:0".into(),
        "ofs-delta".into(),
        "done".into(),
    ];
    let [mut ours, theirs] = v2_fetch(&gitd, &repo, &args);
    let root = format!("{tree} tree");
    assert!(!theirs.contains(&root));
    ours.retain(|l| *l != root);
    assert_eq!(ours, theirs);
    for r in requests(&gitd) {
        assert!(r.contains("bitmap=true"), "{r}");
    }
}
