//! Writing a pack entry by entry from what our packs store.
//!
//! Entries of our packs are copied as they are stored: whole objects, and deltas whose
//! base is sent too (the offset rewritten to the base's place in the new pack, or the
//! base named by id for clients without `ofs-delta`) or, in a thin pack, is an object
//! the client has (named by id). Anything else — a delta whose base the client lacks, a
//! stored ref-delta, a loose object or one from an alternate — goes out whole, deflated
//! anew, unless [`Bases`] pairs it with a usable base and a new delta against that is
//! less than half its size (git's rule); a stored whole object of a pair is tried
//! against its base the same way. There is no delta search beyond those pairs, and
//! stored deltas are never recomputed.
//!
//! Why not gix's pack pipeline: it keeps chunks of entries of several threads in
//! flight (tens of MiB for a pack of large blobs), names *any* missing base of a thin
//! pack by id without asking whether the client has it, and wants every object located
//! by inflating it. Here entries are copied through a small buffer, read with `pread`
//! (only an object sent whole is held in memory entire), and copying needs no threads.
//!
//! Objects come in pack order within each pack, so every offset delta's base (which
//! lies before it in its pack) has been written before it.

use std::io::Write;
use std::rc::Rc;

use sha1::Digest;
use tracing::debug;

use gix::ObjectId;
use gix::hashtable::HashSet;
use gix::object::Kind;
use gix::odb::pack::data::{self, entry::Header};

mod stretch;

use super::bases::{Base, Bases, MAX_DEPTH};
use super::delta;
use super::packs::{Pack, Packs, ReadAhead};
use super::reach::Closure;
use super::read::Reader;
use crate::{ClientError, Result};

/// What went into a pack, for the `Total …` progress line and the request log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PackStats {
    pub objects: usize,
    /// Deltas in the pack, stored ones and new ones.
    pub deltas: usize,
    pub reused: usize,
    /// Stored deltas copied.
    pub reused_deltas: usize,
    pub bytes: u64,
    /// Objects copied as stretches of a stored pack, unchanged: the whole pack when
    /// the client wants exactly its objects, else runs of entries (git's
    /// `pack.allowPackReuse`).
    pub pack_reused: usize,
    /// The objects were chosen with a pack bitmap.
    pub bitmap: bool,
}

/// One object to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Item {
    /// The object at `pos` in pack order of our pack number `pack`.
    Packed { pack: usize, pos: u32 },
    /// An object none of our packs has (loose, or in an alternate).
    Other(ObjectId),
}

/// Objects the client has, which deltas of a thin pack may name as their base.
pub enum Known {
    /// As ids (the commit walk's seen-set, which holds what is sent too).
    Ids(HashSet<ObjectId>),
    /// What the client's commits reach, with the bitmap of our pack `pack`.
    Bitmap { pack: usize, client: Closure },
}

impl Known {
    pub(super) fn contains(&self, packs: &Packs, id: &gix::hash::oid) -> bool {
        match self {
            Known::Ids(ids) => ids.contains(id),
            Known::Bitmap { pack, client } => client.has(id, packs.packs[*pack].position(id)),
        }
    }
}

/// Write a version 2 pack of the `count` objects of `items` to `out`.
///
/// `items` must list the entries of each of our packs in pack order. `thin`: the
/// objects a delta may name as its base although they are not sent. `ofs_delta`: the
/// client understands offset deltas. `bases`: pairs for new deltas, if any are to be
/// made (see [`Bases`]), and the reader that read them. `on_object` is called after each object. A
/// missing object aborts the pack with an error *before* the trailer, so the client
/// never receives a pack that looks complete but is not.
#[allow(clippy::too_many_arguments)]
pub fn write_pack(
    repo: &gix::Repository,
    packs: &Packs,
    items: impl Iterator<Item = Item>,
    count: usize,
    thin: Option<&Known>,
    ofs_delta: bool,
    (bases, reader): (Option<Bases>, Reader<'_>),
    on_object: &mut dyn FnMut(),
    out: &mut dyn Write,
) -> Result<PackStats> {
    let count32 = u32::try_from(count).map_err(|_| "too many objects for one pack")?;
    let mut w = Writer {
        repo,
        packs,
        thin,
        ofs_delta,
        deflater: gix::zlib::stream::deflate::Compress::new(repo.pack_compression()?),
        deflated: Vec::new(),
        out: Hashing {
            inner: out,
            hasher: sha1::Sha1::new(),
            written: 0,
        },
        placed: Vec::new(),
        current: None,
        stats: PackStats::default(),
        entry: Vec::new(),
        ahead: ReadAhead::default(),
        object: Vec::new(),
        bases: bases.filter(|b| !b.is_empty()),
        reader,
        budget: DELTA_BUDGET,
        stretch: stretch::Window::default(),
    };
    let mut header = *b"PACK\0\0\0\x02\0\0\0\0";
    header[8..].copy_from_slice(&count32.to_be_bytes());
    w.out.write_all(&header)?;
    let mut items = items.peekable();
    while let Some(item) = items.next() {
        match item {
            // Without new deltas no stored chain grows, and a client reading offset
            // deltas takes runs of stored entries as they are.
            Item::Packed { pack, pos } if w.bases.is_none() && w.ofs_delta => {
                let mut end = pos + 1;
                while items.next_if_eq(&Item::Packed { pack, pos: end }).is_some() {
                    end += 1;
                }
                w.stretches(pack, pos..end, on_object)?;
                continue;
            }
            Item::Packed { pack, pos } => w.packed(pack, pos)?,
            Item::Other(id) => {
                let here = w.out.written;
                let depth = w.whole_or_delta(&id, None)?;
                w.note_paired(&id, here, depth);
            }
        }
        w.stats.objects += 1;
        on_object();
    }
    if w.stats.objects != count {
        return Err(format!("{} objects listed, {count} announced", w.stats.objects).into());
    }
    let trailer = w.out.hasher.finalize();
    w.out.inner.write_all(&trailer)?;
    w.stats.bytes = w.out.written + trailer.len() as u64;
    Ok(w.stats)
}

/// Entries are copied in pieces of at most this size.
const PIECE: usize = 64 * 1024;
/// A compression buffer larger than this (after a large object) is not kept.
const KEPT_BUFFER: usize = 1 << 20;

/// Objects larger than this (or with a larger base) are not deltified: the work
/// grows with the size, and such files rarely change by small edits.
const MAX_DELTA_OBJECT: usize = 4 << 20;
/// Objects smaller than this are not deltified: the delta's header and base name
/// would eat most of the gain.
const MIN_DELTA_OBJECT: usize = 64;
/// Bytes of bases and targets one pack may spend delta work on; past it, objects go
/// out as they would without new deltas. Bounds the CPU a single fetch can take.
const DELTA_BUDGET: usize = 128 << 20;

struct Writer<'a> {
    repo: &'a gix::Repository,
    packs: &'a Packs,
    thin: Option<&'a Known>,
    ofs_delta: bool,
    /// The compressor of objects written anew, and its output buffer.
    deflater: gix::zlib::stream::deflate::Compress,
    deflated: Vec<u8>,
    out: Hashing<'a>,
    /// The entries written from pack `current` so far, by their place in it.
    placed: Vec<Placed>,
    current: Option<usize>,
    stats: PackStats,
    entry: Vec<u8>,
    ahead: ReadAhead,
    object: Vec<u8>,
    /// Pairs for new deltas.
    bases: Option<Bases>,
    /// Reads the objects new deltas are made of.
    reader: Reader<'a>,
    /// What is left of [`DELTA_BUDGET`].
    budget: usize,
    /// The pack bytes of the stretch being copied.
    stretch: stretch::Window,
}

/// An entry of one of our packs as written to the pack being sent, or a stretch of
/// entries copied unchanged.
struct Placed {
    /// Where it is in its pack (pack order, so `placed` is sorted by it), and where
    /// it ends there.
    from: u64,
    end: u64,
    /// Where it is in ours.
    at: u64,
    /// Its delta depth in ours (0 for a stretch: stretches are copied only when no
    /// new delta is made, and then no chain grows and depths need no tracking).
    depth: u32,
    /// Its chain holds a new delta, so it may be longer than it is stored.
    grown: bool,
}

impl Writer<'_> {
    /// Where the entry at `base` of the current pack went, with its depth and
    /// whether its chain grew, if it was written.
    fn placed(&self, base: u64) -> Option<(u64, u32, bool)> {
        let i = self
            .placed
            .partition_point(|p| p.from <= base)
            .checked_sub(1)?;
        let p = &self.placed[i];
        // Only an entry's start is a base: inside a stretch, one of its entries.
        let start = base == p.from || self.stretch.starts(base);
        (start && base < p.end).then(|| (p.at + (base - p.from), p.depth, p.grown))
    }
}

/// Whether an object of `size` bytes is worth a delta search.
fn deltifiable(size: u64) -> bool {
    (MIN_DELTA_OBJECT as u64..=MAX_DELTA_OBJECT as u64).contains(&size)
}

/// What became of an attempt at a new delta.
enum NewDelta {
    /// Written, at this depth.
    Written(u32),
    /// Not worth it; the object's data if it was read.
    Not(Option<(Kind, Rc<[u8]>)>),
}

impl Writer<'_> {
    /// Copy the entry at `pos` of pack `n`, its delta base rewritten if it has one;
    /// or write it anew (whole, or as a new delta) where it cannot be copied or a new
    /// delta is smaller.
    fn packed(&mut self, n: usize, pos: u32) -> Result<()> {
        let pack = &self.packs.packs[n];
        if self.current != Some(n) {
            self.current = Some(n);
            self.placed.clear();
        }
        let (offset, size) = pack.entry_at(pos);
        // Large entries are read in pieces: the first holds the header.
        let first = size.min(PIECE);
        self.entry.resize(first, 0);
        self.ahead.read(self.packs, n, offset, &mut self.entry)?;
        let entry = data::Entry::from_bytes(&self.entry, 0, gix::hash::Kind::Sha1)?;
        let here = self.out.written;
        // The header to copy the entry with, and the depth of its chain then.
        let reuse = match entry.header {
            Header::OfsDelta { base_distance } => {
                let base = offset
                    .checked_sub(base_distance)
                    .ok_or("an offset delta's base lies before its pack")?;
                let placed = self.placed(base);
                let (depth, grown) =
                    placed.map_or((1, false), |(_, depth, grown)| (depth + 1, grown));
                match placed {
                    // A stored chain that a new delta below it made longer than
                    // git's limit is cut here: this entry is written anew.
                    _ if grown && depth > MAX_DEPTH => None,
                    Some((at, ..)) if self.ofs_delta => Some(Header::OfsDelta {
                        base_distance: here - at,
                    }),
                    _ => pack
                        .id_at_offset(base)
                        .filter(|id| {
                            placed.is_some()
                                || self.thin.is_some_and(|k| k.contains(self.packs, id))
                        })
                        .map(|base_id| Header::RefDelta { base_id }),
                }
                .map(|header| (header, depth, grown))
            }
            // git writes none when it repacks; a pack kept from a thin fetch may.
            Header::RefDelta { .. } => None,
            whole => Some((whole, 0, false)),
        };
        let paired = self.paired(pack, pos);
        let (depth, grown) = match (reuse, &paired) {
            (Some((header, depth, grown)), _) if header.is_delta() => {
                self.copy(
                    pack,
                    offset,
                    size,
                    entry.data_offset,
                    header,
                    entry.decompressed_size,
                )?;
                self.stats.reused_deltas += 1;
                (depth, grown)
            }
            // A stored whole object of a pair: read it only if it may be deltified.
            (Some((header, ..)), Some(id)) if deltifiable(entry.decompressed_size) => {
                match self.new_delta(id, Some((n, pos)))? {
                    NewDelta::Written(depth) => (depth, true),
                    NewDelta::Not(_) => {
                        let size_of = entry.decompressed_size;
                        self.copy(pack, offset, size, entry.data_offset, header, size_of)?;
                        (0, false)
                    }
                }
            }
            (Some((header, ..)), _) => {
                self.copy(
                    pack,
                    offset,
                    size,
                    entry.data_offset,
                    header,
                    entry.decompressed_size,
                )?;
                (0, false)
            }
            (None, _) => {
                let id = pack.index.oid_at_index(pack.index_at(pos)).to_owned();
                let depth = self.whole_or_delta(&id, Some((n, pos)))?;
                (depth, depth > 0)
            }
        };
        if let Some(id) = paired {
            self.note_paired(&id, here, depth);
        }
        self.placed.push(Placed {
            from: offset,
            end: offset + size as u64,
            at: here,
            depth,
            grown,
        });
        Ok(())
    }

    /// Copy the entry of `size` bytes at `offset` of `pack` with `header`; its first
    /// piece is in `self.entry`, the compressed data starting at `data_offset`.
    fn copy(
        &mut self,
        pack: &Pack,
        offset: u64,
        size: usize,
        data_offset: u64,
        header: Header,
        decompressed_size: u64,
    ) -> Result<()> {
        header.write_to(decompressed_size, &mut self.out)?;
        self.out.write_all(&self.entry[data_offset as usize..])?;
        let (mut at, end) = (offset + self.entry.len() as u64, offset + size as u64);
        while at < end {
            self.entry.resize(PIECE.min((end - at) as usize), 0);
            pack.read_entry_into(at, &mut self.entry)?;
            self.out.write_all(&self.entry)?;
            at += self.entry.len() as u64;
        }
        self.stats.reused += 1;
        self.stats.deltas += usize::from(header.is_delta());
        Ok(())
    }

    /// The id of the object at `pos` of `pack` if it is in a pair.
    fn paired(&self, pack: &Pack, pos: u32) -> Option<ObjectId> {
        let bases = self.bases.as_ref()?;
        let id = pack.index.oid_at_index(pack.index_at(pos));
        bases.is_paired(id).then(|| id.to_owned())
    }

    /// Tell the pairs where `id` went, if it is in one.
    fn note_paired(&mut self, id: &gix::hash::oid, offset: u64, depth: u32) {
        if let Some(bases) = self.bases.as_mut()
            && bases.is_paired(id)
        {
            bases.written(id.to_owned(), offset, depth);
        }
    }

    /// Send `id` (at `at` in our packs, if there) as a new delta if that pays, else
    /// whole. Returns its delta depth.
    fn whole_or_delta(&mut self, id: &gix::hash::oid, at: Option<(usize, u32)>) -> Result<u32> {
        match self.new_delta(id, at)? {
            NewDelta::Written(depth) => Ok(depth),
            NewDelta::Not(Some((kind, data))) => {
                self.write_whole(kind, &data)?;
                Ok(0)
            }
            NewDelta::Not(None) => {
                self.whole(id)?;
                Ok(0)
            }
        }
    }

    /// Write `id` as a delta against one of its usable bases if one makes it less
    /// than half its size (git's threshold, less the size of a base's name).
    fn new_delta(&mut self, id: &gix::hash::oid, at: Option<(usize, u32)>) -> Result<NewDelta> {
        let Some(bases) = self.bases.as_ref() else {
            return Ok(NewDelta::Not(None));
        };
        let candidates = bases.for_object(id);
        if candidates.is_empty() || self.budget == 0 {
            return Ok(NewDelta::Not(None));
        }
        let item = at.map(|(pack, pos)| Item::Packed { pack, pos });
        let (kind, target) = self.reader.any_object(self.repo, id, item)?;
        let limit = (target.len() / 2).saturating_sub(20);
        if !matches!(kind, Kind::Blob | Kind::Tree) || !deltifiable(target.len() as u64) {
            return Ok(NewDelta::Not(Some((kind, target))));
        }
        let mut best: Option<(Base, Vec<u8>)> = None;
        for base in candidates {
            let data = match self.reader.object(self.repo, base.id(), None, kind) {
                Ok(data) => data,
                Err(err) => {
                    debug!("delta base {} unreadable: {err}", base.id());
                    continue;
                }
            };
            // Too large to index, or so much smaller that the difference alone would
            // exceed the limit.
            if data.len() > MAX_DELTA_OBJECT || target.len().saturating_sub(data.len()) >= limit {
                continue;
            }
            let Some(budget) = self.budget.checked_sub(data.len() + target.len()) else {
                self.budget = 0;
                break;
            };
            self.budget = budget;
            let max = best.as_ref().map_or(limit, |(_, d)| d.len() - 1);
            if let Some(d) = delta::encode(&data, &target, max) {
                best = Some((base, d));
            }
        }
        let Some((base, delta)) = best else {
            return Ok(NewDelta::Not(Some((kind, target))));
        };
        let header = match base {
            Base::InPack { offset, .. } if self.ofs_delta => Header::OfsDelta {
                base_distance: self.out.written - offset,
            },
            _ => Header::RefDelta {
                base_id: *base.id(),
            },
        };
        let deflated = self.deflate(&delta)?;
        header.write_to(delta.len() as u64, &mut self.out)?;
        self.out.write_all(&deflated)?;
        self.deflated = deflated;
        self.stats.deltas += 1;
        Ok(NewDelta::Written(base.depth()))
    }

    /// Send `id` as a whole object, deflated anew.
    fn whole(&mut self, id: &gix::hash::oid) -> Result<()> {
        use gix::objs::Find;
        let mut buf = std::mem::take(&mut self.object);
        let Some(obj) = self.repo.objects.try_find(id, &mut buf)? else {
            return Err(ClientError::boxed(
                "an object to be sent is missing from the repository",
            ));
        };
        let written = self.write_whole(obj.kind, obj.data);
        self.object = buf;
        written
    }

    /// Write `data`, the `kind` object `id`, whole.
    fn write_whole(&mut self, kind: Kind, data: &[u8]) -> Result<()> {
        let header = match kind {
            Kind::Commit => Header::Commit,
            Kind::Tree => Header::Tree,
            Kind::Blob => Header::Blob,
            Kind::Tag => Header::Tag,
        };
        let deflated = self.deflate(data)?;
        header.write_to(data.len() as u64, &mut self.out)?;
        self.out.write_all(&deflated)?;
        self.deflated = deflated;
        Ok(())
    }

    /// `data` deflated, in the buffer of this pack (hand it back to `self.deflated`).
    /// One compressor serves the whole pack: setting up a new one costs more than
    /// compressing a small object.
    fn deflate(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        use gix::zlib::stream::deflate::FlushCompress;
        let mut out = std::mem::take(&mut self.deflated);
        if out.capacity() > KEPT_BUFFER {
            out = Vec::new();
        }
        let z = &mut self.deflater;
        z.reset();
        let (in0, out0) = (z.total_in(), z.total_out());
        out.clear();
        out.resize(data.len() + data.len() / 64 + 64, 0);
        // Each round either finishes or fills the output, which then doubles.
        for _ in 0..64 {
            let (read, written) = (
                (z.total_in() - in0) as usize,
                (z.total_out() - out0) as usize,
            );
            let status = z
                .compress(&data[read..], &mut out[written..], FlushCompress::Finish)
                .map_err(|e| format!("deflate: {e:?}"))?;
            let written = (z.total_out() - out0) as usize;
            if status == gix::zlib::Status::StreamEnd {
                out.truncate(written);
                return Ok(out);
            }
            if out.len() - written < 1024 {
                out.resize(out.len() * 2, 0);
            }
        }
        Err("deflate does not finish".into())
    }
}

/// Writes through to the client while hashing for the pack's trailer.
///
/// Plain SHA-1 (with the CPU's SHA instructions where it has them), not gix's
/// collision-detecting one: this hashes bytes we send, it checks nothing we receive,
/// and at pack sizes the hash is most of the time a pack takes.
struct Hashing<'a> {
    inner: &'a mut dyn Write,
    hasher: sha1::Sha1,
    written: u64,
}

impl Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write_all(buf)?;
        self.hasher.update(buf);
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
