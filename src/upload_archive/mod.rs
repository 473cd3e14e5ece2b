//! `git-upload-archive`: `git archive --remote=git://host/repo.git <tree-ish> [paths]`.
//!
//! The exchange is git's (`builtin/upload-archive.c`): the server answers `ACK` and
//! a flush right away, reads up to 64 `argument <arg>` lines until a flush, then
//! sends the archive on side-band 1, git's messages (`fatal: …`, `-v`'s names) on
//! band 2 and, when the archiver failed, `git upload-archive: archiver died with
//! error` on band 3; a flush ends a successful archive.
//!
//! The archive is produced on a blocking thread and handed to the connection through
//! a small bounded channel, as packs are: a slow client slows its own archive and
//! holds a few chunks in memory, never the whole archive. The work one request can
//! cause is bounded by [`Limits`] (entries and bytes, checked before anything is
//! sent) and by [`walk::MAX_FILE`] per file.
//!
//! tar, tgz/tar.gz and zip are written in git's own layouts ([`tar`], [`zip`]) from
//! a walk in git's order ([`walk`]), so an archive is byte for byte what
//! `git archive` produces for the same tree: release tarballs fetched with
//! `git archive --remote` keep their checksums whichever server made them. That is
//! why gix-archive is not used: it builds tar with the `tar` crate (no pax header
//! with the commit id, other modes and owner names), compresses with zlib-rs (other
//! deflate output than git's zlib) and needs a seekable output for zip, where git
//! streams.
//!
//! `export-subst` is not supported (expanding `$Format:…$` needs git's whole
//! `--pretty` formatter): such files are archived as stored, and the client is
//! warned on band 2 when one holds a placeholder, rather than refused: the rest of
//! the archive is still git's, and refusing would make such repositories
//! unarchivable.

pub mod args;
mod encoding;
pub mod tar;
pub mod walk;
mod write;
pub mod zip;

use std::io::Write;

use gix::ObjectId;
use gix_packetline::Channel;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::Result;
use crate::connection::{Connection, MAX_BAND_DATA, Packet};
use args::{FORMATS, Format, Parsed, Refusal, USAGE};
pub use walk::Limits;
use walk::Pathspecs;
use write::{Archive, Out, Writer};

/// git's limit on `argument` lines (`MAX_ARGS`).
const MAX_ARGS: usize = 64;

/// The longest `--prefix`: it is repeated in every entry, and zip keeps every path
/// in memory until the central directory is written, so a long one would multiply
/// what a request may hold by the number of entries.
const MAX_PREFIX: usize = 4096;

/// What git's upload-archive says on band 3 when the archiver failed.
const DIED: &str = "git upload-archive: archiver died with error";

/// One archive entry as the format writers see it.
pub struct Entry<'a> {
    /// With the prefix; directories end in `/`.
    pub path: &'a [u8],
    pub id: ObjectId,
    /// The tree entry's mode (`0o040777` for the prefix directory).
    pub mode: u32,
    /// File content or link target; empty for directories.
    pub data: &'a [u8],
}

/// What travels from the archiver thread to the connection.
enum Chunk {
    /// Archive bytes (band 1).
    Data(Vec<u8>),
    /// Text for the client's standard error (band 2).
    Message(String),
}

/// Chunk size of the channel.
const CHUNK: usize = 64 * 1024;

/// `io::Write` into the channel, in chunks of [`CHUNK`] bytes.
pub struct Sink {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl Sink {
    fn send(&mut self, chunk: Chunk) -> std::io::Result<()> {
        self.tx.blocking_send(chunk).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }

    /// Send `text` on band 2, after the archive bytes written so far.
    pub fn message(&mut self, text: String) -> std::io::Result<()> {
        self.flush()?;
        self.send(Chunk::Message(text))
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.send(Chunk::Data(chunk))
    }
}

/// The archiver failed: this text (possibly empty) goes to band 2, then [`DIED`].
struct Failure(String);

impl From<crate::Error> for Failure {
    fn from(err: crate::Error) -> Self {
        Failure(format!("fatal: {err}\n"))
    }
}

impl From<std::io::Error> for Failure {
    fn from(err: std::io::Error) -> Self {
        Failure(format!("fatal: {err}\n"))
    }
}

fn fatal(msg: impl std::fmt::Display) -> Failure {
    Failure(format!("fatal: {msg}\n"))
}

/// Serve one upload-archive request on `conn`.
pub async fn serve<S>(
    conn: &mut Connection<S>,
    repo: &gix::ThreadSafeRepository,
    limits: Limits,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    conn.text("ACK");
    conn.flush_pkt();
    conn.flush().await?;
    let mut args = Vec::new();
    let refused = loop {
        match conn.expect_packet().await? {
            Packet::Flush => break None,
            _ if args.len() >= MAX_ARGS => {
                break Some(format!("fatal: Too many options (>{})\n", MAX_ARGS - 1));
            }
            packet => match packet.text().and_then(|t| t.strip_prefix(b"argument ")) {
                // Paths and prefixes are passed on as UTF-8: one that is not would
                // be archived under another name, so it is refused instead.
                Some(arg) => match std::str::from_utf8(arg) {
                    Ok(arg) => args.push(arg.to_string()),
                    Err(_) => {
                        break Some(format!(
                            "fatal: argument '{}' is not UTF-8, which this server does not support\n",
                            crate::escape(arg)
                        ));
                    }
                },
                None => break Some("fatal: 'argument' token or flush expected\n".into()),
            },
        }
    };
    let result = match refused {
        Some(text) => Err(Failure(text)),
        None => {
            let (tx, mut rx) = mpsc::channel::<Chunk>(4);
            let repo = repo.clone();
            let task = tokio::task::spawn_blocking(move || {
                let result = produce(&repo, &args, limits, tx);
                // Hand what the archive's buffers freed back to the system, as packs do.
                crate::memory::trim_heap();
                result
            });
            while let Some(chunk) = rx.recv().await {
                match chunk {
                    Chunk::Data(d) => conn.band(Channel::Data, &d, MAX_BAND_DATA).await?,
                    Chunk::Message(m) => {
                        conn.band(Channel::Progress, m.as_bytes(), MAX_BAND_DATA)
                            .await?
                    }
                }
            }
            task.await?
        }
    };
    match result {
        Ok(()) => {
            conn.flush_pkt();
            conn.flush().await?;
            Ok(())
        }
        Err(Failure(text)) => {
            if !text.is_empty() {
                conn.band(Channel::Progress, text.as_bytes(), MAX_BAND_DATA)
                    .await?;
            }
            conn.band(Channel::Error, DIED.as_bytes(), MAX_BAND_DATA)
                .await?;
            conn.flush().await?;
            let first = text.lines().next().unwrap_or("archiver failed");
            Err(format!("archive: {first}").into())
        }
    }
}

/// The blocking half: parse the arguments, resolve the tree-ish, check the request
/// against the limits, then write the archive into the channel.
fn produce(
    repo: &gix::ThreadSafeRepository,
    args: &[String],
    limits: Limits,
    tx: mpsc::Sender<Chunk>,
) -> std::result::Result<(), Failure> {
    let mut sink = Sink {
        tx,
        buf: Vec::with_capacity(CHUNK),
    };
    let req = match args::parse(args) {
        Ok(Parsed::Archive(req)) => req,
        Ok(Parsed::List) => {
            for format in FORMATS {
                writeln!(sink, "{format}")?;
            }
            return Ok(sink.flush()?);
        }
        Err(Refusal::Fatal(msg)) => return Err(fatal(msg)),
        Err(Refusal::Usage(error)) => {
            let error = error.map(|e| format!("error: {e}\n")).unwrap_or_default();
            return Err(Failure(format!("{error}{USAGE}")));
        }
        Err(Refusal::Help) => {
            sink.write_all(USAGE.as_bytes())?;
            sink.flush()?;
            return Err(Failure(String::new()));
        }
    };
    if req.prefix.len() > MAX_PREFIX {
        return Err(fatal(format!(
            "archive refused: --prefix is longer than {MAX_PREFIX} bytes (this server's limit)"
        )));
    }
    let mut repo = repo.to_thread_local();
    // Trees and blobs are read once each: a small delta-base cache is enough.
    repo.objects.set_pack_cache(|| {
        Box::new(gix::odb::pack::cache::lru::StaticLinkedList::<64>::new(
            8 << 20,
        ))
    });
    let config = repo.config_snapshot();
    let allow_unreachable = config
        .boolean("uploadarchive.allowunreachable")
        .unwrap_or(false);
    let umask = config
        .string("tar.umask")
        .and_then(|v| parse_c_int(&v.to_string()))
        .unwrap_or(0o002);
    let target = resolve(&repo, &req.treeish, allow_unreachable).map_err(fatal)?;
    let mtime = match &req.mtime {
        Some(spec) => mtime(spec).map_err(fatal)?,
        None => target.time,
    };
    let mut specs = Pathspecs::new(&req.paths).map_err(fatal)?;
    let plan = walk::plan(&repo, target.tree, &mut specs, limits)?;
    if let Some(path) = specs.unmatched() {
        return Err(fatal(format!("pathspec '{path}' did not match any files")));
    }
    tracing::debug!(
        entries = plan.entries,
        bytes = plan.bytes,
        "archiving {}",
        target.tree
    );
    let archive = match req.format {
        Format::Tar => Archive::Tar(tar::TarWriter::new(sink, target.commit, mtime, umask)?),
        Format::TarGz => {
            let gz = tar::Gzip::new(sink, req.level)?;
            Archive::TarGz(tar::TarWriter::new(gz, target.commit, mtime, umask)?)
        }
        Format::Zip => Archive::Zip(zip::ZipWriter::new(sink, req.level, mtime)),
    };
    let attributes = if req.worktree_attributes {
        Vec::new()
    } else {
        plan.attributes
    };
    let out = Out::new(archive, req.prefix, req.verbose);
    let mut writer = Writer::new(&repo, out, attributes)?;
    writer.start(target.tree)?;
    let mut specs = Pathspecs::new(&req.paths).map_err(fatal)?;
    walk::walk(&repo, target.tree, &mut specs, &mut writer)?;
    let warnings = [
        (
            &writer.unsubstituted,
            "export-subst is not supported by this server: $Format:…$ left as is",
        ),
        (
            &writer.unfiltered,
            "filter drivers are not run by this server: content left as stored",
        ),
        (
            &writer.unencoded,
            "working-tree-encoding unknown to this server: content left as UTF-8",
        ),
    ];
    let mut texts = Vec::new();
    for (paths, what) in warnings {
        if let Some(text) = files_warning(paths, what) {
            tracing::warn!(files = paths.len(), "{what}");
            texts.push(text);
        }
    }
    for text in texts {
        writer.out.archive.message(text)?;
    }
    writer.out.archive.finish(target.commit)?;
    Ok(())
}

/// `warning: <what> in <first path> and N more files`, for band 2.
fn files_warning(paths: &[gix::bstr::BString], what: &str) -> Option<String> {
    let first = paths.first()?;
    let more = match paths.len() - 1 {
        0 => String::new(),
        n => format!(" and {n} more files"),
    };
    Some(format!(
        "warning: {what} in {}{more}\n",
        crate::escape(first)
    ))
}

/// What a tree-ish names.
struct Target {
    tree: ObjectId,
    /// The commit, when the tree-ish is one (or a tag of one).
    commit: Option<ObjectId>,
    /// The commit's committer time, else now (git's `archive_time`).
    time: i64,
}

/// Resolve the tree-ish as git's `parse_treeish_arg` does in remote mode: unless
/// `uploadArchive.allowUnreachable`, the part before any `:` must be a ref.
fn resolve(
    repo: &gix::Repository,
    name: &str,
    allow_unreachable: bool,
) -> std::result::Result<Target, String> {
    if !allow_unreachable {
        let refname = name.split(':').next().unwrap_or(name);
        if !is_ref(repo, refname) {
            return Err(format!("no such ref: {refname}"));
        }
    }
    let id = repo
        .rev_parse_single(name)
        .map_err(|_| format!("not a valid object name: {name}"))?
        .detach();
    let object = repo
        .find_object(id)
        .map_err(|_| format!("not a valid object name: {name}"))?;
    let commit = object.clone().peel_to_commit().ok();
    let tree = object
        .peel_to_tree()
        .map_err(|_| format!("not a tree object: {id}"))?
        .id;
    let (commit, time) = match commit {
        Some(c) => {
            let time = c.time().map(|t| t.seconds).unwrap_or(0);
            (Some(c.id), time)
        }
        None => (None, now()),
    };
    Ok(Target { tree, commit, time })
}

/// Whether `name` is a ref by git's rules (`dwim_ref`: `name`, `refs/name`,
/// `refs/tags/name`, `refs/heads/name`, …) that resolves to an object id.
fn is_ref(repo: &gix::Repository, name: &str) -> bool {
    let Ok(partial) = <&gix::refs::PartialNameRef>::try_from(name) else {
        return false;
    };
    match repo.try_find_reference(partial) {
        Ok(Some(reference)) => reference.into_fully_peeled_id().is_ok(),
        _ => false,
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `--mtime`, in the forms gix and git's `approxidate` read alike: `@<seconds>`,
/// `<seconds>`, `now`, `yesterday`, `<n> <units> ago`, and a date with a time and a
/// zone. git reads much more (`Oct 1 2020`, anything else as now), takes a time
/// without a zone as local time where gix takes UTC, and gives a bare date the
/// current time of day; rather than archive with another time than git would, those
/// are refused.
fn mtime(spec: &str) -> std::result::Result<i64, String> {
    let s = spec.trim();
    let relative = s == "now" || s == "yesterday" || s.ends_with(" ago");
    let seconds = s.strip_prefix('@').unwrap_or(s);
    let seconds = !seconds.is_empty() && seconds.bytes().all(|b| b.is_ascii_digit());
    let zoned = s.contains(':') && {
        let last = s.rsplit([' ', 'T']).next().unwrap_or(s);
        let offset = last
            .rfind(['+', '-'])
            .map(|at| &last[at + 1..])
            .is_some_and(|o| {
                matches!(o.len(), 4 | 5) && o.bytes().filter(|b| b.is_ascii_digit()).count() == 4
            });
        offset || last.ends_with('Z') || matches!(last, "UTC" | "GMT")
    };
    let parsed = gix::date::parse(s, Some(gix::date::Zoned::now()));
    match parsed {
        Ok(time) if relative || seconds || zoned => Ok(time.seconds),
        _ => Err(format!(
            "--mtime '{spec}' is not a time this server reads as git does; give a \
             date and time with a zone ('2024-01-31 12:00:00 +0000'), '@<seconds>' or \
             '<n> <units> ago'"
        )),
    }
}

/// An integer as C's `strtol(…, 0)` reads it (`tar.umask = 022` is octal).
fn parse_c_int(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u32::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtime_takes_what_gix_and_git_read_alike() {
        for (spec, seconds) in [
            ("@1600000000", 1_600_000_000),
            ("1600000000", 1_600_000_000),
            ("2020-09-13 12:26:40 +0000", 1_600_000_000),
            ("2020-09-13T14:26:40+02:00", 1_600_000_000),
            ("2020-09-13T12:26:40Z", 1_600_000_000),
            ("Sun, 13 Sep 2020 12:26:40 +0000", 1_600_000_000),
        ] {
            assert_eq!(mtime(spec), Ok(seconds), "{spec}");
        }
        let day = now() - mtime("1 day ago").unwrap();
        assert!((86_399..=86_401).contains(&day));
        for spec in [
            "2020-09-13",
            "2020-09-13 12:26:40",
            "Oct 1 2020",
            "garbage",
            "",
        ] {
            assert!(mtime(spec).is_err(), "{spec}");
        }
    }
}
