//! The repository's pack files as gitd reads them itself: the index, the pack order
//! (git's `.rev` file, or the index sorted by offset) and the data through `pread`.
//!
//! Why not through gix's object store:
//! - gix learns an entry's compressed size only by inflating the entry
//!   (`location_by_oid`), which is most of the time a pack takes to build. The size
//!   is just the distance to the next entry in pack order, which the index tells.
//! - gix maps packs into memory, and every page a clone touches stays in the
//!   server's RSS: a clone of a 1 GiB pack would show 1 GiB. Entries that are only
//!   copied through are read here into buffers of their own size instead, so memory
//!   does not grow with the pack.
//!
//! Entries located here carry a pack id of ours ([`pack_id`]) that gix never
//! produces; `write::Odb` answers gix's questions about those ids from here.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use gix::ObjectId;
use gix::odb::pack;
use gix::odb::pack::data::entry::Location;
use gix::odb::pack::data::output;

use crate::Result;

/// Length of a SHA-1 checksum; gitd serves SHA-1 repositories only.
const HASH_LEN: usize = 20;

/// The first of our pack ids. gix's own ids are below 2^15 for single packs and
/// have bit 15 set for packs of a multi-pack index; ours are above 2^16 with bit 15
/// clear, so they never collide.
const FIRST_PACK_ID: u32 = 0x7fff_0000;

/// How many packs we read ourselves; gix serves the objects of any others.
const MAX_PACKS: usize = 0x8000;

/// The pack id gix sees for our pack number `n`.
pub fn pack_id(n: usize) -> u32 {
    FIRST_PACK_ID + n as u32
}

/// Our pack number for a pack id, if the id is one of ours.
pub fn pack_number(id: u32) -> Option<usize> {
    (id & 0x8000 == 0)
        .then(|| id.checked_sub(FIRST_PACK_ID))
        .flatten()
        .map(|n| n as usize)
}

/// One pack file with its index.
pub struct Pack {
    /// The `.pack` file.
    pub path: PathBuf,
    pub index: pack::index::File,
    /// Index positions in pack order (by offset): git's reverse index.
    order: Vec<u32>,
    data: File,
    /// Where the last entry ends: the trailing checksum follows.
    entries_end: u64,
}

impl Pack {
    /// Open `path` (a `.pack`) with its `.idx`. Only version 2 packs whose index
    /// matches are used; `None` for anything else (gix then serves their objects).
    fn open(path: &Path) -> Option<Pack> {
        let index =
            pack::index::File::at(path.with_extension("idx"), gix::hash::Kind::Sha1).ok()?;
        let data = File::open(path).ok()?;
        let len = data.metadata().ok()?.len();
        let mut header = [0u8; 12];
        data.read_exact_at(&mut header, 0).ok()?;
        let mut trailer = [0u8; HASH_LEN];
        data.read_exact_at(&mut trailer, len.checked_sub(HASH_LEN as u64)?)
            .ok()?;
        let count = u32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
        if &header[..8] != b"PACK\0\0\0\x02"
            || count != index.num_objects()
            || index.pack_checksum().as_slice() != trailer
        {
            return None;
        }
        let order = read_rev(path, &index).unwrap_or_else(|| {
            let mut order: Vec<u32> = (0..index.num_objects()).collect();
            order.sort_unstable_by_key(|i| index.pack_offset_at_index(*i));
            order
        });
        Some(Pack {
            path: path.to_owned(),
            index,
            order,
            data,
            entries_end: len - HASH_LEN as u64,
        })
    }

    pub fn num_objects(&self) -> u32 {
        self.index.num_objects()
    }

    /// The trailing checksum: the pack's name, and what a bitmap names its pack by.
    pub fn checksum(&self) -> ObjectId {
        self.index.pack_checksum()
    }

    /// The index position of the object at `pos` in pack order.
    pub fn index_at(&self, pos: u32) -> u32 {
        self.order[pos as usize]
    }

    /// Offset and entry size of the object at `pos` in pack order.
    pub fn entry_at(&self, pos: u32) -> (u64, usize) {
        let offset = self.index.pack_offset_at_index(self.index_at(pos));
        let end = match self.order.get(pos as usize + 1) {
            Some(next) => self.index.pack_offset_at_index(*next),
            None => self.entries_end,
        };
        (offset, (end - offset) as usize)
    }

    /// Position in pack order of the object at `offset` (which must be an entry's).
    fn position_of_offset(&self, offset: u64) -> Option<u32> {
        self.order
            .binary_search_by_key(&offset, |i| self.index.pack_offset_at_index(*i))
            .ok()
            .map(|p| p as u32)
    }

    /// Position in pack order of `id`, if the pack has it.
    pub fn position(&self, id: &gix::hash::oid) -> Option<u32> {
        let index = self.index.lookup(id)?;
        self.position_of_offset(self.index.pack_offset_at_index(index))
    }

    /// Read the raw entry (header and compressed data) at `offset`.
    pub fn read_entry(&self, offset: u64, size: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; size];
        self.data.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Send the whole pack file as it is, which is a valid pack for a client that
    /// wants exactly its objects. Read in small pieces (never mapped), so memory
    /// stays flat whatever the size. Returns how many entries are deltas.
    pub fn copy_verbatim(&self, out: &mut dyn Write) -> Result<usize> {
        let total = self.entries_end + HASH_LEN as u64;
        let mut buf = vec![0u8; 256 * 1024];
        let (mut at, mut pos, mut deltas) = (0u64, 0u32, 0usize);
        let mut next_entry = self.entry_offset(0);
        while at < total {
            let n = buf.len().min((total - at) as usize);
            self.data.read_exact_at(&mut buf[..n], at)?;
            // The type of each entry starting in this piece: bits 4-6 of its first byte.
            while let Some(offset) = next_entry.filter(|o| *o < at + n as u64) {
                let kind = (buf[(offset - at) as usize] >> 4) & 7;
                deltas += usize::from(kind == 6 || kind == 7);
                pos += 1;
                next_entry = self.entry_offset(pos);
            }
            out.write_all(&buf[..n])?;
            at += n as u64;
        }
        Ok(deltas)
    }

    fn entry_offset(&self, pos: u32) -> Option<u64> {
        let index = self.order.get(pos as usize)?;
        Some(self.index.pack_offset_at_index(*index))
    }
}

/// git's `.rev` file for the pack at `path`: "RIDX", version 1, hash id 1, the index
/// positions in pack order, the pack's checksum and the file's own. Checked in full
/// (a wrong order would cut entries at the wrong places); `None` if absent or bad.
fn read_rev(path: &Path, index: &pack::index::File) -> Option<Vec<u32>> {
    let bytes = std::fs::read(path.with_extension("rev")).ok()?;
    let n = index.num_objects() as usize;
    if bytes.len() != 12 + 4 * n + 2 * HASH_LEN || &bytes[..12] != b"RIDX\0\0\0\x01\0\0\0\x01" {
        return None;
    }
    let (body, own) = bytes.split_at(bytes.len() - HASH_LEN);
    let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
    hasher.update(body);
    if hasher.try_finalize().ok()?.as_slice() != own
        || &body[body.len() - HASH_LEN..] != index.pack_checksum().as_slice()
    {
        return None;
    }
    let order: Vec<u32> = body[12..12 + 4 * n]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")))
        .collect();
    order.iter().all(|i| (*i as usize) < n).then_some(order)
}

/// All version 2 packs of a repository's object directory (not its alternates,
/// whose objects gix finds).
#[derive(Default)]
pub struct Packs {
    pub packs: Vec<Pack>,
}

impl Packs {
    pub fn open(objects_dir: &Path) -> Packs {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(objects_dir.join("pack"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "pack"))
            .collect();
        paths.sort();
        Packs {
            packs: paths
                .iter()
                .filter_map(|p| Pack::open(p))
                .take(MAX_PACKS)
                .collect(),
        }
    }

    /// Where `id` is stored, with the size of its entry, found without reading the
    /// entry. `None` if no pack of ours has it (a loose object, or an alternate's).
    pub fn locate(&self, id: &gix::hash::oid) -> Option<Location> {
        self.packs.iter().enumerate().find_map(|(n, pack)| {
            let pos = pack.position(id)?;
            Some(location(n, pack.entry_at(pos)))
        })
    }

    /// `id` for gix's pack pipeline: located if one of our packs has it, else left
    /// for gix to find.
    pub fn count(&self, id: ObjectId) -> output::Count {
        output::Count {
            id,
            entry_pack_location: match self.locate(&id) {
                Some(location) => output::count::PackLocation::LookedUp(Some(location)),
                None => output::count::PackLocation::NotLookedUp,
            },
        }
    }

    /// An entry located by [`Packs::locate`], as gix's pack pipeline wants it.
    pub fn entry(&self, location: &Location) -> Option<pack::find::Entry> {
        let pack = self.packs.get(pack_number(location.pack_id)?)?;
        let data = pack
            .read_entry(location.pack_offset, location.entry_size)
            .ok()?;
        Some(pack::find::Entry {
            data,
            version: pack::data::Version::V2,
        })
    }
}

/// Where `count` is stored, if it was located (gix's own accessors panic on counts
/// that were not looked up yet).
pub fn located(count: &output::Count) -> Option<&Location> {
    match &count.entry_pack_location {
        output::count::PackLocation::LookedUp(location) => location.as_ref(),
        output::count::PackLocation::NotLookedUp => None,
    }
}

/// The location of the entry (offset, size) of our pack number `n`.
pub fn location(n: usize, (pack_offset, entry_size): (u64, usize)) -> Location {
    Location {
        pack_id: pack_id(n),
        pack_offset,
        entry_size,
    }
}
