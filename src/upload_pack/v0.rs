//! Protocol v0 and v1: the ref advertisement, `want` lines with capabilities, and
//! rounds of `have`s answered with ACK/NAK as `multi_ack`, `multi_ack_detailed` or
//! plain, exactly as git's `upload-pack.c: get_common_commits` answers them.

use gix::ObjectId;
use tokio::io::{AsyncRead, AsyncWrite};

use super::config::UploadPackConfig;
use super::fetch::{self, BATCH, FetchArgs, Intake};
use super::negotiate::Negotiation;
use super::refs::{self, AdvertisedRef};
use super::shallow::{self, ShallowPlan};
use super::{blocking, parse_oid};
use crate::connection::{Connection, Packet};
use crate::pack::{self, PackRequest, PackStats, Sideband};
use crate::{ClientError, Result};

/// Capabilities gitd offers in v0/v1, in git's order (`symref=` and those that depend
/// on the repository's configuration are added by [`capabilities`]).
const CAPABILITIES: &[&str] = &[
    "multi_ack",
    "thin-pack",
    "side-band",
    "side-band-64k",
    "ofs-delta",
    "shallow",
    "deepen-since",
    "deepen-not",
    "deepen-relative",
    "no-progress",
    "include-tag",
    "multi_ack_detailed",
];

/// How the client wants its ACKs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum MultiAck {
    #[default]
    None,
    Plain,
    Detailed,
}

/// What the client asked for in its `want` section.
#[derive(Debug, Default)]
pub(crate) struct Wants {
    args: FetchArgs,
    multi_ack: MultiAck,
    no_done: bool,
    sideband: Option<Sideband>,
}

pub async fn serve<S>(
    conn: &mut Connection<S>,
    repo: &gix::ThreadSafeRepository,
    cfg: &UploadPackConfig,
    v1: bool,
) -> Result<Option<PackStats>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let refs = blocking(repo, refs::collect).await?;
    if v1 {
        conn.text("version 1");
    }
    advertise(conn, cfg, &refs);
    conn.flush().await?;

    let Some(mut wants) = read_wants(conn, cfg, Some(repo)).await? else {
        return Ok(None);
    };
    wants.args.check_deepen()?;
    let (args, cfg2, refs2) = (wants.args.clone(), cfg.clone(), refs.clone());
    let plan = blocking(repo, move |r| {
        shallow::validate(r, &refs2, &args)?;
        fetch::check_wants(r, &cfg2, &refs2, &args.wants)?;
        shallow::plan(r, &cfg2, &refs2, &args)
    })
    .await?;
    if plan.send_list {
        for line in &plan.lines {
            conn.data(line.to_string().as_bytes());
        }
        conn.flush_pkt();
        conn.flush().await?;
    }

    let Some(common) = negotiate(conn, repo, &wants, &plan).await? else {
        return Ok(None);
    };
    // git daemon sends no progress to clients without side-band.
    let sideband = wants.sideband.unwrap_or(Sideband::None);
    if sideband == Sideband::None {
        wants.args.no_progress = true;
    }
    let include_tags = if wants.args.include_tag {
        refs.iter()
            .filter(|r| !cfg.is_hidden(r.name.as_ref()))
            .filter_map(AdvertisedRef::as_annotated_tag)
            .collect()
    } else {
        Vec::new()
    };
    let req = PackRequest::new(&wants.args, common, include_tags, plan, sideband);
    let stats = pack::send(conn, repo, req).await?;
    if sideband != Sideband::None {
        conn.flush_pkt();
    }
    conn.flush().await?;
    Ok(Some(stats))
}

/// The capability list of the advertisement.
fn capabilities(cfg: &UploadPackConfig, refs: &[AdvertisedRef]) -> String {
    let mut caps: Vec<String> = CAPABILITIES.iter().map(|c| c.to_string()).collect();
    if cfg.allow.tip {
        caps.push("allow-tip-sha1-in-want".into());
    }
    if cfg.allow.reachable {
        caps.push("allow-reachable-sha1-in-want".into());
    }
    if let Some(t) = refs
        .iter()
        .find(|r| r.name == "HEAD" && r.target.is_some() && !cfg.is_hidden(r.name.as_ref()))
        .and_then(|r| r.symref_target.as_ref())
    {
        caps.push(format!("symref=HEAD:{t}"));
    }
    if cfg.allow_filter {
        caps.push("filter".into());
    }
    caps.push("object-format=sha1".into());
    caps.push(format!("agent={}", crate::agent()));
    caps.join(" ")
}

/// The ref advertisement: capabilities ride on the first line after a NUL. Hidden
/// refs are left out.
fn advertise<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    cfg: &UploadPackConfig,
    refs: &[AdvertisedRef],
) {
    let caps = capabilities(cfg, refs);
    let mut first = true;
    for r in refs.iter().filter(|r| !cfg.is_hidden(r.name.as_ref())) {
        let Some(target) = r.target else { continue };
        let mut line = format!("{target} ").into_bytes();
        line.extend_from_slice(&r.name);
        if first {
            line.push(0);
            line.extend_from_slice(caps.as_bytes());
            first = false;
        }
        line.push(b'\n');
        conn.data(&line);
        if let Some(peeled) = r.peeled {
            let mut line = format!("{peeled} ").into_bytes();
            line.extend_from_slice(&r.name);
            line.extend_from_slice(b"^{}\n");
            conn.data(&line);
        }
    }
    if first {
        // No refs at all: git sends the capabilities on a placeholder line.
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

/// Read the want section up to the flush. `None` if the client wants nothing (a
/// flush right away, or it hung up after the advertisement, as `git ls-remote` does).
/// With a repository, wants and shallow lines go through an [`Intake`] as they come.
pub(crate) async fn read_wants<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    cfg: &UploadPackConfig,
    repo: Option<&gix::ThreadSafeRepository>,
) -> Result<Option<Wants>> {
    let mut w = Wants::default();
    let mut intake = Intake::default();
    let mut filter_requested = false;
    loop {
        let packet = match conn.read_packet().await? {
            None => return Ok(None),
            Some(p) => p,
        };
        let line = match &packet {
            Packet::Flush => break,
            Packet::Data(_) => packet.text().expect("data"),
            _ => {
                return Err(ClientError::boxed(
                    "git upload-pack: protocol error, unexpected special packet",
                ));
            }
        };
        if line.starts_with(b"filter ") && !filter_requested {
            return Err(ClientError::boxed(
                "git upload-pack: filtering capability not negotiated",
            ));
        }
        if let Some(repo) = repo
            && intake.due(&w.args)
        {
            intake.settle(repo, &mut w.args).await?;
        }
        if w.args.parse_shared(line, cfg)? {
            continue;
        }
        let Some(rest) = line.strip_prefix(b"want ") else {
            return Err(ClientError::boxed(format!(
                "git upload-pack: protocol error, expected to get object ID, not '{}'",
                crate::escape(line)
            )));
        };
        let hex = &rest[..rest.len().min(40)];
        w.args.wants.push(parse_oid(hex, line)?);
        for feature in rest[hex.len()..]
            .split(|&b| b == b' ')
            .filter(|f| !f.is_empty())
        {
            match feature {
                b"multi_ack" if w.multi_ack == MultiAck::None => w.multi_ack = MultiAck::Plain,
                b"multi_ack_detailed" => w.multi_ack = MultiAck::Detailed,
                b"no-done" => w.no_done = true,
                b"side-band-64k" => w.sideband = Some(Sideband::Large),
                b"side-band" if w.sideband.is_none() => w.sideband = Some(Sideband::Small),
                b"ofs-delta" => w.args.ofs_delta = true,
                b"thin-pack" => w.args.thin_pack = true,
                b"no-progress" => w.args.no_progress = true,
                b"include-tag" => w.args.include_tag = true,
                b"deepen-relative" => w.args.deepen.relative = true,
                b"filter" if cfg.allow_filter => filter_requested = true,
                _ => {} // agent=, session-id=, … are fine to ignore
            }
        }
    }
    if let Some(repo) = repo {
        intake.settle(repo, &mut w.args).await?;
    }
    Ok((!w.args.wants.is_empty()).then_some(w))
}

/// Per-connection negotiation state across rounds (git keeps these in
/// `get_common_commits`' locals).
struct Rounds {
    neg: Negotiation,
    multi_ack: MultiAck,
    no_done: bool,
    sent_ready: bool,
    last_hex: Option<ObjectId>,
    /// This round so far: a have we hold, and one we do not.
    got_common: bool,
    got_other: bool,
}

pub(crate) enum RoundEnd {
    Flush,
    Done,
}

/// Read `have` lines of a round, up to a flush or `done`, or at most [`BATCH`] of
/// them (the end is then `None`: more of the round follows), so that a round of
/// millions of lines is answered as it comes, never held whole. `None` if the client
/// hung up (it gave up negotiating).
pub(crate) async fn read_round<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
) -> Result<Option<(Vec<ObjectId>, Option<RoundEnd>)>> {
    let mut haves = Vec::new();
    loop {
        if haves.len() == BATCH {
            return Ok(Some((haves, None)));
        }
        let Some(packet) = conn.read_packet().await? else {
            return Ok(None);
        };
        match packet.text() {
            None if packet == Packet::Flush => return Ok(Some((haves, Some(RoundEnd::Flush)))),
            Some(b"done") => return Ok(Some((haves, Some(RoundEnd::Done)))),
            Some(line) => match line.strip_prefix(b"have ") {
                Some(hex) => haves.push(parse_oid(hex, line)?),
                None => {
                    return Err(ClientError::boxed(format!(
                        "git upload-pack: expected SHA1 list, got '{}'",
                        crate::escape(line)
                    )));
                }
            },
            None => {
                return Err(ClientError::boxed(
                    "git upload-pack: protocol error, unexpected special packet",
                ));
            }
        }
    }
}

/// Run have/ACK rounds until `done` (or `no-done` readiness). Returns the common
/// objects, or `None` if the client hung up.
async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    repo: &gix::ThreadSafeRepository,
    wants: &Wants,
    plan: &ShallowPlan,
) -> Result<Option<Vec<ObjectId>>> {
    // git adds the parents of unshallowed commits to its wants, and registers the
    // boundary as grafts, before it reads the first `have`.
    let mut want_ids = wants.args.wants.clone();
    want_ids.extend(&plan.extra_wants);
    let grafts = plan.grafts.clone();
    let (multi_ack, no_done) = (wants.multi_ack, wants.no_done);
    let mut state = blocking(repo, move |r| {
        Ok(Rounds {
            neg: Negotiation::new(r, &want_ids)?.with_grafts(grafts),
            multi_ack,
            no_done,
            sent_ready: false,
            last_hex: None,
            got_common: false,
            got_other: false,
        })
    })
    .await?;
    loop {
        let Some((haves, end)) = read_round(conn).await? else {
            return Ok(None);
        };
        let (returned, replies, finished) = blocking(repo, move |r| {
            let mut replies = Vec::new();
            let finished = state.round(&super::without_refresh(r), &haves, end, &mut replies)?;
            Ok((state, replies, finished))
        })
        .await?;
        state = returned;
        for reply in replies {
            conn.text(reply);
        }
        conn.flush().await?;
        if finished {
            return Ok(Some(state.neg.common().to_vec()));
        }
    }
}

impl Rounds {
    /// Part of a round of `have`s, ended by a flush or `done` or (`None`) to be
    /// continued. Pushes the reply lines and returns true when negotiation is over.
    fn round(
        &mut self,
        repo: &gix::Repository,
        haves: &[ObjectId],
        end: Option<RoundEnd>,
        out: &mut Vec<String>,
    ) -> Result<bool> {
        for &have in haves {
            if self.neg.have(repo, have)? {
                self.got_common = true;
                self.last_hex = Some(have);
                match self.multi_ack {
                    MultiAck::Detailed => out.push(format!("ACK {have} common")),
                    MultiAck::Plain => out.push(format!("ACK {have} continue")),
                    MultiAck::None if self.neg.common().len() == 1 => {
                        out.push(format!("ACK {have}"))
                    }
                    MultiAck::None => {}
                }
            } else {
                self.got_other = true;
                if self.multi_ack != MultiAck::None && self.neg.ok_to_give_up(repo)? {
                    if self.multi_ack == MultiAck::Detailed {
                        self.sent_ready = true;
                        out.push(format!("ACK {have} ready"));
                    } else {
                        out.push(format!("ACK {have} continue"));
                    }
                }
            }
        }
        let Some(end) = end else {
            return Ok(false);
        };
        let (got_common, got_other) = (self.got_common, self.got_other);
        (self.got_common, self.got_other) = (false, false);
        match end {
            RoundEnd::Done => {
                match self.last_hex {
                    Some(last) if !self.neg.common().is_empty() => {
                        if self.multi_ack != MultiAck::None {
                            out.push(format!("ACK {last}"));
                        }
                    }
                    _ => out.push("NAK".into()),
                }
                Ok(true)
            }
            RoundEnd::Flush => {
                if self.multi_ack == MultiAck::Detailed
                    && got_common
                    && !got_other
                    && self.neg.ok_to_give_up(repo)?
                {
                    self.sent_ready = true;
                    out.push(format!("ACK {} ready", self.last_hex.expect("got_common")));
                }
                if self.neg.common().is_empty() || self.multi_ack != MultiAck::None {
                    out.push("NAK".into());
                }
                if self.no_done && self.sent_ready {
                    out.push(format!("ACK {}", self.last_hex.expect("sent ready")));
                    return Ok(true);
                }
                Ok(false)
            }
        }
    }
}
