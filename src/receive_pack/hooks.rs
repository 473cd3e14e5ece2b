//! The repository's push hooks: `pre-receive`, `update`, `post-receive` and
//! `post-update`, run as git's receive-pack runs them.
//!
//! Hooks are programs in the served repository (`hooks/`, or `core.hooksPath`).
//! Running them is what git does and what an administrator who enables
//! receive-pack expects; gitd itself still never runs `git`. As in git, a hook
//! runs in the repository's git directory with `GIT_DIR=.`, gets git's arguments
//! and environment (`GIT_PUSH_OPTION_*`, the quarantine's object directories for
//! `pre-receive`, and `REMOTE_ADDR`/`REMOTE_PORT` as git daemon sets them), and its
//! standard output and error go to the pusher on side-band 2. A hook that is not
//! executable is ignored, as git ignores it.
//!
//! Unlike git, a hook gets at most the server's `--timeout` to finish; then it is
//! killed and counts as having failed. A hook still running when its session is
//! dropped (gitd stopping) is killed too. At most 1 MiB of a hook's output reaches
//! the pusher; the rest is read and dropped.

use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use gix::bstr::{BStr, ByteSlice};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::warn;

use super::output::Remote;

/// How often an idle hook's connection gets a keepalive (git's default).
const KEEPALIVE: Duration = Duration::from_secs(5);

/// Most bytes of one hook run's output passed on to the pusher: enough for any
/// message meant for a person, and a runaway hook cannot flood the client.
const MAX_OUTPUT: usize = 1 << 20;

/// Variables of gitd's own environment a hook must not inherit: systemd's socket
/// passing and notification (a hook could otherwise talk to systemd as gitd), and
/// git's repository selection, which gitd sets itself.
const SCRUB: &[&str] = &[
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_QUARANTINE_PATH",
    "GIT_NAMESPACE",
    "GIT_PUSH_OPTION_COUNT",
];

/// Where a repository's hooks are and how to run them.
#[derive(Debug, Clone)]
pub struct Hooks {
    dir: PathBuf,
    git_dir: PathBuf,
    peer: Option<std::net::SocketAddr>,
    timeout: Duration,
}

/// One run of a hook.
#[derive(Debug, Default)]
pub struct Invocation {
    pub args: Vec<OsString>,
    pub stdin: Vec<u8>,
    pub env: Vec<(String, OsString)>,
}

impl Hooks {
    /// `hooks_path` is `core.hooksPath`; relative to the git directory, where push
    /// hooks run.
    pub fn new(
        git_dir: &Path,
        hooks_path: Option<&BStr>,
        peer: Option<std::net::SocketAddr>,
        timeout: Duration,
    ) -> Self {
        let dir = match hooks_path.and_then(|p| p.to_path().ok()) {
            Some(p) => git_dir.join(p),
            None => git_dir.join("hooks"),
        };
        Hooks {
            dir,
            git_dir: git_dir.to_owned(),
            peer,
            timeout,
        }
    }

    /// The hook's path if it exists and is executable.
    pub fn find(&self, name: &str) -> Option<PathBuf> {
        let path = self.dir.join(name);
        let meta = std::fs::metadata(&path).ok()?;
        if !meta.is_file() {
            return None;
        }
        if meta.permissions().mode() & 0o111 == 0 {
            warn!(
                "the '{}' hook was ignored because it's not set as executable",
                path.display()
            );
            return None;
        }
        Some(path)
    }

    /// Run hook `name` if present, its output going to the pusher. `None` if there
    /// is no such hook, else whether it succeeded.
    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        out: &mut Remote<'_, S>,
        name: &str,
        inv: Invocation,
    ) -> Option<bool> {
        let path = self.find(name)?;
        match self.spawn_and_wait(out, &path, inv).await {
            Ok(ok) => Some(ok),
            Err(e) => {
                warn!("hook {}: {e}", path.display());
                out.error(&format!("cannot run {name}: {e}")).await;
                Some(false)
            }
        }
    }

    async fn spawn_and_wait<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        out: &mut Remote<'_, S>,
        path: &Path,
        inv: Invocation,
    ) -> std::io::Result<bool> {
        let (read_end, write_end) = pipe()?;
        let mut cmd = tokio::process::Command::new(path);
        cmd.args(&inv.args)
            .current_dir(&self.git_dir)
            .stdin(Stdio::piped())
            // One pipe for both, so the pusher sees them interleaved as written.
            .stdout(Stdio::from(write_end.try_clone()?))
            .stderr(Stdio::from(write_end))
            // Its own process group, so that a timeout kills what it started too.
            .process_group(0)
            .kill_on_drop(true);
        for var in SCRUB {
            cmd.env_remove(var);
        }
        cmd.env("GIT_DIR", ".");
        match self.peer {
            Some(peer) => {
                // git daemon's form: IPv6 addresses in brackets.
                let addr = match peer.ip() {
                    std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                    v4 => v4.to_string(),
                };
                cmd.env("REMOTE_ADDR", addr)
                    .env("REMOTE_PORT", peer.port().to_string());
            }
            None => {
                cmd.env_remove("REMOTE_ADDR").env_remove("REMOTE_PORT");
            }
        }
        for (k, v) in &inv.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        // The write ends now belong to the child alone: EOF comes when it is done.
        drop(cmd);
        if let Some(mut stdin) = child.stdin.take() {
            let input = inv.stdin;
            // A hook that does not read its input must not block us (git ignores
            // EPIPE here too).
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            });
        }
        let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end)?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut buf = vec![0u8; 8192];
        let mut forwarded = 0;
        loop {
            tokio::select! {
                read = reader.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        // Past the cap the hook's output is read and dropped, so
                        // that the hook does not block on a full pipe.
                        if forwarded < MAX_OUTPUT {
                            let n = n.min(MAX_OUTPUT - forwarded);
                            out.send(&buf[..n]).await;
                            forwarded += n;
                            if forwarded == MAX_OUTPUT {
                                out.send(b"\n").await;
                                out.error(&format!(
                                    "output of hook {} truncated after {MAX_OUTPUT} bytes",
                                    display_name(path)
                                ))
                                .await;
                            }
                        }
                    }
                },
                () = tokio::time::sleep(KEEPALIVE) => out.keepalive().await,
                () = tokio::time::sleep_until(deadline) => {
                    kill_group(&mut child);
                    out.error(&format!("hook {} timed out", display_name(path))).await;
                    break;
                }
            }
        }
        // Output closed (or the time is up): the hook has exited or is about to.
        let status = match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                kill_group(&mut child);
                child.wait().await?
            }
        };
        Ok(status.success())
    }
}

/// Kill a hook and everything in its process group.
fn kill_group(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill has no memory effects; the group is the hook's own, as it
        // was started with `process_group(0)` and has not been reaped yet.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.start_kill();
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, which we then own.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

/// The environment git gives `pre-receive` and `post-receive` for push options:
/// `GIT_PUSH_OPTION_COUNT` and `GIT_PUSH_OPTION_<n>` when the client sent options
/// (the count unset when push options were not negotiated).
pub fn push_option_env(options: Option<&[gix::bstr::BString]>) -> Vec<(String, OsString)> {
    let Some(options) = options else {
        return Vec::new();
    };
    let mut env: Vec<(String, OsString)> = options
        .iter()
        .enumerate()
        .map(|(i, o)| {
            (
                format!("GIT_PUSH_OPTION_{i}"),
                std::ffi::OsStr::from_bytes(o.as_bytes()).to_owned(),
            )
        })
        .collect();
    env.push((
        "GIT_PUSH_OPTION_COUNT".into(),
        options.len().to_string().into(),
    ));
    env
}
