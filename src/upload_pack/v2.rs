//! Protocol v2 (`man 5 gitprotocol-v2`): a capability advertisement, then commands
//! (`ls-refs`, `fetch`), each a list of capabilities, a delimiter, arguments and a
//! flush. Every `fetch` is stateless: the client repeats what it learnt.

use gix::ObjectId;
use tokio::io::{AsyncRead, AsyncWrite};

use super::negotiate::Negotiation;
use super::refs::{self, AdvertisedRef};
use super::{blocking, not_our_ref, parse_oid};
use crate::connection::{Connection, Packet};
use crate::pack::{self, PackRequest, PackStats, Selection, Sideband};
use crate::{ClientError, Result};

/// git sends everything when asked for more prefixes than this (`ls-refs.c`).
const TOO_MANY_PREFIXES: usize = 100;

/// One v2 request: `command=<name>`, capability lines, and arguments.
#[derive(Debug, Default)]
struct Command {
    name: Vec<u8>,
    args: Vec<Vec<u8>>,
}

pub async fn serve<S>(
    conn: &mut Connection<S>,
    repo: &gix::ThreadSafeRepository,
) -> Result<Option<PackStats>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    conn.text("version 2");
    conn.text(format!("agent={}", crate::agent()));
    conn.text("ls-refs=unborn");
    conn.text("fetch");
    conn.text("server-option");
    conn.text("object-format=sha1");
    conn.flush_pkt();
    conn.flush().await?;

    let mut total: Option<PackStats> = None;
    while let Some(command) = read_command(conn).await? {
        match command.name.as_slice() {
            b"ls-refs" => ls_refs(conn, repo, &command.args).await?,
            b"fetch" => {
                if let Some(stats) = fetch(conn, repo, &command.args).await? {
                    let t = total.get_or_insert_with(PackStats::default);
                    t.objects += stats.objects;
                    t.deltas += stats.deltas;
                    t.reused += stats.reused;
                    t.bytes += stats.bytes;
                }
            }
            _ => unreachable!("read_command only accepts advertised commands"),
        }
        conn.flush().await?;
    }
    Ok(total)
}

/// Read the next request; `None` when the client is done (end of stream, or a flush
/// with no command: git's way to end the session).
async fn read_command<S: AsyncRead + AsyncWrite + Unpin>(
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
                    if name != b"ls-refs" && name != b"fetch" {
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

/// `ls-refs`: the refs, filtered by prefix, with symref targets and peeled tags on request.
async fn ls_refs<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    repo: &gix::ThreadSafeRepository,
    args: &[Vec<u8>],
) -> Result<()> {
    let (mut symrefs, mut peel, mut unborn, mut prefixes) = (false, false, false, Vec::new());
    for arg in args {
        match arg.as_slice() {
            b"symrefs" => symrefs = true,
            b"peel" => peel = true,
            b"unborn" => unborn = true,
            a => match a.strip_prefix(b"ref-prefix ") {
                Some(p) => prefixes.push(p.to_vec()),
                None => return Err(unexpected(a)),
            },
        }
    }
    if prefixes.len() > TOO_MANY_PREFIXES {
        prefixes.clear();
    }
    let refs = blocking(repo, refs::collect).await?;
    for r in &refs {
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

/// What a `fetch` request asked for.
#[derive(Debug, Default)]
struct FetchArgs {
    wants: Vec<ObjectId>,
    haves: Vec<ObjectId>,
    done: bool,
    wait_for_done: bool,
    ofs_delta: bool,
    no_progress: bool,
    include_tag: bool,
}

impl FetchArgs {
    fn parse(args: &[Vec<u8>]) -> Result<Self> {
        let mut f = FetchArgs::default();
        for arg in args {
            if let Some(hex) = arg.strip_prefix(b"want ") {
                f.wants.push(parse_oid(hex, arg)?);
            } else if let Some(hex) = arg.strip_prefix(b"have ") {
                f.haves.push(ObjectId::from_hex(hex).map_err(|_| {
                    ClientError::boxed(format!(
                        "git upload-pack: expected SHA1 object, got '{}'",
                        crate::escape(hex)
                    ))
                })?);
            } else {
                match arg.as_slice() {
                    b"done" => f.done = true,
                    b"wait-for-done" => f.wait_for_done = true,
                    b"ofs-delta" => f.ofs_delta = true,
                    b"no-progress" => f.no_progress = true,
                    b"include-tag" => f.include_tag = true,
                    b"thin-pack" => {} // a full pack is always a valid answer
                    a => return Err(unexpected(a)),
                }
            }
        }
        Ok(f)
    }
}

/// `fetch`: acknowledge haves, and send the pack once ready (or on `done`).
async fn fetch<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    repo: &gix::ThreadSafeRepository,
    args: &[Vec<u8>],
) -> Result<Option<PackStats>> {
    let f = FetchArgs::parse(args)?;
    if f.wants.is_empty() && !f.wait_for_done {
        return Ok(None);
    }
    let (wants, haves, include_tag) = (f.wants.clone(), f.haves.clone(), f.include_tag);
    let (acks, common, ready, refs) = blocking(repo, move |r| {
        if let Some(missing) = wants.iter().find(|w| !r.has_object(w)) {
            return Err(not_our_ref(missing));
        }
        let mut neg = Negotiation::new(r, &wants)?;
        let mut acks = Vec::new();
        for have in haves {
            if neg.have(r, have)? {
                acks.push(have);
            }
        }
        let ready = neg.ok_to_give_up(r)?;
        let refs = if include_tag {
            refs::collect(r)?
        } else {
            Vec::new()
        };
        Ok((acks, neg.common().to_vec(), ready, refs))
    })
    .await?;

    if !f.haves.is_empty() && !f.done {
        conn.text("acknowledgments");
        if acks.is_empty() {
            conn.text("NAK");
        }
        for ack in &acks {
            conn.text(format!("ACK {ack}"));
        }
        if f.wait_for_done || !ready {
            conn.flush_pkt();
            return Ok(None);
        }
        conn.text("ready");
        conn.delim_pkt();
    }

    conn.text("packfile");
    let include_tags = refs
        .iter()
        .filter_map(AdvertisedRef::as_annotated_tag)
        .collect();
    let req = PackRequest {
        selection: Selection {
            wants: f.wants,
            common,
            include_tags,
        },
        ofs_delta: f.ofs_delta,
        progress: !f.no_progress,
        sideband: Sideband::Large,
    };
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
        let f = FetchArgs::parse(&args).unwrap();
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
        let err = FetchArgs::parse(&[b"deepen 1".to_vec()]).unwrap_err();
        assert_eq!(err.to_string(), "unexpected line: 'deepen 1'");
        assert!(FetchArgs::parse(&[b"want xyz".to_vec()]).is_err());
    }
}
