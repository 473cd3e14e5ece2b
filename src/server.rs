//! The listener (accept loop, connection limit, idle exit) and the per-connection
//! [`Handler`], after mini-redis.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::connection::{Connection, Packet};
use crate::pack::PackStats;
use crate::policy::{Denied, Policy};
use crate::request::{ProtocolVersion, Request, Service};
use crate::shutdown::Activity;
use crate::{ClientError, Result, notify, upload_pack};

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
        }
    }
}

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
        Some(t) => info!("idle exit after {}s without connections", t.as_secs()),
        None => info!("idle exit disabled"),
    }
    let config = Arc::new(config);
    let activity = Arc::new(Activity::default());
    let limit = Arc::new(Semaphore::new(if config.max_connections == 0 {
        Semaphore::MAX_PERMITS
    } else {
        config.max_connections
    }));
    // Every handler holds a clone of the sender; `recv()` returns `None` once all are gone.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);

    notify::ready();
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
    let reason = loop {
        let idle_at = config.idle_timeout.and_then(|t| activity.idle_deadline(t));
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
                let guard = activity.open();
                let permit = limit.clone().try_acquire_owned().ok();
                // IPv4 clients of a dual-stack socket appear as ::ffff:a.b.c.d.
                let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                let handler = Handler { config: Arc::clone(&config), activity: Arc::clone(&activity), peer };
                let done = done_tx.clone();
                tokio::spawn(async move {
                    match permit {
                        Some(_permit) => handler.run(stream).await,
                        None => handler.refuse(stream).await,
                    }
                    drop(guard);
                    drop(done);
                });
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

/// What one request did, for its log line.
#[derive(Debug, Default)]
struct RequestLog {
    host: Option<String>,
    path: Option<String>,
    service: Option<&'static str>,
    version: Option<ProtocolVersion>,
    pack: Option<PackStats>,
}

/// Serves one connection.
#[derive(Debug)]
pub struct Handler {
    config: Arc<Config>,
    activity: Arc<Activity>,
    peer: SocketAddr,
}

impl Handler {
    async fn run(self, stream: TcpStream) {
        let start = std::time::Instant::now();
        let _ = stream.set_nodelay(true);
        let mut conn = Connection::new(stream, self.config.init_timeout);
        let mut log = RequestLog::default();
        let mut told_client = false;
        let outcome = match self.serve(&mut conn, &mut log).await {
            Ok(()) => "ok".to_string(),
            Err(err) => {
                if let Some(client) = err.downcast_ref::<ClientError>() {
                    conn.error(&client.0);
                    told_client = true;
                }
                format!("error: {err}")
            }
        };
        let _ = conn.shutdown().await;
        if told_client {
            conn.drain(Duration::from_secs(1)).await;
        }
        self.activity.served(conn.bytes_sent());
        let peer = self.peer;
        let host = log.host.as_deref().unwrap_or("-");
        let path = log.path.as_deref().unwrap_or("-");
        let service = log.service.unwrap_or("-");
        let version = log.version.map_or(-1, |v| v as i32);
        let objects = log.pack.map_or(0, |p| p.objects);
        let (bytes, ms) = (conn.bytes_sent(), start.elapsed().as_millis());
        if outcome == "ok" {
            info!(%peer, host, path, service, version, bytes, objects, ms, outcome, "request");
        } else {
            warn!(%peer, host, path, service, version, bytes, objects, ms, outcome, "request");
        }
    }

    /// Over `--max-connections`: say so promptly and close.
    async fn refuse(self, stream: TcpStream) {
        let mut conn = Connection::new(stream, Duration::from_secs(1));
        conn.error("too many connections, try again later");
        let _ = conn.shutdown().await;
        warn!(peer = %self.peer, "refused: too many connections");
    }

    async fn serve(&self, conn: &mut Connection<TcpStream>, log: &mut RequestLog) -> Result<()> {
        // --init-timeout bounds the whole request line, not each read: a client
        // dripping one byte at a time must not hold a slot.
        let first = tokio::time::timeout(self.config.init_timeout, conn.read_packet())
            .await
            .map_err(|_| "timed out waiting for the request line")??;
        let line = match first {
            Some(Packet::Data(line)) => line,
            Some(_) => {
                return Err(ClientError::boxed(
                    "protocol error: expected a request line",
                ));
            }
            None => return Err("connection closed before the request line".into()),
        };
        conn.set_timeout(self.config.timeout);
        let request = Request::parse(&line)?;
        log.host = request
            .host
            .as_ref()
            .map(|h| crate::escape(h.hostname.as_bytes()));
        log.path = Some(crate::escape(&request.path));
        log.service = Some(request.service.name());
        log.version = Some(request.protocol_version());

        let policy = &self.config.policy;
        if request.service != Service::UploadPack {
            return Err(ClientError::boxed(
                policy.error_message(Denied::ServiceNotEnabled, &request.path),
            ));
        }
        let p = policy.clone();
        let path = request.path.clone();
        let repo = tokio::task::spawn_blocking(move || -> Result<gix::ThreadSafeRepository> {
            let resolved = p
                .resolve(&path)
                .map_err(|denied| ClientError::boxed(p.error_message(denied, &path)))?;
            let repo =
                gix::open_opts(&resolved.git_dir, gix::open::Options::isolated()).map_err(|e| {
                    tracing::warn!("cannot open {}: {e}", resolved.git_dir.display());
                    ClientError::boxed(p.error_message(Denied::NoSuchRepository, &path))
                })?;
            Ok(repo.into_sync())
        })
        .await??;
        log.pack = upload_pack::serve(conn, &repo, request.protocol_version()).await?;
        Ok(())
    }
}
