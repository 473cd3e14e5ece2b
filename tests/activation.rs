//! Both ways gitd gets its sockets, idle exit, the exit window, and sd_notify.

mod support;

use std::net::TcpListener;
use std::time::Duration;

use support::{
    Gitd, NotifySocket, Raw, Reply, fixture, git, git_output, pkt, refs_of, scratch, wait_until,
};

/// gitd's own `listening on ADDR` log line, once it appears.
fn listening_port(log: &std::path::Path) -> u16 {
    let mut port = None;
    wait_until(Duration::from_secs(10), || {
        port = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.split("listening on 127.0.0.1:")
                    .nth(1)
                    .map(|p| p.trim().parse::<u16>().unwrap())
            });
        port.is_some()
    });
    port.expect("gitd logged its port")
}

#[test]
fn standalone_binds_its_own_socket_and_never_idles_out() {
    let dir = scratch("standalone");
    let repo = fixture(&dir, "repo.git", 10);
    let log = dir.join("gitd.log");
    let child = std::process::Command::new(support::GITD)
        .args([
            &format!("--base-path={}", dir.display()),
            "--listen=127.0.0.1",
            "--port=0",
        ])
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("NOTIFY_SOCKET")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let child = support::KillOnDrop(child);
    let port = listening_port(&log);
    let dest = dir.join("clone.git");
    let out = git_output(
        &dir,
        &[
            "clone",
            "-q",
            "--mirror",
            &format!("git://127.0.0.1:{port}/repo.git"),
            dest.to_str().unwrap(),
        ],
    );
    let logs = std::fs::read_to_string(&log).unwrap();
    drop(child);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(refs_of(&dest, "refs/"), refs_of(&repo, "refs/"));
    assert!(
        logs.contains("idle exit disabled"),
        "standalone default is no idle exit:\n{logs}"
    );
}

#[test]
fn inherited_socket_is_served_and_idle_timeout_defaults_to_60s() {
    let dir = scratch("inherited");
    let repo = fixture(&dir, "repo.git", 10);
    let notify = NotifySocket::new(&dir);
    let gitd = Gitd::start_on(
        &dir,
        vec![TcpListener::bind("127.0.0.1:0").unwrap()],
        &[&format!("--base-path={}", dir.display())],
        Some(&notify.path),
    );
    notify.wait_for("READY=1", Duration::from_secs(10));
    let dest = dir.join("clone.git");
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
    let status = notify.wait_for(
        "STATUS=0 open connections, 1 requests served",
        Duration::from_secs(10),
    );
    assert!(
        status
            .iter()
            .any(|m| m.contains("STATUS=1 open connections")),
        "{status:?}"
    );
    assert!(
        gitd.logs().contains("idle exit after 60s"),
        "{}",
        gitd.logs()
    );
}

#[test]
fn several_inherited_sockets_ipv4_and_ipv6() {
    let dir = scratch("multi");
    let repo = fixture(&dir, "repo.git", 5);
    let mut listeners = vec![TcpListener::bind("127.0.0.1:0").unwrap()];
    let v6 = TcpListener::bind("[::1]:0").ok();
    let v6_port = v6.as_ref().map(|l| l.local_addr().unwrap().port());
    let second = TcpListener::bind("127.0.0.2:0").unwrap();
    let second_port = second.local_addr().unwrap().port();
    listeners.push(second);
    listeners.extend(v6);
    let gitd = Gitd::start_on(
        &dir,
        listeners,
        &[&format!("--base-path={}", dir.display())],
        None,
    );
    let mut urls = vec![
        gitd.url("/repo.git"),
        format!("git://127.0.0.2:{second_port}/repo.git"),
    ];
    if let Some(p) = v6_port {
        urls.push(format!("git://[::1]:{p}/repo.git"));
    }
    for url in urls {
        let out = git(&dir, &["ls-remote", &url]);
        assert!(
            out.contains(&refs_of(&repo, "refs/heads/main")[0].replace(' ', "\t")),
            "{url}: {out}"
        );
    }
}

#[test]
fn idle_exit_notifies_stopping_and_exits_zero() {
    let dir = scratch("idle");
    fixture(&dir, "repo.git", 5);
    let notify = NotifySocket::new(&dir);
    let mut gitd = Gitd::start_on(
        &dir,
        vec![TcpListener::bind("127.0.0.1:0").unwrap()],
        &[
            &format!("--base-path={}", dir.display()),
            "--idle-timeout=1",
        ],
        Some(&notify.path),
    );
    notify.wait_for("READY=1", Duration::from_secs(10));
    git(&dir, &["ls-remote", &gitd.url("/repo.git")]);
    notify.wait_for("STOPPING=1", Duration::from_secs(10));
    let status = gitd
        .wait_exit(Duration::from_secs(10))
        .expect("gitd exits after the idle timeout");
    assert!(
        status.success(),
        "idle exit must be a clean exit: {status:?}"
    );
}

#[test]
fn a_busy_connection_keeps_gitd_alive() {
    let dir = scratch("busy");
    fixture(&dir, "repo.git", 5);
    let mut gitd = Gitd::start(
        &dir,
        &[
            &format!("--base-path={}", dir.display()),
            "--idle-timeout=1",
        ],
    );
    // An open connection (v2 session between commands) is not idle.
    let mut raw = Raw::connect(gitd.port);
    raw.send_pkt(b"git-upload-pack /repo.git\0host=localhost\0\0version=2\0");
    assert_eq!(raw.read().text(), "version 2");
    raw.read_until_flush();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(gitd.is_running(), "gitd exited while a connection was open");
    drop(raw);
    assert!(
        gitd.wait_exit(Duration::from_secs(10)).is_some(),
        "gitd exits once the connection closed"
    );
}

/// The exit window: a client connects after gitd decided to exit (it already sent
/// STOPPING=1 and no longer accepts). The connection waits in the socket's backlog
/// and the next instance, started on the same socket as systemd does, serves it.
#[test]
fn connection_during_exit_is_served_by_the_next_instance() {
    let dir = scratch("exit-window");
    let repo = fixture(&dir, "repo.git", 10);
    let notify = NotifySocket::new(&dir);
    let args = [
        format!("--base-path={}", dir.display()),
        "--idle-timeout=1".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut gitd = Gitd::start_on(
        &dir,
        vec![TcpListener::bind("127.0.0.1:0").unwrap()],
        &args,
        Some(&notify.path),
    );
    notify.wait_for("READY=1", Duration::from_secs(10));
    notify.wait_for("STOPPING=1", Duration::from_secs(10));

    // Connect and send a whole request while the old instance is on its way out.
    let mut raw = Raw::connect(gitd.port);
    raw.send(&pkt(
        b"git-upload-pack /repo.git\0host=localhost\0\0version=2\0",
    ));
    raw.send(&pkt(b"command=ls-refs\n"));
    raw.send(b"0001");
    raw.send(&pkt(b"symrefs\n"));
    raw.send(b"0000");
    // A real client too, in the background.
    let url = gitd.url("/repo.git");
    let dest = dir.join("clone.git");
    let (d2, dest2) = (dir.clone(), dest.clone());
    let clone = std::thread::spawn(move || {
        git_output(
            &d2,
            &["clone", "-q", "--mirror", &url, dest2.to_str().unwrap()],
        )
    });

    let status = gitd
        .wait_exit(Duration::from_secs(10))
        .expect("old instance exits");
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !clone.is_finished(),
        "the clone must wait in the backlog, not fail"
    );

    let gitd = gitd.restart(&args, Some(&notify.path));
    let mut lines = Vec::new();
    assert_eq!(raw.read().text(), "version 2");
    raw.read_until_flush();
    loop {
        match raw.read() {
            Reply::Data(d) => lines.push(String::from_utf8(d).unwrap()),
            Reply::Flush => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        lines.iter().any(
            |l| l.starts_with(&git(&repo, &["rev-parse", "main"]).trim().to_string())
                && l.contains("refs/heads/main")
        ),
        "{lines:?}"
    );
    let out = clone.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(refs_of(&dest, "refs/"), refs_of(&repo, "refs/"));
    drop(gitd);
}

#[test]
fn sigterm_stops_cleanly() {
    let dir = scratch("sigterm");
    fixture(&dir, "repo.git", 5);
    let notify = NotifySocket::new(&dir);
    let mut gitd = Gitd::start_on(
        &dir,
        vec![TcpListener::bind("127.0.0.1:0").unwrap()],
        &[&format!("--base-path={}", dir.display())],
        Some(&notify.path),
    );
    notify.wait_for("READY=1", Duration::from_secs(10));
    // SAFETY: signalling our own child by its PID.
    unsafe { libc::kill(gitd.child.id() as i32, libc::SIGTERM) };
    notify.wait_for("STOPPING=1", Duration::from_secs(10));
    let status = gitd
        .wait_exit(Duration::from_secs(10))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn watchdog_pings_when_systemd_asks() {
    let dir = scratch("watchdog");
    let notify = NotifySocket::new(&dir);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // systemd sets WATCHDOG_USEC and WATCHDOG_PID (the pid of gitd itself).
    let child = std::process::Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\"", support::GITD])
        .args([
            "--listen=127.0.0.1",
            "--port=0",
            &format!("--base-path={}", dir.display()),
        ])
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("LISTEN_FDS")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("gitd.log")).unwrap())
        .spawn()
        .unwrap();
    let child = support::KillOnDrop(child);
    drop(listener);
    let seen = std::panic::catch_unwind(|| notify.wait_for("WATCHDOG=1", Duration::from_secs(10)));
    drop(child);
    let seen = seen.unwrap_or_else(|_| {
        panic!(
            "no watchdog ping; log: {}",
            std::fs::read_to_string(dir.join("gitd.log")).unwrap()
        )
    });
    assert!(seen.iter().any(|m| m.contains("READY=1")));
}

#[test]
fn systemd_socket_activate_passes_the_socket() {
    let Ok(tool) = which("systemd-socket-activate") else {
        eprintln!("skipping: systemd-socket-activate is not installed");
        return;
    };
    let dir = scratch("ssa");
    let repo = fixture(&dir, "repo.git", 5);
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(tool)
        .args([
            "-l",
            &format!("127.0.0.1:{port}"),
            support::GITD,
            &format!("--base-path={}", dir.display()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("ssa.log")).unwrap())
        .spawn()
        .unwrap();
    let child = support::KillOnDrop(child);
    let mut out = None;
    wait_until(Duration::from_secs(10), || {
        let o = git_output(
            &dir,
            &["ls-remote", &format!("git://127.0.0.1:{port}/repo.git")],
        );
        let ok = o.status.success();
        out = Some(o);
        ok
    });
    drop(child);
    let out = out.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&git(&repo, &["rev-parse", "main"]).trim().to_string())
    );
    let log = std::fs::read_to_string(dir.join("ssa.log")).unwrap();
    assert!(
        log.contains("idle exit after 60s"),
        "activated gitd should default to idle exit:\n{log}"
    );
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .ok_or(())
}
