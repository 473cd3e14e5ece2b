//! Protocol v2 (`man 5 gitprotocol-v2`): a capability advertisement, then commands
//! (`ls-refs`, `fetch`), each a list of capabilities, a delimiter, arguments and a
//! flush. Every `fetch` is stateless: the client repeats what it learnt.

use gix::ObjectId;
use gix::bstr::BString;
use gix_packetline::Channel;
use tokio::io::{AsyncRead, AsyncWrite};

use super::config::{Unborn, UploadPackConfig};
use super::fetch::{self, FetchArgs};
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

/// One v2 request: `command=<name>`, capability lines, and arguments.
#[derive(Debug, Default)]
pub(crate) struct Command {
    pub(crate) name: Vec<u8>,
    pub(crate) args: Vec<Vec<u8>>,
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
    while let Some(command) = read_command(conn).await? {
        match command.name.as_slice() {
            b"ls-refs" => ls_refs(conn, repo, cfg, &command.args).await?,
            b"object-info" => object_info(conn, repo, &command.args).await?,
            b"bundle-uri" if cfg.advertise_bundle_uris => bundle_uri(conn, cfg, &command.args)?,
            b"fetch" => {
                if let Some(stats) = fetch(conn, repo, cfg, &command.args).await? {
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
                loop {
                    match conn.expect_packet().await? {
                        Packet::Flush => break,
                        p @ Packet::Data(_) => cmd.args.push(p.text().expect("data").to_vec()),
                        _ => return Err(ClientError::boxed("expected flush after arguments")),
                    }
                }
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
}

impl LsRefsArgs {
    pub(crate) fn parse(args: &[Vec<u8>], cfg: &UploadPackConfig) -> Result<Self> {
        let mut a = LsRefsArgs::default();
        for arg in args {
            match arg.as_slice() {
                b"symrefs" => a.symrefs = true,
                b"peel" => a.peel = true,
                b"unborn" => a.unborn = cfg.unborn != Unborn::Ignore,
                other => match other.strip_prefix(b"ref-prefix ") {
                    Some(p) => a.prefixes.push(p.to_vec()),
                    None => return Err(unexpected(other)),
                },
            }
        }
        if a.prefixes.len() > TOO_MANY_PREFIXES {
            a.prefixes.clear();
        }
        Ok(a)
    }
}

/// `ls-refs`: the refs, filtered by prefix, with symref targets and peeled tags on
/// request. Hidden refs are left out.
async fn ls_refs<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    repo: &gix::ThreadSafeRepository,
    cfg: &UploadPackConfig,
    args: &[Vec<u8>],
) -> Result<()> {
    let LsRefsArgs {
        symrefs,
        peel,
        unborn,
        prefixes,
    } = LsRefsArgs::parse(args, cfg)?;
    let refs = blocking(repo, refs::collect).await?;
    for r in refs.iter().filter(|r| !cfg.is_hidden(r.name.as_ref())) {
        if !prefixes.is_empty() && !prefixes.iter().any(|p| r.name.starts_with(p)) {
            continue;
        }
        if r.target.is_none() && !(unborn && symrefs) {
            continue;
        }
        conn.data(&refs::ls_refs_line(r, symrefs, peel));
    }
    conn.flush_pkt();
    Ok(())
}

/// `object-info`: sizes of objects by id (`size` is the only attribute git defines).
async fn object_info<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    repo: &gix::ThreadSafeRepository,
    args: &[Vec<u8>],
) -> Result<()> {
    let mut size = false;
    let mut ids = Vec::new();
    for arg in args {
        if arg == b"size" {
            size = true;
        } else if let Some(hex) = arg.strip_prefix(b"oid ") {
            ids.push(parse_oid(hex, arg)?);
        } else {
            return Err(unexpected(arg));
        }
    }
    let lines = blocking(repo, move |r| {
        let mut lines = Vec::new();
        if size {
            lines.push("size".to_string());
        }
        for id in ids {
            let line = match (size, r.try_find_header(id)?) {
                (true, Some(h)) => format!("{id} {}", h.size()),
                (true, None) => format!("{id} "),
                (false, _) => id.to_string(),
            };
            lines.push(line);
        }
        Ok(lines)
    })
    .await?;
    // git writes these lines without a trailing newline.
    for line in lines {
        conn.data(line.as_bytes());
    }
    conn.flush_pkt();
    Ok(())
}

/// `bundle-uri`: the repository's `bundle.*` settings, so a client can seed a clone
/// from static bundle files before fetching the rest.
fn bundle_uri<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    cfg: &UploadPackConfig,
    args: &[Vec<u8>],
) -> Result<()> {
    if let Some(arg) = args.first() {
        return Err(ClientError::boxed(format!(
            "bundle-uri: unexpected argument: '{}'",
            crate::escape(arg)
        )));
    }
    // Written without a trailing newline, as git writes them.
    for line in &cfg.bundle_lines {
        conn.data(line);
    }
    conn.flush_pkt();
    Ok(())
}

/// Parse the arguments of a `fetch` command.
pub(crate) fn parse_fetch(args: &[Vec<u8>], cfg: &UploadPackConfig) -> Result<FetchArgs> {
    let mut f = FetchArgs::default();
    for arg in args {
        if let Some(hex) = arg.strip_prefix(b"want ") {
            let id = parse_oid(hex, arg)?;
            if !f.wants.contains(&id) {
                f.wants.push(id);
            }
        } else if let Some(name) = arg
            .strip_prefix(b"want-ref ")
            .filter(|_| cfg.allow_ref_in_want)
        {
            f.want_refs.push(name.into());
        } else if let Some(hex) = arg.strip_prefix(b"have ") {
            f.haves.push(ObjectId::from_hex(hex).map_err(|_| {
                ClientError::boxed(format!(
                    "git upload-pack: expected SHA1 object, got '{}'",
                    crate::escape(hex)
                ))
            })?);
        } else if f.parse_shared(arg, cfg)? {
            continue;
        } else {
            match arg.as_slice() {
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
    }
    f.check_deepen()?;
    Ok(f)
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
    args: &[Vec<u8>],
) -> Result<Option<PackStats>> {
    let mut f = parse_fetch(args, cfg)?;
    if f.wants.is_empty() && f.want_refs.is_empty() && !f.wait_for_done {
        return Ok(None);
    }
    let (args2, cfg2) = (f.clone(), cfg.clone());
    let (wanted_refs, acks, common, ready, refs, plan) = blocking(repo, move |r| {
        let mut args = args2;
        let refs = refs::collect(r)?;
        // want-ref: resolve names to ids; unknown or hidden names are an error.
        let mut wanted_refs: Vec<(ObjectId, BString)> = Vec::new();
        for name in &args.want_refs {
            let found = refs.iter().find(|x| {
                x.name == *name && x.target.is_some() && !cfg2.is_hidden(x.name.as_ref())
            });
            let Some(found) = found else {
                return Err(ClientError::boxed(format!(
                    "unknown ref {}",
                    crate::escape(name)
                )));
            };
            let id = found.target.expect("checked");
            wanted_refs.push((id, name.clone()));
            if !args.wants.contains(&id) {
                args.wants.push(id);
            }
        }
        // git checks `shallow` and `deepen-not` lines as it parses them.
        shallow::validate(r, &refs, &args)?;
        fetch::check_wants_exist(r, &args.wants)?;
        let mut neg = Negotiation::new(r, &args.wants)?;
        let mut acks = Vec::new();
        for have in &args.haves {
            if neg.have(r, *have)? {
                acks.push(*have);
            }
        }
        let ready = neg.ok_to_give_up(r)?;
        // The boundary is computed only for the response that carries the pack, after
        // the haves (so unlike v0, the negotiation sees the full history).
        let sends_pack = args.haves.is_empty() || args.done || (!args.wait_for_done && ready);
        let plan = if sends_pack {
            shallow::plan(r, &cfg2, &refs, &args)?
        } else {
            ShallowPlan::default()
        };
        Ok((wanted_refs, acks, neg.common().to_vec(), ready, refs, plan))
    })
    .await?;
    let sb = f.sideband_all;

    if !f.haves.is_empty() && !f.done {
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
    f.wants.extend(
        wanted_refs
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !f.wants.contains(id))
            .collect::<Vec<_>>(),
    );
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
