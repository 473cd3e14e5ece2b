//! Why and when gitd stops: a signal, or no connection for `--idle-timeout`.
//!
//! [`Activity`] counts open connections and remembers when the last one closed; the
//! listener asks it for the idle deadline. Stopping means: stop accepting (queued
//! connections stay in the socket's backlog for the next instance), tell systemd
//! `STOPPING=1`, let running requests finish within a grace period, exit 0.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::notify;

/// Connection bookkeeping shared by the listener and the handlers.
#[derive(Debug)]
pub struct Activity {
    open: AtomicUsize,
    served: AtomicU64,
    bytes: AtomicU64,
    last_close: Mutex<Instant>,
    changed: Notify,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            open: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            last_close: Mutex::new(Instant::now()),
            changed: Notify::new(),
        }
    }
}

impl Activity {
    /// Count a new connection until the returned guard drops.
    pub fn open(self: &Arc<Self>) -> ConnectionGuard {
        self.open.fetch_add(1, Ordering::SeqCst);
        self.report();
        ConnectionGuard {
            activity: Arc::clone(self),
        }
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Record a finished request and the bytes it sent.
    pub fn served(&self, bytes: u64) {
        self.served.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Requests finished so far.
    pub fn served_count(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// When gitd becomes idle, if no connection is open.
    pub fn idle_deadline(&self, timeout: std::time::Duration) -> Option<Instant> {
        (self.open_connections() == 0)
            .then(|| *self.last_close.lock().expect("not poisoned") + timeout)
    }

    /// Resolves after a connection closed.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    fn report(&self) {
        notify::status(
            self.open_connections(),
            self.served.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        );
    }
}

/// Held by each connection handler; closing the connection updates the idle clock.
#[derive(Debug)]
pub struct ConnectionGuard {
    activity: Arc<Activity>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        *self.activity.last_close.lock().expect("not poisoned") = Instant::now();
        self.activity.open.fetch_sub(1, Ordering::SeqCst);
        self.activity.report();
        self.activity.changed.notify_one();
    }
}

/// SIGTERM and SIGINT, caught from the moment this is created. Create it before
/// telling systemd `READY=1`, or an early stop request would kill gitd uncleanly.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Register the handlers (needs a tokio runtime).
    pub fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves with the signal's name once one arrives.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
