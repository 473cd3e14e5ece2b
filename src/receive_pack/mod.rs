//! `git-receive-pack`: accepting pushes.
//!
//! Off unless enabled (`--enable=receive-pack` or a repository's
//! `daemon.receivepack`): git:// has no authentication, so whoever can reach the
//! port can push. The session follows git's `builtin/receive-pack.c`:
//!
//! 1. the ref advertisement ([`advertise`]), protocol v0/v1 only (git has no push
//!    in v2; a v2 request falls back to v0 as git's receive-pack does);
//! 2. the client's commands and push options ([`commands`]);
//! 3. the pack, indexed as it streams into a quarantine directory ([`unpack`],
//!    [`quarantine`]);
//! 4. the checks, hooks and ref transactions ([`execute`]);
//! 5. the report (`report-status`, inside side-band when negotiated), then
//!    `post-receive` and `post-update`.
//!
//! A connection that drops before step 4 leaves the repository as it was: the
//! quarantine is removed when its owner goes away.

pub mod commands;
pub mod config;
pub mod connectivity;
pub mod execute;
pub mod fsck;
pub mod hooks;
pub mod index_pack;
pub mod output;
pub mod pack_stream;
pub mod quarantine;
pub mod unpack;
pub mod update;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use gix::ObjectId;
use gix::bstr::BString;
use gix_packetline::blocking_io::encode;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

use self::commands::{Command, Offered};
use self::config::ReceiveConfig;
use self::hooks::Hooks;
use self::output::Remote;
use crate::Result;
use crate::connection::Connection;
use crate::request::ProtocolVersion;
use crate::upload_pack::{blocking, refs};

/// The fixed part of receive-pack's capabilities, in git's order.
const CAPABILITIES: &str = "report-status report-status-v2 delete-refs side-band-64k quiet";

/// What one push did, for the request log.
#[derive(Debug, Clone, Copy, Default)]
pub struct PushStats {
    /// Objects in the received pack.
    pub objects: u32,
}

/// Server-side settings of a push that do not come from the repository.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// The pusher's address, for the hooks' `REMOTE_ADDR`/`REMOTE_PORT`.
    pub peer: Option<SocketAddr>,
    /// How long one hook may run.
    pub hook_timeout: Duration,
    /// `--max-input-size` (0: none).
    pub max_input_size: u64,
    /// `--max-request-memory`.
    pub max_request_memory: u64,
}

/// Serve one receive-pack session on `conn`.
pub async fn serve<S>(
    conn: &mut Connection<S>,
    repo: &gix::ThreadSafeRepository,
    version: ProtocolVersion,
    settings: &PushSettings,
) -> Result<Option<PushStats>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let cfg = blocking(repo, |r| Ok(ReceiveConfig::from_repo(r))).await?;
    let refs = blocking(repo, refs::collect).await?;
    let alternates = blocking(repo, |r| Ok(alternate_tips(r))).await?;
    // git has no push in protocol v2: its receive-pack answers a v2 request in v0.
    if version == ProtocolVersion::V1 {
        conn.text("version 1");
    }
    advertise(conn, &cfg, &refs, &alternates);
    conn.flush().await?;

    let offered = Offered {
        atomic: cfg.advertise_atomic,
        push_options: cfg.advertise_push_options,
    };
    let Some(mut commands) = commands::read(conn, offered).await? else {
        return Ok(None);
    };
    let options: Option<Vec<BString>> = if commands.caps.push_options {
        Some(commands::read_push_options(conn).await?)
    } else {
        None
    };
    let caps = commands.caps.clone();
    let mut stats = PushStats::default();

    // The pack, unless the push only deletes.
    let mut unpack_error = None;
    let mut unpack_detail = None;
    let mut unpack_messages = Vec::new();
    let mut quarantine = None;
    if !commands.delete_only() {
        let created = blocking(repo, |r| {
            let objects = r.objects.store_ref().path();
            // What a killed gitd left here goes before a new one comes.
            quarantine::sweep(objects);
            Ok(quarantine::Quarantine::create(objects))
        })
        .await?;
        let received = match created {
            Ok(q) => {
                let checks = unpack::Checks {
                    limit: input_limit(settings, &cfg),
                    fsck: cfg.fsck_objects,
                    unpack_limit: cfg.unpack_limit,
                    memory: settings.max_request_memory,
                };
                unpack::receive(conn, repo, q, checks).await?
            }
            Err(e) => {
                // A read-only repository, most likely: git's words, and why in the log.
                warn!("cannot create a quarantine directory: {e}");
                Err(unpack::UnpackError {
                    status: "unable to create temporary object directory".into(),
                    detail: None,
                    messages: Vec::new(),
                })
            }
        };
        match received {
            Ok(unpacked) => {
                stats.objects = unpacked.objects;
                unpack_messages = unpacked.warnings;
                quarantine = Some(unpacked.quarantine);
            }
            Err(e) => {
                info!("push refused: unpack {}", e.status);
                unpack_error = Some(e.status);
                unpack_detail = e.detail;
                unpack_messages = e.messages;
            }
        }
    }

    let mut out = Remote::new(conn, caps.side_band_64k);
    for line in unpack_messages {
        out.send(format!("{line}\n").as_bytes()).await;
    }
    if let Some(detail) = unpack_detail {
        out.send(format!("fatal: {detail}\n").as_bytes()).await;
    }
    let hooks = Hooks::new(
        repo.git_dir(),
        cfg.hooks_path.as_ref().map(|p| p.as_ref()),
        settings.peer,
        settings.hook_timeout,
    );
    let push = execute::Push {
        repo,
        cfg: &cfg,
        hooks: &hooks,
        atomic: caps.atomic,
        options: options.as_deref(),
        shallow: &commands.shallow,
    };
    push.run(
        &mut out,
        &mut commands.commands,
        unpack_error.as_deref(),
        quarantine,
    )
    .await?;

    if let Some(status) = &unpack_error
        && out.hung_up().await
    {
        // A pack cut short: nobody is left to read the report.
        return Err(format!("the client hung up during the pack ({status})").into());
    }
    if caps.report_status || caps.report_status_v2 {
        let report = report(unpack_error.as_deref(), &commands.commands);
        out.report(&report).await;
    }
    push.after(&mut out, &commands.commands).await;
    if out.sideband() {
        out.raw(b"0000").await;
    }
    Ok(Some(stats))
}

/// The smaller of the server's and the repository's limits on a pack's size,
/// where set (0: none).
fn input_limit(settings: &PushSettings, cfg: &ReceiveConfig) -> u64 {
    match (settings.max_input_size, cfg.max_input_size) {
        (0, repo) => repo,
        (server, 0) => server,
        (server, repo) => server.min(repo),
    }
}

/// The ref advertisement, as git's receive-pack writes it: every ref but hidden
/// ones (no `HEAD`, no peeled tags), then the tips of the repositories this one
/// borrows objects from as `.have` lines (so that the client does not send what
/// they hold), the capabilities on the first line, or on a `capabilities^{}`
/// placeholder when there is nothing else.
fn advertise<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    cfg: &ReceiveConfig,
    refs: &[refs::AdvertisedRef],
    alternates: &[ObjectId],
) {
    let caps = capabilities(cfg);
    let mut first = true;
    let mut seen = HashSet::new();
    let own = refs
        .iter()
        .filter(|r| r.name != "HEAD" && !cfg.is_hidden(r.name.as_ref()))
        .filter_map(|r| Some((r.target?, r.name.as_slice())));
    let have: &[u8] = b".have";
    let theirs = alternates.iter().map(|id| (*id, have));
    for (target, name) in own.chain(theirs) {
        if !seen.insert(target) && name == have {
            continue;
        }
        let mut line = format!("{target} ").into_bytes();
        line.extend_from_slice(name);
        if first {
            line.push(0);
            line.extend_from_slice(caps.as_bytes());
            first = false;
        }
        line.push(b'\n');
        conn.data(&line);
    }
    if first {
        conn.data(
            format!(
                "{} capabilities^{{}}\0{caps}\n",
                gix::hash::Kind::Sha1.null()
            )
            .as_bytes(),
        );
    }
    conn.flush_pkt();
}

/// What the refs of the repositories in `objects/info/alternates` point at, in
/// their name order (git's `for_each_alternate_ref`: an alternate counts if it is
/// the `objects` directory of a repository with a `refs` directory).
fn alternate_tips(repo: &gix::Repository) -> Vec<ObjectId> {
    let Ok(paths) = repo.objects.store_ref().alternate_db_paths() else {
        return Vec::new();
    };
    let mut tips = Vec::new();
    for objects in paths {
        let Some(git_dir) = objects
            .canonicalize()
            .ok()
            .filter(|p| p.file_name().is_some_and(|n| n == "objects"))
            .and_then(|p| p.parent().map(ToOwned::to_owned))
        else {
            continue;
        };
        if !git_dir.join("refs").is_dir() {
            continue;
        }
        let Ok(alternate) = gix::open_opts(&git_dir, gix::open::Options::isolated()) else {
            continue;
        };
        let Ok(platform) = alternate.references() else {
            continue;
        };
        let Ok(all) = platform.all() else { continue };
        for r in all.flatten() {
            let mut r = r;
            if let Ok(id) = r.follow_to_object() {
                tips.push(id.detach());
            }
        }
    }
    tips
}

/// receive-pack's capability list (`show_ref` in git).
fn capabilities(cfg: &ReceiveConfig) -> String {
    let mut caps = CAPABILITIES.to_string();
    if cfg.advertise_atomic {
        caps.push_str(" atomic");
    }
    if cfg.ofs_delta {
        caps.push_str(" ofs-delta");
    }
    if cfg.advertise_push_options {
        caps.push_str(" push-options");
    }
    caps.push_str(" object-format=sha1");
    caps.push_str(&format!(" agent={}", crate::agent()));
    caps
}

/// The status report: `unpack ok` (or the unpack error), then `ok <ref>` or
/// `ng <ref> <reason>` per command, then a flush. The same bytes serve
/// `report-status` and `report-status-v2` (v2 only adds option lines for refs a
/// `proc-receive` hook rewrote, which gitd does not run).
pub fn report(unpack_error: Option<&str>, commands: &[Command]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut line = |bytes: &[u8]| {
        // A ref name is at most a pkt-line long, so a line can only be cut, never lost.
        let bytes = &bytes[..bytes.len().min(crate::connection::MAX_DATA)];
        encode::data_to_write(bytes, &mut buf).expect("below the pkt-line limit");
    };
    line(format!("unpack {}\n", unpack_error.unwrap_or("ok")).as_bytes());
    for cmd in commands {
        let mut l = Vec::new();
        match &cmd.error {
            None => {
                l.extend_from_slice(b"ok ");
                l.extend_from_slice(&cmd.name);
            }
            Some(reason) => {
                l.extend_from_slice(b"ng ");
                l.extend_from_slice(&cmd.name);
                l.push(b' ');
                l.extend_from_slice(reason.as_bytes());
            }
        }
        l.push(b'\n');
        line(&l);
    }
    encode::flush_to_write(&mut buf).expect("writing to a Vec");
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lists_every_command() {
        let mut ok = commands::parse_command(
            b"0000000000000000000000000000000000000000 1111111111111111111111111111111111111111 refs/heads/a",
        )
        .unwrap();
        let mut ng = ok.clone();
        ng.name = "refs/heads/b".into();
        ng.fail("hook declined");
        ok.error = None;
        let bytes = report(None, &[ok, ng]);
        assert_eq!(
            bytes,
            b"000eunpack ok\n0014ok refs/heads/a\n0022ng refs/heads/b hook declined\n0000"
        );
        let bytes = report(Some("index-pack abnormal exit"), &[]);
        assert!(bytes.starts_with(b"0024unpack index-pack abnormal exit\n"));
    }

    #[test]
    fn capabilities_follow_the_configuration() {
        let repo_cfg = ReceiveConfig {
            deny_deletes: false,
            deny_non_fast_forwards: false,
            deny_current_branch: config::Deny::Unconfigured,
            deny_delete_current: config::Deny::Unconfigured,
            hide_refs: Vec::new(),
            advertise_atomic: true,
            advertise_push_options: false,
            ofs_delta: true,
            max_input_size: 0,
            hooks_path: None,
            fsck_objects: false,
            unpack_limit: 100,
        };
        let caps = capabilities(&repo_cfg);
        assert!(caps.starts_with(
            "report-status report-status-v2 delete-refs side-band-64k quiet atomic ofs-delta object-format=sha1 agent=gitd/"
        ));
    }
}
