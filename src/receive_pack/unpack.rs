//! Receiving the pushed pack into the quarantine.
//!
//! [`index_pack`](super::index_pack) reads the pack as it streams in, completes a
//! thin pack from the repository's objects (as `index-pack --fix-thin` does) and
//! writes pack and index into the quarantine's `pack/`; with `receive.fsckObjects`
//! every object is then checked ([`fsck`](super::fsck)). It is blocking work, so it runs on
//! a blocking thread fed through a small bounded channel by the connection task:
//! a slow pusher slows down its own push, and at most a few chunks are in memory.

use std::io::{BufRead, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::quarantine::Quarantine;
use crate::Result;
use crate::connection::Connection;

/// Why a pack was not taken: `status` goes into `unpack <status>`, `messages`
/// (`error: …`, `warning: …` lines) then `detail` as `fatal: …` to the pusher
/// (what git's index-pack or unpack-objects would have printed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackError {
    pub status: String,
    pub detail: Option<String>,
    pub messages: Vec<String>,
}

impl UnpackError {
    fn header(status: &str) -> Self {
        UnpackError {
            status: status.to_string(),
            detail: None,
            messages: Vec::new(),
        }
    }

    /// The unpacker died: `index-pack`, or `unpack-objects` for a pack of fewer
    /// objects than the unpack limit (git's choice of unpacker).
    fn unpacker(unpack_objects: bool, detail: String) -> Self {
        let name = if unpack_objects {
            "unpack-objects"
        } else {
            "index-pack"
        };
        UnpackError {
            status: format!("{name} abnormal exit"),
            detail: Some(detail),
            messages: Vec::new(),
        }
    }
}

/// What the received pack must pass besides being a well-formed pack.
#[derive(Debug, Clone, Copy)]
pub struct Checks {
    /// Largest pack in bytes (0: no limit).
    pub limit: u64,
    /// Check every object as git's `fsck` does.
    pub fsck: bool,
    /// git's `unpackLimit`, for the name of the unpacker in errors.
    pub unpack_limit: u32,
    /// `--max-request-memory`: bounds the index tables (by the header's object
    /// count, before anything is read) and any object resolved whole.
    pub memory: u64,
}

/// What indexing holds per object of a pushed pack: its entry as parsed, its slot
/// in the delta tree, and its index line (measured: see the README's push section).
pub const INDEX_BYTES_PER_OBJECT: u64 = 160;

/// What came in.
#[derive(Debug)]
pub struct Unpacked {
    pub quarantine: Quarantine,
    /// Objects in the pack as stored (thin-pack bases included).
    pub objects: u32,
    /// fsck's `warning: …` lines for the pusher.
    pub warnings: Vec<String>,
}

/// The 12-byte pack header: `PACK`, version 2 or 3, object count.
fn check_header(header: &[u8]) -> std::result::Result<(), UnpackError> {
    if &header[..4] != b"PACK" {
        return Err(UnpackError::header(
            "protocol error (pack signature mismatch detected)",
        ));
    }
    let version = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes"));
    if version != 2 && version != 3 {
        return Err(UnpackError::header(
            "protocol error (pack version unsupported)",
        ));
    }
    Ok(())
}

/// Chunks to the indexer; an `Err` makes its next read fail with that message.
type Chunks = mpsc::Receiver<std::result::Result<Vec<u8>, String>>;

/// Read the pack from `conn` into `quarantine`, within `checks`.
///
/// `Ok(Err(_))` is a pack that was refused (reported to the client as the unpack
/// status); `Err(_)` a connection that broke, with nobody left to tell.
///
/// The connection's timeout applies to a client that stops sending while the
/// indexer waits for its bytes, not to the indexer's own work after the last byte.
pub async fn receive<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    repo: &gix::ThreadSafeRepository,
    quarantine: Quarantine,
    checks: Checks,
) -> Result<std::result::Result<Unpacked, UnpackError>> {
    let limit = checks.limit;
    let timeout = conn.timeout();
    let timed_out = || -> crate::Error { "timed out reading the pack from the client".into() };
    // The header first, to answer a bad one with git's words.
    let mut first = Vec::new();
    while first.len() < 12 {
        let read = tokio::time::timeout(timeout, conn.read_raw())
            .await
            .map_err(|_| timed_out())??;
        match read {
            Some(bytes) => first.extend_from_slice(&bytes),
            None => {
                return Ok(Err(UnpackError::header(
                    "eof before pack header was fully read",
                )));
            }
        }
    }
    if let Err(e) = check_header(&first) {
        return Ok(Err(e));
    }
    let count = u32::from_be_bytes(first[8..12].try_into().expect("4 bytes"));
    let unpack_objects = count < checks.unpack_limit;
    let too_large = |limit: u64| format!("pack exceeds maximum allowed size ({limit} bytes)");
    let mut total = first.len() as u64;
    if limit > 0 && total > limit {
        return Ok(Err(UnpackError::unpacker(unpack_objects, too_large(limit))));
    }
    if u64::from(count) * INDEX_BYTES_PER_OBJECT > checks.memory {
        return Ok(Err(UnpackError::unpacker(
            unpack_objects,
            format!(
                "pack has {count} objects, more than this server indexes in \
                 --max-request-memory={} MiB",
                checks.memory >> 20
            ),
        )));
    }

    let (tx, rx) = mpsc::channel(8);
    let interrupt = Arc::new(AtomicBool::new(false));
    let starving = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    // A dropped connection future stops the indexer, wherever it is: a closed
    // channel ends its input, the interrupt flag its work after the input.
    let _stop = StopOnDrop {
        interrupt: Arc::clone(&interrupt),
        input_finished: Arc::clone(&finished),
    };
    let input = ChannelReader {
        rx,
        buf: first,
        pos: 0,
        starving: Arc::clone(&starving),
        finished,
        failure: None,
    };
    let (repo, flag) = (repo.clone(), Arc::clone(&interrupt));
    let mut indexer = tokio::task::spawn_blocking(move || {
        let max_alloc = usize::try_from(checks.memory).unwrap_or(usize::MAX);
        let result = index(&repo, quarantine, input, &flag, max_alloc)
            .and_then(|u| if checks.fsck { fsck_pack(u) } else { Ok(u) })
            .map_err(|mut e| {
                if e.status.is_empty() {
                    e.status = UnpackError::unpacker(unpack_objects, String::new()).status;
                }
                e
            });
        crate::memory::trim_heap();
        result
    });
    let mut tx = Some(tx);
    let mut deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            biased;
            done = &mut indexer => return Ok(done?),
            () = tokio::time::sleep_until(deadline) => {
                if starving.load(Ordering::Relaxed) && let Some(sender) = tx.take() {
                    // Stopped through its input, never the interrupt flag: gix panics
                    // when that flag is set between its reads of one buffer.
                    let _ = sender.send(Err(timed_out().to_string())).await;
                    drop(sender);
                    let _ = indexer.await;
                    return Err(timed_out());
                }
                deadline = tokio::time::Instant::now() + timeout;
            }
            read = conn.read_raw(), if tx.is_some() => {
                deadline = tokio::time::Instant::now() + timeout;
                let sender = tx.as_ref().expect("checked by the guard");
                let chunk = match read {
                    Ok(Some(bytes)) => {
                        total += bytes.len() as u64;
                        if limit > 0 && total > limit {
                            Err(too_large(limit))
                        } else {
                            Ok(bytes)
                        }
                    }
                    // The end of the stream: the indexer sees it as the end of input.
                    Ok(None) => {
                        tx = None;
                        continue;
                    }
                    Err(e) => {
                        if let Some(sender) = tx.take() {
                            let _ = sender.send(Err(e.to_string())).await;
                        }
                        let _ = indexer.await;
                        return Err(e);
                    }
                };
                let stop = chunk.is_err();
                // A closed channel means the indexer is done: its result says why.
                if sender.send(chunk).await.is_err() || stop {
                    tx = None;
                }
            }
        }
    }
}

/// Sets the indexer's interrupt flag when the receiving future goes away, once
/// the indexer has read all its input: gix-pack panics when its input reader
/// is interrupted between two reads of the same bytes, and a thread that
/// panics may not get to remove the quarantine before the process exits.
struct StopOnDrop {
    interrupt: Arc<AtomicBool>,
    input_finished: Arc<AtomicBool>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if self.input_finished.load(Ordering::Acquire) {
            self.interrupt.store(true, Ordering::Relaxed);
        }
    }
}

/// The blocking half: index the pack into the quarantine.
fn index(
    repo: &gix::ThreadSafeRepository,
    quarantine: Quarantine,
    mut input: ChannelReader,
    interrupt: &AtomicBool,
    max_alloc: usize,
) -> std::result::Result<Unpacked, UnpackError> {
    let repo = repo.to_thread_local();
    let pack_dir = quarantine.pack_dir();
    // No single object resolved whole may claim more memory than the request's
    // budget: a hostile header cannot make the indexer allocate gigabytes.
    let objects = super::index_pack::write(
        &mut input,
        &pack_dir,
        repo.objects.clone(),
        interrupt,
        max_alloc,
    )
    .map_err(|detail| {
        // Our own reasons (size, hang-up) travel as the read error's message.
        UnpackError {
            status: String::new(),
            detail: Some(input.failure.take().unwrap_or(detail)),
            messages: Vec::new(),
        }
    })?;
    Ok(Unpacked {
        quarantine,
        objects,
        warnings: Vec::new(),
    })
}

/// git's `index-pack --strict`: every pushed commit, tree and tag, in pack order,
/// must parse and pass [`fsck`](super::fsck); the first that does not refuses the
/// pack with git's messages. The status is filled in by the caller.
fn fsck_pack(unpacked: Unpacked) -> std::result::Result<Unpacked, UnpackError> {
    use gix::objs::{Find, FindHeader, Kind};
    let refuse = |messages: Vec<String>, fatal: &str| UnpackError {
        status: String::new(),
        detail: Some(fatal.to_string()),
        messages,
    };
    let broken =
        |e: &dyn std::fmt::Display| refuse(Vec::new(), &format!("cannot read the pack: {e}"));
    let dir = unpacked.quarantine.dir().to_owned();
    let mut odb = gix::odb::at(&dir, gix::hash::Kind::Sha1).map_err(|e| broken(&e))?;
    odb.refresh_never();
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(unpacked.quarantine.pack_dir()).map_err(|e| broken(&e))? {
        let path = entry.map_err(|e| broken(&e))?.path();
        if path.extension().is_some_and(|e| e == "idx") {
            let index =
                gix_pack::index::File::at(&path, gix::hash::Kind::Sha1).map_err(|e| broken(&e))?;
            ids.extend(index.iter().map(|e| (e.pack_offset, e.oid)));
        }
    }
    ids.sort_unstable();
    let mut warnings = Vec::new();
    let mut buf = Vec::new();
    for (_, id) in ids {
        let header = odb.try_header(&id).map_err(|e| broken(&e))?;
        if header.is_none_or(|h| h.kind == Kind::Blob) {
            continue;
        }
        let Some(data) = odb.try_find(&id, &mut buf).map_err(|e| broken(&e))? else {
            continue;
        };
        // index-pack parses commits before its fsck (trees only in fsck).
        if data.kind == Kind::Commit
            && let Err(why) = super::fsck::parse(&id, data.kind, data.data)
        {
            warnings.push(format!("error: {why}"));
            return Err(refuse(warnings, &format!("invalid {}", data.kind)));
        }
        let report = super::fsck::fsck(&id, data.kind, data.data);
        warnings.extend(report.warnings.iter().map(|w| format!("warning: {w}")));
        if !report.errors.is_empty() {
            warnings.extend(report.errors.iter().map(|e| format!("error: {e}")));
            return Err(refuse(warnings, "fsck error in packed object"));
        }
    }
    // Accepted with warnings: git prints them and goes on.
    Ok(Unpacked {
        warnings,
        ..unpacked
    })
}

/// The pack bytes as a blocking `BufRead`, fed by the connection task.
struct ChannelReader {
    rx: Chunks,
    buf: Vec<u8>,
    pos: usize,
    /// Set while the indexer waits for bytes: only then is a silent client late.
    starving: Arc<AtomicBool>,
    /// Set once the input has ended (or failed): the indexer may be interrupted.
    finished: Arc<AtomicBool>,
    /// The reason the connection side stopped the input, if it did.
    failure: Option<String>,
}

impl ChannelReader {
    fn refill(&mut self) -> std::io::Result<()> {
        while self.pos >= self.buf.len() {
            self.starving.store(true, Ordering::Relaxed);
            let next = self.rx.blocking_recv();
            self.starving.store(false, Ordering::Relaxed);
            match next {
                Some(Ok(bytes)) => {
                    self.buf = bytes;
                    self.pos = 0;
                }
                Some(Err(reason)) => {
                    self.finished.store(true, Ordering::Release);
                    self.failure = Some(reason.clone());
                    return Err(std::io::Error::other(reason));
                }
                None => {
                    self.finished.store(true, Ordering::Release);
                    return Ok(()); // end of input
                }
            }
        }
        Ok(())
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(out.len());
            out[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.refill()?;
        Ok(&self.buf[self.pos.min(self.buf.len())..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos += amt;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_errors_have_gits_wording() {
        assert_eq!(
            check_header(b"PACK\0\0\0\x02\0\0\0\x01"),
            Ok(()),
            "version 2"
        );
        assert_eq!(
            check_header(b"KCAP\0\0\0\x02\0\0\0\x01")
                .unwrap_err()
                .status,
            "protocol error (pack signature mismatch detected)"
        );
        assert_eq!(
            check_header(b"PACK\0\0\0\x04\0\0\0\x01")
                .unwrap_err()
                .status,
            "protocol error (pack version unsupported)"
        );
    }
}
