//! Talking to `git upload-pack` (the oracle) and to gitd with the same raw request
//! bytes, and running git with a time limit.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use super::{Raw, git_cmd};

/// Split a response into pkt-line payloads (`"0000"` for flush, `"0001"` for delim),
/// stopping at a raw pack or a side-band pack.
pub fn pkt_lines(mut bytes: &[u8]) -> Vec<String> {
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
    oracle_output(repo, input, v2).stdout
}

/// [`oracle`] with git's exit status and standard error.
pub fn oracle_output(repo: &Path, input: &[u8], v2: bool) -> Output {
    let mut cmd = git_cmd(repo);
    cmd.arg("upload-pack");
    if v2 {
        cmd.env("GIT_PROTOCOL", "version=2");
    }
    let mut child = cmd
        .arg(".")
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
    let out = wait_bounded(child, Duration::from_secs(60));
    writer.join().unwrap();
    out
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

/// Wait for `child` with its output, killing it after `timeout` (a hung server must
/// fail a test, not stall it).
pub fn wait_bounded(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a child process did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Run git with a time limit and return its output, whatever the exit status.
pub fn git_bounded(dir: &Path, args: &[&str], timeout: Duration) -> Output {
    let child = git_cmd(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git runs");
    wait_bounded(child, timeout)
}
