//! Hard conditions: links out of the tree, hostile bytes in logs, many connections at
//! once, repositories changing under a clone, and signals.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use support::oracle::{git_bounded, ours_at};
use support::{
    Gitd, NotifySocket, Raw, fixture, git, git_output, pkt, refs_of, rev, scratch, wait_until,
};

#[test]
fn symlinks_out_of_the_base_path_are_refused() {
    let dir = scratch("symlinks");
    let base = dir.join("base");
    std::fs::create_dir_all(&base).unwrap();
    let outside = fixture(&dir, "outside.git", 3);
    fixture(&base, "inside.git", 3);
    std::os::unix::fs::symlink(&outside, base.join("escape.git")).unwrap();
    std::os::unix::fs::symlink(base.join("inside.git"), base.join("alias.git")).unwrap();
    let b = format!("--base-path={}", base.display());
    let gitd = Gitd::start(&dir, &[&b, "--informative-errors"]);
    let out = git_output(&dir, &["ls-remote", &gitd.url("/escape.git")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such repository: /escape.git"));
    // A link that stays inside the tree is fine.
    assert!(
        git_output(&dir, &["ls-remote", &gitd.url("/alias.git")])
            .status
            .success()
    );
    drop(gitd);
    // git daemon's behaviour, on request.
    let gitd = Gitd::start(&dir, &[&b, "--allow-symlinks-outside-base"]);
    let out = git(&dir, &["ls-remote", &gitd.url("/escape.git")]);
    assert!(out.contains(&rev(&outside, "main")));
}

#[test]
fn client_bytes_are_escaped_in_logs() {
    let dir = scratch("log-escape");
    fixture(&dir, "repo.git", 2);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    let mut raw = Raw::connect(gitd.port);
    raw.send_pkt(
        b"git-upload-pack /repo.git\x1b[31m\nFAKE request outcome=\"ok\"\0host=evil\x07host\0",
    );
    let reply = raw.read().text();
    assert!(reply.contains("\\x1b[31m\\x0aFAKE"), "{reply}");
    drop(raw);
    assert!(wait_until(Duration::from_secs(5), || gitd
        .logs()
        .contains("\\x1b")));
    let logs = gitd.logs();
    assert!(
        !logs.contains('\x1b') && !logs.contains('\x07'),
        "raw control bytes in the log:\n{logs:?}"
    );
    assert!(
        !logs.lines().any(|l| l.starts_with("FAKE")),
        "a client forged a log line:\n{logs}"
    );
}

/// Raise our own open-file limit: the test holds a thousand sockets.
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

fn vm_hwm_kib(pid: u32) -> u64 {
    support::vm_kib(pid, "VmHWM:")
}

#[test]
fn many_clones_and_a_thousand_idle_connections() {
    raise_nofile();
    let dir = scratch("load");
    let repo = fixture(&dir, "repo.git", 40);
    let gitd = Gitd::start(
        &dir,
        &[
            &format!("--base-path={}", dir.display()),
            "--max-connections=2000",
            "--init-timeout=3",
        ],
    );
    // A thousand connections that never say anything.
    let idle: Vec<Raw> = (0..1000).map(|_| Raw::connect(gitd.port)).collect();
    let start = Instant::now();
    let clones: Vec<_> = (0..64)
        .map(|i| {
            let (dir, url) = (dir.clone(), gitd.url("/repo.git"));
            std::thread::spawn(move || {
                let dest = dir.join(format!("clone-{i}.git"));
                let out = git_bounded(
                    &dir,
                    &["clone", "-q", "--mirror", &url, dest.to_str().unwrap()],
                    Duration::from_secs(180),
                );
                (dest, out)
            })
        })
        .collect();
    for c in clones {
        let (dest, out) = c.join().unwrap();
        assert!(
            out.status.success(),
            "a clone failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(refs_of(&dest, "refs/"), refs_of(&repo, "refs/"));
    }
    // The idle ones are cut off by --init-timeout.
    let mut closed = 0;
    for mut raw in idle {
        raw.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 64];
        if matches!(raw.stream.read(&mut buf), Ok(_) | Err(_)) {
            closed += 1;
        }
    }
    assert_eq!(closed, 1000);
    assert!(start.elapsed() < Duration::from_secs(200));
    let hwm = vm_hwm_kib(gitd.child.id());
    assert!(hwm < 256 * 1024, "peak RSS {hwm} KiB");
}

#[test]
fn repositories_changing_under_clones() {
    let dir = scratch("changing");
    let repo = fixture(&dir, "repo.git", 60);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (repo, stop) = (repo.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut round = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && round < 200 {
                support::add_commits(&repo, "main", 1, &format!("w{round}"));
                let op: &[&str] = match round % 3 {
                    0 => &["repack", "-adq"],
                    1 => &["gc", "-q", "--prune=now"],
                    _ => &["repack", "-dq"],
                };
                let _ = git_output(&repo, op);
                round += 1;
            }
            round
        })
    };
    let mut ok = 0;
    for i in 0..20 {
        let dest = dir.join(format!("c{i}.git"));
        let v = if i % 2 == 0 { "2" } else { "0" };
        let out = git_bounded(
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
            Duration::from_secs(120),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            let fsck = git_output(&dest, &["fsck", "--full"]);
            assert!(
                fsck.status.success(),
                "a completed clone is not valid: {}",
                String::from_utf8_lossy(&fsck.stderr)
            );
            ok += 1;
        } else {
            // Allowed: a clear error from the server, never a corrupt pack.
            assert!(
                !err.contains("corrupt")
                    && !err.contains("bad object")
                    && !err.contains("unresolved delta"),
                "corrupt pack: {err}"
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let rounds = writer.join().unwrap();
    assert!(rounds > 0);
    assert!(ok >= 10, "most clones complete ({ok} of 20)");
    assert!(!gitd.logs().contains("panicked"), "{}", gitd.logs());
    let final_clone = dir.join("final.git");
    git(
        &dir,
        &[
            "clone",
            "-q",
            "--mirror",
            &gitd.url("/repo.git"),
            final_clone.to_str().unwrap(),
        ],
    );
    assert_eq!(refs_of(&final_clone, "refs/"), refs_of(&repo, "refs/"));
}

/// A repository with a few MiB of incompressible data, so a pack outlasts the
/// socket buffers and a slow reader keeps the server writing.
fn big_repo(dir: &Path) -> std::path::PathBuf {
    let repo = fixture(dir, "big.git", 5);
    let work = dir.join("big-work");
    git(
        dir,
        &[
            "clone",
            "-q",
            repo.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..6 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(work.join("noise.bin"), data).unwrap();
    git(&work, &["add", "noise.bin"]);
    git(&work, &["commit", "-q", "-m", "noise"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    repo
}

#[test]
fn sigterm_lets_a_running_clone_finish() {
    let dir = scratch("sigterm-drain");
    let repo = big_repo(&dir);
    let notify = NotifySocket::new(&dir);
    let mut gitd = Gitd::start_on(
        &dir,
        vec![TcpListener::bind("127.0.0.1:0").unwrap()],
        &[&format!("--base-path={}", dir.display())],
        Some(&notify.path),
    );
    notify.wait_for("READY=1", Duration::from_secs(10));
    // A v2 fetch of everything, read slowly.
    let mut raw = Raw::connect(gitd.port);
    raw.send_pkt(b"git-upload-pack /big.git\0host=localhost\0\0version=2\0");
    raw.read_until_flush();
    let mut req = pkt(b"command=fetch\n");
    req.extend(b"0001");
    req.extend(pkt(format!("want {}\n", rev(&repo, "main")).as_bytes()));
    req.extend(pkt(b"ofs-delta\n"));
    req.extend(pkt(b"no-progress\n"));
    req.extend(pkt(b"done\n"));
    req.extend(b"0000");
    raw.send(&req);
    let mut received = vec![0u8; 16];
    raw.stream.read_exact(&mut received).unwrap();
    // SAFETY: signalling our own child by PID.
    unsafe { libc::kill(gitd.child.id() as i32, libc::SIGTERM) };
    notify.wait_for("STOPPING=1", Duration::from_secs(10));
    let mut buf = [0u8; 16 * 1024];
    let mut still_running_after_stop = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        match raw.stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the running fetch was cut: {e}"),
        }
        if received.len() < 2 * 1024 * 1024 && gitd.is_running() {
            still_running_after_stop = true;
        }
        if received.ends_with(b"0000") {
            break;
        }
    }
    assert!(
        still_running_after_stop,
        "gitd waited for the running fetch"
    );
    assert!(
        received.len() > 6 * 1024 * 1024,
        "the whole pack arrived ({} bytes)",
        received.len()
    );
    assert!(
        received.ends_with(b"0000"),
        "the pack section ended properly"
    );
    drop(raw);
    let status = gitd
        .wait_exit(Duration::from_secs(35))
        .expect("gitd exits after the drain");
    assert!(status.success());
}

#[test]
fn sigkill_leaves_nothing_that_breaks_the_next_start() {
    let dir = scratch("sigkill");
    let repo = fixture(&dir, "repo.git", 30);
    let pid_file = dir.join("gitd.pid");
    let args = [
        format!("--base-path={}", dir.display()),
        format!("--pid-file={}", pid_file.display()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gitd = Gitd::start(&dir, &args);
    // Kill it in the middle of serving a fetch.
    let request = {
        let mut r = pkt(b"command=fetch\n");
        r.extend(b"0001");
        r.extend(pkt(format!("want {}\n", rev(&repo, "main")).as_bytes()));
        r.extend(pkt(b"done\n"));
        r.extend(b"0000");
        r
    };
    let port = gitd.port;
    let fetch = std::thread::spawn(move || ours_at(port, "/repo.git", true, &request));
    std::thread::sleep(Duration::from_millis(50));
    // SAFETY: signalling our own child by PID.
    unsafe { libc::kill(gitd.child.id() as i32, libc::SIGKILL) };
    let _ = fetch.join();
    let gitd = gitd.restart(&args, None);
    let dest = dir.join("after.git");
    git(
        &dir,
        &[
            "clone",
            "-q",
            "--mirror",
            &gitd.url("/repo.git"),
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(refs_of(&dest, "refs/"), refs_of(&repo, "refs/"));
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() == gitd.child.id().to_string())
    }));
}
