//! git daemon's path rules, seen through the real `git` client.

mod support;

use std::path::Path;

use support::{Gitd, fixture, git, git_output, scratch};

fn clone_error(dir: &Path, url: &str) -> String {
    let dest = dir.join(format!("fail-{}", url.len()));
    let out = git_output(dir, &["clone", "-q", url, dest.to_str().unwrap()]);
    assert!(!out.status.success(), "clone of {url} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn clone_ok(dir: &Path, url: &str, name: &str) {
    let dest = dir.join(name);
    let out = git_output(dir, &["clone", "-q", "--bare", url, dest.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "clone of {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn export_ok_is_required_and_errors_are_generic_by_default() {
    let dir = scratch("export");
    fixture(&dir, "public.git", 3);
    let private = fixture(&dir, "private.git", 3);
    std::fs::remove_file(private.join("git-daemon-export-ok")).unwrap();
    let base = format!("--base-path={}", dir.display());
    let gitd = Gitd::start(&dir, &[&base]);
    clone_ok(&dir, &gitd.url("/public.git"), "a");
    let err = clone_error(&dir, &gitd.url("/private.git"));
    assert!(
        err.contains("remote error: access denied or repository not exported: /private.git"),
        "{err}"
    );
    let err = clone_error(&dir, &gitd.url("/missing.git"));
    assert!(
        err.contains("access denied or repository not exported: /missing.git"),
        "{err}"
    );
    drop(gitd);

    let gitd = Gitd::start(&dir, &[&base, "--informative-errors"]);
    assert!(
        clone_error(&dir, &gitd.url("/private.git"))
            .contains("remote error: repository not exported: /private.git")
    );
    assert!(
        clone_error(&dir, &gitd.url("/missing.git"))
            .contains("remote error: no such repository: /missing.git")
    );
    let out = git_output(
        &dir,
        &["archive", "--remote", &gitd.url("/public.git"), "HEAD"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("service not enabled: /public.git"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(gitd);

    let gitd = Gitd::start(&dir, &[&base, "--export-all"]);
    clone_ok(&dir, &gitd.url("/private.git"), "b");
}

#[test]
fn suffixes_are_tried_in_git_daemon_order() {
    let dir = scratch("suffix");
    fixture(&dir, "bare.git", 3);
    // A non-bare repository: its .git directory is served.
    let work = dir.join("work");
    git(&dir, &["init", "-q", "-b", "main", work.to_str().unwrap()]);
    std::fs::write(work.join("f"), "x").unwrap();
    git(&work, &["add", "f"]);
    git(&work, &["commit", "-q", "-m", "c"]);
    std::fs::write(work.join(".git/git-daemon-export-ok"), "").unwrap();
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    clone_ok(&dir, &gitd.url("/bare"), "c1");
    clone_ok(&dir, &gitd.url("/bare.git"), "c2");
    clone_ok(&dir, &gitd.url("/bare.git/"), "c3");
    clone_ok(&dir, &gitd.url("/work"), "c4");
    let head = git(&dir.join("c4"), &["rev-parse", "HEAD"]);
    assert_eq!(head, git(&work, &["rev-parse", "HEAD"]));
    drop(gitd);

    // --strict-paths: only the exact path, and only whitelisted ones.
    let gitd = Gitd::start(
        &dir,
        &[
            &format!("--base-path={}", dir.display()),
            "--strict-paths",
            dir.join("bare.git").to_str().unwrap(),
        ],
    );
    clone_ok(&dir, &gitd.url("/bare.git"), "c5");
    assert!(clone_error(&dir, &gitd.url("/bare")).contains("access denied"));
}

#[test]
fn whitelist_and_absolute_paths_without_base_path() {
    let dir = scratch("whitelist");
    std::fs::create_dir_all(dir.join("pub")).unwrap();
    std::fs::create_dir_all(dir.join("priv")).unwrap();
    fixture(&dir.join("pub"), "a.git", 3);
    fixture(&dir.join("priv"), "b.git", 3);
    // No --base-path: paths are absolute, and the whitelist restricts them.
    let gitd = Gitd::start(&dir, &[dir.join("pub").to_str().unwrap()]);
    clone_ok(
        &dir,
        &gitd.url(&format!("{}/pub/a.git", dir.display())),
        "a",
    );
    assert!(
        clone_error(&dir, &gitd.url(&format!("{}/priv/b.git", dir.display())))
            .contains("access denied")
    );
}
