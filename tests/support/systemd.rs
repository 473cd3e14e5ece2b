//! A private, real `systemd --user` manager for end-to-end tests of the shipped units.
//!
//! Why it looks like this: test and CI machines have no systemd as PID 1 and no user
//! session, yet `git.socket`/`git.service` only mean something to a real manager
//! (socket activation, `Type=notify`, idle exits, re-activation). So the manager runs
//! as root in its own mount namespace, where
//!
//! * `/run/systemd` is covered by a private directory holding `system/`, so
//!   `sd_booted()` says yes without touching the host's `/run`;
//! * `/sys/fs/cgroup` is covered by a tmpfs with only the named v1 `systemd`
//!   hierarchy and the v2 unified one mounted again (the "hybrid" layout systemd
//!   knows), which hides the host's v1 controllers from it;
//! * the manager's shell is moved into a cgroup of its own in both hierarchies
//!   *before* `exec`, and refuses to `exec` unless `/proc/self/cgroup` proves it.
//!   A manager started in the root cgroup would migrate every process on the machine
//!   into its `init.scope`; that check is the one thing here that must never go.
//!
//! Each [`UserManager`] has its own state directory, `HOME`, `XDG_RUNTIME_DIR` and
//! cgroup (`user.slice/user-0.slice/user@0-gitd-<pid>-<n>.service`), so tests may run
//! several at once. The test process itself never enters the namespace: it talks to
//! the manager with `systemctl --user` over `$XDG_RUNTIME_DIR/systemd/private`.
//!
//! No journald runs there, so service output is lost unless the unit appends it to a
//! file: [`UserManager::log_to`] writes such a drop-in.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The manager binary; `systemd --user` is this with `--user`.
pub const SYSTEMD: &str = "/usr/lib/systemd/systemd";

/// Set to `1` (CI does) to turn "cannot build the sandbox here" from a skip into a
/// failure, so a broken CI machine cannot pass by skipping.
pub const REQUIRE_ENV: &str = "GITD_REQUIRE_SYSTEMD";

/// How long the manager may take to reach `running`.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the manager may take to stop its units and exit after `systemctl --user exit`.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound for any single `systemctl` call.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound for the namespace that removes the cgroups.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Run by `sh -c` inside `unshare -m --propagation private`, with `$1` the state
/// directory, `$2` the cgroup path and `$3` the terminal to use as `/dev/console`.
/// Ends by `exec`ing the manager, so the spawned child's PID is the manager's PID.
const INNER: &str = r#"
set -eu
B=$1 CG=$2 CONSOLE=$3
case $CG in "" | /* | *..*) echo "bad cgroup path '$CG'" >&2; exit 1 ;; esac
# sd_booted() looks for /run/systemd/system: provide it privately.
mkdir -p "$B/fakerun/system"
if [ -d /run/systemd ]; then
  mount --bind "$B/fakerun" /run/systemd
else
  mount -t tmpfs -o mode=755,nosuid,nodev gitd-run /run
  mkdir -p /run/systemd/system
fi
# Only the named systemd v1 hierarchy and the unified v2 one: the hybrid layout.
mount -t tmpfs -o mode=755,nosuid,nodev,noexec cgview /sys/fs/cgroup
mkdir /sys/fs/cgroup/systemd /sys/fs/cgroup/unified
mount -t cgroup -o none,name=systemd,nosuid,nodev,noexec cgroup /sys/fs/cgroup/systemd
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup/unified
# Retried: a parallel clean-up may be removing an (empty) shared parent right now.
i=0
until { mkdir -p "/sys/fs/cgroup/systemd/$CG" "/sys/fs/cgroup/unified/$CG" &&
        echo $$ > "/sys/fs/cgroup/systemd/$CG/cgroup.procs" &&
        echo $$ > "/sys/fs/cgroup/unified/$CG/cgroup.procs"; } 2>/dev/null; do
  i=$((i + 1))
  [ "$i" -lt 50 ] || { echo "cannot move into cgroup $CG" >&2; exit 1; }
  sleep 0.1
done
# Never run a manager in the root cgroup: it would pull every host process into its
# init.scope. Proof from this very process (the one that execs) or no manager.
v1= v2=
while IFS= read -r line; do
  case $line in
    "0::/$CG") v2=1 ;;
    *":name=systemd:/$CG") v1=1 ;;
  esac
done < /proc/self/cgroup
if [ -z "$v1" ] || [ -z "$v2" ]; then
  echo "refusing to start systemd --user outside cgroup /$CG:" >&2
  cat /proc/self/cgroup >&2
  exit 1
fi
# Without a journal the manager logs to /dev/console, which it opens itself and only
# uses if it is a terminal: give it the test's pty rather than the host's console.
if [ -e /dev/console ] && [ -c "$CONSOLE" ]; then
  mount --bind "$CONSOLE" /dev/console || echo "no console log: cannot bind $CONSOLE" >&2
fi
exec /usr/lib/systemd/systemd --user --log-target=console
"#;

/// Run by `sh -c` in a fresh private mount namespace with `$1` the cgroup path: kill
/// what is left in that cgroup (only possible after the manager was SIGKILLed: its
/// services then outlive it), remove it depth-first, then its parents if empty. The
/// hierarchies are mounted privately again so this works whatever the host mounts
/// where.
const CLEANUP: &str = r#"
set -u
CG=$1
case $CG in "" | /* | *..*) echo "bad cgroup path '$CG'" >&2; exit 1 ;; esac
mount -t tmpfs -o mode=755,nosuid,nodev,noexec cgview /sys/fs/cgroup || exit 1
mkdir /sys/fs/cgroup/systemd /sys/fs/cgroup/unified
mount -t cgroup -o none,name=systemd,nosuid,nodev,noexec cgroup /sys/fs/cgroup/systemd || exit 1
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup/unified || exit 1
status=0
for h in systemd unified; do
  d=/sys/fs/cgroup/$h/$CG
  [ -d "$d" ] || continue
  i=0
  while :; do
    pids=$(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null)
    [ -n "$pids" ] || break
    if [ "$i" -ge 50 ]; then echo "processes left in $d: $pids" >&2; break; fi
    kill -KILL $pids 2>/dev/null
    i=$((i + 1))
    sleep 0.1
  done
  find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  if [ -d "$d" ]; then echo "cannot remove $d" >&2; status=1; continue; fi
  p=$CG
  while case $p in */*) true ;; *) false ;; esac; do
    p=${p%/*}
    rmdir "/sys/fs/cgroup/$h/$p" 2>/dev/null || break
  done
done
exit $status
"#;

/// Run by `sh -c` in a fresh private mount namespace with `$1` the uid: remove the
/// empty cgroups that test processes which no longer exist left behind (a test run
/// killed outright gets its managers stopped, but cannot remove their cgroups).
/// Populated cgroups are left alone: `rmdir` refuses them.
const SWEEP: &str = r#"
set -u
U=$1
case $U in "" | *[!0-9]*) exit 1 ;; esac
mount -t tmpfs -o mode=755,nosuid,nodev,noexec cgview /sys/fs/cgroup || exit 1
mkdir /sys/fs/cgroup/systemd /sys/fs/cgroup/unified
mount -t cgroup -o none,name=systemd,nosuid,nodev,noexec cgroup /sys/fs/cgroup/systemd || exit 1
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup/unified || exit 1
for h in systemd unified; do
  s=/sys/fs/cgroup/$h/user.slice/user-$U.slice
  for d in "$s"/user@"$U"-gitd-*-*.service; do
    [ -d "$d" ] || continue
    n=${d##*/user@"$U"-gitd-}
    pid=${n%%-*}
    case $pid in "" | *[!0-9]*) continue ;; esac
    kill -0 "$pid" 2>/dev/null && continue
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  rmdir "$s" /sys/fs/cgroup/$h/user.slice 2>/dev/null
done
exit 0
"#;

/// A running private `systemd --user`; stopped and cleaned up on drop.
///
/// Create and drop it on the same thread: the manager gets SIGTERM when the thread
/// that spawned it ends (so a killed test run does not leave managers behind).
pub struct UserManager {
    /// Scratch `HOME` of the manager and of everything run through [`Self::command`].
    pub home: PathBuf,
    /// `XDG_RUNTIME_DIR`; `systemd/private` in it is the manager's control socket.
    pub runtime_dir: PathBuf,
    /// Directory for this instance's files (manager output, logs); `home` is inside.
    pub state: PathBuf,
    /// The manager's cgroup, relative to each hierarchy's root.
    pub cgroup: String,
    child: Option<Child>,
    /// The manager's stdout/stderr (generators write there) and its console log.
    output: PathBuf,
    console: Option<Console>,
}

/// Whether [`REQUIRE_ENV`] asks for a hard failure instead of a skip.
pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// Report that `test` cannot run here: panics when [`required`], else prints why so
/// the skip is visible in `--nocapture` output, and the caller returns.
pub fn skip(test: &str, why: &str) {
    if required() {
        panic!("{test}: {why} ({REQUIRE_ENV}=1, so this is a failure, not a skip)");
    }
    eprintln!("SKIPPED {test}: {why} (set {REQUIRE_ENV}=1 to make this fail)");
}

impl UserManager {
    /// Start a manager, or apply the skip rule with the reason it could not start.
    pub fn start_or_skip(test: &str) -> Option<UserManager> {
        match Self::start(test) {
            Ok(m) => Some(m),
            Err(why) => {
                skip(test, &format!("no private systemd --user: {why}"));
                None
            }
        }
    }

    /// Start a manager in its own namespace and cgroup and wait until it is running.
    /// `name` only makes the state directory recognisable.
    pub fn start(name: &str) -> Result<UserManager, String> {
        preflight()?;
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(sweep_stale_cgroups);
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        let cgroup = format!("user.slice/user-{uid}.slice/user@{uid}-gitd-{pid}-{n}.service");
        assert!(
            !cgroup.is_empty() && !cgroup.starts_with('/') && !cgroup.contains(".."),
            "bad cgroup path {cgroup:?}"
        );

        let state = super::scratch(&format!("systemd-{name}"));
        let home = state.join("home");
        std::fs::create_dir_all(home.join(".config/systemd/user")).map_err(|e| e.to_string())?;
        // Unix socket paths are short (108 bytes) and systemd binds a few in here;
        // deep target dirs get a runtime dir with a short path instead. Not in
        // /tmp, which the unit's PrivateTmp= hides from gitd (notify socket
        // included), nor in /run, which the unit's ProtectProc= covers with an
        // empty tmpfs where /run is not a mount point of its own (as here; on a
        // real host it is, and the runtime dir is /run/user/UID).
        let mut runtime_dir = state.join("run");
        if runtime_dir.as_os_str().len() > 70 {
            runtime_dir = PathBuf::from(format!("/var/lib/gitd-sd-{pid}-{n}"));
        }
        let _ = std::fs::remove_dir_all(&runtime_dir);
        create_private_dir(&runtime_dir)?;
        let output = state.join("manager.out");
        // Append mode: the manager's stdout/stderr and the console reader share it.
        let out = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .append(true)
            .open(&output)
            .map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let console = Console::new(&output)?;

        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c", INNER, "sh"])
            .arg(&state)
            .arg(&cgroup)
            .arg(&console.path)
            .env_clear()
            .env("PATH", path_env())
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", &runtime_dir)
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if let Some(level) = std::env::var_os("SYSTEMD_LOG_LEVEL") {
            cmd.env("SYSTEMD_LOG_LEVEL", level);
        }
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // Own session: terminal signals meant for the test run don't hit it.
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            let _ = std::fs::remove_dir_all(&runtime_dir);
            format!("cannot run unshare: {e}")
        })?;
        let mut manager = UserManager {
            home,
            runtime_dir,
            state,
            cgroup,
            child: Some(child),
            output,
            console: Some(console),
        };
        manager.wait_running()?;
        Ok(manager)
    }

    fn wait_running(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "the manager exited ({status}) before running:\n{}",
                    self.manager_output()
                ));
            }
            if let Ok(out) = run_bounded(
                self.command("systemctl")
                    .args(["--user", "show", "-p", "SystemState", "--value"]),
                Duration::from_secs(5),
            ) {
                last = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                // "degraded": running, with some stock user unit failed; ours can still run.
                if out.status.success() && (last == "running" || last == "degraded") {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "the manager did not reach running within {START_TIMEOUT:?} (SystemState {last:?}):\n{}",
            self.manager_output()
        ))
    }

    /// The manager's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Where `systemctl --user` and `gitd install --user` find user units here.
    pub fn unit_dir(&self) -> PathBuf {
        self.home.join(".config/systemd/user")
    }

    /// A command with only this manager's environment: its `HOME` and
    /// `XDG_RUNTIME_DIR`, and none of the caller's `XDG_*`, `DBUS_*` or `SYSTEMD_*`
    /// variables, so nothing run through it can reach the developer's own session
    /// manager (systemctl falls back to `DBUS_SESSION_BUS_ADDRESS`) or unit paths.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", path_env())
            .env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", &self.runtime_dir)
            .env("LANG", "C.UTF-8")
            .env("SYSTEMD_PAGER", "")
            .stdin(Stdio::null());
        cmd
    }

    /// `systemctl --user ARGS` against this manager (bounded in time).
    pub fn systemctl(&self, args: &[&str]) -> Output {
        let mut cmd = self.command("systemctl");
        cmd.args(["--user", "--no-pager"]).args(args);
        run_bounded(&mut cmd, SYSTEMCTL_TIMEOUT)
            .unwrap_or_else(|e| panic!("systemctl --user {args:?}: {e}"))
    }

    /// One property of `unit`, as `systemctl --user show -p PROP --value` prints it.
    pub fn show(&self, unit: &str, property: &str) -> String {
        let out = self.systemctl(&["show", "-p", property, "--value", unit]);
        assert!(
            out.status.success(),
            "systemctl --user show -p {property} {unit}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Poll `property` of `unit` until `pred` accepts it; the last value either way.
    pub fn wait_property(
        &self,
        unit: &str,
        property: &str,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.show(unit, property);
            if pred(&value) {
                return Ok(value);
            }
            if Instant::now() >= deadline {
                return Err(value);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Write `<unit>.d/log.conf` appending the unit's stdout and stderr to `file`
    /// (there is no journal to read them from). Takes effect on the next daemon-reload.
    pub fn log_to(&self, unit: &str, file: &Path) -> PathBuf {
        let dir = self.unit_dir().join(format!("{unit}.d"));
        std::fs::create_dir_all(&dir).unwrap();
        // `%` starts a specifier in unit files.
        let path = file.display().to_string().replace('%', "%%");
        let conf = dir.join("log.conf");
        std::fs::write(
            &conf,
            format!("[Service]\nStandardOutput=append:{path}\nStandardError=append:{path}\n"),
        )
        .unwrap();
        conf
    }

    /// What the manager logged (its console) and what its generators printed.
    pub fn manager_output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Everything useful after a failure: `systemctl status` and key properties of
    /// `units`, the contents of `files` (service logs), and the manager's own output.
    /// Never panics itself: it runs while a test is already failing.
    pub fn diagnose(&self, units: &[&str], files: &[&Path]) -> String {
        let systemctl = |args: &[&str]| {
            let mut cmd = self.command("systemctl");
            cmd.args(["--user", "--no-pager"]).args(args);
            match run_bounded(&mut cmd, SYSTEMCTL_TIMEOUT) {
                Ok(out) => format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => format!("(systemctl --user {args:?}: {e})\n"),
            }
        };
        let mut report = String::from("\n===== systemd --user diagnostics =====\n");
        let mut args = vec!["status", "--full", "--lines=0"];
        args.extend_from_slice(units);
        report.push_str(&systemctl(&args));
        for unit in units {
            let props = systemctl(&[
                "show",
                "-p",
                "ActiveState,SubState,Result,NRestarts,ExecMainPID,ExecMainCode,ExecMainStatus,\
                 ExecMainStartTimestampMonotonic,ExecMainExitTimestampMonotonic,StatusText,\
                 FragmentPath,DropInPaths,UnitFileState",
                unit,
            ]);
            report.push_str(&format!("--- {unit}\n{props}"));
        }
        for file in files {
            let text = std::fs::read_to_string(file).unwrap_or_else(|e| format!("({e})"));
            report.push_str(&format!("--- {}\n{text}\n", file.display()));
        }
        report.push_str(&format!(
            "--- manager output ({})\n{}",
            self.output.display(),
            self.manager_output()
        ));
        report
    }

    /// Stop the manager (gracefully, then by force), then remove its cgroups and
    /// runtime dir. Idempotent; errors are printed, as this runs from `Drop`.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        if matches!(child.try_wait(), Ok(None)) {
            let mut exit = self.command("systemctl");
            exit.args(["--user", "exit"]);
            let asked =
                run_bounded(&mut exit, Duration::from_secs(5)).is_ok_and(|o| o.status.success());
            if !asked {
                // SAFETY: `pid` is our own unreaped child, so it cannot have been reused.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            if wait_child(&mut child, EXIT_TIMEOUT).is_none() {
                eprintln!(
                    "systemd --user (pid {pid}) did not exit within {EXIT_TIMEOUT:?}: SIGKILL"
                );
                let _ = child.kill();
                let _ = child.wait();
            }
        } else {
            let _ = child.wait();
        }

        let mut cmd = Command::new("unshare");
        cmd.args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            CLEANUP,
            "sh",
            &self.cgroup,
        ])
        .env_clear()
        .env("PATH", path_env())
        .stdin(Stdio::null());
        match run_bounded(&mut cmd, CLEANUP_TIMEOUT) {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "cleaning up cgroup {} failed ({}): {}",
                self.cgroup,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("cleaning up cgroup {}: {e}", self.cgroup),
        }
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
        let _ = std::fs::remove_dir_all(self.state.join("fakerun"));
        // Last: everything that could log to the console is gone now.
        drop(self.console.take());
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A pseudo-terminal standing in for `/dev/console` inside the namespace; a thread
/// appends what the manager writes to it to the manager's output file.
struct Console {
    /// The terminal's `/dev/pts/N` path, bind-mounted over `/dev/console`.
    path: PathBuf,
    /// Held open so the reader never sees the end of the terminal while nothing else
    /// has it open (before the manager opens it, or between its opens); dropping it
    /// once the manager is gone ends the reader.
    _terminal: std::fs::File,
}

impl Console {
    fn new(log: &Path) -> Result<Console, String> {
        use std::os::fd::FromRawFd;
        let err = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
        // SAFETY: plain libc calls on a descriptor this function owns; ptsname_r gets
        // a buffer of the length it is told.
        let (master, path) = unsafe {
            let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(err("posix_openpt"));
            }
            let master = std::fs::File::from_raw_fd(fd);
            if libc::grantpt(fd) != 0 || libc::unlockpt(fd) != 0 {
                return Err(err("grantpt/unlockpt"));
            }
            let mut name = [0 as libc::c_char; 128];
            if libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) != 0 {
                return Err(err("ptsname_r"));
            }
            let path = std::ffi::CStr::from_ptr(name.as_ptr())
                .to_string_lossy()
                .into_owned();
            (master, PathBuf::from(path))
        };
        let terminal = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // Raw: no "\n" -> "\r\n", no echo.
        // SAFETY: termios is plain data; the descriptor is open.
        unsafe {
            use std::os::fd::AsRawFd;
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(terminal.as_raw_fd(), &mut t) == 0 {
                libc::cfmakeraw(&mut t);
                libc::tcsetattr(terminal.as_raw_fd(), libc::TCSANOW, &t);
            }
        }
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(log)
            .map_err(|e| e.to_string())?;
        let mut master = master;
        // Detached: it ends with EIO once no process has the terminal open. It must
        // keep draining whatever happens, or a full pty would block the manager.
        std::thread::spawn(move || {
            use std::io::Write;
            let mut buf = [0u8; 4096];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let _ = log.write_all(&buf[..n]);
            }
        });
        Ok(Console {
            path,
            _terminal: terminal,
        })
    }
}

/// See [`SWEEP`]; best effort, so failures are only printed.
fn sweep_stale_cgroups() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() }.to_string();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        SWEEP,
        "sh",
        &uid,
    ])
    .env_clear()
    .env("PATH", path_env())
    .stdin(Stdio::null());
    match run_bounded(&mut cmd, CLEANUP_TIMEOUT) {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "sweeping stale test cgroups failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("sweeping stale test cgroups: {e}"),
    }
}

/// Why the sandbox cannot work here, checked before touching anything.
fn preflight() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(format!(
            "not root (euid {euid}): mount namespaces and cgroupfs need root"
        ));
    }
    if !Path::new(SYSTEMD).is_file() {
        return Err(format!("{SYSTEMD} is not installed"));
    }
    for tool in ["unshare", "systemctl"] {
        let mut cmd = Command::new(tool);
        cmd.arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match run_bounded(&mut cmd, Duration::from_secs(10)) {
            Ok(out) if out.status.success() => {}
            Ok(out) => return Err(format!("`{tool} --version` failed: {}", out.status)),
            Err(e) => return Err(format!("cannot run {tool}: {e}")),
        }
    }
    if !Path::new("/sys/fs/cgroup").is_dir() {
        return Err("/sys/fs/cgroup does not exist".into());
    }
    std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    Ok(())
}

fn path_env() -> std::ffi::OsString {
    std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into())
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run `cmd` to completion, collecting its output, but give up (and kill it) after
/// `timeout`: a wedged manager must fail the test, not hang it.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    match wait_child(&mut child, timeout) {
        Some(status) => Ok(Output {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        }),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "{:?} did not finish within {timeout:?}",
                cmd.get_program()
            ))
        }
    }
}
