//! Reading objects of our packs with `pread`, for the walks that choose a pack's
//! objects.
//!
//! gix reads objects through a memory map of the pack, and every page it touches
//! stays in the server's RSS: the few thousand trees a walk reads, spread over a large
//! pack, showed as more than half of a clone's peak memory. Read into buffers of
//! their own, they cost only their size. Deltas are resolved here too (git's delta
//! format: copy-from-base and insert instructions); recently decoded objects are kept
//! for the deltas based on them, within a bound.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use gix::object::Kind;
use gix::odb::pack::data::{self, entry::Header};

use super::packs::{Pack, Packs};
use super::write::Item;
use crate::Result;

/// Decoded objects kept for later deltas, in bytes.
const CACHE_BYTES: usize = 4 << 20;
/// Longer delta chains than git ever writes (its default limit is 50) mean damage.
const MAX_CHAIN: usize = 10_000;
/// Pack bytes read at a time, at least. Trees average a hundred bytes and a walk
/// reads them in no order the pack keeps: with 32 KiB windows a full walk of a
/// 20 MiB pack read 3.7 GiB, with 512-byte ones 85 MiB in 40% more reads, and
/// was faster.
const WINDOW: usize = 1024;
/// Room for any entry header: type and size, then a base offset or id.
const MAX_HEADER: usize = 32;

pub type Object = (Kind, Rc<[u8]>);
type Cache = HashMap<(usize, u64), Object, BuildHasherDefault<OffsetHasher>>;

pub struct Reader<'a> {
    packs: &'a Packs,
    inflate: gix::zlib::Inflate,
    /// Decoded objects by pack number and offset, and in the order they came: the
    /// oldest go first when the cache is full.
    cache: Cache,
    order: VecDeque<(usize, u64)>,
    cached: usize,
    buf: Vec<u8>,
    window: Window,
}

impl<'a> Reader<'a> {
    pub fn new(packs: &'a Packs) -> Self {
        Reader {
            packs,
            inflate: gix::zlib::Inflate::default(),
            cache: Cache::default(),
            order: VecDeque::new(),
            cached: 0,
            buf: Vec::new(),
            window: Window::default(),
        }
    }

    /// The data of `id`, which must be a `kind`: from our packs where they have it
    /// (at `item`, if already known), else through gix.
    pub fn object(
        &mut self,
        repo: &gix::Repository,
        id: &gix::hash::oid,
        item: Option<Item>,
        kind: Kind,
    ) -> Result<Rc<[u8]>> {
        let (found, data) = self.any_object(repo, id, item)?;
        if found != kind {
            return Err(format!("{id} is a {found}, not a {kind}").into());
        }
        Ok(data)
    }

    /// The kind and data of `id`, like [`Reader::object`].
    pub fn any_object(
        &mut self,
        repo: &gix::Repository,
        id: &gix::hash::oid,
        item: Option<Item>,
    ) -> Result<Object> {
        let item = item.unwrap_or_else(|| self.packs.find(id));
        let read = match item {
            Item::Packed { pack, pos } => self.read(pack, pos)?,
            Item::Other(_) => None,
        };
        Ok(match read {
            Some(object) => object,
            None => {
                use gix::objs::FindExt;
                let obj = repo.objects.find(id, &mut self.buf)?;
                (obj.kind, obj.data.into())
            }
        })
    }

    /// The object at `pos` in pack order of our pack `n`, or `None` if it is stored
    /// as a ref-delta (git writes none when it repacks; gix reads those).
    pub fn read(&mut self, n: usize, pos: u32) -> Result<Option<Object>> {
        let pack = &self.packs.packs[n];
        let mut at = pack.offset_at(pos);
        let mut deltas = Vec::new();
        let (kind, mut object) = loop {
            if let Some(hit) = self.cache.get(&(n, at)) {
                break hit.clone();
            }
            let (header, body) = self.entry(n, at)?;
            match header {
                Header::OfsDelta { base_distance } => {
                    if deltas.len() > MAX_CHAIN {
                        return Err("delta chain too long".into());
                    }
                    deltas.push((at, body));
                    at = at
                        .checked_sub(base_distance)
                        .ok_or("delta base out of the pack")?;
                }
                Header::RefDelta { .. } => return Ok(None),
                whole => {
                    let kind = whole.as_kind().expect("not a delta");
                    break self.keep((n, at), kind, body);
                }
            }
        };
        for (at, delta) in deltas.into_iter().rev() {
            object = self.keep((n, at), kind, apply_delta(&object, &delta)?).1;
        }
        Ok(Some((kind, object)))
    }

    /// The header and inflated data of the entry at `at` in pack `n`.
    ///
    /// Its compressed size is the distance to the next entry, but finding that entry
    /// is a search through the index; instead, as much is read as data of the size
    /// the header gives can take deflated, and only a stream that does not end
    /// there (no zlib writes such) is read again to the exact end.
    fn entry(&mut self, n: usize, at: u64) -> Result<(Header, Vec<u8>)> {
        let pack = &self.packs.packs[n];
        let head = self.window.bytes(pack, n, at, MAX_HEADER)?;
        let entry = data::Entry::from_bytes(head, 0, gix::hash::Kind::Sha1)?;
        let size = usize::try_from(entry.decompressed_size)?;
        let start = at + entry.data_offset;
        let bound = size.saturating_add(size / 256 + 64);
        let input = self.window.bytes(pack, n, start, bound)?;
        let mut out = vec![0u8; size];
        if inflate(&mut self.inflate, input, &mut out).is_err() {
            let size = pack.entry_size_at_offset(at).ok_or("no entry there")?;
            let end = (at + size as u64)
                .checked_sub(start)
                .ok_or("pack entry too small")?;
            let input = self.window.bytes(pack, n, start, usize::try_from(end)?)?;
            inflate(&mut self.inflate, input, &mut out)?;
        }
        Ok((entry.header, out))
    }

    fn keep(&mut self, at: (usize, u64), kind: Kind, data: Vec<u8>) -> Object {
        let data: Rc<[u8]> = data.into();
        self.cached += data.len();
        self.cache.insert(at, (kind, data.clone()));
        self.order.push_back(at);
        while self.cached > CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((_, gone)) = self.cache.remove(&old) {
                self.cached -= gone.len();
            }
        }
        (kind, data)
    }
}

/// Inflate a whole zlib stream from the start of `input` into `out`, which it must
/// fill exactly.
fn inflate(inflate: &mut gix::zlib::Inflate, input: &[u8], out: &mut [u8]) -> Result<()> {
    inflate.reset();
    let (status, _, written) = inflate.once(input, out)?;
    if status != gix::zlib::Status::StreamEnd || written != out.len() {
        return Err("pack entry does not inflate to its size".into());
    }
    Ok(())
}

/// A stretch of one pack's bytes, read with `pread`.
#[derive(Default)]
struct Window {
    pack: usize,
    at: u64,
    buf: Vec<u8>,
}

impl Window {
    /// `len` bytes of pack `n` from `at`, or fewer where the entries end.
    fn bytes(&mut self, pack: &Pack, n: usize, at: u64, len: usize) -> Result<&[u8]> {
        let len = len.min(usize::try_from(pack.entries_end().saturating_sub(at))?);
        let held =
            self.pack == n && at >= self.at && at + len as u64 <= self.at + self.buf.len() as u64;
        if !held {
            let read = len
                .max(WINDOW)
                .min(usize::try_from(pack.entries_end().saturating_sub(at))?);
            // Only what a large entry needs beyond the usual window is given back
            // when it is done: the window keeps its size.
            if self.buf.capacity() > WINDOW && read <= WINDOW {
                self.buf = Vec::with_capacity(WINDOW);
            }
            self.buf.resize(read, 0);
            pack.read_entry_into(at, &mut self.buf)?;
            (self.pack, self.at) = (n, at);
        }
        let from = (at - self.at) as usize;
        Ok(&self.buf[from..from + len])
    }
}

/// Hashes the pack number and offset that key the cache: offsets of entries are
/// distinct already, so one multiplication spreads them well enough.
#[derive(Default)]
struct OffsetHasher(u64);

impl Hasher for OffsetHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// git's delta format: the base's size and the result's (little-endian base-128),
/// then instructions: bit 7 set copies a range of the base (bits 0-3 say which
/// offset bytes follow, bits 4-6 which size bytes; size 0 means 64 KiB), otherwise
/// the byte is a count of literal bytes that follow.
pub(crate) fn apply_delta(base: &[u8], delta: &[u8]) -> Result<Vec<u8>> {
    let corrupt = || "corrupt delta";
    let mut d = delta.iter().copied();
    let mut size = || -> Result<usize> {
        let (mut n, mut shift) = (0usize, 0);
        loop {
            let b = d.next().ok_or_else(corrupt)?;
            n |= usize::from(b & 0x7f)
                .checked_shl(shift)
                .ok_or_else(corrupt)?;
            shift += 7;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
    };
    let (base_size, result_size) = (size()?, size()?);
    if base_size != base.len() {
        return Err(corrupt().into());
    }
    let mut out = Vec::with_capacity(result_size);
    while let Some(cmd) = d.next() {
        if cmd & 0x80 != 0 {
            let mut field = |bits: u8, first: u32| -> Result<usize> {
                let mut n = 0usize;
                for i in 0..bits as u32 {
                    if cmd & (1 << (first + i)) != 0 {
                        n |= usize::from(d.next().ok_or_else(corrupt)?) << (8 * i);
                    }
                }
                Ok(n)
            };
            let offset = field(4, 0)?;
            let len = match field(3, 4)? {
                0 => 0x10000,
                n => n,
            };
            let range = base.get(offset..offset + len).ok_or_else(corrupt)?;
            out.extend_from_slice(range);
        } else if cmd != 0 {
            for _ in 0..cmd {
                out.push(d.next().ok_or_else(corrupt)?);
            }
        } else {
            return Err(corrupt().into());
        }
    }
    if out.len() != result_size {
        return Err(corrupt().into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::packs::Packs;
    use gix::objs::Find;

    /// Every object of a pack with long delta chains reads as gix reads it.
    #[test]
    fn objects_read_as_gix_reads_them() {
        let dir = crate::pack::test_repo(
            "read",
            r#"
            for i in $(seq 1 40); do
                seq 1 $((i * 50)) > a.txt; echo "change $i" >> b.txt
                mkdir -p "d$((i % 4))"; echo $i > "d$((i % 4))/f"
                git add -A && git commit -q -m "c$i"
            done
            git repack -adfq --depth=50 --window=50
        "#,
        );
        let repo = gix::open(dir.join("w")).unwrap();
        let packs = Packs::open(repo.objects.store_ref().path());
        let pack = &packs.packs[0];
        let mut reader = Reader::new(&packs);
        let (mut buf, mut deltas) = (Vec::new(), 0);
        for pos in 0..pack.num_objects() {
            let id = pack.index.oid_at_index(pack.index_at(pos)).to_owned();
            let (offset, size) = pack.entry_at(pos);
            let raw = pack.read_entry(offset, size).unwrap();
            let entry = data::Entry::from_bytes(&raw, 0, gix::hash::Kind::Sha1).unwrap();
            deltas += usize::from(entry.header.is_delta());
            let (kind, data) = reader.read(0, pos).unwrap().unwrap();
            let expected = repo.objects.try_find(&id, &mut buf).unwrap().unwrap();
            assert_eq!((kind, &*data), (expected.kind, expected.data), "{id}");
        }
        assert!(deltas > 50, "the pack has deltas to resolve: {deltas}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
