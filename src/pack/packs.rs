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

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use gix::ObjectId;
use gix::odb::pack;

use super::index::{Buckets, Sparse, release_mapped_pages};
use super::rev::Order;
use super::write::Item;

/// Length of a SHA-1 checksum; gitd serves SHA-1 repositories only.
const HASH_LEN: usize = 20;

/// One pack file with its index.
pub struct Pack {
    /// The `.pack` file.
    pub path: PathBuf,
    pub index: pack::index::File,
    /// Index positions in pack order (by offset): git's reverse index.
    order: Order,
    /// The other way round, made when first needed.
    positions: OnceCell<Vec<u32>>,
    /// The index read with `pread` while it is read little, `None` for a version 1
    /// index; reads of the index so far; once there were many, a finer fan-out
    /// table for the lookups, which then go through the mapped index.
    sparse: Option<Sparse>,
    reads: Cell<u32>,
    /// Lookups answered while the index is read with `pread`: a walk looks up the
    /// same ids again and again (the unchanged trees of each commit, a commit before
    /// and after asking whether it has a bitmap): a fetch of a few commits made 5k
    /// lookups of 900 ids. At most [`SPARSE_READS`] entries; dropped for the buckets.
    memo: RefCell<HashMap<ObjectId, Option<u32>>>,
    buckets: OnceCell<Buckets>,
    /// Lookups go through the mapping for now: see [`Pack::with_mapped_lookups`].
    mapped: Cell<bool>,
    checksum: ObjectId,
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
        let sparse = Sparse::open(&path.with_extension("idx"), index.num_objects());
        if sparse.is_some() {
            release_mapped_pages(&index);
        }
        let checksum = match &sparse {
            Some(sparse) => sparse.pack_checksum,
            None => index.pack_checksum(),
        };
        if &header[..8] != b"PACK\0\0\0\x02"
            || count != index.num_objects()
            || checksum.as_slice() != trailer
        {
            return None;
        }
        let order = Order::open(path, &index, &checksum);
        Some(Pack {
            path: path.to_owned(),
            index,
            order,
            positions: OnceCell::new(),
            sparse,
            reads: Cell::new(0),
            memo: RefCell::default(),
            mapped: Cell::new(false),
            buckets: OnceCell::new(),
            checksum,
            data,
            entries_end: len - HASH_LEN as u64,
        })
    }

    pub fn num_objects(&self) -> u32 {
        self.index.num_objects()
    }

    /// The trailing checksum: the pack's name, and what a bitmap names its pack by.
    pub fn checksum(&self) -> ObjectId {
        self.checksum
    }

    /// The index position of the object at `pos` in pack order.
    pub fn index_at(&self, pos: u32) -> u32 {
        self.order
            .get(pos as usize)
            .expect("a position in the pack")
    }

    /// Where the last entry ends (the trailing checksum follows).
    pub fn entries_end(&self) -> u64 {
        self.entries_end
    }

    /// Offset of the object at `pos` in pack order.
    pub fn offset_at(&self, pos: u32) -> u64 {
        self.offset_at_index(self.index_at(pos))
    }

    /// Offset of the object at `pos` in pack order, or where the entries end for
    /// the position after the last, read through the index's mapping (whose pages
    /// `crate::memory::release_index_pages` gives back).
    pub fn offset_mapped(&self, pos: u32) -> u64 {
        match self.order.get(pos as usize) {
            Some(index) => self.index.pack_offset_at_index(index),
            None => self.entries_end,
        }
    }

    /// Offset and entry size of the object at `pos` in pack order.
    pub fn entry_at(&self, pos: u32) -> (u64, usize) {
        let offset = self.offset_at_index(self.index_at(pos));
        let end = match self.order.get(pos as usize + 1) {
            Some(next) => self.offset_at_index(next),
            None => self.entries_end,
        };
        (offset, (end - offset) as usize)
    }

    /// Position in pack order of the object at `offset` (which must be an entry's).
    fn position_of_offset(&self, offset: u64) -> Option<u32> {
        self.order
            .search(offset, |i| self.offset_at_index(i))
            .map(|p| p as u32)
    }

    /// The sparse reader while the index has been read little, counting this read.
    fn sparse(&self) -> Option<&Sparse> {
        let reads = self.reads.get();
        (reads < SPARSE_READS).then(|| self.reads.set(reads + 1))?;
        self.sparse.as_ref()
    }

    /// Where the object at index position `index` starts in the pack.
    fn offset_at_index(&self, index: u32) -> u64 {
        self.sparse()
            .and_then(|s| s.offset(index))
            .unwrap_or_else(|| self.index.pack_offset_at_index(index))
    }

    /// The index position of `id`, if the pack has it.
    ///
    /// The index's own lookup narrows by the first byte, then bisects what is left
    /// (a thousand ids and more in a large pack): most of a walk's time went there.
    /// A walk makes hundreds of thousands of lookups, so after the first few
    /// thousand the ids are bucketed by their first bits, a handful per bucket.
    pub fn lookup(&self, id: &gix::hash::oid) -> Option<u32> {
        if self.mapped.get() {
            return self.index.lookup(id);
        }
        let buckets = match self.buckets.get() {
            Some(b) => b,
            None if self.reads.get() < SPARSE_READS => {
                if let Some(found) = self.memo.borrow().get(id) {
                    // Counted as a read: a walk of many lookups goes to the buckets.
                    self.reads.set(self.reads.get() + 1);
                    return *found;
                }
                let found = match self.sparse().and_then(|s| s.lookup(id)) {
                    Some(found) => found,
                    None => self.index.lookup(id),
                };
                self.memo.borrow_mut().insert(id.to_owned(), found);
                return found;
            }
            None => self.buckets.get_or_init(|| {
                self.memo.take();
                Buckets::new(&self.index)
            }),
        };
        buckets.lookup(&self.index, id)
    }

    /// Run `f` with lookups through the index's mapping, then drop the pages it
    /// mapped from the process.
    ///
    /// For the walk from a fetch's haves to the nearest bitmapped commits: it looks
    /// up a thousand ids and more, where a lookup with `pread` costs a few reads
    /// (3 µs here) and through the mapping a bisection in memory: a fetch of five
    /// commits with bitmaps took 14 ms instead of 10. The pages the walk mapped
    /// (up to the index's ids) are dropped when it ends, before the pack is
    /// written; a clone has no haves and never maps them.
    pub fn with_mapped_lookups<T>(&self, f: impl FnOnce() -> T) -> T {
        let before = self.mapped.replace(true);
        let out = f();
        self.mapped.set(before);
        if !before && self.sparse.is_some() {
            release_mapped_pages(&self.index);
        }
        out
    }

    /// Position in pack order of `id`, if the pack has it.
    pub fn position(&self, id: &gix::hash::oid) -> Option<u32> {
        let index = self.lookup(id)?;
        let positions = self.positions.get_or_init(|| {
            let mut positions = vec![0; self.order.len()];
            for (pos, index) in self.order.iter().enumerate() {
                positions[index as usize] = pos as u32;
            }
            positions
        });
        Some(positions[index as usize])
    }

    /// The size of the entry at `offset` (which must be an entry's).
    pub fn entry_size_at_offset(&self, offset: u64) -> Option<usize> {
        Some(self.entry_at(self.position_of_offset(offset)?).1)
    }

    /// Read the raw entry (header and compressed data) at `offset`.
    pub fn read_entry(&self, offset: u64, size: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; size];
        self.data.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Read the raw entry (header and compressed data) at `offset`, as long as `buf`.
    pub fn read_entry_into(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.data.read_exact_at(buf, offset)
    }

    /// The id of the object whose entry starts at `offset`.
    pub fn id_at_offset(&self, offset: u64) -> Option<ObjectId> {
        let pos = self.position_of_offset(offset)?;
        Some(self.index.oid_at_index(self.index_at(pos)).to_owned())
    }

    /// Send the whole pack file as it is, which is a valid pack for a client that
    /// wants exactly its objects, in owned pieces of `piece` bytes. Read with
    /// `pread` (never mapped), so memory stays flat whatever the size.
    pub fn copy_verbatim(
        &self,
        piece: usize,
        send: &mut dyn FnMut(Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<u64> {
        let total = self.entries_end + HASH_LEN as u64;
        // A handle of its own, read in order: `read_to_end` fills fresh buffers
        // without zeroing them first.
        let mut file = self.data.try_clone()?;
        file.seek(std::io::SeekFrom::Start(0))?;
        let mut file = file.take(total);
        loop {
            let mut buf = Vec::with_capacity(piece);
            (&mut file).take(piece as u64).read_to_end(&mut buf)?;
            if buf.is_empty() {
                break;
            }
            send(buf)?;
        }
        if file.limit() > 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(total)
    }
}

/// Reads the entries of our packs through a window of the file while they come one
/// after another, as a pack is written in pack order: one `pread` per window instead
/// of one per entry, where most entries are commits and trees of a few hundred bytes
/// (a filtered clone is almost all such entries, read back to back). An entry far
/// from the previous one is read on its own, so a sparse selection (a small fetch
/// from a big pack) does not read what lies between its entries.
#[derive(Default)]
pub struct ReadAhead {
    /// The window: `window` holds our pack `pack` from offset `at`.
    pack: Option<usize>,
    at: u64,
    window: Vec<u8>,
    /// The pack of the last entry read, and where that entry ended.
    last: Option<(usize, u64)>,
}

/// The window's size.
const WINDOW: usize = 256 * 1024;
/// An entry that starts at most this far after the previous one counts as next.
const NEAR: u64 = 4096;

impl ReadAhead {
    /// Fill `buf` from our pack `n` at `offset`, as [`Pack::read_entry_into`] does.
    pub fn read(
        &mut self,
        packs: &Packs,
        n: usize,
        offset: u64,
        buf: &mut [u8],
    ) -> std::io::Result<()> {
        let pack = &packs.packs[n];
        let end = offset + buf.len() as u64;
        let next = self
            .last
            .is_some_and(|(p, e)| p == n && offset >= e && offset - e <= NEAR);
        self.last = Some((n, end));
        if self.pack == Some(n) && offset >= self.at && end <= self.at + self.window.len() as u64 {
            let from = (offset - self.at) as usize;
            buf.copy_from_slice(&self.window[from..from + buf.len()]);
            return Ok(());
        }
        if !next || buf.len() >= WINDOW {
            return pack.read_entry_into(offset, buf);
        }
        let file_end = pack.entries_end + HASH_LEN as u64;
        let len = (WINDOW as u64).min(file_end.saturating_sub(offset)) as usize;
        self.window.resize(len.max(buf.len()), 0);
        pack.read_entry_into(offset, &mut self.window)?;
        self.pack = Some(n);
        self.at = offset;
        buf.copy_from_slice(&self.window[..buf.len()]);
        Ok(())
    }
}

/// Reads of a pack index with `pread` before it is read through its mapping (and
/// looked up with [`Buckets`]). A clone with a bitmap reads the index a few hundred
/// times; through the mapping, each read of a page not read before mapped 128 KiB of
/// the file, which stayed in the server's RSS: 5 MiB of a 6 MiB index on a
/// repository of 235k objects. A walk reads it hundreds of thousands of times.
const SPARSE_READS: u32 = 16 * 1024;

/// All version 2 packs of a repository's object directory (not its alternates,
/// whose objects are read through gix).
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
            packs: paths.iter().filter_map(|p| Pack::open(p)).collect(),
        }
    }

    /// Which of our packs has `id`, and where in its pack order.
    pub fn find(&self, id: &gix::hash::oid) -> Item {
        self.packs
            .iter()
            .enumerate()
            .find_map(|(pack, p)| {
                Some(Item::Packed {
                    pack,
                    pos: p.position(id)?,
                })
            })
            .unwrap_or(Item::Other(id.to_owned()))
    }

    /// The pack whose objects `items` are, all of them and nothing else (`items`
    /// holds each object once).
    pub fn whole(&self, items: &[Item]) -> Option<usize> {
        let Some(Item::Packed { pack, .. }) = items.first() else {
            return None;
        };
        let all_there = items.len() == self.packs[*pack].num_objects() as usize
            && items
                .iter()
                .all(|i| matches!(i, Item::Packed { pack: p, .. } if p == pack));
        all_there.then_some(*pack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::test_repo;

    /// Entries read through the window, in order, with gaps and out of order, are
    /// the bytes a plain read gives, across several windows.
    #[test]
    fn read_ahead_reads_what_pread_reads() {
        let dir = test_repo(
            "ahead",
            r#"
            for i in $(seq 1 60); do
                seq 1 $((i * 300)) > a.txt; echo "change $i" > "f$((i % 7))"
                head -c $((i * 500)) /dev/urandom > r.bin
                git add -A && git commit -q -m "c$i"
            done
            git repack -adq
        "#,
        );
        let packs = Packs::open(&dir.join("w/.git/objects"));
        let pack = &packs.packs[0];
        let n = pack.num_objects();
        assert!(n > 200 && pack.entries_end > 3 * WINDOW as u64);
        let order = (0..n)
            .chain((0..n).step_by(3))
            .chain((0..n).rev().step_by(5));
        let mut ahead = ReadAhead::default();
        let (mut windowed, mut direct) = (Vec::new(), Vec::new());
        for pos in order {
            let (offset, size) = pack.entry_at(pos);
            windowed.resize(size, 0);
            direct.resize(size, 0);
            ahead.read(&packs, 0, offset, &mut windowed).unwrap();
            pack.read_entry_into(offset, &mut direct).unwrap();
            assert!(windowed == direct, "entry at {pos}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The index read with `pread` and through its mapping agree, before and after
    /// lookups go through buckets.
    #[test]
    fn sparse_and_mapped_reads_agree() {
        let dir = test_repo(
            "packs",
            r#"
            for i in $(seq 1 300); do echo "$i" > "f$((i % 97))"; git add -A; git commit -qm "c$i"; done
            git repack -adq
        "#,
        );
        let packs = Packs::open(&dir.join("w/.git/objects"));
        let pack = &packs.packs[0];
        let sparse = pack.sparse.as_ref().expect("a version 2 index");
        let n = pack.num_objects();
        assert!(n > 500, "{n} objects");
        for i in 0..n {
            let id = pack.index.oid_at_index(i);
            assert_eq!(sparse.lookup(id), Some(Some(i)));
            assert_eq!(sparse.offset(i), Some(pack.index.pack_offset_at_index(i)));
        }
        let missing = ObjectId::from_hex(b"00000000000000000000000000000000000000ff").unwrap();
        assert_eq!(sparse.lookup(&missing), Some(None));
        // Through the mapping for a while, then back: the same answers, and lookups
        // made with `pread` are kept in the memo.
        let ids: Vec<ObjectId> = (0..n)
            .map(|i| pack.index.oid_at_index(i).to_owned())
            .collect();
        let mapped: Vec<_> =
            pack.with_mapped_lookups(|| ids.iter().map(|id| pack.lookup(id)).collect());
        assert_eq!(mapped, (0..n).map(Some).collect::<Vec<_>>());
        assert!(!pack.mapped.get());
        assert_eq!(pack.lookup(&ids[7]), Some(7));
        assert!(pack.memo.borrow().contains_key(&ids[7]));
        // Past the sparse reads, through the buckets.
        for round in 0..SPARSE_READS / n + 2 {
            for pos in 0..n {
                let id = pack.index.oid_at_index(pack.index_at(pos)).to_owned();
                assert_eq!(pack.position(&id), Some(pos), "round {round}");
            }
        }
        assert!(pack.buckets.get().is_some());
        assert_eq!(pack.position(&missing), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
