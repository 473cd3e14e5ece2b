//! sd_notify(3) messages: readiness, live status, stopping, watchdog.
//!
//! All of these are no-ops when `NOTIFY_SOCKET` is unset (standalone runs).

use sd_notify::NotifyState;

/// Tell systemd the sockets are ready and requests are being served.
pub fn ready() {
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Ready]) {
        tracing::warn!("cannot tell systemd gitd is ready: {e}");
    }
}

/// Update the one-line status `systemctl status git.service` shows.
pub fn status(open: usize, served: u64, bytes: u64) {
    let line = format!("{open} open connections, {served} requests served, {bytes} bytes sent");
    let _ = sd_notify::notify(false, &[NotifyState::Status(&line)]);
}

/// Tell systemd gitd is exiting on purpose (idle or signal), so it is not a failure.
pub fn stopping() {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
}

/// The watchdog interval requested by systemd (`WatchdogSec=`), if any.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| std::time::Duration::from_micros(usec))
}

/// Ping the watchdog.
pub fn watchdog() {
    let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
}
