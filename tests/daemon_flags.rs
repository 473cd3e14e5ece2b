//! git daemon's flags, each tried with the real `git` client (or raw requests where
//! git would not send them).

mod support;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{
    Gitd, KillOnDrop, Raw, fixture, git, git_cmd, git_output, refs_of, rev, scratch, wait_until,
};

/// `git ls-remote` through a virtual host name.
fn ls_remote_as(dir: &Path, url: &str, vhost: &str) -> std::process::Output {
    git_cmd(dir)
        .env("GIT_OVERRIDE_VIRTUAL_HOST", vhost)
        .args(["ls-remote", url])
        .output()
        .unwrap()
}

#[test]
fn interpolated_path_serves_virtual_hosts() {
    let dir = scratch("vhost");
    let vhosts = dir.join("vhosts");
    std::fs::create_dir_all(vhosts.join("a.example")).unwrap();
    std::fs::create_dir_all(vhosts.join("b.example")).unwrap();
    let a = fixture(&vhosts.join("a.example"), "repo.git", 5);
    let b = fixture(&vhosts.join("b.example"), "repo.git", 9);
    // Outside the virtual host tree: must never be reachable through a host name.
    std::fs::create_dir_all(dir.join("secret")).unwrap();
    fixture(&dir.join("secret"), "repo.git", 2);
    let gitd = Gitd::start(
        &dir,
        &[
            &format!("--interpolated-path={}/%H%D", vhosts.display()),
            "--informative-errors",
        ],
    );
    let url = gitd.url("/repo.git");
    // Host names are lower-cased, the port dropped, "/" and leading dots removed.
    for (host, repo) in [
        ("a.example", &a),
        ("B.EXAMPLE:9418", &b),
        ("../b.example", &b),
    ] {
        let out = ls_remote_as(&dir, &url, host);
        assert!(
            out.status.success(),
            "{host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&rev(repo, "main")),
            "{host}"
        );
    }
    // A clone through a virtual host.
    let dest = dir.join("clone-b.git");
    let out = git_cmd(&dir)
        .env("GIT_OVERRIDE_VIRTUAL_HOST", "b.example")
        .args(["clone", "-q", "--mirror", &url, dest.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(refs_of(&dest, "refs/"), refs_of(&b, "refs/"));
    for host in ["..", "../secret", "..:9418", "/../secret", "c.example", ""] {
        let out = ls_remote_as(&dir, &url, host);
        assert!(!out.status.success(), "host {host:?} must not be served");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no such repository"),
            "{host:?}"
        );
    }
    // A newline before host= is dropped, as git daemon drops it.
    let mut raw = Raw::connect(gitd.port);
    raw.send_pkt(b"git-upload-pack /repo.git\n\0host=a.example\0");
    assert!(raw.read().text().starts_with(&rev(&a, "HEAD")));
}

#[test]
fn interpolation_placeholders() {
    let dir = scratch("placeholders");
    // %IP of "localhost", the port and a literal %.
    let target = dir.join("127.0.0.1").join("p9999%");
    std::fs::create_dir_all(&target).unwrap();
    let repo = fixture(&target, "r.git", 3);
    let gitd = Gitd::start(
        &dir,
        &[&format!(
            "--interpolated-path={}/%IP/p%P%%%D",
            dir.display()
        )],
    );
    let out = ls_remote_as(&dir, &gitd.url("/r.git"), "localhost:9999");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&rev(&repo, "main")));
}

#[test]
fn user_path_serves_home_directories() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 || !Path::new("/root").is_dir() {
        eprintln!("skipping: needs root's home directory");
        return;
    }
    let sub = format!(".gitd-test-{}", std::process::id());
    let home_dir = Path::new("/root").join(&sub);
    std::fs::create_dir_all(&home_dir).unwrap();
    let repo = fixture(&home_dir, "mine.git", 3);
    let main = rev(&repo, "main");
    let dir = scratch("user-path");
    let gitd = Gitd::start(&dir, &[&format!("--user-path={sub}")]);
    let ok = git_output(&dir, &["ls-remote", &gitd.url("/~root/mine.git")]);
    let without = Gitd::start(&dir, &[]);
    let refused = git_output(&dir, &["ls-remote", &without.url("/~root/mine.git")]);
    let strict = Gitd::start(
        &dir,
        &[&format!("--user-path={sub}"), "--strict-paths", "/"],
    );
    let strict_out = git_output(&dir, &["ls-remote", &strict.url("/~root/mine.git")]);
    std::fs::remove_dir_all(&home_dir).unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains(&main));
    assert!(!refused.status.success(), "~user paths need --user-path");
    assert!(
        !strict_out.status.success(),
        "--strict-paths does no user-relative paths"
    );
}

#[test]
fn access_hook_decides_and_explains() {
    let dir = scratch("hook");
    fixture(&dir, "open.git", 3);
    fixture(&dir, "closed.git", 3);
    let log = dir.join("hook.log");
    let hook = dir.join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$@ $REMOTE_ADDR $REMOTE_PORT\" >> {}\ncase \"$2\" in *closed*) echo '  go away'; echo second line; exit 1;; esac\nexit 0\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let base = format!("--base-path={}", dir.display());
    let access = format!("--access-hook={}", hook.display());
    let gitd = Gitd::start(&dir, &[&base, &access]);
    let first_port = gitd.port;
    let ok = git_output(&dir, &["ls-remote", &gitd.url("/open.git")]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let denied = git_output(&dir, &["ls-remote", &gitd.url("/closed.git")]);
    assert!(
        String::from_utf8_lossy(&denied.stderr)
            .contains("access denied or repository not exported: /closed.git")
    );
    drop(gitd);
    let gitd = Gitd::start(&dir, &[&base, &access, "--informative-errors"]);
    let denied = git_output(&dir, &["ls-remote", &gitd.url("/closed.git")]);
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("remote error: go away: /closed.git"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    let first = calls.lines().next().unwrap();
    let words: Vec<&str> = first.split(' ').collect();
    // service path host canonical-host ip port REMOTE_ADDR REMOTE_PORT
    assert_eq!(words[0], "upload-pack", "{first}");
    assert_eq!(words[1], dir.join("open.git").to_str().unwrap());
    assert_eq!(words[2], "127.0.0.1");
    assert_eq!(words[4], "127.0.0.1");
    assert_eq!(words[5], first_port.to_string());
    assert_eq!(words[6], "127.0.0.1");
    assert!(words[7].parse::<u16>().is_ok(), "{first}");
}

#[test]
fn service_switches_and_repository_overrides() {
    let dir = scratch("services");
    let repo = fixture(&dir, "repo.git", 3);
    let base = format!("--base-path={}", dir.display());
    let url_ok = |gitd: &Gitd| git_output(&dir, &["ls-remote", &gitd.url("/repo.git")]);
    let err = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // The repository turns upload-pack off.
    git(&repo, &["config", "daemon.uploadpack", "false"]);
    let gitd = Gitd::start(&dir, &[&base, "--informative-errors"]);
    assert!(err(&url_ok(&gitd)).contains("service not enabled: /repo.git"));
    drop(gitd);
    // ... unless overriding is forbidden.
    let gitd = Gitd::start(&dir, &[&base, "--forbid-override=upload-pack"]);
    assert!(url_ok(&gitd).status.success());
    drop(gitd);
    // Disabled site-wide, the repository can turn it back on ...
    git(&repo, &["config", "daemon.uploadpack", "true"]);
    let gitd = Gitd::start(&dir, &[&base, "--disable=upload-pack"]);
    assert!(url_ok(&gitd).status.success());
    drop(gitd);
    // ... unless it may not; the last word on the command line wins.
    let gitd = Gitd::start(
        &dir,
        &[
            &base,
            "--informative-errors",
            "--disable=upload-pack",
            "--allow-override=upload-pack",
            "--forbid-override=upload-pack",
        ],
    );
    assert!(err(&url_ok(&gitd)).contains("service not enabled"));
    drop(gitd);
    let gitd = Gitd::start(
        &dir,
        &[
            &base,
            "--disable=upload-pack",
            "--enable=upload-pack",
            "--forbid-override=upload-pack",
        ],
    );
    assert!(url_ok(&gitd).status.success());
    drop(gitd);
    // receive-pack is off by default.
    let gitd = Gitd::start(&dir, &[&base, "--informative-errors"]);
    let push = git_output(
        &repo,
        &["push", &gitd.url("/repo.git"), "main:refs/heads/pushed"],
    );
    assert!(
        err(&push).contains("service not enabled: /repo.git"),
        "{}",
        err(&push)
    );
}

#[test]
fn one_address_cannot_take_every_slot() {
    let dir = scratch("fair");
    fixture(&dir, "repo.git", 3);
    let gitd = Gitd::start(
        &dir,
        &[
            &format!("--base-path={}", dir.display()),
            "--max-connections=2",
        ],
    );
    let hello = support::pkt(b"git-upload-pack /repo.git\0host=localhost\0\0version=2\0");
    let hog: Vec<Raw> = (0..2)
        .map(|_| {
            let mut r = Raw {
                stream: support::connect_from(Ipv4Addr::new(127, 0, 0, 1), gitd.port),
            };
            r.stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            r.send(&hello);
            assert_eq!(r.read().text(), "version 2");
            r
        })
        .collect();
    // Another address gets in: one of the hog's connections is dropped for it.
    let mut other = Raw {
        stream: support::connect_from(Ipv4Addr::new(127, 0, 0, 2), gitd.port),
    };
    other
        .stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    other.send(&hello);
    assert_eq!(other.read().text(), "version 2");
    let mut dropped = 0;
    for mut r in hog {
        r.read_until_flush();
        dropped += r.is_closed() as usize;
    }
    assert_eq!(
        dropped, 1,
        "exactly the newest connection of the busy address is dropped"
    );
}

#[test]
fn inetd_mode_under_systemd_socket_activate() {
    if Command::new("systemd-socket-activate")
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!("skipping: systemd-socket-activate is not installed");
        return;
    }
    let dir = scratch("inetd");
    let repo = fixture(&dir, "repo.git", 5);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("systemd-socket-activate")
        .args([
            "--inetd",
            "-a",
            "-l",
            &format!("127.0.0.1:{port}"),
            support::GITD,
            "--inetd",
            &format!("--base-path={}", dir.display()),
            "--log-destination=stderr",
            "--verbose",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("inetd.log")).unwrap())
        .spawn()
        .unwrap();
    let _child = KillOnDrop(child);
    let url = format!("git://127.0.0.1:{port}/repo.git");
    assert!(wait_until(Duration::from_secs(10), || git_output(
        &dir,
        &["ls-remote", &url]
    )
    .status
    .success()));
    for v in ["0", "2"] {
        let dest = dir.join(format!("c{v}.git"));
        git(
            &dir,
            &[
                "-c",
                &format!("protocol.version={v}"),
                "clone",
                "-q",
                "--mirror",
                &url,
                dest.to_str().unwrap(),
            ],
        );
        assert_eq!(refs_of(&dest, "refs/"), refs_of(&repo, "refs/"));
    }
    let log = std::fs::read_to_string(dir.join("inetd.log")).unwrap();
    assert!(
        log.matches("request").count() >= 3,
        "one process per connection, each logging its request:\n{log}"
    );
}

#[test]
fn pid_file_log_destination_and_relaxed_base_path() {
    let dir = scratch("misc");
    let elsewhere = scratch("misc-elsewhere");
    let repo = fixture(&elsewhere, "abs.git", 3);
    let pid_file = dir.join("gitd.pid");
    let gitd = Gitd::start(
        &dir,
        &[
            &format!("--base-path={}", dir.display()),
            "--base-path-relaxed",
            &format!("--pid-file={}", pid_file.display()),
            "--log-destination=none",
            "--reuseaddr",
        ],
    );
    assert!(wait_until(Duration::from_secs(5), || pid_file.exists()));
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        gitd.child.id().to_string()
    );
    let out = git(&dir, &["ls-remote", &gitd.url(repo.to_str().unwrap())]);
    assert!(
        out.contains(&rev(&repo, "main")),
        "--base-path-relaxed falls back to the absolute path"
    );
    assert_eq!(gitd.logs(), "", "--log-destination=none logs nothing");
}

#[test]
fn user_switch_drops_root() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipping: needs root");
        return;
    }
    let dir = scratch("setuid");
    let repo = fixture(&dir, "repo.git", 3);
    let gitd = Gitd::start(
        &dir,
        &[&format!("--base-path={}", dir.display()), "--user=nobody"],
    );
    let out = git(&dir, &["ls-remote", &gitd.url("/repo.git")]);
    assert!(out.contains(&rev(&repo, "main")));
    let status = std::fs::read_to_string(format!("/proc/{}/status", gitd.child.id())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid_line}"
    );
}

#[test]
fn invalid_flags_exit_with_status_2() {
    let dir = scratch("invalid");
    for args in [
        &["--max-connections=-1"][..],
        &["--timeout=abc"],
        &["--init-timeout=-5"],
        &["--port=70000"],
        &["--enable=frobnicate"],
        &["--detach"],
        &["--strict-paths"],
        &["--inetd", "--port=1234"],
        &["--inetd", "--listen=127.0.0.1"],
        &["--group=root"],
        &["--log-destination=printer"],
    ] {
        let out = Command::new(support::GITD)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "{args:?} explains itself");
    }
}

#[test]
fn repositories_owned_by_another_user_are_served() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipping: needs root to give a repository away");
        return;
    }
    let dir = scratch("other-owner");
    let repo = fixture(&dir, "theirs.git", 5);
    let status = Command::new("chown")
        .args(["-R", "65534:65534", repo.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    // git itself refuses such a repository unless safe.directory allows it ...
    let local = git_output(&dir, &["ls-remote", repo.to_str().unwrap()]);
    assert!(
        !local.status.success(),
        "git's ownership check applies locally"
    );
    // ... gitd only reads it, and serves it.
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    let dest = dir.join("clone.git");
    git(
        &dir,
        &[
            "clone",
            "-q",
            "--mirror",
            &gitd.url("/theirs.git"),
            dest.to_str().unwrap(),
        ],
    );
    let refs = |r: &Path| {
        git_cmd(r)
            .args(["-c", "safe.directory=*", "for-each-ref"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap()
    };
    assert_eq!(refs(&dest), refs(&repo));
}

/// A flag given twice takes its last value, as in git daemon: a drop-in appending
/// `--idle-timeout=1` to the shipped `--idle-timeout=60` makes gitd idle out in 1s,
/// and a repeated switch is not an error.
#[test]
fn a_flag_given_twice_takes_the_last_value() {
    let dir = scratch("twice");
    fixture(&dir, "repo.git", 2);
    let mut gitd = Gitd::start(
        &dir,
        &[
            &format!("--base-path={}", dir.display()),
            "--idle-timeout=60",
            "--export-all",
            "--export-all",
            "--idle-timeout=1",
        ],
    );
    let status = gitd.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "gitd did not idle out after the last --idle-timeout: {status:?}\n{}",
        gitd.logs()
    );
    assert!(
        gitd.logs().contains("idle exit after 1s"),
        "{}",
        gitd.logs()
    );
}

/// Requests are logged at INFO only with `--verbose`, as git daemon logs them;
/// failures always.
#[test]
fn successful_requests_are_logged_only_with_verbose() {
    let dir = scratch("quiet-log");
    let repo = fixture(&dir, "repo.git", 2);
    let base = format!("--base-path={}", dir.display());
    let quiet = Gitd::start_quiet(&dir, &[&base]);
    git(&dir, &["ls-remote", &quiet.url("/repo.git")]);
    assert!(
        !git_output(&dir, &["ls-remote", &quiet.url("/nope.git")])
            .status
            .success()
    );
    // The failure is logged once its connection is over (after a short drain).
    assert!(
        wait_until(Duration::from_secs(5), || quiet
            .logs()
            .contains("repo=\"/nope.git\"")),
        "a failure is always logged:\n{}",
        quiet.logs()
    );
    let logs = quiet.logs();
    assert!(
        !logs.contains("outcome=\"ok\""),
        "a successful request was logged without --verbose:\n{logs}"
    );

    let verbose = Gitd::start_quiet(&dir, &[&base, "--verbose"]);
    let out = git(&dir, &["ls-remote", &verbose.url("/repo.git")]);
    assert!(out.contains(&rev(&repo, "main")));
    assert!(
        wait_until(Duration::from_secs(5), || verbose
            .logs()
            .lines()
            .any(|l| l.contains(" INFO ") && l.contains("repo=\"/repo.git\""))),
        "no INFO line for the request with --verbose:\n{}",
        verbose.logs()
    );
}
