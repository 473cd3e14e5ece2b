//! Building a pack and streaming it to the client.
//!
//! Pack generation is blocking, CPU-bound gix work, so it runs on a blocking thread
//! and hands the bytes to the connection task through a small bounded channel: a
//! slow client slows down its own pack (back-pressure), never the server, and at
//! most a few chunks are in memory per clone.

mod bitmap;
pub mod filter;
mod filtered;
pub mod objects;
mod packs;
pub mod progress;
mod reach;
pub mod walk;
pub mod write;

use std::io::Write;

use gix_packetline::Channel;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use gix::ObjectId;
use gix::odb::pack::data::output;
use std::sync::Arc;
use tracing::warn;

use crate::Result;
use crate::connection::{Connection, MAX_BAND_DATA, MAX_SMALL_BAND_DATA};
use crate::upload_pack::fetch::FetchArgs;
use crate::upload_pack::shallow::ShallowPlan;
use bitmap::Bitmap;
pub use objects::Selection;
use packs::Packs;
use write::Known;
pub use write::PackStats;

/// How pack bytes travel to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sideband {
    /// Raw pack bytes, no progress (a v0 client without `side-band`).
    None,
    /// `side-band`: 1000-byte pkt-lines.
    Small,
    /// `side-band-64k` (always in protocol v2).
    Large,
}

/// Everything the pack step needs besides the repository.
#[derive(Debug, Clone)]
pub struct PackRequest {
    pub selection: Selection,
    pub ofs_delta: bool,
    /// The client accepts deltas against objects it has (`thin-pack`).
    pub thin: bool,
    pub progress: bool,
    pub sideband: Sideband,
}

impl PackRequest {
    /// Assemble the pack step of a fetch from what the client asked for, the common
    /// objects found by negotiation and the shallow plan.
    pub fn new(
        args: &FetchArgs,
        common: Vec<ObjectId>,
        include_tags: Vec<(ObjectId, ObjectId)>,
        plan: ShallowPlan,
        sideband: Sideband,
    ) -> Self {
        let mut wants = args.wants.clone();
        wants.extend(plan.extra_wants);
        PackRequest {
            selection: Selection {
                wants,
                common,
                include_tags,
                grafts: plan.grafts,
                extra_edges: plan.extra_edges,
                filter: args.filter.clone(),
            },
            ofs_delta: args.ofs_delta,
            thin: args.thin_pack,
            progress: !args.no_progress,
            sideband,
        }
    }
}

/// A piece of the outgoing stream produced on the blocking side.
pub(crate) enum Chunk {
    Data(Vec<u8>),
    Progress(String),
}

/// Chunk size of the channel between generator and socket.
const CHUNK: usize = 64 * 1024;

/// Build the pack for `req` and send it; the caller writes what frames the pack
/// (v2's `packfile` header, the final flush).
pub async fn send<S>(
    conn: &mut Connection<S>,
    repo: &gix::ThreadSafeRepository,
    req: PackRequest,
) -> Result<PackStats>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<Chunk>(4);
    let repo = repo.clone();
    let selection = req.selection.clone();
    let progress = req.progress && req.sideband != Sideband::None;
    let (thin, ofs_delta) = (req.thin, req.ofs_delta);
    let task = tokio::task::spawn_blocking(move || {
        generate(&repo, &selection, thin, ofs_delta, progress, tx)
    });
    let max = if req.sideband == Sideband::Small {
        MAX_SMALL_BAND_DATA
    } else {
        MAX_BAND_DATA
    };
    while let Some(chunk) = rx.recv().await {
        match (chunk, req.sideband) {
            (Chunk::Data(d), Sideband::None) => conn.raw(&d).await?,
            (Chunk::Data(d), _) => conn.band(Channel::Data, &d, max).await?,
            (Chunk::Progress(p), _) => conn.band(Channel::Progress, p.as_bytes(), max).await?,
        }
    }
    match task.await? {
        Ok(stats) => Ok(stats),
        Err(err) => {
            if req.sideband != Sideband::None {
                conn.band(Channel::Error, format!("fatal: {err}\n").as_bytes(), max)
                    .await?;
                conn.flush().await?;
            }
            Err(err)
        }
    }
}

/// The blocking half: choose the objects, then write the pack into the channel, with
/// git's progress phases (there is no "Compressing objects": gitd computes no deltas).
fn generate(
    repo: &gix::ThreadSafeRepository,
    selection: &Selection,
    thin: bool,
    ofs_delta: bool,
    progress: bool,
    tx: mpsc::Sender<Chunk>,
) -> Result<PackStats> {
    let meter_tx = progress.then(|| tx.clone());
    let local = repo.to_thread_local();
    let packs = Arc::new(Packs::open(local.objects.store_ref().path()));
    let mut enumerating = progress::Meter::new(meter_tx.clone(), "Enumerating objects", None);
    let plan = plan(&local, selection, &packs, thin, ofs_delta, &mut enumerating)?;
    enumerating.done();
    drop(local);
    let mut out = ChannelWriter {
        tx: tx.clone(),
        buf: Vec::with_capacity(CHUNK),
    };
    let stats = match plan.whole_pack {
        Some(n) => {
            // The client gets exactly one stored pack: its bytes are the answer.
            let pack = &packs.packs[n];
            pack.copy_verbatim(&mut out)?;
            let objects = pack.num_objects() as usize;
            PackStats {
                objects,
                pack_reused: objects,
                bytes: std::fs::metadata(&pack.path)?.len(),
                ..Default::default()
            }
        }
        None => {
            let mut counting =
                progress::Meter::new(meter_tx, "Counting objects", Some(plan.counts.len()));
            counting.set(plan.located);
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            write::write_pack(
                repo,
                packs.clone(),
                plan.counts,
                plan.thin_bases,
                ofs_delta,
                threads,
                counting,
                &mut out,
            )?
        }
    };
    out.flush()?;
    let stats = PackStats {
        bitmap: plan.bitmap,
        ..stats
    };
    if progress {
        // Every delta gitd sends is a stored one, so all deltas count as reused. A
        // stored pack sent whole counts as git counts its verbatim reuse.
        let (total, deltas, reused) = if stats.pack_reused > 0 {
            (stats.objects, 0, 0)
        } else {
            (stats.objects, stats.deltas, stats.reused)
        };
        let _ = tx.blocking_send(Chunk::Progress(format!(
            "Total {total} (delta {deltas}), reused {reused} (delta {deltas}), pack-reused {} (from {})\n",
            stats.pack_reused,
            usize::from(stats.pack_reused > 0),
        )));
    }
    Ok(stats)
}

/// The objects of a pack and how to send them.
struct Plan {
    /// Located where our packs have them.
    counts: Vec<output::Count>,
    /// How many of `counts` are located.
    located: usize,
    /// The objects are exactly those of our pack number `n`: send it as it is.
    whole_pack: Option<usize>,
    thin_bases: Option<Known>,
    /// Chosen with a bitmap.
    bitmap: bool,
}

/// Choose the objects for `sel`: with a pack bitmap where one applies and can be
/// read, otherwise by walking (a bad bitmap is reported and walked around).
fn plan(
    repo: &gix::Repository,
    sel: &Selection,
    packs: &Packs,
    thin: bool,
    ofs_delta: bool,
    meter: &mut progress::Meter,
) -> Result<Plan> {
    // Thin deltas can only help when the client has something; otherwise the set of
    // known objects is dropped here rather than held while writing. A filter leaves
    // objects out that the walk may still count as seen: not bases the client has,
    // so filtered fetches get no thin deltas.
    let thin = thin && sel.filter.is_none();
    // A stored pack uses offset deltas: only for clients that read them.
    let whole =
        |counts: usize, n: usize| ofs_delta && packs.packs[n].num_objects() as usize == counts;
    if reach::applies(sel) {
        for (n, pack) in packs.packs.iter().enumerate() {
            let bitmap = match Bitmap::open(pack) {
                Ok(Some(bitmap)) => bitmap,
                Ok(None) => continue,
                Err(err) => {
                    warn!("ignoring a bitmap: {err}");
                    continue;
                }
            };
            let selected = match reach::select(repo, sel, pack, bitmap) {
                Ok(selected) => selected,
                Err(err) => {
                    warn!("{}: not using its bitmap: {err}", pack.path.display());
                    break;
                }
            };
            meter.set(selected.send.len());
            let whole_pack =
                (selected.send.ext.is_empty() && whole(selected.send.len(), n)).then_some(n);
            let counts = match whole_pack {
                Some(_) => Vec::new(),
                None => selected.counts(packs, n),
            };
            return Ok(Plan {
                located: counts.iter().filter_map(packs::located).count(),
                counts,
                whole_pack,
                bitmap: true,
                thin_bases: (thin && selected.client_has_objects).then_some(Known::Bitmap {
                    pack: n,
                    client: selected.client,
                }),
            });
        }
    }
    let set = objects::enumerate(repo, sel, meter)?;
    let thin_bases = (thin && set.client_has_objects).then_some(Known::Ids(set.known));
    let counts: Vec<output::Count> = set.ids.into_iter().map(|id| packs.count(id)).collect();
    let located = counts.iter().filter_map(packs::located).count();
    // Distinct objects, all in the same pack of ours, as many as it has: that pack.
    let pack_of = |c: &output::Count| packs::located(c).map(|l| l.pack_id);
    let first = counts.first().and_then(pack_of);
    let whole_pack = first.and_then(packs::pack_number).filter(|n| {
        located == counts.len()
            && whole(counts.len(), *n)
            && counts.iter().all(|c| pack_of(c) == first)
    });
    Ok(Plan {
        located,
        counts,
        whole_pack,
        thin_bases,
        bitmap: false,
    })
}

/// `io::Write` into the channel, in chunks of [`CHUNK`] bytes.
struct ChannelWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(Chunk::Data(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
