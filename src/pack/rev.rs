//! A pack's order: index positions sorted by offset, which is what git's reverse
//! index (`pack-*.rev`, `Documentation/gitformat-pack.txt`) holds.
//!
//! The `.rev` file is mapped rather than read: a request that sends a few objects
//! reads a few of its entries, and reading the whole file (4 bytes per object) into
//! memory was a millisecond of every fetch from a repository of 240k objects.
//! Without one, the index is sorted by offset.

use std::fs::File;
use std::path::Path;

use gix::ObjectId;
use gix::odb::pack;
use sha1::Digest;

use super::verified::FileIdentity;

const HASH_LEN: usize = 20;
/// "RIDX", version 1, hash function 1 (SHA-1).
const HEADER: &[u8; 12] = b"RIDX\0\0\0\x01\0\0\0\x01";

pub(super) enum Order {
    /// A `.rev` file: the header, a big-endian `u32` per object, two checksums.
    Mapped(memmap2::Mmap),
    Sorted(Vec<u32>),
}

impl Order {
    /// The order of the pack at `path` (its `.pack`), whose index is `index` and
    /// whose checksum is `checksum`.
    pub(super) fn open(path: &Path, index: &pack::index::File, checksum: &ObjectId) -> Order {
        map_rev(path, index.num_objects() as usize, checksum)
            .map(Order::Mapped)
            .unwrap_or_else(|| {
                let mut order: Vec<u32> = (0..index.num_objects()).collect();
                order.sort_unstable_by_key(|i| index.pack_offset_at_index(*i));
                Order::Sorted(order)
            })
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Order::Mapped(map) => (map.len() - HEADER.len() - 2 * HASH_LEN) / 4,
            Order::Sorted(order) => order.len(),
        }
    }

    /// The index position of the object at `pos` in pack order, if there is one.
    pub(super) fn get(&self, pos: usize) -> Option<u32> {
        match self {
            Order::Mapped(map) => (pos < self.len()).then(|| entry(map, pos)),
            Order::Sorted(order) => order.get(pos).copied(),
        }
    }

    /// The position whose `key` (a function of its index position) is `key`, for
    /// keys that grow with the position.
    pub(super) fn search(&self, key: u64, key_of: impl Fn(u32) -> u64) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match key_of(self.get(mid)?).cmp(&key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// The index positions in pack order.
    pub(super) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len()).map(|pos| self.get(pos).expect("in range"))
    }
}

fn entry(map: &[u8], pos: usize) -> u32 {
    let at = HEADER.len() + 4 * pos;
    u32::from_be_bytes(map[at..at + 4].try_into().expect("4 bytes"))
}

/// git's `.rev` file for the pack at `path`, of `n` objects, if it is well-formed and
/// names the pack. Checked in full (a wrong order would cut entries at the wrong
/// places: every entry in range, the file's own checksum) once per file: see
/// `verified`. `None` if absent or bad.
fn map_rev(path: &Path, n: usize, checksum: &ObjectId) -> Option<memmap2::Mmap> {
    let file = File::open(path.with_extension("rev")).ok()?;
    let identity = FileIdentity::of(&file)?;
    // SAFETY: git writes a `.rev` file whole under a temporary name and renames it
    // into place, never writing into one that exists (as for the packs and indexes
    // that gix maps the same way): the mapping does not change under us.
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    if map.len() != HEADER.len() + 4 * n + 2 * HASH_LEN || &map[..HEADER.len()] != HEADER {
        return None;
    }
    let (body, own) = map.split_at(map.len() - HASH_LEN);
    if &body[body.len() - HASH_LEN..] != checksum.as_slice() {
        return None;
    }
    if !identity.verified() {
        let in_range = (0..n).all(|pos| (entry(&map, pos) as usize) < n);
        if !in_range || sha1::Sha1::digest(body)[..] != *own {
            return None;
        }
        identity.remember();
        // Checking read every page: they need not stay in the process.
        // SAFETY: a read-only private file mapping, never written: its pages are
        // only unmapped, and read again from the file unchanged when touched.
        let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::test_repo;

    /// The mapped `.rev` file gives the order sorting the index gives; a damaged
    /// one (rewritten in place) is not used.
    #[test]
    fn mapped_and_sorted_orders_agree() {
        let dir = test_repo(
            "rev",
            r#"
            for i in $(seq 1 40); do echo "$i" > "f$((i % 9))"; git add -A; git commit -qm "c$i"; done
            git -c pack.writeReverseIndex=true repack -adq
        "#,
        );
        let packdir = dir.join("w/.git/objects/pack");
        let pack = std::fs::read_dir(&packdir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "pack"))
            .unwrap();
        let index =
            pack::index::File::at(pack.with_extension("idx"), gix::hash::Kind::Sha1).unwrap();
        let checksum = index.pack_checksum();
        let mapped = Order::open(&pack, &index, &checksum);
        assert!(matches!(mapped, Order::Mapped(_)), "git wrote a .rev");
        let mut sorted: Vec<u32> = (0..index.num_objects()).collect();
        sorted.sort_unstable_by_key(|i| index.pack_offset_at_index(*i));
        assert_eq!(mapped.iter().collect::<Vec<_>>(), sorted);
        assert_eq!(mapped.get(sorted.len()), None);
        let last = sorted.len() - 1;
        let offset = index.pack_offset_at_index(sorted[last]);
        let found = mapped.search(offset, |i| index.pack_offset_at_index(i));
        assert_eq!(found, Some(last));

        let rev = pack.with_extension("rev");
        let mut bytes = std::fs::read(&rev).unwrap();
        bytes.swap(HEADER.len() + 3, HEADER.len() + 7);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&rev, &bytes).unwrap();
        let fallback = Order::open(&pack, &index, &checksum);
        assert!(matches!(fallback, Order::Sorted(_)));
        assert_eq!(fallback.iter().collect::<Vec<_>>(), sorted);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
