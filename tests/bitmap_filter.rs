//! Partial clones answered from pack bitmaps: a repository with a bitmap, newer
//! history in a second pack and loose objects on top, cloned and fetched with
//! `--filter` from gitd and from `git upload-pack` (file://, the oracle, which uses
//! the bitmap too). The clients must end up with the same objects, and gitd must
//! have chosen them with the bitmap (its request log says `bitmap=true`).

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use support::{Gitd, add_commits, fixture, git, git_bounded, scratch};

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
    git(&repo, &["repack", "-adbq"]);
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
            // Chosen with the bitmap, and not the stored pack sent whole.
            assert!(
                requests[n - 1]
                    .contains(&format!("objects={} pack_reused=0 bitmap=true", got.len())),
                "{filter} v{v}: {}",
                requests[n - 1]
            );
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
        assert!(r.contains("objects=1 pack_reused=0 bitmap=true"), "{r}");
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
