//! Differential testing helpers: send the same request bytes to `git upload-pack`
//! (the oracle) and to gitd, and split the answers into comparable lines.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use super::{Raw, git_cmd};

/// Split a response into pkt-line payloads (`"0000"` for flush, `"0001"` for delim),
/// stopping at a raw pack or a side-band pack.
pub fn lines(mut bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        if bytes.starts_with(b"PACK") {
            out.push("<raw pack>".into());
            break;
        }
        let n = usize::from_str_radix(std::str::from_utf8(&bytes[..4]).unwrap(), 16).unwrap();
        if n < 4 {
            out.push(format!("{n:04}"));
            bytes = &bytes[4..];
            continue;
        }
        let data = &bytes[4..n];
        if data.first() == Some(&1) || data.first() == Some(&2) {
            out.push("<side-band>".into());
            break;
        }
        out.push(String::from_utf8_lossy(data).into_owned());
        bytes = &bytes[n..];
    }
    out
}

/// git's answer to `input` (v2 when `v2`), over a pipe like git daemon's child.
pub fn oracle(repo: &Path, input: &[u8], v2: bool) -> Vec<u8> {
    let mut cmd = git_cmd(repo);
    cmd.arg("upload-pack");
    if v2 {
        cmd.env("GIT_PROTOCOL", "version=2");
    }
    let mut child = cmd
        .arg(".")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out.stdout
}

/// gitd's answer to the request line for `/repo.git` plus `input`.
pub fn ours(port: u16, v2: bool, input: &[u8]) -> Vec<u8> {
    ours_at(port, "/repo.git", v2, input)
}

/// gitd's answer to the request line for `path` plus `input`.
pub fn ours_at(port: u16, path: &str, v2: bool, input: &[u8]) -> Vec<u8> {
    let mut raw = Raw::connect(port);
    let mut hello = format!("git-upload-pack {path}\0host=localhost\0");
    if v2 {
        hello.push_str("\0version=2\0");
    }
    raw.send_pkt(hello.as_bytes()).send(input);
    let _ = raw.stream.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut raw.stream, &mut out).unwrap();
    out
}

/// Drop what legitimately differs between servers: the agent and our capability list.
pub fn normalize(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .map(|l| match l.find('\0') {
            Some(nul) => l[..nul].to_string(),
            None => l,
        })
        .filter(|l| {
            !l.starts_with("agent=")
                && !l.starts_with("ls-refs")
                && !l.starts_with("fetch")
                && !l.starts_with("server-option")
                && !l.starts_with("object-info")
        })
        .collect()
}
