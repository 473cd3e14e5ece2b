//! Thin packs and progress: deltas may name bases the client has, and nothing else;
//! progress lines look like git's.
//!
//! The fixture is written with `git fast-import`, which stores each blob as a delta
//! against the blob written just before it. That makes the pack layout known:
//! - `README` versions form a delta chain, so the first README of `main` the client
//!   lacks is stored as a delta against one it has (a legitimate thin base);
//! - `data.txt` on `main` is stored as a delta against `other.txt`, which only the
//!   branch `other` holds: a client that fetches `main` never has it, so a naive thin
//!   pack (gix's `allow_thin_pack` alone) names a base the client cannot resolve.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::oracle::{oracle as oracle_upload_pack, ours_at};
use support::{Gitd, git, git_cmd, pkt, rev, scratch};

/// Commits on `main`; `old` is `main~3`, `other` branches off `old`.
const COMMITS: usize = 12;

fn readme(version: usize) -> String {
    let mut s = String::new();
    for k in 0..300 {
        let edited = (0..=version).any(|v| v * 37 % 300 == k);
        let tag = if edited { " (edited)" } else { "" };
        s.push_str(&format!(
            "line {k}: the quick brown fox {}{tag}\n",
            k * 7 % 13
        ));
    }
    for v in 0..=version {
        s.push_str(&format!("added in version {v}\n"));
    }
    s
}

fn other_text(edit: bool) -> String {
    let mut s = String::new();
    for k in 0..300 {
        s.push_str(&format!(
            "other {k}: jumps over the lazy dog {}\n",
            k * 11 % 17
        ));
    }
    if edit {
        s.push_str("one more line\n");
    }
    s
}

/// The bare repository described in the module comment, exported for gitd.
fn thin_fixture(dir: &Path) -> PathBuf {
    let repo = dir.join("repo.git");
    git(
        dir,
        &["init", "-q", "--bare", "-b", "main", repo.to_str().unwrap()],
    );
    let mut s = Vec::new();
    let blob = |s: &mut Vec<u8>, mark: usize, data: &str| {
        write!(s, "blob\nmark :{mark}\ndata {}\n{data}\n", data.len()).unwrap();
    };
    // Blob order decides fast-import's delta bases: README chain, then other.txt
    // immediately followed by data.txt, then small notes.
    for i in 0..COMMITS {
        blob(&mut s, 100 + i, &readme(i));
    }
    blob(&mut s, 50, &other_text(false));
    blob(&mut s, 51, &other_text(true));
    for i in 0..COMMITS {
        blob(&mut s, 200 + i, &format!("note {i}\n"));
    }
    let old = COMMITS - 4;
    for i in 0..COMMITS {
        write!(
            s,
            "commit refs/heads/main\nmark :{}\ncommitter T <t@example.com> {} +0000\ndata 9\ncommit {:02}\n",
            300 + i,
            1_600_000_000 + i * 60,
            i
        )
        .unwrap();
        if i > 0 {
            writeln!(s, "from :{}", 299 + i).unwrap();
        }
        writeln!(s, "M 100644 :{} README", 100 + i).unwrap();
        writeln!(s, "M 100644 :{} notes/{i}.txt", 200 + i).unwrap();
        if i == old + 2 {
            writeln!(s, "M 100644 :51 data.txt").unwrap();
        }
        s.push(b'\n');
        if i == old {
            write!(
                s,
                "reset refs/heads/old\nfrom :{}\n\n\
                 commit refs/heads/other\ncommitter T <t@example.com> 1700000000 +0000\ndata 5\nother\nfrom :{}\nM 100644 :50 other.txt\n\n",
                300 + i,
                300 + i
            )
            .unwrap();
        }
    }
    s.extend_from_slice(b"done\n");
    // One pack, however few objects (fast-import unpacks below the unpack limit).
    let mut child = git_cmd(&repo)
        .args([
            "-c",
            "fastimport.unpackLimit=0",
            "fast-import",
            "--quiet",
            "--done",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&s).unwrap();
    assert!(child.wait().unwrap().success(), "fast-import");
    std::fs::write(repo.join("git-daemon-export-ok"), "").unwrap();
    repo
}

/// Run a git command that talks to a server, killing it if it hangs.
fn git_net(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let out_path = dir.join(format!(".out-{}", std::process::id()));
    let err_path = dir.join(format!(".err-{}", std::process::id()));
    let mut cmd: Command = git_cmd(dir);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = support::KillOnDrop(cmd.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "git {args:?} hung");
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: std::fs::read(&err_path).unwrap(),
    }
}

fn ok(out: Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what} failed:\n{stderr}");
    stderr
}

fn fsck(repo: &Path) {
    ok(
        git_cmd(repo).args(["fsck", "--full"]).output().unwrap(),
        "fsck",
    );
}

/// The ids `git rev-list --objects <spec>` lists, as a set.
fn objects(repo: &Path, spec: &str) -> BTreeSet<String> {
    git(repo, &["rev-list", "--objects", spec])
        .lines()
        .map(|l| l[..40].to_string())
        .collect()
}

/// A client of `url` holding only branch `old` (the non-default branch).
fn clone_old(dir: &Path, url: &str, name: &str, proto: &str) -> PathBuf {
    let dest = dir.join(name);
    ok(
        git_net(
            dir,
            &[
                "-c",
                proto,
                "clone",
                "-q",
                "--bare",
                "--single-branch",
                "-b",
                "old",
                url,
                dest.to_str().unwrap(),
            ],
            &[],
        ),
        "single-branch clone",
    );
    dest
}

#[test]
fn single_branch_clone_then_fetch_of_another_branch_resolves_thin_deltas() {
    let dir = scratch("thin-single");
    let repo = thin_fixture(&dir);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    for v in ["0", "2"] {
        let proto = format!("protocol.version={v}");
        let client = clone_old(&dir, &gitd.url("/repo.git"), &format!("c{v}.git"), &proto);
        fsck(&client);
        assert_eq!(objects(&client, "old"), objects(&repo, "old"));
        let stderr = ok(
            git_net(
                &client,
                &[
                    "-c",
                    &proto,
                    "-c",
                    "fetch.unpackLimit=1",
                    "fetch",
                    "--progress",
                    "origin",
                    "main:refs/heads/main",
                ],
                &[],
            ),
            "fetch of main",
        );
        fsck(&client);
        assert_eq!(rev(&client, "main"), rev(&repo, "main"));
        assert_eq!(objects(&client, "main"), objects(&repo, "main"));
        // index-pack (kept pack: unpackLimit=1) reports the bases it took from the
        // client's own objects: the pack really was thin.
        assert!(
            stderr.contains("completed with"),
            "v{v}: no thin delta was sent:\n{stderr}"
        );
    }
}

#[test]
fn thin_fetch_after_divergent_history() {
    let dir = scratch("thin-diverge");
    let repo = thin_fixture(&dir);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    for v in ["0", "2"] {
        let proto = format!("protocol.version={v}");
        let url = gitd.url("/repo.git");
        let work = dir.join(format!("w{v}"));
        ok(
            git_net(
                &dir,
                &[
                    "-c",
                    &proto,
                    "clone",
                    "-q",
                    "--single-branch",
                    "-b",
                    "old",
                    &url,
                    work.to_str().unwrap(),
                ],
                &[],
            ),
            "clone",
        );
        git(
            &work,
            &[
                "config",
                "remote.origin.fetch",
                "+refs/heads/*:refs/remotes/origin/*",
            ],
        );
        // Local commits the server has never seen: their haves go unacknowledged.
        for i in 0..3 {
            std::fs::write(work.join(format!("local-{i}.txt")), readme(i)).unwrap();
            git(&work, &["add", "."]);
            git(&work, &["commit", "-q", "-m", &format!("local {i}")]);
        }
        let stderr = ok(
            git_net(
                &work,
                &[
                    "-c",
                    &proto,
                    "-c",
                    "fetch.unpackLimit=1",
                    "fetch",
                    "--progress",
                    "origin",
                ],
                &[],
            ),
            "fetch",
        );
        fsck(&work);
        assert!(
            stderr.contains("completed with"),
            "v{v}: not thin:\n{stderr}"
        );
        assert_eq!(rev(&work, "origin/main"), rev(&repo, "main"));
        assert_eq!(objects(&work, "origin/main"), objects(&repo, "main"));
        assert_eq!(objects(&work, "origin/other"), objects(&repo, "other"));
        git(&work, &["merge", "-q", "-m", "merge", "origin/main"]);
    }
}

/// Pack bytes out of an upload-pack response (side-band pkt-lines on channel 1);
/// also returns what came on channel 2.
fn side_band_pack(mut bytes: &[u8]) -> (Vec<u8>, String) {
    let (mut pack, mut progress) = (Vec::new(), Vec::new());
    while bytes.len() >= 4 {
        let n = usize::from_str_radix(std::str::from_utf8(&bytes[..4]).unwrap(), 16).unwrap();
        if n < 4 {
            bytes = &bytes[4..];
            continue;
        }
        let data = &bytes[4..n];
        match data.first() {
            Some(1) => pack.extend_from_slice(&data[1..]),
            Some(2) => progress.extend_from_slice(&data[1..]),
            Some(3) => panic!("server error: {}", String::from_utf8_lossy(&data[1..])),
            _ => {}
        }
        bytes = &bytes[n..];
    }
    assert!(pack.starts_with(b"PACK"), "no pack in the response");
    (pack, String::from_utf8(progress).unwrap())
}

/// A fetch request for `want` from a client that has `have`.
fn fetch_request(v2: bool, want: &str, have: &str, thin: bool, ofs: bool) -> Vec<u8> {
    let mut args = vec!["no-progress"];
    args.extend(thin.then_some("thin-pack"));
    args.extend(ofs.then_some("ofs-delta"));
    let mut req = Vec::new();
    if v2 {
        req.extend(pkt(b"command=fetch\n"));
        req.extend(b"0001");
        req.extend(pkt(format!("want {want}\n").as_bytes()));
        for arg in args {
            req.extend(pkt(format!("{arg}\n").as_bytes()));
        }
    } else {
        let caps = format!("side-band-64k {}", args.join(" "));
        req.extend(pkt(format!("want {want} {caps}\n").as_bytes()));
        req.extend(b"0000");
    }
    req.extend(pkt(format!("have {have}\n").as_bytes()));
    req.extend(pkt(b"done\n"));
    if v2 {
        req.extend(b"0000");
    }
    req
}

/// One pack entry's header: its type (1-4 whole objects, 6 OFS_DELTA, 7 REF_DELTA)
/// and, for a REF_DELTA, the base it names.
fn entry_header(pack: &[u8], offset: usize) -> (u8, Option<String>) {
    let kind = (pack[offset] >> 4) & 7;
    let mut p = offset;
    while pack[p] & 0x80 != 0 {
        p += 1;
    }
    let base = (kind == 7).then(|| {
        pack[p + 1..p + 21]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    });
    (kind, base)
}

/// `git index-pack --fix-thin` of `pack` in `client`; returns the REF_DELTA bases the
/// pack names and how many entries are deltas of either kind.
fn index_thin_pack(client: &Path, pack: &[u8]) -> (Vec<String>, usize) {
    let mut child = git_cmd(client)
        .args(["index-pack", "--stdin", "--fix-thin", "--strict"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(pack).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    ok(out, "index-pack --fix-thin");
    // The entries of the sent pack, by offset (fixing only appends objects).
    let hash = stdout.trim().trim_start_matches("pack\t");
    let idx = client.join(format!("objects/pack/pack-{hash}.idx"));
    let index = git_cmd(client)
        .arg("show-index")
        .stdin(std::fs::File::open(idx).unwrap())
        .output()
        .unwrap();
    let count = u32::from_be_bytes(pack[8..12].try_into().unwrap()) as usize;
    let (mut bases, mut deltas, mut entries) = (Vec::new(), 0, 0);
    for line in String::from_utf8(index.stdout).unwrap().lines() {
        let offset: usize = line.split(' ').next().unwrap().parse().unwrap();
        if offset >= pack.len() - 20 {
            continue; // a base appended by --fix-thin
        }
        let (kind, base) = entry_header(pack, offset);
        entries += 1;
        deltas += usize::from(kind >= 6);
        bases.extend(base);
    }
    assert_eq!(entries, count, "every entry of the sent pack was looked at");
    (bases, deltas)
}

#[test]
fn raw_thin_pack_names_only_bases_the_client_has() {
    let dir = scratch("thin-raw");
    let repo = thin_fixture(&dir);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    let (main, old) = (rev(&repo, "main"), rev(&repo, "old"));
    let has = objects(&repo, "old");
    let sent: BTreeSet<String> = objects(&repo, "main").difference(&has).cloned().collect();
    let forbidden = rev(&repo, "other:other.txt");
    assert!(!has.contains(&forbidden));
    for v2 in [false, true] {
        let mut sizes = Vec::new();
        for (thin, ofs) in [(true, true), (false, true), (true, false)] {
            let response = ours_at(
                gitd.port,
                "/repo.git",
                v2,
                &fetch_request(v2, &main, &old, thin, ofs),
            );
            let (pack, progress) = side_band_pack(&response);
            assert!(
                progress.is_empty(),
                "no-progress was asked for: {progress:?}"
            );
            // A repository holding exactly what the client said it has.
            let client = dir.join(format!("client-{v2}-{thin}-{ofs}.git"));
            git(
                &dir,
                &[
                    "clone",
                    "-q",
                    "--bare",
                    "--no-local",
                    "--single-branch",
                    "-b",
                    "old",
                    repo.to_str().unwrap(),
                    client.to_str().unwrap(),
                ],
            );
            let (bases, deltas) = index_thin_pack(&client, &pack);
            assert!(deltas > 0, "the stored deltas are reused");
            // Without ofs-delta, deltas against objects of the pack name them by id.
            let thin_bases: Vec<&String> = bases.iter().filter(|b| !sent.contains(*b)).collect();
            for base in &thin_bases {
                assert!(
                    has.contains(*base),
                    "v2={v2} thin={thin} ofs={ofs}: REF_DELTA against {base}, which the client lacks"
                );
            }
            assert_eq!(
                thin,
                !thin_bases.is_empty(),
                "v2={v2} ofs={ofs}: thin deltas should be there exactly with thin-pack"
            );
            assert_eq!(ofs, bases.len() == thin_bases.len(), "v2={v2} ofs={ofs}");
            git(&client, &["update-ref", "refs/heads/main", &main]);
            fsck(&client);
            assert_eq!(objects(&client, "main"), objects(&repo, "main"));
            sizes.push(pack.len());
        }
        assert!(
            sizes[0] < sizes[1],
            "v2={v2}: thin pack {} bytes is not smaller than the full one {}",
            sizes[0],
            sizes[1]
        );
    }
}

/// Size of the pack `git upload-pack` (the oracle) and gitd send for the same v0
/// request, with and without thin-pack: printed for the record, and gitd's thin pack
/// must be within 5% of git's for this layout (new objects stored as deltas against
/// what the client has).
#[test]
fn incremental_thin_pack_is_about_as_small_as_gits() {
    let dir = scratch("thin-size");
    let repo = thin_fixture(&dir);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    let (main, old) = (rev(&repo, "main"), rev(&repo, "old"));
    let mut line = String::new();
    let mut size = |who: &str, thin: bool| {
        let req = fetch_request(false, &main, &old, thin, true);
        let response = if who == "git" {
            oracle_upload_pack(&repo, &req, false)
        } else {
            ours_at(gitd.port, "/repo.git", false, &req)
        };
        let n = side_band_pack(&response).0.len();
        line.push_str(&format!(" {who} thin={thin}: {n};"));
        n
    };
    let (ours_thin, ours_full) = (size("gitd", true), size("gitd", false));
    let (git_thin, git_full) = (size("git", true), size("git", false));
    eprintln!("pack bytes:{line}");
    assert!(ours_thin < ours_full, "{line}");
    assert!(git_thin < git_full, "{line}");
    assert!(ours_thin * 100 <= git_thin * 105, "{line}");
}

#[test]
fn clone_shows_gits_progress_lines() {
    let dir = scratch("thin-progress");
    let repo = support::fixture(&dir, "repo.git", 30);
    // A loose commit on top: the clone is not one stored pack sent whole (whose
    // lines `tests/bitmap.rs` checks), so objects are counted one by one.
    support::add_commits(&repo, "main", 1, "loose");
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    let total = git(&repo, &["rev-list", "--objects", "--all"])
        .lines()
        .count();
    // Loose objects are deflated anew, the others copied as one stretch of the
    // stored pack (git's partial pack reuse): pack-reused, not reused one by one.
    let loose: usize = git(&repo, &["count-objects", "-v"])
        .lines()
        .find_map(|l| l.strip_prefix("count: "))
        .unwrap()
        .parse()
        .unwrap();
    let packed = total - loose;
    for v in ["0", "2"] {
        let dest = dir.join(format!("p{v}.git"));
        let stderr = ok(
            git_net(
                &dir,
                &[
                    "-c",
                    &format!("protocol.version={v}"),
                    "clone",
                    "--progress",
                    "--mirror",
                    &gitd.url("/repo.git"),
                    dest.to_str().unwrap(),
                ],
                &[],
            ),
            "clone",
        );
        let lines: Vec<&str> = stderr.split(['\r', '\n']).map(str::trim_end).collect();
        // Deltas in the received pack (a clone keeps it as it came).
        let pack = std::fs::read_dir(dest.join("objects/pack"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "pack"))
            .unwrap();
        let verify = git(&dest, &["verify-pack", "-v", pack.to_str().unwrap()]);
        let deltas = verify
            .lines()
            .filter(|l| l.split_whitespace().count() == 7)
            .count();
        assert!(deltas > 0);
        for expected in [
            format!("remote: Enumerating objects: {total}, done."),
            format!("remote: Counting objects: 100% ({total}/{total}), done."),
            format!(
                "remote: Total {total} (delta {deltas}), reused 0 (delta 0), pack-reused {packed} (from 1)"
            ),
        ] {
            assert!(
                lines.contains(&expected.as_str()),
                "v{v}: no {expected:?} in:\n{stderr}"
            );
        }
        // Counting updates as the percentage grows.
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("remote: Counting objects:  ")),
            "v{v}: no in-progress counting line:\n{stderr}"
        );
        // -q: no progress at all.
        let quiet = ok(
            git_net(
                &dir,
                &[
                    "-c",
                    &format!("protocol.version={v}"),
                    "clone",
                    "-q",
                    "--mirror",
                    &gitd.url("/repo.git"),
                    dir.join(format!("q{v}.git")).to_str().unwrap(),
                ],
                &[],
            ),
            "quiet clone",
        );
        assert!(!quiet.contains("remote:"), "v{v}: {quiet}");
    }
}
