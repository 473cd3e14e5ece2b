//! Helpers for push tests: gitd with receive-pack on, work trees and commits,
//! `git push` with a time limit, and the same push to git's own receive-pack (a
//! copy of the repository through `file://`, or `git receive-pack` on a pipe) to
//! compare with.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::{Gitd, Raw, git, git_bounded, git_cmd, pkt_lines, refs_of};

pub const PUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// gitd serving `dir`, receive-pack enabled by flag.
pub fn gitd(dir: &Path) -> Gitd {
    Gitd::start(
        dir,
        &[
            &format!("--base-path={}", dir.display()),
            "--export-all",
            "--informative-errors",
            "--enable=receive-pack",
        ],
    )
}

/// A non-bare clone of `repo` to make commits in.
pub fn work(dir: &Path, repo: &Path, name: &str) -> PathBuf {
    let wc = dir.join(name);
    git(
        dir,
        &["clone", "-q", repo.to_str().unwrap(), wc.to_str().unwrap()],
    );
    wc
}

/// A new commit on the checked-out branch with a file of its own; its id.
pub fn commit(wc: &Path, name: &str) -> String {
    std::fs::write(wc.join(name), format!("{name}\n").repeat(50)).unwrap();
    git(wc, &["add", name]);
    git(wc, &["commit", "-q", "-m", name]);
    git(wc, &["rev-parse", "HEAD"]).trim().to_string()
}

pub fn push(wc: &Path, url: &str, args: &[&str]) -> Output {
    let mut all = vec!["push", url];
    all.extend_from_slice(args);
    git_bounded(wc, &all, PUSH_TIMEOUT)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn fsck(repo: &Path) {
    let out = git_bounded(repo, &["fsck", "--full", "--strict"], PUSH_TIMEOUT);
    assert!(out.status.success(), "fsck: {}", stderr(&out));
}

pub fn rev(repo: &Path, spec: &str) -> Option<String> {
    let out = git_bounded(repo, &["rev-parse", "--verify", "-q", spec], PUSH_TIMEOUT);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn has_object(repo: &Path, id: &str) -> bool {
    git_bounded(repo, &["cat-file", "-e", id], PUSH_TIMEOUT)
        .status
        .success()
}

/// Leftover quarantine directories in a repository.
pub fn quarantines(repo: &Path) -> Vec<String> {
    std::fs::read_dir(repo.join("objects"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tmp_objdir-incoming-"))
        .collect()
}

pub fn hook(repo: &Path, name: &str, script: &str) {
    let path = repo.join("hooks").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, format!("#!/bin/sh\n{script}")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A copy of `repo` (hooks and config included) for git's own receive-pack.
pub fn twin(repo: &Path) -> PathBuf {
    let copy = repo.with_extension("twin.git");
    let status = Command::new("cp")
        .args(["-a", repo.to_str().unwrap(), copy.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    copy
}

/// What the pusher saw, with the remote's URL and git's padding of `remote:`
/// lines taken out.
pub fn seen(out: &Output, urls: &[&str]) -> String {
    let mut text = stderr(out);
    for url in urls {
        text = text.replace(url, "URL");
    }
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    format!("{}\nexit {:?}", lines.join("\n"), out.status.code())
}

/// Payloads of a receive-pack advertisement, the agent masked.
pub fn mask_agent(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .map(|l| match l.find(" agent=") {
            Some(i) => format!("{} agent=AGENT", &l[..i]),
            None => l.trim_end().to_string(),
        })
        .collect()
}

/// gitd's receive-pack advertisement for `path`.
pub fn advertisement(port: u16, path: &str) -> Vec<String> {
    let mut raw = Raw::connect(port);
    raw.send_pkt(format!("git-receive-pack {path}\0host=127.0.0.1\0").as_bytes());
    let lines = raw
        .read_until_flush()
        .iter()
        .map(|r| r.text())
        .collect::<Vec<_>>();
    raw.send(b"0000");
    mask_agent(lines)
}

/// git's, for the same repository.
pub fn git_advertisement(repo: &Path) -> Vec<String> {
    let out = git_bounded(
        repo,
        &["receive-pack", "--advertise-refs", "."],
        PUSH_TIMEOUT,
    );
    let mut lines = super::pkt_lines(&out.stdout);
    if lines.last().is_some_and(|l| l == "0000") {
        lines.pop();
        lines.push("Flush".into());
    }
    mask_agent(lines)
}

/// Push the same to gitd and to git's receive-pack on a copy of the repository
/// made beforehand; both must tell the client the same and end with the same refs.
pub struct Differential {
    pub ours: PathBuf,
    pub theirs: PathBuf,
    pub url: String,
    pub file_url: String,
}

impl Differential {
    pub fn new(gitd: &Gitd, repo: &Path) -> Self {
        let theirs = twin(repo);
        let name = repo.file_name().unwrap().to_str().unwrap();
        Differential {
            ours: repo.to_owned(),
            file_url: format!("file://{}", theirs.display()),
            theirs,
            url: gitd.url(&format!("/{name}")),
        }
    }

    /// Push from `wc` with `args` to both; returns what the client saw from gitd.
    pub fn push(&self, wc: &Path, args: &[&str]) -> String {
        let ours = push(wc, &self.url, args);
        let theirs = push(wc, &self.file_url, args);
        let urls = [self.url.as_str(), self.file_url.as_str()];
        let (ours, theirs) = (seen(&ours, &urls), seen(&theirs, &urls));
        assert_eq!(ours, theirs, "gitd and git differ for push {args:?}");
        assert_eq!(refs_of(&self.ours, "refs/"), refs_of(&self.theirs, "refs/"));
        ours
    }
}

/// A commit in `wc` adding `len` incompressible bytes (`noise.bin`), so that part of
/// its pack is part of one object; its id.
pub fn noise_commit(wc: &Path, len: u32) -> String {
    let noise: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(wc.join("noise.bin"), &noise).unwrap();
    git(wc, &["add", "noise.bin"]);
    git(wc, &["commit", "-q", "-m", "noise"]);
    git(wc, &["rev-parse", "HEAD"]).trim().to_string()
}

/// The pack git would send for `range`, made in `wc`.
pub fn pack_of(wc: &Path, range: &str) -> Vec<u8> {
    pack_objects(wc, &["--revs"], &format!("{range}\n"))
}

/// `git pack-objects --stdout` in `wc` with `args`, given `input` on its standard
/// input (ids, or with `--revs` a range).
pub fn pack_objects(wc: &Path, args: &[&str], input: &str) -> Vec<u8> {
    let mut child = git_cmd(wc)
        .args(["pack-objects", "--stdout", "-q"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = super::wait_bounded(child, PUSH_TIMEOUT);
    assert!(out.status.success());
    out.stdout
}

/// The pkt-lines after the advertisement: what a server answered to `input`.
pub fn answer(bytes: &[u8]) -> Vec<String> {
    let lines = pkt_lines(bytes);
    let start = lines.iter().position(|l| l == "0000").map_or(0, |i| i + 1);
    lines[start..].to_vec()
}

/// gitd's answer to `input` after the advertisement of `path`.
pub fn raw_push(port: u16, path: &str, input: &[u8]) -> Vec<String> {
    answer(&raw_push_bytes(port, path, input))
}

/// Everything gitd sent for `input` (the advertisement first).
pub fn raw_push_bytes(port: u16, path: &str, input: &[u8]) -> Vec<u8> {
    let mut raw = Raw::connect(port);
    raw.send_pkt(format!("git-receive-pack {path}\0host=127.0.0.1\0").as_bytes());
    raw.send(input);
    let mut out = Vec::new();
    let _ = std::io::Read::read_to_end(&mut raw.stream, &mut out);
    out
}

/// A side-band answer after the advertisement, taken apart: the text of band 2
/// (what the client prints as `remote: …`) and the pkt-lines of band 1 (the report).
pub fn demux(bytes: &[u8]) -> (String, Vec<String>) {
    let mut rest = bytes;
    let (mut text, mut data) = (Vec::new(), Vec::new());
    let mut past_advertisement = false;
    while rest.len() >= 4 {
        let n = usize::from_str_radix(std::str::from_utf8(&rest[..4]).unwrap(), 16).unwrap();
        if n < 4 {
            past_advertisement = true;
            rest = &rest[4..];
            continue;
        }
        let payload = &rest[4..n];
        rest = &rest[n..];
        if !past_advertisement {
            continue;
        }
        match payload.split_first() {
            Some((1, d)) => data.extend_from_slice(d),
            Some((2, d)) => text.extend_from_slice(d),
            _ => {}
        }
    }
    (
        String::from_utf8_lossy(&text).into_owned(),
        pkt_lines(&data),
    )
}

/// git's receive-pack's answer to the same input, on a pipe.
pub fn git_push(repo: &Path, input: &[u8]) -> Vec<String> {
    answer(&git_push_bytes(repo, input))
}

/// Everything git's receive-pack wrote for `input`.
pub fn git_push_bytes(repo: &Path, input: &[u8]) -> Vec<u8> {
    let mut child = git_cmd(repo)
        .args(["receive-pack", "."])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = super::wait_bounded(child, PUSH_TIMEOUT);
    writer.join().unwrap();
    out.stdout
}
