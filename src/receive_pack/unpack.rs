//! Receiving the pushed pack into the quarantine.
//!
//! gix-pack's bundle writer indexes the pack as it streams in (completing thin
//! packs from the repository's objects, as `index-pack --fix-thin` does) and writes
//! pack and index into the quarantine's `pack/`. It is blocking work, so it runs on
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

/// Why a pack was not taken: `status` goes into `unpack <status>`, `detail` to the
/// pusher as `fatal: …` (what git's index-pack would have printed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackError {
    pub status: String,
    pub detail: Option<String>,
}

impl UnpackError {
    fn header(status: &str) -> Self {
        UnpackError {
            status: status.to_string(),
            detail: None,
        }
    }

    fn index_pack(detail: String) -> Self {
        UnpackError {
            status: "index-pack abnormal exit".into(),
            detail: Some(detail),
        }
    }
}

/// What came in.
#[derive(Debug)]
pub struct Unpacked {
    pub quarantine: Quarantine,
    /// Objects in the pack as stored (thin-pack bases included).
    pub objects: u32,
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

/// Read the pack from `conn` into `quarantine`, at most `limit` bytes (0: no limit).
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
    limit: u64,
) -> Result<std::result::Result<Unpacked, UnpackError>> {
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
    let too_large = |limit: u64| format!("pack exceeds maximum allowed size ({limit} bytes)");
    let mut total = first.len() as u64;
    if limit > 0 && total > limit {
        return Ok(Err(UnpackError::index_pack(too_large(limit))));
    }

    let (tx, rx) = mpsc::channel(8);
    let interrupt = Arc::new(AtomicBool::new(false));
    let starving = Arc::new(AtomicBool::new(false));
    // A dropped connection future stops the indexer, wherever it is.
    let _stop = StopOnDrop(Arc::clone(&interrupt));
    let input = ChannelReader {
        rx,
        buf: first,
        pos: 0,
        starving: Arc::clone(&starving),
        failure: None,
    };
    let (repo, flag) = (repo.clone(), Arc::clone(&interrupt));
    let mut indexer = tokio::task::spawn_blocking(move || {
        let result = index(&repo, quarantine, input, &flag);
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only releases free memory; it has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
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

/// Sets the indexer's interrupt flag when the receiving future goes away.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The blocking half: index the pack into the quarantine.
fn index(
    repo: &gix::ThreadSafeRepository,
    quarantine: Quarantine,
    mut input: ChannelReader,
    interrupt: &AtomicBool,
) -> std::result::Result<Unpacked, UnpackError> {
    let repo = repo.to_thread_local();
    let options = gix_pack::bundle::write::Options {
        thread_limit: Some(1),
        iteration_mode: gix_pack::data::input::Mode::Verify,
        index_version: gix_pack::index::Version::default(),
        // No single object may claim more memory than this: a hostile header
        // cannot make the indexer allocate gigabytes.
        alloc_limit_bytes: Some(MAX_OBJECT_ALLOC),
        compression: gix::zlib::Compression::BEST_SPEED,
    };
    let pack_dir = quarantine.pack_dir();
    let outcome = gix_pack::Bundle::write_to_directory(
        &mut input,
        Some(&pack_dir),
        &mut gix::utils::progress::Discard,
        interrupt,
        Some(repo.objects.clone()),
        gix::hash::Kind::Sha1,
        options,
    )
    .map_err(|e| {
        // Our own reasons (size, hang-up) travel as the read error's message.
        let detail = match input.failure.take() {
            Some(reason) => reason,
            None => describe(&e),
        };
        UnpackError::index_pack(detail)
    })?;
    Ok(Unpacked {
        quarantine,
        objects: outcome.index.num_objects,
    })
}

/// The largest single allocation the indexer may make for one object or delta.
const MAX_OBJECT_ALLOC: usize = 1 << 30;

/// The most telling line of a gix error chain: its innermost cause.
fn describe(err: &gix::Error) -> String {
    let cause = err.probable_cause().to_string();
    let top = err.to_string();
    if cause == top || cause.is_empty() {
        top
    } else {
        format!("{top}: {cause}")
    }
}

/// The pack bytes as a blocking `BufRead`, fed by the connection task.
struct ChannelReader {
    rx: Chunks,
    buf: Vec<u8>,
    pos: usize,
    /// Set while the indexer waits for bytes: only then is a silent client late.
    starving: Arc<AtomicBool>,
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
                    self.failure = Some(reason.clone());
                    return Err(std::io::Error::other(reason));
                }
                None => return Ok(()), // end of input
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
