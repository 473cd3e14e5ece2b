//! Request logs reach a real journal with structured `GITD_*` fields, so
//! `journalctl GITD_REPO=/repo.git` finds a repository's requests.
//!
//! systemd-journald runs for the test in a private mount namespace (a private `/run`
//! holding its sockets, its journal directory bound to a scratch directory), and gitd
//! runs next to it, logging with `--log-destination=syslog`.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{KillOnDrop, fixture, git, scratch, wait_until};

const JOURNALD: &str = "/usr/lib/systemd/systemd-journald";

/// Runs inside `unshare -m`: `$1` scratch dir, `$2` gitd, `$3..` gitd's arguments.
const INNER: &str = r#"
set -eu
D=$1; shift; GITD=$1; shift
mount -t tmpfs -o mode=755 gitd-test-run /run
mkdir -p /run/systemd/journal /run/log/journal
mount --bind "$D/journal" /run/log/journal
"$JOURNALD" > "$D/journald.out" 2>&1 &
J=$!
i=0
until [ -S /run/systemd/journal/socket ]; do i=$((i+1)); [ $i -lt 100 ] || exit 3; sleep 0.05; done
"$GITD" "$@" 2> "$D/gitd.err" &
G=$!
echo $G > "$D/gitd.pid"
# Until the test removes this file, keep gitd and journald running.
while [ -e "$D/running" ]; do sleep 0.05; done
kill $G; wait $G || true
sleep 0.3
kill $J; wait $J || true
"#;

fn skip_or_fail(why: &str) {
    if std::env::var("GITD_REQUIRE_SYSTEMD").as_deref() == Ok("1") {
        panic!("cannot run journald here: {why}");
    }
    eprintln!("skipping: {why}");
}

#[test]
fn request_fields_are_in_the_journal() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return skip_or_fail("needs root for a mount namespace");
    }
    if !Path::new(JOURNALD).exists()
        || Command::new("journalctl")
            .arg("--version")
            .output()
            .is_err()
    {
        return skip_or_fail("systemd-journald or journalctl is missing");
    }
    let dir = scratch("journal");
    let repo = fixture(&dir, "repo.git", 5);
    std::fs::create_dir_all(dir.join("journal")).unwrap();
    std::fs::write(dir.join("running"), "").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", INNER, "inner"])
        .arg(&dir)
        .arg(support::GITD)
        .args([
            "--log-destination=syslog",
            "--verbose",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={}", dir.display()),
        ])
        .env("JOURNALD", JOURNALD)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    let url = format!("git://127.0.0.1:{port}/repo.git");
    let served = wait_until(Duration::from_secs(20), || {
        support::git_output(&dir, &["ls-remote", &url])
            .status
            .success()
    });
    let dest = dir.join("clone.git");
    if served {
        git(
            &dir,
            &["clone", "-q", "--mirror", &url, dest.to_str().unwrap()],
        );
    }
    std::fs::remove_file(dir.join("running")).unwrap();
    let mut child = child;
    wait_until(Duration::from_secs(20), || {
        child.0.try_wait().is_ok_and(|s| s.is_some())
    });
    assert!(
        served,
        "gitd did not serve; {}",
        std::fs::read_to_string(dir.join("gitd.err")).unwrap_or_default()
    );

    let out = Command::new("journalctl")
        .arg("-D")
        .arg(dir.join("journal"))
        .args([
            "-o",
            "json",
            "GITD_REPO=/repo.git",
            "GITD_SERVICE=upload-pack",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let clone_line = text
        .lines()
        .find(|l| l.contains("\"GITD_OBJECTS\"") && !l.contains("\"GITD_OBJECTS\":\"0\""))
        .unwrap_or_else(|| panic!("no clone request in the journal:\n{text}"));
    for field in [
        "GITD_PEER",
        "GITD_PROTOCOL",
        "GITD_BYTES",
        "GITD_DURATION_MS",
        "GITD_OUTCOME",
        "SYSLOG_IDENTIFIER",
    ] {
        assert!(
            clone_line.contains(&format!("\"{field}\"")),
            "{field} missing: {clone_line}"
        );
    }
    assert!(
        clone_line.contains("\"GITD_OUTCOME\":\"ok\""),
        "{clone_line}"
    );
    assert!(
        clone_line.contains("\"GITD_PROTOCOL\":\"2\""),
        "{clone_line}"
    );
    assert!(
        clone_line.contains("\"SYSLOG_IDENTIFIER\":\"gitd\""),
        "{clone_line}"
    );
    assert_eq!(
        support::refs_of(&dest, "refs/"),
        support::refs_of(&repo, "refs/")
    );
}
