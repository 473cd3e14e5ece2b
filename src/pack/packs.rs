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
use sha1::Digest;

use super::write::Item;

/// Length of a SHA-1 checksum; gitd serves SHA-1 repositories only.
const HASH_LEN: usize = 20;

/// One pack file with its index.
pub struct Pack {
    /// The `.pack` file.
    pub path: PathBuf,
    pub index: pack::index::File,
    /// Index positions in pack order (by offset): git's reverse index.
    order: Vec<u32>,
    /// The other way round, made when first needed.
    positions: OnceCell<Vec<u32>>,
    /// The index read with `pread` while it is read little, `None` for a version 1
    /// index; reads of the index so far; once there were many, a finer fan-out
    /// table for the lookups, which then go through the mapped index.
    sparse: Option<Sparse>,
    reads: Cell<u32>,
    buckets: OnceCell<Buckets>,
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
        let order = read_rev(path, &index, &checksum).unwrap_or_else(|| {
            let mut order: Vec<u32> = (0..index.num_objects()).collect();
            order.sort_unstable_by_key(|i| index.pack_offset_at_index(*i));
            order
        });
        Some(Pack {
            path: path.to_owned(),
            index,
            order,
            positions: OnceCell::new(),
            sparse,
            reads: Cell::new(0),
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
        self.order[pos as usize]
    }

    /// Where the last entry ends (the trailing checksum follows).
    pub fn entries_end(&self) -> u64 {
        self.entries_end
    }

    /// Offset of the object at `pos` in pack order.
    pub fn offset_at(&self, pos: u32) -> u64 {
        self.offset_at_index(self.index_at(pos))
    }

    /// Offset and entry size of the object at `pos` in pack order.
    pub fn entry_at(&self, pos: u32) -> (u64, usize) {
        let offset = self.offset_at_index(self.index_at(pos));
        let end = match self.order.get(pos as usize + 1) {
            Some(next) => self.offset_at_index(*next),
            None => self.entries_end,
        };
        (offset, (end - offset) as usize)
    }

    /// Position in pack order of the object at `offset` (which must be an entry's).
    fn position_of_offset(&self, offset: u64) -> Option<u32> {
        self.order
            .binary_search_by_key(&offset, |i| self.offset_at_index(*i))
            .ok()
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
        let buckets = match self.buckets.get() {
            Some(b) => b,
            None if self.reads.get() < SPARSE_READS => {
                return match self.sparse().and_then(|s| s.lookup(id)) {
                    Some(found) => found,
                    None => self.index.lookup(id),
                };
            }
            None => self.buckets.get_or_init(|| Buckets::new(&self.index)),
        };
        let key = prefix(id.as_bytes());
        let bucket = (key >> buckets.shift) as usize;
        let (start, end) = (buckets.starts[bucket], buckets.starts[bucket + 1]);
        for index in start..end {
            let candidate = self.index.oid_at_index(index).as_bytes();
            match prefix(candidate).cmp(&key) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Greater => return None,
                std::cmp::Ordering::Equal if candidate == id.as_bytes() => return Some(index),
                std::cmp::Ordering::Equal => {}
            }
        }
        None
    }

    /// Position in pack order of `id`, if the pack has it.
    pub fn position(&self, id: &gix::hash::oid) -> Option<u32> {
        let index = self.lookup(id)?;
        let positions = self.positions.get_or_init(|| {
            let mut positions = vec![0; self.order.len()];
            for (pos, index) in self.order.iter().enumerate() {
                positions[*index as usize] = pos as u32;
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

/// Drop the pages of `index`'s mapping from the process (not from the page cache):
/// gix reads the whole offsets table through it when it opens an index, which put a
/// megabyte per million objects of the file into the RSS of every pack served, for
/// nothing while the index is read with `pread`. Pages read later map again.
fn release_mapped_pages(index: &pack::index::File) {
    if index.num_objects() == 0 {
        return;
    }
    // A version 2 index maps the file from its start, and its ids start at `IDS_AT`.
    let start = index
        .oid_at_index(0)
        .as_bytes()
        .as_ptr()
        .wrapping_sub(IDS_AT as usize);
    let page = 4096;
    if start as usize % page != 0 {
        return;
    }
    let len = IDS_AT as usize + index.num_objects() as usize * (HASH_LEN + 8);
    // SAFETY: the range lies within the read-only private file mapping that `index`
    // owns and that is never written: MADV_DONTNEED only unmaps its pages, and reads
    // afterwards fault them in again from the file unchanged.
    unsafe {
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED);
    }
}

/// Where a version 2 index keeps the ids: after the signature, version and fan-out.
const IDS_AT: u64 = 8 + 256 * 4;
/// Ids of one first byte read at once instead of bisected further.
const SPARSE_RANGE: usize = 128;
/// Bisection probes kept: the first levels under each first byte.
const MAX_PROBES: usize = 4096;

/// A version 2 pack index read with `pread`: the fan-out is held, the rest read
/// as needed (`Documentation/gitformat-pack.txt`).
struct Sparse {
    file: File,
    n: u64,
    fan: [u32; 256],
    pack_checksum: ObjectId,
    /// Ids read while bisecting, by index position: lookups with the same first
    /// byte probe the same ones first, so most lookups then need a single read.
    probes: RefCell<HashMap<u32, [u8; HASH_LEN]>>,
}

impl Sparse {
    fn open(path: &Path, n: u32) -> Option<Sparse> {
        let file = File::open(path).ok()?;
        let mut head = [0u8; IDS_AT as usize];
        file.read_exact_at(&mut head, 0).ok()?;
        if head[..8] != *b"\xfftOc\0\0\0\x02" {
            return None;
        }
        let mut fan = [0u32; 256];
        for (f, b) in fan.iter_mut().zip(head[8..].chunks_exact(4)) {
            *f = u32::from_be_bytes(b.try_into().expect("4 bytes"));
        }
        let len = file.metadata().ok()?.len();
        let mut checksum = [0u8; HASH_LEN];
        file.read_exact_at(&mut checksum, len.checked_sub(2 * HASH_LEN as u64)?)
            .ok()?;
        (fan[255] == n).then_some(Sparse {
            file,
            n: u64::from(n),
            fan,
            pack_checksum: ObjectId::from_bytes_or_panic(&checksum),
            probes: RefCell::default(),
        })
    }

    /// The index position of `id`: `Some(None)` if absent, `None` if unreadable.
    fn lookup(&self, id: &gix::hash::oid) -> Option<Option<u32>> {
        let id = id.as_bytes();
        let first = usize::from(id[0]);
        let mut lo = if first == 0 { 0 } else { self.fan[first - 1] };
        let mut hi = self.fan[first];
        let mut buf = [0u8; SPARSE_RANGE * HASH_LEN];
        let mut probes = self.probes.borrow_mut();
        while (hi - lo) as usize > SPARSE_RANGE {
            let mid = lo + (hi - lo) / 2;
            let probe = match probes.get(&mid) {
                Some(probe) => probe,
                None => {
                    let mut probe = [0u8; HASH_LEN];
                    self.file
                        .read_exact_at(&mut probe, IDS_AT + u64::from(mid) * HASH_LEN as u64)
                        .ok()?;
                    if probes.len() >= MAX_PROBES {
                        probes.clear();
                    }
                    probes.entry(mid).or_insert(probe)
                }
            };
            match probe[..].cmp(id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(Some(mid)),
            }
        }
        let ids = &mut buf[..(hi - lo) as usize * HASH_LEN];
        self.file
            .read_exact_at(ids, IDS_AT + u64::from(lo) * HASH_LEN as u64)
            .ok()?;
        let found = ids.chunks_exact(HASH_LEN).position(|c| c == id);
        Some(found.map(|p| lo + p as u32))
    }

    /// The pack offset of the object at index position `index`.
    fn offset(&self, index: u32) -> Option<u64> {
        let offsets = IDS_AT + self.n * (HASH_LEN as u64 + 4);
        let mut b = [0u8; 4];
        self.file
            .read_exact_at(&mut b, offsets + u64::from(index) * 4)
            .ok()?;
        let small = u32::from_be_bytes(b);
        if small & 0x8000_0000 == 0 {
            return Some(u64::from(small));
        }
        let mut b = [0u8; 8];
        let large = offsets + self.n * 4 + u64::from(small & 0x7fff_ffff) * 8;
        self.file.read_exact_at(&mut b, large).ok()?;
        Some(u64::from_be_bytes(b))
    }
}

/// Where the ids of each bucket start in a pack index, a bucket being all ids with
/// the same first bits: about four ids each (a `u32` per four objects).
struct Buckets {
    shift: u32,
    starts: Vec<u32>,
}

impl Buckets {
    fn new(index: &pack::index::File) -> Buckets {
        let n = index.num_objects();
        let bits = (u32::BITS - n.leading_zeros())
            .saturating_sub(2)
            .clamp(8, 24);
        let shift = u64::BITS - bits;
        let mut starts = vec![0u32; (1 << bits) + 1];
        for i in 0..n {
            let bucket = (prefix(index.oid_at_index(i).as_bytes()) >> shift) as usize;
            starts[bucket + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        Buckets { shift, starts }
    }
}

/// The first 8 bytes of an id, which order ids as their bytes do.
fn prefix(id: &[u8]) -> u64 {
    u64::from_be_bytes(id[..8].try_into().expect("ids are longer"))
}

/// git's `.rev` file for the pack at `path`: "RIDX", version 1, hash id 1, the index
/// positions in pack order, the pack's checksum and the file's own. Checked in full
/// (a wrong order would cut entries at the wrong places), the checksum once per
/// file; `None` if absent or bad.
fn read_rev(path: &Path, index: &pack::index::File, checksum: &ObjectId) -> Option<Vec<u32>> {
    let mut file = File::open(path.with_extension("rev")).ok()?;
    let identity = FileIdentity::of(&file)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let n = index.num_objects() as usize;
    if bytes.len() != 12 + 4 * n + 2 * HASH_LEN || &bytes[..12] != b"RIDX\0\0\0\x01\0\0\0\x01" {
        return None;
    }
    let (body, own) = bytes.split_at(bytes.len() - HASH_LEN);
    if &body[body.len() - HASH_LEN..] != checksum.as_slice() {
        return None;
    }
    // Hashing the file is most of the work of opening a large pack; git never does.
    // Once per file (git writes a new file, never into an old one) is enough.
    let lock = || VERIFIED_REV.lock().unwrap_or_else(|e| e.into_inner());
    let known = lock().contains(&identity);
    if !known {
        if sha1::Sha1::digest(body)[..] != *own {
            return None;
        }
        let mut v = lock();
        if v.len() >= MAX_VERIFIED {
            v.remove(0);
        }
        v.push(identity);
    }
    let order: Vec<u32> = body[12..12 + 4 * n]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")))
        .collect();
    order.iter().all(|i| (*i as usize) < n).then_some(order)
}

/// `.rev` files whose checksum was verified: few, the packs served lately.
const MAX_VERIFIED: usize = 64;

/// Shared by the threads that build packs; held only to look up or add one entry.
static VERIFIED_REV: std::sync::Mutex<Vec<FileIdentity>> = std::sync::Mutex::new(Vec::new());

/// What tells one file from another, and a file from itself rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileIdentity {
    fn of(file: &File) -> Option<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata().ok()?;
        Some(FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

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
