//! The listener (accept loop, connection limit, idle exit) and the per-connection
//! [`Handler`], after mini-redis.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::handler::Handler;
use crate::policy::Policy;
use crate::receive_pack::quarantine;
use crate::shutdown::Activity;
use crate::{Result, notify};

/// Server settings, fixed at start.
#[derive(Debug, Clone)]
pub struct Config {
    pub policy: Policy,
    /// Exit once no connection has been open this long.
    pub idle_timeout: Option<Duration>,
    /// 0 means unlimited.
    pub max_connections: usize,
    /// Time allowed from connect to the request line.
    pub init_timeout: Duration,
    /// Time allowed for each read or write afterwards.
    pub timeout: Duration,
    /// How long running requests may continue after a stop was decided.
    pub shutdown_grace: Duration,
    /// What one `git archive --remote` request may archive.
    pub archive_limits: crate::upload_archive::Limits,
    /// Largest pack a push may send, in bytes (0: no limit of the server's own).
    pub max_input_size: u64,
    /// `--max-request-memory`: what one request may make gitd hold for what its
    /// client sends.
    pub max_request_memory: u64,
    /// `--verbose`: log every request at INFO, as git daemon's `--verbose` logs
    /// each one; without it only failures are logged (successes at DEBUG).
    pub log_requests: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            policy: Policy::default(),
            idle_timeout: None,
            max_connections: 32,
            init_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(30),
            archive_limits: Default::default(),
            max_input_size: 0,
            max_request_memory: 64 << 20,
            log_requests: false,
        }
    }
}

/// How long after the last connection closed gitd gives back the memory serving
/// made resident: long enough for the blocking pool's threads to have exited (see
/// `main.rs`), so what they touched on the way out is released too. Nobody waits
/// on the runtime then, so the few milliseconds it takes run on it.
const GIVE_BACK_AFTER: Duration = Duration::from_secs(3);

/// Serve on `listeners` until `shutdown` resolves or gitd has been idle for
/// `idle_timeout`; then drain and return.
pub async fn run(
    listeners: Vec<std::net::TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let listeners = listeners
        .into_iter()
        .map(|l| {
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    for l in &listeners {
        info!("listening on {}", l.local_addr()?);
    }
    match config.idle_timeout {
        Some(t) => info!("idle exit after {}s without connections", t.as_secs_f64()),
        None => info!("idle exit disabled"),
    }
    let config = Arc::new(config);
    let activity = Arc::new(Activity::default());
    let slots = Arc::new(Slots::default());
    // Every handler holds a clone of the sender; `recv()` returns `None` once all are gone.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);

    notify::ready();
    sweep_quarantines(&config);
    crate::memory::release_start_up_code();
    let watchdog = notify::watchdog_interval().map(|every| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every / 2);
            loop {
                tick.tick().await;
                notify::watchdog();
            }
        })
    });

    tokio::pin!(shutdown);
    let mut next = 0;
    // Requests served when memory was last given back.
    let mut given_back = 0;
    let reason = loop {
        let idle_at = config.idle_timeout.and_then(|t| activity.idle_deadline(t));
        let give_back_at = (activity.served_count() != given_back)
            .then(|| activity.idle_deadline(GIVE_BACK_AFTER))
            .flatten();
        tokio::select! {
            accepted = accept(&listeners, &mut next) => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let guard = activity.open();
                // IPv4 clients of a dual-stack socket appear as ::ffff:a.b.c.d.
                let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                let admitted = slots.admit(config.max_connections);
                let handler = Handler::new(Arc::clone(&config), Arc::clone(&activity), Some(peer));
                let done = done_tx.clone();
                if !admitted {
                    tokio::spawn(async move {
                        handler.refuse(stream).await;
                        drop((guard, done));
                    });
                    continue;
                }
                let id = slots.next_id();
                let slot = SlotGuard { slots: Arc::clone(&slots), id };
                let requested = Arc::clone(&handler.requested);
                let task = tokio::spawn(async move {
                    handler.run(stream).await;
                    drop((guard, done, slot));
                });
                // The task cannot have run yet (one thread): registering now is race-free.
                slots.register(Slot { id, ip: peer.ip(), abort: task.abort_handle(), requested });
            }
            _ = sleep_until(give_back_at) => {
                given_back = activity.served_count();
                crate::memory::give_back();
            }
            _ = sleep_until(idle_at) => break format!("idle for {}s", config.idle_timeout.unwrap_or_default().as_secs()),
            _ = activity.changed() => {}
            _ = &mut shutdown => break "signal".to_string(),
        }
    };
    // Close (never shut down) our copies of the listening sockets: connections that
    // arrive from now on stay queued for the next instance.
    drop(listeners);
    notify::stopping();
    info!(
        "stopping ({reason}), {} connections open",
        activity.open_connections()
    );
    drop(done_tx);
    if tokio::time::timeout(config.shutdown_grace, done_rx.recv())
        .await
        .is_err()
    {
        warn!(
            "{} connections still open after {:?}; exiting anyway",
            activity.open_connections(),
            config.shutdown_grace
        );
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    Ok(())
}

/// Remove in the background what pushes of a killed gitd left in the served
/// repositories (see [`quarantine::sweep_under`]).
fn sweep_quarantines(config: &Config) {
    let roots: Vec<std::path::PathBuf> = match &config.policy.base_path {
        Some(base) => vec![base.clone()],
        None => config.policy.whitelist.clone(),
    };
    if !roots.is_empty() {
        tokio::task::spawn_blocking(move || quarantine::sweep_under(&roots));
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Accept from whichever listener is ready, starting the scan at a rotating index so
/// no socket starves the others.
async fn accept(
    listeners: &[TcpListener],
    next: &mut usize,
) -> std::io::Result<(TcpStream, SocketAddr)> {
    if listeners.is_empty() {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        for i in 0..listeners.len() {
            let idx = (*next + i) % listeners.len();
            if let Poll::Ready(r) = listeners[idx].poll_accept(cx) {
                *next = idx + 1;
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    })
    .await
}

/// Open connections by client address, so that `--max-connections` cannot be
/// exhausted by one address. When full, git daemon makes room by killing a
/// connection of an address that holds several, whoever the newcomer is; we do the
/// same, choosing better: the address holding the most, and of its connections the
/// newest that has not even sent its request line (a stalled or idle one), else its
/// newest.
#[derive(Debug, Default)]
struct Slots {
    open: Mutex<Vec<Slot>>,
    ids: AtomicU64,
}

/// One admitted connection.
#[derive(Debug)]
struct Slot {
    id: u64,
    ip: IpAddr,
    abort: AbortHandle,
    /// Set by the handler once the request line is in.
    requested: Arc<AtomicBool>,
}

impl Slots {
    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    fn register(&self, slot: Slot) {
        self.open.lock().expect("not poisoned").push(slot);
    }

    /// May a new connection be served? Makes room if it can.
    fn admit(&self, max: usize) -> bool {
        let mut open = self.open.lock().expect("not poisoned");
        if max == 0 || open.len() < max {
            return true;
        }
        let mut counts: HashMap<IpAddr, usize> = HashMap::new();
        for slot in open.iter() {
            *counts.entry(slot.ip).or_default() += 1;
        }
        let Some((busiest, n)) = counts.into_iter().max_by_key(|&(_, n)| n) else {
            return false;
        };
        if n < 2 {
            return false;
        }
        let newest = |stalled: bool| {
            open.iter().rposition(|s| {
                s.ip == busiest && (!stalled || !s.requested.load(Ordering::Relaxed))
            })
        };
        let Some(pos) = newest(true).or_else(|| newest(false)) else {
            return false;
        };
        let victim = open.remove(pos);
        warn!(
            "too many connections: dropping one of the {n} from {}",
            victim.ip
        );
        victim.abort.abort();
        true
    }
}

/// Removes a connection from [`Slots`] when its task ends (or is aborted).
struct SlotGuard {
    slots: Arc<Slots>,
    id: u64,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots
            .open
            .lock()
            .expect("not poisoned")
            .retain(|slot| slot.id != self.id);
    }
}

/// `--inetd`: serve the one connection on stdin/stdout, then return.
pub async fn serve_inetd(config: Config) -> Result<()> {
    use std::os::fd::FromRawFd;
    let config = Arc::new(config);
    let activity = Arc::new(Activity::default());
    // SAFETY: fd 0 is ours for the life of the process; dup() gives the TcpStream
    // its own descriptor to close.
    let fd = unsafe { libc::dup(0) };
    let socket = (fd >= 0)
        .then(|| unsafe { std::net::TcpStream::from_raw_fd(fd) })
        .filter(|s| s.peer_addr().is_ok());
    match socket {
        Some(std_stream) => {
            let peer = std_stream
                .peer_addr()
                .ok()
                .map(|p| SocketAddr::new(p.ip().to_canonical(), p.port()));
            std_stream.set_nonblocking(true)?;
            let stream = TcpStream::from_std(std_stream)?;
            let _guard = activity.open();
            Handler::new(config, Arc::clone(&activity), peer)
                .run(stream)
                .await;
        }
        None => {
            // Not a socket (a pipe pair, as with `inetd` wait-mode wrappers): stdio.
            if fd >= 0 {
                // SAFETY: closing the descriptor we just duplicated.
                unsafe { libc::close(fd) };
            }
            let stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
            let _guard = activity.open();
            Handler::new(config, Arc::clone(&activity), None)
                .run(stdio)
                .await;
        }
    }
    Ok(())
}
