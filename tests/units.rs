//! The shipped units: `systemd-analyze` accepts them, and their exposure scores do
//! not regress (the README records them).

mod support;

use std::path::Path;
use std::process::Command;

use support::scratch;

/// Scores recorded in the README; lower is better.
const USER_EXPOSURE: f64 = 5.1;
const SYSTEM_EXPOSURE: f64 = 1.5;

fn tool_present() -> bool {
    let present = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present && std::env::var("GITD_REQUIRE_SYSTEMD").as_deref() == Ok("1") {
        panic!("systemd-analyze is required here (GITD_REQUIRE_SYSTEMD=1)");
    }
    present
}

/// Copy a unit, pointing ExecStart= at the gitd under test.
fn copy_unit(from: &str, to: &Path) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(from)).unwrap();
    let text: String = text
        .lines()
        .map(|l| match l.strip_prefix("ExecStart=") {
            Some(rest) => format!(
                "ExecStart={} {}\n",
                support::GITD,
                rest.split_once(' ').map_or("", |(_, args)| args)
            ),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(to, text).unwrap();
}

/// `Overall exposure level for X: 6.4 MEDIUM` → 6.4
fn exposure(out: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no score in:\n{out}"));
    line.split(": ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn user_unit_exposure_does_not_regress() {
    if !tool_present() {
        eprintln!("skipping: no systemd-analyze");
        return;
    }
    let dir = scratch("units-user");
    let units = dir.join("home/.config/systemd/user");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::create_dir_all(dir.join("run")).unwrap();
    copy_unit("units/git.socket", &units.join("git.socket"));
    copy_unit("units/git.service", &units.join("git.service"));
    let out = Command::new("systemd-analyze")
        .args(["security", "--user", "--offline=yes"])
        .arg(units.join("git.service"))
        .env("HOME", dir.join("home"))
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score = exposure(&text);
    assert!(
        score <= USER_EXPOSURE,
        "git.service exposure rose to {score} (recorded {USER_EXPOSURE}):\n{text}"
    );
}

#[test]
fn system_units_verify_and_exposure_does_not_regress() {
    if !tool_present() {
        eprintln!("skipping: no systemd-analyze");
        return;
    }
    let dir = scratch("units-system");
    copy_unit("units/system/git.socket", &dir.join("git.socket"));
    copy_unit("units/system/git.service", &dir.join("git.service"));
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.join("git.socket"))
        .arg(dir.join("git.service"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&verify.stderr).contains("git."),
        "verify complains about our units: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(dir.join("git.service"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score = exposure(&text);
    assert!(
        score <= SYSTEM_EXPOSURE,
        "system git.service exposure rose to {score} (recorded {SYSTEM_EXPOSURE}):\n{text}"
    );
    assert!(text.contains("DynamicUser="), "{text}");
}
