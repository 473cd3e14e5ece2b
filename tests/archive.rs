//! `git archive --remote=git://…` against gitd, compared with `git archive` run in the
//! same repository (the oracle): tar, tgz and zip must come out byte for byte.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use support::{Gitd, Raw, Reply, git, git_bounded, git_cmd, pkt, rev, scratch};

const LIMIT: Duration = Duration::from_secs(60);

/// A bare repository with what archives treat specially: an executable, symbolic
/// links (one with a target over 100 bytes), a path over 100 bytes, a non-ASCII
/// name, end-of-line and `ident` conversion, `export-ignore` on a file and on a
/// directory, a directory whose only file is ignored, a `-diff` text file (zip's
/// text flag), a binary file, files with a UTF-16, UTF-32 and Latin-1
/// `working-tree-encoding`, and an annotated tag `v1` on the first commit.
fn archive_repo(dir: &Path) -> PathBuf {
    let w = dir.join("work");
    std::fs::create_dir_all(&w).unwrap();
    git(&w, &["init", "-q", "-b", "main"]);
    let write = |path: &str, content: &[u8]| {
        let p = w.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    };
    write("README", b"readme\n");
    write(
        "src/lib/code.c",
        &b"int main(void) { return 0; }\n".repeat(300),
    );
    write("src/notes.txt", b"one\ntwo\n");
    let bin: Vec<u8> = (0..40_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    write("data/blob.bin", &bin);
    write("run.sh", b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(
        w.join("run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("README", w.join("link")).unwrap();
    std::os::unix::fs::symlink("t".repeat(150), w.join("longlink")).unwrap();
    let long = format!("{}/{}/{}", "l".repeat(80), "m".repeat(80), "n".repeat(120));
    write(&long, b"deep\n");
    write("naïve.txt", "café\n".as_bytes());
    write("id.txt", b"version $Id$ here\n");
    write("crlf.txt", b"a\nb\n");
    write("plain.txt", &b"text nobody diffs\n".repeat(50));
    write("secret.txt", b"not for archives\n");
    write("private/key", b"not for archives\n");
    write("hollow/ignored", b"not for archives\n");
    // In the work tree in their encodings; git stores them as UTF-8.
    let text = "h\u{e9}llo \u{1f600}\n";
    let mut utf16 = vec![0xff, 0xfe];
    utf16.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    write("utf16.txt", &utf16);
    let utf32: Vec<u8> = text
        .chars()
        .flat_map(|c| u32::from(c).to_be_bytes())
        .collect();
    write("utf32.txt", &utf32);
    write("latin1.txt", b"caf\xe9\n");
    write(
        ".gitattributes",
        b"crlf.txt text eol=crlf\nid.txt ident\nsecret.txt export-ignore\n\
          private export-ignore\nhollow/ignored export-ignore\nplain.txt -diff\n\
          utf16.txt working-tree-encoding=UTF-16LE-BOM\n\
          utf32.txt working-tree-encoding=UTF-32BE\n\
          latin1.txt working-tree-encoding=ISO-8859-1\n",
    );
    git(&w, &["add", "-A"]);
    git(&w, &["commit", "-q", "-m", "first"]);
    git(&w, &["tag", "-a", "v1", "-m", "v1"]);
    write("README", b"readme, second version\n");
    git(&w, &["commit", "-q", "-am", "second"]);
    let repo = dir.join("repo.git");
    git(dir, &["clone", "-q", "--bare", "work", "repo.git"]);
    std::fs::write(repo.join("git-daemon-export-ok"), "").unwrap();
    repo
}

fn start(dir: &Path, extra: &[&str]) -> Gitd {
    let base = format!("--base-path={}", dir.display());
    let mut args = vec![base.as_str(), "--informative-errors"];
    args.extend_from_slice(extra);
    Gitd::start(dir, &args)
}

/// `git archive --remote` with the `git` first on PATH.
fn remote(dir: &Path, gitd: &Gitd, args: &[&str]) -> Output {
    remote_with(dir, gitd, "git", args)
}

fn remote_with(dir: &Path, gitd: &Gitd, git_bin: &str, args: &[&str]) -> Output {
    let url = format!("--remote={}", gitd.url("/repo.git"));
    // git_cmd's isolated environment, for whichever git binary.
    let mut cmd = std::process::Command::new(git_bin);
    for (k, v) in git_cmd(dir).get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.current_dir(dir)
        .arg("archive")
        .arg(url)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    support::wait_bounded(cmd.spawn().expect("git runs"), LIMIT)
}

/// `git archive` run in the repository itself: what gitd must send.
fn oracle(repo: &Path, args: &[&str]) -> Output {
    let mut all = vec!["archive"];
    all.extend_from_slice(args);
    git_bounded(repo, &all, LIMIT)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: Output, what: &str) -> Vec<u8> {
    assert!(out.status.success(), "{what}: {}", stderr(&out));
    assert!(!out.stdout.is_empty(), "{what}: empty archive");
    out.stdout
}

/// The names in a tar (or tgz) archive, with `tar t`.
fn tar_names(dir: &Path, archive: &[u8], gz: bool) -> Vec<String> {
    let path = dir.join("listing.tar");
    std::fs::write(&path, archive).unwrap();
    let flag = if gz { "tzf" } else { "tf" };
    let out = std::process::Command::new("tar")
        .args([flag, path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "tar t: {}", stderr(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn tar_tgz_and_zip_are_byte_for_byte_git_archive() {
    let dir = scratch("archive-bytes");
    let repo = archive_repo(&dir);
    let gitd = start(&dir, &["--enable=upload-archive"]);
    let cases: &[&[&str]] = &[
        &["main"],
        &["--prefix=release-1.0/", "main"],
        &["--prefix=flat-", "main"],
        &["main", "src", "README", "link"],
        &["--prefix=p/", "main", "src/lib/code.c"],
        &["v1"],
        // A tree has no commit time: git uses the current time, so fix it.
        &["--mtime=2020-01-01T00:00:00Z", "main:src"],
        &["--mtime=2001-02-03T04:05:06Z", "main"],
    ];
    for format in ["tar", "tgz", "tar.gz", "zip"] {
        let mut variants: Vec<Vec<&str>> = cases.iter().map(|c| c.to_vec()).collect();
        if format != "tar" {
            variants.push(vec!["-9", "main"]);
            variants.push(vec!["-0", "main"]);
            variants.push(vec!["-1", "--prefix=fast/", "main"]);
        }
        for case in variants {
            let mut args = vec![format!("--format={format}")];
            args.extend(case.iter().map(|s| s.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let ours = ok(remote(&dir, &gitd, &args), &format!("gitd {args:?}"));
            let git = ok(oracle(&repo, &args), &format!("git {args:?}"));
            assert!(ours == git, "{args:?}: gitd's archive differs from git's");
        }
    }
    // The bytes being git's, check once that they hold what they should.
    let tar = ok(remote(&dir, &gitd, &["main"]), "tar");
    let names = tar_names(&dir, &tar, false);
    for name in [
        "README",
        "run.sh",
        "link",
        "longlink",
        "naïve.txt",
        "hollow/",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
    assert!(names.iter().any(|n| n.ends_with(&"n".repeat(120))));
    for name in ["secret.txt", "private/", "private/key", "hollow/ignored"] {
        assert!(!names.iter().any(|n| n == name), "{name} is export-ignore");
    }
    let tgz = ok(remote(&dir, &gitd, &["--format=tgz", "main", "src"]), "tgz");
    assert_eq!(
        tar_names(&dir, &tgz, true),
        ["src/", "src/lib/", "src/lib/code.c", "src/notes.txt"]
    );
    let zip = ok(remote(&dir, &gitd, &["--format=zip", "main"]), "zip");
    assert!(zip.starts_with(b"PK\x03\x04"));
    assert!(
        zip.ends_with(rev(&repo, "main").as_bytes()),
        "commit as comment"
    );
}

#[test]
fn tags_commit_ids_and_unreachable_objects() {
    let dir = scratch("archive-reach");
    let repo = archive_repo(&dir);
    let gitd = start(&dir, &["--enable=upload-archive"]);
    // An annotated tag by name, and a ref path.
    for name in ["v1", "refs/tags/v1", "heads/main"] {
        let ours = ok(remote(&dir, &gitd, &[name]), name);
        assert!(ours == ok(oracle(&repo, &[name]), name), "{name}");
    }
    // A commit id, even of a ref's tip, is not a ref: refused as git refuses it.
    let tip = rev(&repo, "main");
    let first = rev(&repo, "main~1");
    let tree = rev(&repo, "main^{tree}");
    let dangling = git(&repo, &["commit-tree", "-m", "dangling", &tree, "-p", &tip])
        .trim()
        .to_string();
    for id in [&tip, &first, &dangling] {
        let out = remote(&dir, &gitd, &[id]);
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
        assert!(
            stderr(&out).contains(&format!("no such ref: {id}")),
            "{}",
            stderr(&out)
        );
    }
    let out = remote(&dir, &gitd, &[&format!("{first}:src")]);
    assert!(stderr(&out).contains(&format!("no such ref: {first}")));
    // uploadArchive.allowUnreachable lets any object through.
    git(&repo, &["config", "uploadArchive.allowUnreachable", "true"]);
    for spec in [first.clone(), dangling, format!("{first}:src"), tree] {
        for format in ["tar", "zip"] {
            // Trees are archived with the current time: fix it for the comparison.
            let args = [
                &format!("--format={format}"),
                "--mtime=2020-01-01T00:00:00Z",
                spec.as_str(),
            ];
            let ours = ok(remote(&dir, &gitd, &args), &spec);
            assert!(ours == ok(oracle(&repo, &args), &spec), "{args:?}");
        }
    }
}

#[test]
fn disabled_by_default_enabled_by_flag_or_repository() {
    let dir = scratch("archive-enable");
    let repo = archive_repo(&dir);
    let refused = |gitd: &Gitd, why: &str| {
        let out = remote(&dir, gitd, &["main"]);
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
    };
    let served = |gitd: &Gitd| ok(remote(&dir, gitd, &["main"]), "archive");

    let gitd = start(&dir, &[]);
    refused(&gitd, "service not enabled: /repo.git");
    // Without --informative-errors the refusal says no more than git daemon's.
    let quiet = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    refused(&quiet, "access denied or repository not exported");
    // The repository turns it on.
    git(&repo, &["config", "daemon.uploadarch", "true"]);
    assert!(served(&gitd) == ok(oracle(&repo, &["main"]), "git"));
    drop(gitd);
    // ...unless the override is forbidden.
    let forbidden = start(&dir, &["--forbid-override=upload-archive"]);
    refused(&forbidden, "service not enabled");
    drop(forbidden);
    // --enable turns it on, and a repository can still turn it off.
    git(&repo, &["config", "daemon.uploadarch", "false"]);
    let enabled = start(&dir, &["--enable=upload-archive"]);
    refused(&enabled, "service not enabled");
    git(&repo, &["config", "--unset", "daemon.uploadarch"]);
    served(&enabled);
    // Fetching is not affected either way.
    let clone = git_bounded(
        &dir,
        &["clone", "-q", "--bare", &enabled.url("/repo.git"), "c.git"],
        LIMIT,
    );
    assert!(clone.status.success(), "{}", stderr(&clone));
}

#[test]
fn bad_requests_get_gits_errors_and_the_server_goes_on() {
    let dir = scratch("archive-errors");
    let repo = archive_repo(&dir);
    let gitd = start(&dir, &["--enable=upload-archive"]);
    let long_prefix = format!("--prefix={}/", "p".repeat(5000));
    for (args, expect) in [
        (
            &["--format=rar", "main"][..],
            "Unknown archive format 'rar'",
        ),
        (
            &["-3", "main"],
            "Argument not supported for format 'tar': -3",
        ),
        (&["--format=zip", "-12", "main"], "Argument not supported"),
        (&["--bogus", "main"], "unknown option `bogus'"),
        (
            &["main", "no/such/path"],
            "pathspec 'no/such/path' did not match",
        ),
        (&["nosuchbranch"], "no such ref: nosuchbranch"),
        (&["main", ":(attr:ident)"], "'attr' magic is not supported"),
        (&["main", "../outside"], "leaves the repository"),
        (
            &["--mtime=2020-01-01", "main"],
            "is not a time this server reads as git does",
        ),
        (
            &[&long_prefix, "main"],
            "--prefix is longer than 4096 bytes",
        ),
    ] {
        let out = remote(&dir, &gitd, args);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(out.stdout.is_empty(), "{args:?}: no archive bytes");
        let err = stderr(&out);
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(err.contains("archiver died with error"), "{args:?}: {err}");
    }
    let out = remote(&dir, &gitd, &["--list"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "tar\ntgz\ntar.gz\nzip\n"
    );

    // What the git client never sends: raw requests.
    let raw_request = |args: &[Vec<u8>]| {
        let mut raw = Raw::connect(gitd.port);
        raw.send_pkt(b"git-upload-archive /repo.git\0host=localhost\0");
        let mut body = Vec::new();
        for a in args {
            body.extend_from_slice(&pkt(a));
        }
        body.extend_from_slice(b"0000");
        raw.send(&body);
        let mut replies = Vec::new();
        for _ in 0..200 {
            let r = raw.read();
            let stop = r == Reply::Closed;
            replies.push(r);
            if stop {
                break;
            }
        }
        replies
    };
    let band = |replies: &[Reply], n: u8| -> String {
        replies
            .iter()
            .filter_map(|r| match r {
                Reply::Data(d) if d.first() == Some(&n) => {
                    Some(String::from_utf8_lossy(&d[1..]).into_owned())
                }
                _ => None,
            })
            .collect()
    };
    let arg = |s: &str| format!("argument {s}").into_bytes();
    for (args, expect) in [
        (
            vec![arg("--remote=elsewhere"), arg("main")],
            "Unexpected option --remote",
        ),
        (
            vec![arg("--output=/tmp/x"), arg("main")],
            "Unexpected option --output",
        ),
        (
            vec![arg("--add-file=/etc/passwd"), arg("main")],
            "options '--add-file' and '--remote' cannot be used together",
        ),
        (
            vec![arg("--exec=sh"), arg("main")],
            "'--exec' requires '--remote'",
        ),
        (
            vec![b"bogus line".to_vec()],
            "'argument' token or flush expected",
        ),
        (vec![arg("main"); 70], "Too many options (>63)"),
        (
            vec![arg("main"), b"argument caf\xe9".to_vec()],
            "argument 'caf\\xe9' is not UTF-8, which this server does not support",
        ),
    ] {
        let replies = raw_request(&args);
        assert_eq!(replies[0], Reply::Data(b"ACK\n".to_vec()), "{expect}");
        assert_eq!(replies[1], Reply::Flush);
        assert!(band(&replies, 2).contains(expect), "{replies:?}");
        assert!(band(&replies, 3).contains("archiver died with error"));
        assert!(band(&replies, 1).is_empty(), "no archive for a refusal");
    }
    // After all of that, a good request is still served.
    let ours = ok(
        remote(&dir, &gitd, &["--format=zip", "main"]),
        "after errors",
    );
    assert!(ours == ok(oracle(&repo, &["--format=zip", "main"]), "git"));
}

#[test]
fn limits_refuse_big_trees_before_sending_anything() {
    let dir = scratch("archive-limits");
    let repo = archive_repo(&dir);
    let gitd = start(
        &dir,
        &["--enable=upload-archive", "--archive-max-entries=8"],
    );
    for format in ["tar", "zip"] {
        let out = remote(&dir, &gitd, &[&format!("--format={format}"), "main"]);
        assert!(!out.status.success());
        assert!(out.stdout.is_empty(), "refused before the first byte");
        assert!(
            stderr(&out).contains("more than 8 files and directories (this server's limit)"),
            "{}",
            stderr(&out)
        );
    }
    // A part of the tree under the limit is served, byte for byte.
    let args = ["--format=tgz", "main", "src"];
    assert!(ok(remote(&dir, &gitd, &args), "src") == ok(oracle(&repo, &args), "git"));
    drop(gitd);
    let gitd = start(
        &dir,
        &["--enable=upload-archive", "--archive-max-bytes=20k"],
    );
    let out = remote(&dir, &gitd, &["main"]);
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("more than 20480 bytes of file content"),
        "{}",
        stderr(&out)
    );
    // data/blob.bin alone is 40000 bytes; src is under the limit.
    let out = remote(&dir, &gitd, &["main", "data"]);
    assert!(!out.status.success());
    ok(
        remote(&dir, &gitd, &["main", "src", "README"]),
        "small part",
    );
}

#[test]
fn what_gitd_does_not_convert_is_archived_as_stored_with_a_warning() {
    let dir = scratch("archive-subst");
    let repo = archive_repo(&dir);
    let w = dir.join("work");
    // Committed before its attribute, so it is stored as written.
    std::fs::write(w.join("ucs2.txt"), "two\n").unwrap();
    git(&w, &["add", "ucs2.txt"]);
    git(&w, &["commit", "-q", "-m", "ucs-2"]);
    std::fs::write(w.join("version.txt"), "commit $Format:%H$\n").unwrap();
    std::fs::write(w.join("plain-subst.txt"), "no placeholder\n").unwrap();
    std::fs::write(w.join("upper.dat"), "shout\n").unwrap();
    let mut attrs = std::fs::read_to_string(w.join(".gitattributes")).unwrap();
    attrs.push_str(
        "version.txt export-subst\nplain-subst.txt export-subst\n\
         upper.dat filter=upper\nREADME filter=unconfigured\n\
         ucs2.txt working-tree-encoding=UCS-2\n",
    );
    std::fs::write(w.join(".gitattributes"), attrs).unwrap();
    // Not `-A`: ucs2.txt, if re-added now, would be read as UCS-2.
    git(
        &w,
        &[
            "add",
            "version.txt",
            "plain-subst.txt",
            "upper.dat",
            ".gitattributes",
        ],
    );
    git(&w, &["commit", "-q", "-m", "subst"]);
    git(&w, &["push", "-q", repo.to_str().unwrap(), "main"]);
    // git archive runs the driver; gitd runs no program a repository configures.
    git(&repo, &["config", "filter.upper.smudge", "tr a-z A-Z"]);
    let gitd = start(&dir, &["--enable=upload-archive"]);
    let out = remote(&dir, &gitd, &["main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let warned = stderr(&out);
    for warning in [
        "warning: export-subst is not supported by this server: $Format:…$ left as is in version.txt",
        "warning: filter drivers are not run by this server: content left as stored in upper.dat",
        "warning: working-tree-encoding unknown to this server: content left as UTF-8 in ucs2.txt",
    ] {
        assert!(warned.contains(warning), "{warned}");
    }
    // Not a file without a placeholder, nor one whose filter has no driver.
    assert!(!warned.contains("more files"), "{warned}");
    // Same file set, modes and contents as git's archive, but for the placeholder.
    let extract = |name: &str, bytes: &[u8]| {
        let root = dir.join(name);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(dir.join(format!("{name}.tar")), bytes).unwrap();
        let st = std::process::Command::new("tar")
            .args(["xf", &format!("../{name}.tar")])
            .current_dir(&root)
            .status()
            .unwrap();
        assert!(st.success());
        root
    };
    let ours = extract("ours", &out.stdout);
    let theirs = extract("theirs", &ok(oracle(&repo, &["main"]), "git"));
    let tip = rev(&repo, "main");
    assert_eq!(
        std::fs::read_to_string(ours.join("version.txt")).unwrap(),
        "commit $Format:%H$\n"
    );
    assert_eq!(
        std::fs::read_to_string(theirs.join("version.txt")).unwrap(),
        format!("commit {tip}\n")
    );
    assert_eq!(std::fs::read(ours.join("upper.dat")).unwrap(), b"shout\n");
    assert_eq!(std::fs::read(theirs.join("upper.dat")).unwrap(), b"SHOUT\n");
    assert_eq!(std::fs::read(ours.join("ucs2.txt")).unwrap(), b"two\n");
    assert_ne!(std::fs::read(theirs.join("ucs2.txt")).unwrap(), b"two\n");
    for file in ["version.txt", "upper.dat", "ucs2.txt"] {
        std::fs::remove_file(ours.join(file)).unwrap();
        std::fs::remove_file(theirs.join(file)).unwrap();
    }
    let diff = std::process::Command::new("diff")
        .args(["-r", "--no-dereference", "ours", "theirs"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    let modes = |root: &Path| {
        let out = std::process::Command::new("find")
            .args([".", "-printf", "%p %M\n"])
            .current_dir(root)
            .output()
            .unwrap();
        let mut lines: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(modes(&ours), modes(&theirs));
}

#[test]
fn debian_git_2_39_as_client() {
    let old = "/usr/bin/git";
    if !Path::new(old).exists() {
        eprintln!("skipped: no {old}");
        return;
    }
    let dir = scratch("archive-old-client");
    let repo = archive_repo(&dir);
    let gitd = start(&dir, &["--enable=upload-archive"]);
    for args in [
        &["--format=zip", "--prefix=p/", "main"][..],
        &["--format=tgz", "v1", "src"],
        &["main"],
    ] {
        let ours = ok(remote_with(&dir, &gitd, old, args), "git 2.39");
        assert!(ours == ok(oracle(&repo, args), "git"), "{args:?}");
    }
    let out = remote_with(&dir, &gitd, old, &["--format=rar", "main"]);
    assert!(stderr(&out).contains("Unknown archive format 'rar'"));
}
