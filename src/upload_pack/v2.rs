//! Protocol v2 (`man 5 gitprotocol-v2`): a capability advertisement, then commands
//! (`ls-refs`, `fetch`), each a list of capabilities, a delimiter, arguments and a
//! flush. Every `fetch` is stateless: the client repeats what it learnt.

use gix::ObjectId;
use gix::bstr::BString;
use gix_packetline::Channel;
use std::collections::HashMap;
use tokio::io::{AsyncRead, AsyncWrite};

use super::config::{Unborn, UploadPackConfig};
use super::fetch::{self, FetchArgs, Intake};
use super::negotiate::Negotiation;
use super::refs::{self, AdvertisedRef};
use super::shallow::{self, ShallowPlan};
use super::{blocking, parse_oid};
use crate::connection::{Connection, Packet};
use crate::pack::{self, PackRequest, PackStats, Sideband};
use crate::{ClientError, Result};

/// git sends everything when asked for more prefixes than this (`ls-refs.c`).
const TOO_MANY_PREFIXES: usize = 100;

/// Commands gitd serves in v2.
const COMMANDS: [&[u8]; 4] = [b"ls-refs", b"fetch", b"object-info", b"bundle-uri"];

/// One v2 request: `command=<name>` and capability lines; the argument lines that
/// follow are read by the command itself, one at a time ([`Command::next_arg`]), so
/// that no request is ever held whole in memory (a fetch can carry millions of
/// `have` lines).
#[derive(Debug, Default)]
pub(crate) struct Command {
    pub(crate) name: Vec<u8>,
    /// A delimiter was read and its flush not yet.
    args_pending: bool,
}

impl Command {
    /// The next argument line; `None` after the flush that ends them.
    pub(crate) async fn next_arg<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
    ) -> Result<Option<Vec<u8>>> {
        if !self.args_pending {
            return Ok(None);
        }
        match conn.expect_packet().await? {
            Packet::Flush => {
                self.args_pending = false;
                Ok(None)
            }
            p @ Packet::Data(_) => Ok(p.into_text()),
            _ => Err(ClientError::boxed("expected flush after arguments")),
        }
    }
}

pub async fn serve<S>(
    conn: &mut Connection<S>,
    repo: &gix::ThreadSafeRepository,
    cfg: &UploadPackConfig,
) -> Result<Option<PackStats>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    conn.text("version 2");
    conn.text(format!("agent={}", crate::agent()));
    conn.text(if cfg.unborn == Unborn::Advertise {
        "ls-refs=unborn"
    } else {
        "ls-refs"
    });
    let mut features = vec!["shallow", "wait-for-done"];
    if cfg.allow_filter {
        features.push("filter");
    }
    if cfg.allow_ref_in_want {
        features.push("ref-in-want");
    }
    if cfg.allow_sideband_all {
        features.push("sideband-all");
    }
    conn.text(format!("fetch={}", features.join(" ")));
    conn.text("server-option");
    conn.text("object-format=sha1");
    conn.text("object-info");
    if cfg.advertise_bundle_uris {
        conn.text("bundle-uri");
    }
    conn.flush_pkt();
    conn.flush().await?;

    let mut total: Option<PackStats> = None;
    while let Some(mut command) = read_command(conn).await? {
        match command.name.as_slice() {
            b"ls-refs" => ls_refs(conn, repo, cfg, &mut command).await?,
            b"object-info" => object_info(conn, repo, &mut command).await?,
            b"bundle-uri" if cfg.advertise_bundle_uris => {
                bundle_uri(conn, cfg, &mut command).await?
            }
            b"fetch" => {
                if let Some(stats) = fetch(conn, repo, cfg, &mut command).await? {
                    let t = total.get_or_insert_with(PackStats::default);
                    t.objects += stats.objects;
                    t.deltas += stats.deltas;
                    t.reused += stats.reused;
                    t.bytes += stats.bytes;
                    t.pack_reused += stats.pack_reused;
                    t.bitmap |= stats.bitmap;
                }
            }
            // Known but not advertised for this repository (bundle-uri).
            other => {
                return Err(ClientError::boxed(format!(
                    "invalid command '{}'",
                    crate::escape(other)
                )));
            }
        }
        conn.flush().await?;
    }
    Ok(total)
}

/// Read the next request; `None` when the client is done (end of stream, or a flush
/// with no command: git's way to end the session).
pub(crate) async fn read_command<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
) -> Result<Option<Command>> {
    let mut cmd = Command::default();
    let mut seen_any = false;
    loop {
        let Some(packet) = conn.read_packet().await? else {
            return if seen_any {
                Err("the client hung up in the middle of a request".into())
            } else {
                Ok(None)
            };
        };
        match packet {
            Packet::Flush if !seen_any => return Ok(None),
            Packet::Flush => break,
            Packet::Delimiter => {
                cmd.args_pending = true;
                break;
            }
            Packet::ResponseEnd => return Err(ClientError::boxed("invalid packet")),
            Packet::Data(_) => {
                seen_any = true;
                let line = packet.text().expect("data");
                if let Some(name) = line.strip_prefix(b"command=") {
                    if !cmd.name.is_empty() {
                        return Err(ClientError::boxed("command requested multiple times"));
                    }
                    if !COMMANDS.contains(&name) {
                        return Err(ClientError::boxed(format!(
                            "invalid command '{}'",
                            crate::escape(name)
                        )));
                    }
                    cmd.name = name.to_vec();
                } else if let Some(format) = line.strip_prefix(b"object-format=") {
                    if format != b"sha1" {
                        return Err(ClientError::boxed(format!(
                            "mismatched object format: server sha1; client {}",
                            crate::escape(format)
                        )));
                    }
                } else if !(line.starts_with(b"agent=")
                    || line.starts_with(b"server-option=")
                    || line.starts_with(b"session-id="))
                {
                    return Err(ClientError::boxed(format!(
                        "unknown capability '{}'",
                        crate::escape(line)
                    )));
                }
            }
        }
    }
    if cmd.name.is_empty() {
        return Err(ClientError::boxed("no command requested"));
    }
    Ok(Some(cmd))
}

fn unexpected(line: &[u8]) -> crate::Error {
    ClientError::boxed(format!("unexpected line: '{}'", crate::escape(line)))
}

/// The arguments of an `ls-refs` command.
#[derive(Debug, Default)]
pub(crate) struct LsRefsArgs {
    symrefs: bool,
    peel: bool,
    unborn: bool,
    prefixes: Vec<Vec<u8>>,
    too_many_prefixes: bool,
}

impl LsRefsArgs {
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn parse(args: &[Vec<u8>], cfg: &UploadPackConfig) -> Result<Self> {
        let mut a = LsRefsArgs::default();
        for arg in args {
            a.line(arg, cfg)?;
        }
        Ok(a)
    }

    /// Take one argument line. Past [`TOO_MANY_PREFIXES`] prefixes git forgets them
    /// all and lists every ref; further ones are not even stored.
    fn line(&mut self, arg: &[u8], cfg: &UploadPackConfig) -> Result<()> {
        match arg {
            b"symrefs" => self.symrefs = true,
            b"peel" => self.peel = true,
            b"unborn" => self.unborn = cfg.unborn != Unborn::Ignore,
            other => match other.strip_prefix(b"ref-prefix ") {
                Some(_) if self.too_many_prefixes => {}
                Some(_) if self.prefixes.len() == TOO_MANY_PREFIXES => {
                    self.too_many_prefixes = true;
                    self.prefixes.clear();
                }
                Some(p) => self.prefixes.push(p.to_vec()),
                None => return Err(unexpected(other)),
            },
        }
        Ok(())
    }
}

/// `ls-refs`: the refs, filtered by prefix, with symref targets and peeled tags on
/// request. Hidden refs are left out.
async fn ls_refs<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    repo: &gix::ThreadSafeRepository,
    cfg: &UploadPackConfig,
    cmd: &mut Command,
) -> Result<()> {
    let mut args = LsRefsArgs::default();
    while let Some(arg) = cmd.next_arg(conn).await? {
        args.line(&arg, cfg)?;
    }
    let LsRefsArgs {
        symrefs,
        peel,
        unborn,
        prefixes,
        ..
    } = args;
    let refs = blocking(repo, move |r| {
        refs::list(
            r,
            refs::Listing {
                peel,
                prefixes: &prefixes,
            },
        )
    })
    .await?;
    for r in refs.iter().filter(|r| !cfg.is_hidden(r.name.as_ref())) {
        if r.target.is_none() && !(unborn && symrefs) {
            continue;
        }
        conn.data(&refs::ls_refs_line(r, symrefs, peel));
    }
    conn.flush_pkt();
    Ok(())
}

/// `object-info`: sizes of objects by id (`size` is the only attribute git defines).
/// Answered a batch of ids at a time, so a long list is never held whole (git clients
/// send `size` first; one sent after more than a batch of ids is taken from there on).
async fn object_info<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    repo: &gix::ThreadSafeRepository,
    cmd: &mut Command,
) -> Result<()> {
    let mut size = false;
    let mut header_sent = false;
    let mut ids = Vec::new();
    loop {
        let arg = cmd.next_arg(conn).await?;
        match &arg {
            Some(a) if a == b"size" => size = true,
            Some(a) => match a.strip_prefix(b"oid ") {
                Some(hex) => ids.push(parse_oid(hex, a)?),
                None => return Err(unexpected(a)),
            },
            None => {}
        }
        if ids.len() < fetch::BATCH && arg.is_some() {
            continue;
        }
        if size && !header_sent {
            conn.data(b"size");
            header_sent = true;
        }
        let batch = std::mem::take(&mut ids);
        let lines = blocking(repo, move |r| {
            let r = super::without_refresh(r);
            let mut lines = Vec::with_capacity(batch.len());
            for id in batch {
                lines.push(match (size, r.try_find_header(id)?) {
                    (true, Some(h)) => format!("{id} {}", h.size()),
                    (true, None) => format!("{id} "),
                    (false, _) => id.to_string(),
                });
            }
            Ok(lines)
        })
        .await?;
        // git writes these lines without a trailing newline.
        for line in lines {
            conn.data(line.as_bytes());
        }
        if arg.is_none() {
            break;
        }
        conn.flush().await?;
    }
    conn.flush_pkt();
    Ok(())
}

/// `bundle-uri`: the repository's `bundle.*` settings, so a client can seed a clone
/// from static bundle files before fetching the rest.
async fn bundle_uri<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    cfg: &UploadPackConfig,
    cmd: &mut Command,
) -> Result<()> {
    if let Some(arg) = cmd.next_arg(conn).await? {
        return Err(ClientError::boxed(format!(
            "bundle-uri: unexpected argument: '{}'",
            crate::escape(&arg)
        )));
    }
    // Written without a trailing newline, as git writes them.
    for line in &cfg.bundle_lines {
        conn.data(line);
    }
    conn.flush_pkt();
    Ok(())
}

/// Parse the arguments of a `fetch` command, without looking anything up.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parse_fetch(args: &[Vec<u8>], cfg: &UploadPackConfig) -> Result<FetchArgs> {
    let mut f = FetchArgs::default();
    for arg in args {
        fetch_line(&mut f, arg, cfg)?;
    }
    f.check_deepen()?;
    Ok(f)
}

/// Take one argument line of a `fetch`. Ids are only collected here: an
/// [`Intake`] deduplicates and looks them up.
fn fetch_line(f: &mut FetchArgs, arg: &[u8], cfg: &UploadPackConfig) -> Result<()> {
    if let Some(hex) = arg.strip_prefix(b"want ") {
        f.wants.push(parse_oid(hex, arg)?);
    } else if let Some(name) = arg
        .strip_prefix(b"want-ref ")
        .filter(|_| cfg.allow_ref_in_want)
    {
        if f.want_refs.len() >= fetch::MAX_NAMES {
            return Err(fetch::too_many("want-ref"));
        }
        f.want_refs.push(name.into());
    } else if let Some(hex) = arg.strip_prefix(b"have ") {
        f.seen_haves = true;
        f.haves.push(ObjectId::from_hex(hex).map_err(|_| {
            ClientError::boxed(format!(
                "git upload-pack: expected SHA1 object, got '{}'",
                crate::escape(hex)
            ))
        })?);
    } else if !f.parse_shared(arg, cfg)? {
        match arg {
            b"done" => f.done = true,
            b"wait-for-done" => f.wait_for_done = true,
            b"deepen-relative" => f.deepen.relative = true,
            b"ofs-delta" => f.ofs_delta = true,
            b"thin-pack" => f.thin_pack = true,
            b"no-progress" => f.no_progress = true,
            b"include-tag" => f.include_tag = true,
            b"sideband-all" if cfg.allow_sideband_all => f.sideband_all = true,
            a => return Err(unexpected(a)),
        }
    }
    Ok(())
}

/// Section lines of a fetch response: plain pkt-lines, or on band 1 with `sideband-all`.
fn section_line<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    sideband_all: bool,
    text: &str,
) {
    section_data(conn, sideband_all, format!("{text}\n").as_bytes());
}

/// A section line as it is, without the newline [`section_line`] adds (git sends
/// its `shallow`/`unshallow` lines without one).
fn section_data<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    sideband_all: bool,
    data: &[u8],
) {
    if sideband_all {
        let mut band = vec![Channel::Data as u8];
        band.extend_from_slice(data);
        conn.data(&band);
    } else {
        conn.data(data);
    }
}

/// `fetch`: acknowledge haves, and send the pack once ready (or on `done`).
async fn fetch<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    repo: &gix::ThreadSafeRepository,
    cfg: &UploadPackConfig,
    cmd: &mut Command,
) -> Result<Option<PackStats>> {
    let mut f = FetchArgs::default();
    let mut intake = Intake::default();
    while let Some(arg) = cmd.next_arg(conn).await? {
        fetch_line(&mut f, &arg, cfg)?;
        if intake.due(&f) {
            intake.settle(repo, &mut f).await?;
        }
    }
    f.check_deepen()?;
    intake.settle(repo, &mut f).await?;
    if f.wants.is_empty() && f.want_refs.is_empty() && !f.wait_for_done {
        return Ok(None);
    }
    let (args2, cfg2) = (f.clone(), cfg.clone());
    let (wanted_refs, acks, common, ready, refs, plan, wants) = blocking(repo, move |r| {
        let mut args = args2;
        // One listing, of what this fetch needs: every ref to resolve want-ref and
        // deepen-not names or for deepen-relative, else only tags for include-tag
        // (peeled from packed-refs where it says), else none.
        let all = !args.want_refs.is_empty() || !args.deepen.not.is_empty() || args.deepen.relative;
        let tags = [b"refs/tags/".to_vec()];
        let refs = if all || args.include_tag {
            refs::list(
                r,
                refs::Listing {
                    peel: args.include_tag,
                    prefixes: if all { &[] } else { &tags },
                },
            )?
        } else {
            Vec::new()
        };
        // want-ref: resolve names to ids; unknown or hidden names are an error.
        let mut wanted_refs: Vec<(ObjectId, BString)> = Vec::new();
        if !args.want_refs.is_empty() {
            let by_name: HashMap<&[u8], ObjectId> = refs
                .iter()
                .filter(|x| !cfg2.is_hidden(x.name.as_ref()))
                .filter_map(|x| Some((x.name.as_slice(), x.target?)))
                .collect();
            for name in std::mem::take(&mut args.want_refs) {
                let Some(&id) = by_name.get(name.as_slice()) else {
                    return Err(ClientError::boxed(format!(
                        "unknown ref {}",
                        crate::escape(&name)
                    )));
                };
                wanted_refs.push((id, name));
                intake.add_known_want(&mut args, id);
            }
        }
        // git checks `shallow` and `deepen-not` lines as it parses them.
        shallow::validate(r, &refs, &args)?;
        let mut neg = Negotiation::new(r, &args.wants)?;
        let mut acks = Vec::new();
        for have in &args.haves {
            if neg.have(r, *have)? {
                acks.push(*have);
            }
        }
        let ready = neg.ok_to_give_up(r)?;
        // The lookups above went through the object store's index mappings; the
        // pack is planned through gitd's own (see `release_index_pages`).
        crate::memory::release_index_pages();
        // The boundary is computed only for the response that carries the pack, after
        // the haves (so unlike v0, the negotiation sees the full history).
        let sends_pack = !args.seen_haves || args.done || (!args.wait_for_done && ready);
        let plan = if sends_pack {
            shallow::plan(r, &cfg2, &refs, &args)?
        } else {
            ShallowPlan::default()
        };
        Ok((
            wanted_refs,
            acks,
            neg.common().to_vec(),
            ready,
            refs,
            plan,
            args.wants,
        ))
    })
    .await?;
    let sb = f.sideband_all;

    if f.seen_haves && !f.done {
        section_line(conn, sb, "acknowledgments");
        if acks.is_empty() {
            section_line(conn, sb, "NAK");
        }
        for ack in &acks {
            section_line(conn, sb, &format!("ACK {ack}"));
        }
        if f.wait_for_done || !ready {
            conn.flush_pkt();
            return Ok(None);
        }
        section_line(conn, sb, "ready");
        conn.delim_pkt();
    }
    if !wanted_refs.is_empty() {
        section_line(conn, sb, "wanted-refs");
        for (id, name) in &wanted_refs {
            section_line(conn, sb, &format!("{id} {name}"));
        }
        conn.delim_pkt();
    }
    // git's send_shallow_info: a section whenever a deepen was asked for or the
    // client named shallow commits we know (an empty one if nothing changes).
    if plan.send_list || !plan.grafts.is_empty() {
        section_line(conn, sb, "shallow-info");
        for line in &plan.lines {
            section_data(conn, sb, line.to_string().as_bytes());
        }
        conn.delim_pkt();
    }

    section_line(conn, sb, "packfile");
    let include_tags = if f.include_tag {
        refs.iter()
            .filter(|r| !cfg.is_hidden(r.name.as_ref()))
            .filter_map(AdvertisedRef::as_annotated_tag)
            .collect()
    } else {
        Vec::new()
    };
    f.wants = wants;
    let req = PackRequest::new(&f, common, include_tags, plan, Sideband::Large);
    let stats = pack::send(conn, repo, req).await?;
    conn.flush_pkt();
    Ok(Some(stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_args() {
        let id = "1111111111111111111111111111111111111111";
        let args: Vec<Vec<u8>> = [
            format!("want {id}"),
            format!("have {id}"),
            "done".into(),
            "ofs-delta".into(),
            "thin-pack".into(),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect();
        let cfg = UploadPackConfig::default();
        let f = parse_fetch(&args, &cfg).unwrap();
        assert_eq!(
            (
                f.wants.len(),
                f.haves.len(),
                f.done,
                f.ofs_delta,
                f.include_tag
            ),
            (1, 1, true, true, false)
        );
        let err = parse_fetch(&[b"frob".to_vec()], &cfg).unwrap_err();
        assert_eq!(err.to_string(), "unexpected line: 'frob'");
        assert!(parse_fetch(&[b"want xyz".to_vec()], &cfg).is_err());
        // Filters and ref-in-want only where the repository allows them.
        assert!(parse_fetch(&[b"filter blob:none".to_vec()], &cfg).is_err());
        assert!(parse_fetch(&[b"want-ref refs/heads/main".to_vec()], &cfg).is_err());
        let open = UploadPackConfig {
            allow_filter: true,
            filter_allow_default: true,
            allow_ref_in_want: true,
            ..cfg
        };
        let f = parse_fetch(
            &[
                b"filter blob:none".to_vec(),
                b"want-ref refs/heads/main".to_vec(),
            ],
            &open,
        )
        .unwrap();
        assert_eq!(f.want_refs.len(), 1);
        assert!(f.filter.is_some());
    }
}
