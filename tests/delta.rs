//! New deltas in incremental fetches: objects the repository stores whole (loose,
//! or as the newest version in a repacked pack) go out as deltas against the
//! previous version of the same path, which the client has (thin packs) or which is
//! earlier in the same pack. Every pack is indexed and checked by git itself.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use support::oracle::{oracle, ours_at, wait_bounded};
use support::{Gitd, git, git_cmd, pkt, rev, scratch};

/// Lines of each big file: about 200 KiB of text that compresses like source code
/// does, not like a repeated pattern.
const LINES: usize = 3000;
/// Lines of the files of the long history.
const SHORT: usize = 300;
const FILES: [&str; 3] = ["src/engine.txt", "src/parser.txt", "docs/manual.txt"];

/// Deterministic pseudo-random words (xorshift), so the files do not compress away.
fn words(seed: u64, n: usize) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = String::new();
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{:x} ", x % 0x10_0000));
    }
    out
}

/// Version `v` of file `f`: the same lines, with one line per earlier version
/// rewritten (the small edits of a long history).
fn big_file(f: usize, v: usize, lines: usize) -> String {
    let mut s = String::new();
    for k in 0..lines {
        let edit = (1..=v).rev().find(|e| (e * 997 + f * 131) % lines == k);
        let seed = match edit {
            Some(e) => (f * 1_000_000 + k * 100 + e) as u64,
            None => (f * 1_000_000 + k * 100) as u64,
        };
        s.push_str(&format!("{k:5}: {}\n", words(seed, 8)));
    }
    s
}

/// fast-import commits `from..to` on `main`, each editing every big file (of
/// `lines` lines) and a small note. With `loose`, the new objects are left loose.
fn import(repo: &Path, from: usize, to: usize, loose: bool, lines: usize) {
    let mut s = Vec::new();
    for v in from..to {
        write!(
            s,
            "commit refs/heads/main\ncommitter T <t@example.com> {} +0000\ndata 4\nv{v:02}\n",
            1_600_000_000 + v * 60
        )
        .unwrap();
        if v == from && v > 0 {
            // Continue the branch as it is in the repository (later commits of this
            // stream follow on by themselves).
            writeln!(s, "from refs/heads/main^0").unwrap();
        }
        for (f, name) in FILES.iter().enumerate() {
            let data = big_file(f, v, lines);
            write!(s, "M 100644 inline {name}\ndata {}\n{data}\n", data.len()).unwrap();
        }
        // A directory no commit changes: the client has it, nothing of it is sent.
        write!(s, "M 100644 inline vendor/fixed.txt\ndata 6\nfixed\n\n").unwrap();
        let note = format!("note {v}\n");
        write!(
            s,
            "M 100644 inline notes.txt\ndata {}\n{note}\n",
            note.len()
        )
        .unwrap();
        s.push(b'\n');
    }
    s.extend_from_slice(b"done\n");
    let limit = if loose { "100000" } else { "0" };
    let mut child = git_cmd(repo)
        .args(["-c", &format!("fastimport.unpackLimit={limit}")])
        .args(["fast-import", "--quiet", "--done"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&s).unwrap();
    assert!(child.wait().unwrap().success(), "fast-import");
}

/// How the server stores the new objects.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// Loose objects next to the client's pack.
    Loose,
    /// `git repack -adf`: the newest versions whole, older ones deltas against them.
    Repacked,
    /// The same with a bitmap: objects chosen from it.
    Bitmap,
    /// `git repack -adf --window=0`: every object whole.
    Undeltified,
}

/// A server repository whose `main` is `new` commits past `old` (`main~new`), and a
/// client holding exactly `old`.
fn setup(dir: &Path, layout: Layout, old: usize, new: usize, lines: usize) -> (PathBuf, PathBuf) {
    let repo = dir.join("repo.git");
    git(
        dir,
        &["init", "-q", "--bare", "-b", "main", repo.to_str().unwrap()],
    );
    import(&repo, 0, old, false, lines);
    git(&repo, &["branch", "old", "main"]);
    let client = dir.join("client.git");
    git(
        dir,
        &[
            "clone",
            "-q",
            "--bare",
            "--no-local",
            repo.to_str().unwrap(),
            client.to_str().unwrap(),
        ],
    );
    import(
        &repo,
        old,
        old + new,
        matches!(layout, Layout::Loose),
        lines,
    );
    match layout {
        Layout::Loose => {}
        Layout::Repacked => drop(git(&repo, &["repack", "-adfq"])),
        Layout::Bitmap => drop(git(&repo, &["repack", "-adbq"])),
        Layout::Undeltified => drop(git(&repo, &["repack", "-adfq", "--window=0"])),
    }
    std::fs::write(repo.join("git-daemon-export-ok"), "").unwrap();
    (repo, client)
}

/// A v2 fetch of `main` from a client that has `old`.
fn fetch_request(want: &str, have: &str, thin: bool, ofs: bool) -> Vec<u8> {
    let mut req = pkt(b"command=fetch\n");
    req.extend(b"0001");
    req.extend(pkt(format!("want {want}\n").as_bytes()));
    req.extend(pkt(b"no-progress\n"));
    if thin {
        req.extend(pkt(b"thin-pack\n"));
    }
    if ofs {
        req.extend(pkt(b"ofs-delta\n"));
    }
    req.extend(pkt(format!("have {have}\n").as_bytes()));
    req.extend(pkt(b"done\n"));
    req.extend(b"0000");
    req
}

/// The pack of a side-band response.
fn side_band_pack(mut bytes: &[u8]) -> Vec<u8> {
    let mut pack = Vec::new();
    while bytes.len() >= 4 {
        let n = usize::from_str_radix(std::str::from_utf8(&bytes[..4]).unwrap(), 16).unwrap();
        if n < 4 {
            bytes = &bytes[4..];
            continue;
        }
        match bytes[4] {
            1 => pack.extend_from_slice(&bytes[5..n]),
            3 => panic!("server error: {}", String::from_utf8_lossy(&bytes[5..n])),
            _ => {}
        }
        bytes = &bytes[n..];
    }
    assert!(pack.starts_with(b"PACK"), "no pack in the response");
    pack
}

/// `git index-pack --stdin` of `pack` in `repo` (`--fix-thin` with `thin`), which
/// fails on any delta whose base it cannot find; `--strict` (every link resolves)
/// unless `repo` is empty. Returns the `.idx` path.
fn index_pack(repo: &Path, pack: &[u8], thin: bool) -> PathBuf {
    let mut cmd = git_cmd(repo);
    cmd.args(["index-pack", "--stdin"]);
    if thin {
        cmd.arg("--fix-thin");
    }
    if repo.join("refs/heads").read_dir().unwrap().next().is_some() {
        cmd.arg("--strict");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let pack = pack.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&pack));
    let out = wait_bounded(child, Duration::from_secs(60));
    writer.join().unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "index-pack (thin={thin}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = stdout.trim().trim_start_matches("pack\t");
    repo.join(format!("objects/pack/pack-{hash}.idx"))
}

/// `git verify-pack -v`: (entries that are deltas, longest delta chain).
fn delta_stats(repo: &Path, idx: &Path) -> (usize, usize) {
    let out = git(repo, &["verify-pack", "-v", idx.to_str().unwrap()]);
    let deltas = out
        .lines()
        .filter(|l| l.len() > 41 && l.as_bytes()[40] == b' ')
        .filter(|l| l.split_whitespace().count() == 7)
        .count();
    let longest = out
        .lines()
        .filter_map(|l| l.strip_prefix("chain length = "))
        .filter_map(|l| l.split(':').next()?.trim().parse().ok())
        .max()
        .unwrap_or(0);
    (deltas, longest)
}

fn fsck(repo: &Path) {
    git(repo, &["fsck", "--full", "--strict"]);
}

fn objects(repo: &Path, spec: &str) -> BTreeSet<String> {
    git(repo, &["rev-list", "--objects", spec])
        .lines()
        .map(|l| l[..40].to_string())
        .collect()
}

/// A fresh copy of the client, for one fetch.
fn client_copy(client: &Path, name: &str) -> PathBuf {
    let dest = client.with_file_name(name);
    git(
        client.parent().unwrap(),
        &[
            "clone",
            "-q",
            "--bare",
            "--no-local",
            client.to_str().unwrap(),
            dest.to_str().unwrap(),
        ],
    );
    dest
}

#[test]
fn small_edits_to_big_files_are_sent_as_thin_deltas() {
    for layout in [Layout::Loose, Layout::Repacked, Layout::Bitmap] {
        let dir = scratch(&format!("delta-thin-{layout:?}"));
        let (repo, client) = setup(&dir, layout, 3, 4, LINES);
        let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
        let (main, old) = (rev(&repo, "main"), rev(&repo, "old"));
        let file_size = big_file(0, 7, LINES).len();
        for ofs in [true, false] {
            let req = fetch_request(&main, &old, true, ofs);
            let pack = side_band_pack(&ours_at(gitd.port, "/repo.git", true, &req));
            let theirs = side_band_pack(&oracle(&repo, &req, true));
            eprintln!(
                "{layout:?} ofs={ofs}: gitd {} bytes, git {} bytes",
                pack.len(),
                theirs.len()
            );
            // 12 new versions of ~200 KiB files, each a few changed lines: whole they
            // would be over a megabyte even deflated.
            assert!(
                pack.len() < file_size / 20,
                "{layout:?} ofs={ofs}: {} bytes for a few edited lines",
                pack.len()
            );
            assert!(
                pack.len() <= theirs.len() * 2 + 1024,
                "{layout:?} ofs={ofs}: gitd {} bytes, git {}",
                pack.len(),
                theirs.len()
            );
            let c = client_copy(&client, &format!("raw-{ofs}.git"));
            let idx = index_pack(&c, &pack, true);
            let (deltas, longest) = delta_stats(&c, &idx);
            assert!(deltas >= 12, "{layout:?}: only {deltas} deltas");
            assert!(longest <= 50, "{layout:?}: a delta chain of {longest}");
            git(&c, &["update-ref", "refs/heads/main", &main]);
            fsck(&c);
            assert_eq!(objects(&c, "main"), objects(&repo, "main"));
        }
        // The real client, over git://, with its own checks.
        let c = client_copy(&client, "fetch.git");
        let trace = dir.join("fetched.pack");
        let out = git_cmd(&c)
            .env("GIT_TRACE_PACKFILE", &trace)
            .args(["fetch", "-q", &gitd.url("/repo.git"), "main:main"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let received = std::fs::metadata(&trace).unwrap().len() as usize;
        assert!(
            received < file_size / 20,
            "{layout:?}: git fetch got {received} bytes"
        );
        assert_eq!(rev(&c, "main"), main);
        fsck(&c);
    }
}

#[test]
fn without_thin_pack_every_delta_base_is_in_the_pack() {
    for layout in [Layout::Loose, Layout::Repacked, Layout::Bitmap] {
        let dir = scratch(&format!("delta-full-{layout:?}"));
        let (repo, client) = setup(&dir, layout, 3, 4, LINES);
        let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
        let (main, old) = (rev(&repo, "main"), rev(&repo, "old"));
        let file_size = big_file(0, 7, LINES).len();
        for ofs in [true, false] {
            let req = fetch_request(&main, &old, false, ofs);
            let pack = side_band_pack(&ours_at(gitd.port, "/repo.git", true, &req));
            // An empty repository: index-pack without --fix-thin resolves every delta
            // from the pack alone, or fails.
            let empty = dir.join(format!("empty-{ofs}.git"));
            git(&dir, &["init", "-q", "--bare", empty.to_str().unwrap()]);
            let idx = index_pack(&empty, &pack, false);
            let (deltas, longest) = delta_stats(&empty, &idx);
            // The first new version of each file goes whole (its base is the
            // client's), the later ones as deltas against it.
            assert!(deltas >= 9, "{layout:?} ofs={ofs}: only {deltas} deltas");
            assert!(longest <= 50);
            // Three first versions whole (each well over a third of `file_size`
            // deflated), nine deltas: twelve whole versions would be five times that.
            let theirs = side_band_pack(&oracle(&repo, &req, true)).len();
            eprintln!(
                "{layout:?} ofs={ofs}: gitd {} bytes, git {theirs}",
                pack.len()
            );
            assert!(
                pack.len() < 2 * file_size,
                "{layout:?} ofs={ofs}: {} bytes",
                pack.len()
            );
            let c = client_copy(&client, &format!("full-{ofs}.git"));
            index_pack(&c, &pack, false);
            git(&c, &["update-ref", "refs/heads/main", &main]);
            fsck(&c);
        }
        // git fetch-pack without --thin does not ask for thin-pack.
        let c = client_copy(&client, "fetch-pack.git");
        let out = git_cmd(&c)
            .args([
                "fetch-pack",
                "-q",
                "--keep",
                &gitd.url("/repo.git"),
                "refs/heads/main",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        git(&c, &["update-ref", "refs/heads/main", &main]);
        fsck(&c);
    }
}

#[test]
fn delta_chains_stay_within_gits_depth() {
    // 70 new versions of the files, stored whole and newest first: each version's
    // best base is the newer one written just before it, a chain as long as the
    // history unless it is cut.
    let dir = scratch("delta-depth");
    let (repo, client) = setup(&dir, Layout::Undeltified, 1, 70, SHORT);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    let (main, old) = (rev(&repo, "main"), rev(&repo, "old"));
    for thin in [true, false] {
        let req = fetch_request(&main, &old, thin, true);
        let pack = side_band_pack(&ours_at(gitd.port, "/repo.git", true, &req));
        let c = client_copy(&client, &format!("depth-{thin}.git"));
        let idx = index_pack(&c, &pack, thin);
        let (deltas, longest) = delta_stats(&c, &idx);
        eprintln!("thin={thin}: {deltas} deltas, longest chain {longest}");
        assert!(deltas > 150, "thin={thin}: only {deltas} deltas");
        assert!(longest > 40, "thin={thin}: chains of {longest} at most");
        assert!(longest <= 50, "thin={thin}: a delta chain of {longest}");
        git(&c, &["update-ref", "refs/heads/main", &main]);
        fsck(&c);
    }
}

#[test]
fn long_and_short_fetches_send_exactly_what_the_client_lacks() {
    // Below and above the number of sent commits where the edges' trees are walked
    // whole rather than sparsely: either way exactly the new objects, and git
    // resolves every delta.
    for new in [40, 300] {
        let dir = scratch(&format!("delta-count-{new}"));
        let (repo, client) = setup(&dir, Layout::Loose, 2, new, 20);
        let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
        let (main, old) = (rev(&repo, "main"), rev(&repo, "old"));
        let lacking = git(&repo, &["rev-list", "--objects", "main", "^old"])
            .lines()
            .count();
        for thin in [true, false] {
            let req = fetch_request(&main, &old, thin, true);
            let pack = side_band_pack(&ours_at(gitd.port, "/repo.git", true, &req));
            let count = u32::from_be_bytes(pack[8..12].try_into().unwrap()) as usize;
            assert_eq!(count, lacking, "{new} commits, thin={thin}");
            let c = client_copy(&client, &format!("count-{thin}.git"));
            index_pack(&c, &pack, thin);
            git(&c, &["update-ref", "refs/heads/main", &main]);
            fsck(&c);
            assert_eq!(objects(&c, "main"), objects(&repo, "main"));
        }
    }
}
