//! Shared test support: fixture repositories built with the real `git`, gitd started
//! the way systemd starts it (inherited listening socket, `NOTIFY_SOCKET`), and a raw
//! pkt-line client for requests `git` would never send.
#![allow(dead_code)]

pub mod oracle;
pub mod push;
pub mod systemd;

#[allow(unused_imports)]
pub use oracle::{git_bounded, normalize, oracle, oracle_output, ours, pkt_lines, wait_bounded};

use std::io::{BufRead, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const GITD: &str = env!("CARGO_BIN_EXE_gitd");

/// A fresh scratch directory under cargo's target tmp dir, unique per call.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `git` command isolated from the machine's and user's configuration.
pub fn git_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("git-home");
    std::fs::create_dir_all(&home).unwrap();
    cmd.current_dir(dir)
        .env("HOME", &home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env_remove("GIT_DIR")
        .env_remove("GIT_PROTOCOL");
    cmd
}

/// Run git and return its output, whatever the exit status.
pub fn git_output(dir: &Path, args: &[&str]) -> Output {
    git_cmd(dir).args(args).output().expect("git runs")
}

/// Run git, panic with its stderr unless it succeeds, return stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_output(dir, args);
    assert!(
        out.status.success(),
        "git {args:?} failed in {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Build a bare repository from a generated fast-import history: commits on `main`
/// editing, adding, renaming and deleting text and binary files, a `topic` branch
/// merged back, annotated, nested and lightweight tags, and an unmerged `side`
/// branch. Deterministic for a given `commits`.
pub fn fixture(dir: &Path, name: &str, commits: usize) -> PathBuf {
    let repo = dir.join(name);
    git(
        dir,
        &["init", "-q", "--bare", "-b", "main", repo.to_str().unwrap()],
    );
    let mut s: Vec<u8> = Vec::new();
    let mut t = 1_600_000_000u64;
    let mut mark = 0;
    let mut commit = |s: &mut Vec<u8>,
                      branch: &str,
                      msg: &str,
                      from: Option<String>,
                      merge: Option<String>,
                      ops: &[Vec<u8>]| {
        mark += 1;
        t += 3600;
        writeln!(
            s,
            "commit refs/heads/{branch}\nmark :{mark}\ncommitter Test <test@example.com> {t} +0000"
        )
        .unwrap();
        writeln!(s, "data {}\n{msg}", msg.len()).unwrap();
        if let Some(f) = from {
            writeln!(s, "from {f}").unwrap();
        }
        if let Some(m) = merge {
            writeln!(s, "merge {m}").unwrap();
        }
        for op in ops {
            s.extend_from_slice(op);
        }
        s.push(b'\n');
        (mark, t)
    };
    let file = |path: &str, content: &[u8]| {
        let mut op = format!("M 100644 inline {path}\ndata {}\n", content.len()).into_bytes();
        op.extend_from_slice(content);
        op.push(b'\n');
        op
    };
    let mut body = String::new();
    for i in 0..commits {
        body.push_str(&format!(
            "line {i}: {}\n",
            "lorem ipsum dolor sit amet ".repeat(i % 7 + 1)
        ));
        let module = format!("module {i}\n").repeat(20);
        let mut ops = vec![
            file("README", body.as_bytes()),
            file(&format!("src/mod{}.txt", i % 5), module.as_bytes()),
        ];
        if i % 4 == 0 {
            let bin: Vec<u8> = (0..2048u32)
                .map(|b| ((b * 31 + i as u32 * 7) % 251) as u8)
                .collect();
            ops.push(file(&format!("bin/blob{}.bin", i % 3), &bin));
        }
        if i % 9 == 5 {
            ops.push(format!("R src/mod{}.txt src/renamed{i}.txt\n", i % 5).into_bytes());
        }
        if i % 11 == 10 {
            ops.push(format!("D src/mod{}.txt\n", (i + 1) % 5).into_bytes());
        }
        let (m, now) = commit(&mut s, "main", &format!("commit {i}"), None, None, &ops);
        if i == commits / 3 {
            let (topic, _) = commit(
                &mut s,
                "topic",
                "topic work",
                Some(format!(":{m}")),
                None,
                &[file("topic.txt", b"topic\n")],
            );
            commit(
                &mut s,
                "main",
                "merge topic",
                None,
                Some(format!(":{topic}")),
                &[],
            );
            writeln!(
                s,
                "tag v1.0\nfrom :{m}\ntagger Test <test@example.com> {now} +0000\ndata 5\nv1.0\n"
            )
            .unwrap();
        }
        if i == commits / 2 {
            writeln!(s, "reset refs/tags/light\nfrom :{m}\n").unwrap();
            commit(
                &mut s,
                "side",
                "side work",
                Some(format!(":{m}")),
                None,
                &[file("side.txt", b"side\n")],
            );
        }
    }
    let end = 1_600_000_000u64 + 3600 * (commits as u64 + 10);
    writeln!(s, "tag v2.0\nmark :999999\nfrom refs/heads/main\ntagger Test <test@example.com> {end} +0000\ndata 5\nv2.0\n").unwrap();
    writeln!(
        s,
        "tag nested\nfrom :999999\ntagger Test <test@example.com> {end} +0000\ndata 7\nnested\n"
    )
    .unwrap();
    s.extend_from_slice(b"done\n");
    let mut child = git_cmd(&repo)
        .args(["fast-import", "--quiet", "--done"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&s).unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        std::fs::write(dir.join("fast-import.stream"), &s).unwrap();
        panic!(
            "fast-import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(repo.join("git-daemon-export-ok"), "").unwrap();
    repo
}

/// The id `spec` names in `repo`.
pub fn rev(repo: &Path, spec: &str) -> String {
    git(repo, &["rev-parse", spec]).trim().to_string()
}

/// The [`fixture`]'s commit merging `topic` into `main`, and how many commits of
/// main are above it.
pub fn merge_depth(repo: &Path) -> (String, usize) {
    let merge = git(repo, &["rev-list", "--merges", "-n1", "main"])
        .trim()
        .to_string();
    let above = git(repo, &["rev-list", "--count", &format!("{merge}..main")]);
    (merge, above.trim().parse().unwrap())
}

/// Add `n` commits to `branch` of a bare repo (through a temporary clone).
pub fn add_commits(repo: &Path, branch: &str, n: usize, tag: &str) {
    let work = scratch("work");
    git(
        &work,
        &["clone", "-q", "-b", branch, repo.to_str().unwrap(), "w"],
    );
    let w = work.join("w");
    for i in 0..n {
        std::fs::write(w.join(format!("new-{tag}-{i}.txt")), format!("{tag} {i}\n")).unwrap();
        std::fs::write(w.join("README"), format!("changed by {tag} {i}\n")).unwrap();
        git(&w, &["add", "-A"]);
        git(&w, &["commit", "-q", "-m", &format!("{tag} {i}")]);
    }
    git(&w, &["push", "-q", "origin", branch]);
    let _ = std::fs::remove_dir_all(work);
}

/// Receives sd_notify datagrams the way systemd does.
pub struct NotifySocket {
    pub path: PathBuf,
    sock: UnixDatagram,
}

impl NotifySocket {
    pub fn new(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        NotifySocket { path, sock }
    }

    /// Wait for a message containing `needle`; returns all messages seen until then.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            self.sock
                .set_read_timeout(Some(
                    deadline
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1)),
                ))
                .unwrap();
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let found = msg.lines().any(|l| l == needle || l.starts_with(needle));
                    seen.push(msg);
                    if found {
                        return seen;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no sd_notify message {needle:?} within {timeout:?}; saw {seen:?}");
    }
}

/// A gitd process started on listening sockets the test owns, passed as fds 3.. with
/// `LISTEN_FDS` and `LISTEN_PID`, exactly as systemd passes `git.socket`. The test
/// keeps its copies of the sockets, so it can start the next instance after an exit.
pub struct Gitd {
    pub child: Child,
    pub listeners: Vec<TcpListener>,
    pub port: u16,
    pub log: PathBuf,
    pub dir: PathBuf,
}

impl Gitd {
    /// Start gitd with `args` on a fresh loopback socket.
    pub fn start(dir: &Path, args: &[&str]) -> Gitd {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Self::start_on(dir, vec![listener], args, None)
    }

    /// Start gitd with `args` as a user would, without the `--verbose` the other
    /// starts add (only failed requests are logged).
    pub fn start_quiet(dir: &Path, args: &[&str]) -> Gitd {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Self::spawn(dir, vec![listener], args, None, false)
    }

    /// Start gitd on `listeners` (fds 3, 4, …), optionally with a `NOTIFY_SOCKET`.
    /// Every request is logged (`--verbose`), as the tests read the log lines.
    pub fn start_on(
        dir: &Path,
        listeners: Vec<TcpListener>,
        args: &[&str],
        notify: Option<&Path>,
    ) -> Gitd {
        Self::spawn(dir, listeners, args, notify, true)
    }

    fn spawn(
        dir: &Path,
        listeners: Vec<TcpListener>,
        args: &[&str],
        notify: Option<&Path>,
        verbose: bool,
    ) -> Gitd {
        let port = listeners[0].local_addr().unwrap().port();
        static LOGS: AtomicUsize = AtomicUsize::new(0);
        let log = dir.join(format!("gitd-{}.log", LOGS.fetch_add(1, Ordering::SeqCst)));
        let fds: Vec<i32> = listeners.iter().map(|l| l.as_raw_fd()).collect();
        let names = vec!["git.socket"; fds.len()].join(":");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
            .arg(GITD)
            .args(verbose.then_some("--verbose"))
            .args(args)
            .env("LISTEN_FDS", fds.len().to_string())
            .env("LISTEN_FDNAMES", names)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(n) = notify {
            cmd.env("NOTIFY_SOCKET", n);
        }
        // SAFETY: only async-signal-safe calls between fork and exec. Each listener is
        // first moved above the target range, so dup2 cannot clobber a later source.
        unsafe {
            cmd.pre_exec(move || {
                let mut high = Vec::with_capacity(fds.len());
                for &fd in &fds {
                    let h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
                    if h < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    high.push(h);
                }
                for (i, &h) in high.iter().enumerate() {
                    if libc::dup2(h, 3 + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn gitd");
        Gitd {
            child,
            listeners,
            port,
            log,
            dir: dir.to_owned(),
        }
    }

    /// Start gitd again on the same sockets (what systemd does on the next connection).
    pub fn restart(mut self, args: &[&str], notify: Option<&Path>) -> Gitd {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let listeners = std::mem::take(&mut self.listeners);
        Self::start_on(&self.dir.clone(), listeners, args, notify)
    }

    pub fn url(&self, path: &str) -> String {
        format!("git://127.0.0.1:{}{path}", self.port)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for the process to exit on its own; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Gitd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `/proc/PID/status` memory field (`VmHWM:`, `VmRSS:`, `RssAnon:`) in KiB.
pub fn vm_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Encode one pkt-line.
pub fn pkt(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:04x}", data.len() + 4).into_bytes();
    out.extend_from_slice(data);
    out
}

/// A client connection from a chosen loopback source address.
pub fn connect_from(source: Ipv4Addr, port: u16) -> TcpStream {
    // SAFETY: a fresh socket, bound and connected with valid sockaddr_in values; the
    // fd is handed to TcpStream, which owns it from then on.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let addr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let local = addr(source, 0);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, &local as *const _ as *const libc::sockaddr, len),
            0
        );
        let remote = addr(Ipv4Addr::LOCALHOST, port);
        assert_eq!(
            libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len),
            0
        );
        std::os::fd::FromRawFd::from_raw_fd(fd)
    }
}

/// A raw client connection for hand-made requests.
pub struct Raw {
    pub stream: TcpStream,
}

/// What a server sent back, pkt-line by pkt-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Data(Vec<u8>),
    Flush,
    Delim,
    /// The server closed the connection.
    Closed,
}

impl Reply {
    pub fn text(&self) -> String {
        match self {
            Reply::Data(d) => String::from_utf8_lossy(d)
                .trim_end_matches('\n')
                .to_string(),
            other => format!("{other:?}"),
        }
    }
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Raw { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) -> &mut Self {
        let _ = self.stream.write_all(bytes);
        self
    }

    pub fn send_pkt(&mut self, data: &[u8]) -> &mut Self {
        self.send(&pkt(data))
    }

    /// Read one pkt-line (or `Closed`).
    pub fn read(&mut self) -> Reply {
        let mut len = [0u8; 4];
        if self.stream.read_exact(&mut len).is_err() {
            return Reply::Closed;
        }
        let n = usize::from_str_radix(std::str::from_utf8(&len).expect("hex length"), 16)
            .expect("hex length");
        match n {
            0 => Reply::Flush,
            1 => Reply::Delim,
            n => {
                let mut data = vec![0u8; n - 4];
                self.stream
                    .read_exact(&mut data)
                    .expect("complete pkt-line");
                Reply::Data(data)
            }
        }
    }

    /// Read until flush (inclusive) or close.
    pub fn read_until_flush(&mut self) -> Vec<Reply> {
        let mut out = Vec::new();
        loop {
            let r = self.read();
            let stop = matches!(r, Reply::Flush | Reply::Closed);
            out.push(r);
            if stop {
                return out;
            }
        }
    }

    /// True once the server has closed the connection (reads return EOF).
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.stream.read(&mut buf), Ok(0))
    }
}

/// `git clone --mirror url dest` (bounded), which must succeed with exactly the
/// refs of `repo`.
pub fn assert_mirror(dir: &Path, url: &str, dest: &Path, repo: &Path) {
    let out = oracle::git_bounded(
        dir,
        &["clone", "-q", "--mirror", url, dest.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "git clone --mirror {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(refs_of(dest, "refs/"), refs_of(repo, "refs/"));
}

/// Refs of a repository as `git for-each-ref` prints them (sorted name → oid).
pub fn refs_of(repo: &Path, pattern: &str) -> Vec<String> {
    let out = git(
        repo,
        &["for-each-ref", "--format=%(objectname) %(refname)", pattern],
    );
    out.lines().map(str::to_owned).collect()
}

/// Wait until `f` is true or the timeout passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

/// Read a file of lines that a background reader appends to (helper for logs).
pub fn lines(path: &Path) -> Vec<String> {
    match std::fs::File::open(path) {
        Ok(f) => std::io::BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A child process that is killed when the test ends, even by a panic.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
