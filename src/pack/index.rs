//! A pack's `.idx` read with `pread` ([`Sparse`]) or, after many lookups, through
//! gix's mapping with a finer fan-out ([`Buckets`]).
//!
//! Why not only through the mapping: every page of it read stays in the server's
//! RSS, and a clone with a bitmap reads the index only a few hundred times. Why
//! not only with `pread`: a walk reads it hundreds of thousands of times.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use gix::ObjectId;
use gix::odb::pack;

const HASH_LEN: usize = 20;

/// Drop the pages of `index`'s mapping from the process (not from the page cache):
/// gix reads the whole offsets table through it when it opens an index, which put a
/// megabyte per million objects of the file into the RSS of every pack served, for
/// nothing while the index is read with `pread`. Pages read later map again.
pub(super) fn release_mapped_pages(index: &pack::index::File) {
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
pub(super) struct Sparse {
    file: File,
    n: u64,
    fan: [u32; 256],
    pub(super) pack_checksum: ObjectId,
    /// Ids read while bisecting, by index position: lookups with the same first
    /// byte probe the same ones first, so most lookups then need a single read.
    probes: RefCell<HashMap<u32, [u8; HASH_LEN]>>,
}

impl Sparse {
    pub(super) fn open(path: &Path, n: u32) -> Option<Sparse> {
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
    pub(super) fn lookup(&self, id: &gix::hash::oid) -> Option<Option<u32>> {
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
    pub(super) fn offset(&self, index: u32) -> Option<u64> {
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
pub(super) struct Buckets {
    shift: u32,
    starts: Vec<u32>,
}

impl Buckets {
    pub(super) fn new(index: &pack::index::File) -> Buckets {
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

    /// The index position of `id` in `index`, if it is there.
    pub(super) fn lookup(&self, index: &pack::index::File, id: &gix::hash::oid) -> Option<u32> {
        let key = prefix(id.as_bytes());
        let bucket = (key >> self.shift) as usize;
        let (start, end) = (self.starts[bucket], self.starts[bucket + 1]);
        for at in start..end {
            let candidate = index.oid_at_index(at).as_bytes();
            match prefix(candidate).cmp(&key) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Greater => return None,
                std::cmp::Ordering::Equal if candidate == id.as_bytes() => return Some(at),
                std::cmp::Ordering::Equal => {}
            }
        }
        None
    }
}

/// The first 8 bytes of an id, which order ids as their bytes do.
fn prefix(id: &[u8]) -> u64 {
    u64::from_be_bytes(id[..8].try_into().expect("ids are longer"))
}
