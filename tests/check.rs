//! `gitd check`, the manual page and shell completions.

mod support;

use std::process::Command;

use support::{fixture, git, scratch};

fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(support::GITD)
        .arg("check")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn line<'a>(out: &'a str, path: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(path))
        .unwrap_or_else(|| panic!("no line for {path}:\n{out}"))
}

#[test]
fn check_reports_what_would_be_served_and_why_not() {
    let dir = scratch("check");
    let base = dir.join("base");
    std::fs::create_dir_all(base.join("group/sub")).unwrap();
    fixture(&base, "plain.git", 3);
    let fast = fixture(&base, "fast.git", 3);
    git(&fast, &["repack", "-adbq"]);
    git(&fast, &["commit-graph", "write", "--reachable"]);
    fixture(&base.join("group/sub"), "nested.git", 2);
    let private = fixture(&base, "private.git", 2);
    std::fs::remove_file(private.join("git-daemon-export-ok")).unwrap();
    let s256 = base.join("s256.git");
    git(
        &dir,
        &[
            "init",
            "-q",
            "--bare",
            "--object-format=sha256",
            s256.to_str().unwrap(),
        ],
    );
    std::fs::write(s256.join("git-daemon-export-ok"), "").unwrap();
    let outside = fixture(&dir, "outside.git", 2);
    std::os::unix::fs::symlink(&outside, base.join("link.git")).unwrap();
    std::fs::create_dir_all(base.join("not-a-repo/docs")).unwrap();

    let b = format!("--base-path={}", base.display());
    let (code, out) = check(&[&b]);
    assert_eq!(code, 0, "{out}");
    assert!(
        line(&out, "/plain.git").starts_with("served")
            && line(&out, "/plain.git").contains("bitmaps: no")
    );
    assert!(
        line(&out, "/plain.git").contains("repack -adb"),
        "a suggestion for faster clones"
    );
    let fast_line = line(&out, "/fast.git");
    assert!(
        fast_line.contains("bitmaps: yes")
            && fast_line.contains("commit-graph: yes")
            && !fast_line.contains("repack"),
        "{fast_line}"
    );
    assert!(line(&out, "/group/sub/nested.git").starts_with("served"));
    assert!(line(&out, "/private.git").contains("not exported"));
    assert!(line(&out, "/s256.git").contains("sha256"));
    assert!(line(&out, "/link.git").contains("symbolic link"));
    assert!(!out.contains("not-a-repo"));
    // The same decisions as the server: --export-all serves the private one.
    let (_, out) = check(&[&b, "--export-all"]);
    assert!(line(&out, "/private.git").starts_with("served"));

    // A broken repository is a problem: non-zero, so ExecStartPre= would stop.
    let broken = fixture(&base, "broken.git", 2);
    std::fs::write(broken.join("HEAD"), "garbage\n").unwrap();
    std::fs::write(broken.join("config"), "[core\nnot valid").unwrap();
    let (code, out) = check(&[&b]);
    assert_eq!(code, 1, "{out}");
    assert!(line(&out, "/broken.git").starts_with("PROBLEM"), "{out}");
    // A missing base path too.
    let (code, out) = check(&[&format!("--base-path={}", dir.join("nope").display())]);
    assert_eq!(code, 1, "{out}");
}

/// Layouts gitd does not use or serve are reported as such: a multi-pack-index
/// bitmap is not "bitmaps: yes", and a reftable repository is skipped, and refused
/// with an `ERR` naming why when a client asks for it.
#[test]
fn check_reports_only_what_gitd_uses() {
    let dir = scratch("check-layouts");
    let base = dir.join("base");
    std::fs::create_dir_all(&base).unwrap();
    let midx = fixture(&base, "midx.git", 3);
    git(&midx, &["repack", "-adq", "--write-midx", "-b"]);
    let pack_dir = std::fs::read_dir(midx.join("objects/pack")).unwrap();
    let names: Vec<String> = pack_dir
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("multi-pack-index-") && n.ends_with(".bitmap")),
        "{names:?}"
    );
    let reftable = base.join("reftable.git");
    let r = reftable.to_str().unwrap();
    git(&dir, &["init", "-q", "--bare", "--ref-format=reftable", r]);
    git(
        &dir,
        &[
            "--git-dir",
            r,
            "fetch",
            "-q",
            midx.to_str().unwrap(),
            "main:main",
        ],
    );
    std::fs::write(reftable.join("git-daemon-export-ok"), "").unwrap();

    let b = format!("--base-path={}", base.display());
    let (code, out) = check(&[&b]);
    assert_eq!(code, 0, "{out}");
    let midx_line = line(&out, "/midx.git");
    assert!(
        midx_line.starts_with("served") && midx_line.contains("bitmaps: no"),
        "{midx_line}"
    );
    let reftable_line = line(&out, "/reftable.git");
    assert!(
        reftable_line.starts_with("skipped") && reftable_line.contains("reftable"),
        "{reftable_line}"
    );

    // A client is told the same thing, in an ERR before any advertisement.
    let gitd = support::Gitd::start(&dir, &[&b]);
    for version in ["0", "2"] {
        let out = support::git_output(
            &dir,
            &[
                "-c",
                &format!("protocol.version={version}"),
                "ls-remote",
                &gitd.url("/reftable.git"),
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "v{version}: {stderr}");
        assert!(
            stderr.contains("keeps its refs in reftable storage, which gitd does not read"),
            "v{version}: {stderr}"
        );
    }
}

#[test]
fn manual_page_and_completions() {
    let man = Command::new(support::GITD).arg("man").output().unwrap();
    let man = String::from_utf8(man.stdout).unwrap();
    assert!(man.contains(".TH gitd 1"));
    for flag in [
        "base\\-path",
        "interpolated\\-path",
        "idle\\-timeout",
        "access\\-hook",
    ] {
        assert!(man.contains(flag), "the manual documents --{flag}");
    }
    for (shell, marker) in [
        ("bash", "_gitd()"),
        ("zsh", "#compdef gitd"),
        ("fish", "complete -c gitd"),
    ] {
        let out = Command::new(support::GITD)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(marker),
            "{shell}"
        );
    }
    // gitd install puts them where man and the shells look.
    let home = scratch("docs-home");
    let out = Command::new(support::GITD)
        .args(["install", "--user"])
        .env("HOME", &home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env("XDG_RUNTIME_DIR", home.join("no-manager"))
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        ".local/share/man/man1/gitd.1",
        ".local/share/bash-completion/completions/gitd",
        ".local/share/zsh/site-functions/_gitd",
        ".config/fish/completions/gitd.fish",
    ] {
        assert!(home.join(file).is_file(), "{file} installed");
    }
    let man_out = Command::new("man")
        .arg("--local-file")
        .arg(home.join(".local/share/man/man1/gitd.1"))
        .env("MANPAGER", "cat")
        .output();
    if let Ok(out) = man_out
        && out.status.success()
    {
        assert!(String::from_utf8_lossy(&out.stdout).contains("base-path"));
    }
}
