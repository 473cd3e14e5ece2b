//! One connection: read the request line, decide whether it may be served (path
//! policy, services, access hook), run the service, and log one line about it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info, warn};

use crate::connection::{Connection, Packet};
use crate::hostinfo::HostInfo;
use crate::pack::PackStats;
use crate::policy::{self, Denied};
use crate::request::{ProtocolVersion, Request, Service};
use crate::server::Config;
use crate::shutdown::Activity;
use crate::{ClientError, Result, receive_pack, upload_archive, upload_pack};

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
    pub config: Arc<Config>,
    pub activity: Arc<Activity>,
    /// The client's address (unknown for `--inetd` on a pipe).
    pub peer: Option<SocketAddr>,
    /// Set once the request line is in: the listener prefers dropping connections
    /// that never got this far when it must make room.
    pub requested: Arc<AtomicBool>,
}

impl Handler {
    pub fn new(config: Arc<Config>, activity: Arc<Activity>, peer: Option<SocketAddr>) -> Self {
        Handler {
            config,
            activity,
            peer,
            requested: Arc::default(),
        }
    }

    /// Serve the connection to its end and log the outcome.
    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(self, stream: S) {
        let start = std::time::Instant::now();
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
        // A client still sending its request would get a reset instead of our ERR
        // line if we closed now: read (and drop) what it sends, briefly.
        if told_client {
            conn.drain(Duration::from_secs(1)).await;
        }
        self.activity.served(conn.bytes_sent());
        // Field names become journal fields with the GITD_ prefix (GITD_REPO, …), so
        // `journalctl -u git.service GITD_REPO=/x.git` finds a repository's requests.
        let peer = self.peer.map_or_else(|| "-".to_string(), |p| p.to_string());
        let host = log.host.as_deref().unwrap_or("-");
        let repo = log.path.as_deref().unwrap_or("-");
        let service = log.service.unwrap_or("-");
        let protocol = log.version.map_or(-1, |v| v as i32);
        let objects = log.pack.map_or(0, |p| p.objects);
        let pack_reused = log.pack.map_or(0, |p| p.pack_reused);
        let bitmap = log.pack.is_some_and(|p| p.bitmap);
        let (bytes, duration_ms) = (conn.bytes_sent(), start.elapsed().as_millis());
        // One line per request, at a level that tells whether it went well.
        macro_rules! request {
            ($level:ident) => {
                $level!(
                    peer,
                    host,
                    repo,
                    service,
                    protocol,
                    bytes,
                    objects,
                    pack_reused,
                    bitmap,
                    duration_ms,
                    outcome,
                    "request"
                )
            };
        }
        if outcome != "ok" {
            request!(warn);
        } else if self.config.log_requests {
            request!(info);
        } else {
            request!(debug);
        }
    }

    /// Over `--max-connections`: say so promptly and close.
    pub async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(self, stream: S) {
        let mut conn = Connection::new(stream, Duration::from_secs(1));
        conn.error("too many connections, try again later");
        let _ = conn.shutdown().await;
        warn!(peer = ?self.peer, "refused: too many connections");
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        conn: &mut Connection<S>,
        log: &mut RequestLog,
    ) -> Result<()> {
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
        self.requested.store(true, Ordering::Relaxed);
        let request = Request::parse(&line)?;
        log.host = request
            .host
            .as_ref()
            .map(|h| crate::escape(h.hostname.as_bytes()));
        log.path = Some(crate::escape(&request.path));
        log.service = Some(request.service.name());
        log.version = Some(request.protocol_version());

        let policy = &self.config.policy;
        let service = request.service;
        let refuse =
            |denied: Denied| ClientError::boxed(policy.error_message(denied, &request.path));
        let setting = policy.services.get(service);
        if !setting.enabled && !setting.overridable {
            return Err(refuse(Denied::ServiceNotEnabled));
        }
        let host = Arc::new(HostInfo::new(&request, self.peer));
        let (p, path, h) = (policy.clone(), request.path.clone(), Arc::clone(&host));
        let (repo, resolved) =
            tokio::task::spawn_blocking(move || open(&p, &path, &h, service)).await??;

        if let Some(hook) = &policy.access_hook {
            let hook_timeout = self.config.timeout.min(Duration::from_secs(60));
            if let Err(reason) =
                policy::run_access_hook(hook, service, &resolved, &host, hook_timeout).await
            {
                return Err(ClientError::boxed(
                    policy.error_text(&reason, &request.path),
                ));
            }
        }
        match service {
            Service::UploadPack => {
                log.pack = upload_pack::serve(conn, &repo, request.protocol_version()).await?;
                Ok(())
            }
            Service::UploadArchive => {
                upload_archive::serve(conn, &repo, self.config.archive_limits).await
            }
            Service::ReceivePack => {
                let settings = receive_pack::PushSettings {
                    peer: self.peer,
                    hook_timeout: self.config.timeout,
                    max_input_size: self.config.max_input_size,
                    max_request_memory: self.config.max_request_memory,
                };
                let stats =
                    receive_pack::serve(conn, &repo, request.protocol_version(), &settings).await?;
                log.pack = stats.map(|s| PackStats {
                    objects: s.objects as usize,
                    ..Default::default()
                });
                Ok(())
            }
        }
    }
}

/// Resolve and open the repository, and check the service is enabled for it
/// (blocking: file system and config reads).
fn open(
    policy: &policy::Policy,
    path: &[u8],
    host: &HostInfo,
    service: Service,
) -> Result<(gix::ThreadSafeRepository, std::path::PathBuf)> {
    let refuse = |denied: Denied| ClientError::boxed(policy.error_message(denied, path));
    let resolved = policy.resolve(path, host).map_err(refuse)?;
    let repo = gix::open_opts(&resolved.git_dir, gix::open::Options::isolated()).map_err(|e| {
        tracing::warn!("cannot open {}: {e}", resolved.git_dir.display());
        match object_format(&resolved.git_dir) {
            // Exported, but in a format we cannot serve: say so plainly.
            Some(format) if !format.eq_ignore_ascii_case("sha1") => ClientError::boxed(format!(
                "repository {} uses the {format} object format, which gitd does not serve",
                crate::escape(path)
            )),
            _ => refuse(Denied::NoSuchRepository),
        }
    })?;
    if let Some(why) = unserved_layout(&repo) {
        return Err(ClientError::boxed(format!(
            "repository {} {why}",
            crate::escape(path)
        )));
    }
    let repo_setting = repo
        .config_snapshot()
        .boolean(format!("daemon.{}", service.config_name()).as_str());
    if !policy.services.enabled_for(service, repo_setting) {
        return Err(refuse(Denied::ServiceNotEnabled));
    }
    Ok((repo.into_sync(), resolved.path))
}

/// Why gitd cannot serve a repository it could open, if it cannot: refs in a
/// storage other than files and `packed-refs` (reftable), which gix does not read,
/// would otherwise look like a repository without refs, and a client would be told
/// the wrong thing instead of being refused up front.
pub(crate) fn unserved_layout(repo: &gix::Repository) -> Option<String> {
    let config = repo.config_snapshot();
    let storage = config.string("extensions.refStorage")?;
    (!storage.eq_ignore_ascii_case(b"files")).then(|| {
        format!(
            "keeps its refs in {} storage, which gitd does not read",
            crate::escape(storage.as_ref())
        )
    })
}

/// `extensions.objectFormat` of a repository, read directly from its config file
/// (gix refuses to open repositories in formats it was built without).
pub(crate) fn object_format(git_dir: &std::path::Path) -> Option<String> {
    let config = gix::config::File::from_path_no_includes(
        git_dir.join("config"),
        gix::config::Source::Local,
    )
    .ok()?;
    config
        .string("extensions.objectFormat")
        .map(|s| s.to_string())
}
