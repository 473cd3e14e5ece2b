//! Reading the pushed pack as it streams in, without holding any of it: each
//! entry's header is parsed and its deflated data inflated into nothing (to find
//! where it ends and to check its size), while every byte goes to the pack file,
//! the pack's SHA-1 and the entry's CRC-32 (git's `index-pack --stdin` first
//! pass). gix-pack's own reader keeps each entry's deflated bytes in a buffer,
//! which for a pushed blob that does not compress is as large as the blob.
//! Then, for a thin pack, the missing bases are appended ([`fix_thin`]).

use std::io::{self, BufRead, BufWriter, Read, Seek, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use gix::ObjectId;
use gix_pack::data::entry::Header;

/// What one entry of the pack needs for the index (a compact `input::Entry`).
pub struct Meta {
    pub header: Header,
    pub offset: u64,
    pub compressed_size: u64,
    pub decompressed_size: u64,
    pub crc32: u32,
    pub header_size: u16,
}

/// The pushed bytes as the parser reads them: copied to the pack file and
/// summed as they are consumed.
struct Stream<'a> {
    inner: &'a mut dyn BufRead,
    out: BufWriter<std::fs::File>,
    /// The pack's checksum so far (`None` once the trailer is being read).
    pack: Option<gix::hash::Hasher>,
    crc: crc32fast::Hasher,
    pos: u64,
    /// A failed write, reported by the next read.
    failed: Option<io::Error>,
}

impl Read for Stream<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Stream<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        if amt == 0 {
            return;
        }
        // The bytes consumed are those the last fill_buf returned: still buffered.
        match self.inner.fill_buf() {
            Ok(buf) => {
                let bytes = &buf[..amt];
                if let Some(h) = self.pack.as_mut() {
                    h.update(bytes);
                }
                self.crc.update(bytes);
                if let Err(e) = self.out.write_all(bytes) {
                    self.failed.get_or_insert(e);
                }
            }
            Err(e) => {
                self.failed.get_or_insert(e);
            }
        }
        self.pos += amt as u64;
        self.inner.consume(amt);
    }
}

/// Counts what an inflater writes, and throws it away.
struct Count(u64);

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Read a whole pack from `input` into `file`: its entries, its checksum (`None`
/// for a pack without objects), its version, and the file positioned anywhere.
pub fn read(
    input: &mut dyn BufRead,
    file: std::fs::File,
    interrupt: &AtomicBool,
) -> io::Result<(
    Vec<Meta>,
    Option<ObjectId>,
    gix_pack::data::Version,
    std::fs::File,
)> {
    let mut s = Stream {
        inner: input,
        out: BufWriter::with_capacity(64 * 1024, file),
        pack: Some(gix::hash::hasher(gix::hash::Kind::Sha1)),
        crc: crc32fast::Hasher::new(),
        pos: 0,
        failed: None,
    };
    let early_eof = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => io::Error::other("early EOF"),
        _ => e,
    };
    let mut header = [0u8; 12];
    s.read_exact(&mut header).map_err(early_eof)?;
    let (version, count) = gix_pack::data::header::decode(&header)
        .map_err(|e| io::Error::other(super::index_pack::describe(&e)))?;
    let mut metas = Vec::with_capacity(count.min(1 << 16) as usize);
    for _ in 0..count {
        if interrupt.load(Ordering::Relaxed) {
            return Err(io::Error::other("interrupted"));
        }
        let offset = s.pos;
        s.crc = crc32fast::Hasher::new();
        let entry = gix_pack::data::Entry::from_read(&mut s, offset, 20).map_err(early_eof)?;
        let header_size = s.pos - offset;
        let mut inflated = Count(0);
        io::copy(
            &mut flate2::bufread::ZlibDecoder::new(&mut s),
            &mut inflated,
        )
        .map_err(early_eof)?;
        if inflated.0 != entry.decompressed_size {
            return Err(io::Error::other(format!(
                "inflate returned {} bytes for an object of {} at offset {offset}",
                inflated.0, entry.decompressed_size
            )));
        }
        let crc = std::mem::replace(&mut s.crc, crc32fast::Hasher::new());
        metas.push(Meta {
            header: entry.header,
            offset,
            compressed_size: s.pos - offset - header_size,
            decompressed_size: entry.decompressed_size,
            crc32: crc.finalize(),
            header_size: header_size as u16,
        });
    }
    let computed = s
        .pack
        .take()
        .expect("set until now")
        .try_finalize()
        .map_err(io::Error::other)?;
    let mut trailer = [0u8; 20];
    s.read_exact(&mut trailer).map_err(early_eof)?;
    if trailer != computed.as_bytes() {
        return Err(io::Error::other("pack is corrupted (SHA1 mismatch)"));
    }
    if let Some(e) = s.failed.take() {
        return Err(e);
    }
    let file = s.out.into_inner().map_err(|e| e.into_error())?;
    Ok((metas, (count > 0).then_some(computed), version, file))
}

/// Complete a thin pack, as `index-pack --fix-thin`: every base of a ref-delta
/// that the repository has is appended to the pack as a whole object (deflated
/// anew), then the object count in the header and the trailing checksum are
/// rewritten. The new checksum, or `None` for a pack that was not thin.
pub fn fix_thin(
    file: &mut std::fs::File,
    metas: &mut Vec<Meta>,
    odb: &impl gix::objs::Find,
    version: gix_pack::data::Version,
) -> io::Result<Option<ObjectId>> {
    let mut bases: Vec<ObjectId> = metas
        .iter()
        .filter_map(|m| match m.header {
            Header::RefDelta { base_id } => Some(base_id),
            _ => None,
        })
        .collect();
    bases.sort_unstable();
    bases.dedup();
    let mut end = file.seek(io::SeekFrom::End(0))? - 20;
    let mut buf = Vec::new();
    let mut appended = 0u32;
    for id in bases {
        let Some(data) = odb.try_find(&id, &mut buf).map_err(io::Error::other)? else {
            continue; // in the pack itself, or missing: the traversal tells
        };
        let header = match data.kind {
            gix::objs::Kind::Blob => Header::Blob,
            gix::objs::Kind::Tree => Header::Tree,
            gix::objs::Kind::Commit => Header::Commit,
            gix::objs::Kind::Tag => Header::Tag,
        };
        let size = data.data.len() as u64;
        let mut entry = Vec::new();
        let header_size = header.write_to(size, &mut entry)?;
        let mut z = flate2::write::ZlibEncoder::new(entry, flate2::Compression::fast());
        z.write_all(data.data)?;
        let entry = z.finish()?;
        if appended == 0 {
            file.set_len(end)?; // the old trailer goes
        }
        file.seek(io::SeekFrom::Start(end))?;
        file.write_all(&entry)?;
        metas.push(Meta {
            header,
            offset: end,
            compressed_size: (entry.len() - header_size) as u64,
            decompressed_size: size,
            crc32: crc32fast::hash(&entry),
            header_size: header_size as u16,
        });
        end += entry.len() as u64;
        appended += 1;
    }
    if appended == 0 {
        return Ok(None);
    }
    let count = u32::try_from(metas.len()).map_err(|_| io::Error::other("too many objects"))?;
    file.seek(io::SeekFrom::Start(0))?;
    file.write_all(&gix_pack::data::header::encode(version, count))?;
    file.seek(io::SeekFrom::Start(0))?;
    let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut left = end;
    while left > 0 {
        let n = file.read(&mut chunk[..left.min(64 * 1024) as usize])?;
        if n == 0 {
            return Err(io::Error::other("the pack file is shorter than written"));
        }
        hasher.update(&chunk[..n]);
        left -= n as u64;
    }
    let hash = hasher.try_finalize().map_err(io::Error::other)?;
    file.write_all(hash.as_bytes())?;
    Ok(Some(hash))
}
