//! Writing a pack entry by entry from what our packs store.
//!
//! Entries of our packs are copied as they are stored: whole objects, and deltas whose
//! base is sent too (the offset rewritten to the base's place in the new pack, or the
//! base named by id for clients without `ofs-delta`) or, in a thin pack, is an object
//! the client has (named by id). Anything else — a delta whose base the client lacks, a
//! stored ref-delta, a loose object or one from an alternate — goes out whole, deflated
//! anew. There is no delta search: every delta in the pack is a stored one.
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

use sha1::Digest;

use gix::ObjectId;
use gix::hashtable::HashSet;
use gix::odb::pack::data::{self, entry::Header, output};

use super::packs::{Packs, ReadAhead};
use super::reach::Closure;
use crate::{ClientError, Result};

/// What went into a pack, for the `Total …` progress line and the request log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PackStats {
    pub objects: usize,
    pub deltas: usize,
    pub reused: usize,
    pub bytes: u64,
    /// Objects sent as part of a whole stored pack, streamed as it is.
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
    fn contains(&self, packs: &Packs, id: &gix::hash::oid) -> bool {
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
/// client understands offset deltas. `on_object` is called after each object. A
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
    on_object: &mut dyn FnMut(),
    out: &mut dyn Write,
) -> Result<PackStats> {
    let count32 = u32::try_from(count).map_err(|_| "too many objects for one pack")?;
    let mut w = Writer {
        repo,
        packs,
        thin,
        ofs_delta,
        compression: repo.pack_compression()?,
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
    };
    let mut header = *b"PACK\0\0\0\x02\0\0\0\0";
    header[8..].copy_from_slice(&count32.to_be_bytes());
    w.out.write_all(&header)?;
    for item in items {
        match item {
            Item::Packed { pack, pos } => w.packed(pack, pos)?,
            Item::Other(id) => w.whole(&id)?,
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

struct Writer<'a> {
    repo: &'a gix::Repository,
    packs: &'a Packs,
    thin: Option<&'a Known>,
    ofs_delta: bool,
    compression: gix::zlib::Compression,
    out: Hashing<'a>,
    /// For the entries written from pack `current` so far: where each was in its
    /// pack and where it is in ours, by the former (pack order).
    placed: Vec<(u64, u64)>,
    current: Option<usize>,
    stats: PackStats,
    entry: Vec<u8>,
    ahead: ReadAhead,
    object: Vec<u8>,
}

impl Writer<'_> {
    /// Copy the entry at `pos` of pack `n`, its delta base rewritten if it has one.
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
        let body = &self.entry[entry.data_offset as usize..];
        let header = match entry.header {
            Header::OfsDelta { base_distance } => {
                let base = offset
                    .checked_sub(base_distance)
                    .ok_or("an offset delta's base lies before its pack")?;
                let placed = self.placed.binary_search_by_key(&base, |p| p.0).ok();
                match placed {
                    Some(i) if self.ofs_delta => Some(Header::OfsDelta {
                        base_distance: here - self.placed[i].1,
                    }),
                    _ => pack
                        .id_at_offset(base)
                        .filter(|id| {
                            placed.is_some()
                                || self.thin.is_some_and(|k| k.contains(self.packs, id))
                        })
                        .map(|base_id| Header::RefDelta { base_id }),
                }
            }
            // git writes none when it repacks; a pack kept from a thin fetch may.
            Header::RefDelta { .. } => None,
            whole => Some(whole),
        };
        match header {
            Some(header) => {
                header.write_to(entry.decompressed_size, &mut self.out)?;
                self.out.write_all(body)?;
                let (mut at, end) = (offset + first as u64, offset + size as u64);
                while at < end {
                    self.entry.resize(PIECE.min((end - at) as usize), 0);
                    pack.read_entry_into(at, &mut self.entry)?;
                    self.out.write_all(&self.entry)?;
                    at += self.entry.len() as u64;
                }
                self.stats.reused += 1;
                self.stats.deltas += usize::from(header.is_delta());
            }
            None => {
                let id = pack.index.oid_at_index(pack.index_at(pos)).to_owned();
                self.whole(&id)?;
            }
        }
        self.placed.push((offset, here));
        Ok(())
    }

    /// Send `id` as a whole object, deflated anew.
    fn whole(&mut self, id: &gix::hash::oid) -> Result<()> {
        use gix::objs::Find;
        let Some(obj) = self.repo.objects.try_find(id, &mut self.object)? else {
            return Err(ClientError::boxed(
                "an object to be sent is missing from the repository",
            ));
        };
        let count = output::Count::from_data(id, None);
        let entry = output::Entry::from_data(&count, &obj, self.compression)?;
        entry
            .to_entry_header(data::Version::V2, |_| unreachable!("a whole object"))
            .write_to(entry.decompressed_size as u64, &mut self.out)?;
        self.out.write_all(&entry.compressed_data)?;
        Ok(())
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
