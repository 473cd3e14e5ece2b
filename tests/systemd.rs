//! The shipped units under a real `systemd --user` (see `support::systemd`): what
//! `gitd install --user --now` writes is what the manager loads, `git.socket` listens
//! while `git.service` is down, the first connection starts gitd (`Type=notify`), an
//! idle exit is a clean stop rather than a failure, and the next connection starts a
//! new gitd. Unit tests and the fd-passing tests cannot show any of that: only the
//! manager decides what "active", "failed" and "re-activated" mean.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::systemd::{self, UserManager, run_bounded};

/// Long enough that the service is still up when the first clone returns, short
/// enough to watch it idle out.
const IDLE_TIMEOUT_SECS: u64 = 2;

/// A loopback port nobody listens on right now (the socket unit binds it next).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `git clone --mirror` (so every ref must match the served repo's exactly), then
/// `git fsck --full`; returns the clone's refs or what went wrong.
fn mirror_and_check(dir: &Path, url: &str, name: &str) -> Result<Vec<String>, String> {
    // Bounded: a unit that cannot start leaves the connection waiting in the backlog.
    let out = support::git_bounded(
        dir,
        &["clone", "-q", "--mirror", url, name],
        Duration::from_secs(120),
    );
    if !out.status.success() {
        return Err(format!(
            "git clone {url} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let clone = dir.join(name);
    let fsck = support::git_output(&clone, &["fsck", "--full", "--strict", "--no-dangling"]);
    if !fsck.status.success() || !fsck.stderr.is_empty() || !fsck.stdout.is_empty() {
        return Err(format!(
            "git fsck --full of the clone is not clean ({}):\n{}{}",
            fsck.status,
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        ));
    }
    Ok(support::refs_of(&clone, "refs/"))
}

#[test]
fn install_now_socket_activates_idles_out_and_reactivates() {
    const TEST: &str = "install_now_socket_activates_idles_out_and_reactivates";
    let Some(sd) = UserManager::start_or_skip(TEST) else {
        return;
    };
    let started = Instant::now();
    let gitd_log = sd.state.join("gitd.log");
    let units = ["git.socket", "git.service"];
    let fail =
        |what: String| -> ! { panic!("{what}{}", sd.diagnose(&units, &[gitd_log.as_path()])) };
    macro_rules! ensure {
        ($cond:expr, $($msg:tt)+) => {
            if !$cond {
                fail(format!($($msg)+));
            }
        };
    }

    let base = sd.home.join("git");
    std::fs::create_dir_all(&base).unwrap();
    let served = support::fixture(&base, "repo.git", 30);
    let served_refs = support::refs_of(&served, "refs/");
    // Before install: `gitd install` runs daemon-reload, which picks the drop-in up.
    let dropin = sd.log_to("git.service", &gitd_log);

    let port = free_port();
    let out = run_bounded(
        sd.command(support::GITD).args([
            "install",
            "--user",
            "--now",
            &format!("--port={port}"),
            "--listen=127.0.0.1",
            &format!("--idle-timeout={IDLE_TIMEOUT_SECS}"),
        ]),
        Duration::from_secs(60),
    )
    .unwrap();
    ensure!(
        out.status.success(),
        "gitd install --user --now failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The manager loaded the units install wrote, with install's settings.
    let unit_dir = sd.unit_dir();
    for unit in units {
        let fragment = sd.show(unit, "FragmentPath");
        ensure!(
            Path::new(&fragment) == unit_dir.join(unit),
            "{unit} loaded from {fragment:?}, not from {}",
            unit_dir.display()
        );
        ensure!(
            sd.show(unit, "LoadState") == "loaded",
            "{unit} is not loaded"
        );
    }
    let listen = sd.show("git.socket", "Listen");
    ensure!(
        listen == format!("127.0.0.1:{port} (Stream)"),
        "git.socket listens on {listen:?}"
    );
    ensure!(
        sd.show("git.socket", "Accept") == "no",
        "git.socket must hand the listener to one gitd"
    );
    let state = sd.show("git.socket", "UnitFileState");
    ensure!(
        state == "enabled",
        "git.socket is {state:?} after install --now, not enabled"
    );
    let exec = sd.show("git.service", "ExecStart");
    let exe = PathBuf::from(support::GITD).canonicalize().unwrap();
    ensure!(
        exec.contains(&format!("path={} ;", exe.display()))
            && exec.contains(&format!("--base-path={}", base.display()))
            && exec.contains(&format!("--idle-timeout={IDLE_TIMEOUT_SECS}")),
        "git.service runs {exec}"
    );
    let dropins = sd.show("git.service", "DropInPaths");
    ensure!(
        dropins.contains(&dropin.display().to_string()),
        "log drop-in not applied: {dropins:?}"
    );

    // Socket up, service down: nothing has connected yet.
    let socket_state = (
        sd.show("git.socket", "ActiveState"),
        sd.show("git.socket", "SubState"),
    );
    ensure!(
        socket_state == ("active".into(), "listening".into()),
        "git.socket is {socket_state:?} after install --now"
    );
    let service_state = sd.show("git.service", "ActiveState");
    ensure!(
        service_state == "inactive",
        "git.service is {service_state:?} before any connection"
    );
    ensure!(
        sd.show("git.service", "ExecMainStartTimestampMonotonic") == "0",
        "git.service was started before any connection"
    );

    // First connection: systemd starts gitd on it.
    let work = support::scratch("systemd-clones");
    let url = format!("git://127.0.0.1:{port}/repo.git");
    let refs = mirror_and_check(&work, &url, "first.git").unwrap_or_else(|e| fail(e));
    let first_done = Instant::now();
    ensure!(
        refs == served_refs,
        "first clone's refs differ:\n{refs:#?}\nserved:\n{served_refs:#?}"
    );
    // Type=notify: "active" only after READY=1, and STATUS= reached the manager too.
    let service_state = (
        sd.show("git.service", "ActiveState"),
        sd.show("git.service", "SubState"),
    );
    ensure!(
        service_state == ("active".into(), "running".into()),
        "git.service is {service_state:?} right after the first clone (idle timeout {IDLE_TIMEOUT_SECS} s)"
    );
    ensure!(
        !sd.show("git.service", "StatusText").is_empty(),
        "gitd sent no STATUS= to the manager"
    );
    let first_pid = sd.show("git.service", "ExecMainPID");
    let first_start: u64 = sd
        .show("git.service", "ExecMainStartTimestampMonotonic")
        .parse()
        .unwrap();
    ensure!(
        first_pid != "0" && first_start != 0,
        "git.service has no main process: pid {first_pid}"
    );

    // Idle: gitd exits by itself, and systemd counts it as a clean stop.
    let settled = sd.wait_property("git.service", "ActiveState", Duration::from_secs(20), |s| {
        s == "inactive" || s == "failed"
    });
    let idle_after = first_done.elapsed();
    ensure!(
        settled.as_deref() == Ok("inactive"),
        "git.service did not go inactive by itself within 20 s of idling: {settled:?}"
    );
    ensure!(
        idle_after >= Duration::from_millis(IDLE_TIMEOUT_SECS * 1000 - 500),
        "gitd exited {idle_after:?} after the clone, before its {IDLE_TIMEOUT_SECS} s idle timeout"
    );
    let result = sd.show("git.service", "Result");
    ensure!(
        result == "success",
        "an idle exit left git.service with Result={result}"
    );
    // CLD_EXITED (1) with status 0: a plain exit, not a signal or a failure code.
    let (code, status) = (
        sd.show("git.service", "ExecMainCode"),
        sd.show("git.service", "ExecMainStatus"),
    );
    ensure!(
        code == "1" && status == "0",
        "gitd's idle exit: code {code}, status {status} (want exited, 0)"
    );
    ensure!(
        sd.show("git.service", "NRestarts") == "0",
        "an idle exit made systemd restart gitd"
    );
    let socket_state = sd.show("git.socket", "SubState");
    ensure!(
        socket_state == "listening",
        "git.socket is {socket_state:?} after gitd's idle exit"
    );

    // Next connection: a new gitd, serving the same repository.
    let refs = mirror_and_check(&work, &url, "second.git").unwrap_or_else(|e| fail(e));
    ensure!(
        refs == served_refs,
        "second clone's refs differ:\n{refs:#?}\nserved:\n{served_refs:#?}"
    );
    let second_pid = sd.show("git.service", "ExecMainPID");
    let second_start: u64 = sd
        .show("git.service", "ExecMainStartTimestampMonotonic")
        .parse()
        .unwrap();
    ensure!(
        second_pid != "0" && second_pid != first_pid && second_start > first_start,
        "git.service was not started again: pid {first_pid} -> {second_pid}, start {first_start} -> {second_start}"
    );
    let service_state = sd.show("git.service", "ActiveState");
    ensure!(
        service_state == "active",
        "git.service is {service_state:?} after re-activation"
    );
    ensure!(
        sd.show("git.service", "NRestarts") == "0",
        "re-activation counted as a restart"
    );

    eprintln!(
        "{TEST}: passed in {:?} (manager pid {})",
        started.elapsed(),
        sd.pid()
    );
}

/// `gitd install --user --now` on loopback `port` with an idle timeout.
fn install_now(sd: &UserManager, port: u16, idle_timeout: &str) -> Result<(), String> {
    let out = run_bounded(
        sd.command(support::GITD).args([
            "install",
            "--user",
            "--now",
            &format!("--port={port}"),
            "--listen=127.0.0.1",
            &format!("--idle-timeout={idle_timeout}"),
        ]),
        Duration::from_secs(60),
    )?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "install failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Lines of `systemd-analyze verify` output that are about `ours`.
fn lines_about<'a>(output: &'a str, ours: &[String]) -> Vec<&'a str> {
    output
        .lines()
        .filter(|l| ours.iter().any(|o| l.contains(o.as_str())))
        .collect()
}

/// Whether a line is attributed to some unit other than ours (a distro's stock
/// units can be imperfect, and that is not for this project's tests to judge).
fn about_other_unit(line: &str, ours: &[String]) -> bool {
    const SUFFIXES: [&str; 8] = [
        ".service", ".socket", ".target", ".slice", ".mount", ".timer", ".path", ".scope",
    ];
    line.split(|c: char| c.is_whitespace() || matches!(c, ':' | '\'' | '"' | ','))
        .filter(|w| SUFFIXES.iter().any(|s| w.ends_with(s)))
        .any(|w| !ours.iter().any(|o| w.ends_with(o.as_str())))
}

/// `systemd-analyze verify --user UNITS` with a scratch `HOME` and runtime dir.
fn analyze_verify(home: &Path, runtime: &Path, files: &[PathBuf]) -> std::process::Output {
    let mut cmd = Command::new("systemd-analyze");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", runtime)
        .env("LANG", "C.UTF-8")
        // Documentation= names git's man page; whether git's docs are installed is
        // no property of these units.
        .args(["verify", "--user", "--man=no"])
        .args(files);
    run_bounded(&mut cmd, Duration::from_secs(60)).unwrap()
}

/// `systemd-analyze verify` finds nothing wrong with the units as installed (with
/// their real `ExecStart=`), and does report a broken copy, so the check has teeth.
/// Needs no manager and no root.
#[test]
fn systemd_analyze_verify_accepts_installed_units() {
    const TEST: &str = "systemd_analyze_verify_accepts_installed_units";
    let analyze = run_bounded(
        Command::new("systemd-analyze").arg("--version"),
        Duration::from_secs(10),
    );
    if !analyze.as_ref().is_ok_and(|o| o.status.success()) {
        systemd::skip(
            TEST,
            &format!("systemd-analyze is not usable here: {analyze:?}"),
        );
        return;
    }
    let dir = support::scratch("systemd-verify");
    let home = dir.join("home");
    let runtime = dir.join("run");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&runtime).unwrap();

    let port = free_port();
    let mut install = Command::new(support::GITD);
    install
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", &runtime)
        .args([
            "install",
            "--user",
            &format!("--port={port}"),
            "--listen=127.0.0.1",
            "--idle-timeout=5",
        ]);
    let out = run_bounded(&mut install, Duration::from_secs(60)).unwrap();
    // No manager listens in this runtime dir: install writes the units, then says so (3).
    assert!(
        out.status.success() || out.status.code() == Some(3),
        "gitd install --user failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let unit_dir = home.join(".config/systemd/user");
    let files = [unit_dir.join("git.socket"), unit_dir.join("git.service")];
    for f in &files {
        assert!(f.is_file(), "gitd install did not write {}", f.display());
    }

    let ours: Vec<String> = vec![
        "git.socket".into(),
        "git.service".into(),
        unit_dir.display().to_string(),
        support::GITD.into(),
    ];
    let out = analyze_verify(&home, &runtime, &files);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !text.trim().is_empty() {
        eprintln!("systemd-analyze verify said:\n{text}");
    }
    let ours_flagged = lines_about(&text, &ours);
    assert!(
        ours_flagged.is_empty(),
        "systemd-analyze verify objects to the installed units:\n{text}"
    );
    let unexplained: Vec<&str> = text
        .lines()
        .filter(|l| !about_other_unit(l, &ours))
        .collect();
    assert!(
        out.status.success() || unexplained.is_empty(),
        "systemd-analyze verify failed ({}) with lines not about other units:\n{text}",
        out.status
    );

    // The same check on a copy with a typo must complain, or the check above proves nothing.
    let bad_dir = dir.join("bad");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let service = std::fs::read_to_string(&files[1]).unwrap();
    assert!(
        service.contains("\nType=notify\n"),
        "git.service no longer says Type=notify"
    );
    // Both from one directory: the named files' directories lead the unit search path
    // in order, so naming the installed git.socket would load the installed git.service.
    let bad = [bad_dir.join("git.socket"), bad_dir.join("git.service")];
    std::fs::copy(&files[0], &bad[0]).unwrap();
    std::fs::write(&bad[1], service.replace("Type=notify", "Type=notfiy")).unwrap();
    let out = analyze_verify(&home, &runtime, &bad);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !lines_about(&text, &ours).is_empty() || !out.status.success(),
        "systemd-analyze verify accepted Type=notfiy, so it cannot vouch for the real units:\n{text}"
    );
}

/// The idle-exit race at scale: a client connects at random moments around the idle
/// timeout, a few hundred times. Some connections land while gitd is exiting; they
/// must wait in the socket's backlog for the next instance, never be refused or
/// reset, and systemd's start and trigger limits must not trip.
#[test]
fn connections_around_the_idle_timeout_are_never_lost() {
    const TEST: &str = "connections_around_the_idle_timeout_are_never_lost";
    let Some(sd) = UserManager::start_or_skip(TEST) else {
        return;
    };
    let gitd_log = sd.state.join("gitd.log");
    let units = ["git.socket", "git.service"];
    let fail =
        |what: String| -> ! { panic!("{what}{}", sd.diagnose(&units, &[gitd_log.as_path()])) };
    let base = sd.home.join("git");
    std::fs::create_dir_all(&base).unwrap();
    let served = support::fixture(&base, "repo.git", 10);
    let main = support::git(&served, &["rev-parse", "main"])
        .trim()
        .to_string();
    sd.log_to("git.service", &gitd_log);
    let port = free_port();
    if let Err(e) = install_now(&sd, port, "0.3") {
        fail(e);
    }
    let work = support::scratch("systemd-race");
    let url = format!("git://127.0.0.1:{port}/repo.git");
    let mut invocations = std::collections::HashSet::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..250 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // 0 to 600 ms: before, around and after the 300 ms idle timeout.
        std::thread::sleep(Duration::from_millis(x % 600));
        if i % 25 == 0 {
            let name = format!("c{i}.git");
            if let Err(e) = mirror_and_check(&work, &url, &name) {
                fail(format!("clone {i}: {e}"));
            }
        } else {
            let out = support::git_bounded(
                &work,
                &["ls-remote", &url, "refs/heads/main"],
                Duration::from_secs(60),
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() || !stdout.contains(&main) {
                fail(format!(
                    "connection {i} failed: {}{stdout}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        invocations.insert(sd.show("git.service", "InvocationID"));
    }
    let socket = sd.show("git.socket", "ActiveState");
    if socket != "active" {
        fail(format!("git.socket is {socket} after the run"));
    }
    if invocations.len() < 20 {
        fail(format!(
            "only {} gitd instances ran: the idle exit was hardly exercised",
            invocations.len()
        ));
    }
}

/// The user unit's file-system sandbox, where the manager can set it up (here: a
/// manager running as root): gitd runs in a mount namespace of its own with the
/// system read-only, yet still serves clones and takes pushes below the base path
/// (`ReadWritePaths=`, which `gitd install` points at it).
#[test]
fn the_user_unit_sandbox_holds_and_pushes_still_land() {
    const TEST: &str = "the_user_unit_sandbox_holds_and_pushes_still_land";
    let Some(sd) = UserManager::start_or_skip(TEST) else {
        return;
    };
    let gitd_log = sd.state.join("gitd.log");
    let units = ["git.socket", "git.service"];
    let fail =
        |what: String| -> ! { panic!("{what}{}", sd.diagnose(&units, &[gitd_log.as_path()])) };
    let base = sd.home.join("git");
    std::fs::create_dir_all(&base).unwrap();
    let served = support::fixture(&base, "repo.git", 5);
    support::git(&served, &["config", "daemon.receivepack", "true"]);
    sd.log_to("git.service", &gitd_log);
    let port = free_port();
    if let Err(e) = install_now(&sd, port, "30") {
        fail(e);
    }
    let rw = sd.show("git.service", "ReadWritePaths");
    if !rw.contains(&base.display().to_string()) {
        fail(format!("ReadWritePaths={rw:?}, not the base path"));
    }
    let url = format!("git://127.0.0.1:{port}/repo.git");
    let work = support::scratch("systemd-sandbox");
    let wc = work.join("wc");
    let out = support::git_bounded(
        &work,
        &["clone", "-q", &url, wc.to_str().unwrap()],
        Duration::from_secs(120),
    );
    if !out.status.success() {
        fail(format!(
            "clone failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::write(wc.join("new.txt"), "new\n").unwrap();
    support::git(&wc, &["add", "new.txt"]);
    support::git(&wc, &["commit", "-q", "-m", "pushed through the sandbox"]);
    let out = support::git_bounded(
        &wc,
        &["push", "-q", &url, "HEAD:refs/heads/pushed"],
        Duration::from_secs(60),
    );
    if !out.status.success() {
        fail(format!(
            "push failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    assert_eq!(
        support::rev(&served, "refs/heads/pushed"),
        support::rev(&wc, "HEAD")
    );

    // Type=notify still works from inside the sandbox: READY=1 reached the manager.
    let state = sd.show("git.service", "ActiveState");
    if state != "active" {
        fail(format!(
            "git.service is {state:?} while serving, not active"
        ));
    }
    // The sandbox is real: another mount namespace, `/` read-only, the base path
    // writable.
    let pid = sd.show("git.service", "ExecMainPID");
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    if pid == "0" || ns(&pid) == ns(&sd.pid().to_string()) {
        fail(format!(
            "gitd (pid {pid}) shares the manager's mount namespace"
        ));
    }
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let options_of = |point: &str| {
        mountinfo
            .lines()
            .rev()
            .find(|l| l.split(' ').nth(4) == Some(point))
            .and_then(|l| l.split(' ').nth(5))
            .map(str::to_owned)
    };
    let root = options_of("/");
    if !root
        .as_deref()
        .is_some_and(|o| o.split(',').any(|x| x == "ro"))
    {
        fail(format!("/ is mounted {root:?} for gitd"));
    }
    let base_opts = options_of(&base.display().to_string());
    if !base_opts
        .as_deref()
        .is_some_and(|o| o.split(',').any(|x| x == "rw"))
    {
        fail(format!("the base path is mounted {base_opts:?} for gitd"));
    }
}
