//! git's pack bitmaps (`pack-*.bitmap`, version 1; `Documentation/technical/
//! bitmap-format.txt`): for some commits of a pack, the set of all objects
//! reachable from the commit, as one bit per object of the pack in pack order.
//!
//! The file is read through once and checked against its trailing checksum (a
//! flipped bit in a bitmap would silently leave objects out of a clone; plain SHA-1
//! suffices to catch damage, and is fast; once per file, see `verified`), keeping
//! only where each commit's bitmap is; bitmaps are then read on demand. The
//! optional sections after the bitmaps (pseudo-merges, lookup table, name-hash
//! cache) are not needed and only hashed. The type bitmaps that come first (which
//! objects are commits, trees, blobs, tags) are read only for partial clone
//! filters. Multi-pack-index bitmaps are not read: with only such a bitmap, packs
//! are built by walking, as without any.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use gix::object::Kind;
use sha1::Digest;

use super::packs::Pack;
use super::verified::FileIdentity;
use crate::Result;

const HASH_LEN: usize = 20;
const BITMAP_OPT_FULL_DAG: u16 = 0x1;
/// An entry may be XORed against one of at most this many preceding entries.
const MAX_XOR_OFFSET: u8 = 160;
/// Composed bitmaps kept per request, in 64-bit words: enough for whole chains of
/// XORed bitmaps in any ordinary repository, and a bound on memory in a huge one.
const CACHE_WORDS: usize = 1 << 20;

/// A set of objects of one pack: bit `i` is the object at position `i` in pack order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bits(Vec<u64>);

impl Bits {
    pub fn new(len: u32) -> Bits {
        Bits(vec![0; (len as usize).div_ceil(64)])
    }

    pub fn get(&self, i: u32) -> bool {
        self.0[i as usize / 64] & (1 << (i % 64)) != 0
    }

    pub fn set(&mut self, i: u32) {
        self.0[i as usize / 64] |= 1 << (i % 64);
    }

    pub fn unset(&mut self, i: u32) {
        self.0[i as usize / 64] &= !(1 << (i % 64));
    }

    pub fn and(&mut self, other: &Bits) {
        self.0.iter_mut().zip(&other.0).for_each(|(a, b)| *a &= b);
    }

    pub fn or(&mut self, other: &Bits) {
        self.0.iter_mut().zip(&other.0).for_each(|(a, b)| *a |= b);
    }

    pub fn and_not(&mut self, other: &Bits) {
        self.0.iter_mut().zip(&other.0).for_each(|(a, b)| *a &= !b);
    }

    pub fn count(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    /// The positions of the set bits, in increasing order.
    pub fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().enumerate().flat_map(|(i, w)| {
            let mut w = *w;
            std::iter::from_fn(move || {
                (w != 0).then(|| {
                    let bit = w.trailing_zeros();
                    w &= w - 1;
                    i as u32 * 64 + bit
                })
            })
        })
    }
}

/// One commit's stored bitmap.
struct Entry {
    /// Where its EWAH words start in the file, and how many there are.
    words_at: u64,
    words: u32,
    /// 0, or the entry this one is XORed against, that many entries before.
    xor: u8,
}

/// The bitmap file of one pack.
pub struct Bitmap {
    file: File,
    /// Objects in the pack, so bits in each bitmap.
    len: u32,
    /// Where the type bitmaps are (commits, trees, blobs, tags: which objects of the
    /// pack are of each kind), read when a filter needs them.
    types: [(u64, u32); 4],
    entries: Vec<Entry>,
    /// Entry number by the commit's position in the pack's index.
    by_commit: HashMap<u32, usize>,
    cache: HashMap<usize, Rc<Bits>>,
    cached_words: usize,
}

impl Bitmap {
    /// The bitmap of `pack`, if it has one that is well-formed, belongs to this very
    /// pack and has an intact checksum. `Ok(None)` when there is none.
    pub fn open(pack: &Pack) -> Result<Option<Bitmap>> {
        let path = pack.path.with_extension("bitmap");
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Self::read(file, pack)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display()).into())
    }

    fn read(file: File, pack: &Pack) -> Result<Bitmap> {
        let size = file.metadata()?.len();
        let body_len = size
            .checked_sub(HASH_LEN as u64)
            .ok_or("too small for a bitmap")?;
        // Checked once per file: see `verified`. A file checked before is only parsed,
        // skipping over the bitmaps' words.
        let identity = FileIdentity::of(&file);
        let verify = !identity.is_some_and(|i| i.verified());
        let mut r = Hashing {
            inner: BufReader::with_capacity(64 * 1024, file.try_clone()?),
            hasher: verify.then(sha1::Sha1::new),
            at: 0,
            limit: body_len,
        };
        let mut header = [0u8; 12 + HASH_LEN];
        r.read(&mut header)?;
        let flags = u16::from_be_bytes([header[6], header[7]]);
        if &header[..6] != b"BITM\0\x01" || flags & BITMAP_OPT_FULL_DAG == 0 {
            return Err("not a version 1 full-closure bitmap".into());
        }
        if header[12..] != *pack.checksum().as_slice() {
            return Err("the bitmap belongs to another pack".into());
        }
        let count = u32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
        let len = pack.num_objects();
        let types = [r.ewah()?, r.ewah()?, r.ewah()?, r.ewah()?];
        let mut entries = Vec::with_capacity(count.min(1 << 20) as usize);
        let mut by_commit = HashMap::new();
        for n in 0..count as usize {
            let mut head = [0u8; 6];
            r.read(&mut head)?;
            let commit = u32::from_be_bytes(head[..4].try_into().expect("4 bytes"));
            let xor = head[4];
            if commit >= len || xor > MAX_XOR_OFFSET || usize::from(xor) > n {
                return Err("bad bitmap entry".into());
            }
            let (words_at, words) = r.ewah()?;
            entries.push(Entry {
                words_at,
                words,
                xor,
            });
            by_commit.insert(commit, n);
        }
        if let Some(mut hasher) = r.hasher.take() {
            // Optional sections: hashed, not parsed.
            std::io::copy(
                &mut (&mut r.inner).take(body_len - r.at),
                &mut HashSink(&mut hasher),
            )?;
            let mut own = [0u8; HASH_LEN];
            file.read_exact_at(&mut own, body_len)?;
            if hasher.finalize()[..] != own {
                return Err("bitmap checksum mismatch".into());
            }
            if let Some(identity) = identity {
                identity.remember();
            }
        }
        Ok(Bitmap {
            file,
            len,
            types,
            entries,
            by_commit,
            cache: HashMap::new(),
            cached_words: 0,
        })
    }

    /// Objects in the pack (bits per bitmap).
    pub fn len(&self) -> u32 {
        self.len
    }

    /// The entry number of the commit at `index` (its position in the pack index).
    pub fn entry_of(&self, index: u32) -> Option<usize> {
        self.by_commit.get(&index).copied()
    }

    /// The objects reachable from the commit of entry `n`: its stored bitmap XORed
    /// with those of the chain of entries it refers to.
    pub fn reachable(&mut self, n: usize) -> Result<Rc<Bits>> {
        let mut chain = vec![n];
        let mut base = None;
        loop {
            let last = *chain.last().expect("not empty");
            if let Some(bits) = self.cache.get(&last) {
                chain.pop();
                base = Some(bits.clone());
                break;
            }
            match self.entries[last].xor {
                0 => break,
                xor => chain.push(last - usize::from(xor)),
            }
        }
        let mut bits = base;
        for n in chain.into_iter().rev() {
            let mut own = self.decode(n)?;
            if let Some(b) = &bits {
                own.0.iter_mut().zip(&b.0).for_each(|(a, b)| *a ^= b);
            }
            let own = Rc::new(own);
            if self.cached_words + own.0.len() > CACHE_WORDS {
                self.cache.clear();
                self.cached_words = 0;
            }
            self.cached_words += own.0.len();
            self.cache.insert(n, own.clone());
            bits = Some(own);
        }
        Ok(bits.expect("at least one entry"))
    }

    /// The objects of the pack that are of `kind`, from the type bitmaps: what
    /// partial clone filters leave out, without looking at any object.
    pub fn of_kind(&self, kind: Kind) -> Result<Bits> {
        let (at, words) = match kind {
            Kind::Commit => self.types[0],
            Kind::Tree => self.types[1],
            Kind::Blob => self.types[2],
            Kind::Tag => self.types[3],
        };
        self.decode_at(at, words)
    }

    /// Decode the EWAH bitmap of entry `n`.
    fn decode(&self, n: usize) -> Result<Bits> {
        let e = &self.entries[n];
        self.decode_at(e.words_at, e.words)
    }

    /// Decode the EWAH bitmap of `words` words at `at` (see the format's Appendix A):
    /// a series of run-length words (bit 0: the repeated bit, bits 1-32: how many
    /// words of it, bits 33-63: how many literal words follow), each followed by its
    /// literal words. git leaves trailing zero words out.
    fn decode_at(&self, at: u64, words: u32) -> Result<Bits> {
        let mut raw = vec![0u8; words as usize * 8];
        self.file.read_exact_at(&mut raw, at)?;
        let words = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")));
        decode_ewah(words, self.len)
    }
}

/// The `len` bits of an EWAH bitmap given as its words.
fn decode_ewah(mut words: impl Iterator<Item = u64>, len: u32) -> Result<Bits> {
    let mut out = Bits::new(len);
    let mut at = 0usize;
    let corrupt = || "corrupt bitmap";
    while let Some(rlw) = words.next() {
        let run = ((rlw >> 1) & 0xffff_ffff) as usize;
        let literals = rlw >> 33;
        if rlw & 1 == 1 {
            out.0
                .get_mut(at..at + run)
                .ok_or_else(corrupt)?
                .fill(u64::MAX);
        }
        at += run;
        for _ in 0..literals {
            let word = words.next().ok_or_else(corrupt)?;
            if word != 0 {
                *out.0.get_mut(at).ok_or_else(corrupt)? = word;
            }
            at += 1;
        }
    }
    // No bit past the last object.
    if len % 64 != 0 && out.0.last().is_some_and(|w| w >> (len % 64) != 0) {
        return Err(corrupt().into());
    }
    Ok(out)
}

/// Reads the bitmap file in order, hashing every byte (unless the file was verified
/// before), up to the trailing checksum.
struct Hashing {
    inner: BufReader<File>,
    hasher: Option<sha1::Sha1>,
    at: u64,
    limit: u64,
}

impl Hashing {
    fn read(&mut self, buf: &mut [u8]) -> Result<()> {
        if self.at + buf.len() as u64 > self.limit {
            return Err("truncated bitmap".into());
        }
        self.inner.read_exact(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&*buf);
        }
        self.at += buf.len() as u64;
        Ok(())
    }

    /// Pass over one EWAH bitmap; returns where its words start and their number.
    fn ewah(&mut self) -> Result<(u64, u32)> {
        let mut head = [0u8; 8];
        self.read(&mut head)?;
        let words = u32::from_be_bytes(head[4..].try_into().expect("4 bytes"));
        let at = self.at;
        let mut left = u64::from(words) * 8 + 4; // the words, then the last RLW's position
        if self.hasher.is_none() {
            if self.at + left > self.limit {
                return Err("truncated bitmap".into());
            }
            self.inner.seek_relative(left as i64)?;
            self.at += left;
            return Ok((at, words));
        }
        let mut buf = [0u8; 4096];
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            self.read(&mut buf[..n])?;
            left -= n as u64;
        }
        Ok((at, words))
    }
}

struct HashSink<'a>(&'a mut sha1::Sha1);

impl std::io::Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_iterate_in_order() {
        let mut b = Bits::new(130);
        for i in [0, 63, 64, 129] {
            b.set(i);
        }
        assert_eq!(b.ones().collect::<Vec<_>>(), [0, 63, 64, 129]);
        assert_eq!(b.count(), 4);
        let mut c = Bits::new(130);
        c.set(64);
        b.and_not(&c);
        assert!(!b.get(64) && b.get(63));
    }

    /// The type bitmaps of a pack git wrote put every object in the set of its kind.
    #[test]
    fn type_bitmaps_match_the_objects_kinds() {
        let dir = crate::pack::test_repo(
            "bitmap",
            r#"
            for i in $(seq 1 30); do
                mkdir -p "d$((i % 3))"; echo "$i" > "d$((i % 3))/f"; seq 1 $i > a
                git add -A && git commit -q -m "c$i"
                if [ $((i % 10)) = 0 ]; then git tag -a -m "t$i" "v$i"; fi
            done
            git repack -adbq
        "#,
        );
        let repo = gix::open(dir.join("w")).unwrap();
        let packs = super::super::packs::Packs::open(repo.objects.store_ref().path());
        let pack = &packs.packs[0];
        let bitmap = Bitmap::open(pack).unwrap().unwrap();
        let kinds = [Kind::Commit, Kind::Tree, Kind::Blob, Kind::Tag];
        let masks: Vec<Bits> = kinds.iter().map(|k| bitmap.of_kind(*k).unwrap()).collect();
        let mut seen = [0; 4];
        for pos in 0..pack.num_objects() {
            let id = pack.index.oid_at_index(pack.index_at(pos));
            let kind = repo.find_header(id).unwrap().kind();
            for (n, mask) in masks.iter().enumerate() {
                assert_eq!(mask.get(pos), kinds[n] == kind, "{id} at {pos}");
                seen[n] += usize::from(mask.get(pos));
            }
        }
        assert_eq!((seen[0], seen[3]), (30, 3));

        // Opened again, the file is only parsed (its checksum was verified): the
        // same bitmaps are found at the same places.
        let again = Bitmap::open(pack).unwrap().unwrap();
        assert_eq!(again.types, bitmap.types);
        assert_eq!(again.by_commit, bitmap.by_commit);
        let at = |b: &Bitmap| {
            b.entries
                .iter()
                .map(|e| (e.words_at, e.words, e.xor))
                .collect::<Vec<_>>()
        };
        assert_eq!(at(&again), at(&bitmap));
        // A file rewritten in place is verified again: a flipped bit in a bitmap's
        // words, which parsing alone never looks at, is caught by the checksum.
        let path = pack.path.with_extension("bitmap");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bitmap.entries.last().unwrap();
        assert!(last.words > 0);
        bytes[last.words_at as usize] ^= 0x10;
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, &bytes).unwrap();
        let err = Bitmap::open(pack)
            .err()
            .expect("a damaged bitmap is refused");
        assert!(
            err.to_string().ends_with("bitmap checksum mismatch"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ewah_runs_and_literals() {
        // 2 words of ones, then 1 literal word; then a run of 1 zero word and 1 literal.
        let rlw = |bit: u64, run: u64, lits: u64| bit | (run << 1) | (lits << 33);
        let words = [rlw(1, 2, 1), 0b101, rlw(0, 1, 1), 1 << 3];
        let b = decode_ewah(words.into_iter(), 64 * 5).unwrap();
        let ones: Vec<u32> = b.ones().collect();
        assert_eq!(ones.len(), 128 + 2 + 1);
        assert_eq!(ones[128..], [128, 130, 4 * 64 + 3]);
        // Bits past the end, or words missing, are corruption.
        assert!(decode_ewah(words.into_iter(), 64 * 4).is_err());
        assert!(decode_ewah([rlw(0, 0, 2), 1].into_iter(), 128).is_err());
        assert!(decode_ewah([rlw(1, 1, 0)].into_iter(), 60).is_err());
    }
}
