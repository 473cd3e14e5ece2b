//! Packs chosen with git's pack bitmaps, and stored packs sent as they are: clones
//! and fetches must hold exactly what the walk would send (or less, never missing
//! anything), and a bitmap gitd cannot use must not fail a clone.

mod support;

use std::path::{Path, PathBuf};

use support::{Gitd, add_commits, fixture, git, git_output, refs_of, scratch};

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

/// Files of `repo`'s pack directory ending in `ext`.
fn pack_files(repo: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo.join("objects/pack"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    files.sort();
    files
}

/// A fixture repacked into one pack with a bitmap (`git repack -adb`).
fn bitmapped(dir: &Path, commits: usize) -> PathBuf {
    let repo = fixture(dir, "repo.git", commits);
    git(&repo, &["repack", "-adbq"]);
    assert_eq!(pack_files(&repo, ".bitmap").len(), 1);
    repo
}

/// Mirror-clone `/repo.git` over protocol `v`; returns the clone and git's stderr.
fn mirror(gitd: &Gitd, dir: &Path, name: &str, v: &str) -> (PathBuf, String) {
    let dest = dir.join(name);
    let out = git_output(
        dir,
        &[
            "-c",
            &format!("protocol.version={v}"),
            "clone",
            "--progress",
            "--mirror",
            &gitd.url("/repo.git"),
            dest.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "clone v{v}: {stderr}");
    fsck(&dest);
    (dest, stderr)
}

/// How many objects `repo`'s packs hold.
fn in_pack(repo: &Path) -> usize {
    let counts = git(repo, &["count-objects", "-v"]);
    let line = counts.lines().find(|l| l.starts_with("in-pack: ")).unwrap();
    line["in-pack: ".len()..].parse().unwrap()
}

/// The request lines of gitd's log.
fn requests(gitd: &Gitd) -> Vec<String> {
    gitd.logs()
        .lines()
        .filter(|l| l.contains(" request ") && l.contains("objects="))
        .map(str::to_owned)
        .collect()
}

#[test]
fn bitmapped_repository_is_cloned_as_its_stored_pack() {
    let dir = scratch("bitmap-clone");
    let repo = bitmapped(&dir, 40);
    let total = all_objects(&repo).len();
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    for v in ["0", "2"] {
        let (dest, stderr) = mirror(&gitd, &dir, &format!("m{v}.git"), v);
        assert_eq!(refs_of(&dest, "refs/"), refs_of(&repo, "refs/"), "v{v}");
        assert_eq!(all_objects(&dest), all_objects(&repo), "v{v}");
        assert!(
            stderr.contains(&format!(
                "remote: Total {total} (delta 0), reused 0 (delta 0), pack-reused {total} (from 1)"
            )),
            "v{v}: {stderr}"
        );
        // What arrived is the stored pack itself.
        let sent = std::fs::read(&pack_files(&repo, ".pack")[0]).unwrap();
        let got = std::fs::read(&pack_files(&dest, ".pack")[0]).unwrap();
        assert!(
            sent == got,
            "v{v}: the clone's pack differs from the stored one"
        );
    }
    let requests = requests(&gitd);
    assert_eq!(requests.len(), 2, "{requests:?}");
    for r in &requests {
        assert!(
            r.contains(&format!("objects={total} pack_reused={total} bitmap=true")),
            "{r}"
        );
    }
}

#[test]
fn incremental_fetch_with_bitmaps_sends_only_the_new_objects() {
    let dir = scratch("bitmap-fetch");
    let repo = bitmapped(&dir, 30);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    for (round, v) in ["0", "1", "2"].iter().enumerate() {
        let proto = format!("protocol.version={v}");
        let dest = dir.join(format!("c{v}"));
        let url = gitd.url("/repo.git");
        git(
            &dir,
            &["-c", &proto, "clone", "-q", &url, dest.to_str().unwrap()],
        );
        // New commits loose on the server, then the same again after a repack with
        // a new bitmap: either way exactly what the client lacks comes.
        for repack in [false, true] {
            let before = git(&dest, &["rev-parse", "origin/main"]).trim().to_string();
            add_commits(&repo, "main", 3, &format!("v{v}-{repack}"));
            if repack {
                git(&repo, &["repack", "-adbq"]);
            }
            let trace = dir.join(format!("fetch-{v}-{repack}.pack"));
            let out = support::git_cmd(&dest)
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
            let expected: Vec<String> = git(
                &repo,
                &["rev-list", "--objects", &after, &format!("^{before}")],
            )
            .lines()
            .map(|l| l[..40].to_string())
            .collect();
            assert_eq!(expected.len(), 12, "3 × (commit, tree, new file, README)");
            let sent = std::fs::metadata(&trace).unwrap().len();
            let mut got = newest_pack_objects(&dest, sent);
            let mut expected = expected;
            got.sort();
            expected.sort();
            assert_eq!(got, expected, "v{v}, repacked: {repack}");
        }
        let requests = requests(&gitd);
        assert_eq!(requests.len(), 3 * (round + 1), "{requests:?}");
        for r in &requests {
            assert!(r.contains("bitmap=true"), "{r}");
        }
    }
}

/// Ids of the objects in the newest pack of a clone (fetches keep their pack with
/// unpackLimit=1) that came in the `sent` bytes of the pack the server sent.
fn newest_pack_objects(repo: &Path, sent: u64) -> Vec<String> {
    let newest = pack_files(&repo.join(".git"), ".idx")
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    let idx = std::fs::File::open(&newest).unwrap();
    let out = support::git_cmd(repo)
        .arg("show-index")
        .stdin(idx)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        // Bases of thin deltas that `index-pack --fix-thin` appended (from where
        // the sent pack's trailer was) are objects the client had, not sent ones.
        .filter(|f| f[0].parse::<u64>().unwrap() < sent - 20)
        .map(|f| f[1].to_string())
        .collect()
}

#[test]
fn objects_outside_the_bitmapped_pack_are_sent_too() {
    let dir = scratch("bitmap-outside");
    let repo = bitmapped(&dir, 30);
    // Newer history in a second pack (no bitmap), and newer still loose, on two
    // branches and a tag.
    add_commits(&repo, "main", 2, "packed");
    add_commits(&repo, "side", 1, "packed-side");
    git(&repo, &["repack", "-dq", "--no-write-bitmap-index"]);
    add_commits(&repo, "main", 2, "loose");
    git(&repo, &["tag", "-a", "-m", "new", "v3.0", "main"]);
    assert_eq!(pack_files(&repo, ".pack").len(), 2);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    for v in ["0", "2"] {
        let (dest, _) = mirror(&gitd, &dir, &format!("m{v}.git"), v);
        assert_eq!(refs_of(&dest, "refs/"), refs_of(&repo, "refs/"), "v{v}");
        assert_eq!(all_objects(&dest), all_objects(&repo), "v{v}");
    }
    // Every packed object is copied as stored (both packs are wanted whole), the
    // loose ones are written anew.
    let packed = in_pack(&repo);
    for r in requests(&gitd) {
        assert!(
            r.contains(&format!("pack_reused={packed} bitmap=true")),
            "{packed}: {r}"
        );
    }
}

#[test]
fn a_subset_clone_copies_stretches_of_the_stored_pack() {
    let dir = scratch("bitmap-stretches");
    let repo = bitmapped(&dir, 60);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    // What git sends for one branch: the oracle for the objects gitd sends.
    let oracle = dir.join("oracle.git");
    let url = format!("file://{}", repo.display());
    git(
        &dir,
        &[
            "clone",
            "-q",
            "--bare",
            "--single-branch",
            "-b",
            "main",
            &url,
            oracle.to_str().unwrap(),
        ],
    );
    let want = all_objects(&oracle);
    for v in ["0", "2"] {
        let dest = dir.join(format!("s{v}.git"));
        let out = git_output(
            &dir,
            &[
                "-c",
                &format!("protocol.version={v}"),
                "clone",
                "--progress",
                "--bare",
                "--single-branch",
                "-b",
                "main",
                &gitd.url("/repo.git"),
                dest.to_str().unwrap(),
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "v{v}: {stderr}");
        fsck(&dest);
        let pack = &pack_files(&dest, ".pack")[0];
        let verify = git_output(&dest, &["verify-pack", pack.to_str().unwrap()]);
        assert!(verify.status.success(), "v{v}: verify-pack failed");
        assert_eq!(all_objects(&dest), want, "v{v}");
        // Objects of the side branch lie between the ones sent: stretches, not the
        // whole pack, and not nothing.
        let reused: usize = stderr
            .split("pack-reused ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("v{v}: no Total line: {stderr}"));
        assert!(
            reused > want.len() / 2 && reused < in_pack(&repo),
            "v{v}: pack-reused {reused} of {}: {stderr}",
            want.len()
        );
    }
    for r in requests(&gitd) {
        assert!(
            r.contains(" pack_reused=") && r.contains("bitmap=true"),
            "{r}"
        );
        assert!(!r.contains(" pack_reused=0 "), "{r}");
    }
}

#[test]
fn thin_fetch_of_a_diverged_branch_with_bitmaps() {
    let dir = scratch("bitmap-thin");
    let repo = bitmapped(&dir, 30);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    for v in ["0", "2"] {
        let proto = format!("protocol.version={v}");
        let dest = dir.join(format!("side-v{v}"));
        let url = gitd.url("/repo.git");
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
                &url,
                dest.to_str().unwrap(),
            ],
        );
        add_commits(&repo, "main", 2, &format!("div{v}"));
        git(&repo, &["repack", "-adbq"]);
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
    for r in requests(&gitd) {
        assert!(r.contains("bitmap=true"), "{r}");
    }
}

#[test]
fn unusable_bitmaps_fall_back_to_the_walk() {
    let dir = scratch("bitmap-bad");
    let repo = bitmapped(&dir, 30);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    type Damage = fn(&mut Vec<u8>);
    let damage: [(&str, Damage); 3] = [
        ("truncated", |b| b.truncate(b.len() / 2)),
        ("flipped", |b| {
            let mid = b.len() / 2;
            b[mid] ^= 0x10;
        }),
        ("for another pack", |b| b[12] ^= 1),
    ];
    for (n, (what, damage)) in damage.iter().enumerate() {
        // A loose commit, so that the clone is not the stored pack whole either way.
        add_commits(&repo, "main", 1, &format!("bad{n}"));
        let bitmap = &pack_files(&repo, ".bitmap")[0];
        let mut bytes = std::fs::read(bitmap).unwrap();
        damage(&mut bytes);
        let mut perm = std::fs::metadata(bitmap).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        std::fs::set_permissions(bitmap, perm).unwrap();
        std::fs::write(bitmap, &bytes).unwrap();
        let (dest, _) = mirror(&gitd, &dir, &format!("m{n}.git"), "2");
        assert_eq!(refs_of(&dest, "refs/"), refs_of(&repo, "refs/"), "{what}");
        assert_eq!(all_objects(&dest), all_objects(&repo), "{what}");
        let requests = requests(&gitd);
        assert!(requests[n].contains("bitmap=false"), "{what}: {requests:?}");
        git(&repo, &["repack", "-adbq"]);
    }
    let logs = gitd.logs();
    assert_eq!(logs.matches("ignoring a bitmap").count(), 3, "{logs}");
}

#[test]
fn a_multi_pack_index_bitmap_alone_is_walked_around() {
    let dir = scratch("bitmap-midx");
    let repo = fixture(&dir, "repo.git", 30);
    git(&repo, &["repack", "-adbq", "--write-midx"]);
    add_commits(&repo, "main", 1, "after");
    assert!(pack_files(&repo, ".bitmap").iter().all(|p| {
        p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("multi-pack-index-")
    }));
    assert!(!pack_files(&repo, ".bitmap").is_empty());
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    let (dest, _) = mirror(&gitd, &dir, "m.git", "2");
    assert_eq!(all_objects(&dest), all_objects(&repo));
    assert!(requests(&gitd)[0].contains("bitmap=false"));
}

#[test]
fn large_objects_are_copied_whole_in_pieces() {
    let dir = scratch("bitmap-large");
    let repo = fixture(&dir, "repo.git", 10);
    // Incompressible blobs larger than the writer's pieces, and a delta of one.
    let work = scratch("large-work");
    git(
        &work,
        &["clone", "-q", "-b", "main", repo.to_str().unwrap(), "w"],
    );
    let w = work.join("w");
    let mut x: u64 = 88172645463325252;
    let mut noise: Vec<u8> = (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    for round in 0..2 {
        noise[round * 1000] ^= 0xff;
        std::fs::write(w.join("big.bin"), &noise).unwrap();
        git(&w, &["add", "-A"]);
        git(&w, &["commit", "-q", "-m", &format!("big {round}")]);
    }
    git(&w, &["push", "-q", "origin", "main"]);
    git(&repo, &["repack", "-adbq"]);
    add_commits(&repo, "main", 1, "on-top");
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    for v in ["0", "2"] {
        let (dest, _) = mirror(&gitd, &dir, &format!("m{v}.git"), v);
        assert_eq!(all_objects(&dest), all_objects(&repo), "v{v}");
    }
    // The large entries are copied in pieces with the rest of the pack.
    let packed = in_pack(&repo);
    for r in requests(&gitd) {
        assert!(
            r.contains(&format!("pack_reused={packed} bitmap=true")),
            "{packed}: {r}"
        );
    }
}
