//! Building a pack and streaming it to the client.
//!
//! Pack generation is blocking, CPU-bound gix work, so it runs on a blocking thread
//! and hands the bytes to the connection task through a small bounded channel: a
//! slow client slows down its own pack (back-pressure), never the server, and at
//! most a few chunks are in memory per clone.

mod bases;
mod bitmap;
mod bitmap_filter;
mod delta;
mod edges;
pub mod filter;
mod filtered;
mod index;
pub mod objects;
mod packs;
pub mod progress;
mod reach;
mod read;
mod rev;
mod verified;
pub mod walk;
pub mod write;

use std::io::Write;

use gix_packetline::Channel;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use gix::ObjectId;
use tracing::warn;

use crate::Result;
use crate::connection::{Connection, MAX_BAND_DATA, MAX_SMALL_BAND_DATA};
use crate::upload_pack::fetch::FetchArgs;
use crate::upload_pack::shallow::ShallowPlan;
use bases::Bases;
use bitmap::{Bitmap, Bits};
pub use objects::Selection;
use packs::Packs;
use read::Reader;
pub use write::PackStats;
use write::{Item, Known};

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

/// Memory for decoded delta bases while reading objects.
const PACK_CACHE: usize = 8 << 20;

/// Pieces of a stored pack sent whole: the fewer, the fewer wake-ups and writes, but
/// the channel and the socket hold several at a time. 256 KiB pieces showed as 1.3 MiB
/// more peak memory than 64 KiB ones serving a 21 MiB pack, in the same time.
const VERBATIM_PIECE: usize = 64 * 1024;

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
        let result = generate(&repo, &selection, thin, ofs_delta, progress, tx);
        // What a pack's buffers freed would otherwise stay with the allocator, and
        // the server's memory would be its largest pack's: hand it back.
        crate::memory::trim_heap();
        result
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
/// git's progress phases (there is no "Compressing objects": the few deltas gitd
/// makes are made while writing).
fn generate(
    repo: &gix::ThreadSafeRepository,
    selection: &Selection,
    thin: bool,
    ofs_delta: bool,
    progress: bool,
    tx: mpsc::Sender<Chunk>,
) -> Result<PackStats> {
    let meter_tx = progress.then(|| tx.clone());
    let mut repo = repo.to_thread_local();
    // gix caches up to 96 MiB of delta bases; walks read trees, whose bases are small.
    repo.objects.set_pack_cache(|| {
        Box::new(gix::odb::pack::cache::lru::StaticLinkedList::<64>::new(
            PACK_CACHE,
        ))
    });
    let packs = Packs::open(repo.objects.store_ref().path());
    let mut enumerating = progress::Meter::new(meter_tx.clone(), "Enumerating objects", None);
    let plan = plan(&repo, selection, &packs, thin, &mut enumerating)?;
    enumerating.done();
    crate::memory::release_index_pages();
    let mut out = ChannelWriter {
        tx: tx.clone(),
        buf: Vec::with_capacity(CHUNK),
    };
    let count = plan.send.count();
    let whole_pack = match &plan.send {
        // A stored pack uses offset deltas: sent whole only to clients that read them.
        Send::Listed(items) if ofs_delta => packs.whole(items),
        Send::Bitmap { pack, bits, others } if ofs_delta && others.is_empty() => {
            (bits.count() == packs.packs[*pack].num_objects()).then_some(*pack)
        }
        _ => None,
    };
    let mut stats = match whole_pack {
        Some(n) => {
            // The client gets exactly one stored pack: its bytes are the answer.
            let pack = &packs.packs[n];
            let bytes = pack.copy_verbatim(VERBATIM_PIECE, &mut |piece| out.send_owned(piece))?;
            PackStats {
                objects: count,
                pack_reused: count,
                bytes,
                ..Default::default()
            }
        }
        None => {
            let mut counting = progress::Meter::new(meter_tx, "Counting objects", Some(count));
            let items: Box<dyn Iterator<Item = Item>> = match &plan.send {
                Send::Listed(items) => Box::new(items.iter().copied()),
                Send::Bitmap { pack, bits, others } => {
                    let pack = *pack;
                    Box::new(
                        bits.ones()
                            .map(move |pos| Item::Packed { pack, pos })
                            .chain(others.iter().copied()),
                    )
                }
            };
            // The trees read to pair objects are read again to deltify them: one
            // reader, one cache.
            let mut reader = Reader::new(&packs);
            let bases = delta_bases(&repo, &mut reader, &packs, &plan);
            let mut n = 0;
            let stats = write::write_pack(
                &repo,
                &packs,
                items,
                count,
                plan.thin_bases.as_ref(),
                ofs_delta,
                (bases, reader),
                &mut || {
                    n += 1;
                    counting.set(n);
                },
                &mut out,
            )?;
            counting.done();
            // Copying stretches read the index's offsets through its mapping.
            crate::memory::release_index_pages();
            stats
        }
    };
    out.flush()?;
    stats.bitmap = plan.bitmap;
    if progress {
        // As git counts: objects copied as stretches of the stored pack (or the
        // whole of it) are pack-reused, not reused.
        let _ = tx.blocking_send(Chunk::Progress(format!(
            "Total {} (delta {}), reused {} (delta {}), pack-reused {} (from {})\n",
            stats.objects,
            stats.deltas,
            stats.reused,
            stats.reused_deltas,
            stats.pack_reused,
            usize::from(stats.pack_reused > 0),
        )));
    }
    Ok(stats)
}

/// The objects of a pack.
enum Send {
    /// Chosen by walking: entries of our packs in pack order, then the others.
    Listed(Vec<Item>),
    /// Chosen as positions in our pack `pack` (with its bitmap, or by a clone's walk):
    /// the objects of `bits` there, then `others` (in other packs in pack order, then
    /// the rest).
    Bitmap {
        pack: usize,
        bits: Bits,
        others: Vec<Item>,
    },
}

impl Send {
    fn count(&self) -> usize {
        match self {
            Send::Listed(items) => items.len(),
            Send::Bitmap { bits, others, .. } => bits.count() as usize + others.len(),
        }
    }
}

struct Plan {
    send: Send,
    thin_bases: Option<Known>,
    /// Sent commits whose objects may be deltified against their parents' (newest
    /// first, at most [`bases::MAX_COMMITS`]): empty unless the client has objects
    /// and no filter applies.
    commits: Vec<ObjectId>,
    /// The objects were chosen with a pack bitmap.
    bitmap: bool,
}

/// Pairs for new deltas (see [`Bases`]): only in fetches from clients that have
/// objects, where new objects are few and sending them whole costs most. In a clone
/// the pack is mostly stored entries copied as they are, and pairing the objects of
/// every commit would cost more than it saves.
fn delta_bases(
    repo: &gix::Repository,
    reader: &mut Reader<'_>,
    packs: &Packs,
    plan: &Plan,
) -> Option<Bases> {
    if plan.commits.is_empty() {
        return None;
    }
    let mut bases = Bases::pair(repo, reader, &plan.commits);
    if let Some(known) = &plan.thin_bases {
        // The commit walk's seen-set holds sent objects too: a base in it is the
        // client's only if it is not sent (in a later place of the pack it could
        // become a delta itself). A bitmap's client set holds nothing sent.
        let sent = |id: &gix::hash::oid| match &plan.send {
            Send::Listed(items) => items.binary_search(&packs.find(id)).is_ok(),
            Send::Bitmap { .. } => false,
        };
        let client: Vec<ObjectId> = bases
            .olders()
            .filter(|id| known.contains(packs, id) && !sent(id))
            .copied()
            .collect();
        for id in client {
            bases.client_has(id);
        }
    }
    Some(bases)
}

/// Choose the objects for `sel`: with a pack bitmap where one applies and can be
/// read, otherwise by walking (a bad bitmap is reported and walked around).
fn plan(
    repo: &gix::Repository,
    sel: &Selection,
    packs: &Packs,
    thin: bool,
    meter: &mut progress::Meter,
) -> Result<Plan> {
    // Thin deltas can only help when the client has something; otherwise the set of
    // known objects is dropped here rather than held while writing. A filter leaves
    // objects out that the walk may still count as seen: not bases the client has,
    // so filtered fetches get no thin deltas.
    let thin = thin && sel.filter.is_none();
    let locate = |ids: &mut dyn Iterator<Item = ObjectId>| {
        let mut items: Vec<Item> = ids.map(|id| packs.find(&id)).collect();
        items.sort_unstable();
        items
    };
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
            let selected = match reach::select(repo, sel, packs, n, Some(bitmap), meter) {
                Ok(selected) => selected,
                Err(err) => {
                    warn!("{}: not using its bitmap: {err}", pack.path.display());
                    break;
                }
            };
            meter.set(selected.send.len());
            let commits = if selected.client_has_objects && sel.filter.is_none() {
                let sent = |id: &gix::hash::oid| selected.send.has(id, pack.position(id));
                bases::sent_commits(repo, &sel.wants, sent)
            } else {
                Vec::new()
            };
            return Ok(Plan {
                commits,
                send: Send::Bitmap {
                    pack: n,
                    others: locate(&mut selected.send.ext.iter().copied()),
                    bits: selected.send.bits,
                },
                thin_bases: (thin && selected.client_has_objects).then_some(Known::Bitmap {
                    pack: n,
                    client: selected.client,
                }),
                bitmap: true,
            });
        }
        // A clone without a bitmap: everything the wants reach, walked into a set of
        // positions in the largest pack (objects elsewhere are kept by id). Filters
        // walk in `filtered`, which knows where each object sits in its tree.
        let largest = (0..packs.packs.len()).max_by_key(|n| packs.packs[*n].num_objects());
        if let Some(n) = largest.filter(|_| sel.common.is_empty() && sel.filter.is_none()) {
            let selected = reach::select(repo, sel, packs, n, None, meter)?;
            meter.set(selected.send.len());
            return Ok(Plan {
                // No haves: nothing to make deltas against.
                commits: Vec::new(),
                send: Send::Bitmap {
                    pack: n,
                    others: locate(&mut selected.send.ext.iter().copied()),
                    bits: selected.send.bits,
                },
                thin_bases: None,
                bitmap: false,
            });
        }
    }
    let set = objects::enumerate(repo, packs, sel, meter)?;
    // Commits come first in the list, except under a filter (which has no deltas).
    let commits = if set.client_has_objects && sel.filter.is_none() {
        set.ids[..set.commits.min(bases::MAX_COMMITS)].to_vec()
    } else {
        Vec::new()
    };
    Ok(Plan {
        commits,
        send: Send::Listed(locate(&mut set.ids.into_iter())),
        thin_bases: (thin && set.client_has_objects).then_some(Known::Ids(set.known)),
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
        self.send_owned(chunk)
    }

    /// Send `data` as one chunk, after what is buffered (no copy).
    fn send_owned(&mut self, data: Vec<u8>) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        self.tx.blocking_send(Chunk::Data(data)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl Write for ChannelWriter {
    /// Takes at most what fills the current chunk, so that a large object never
    /// makes a large chunk: what is in flight stays a few chunks.
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A repository made by `script` (run by `sh` in a new temporary directory, after
/// `git init -q w && cd w`, without the user's or system's git configuration), for
/// the unit tests of the pack code. Returns the temporary directory; the repository
/// is its `w`.
#[cfg(test)]
pub(crate) fn test_repo(name: &str, script: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gitd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("set -e\ngit init -q w && cd w\n{script}")])
        .current_dir(&dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "T")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "T")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    dir
}
