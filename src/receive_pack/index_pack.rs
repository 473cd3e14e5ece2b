//! Writing the pushed pack and its index into the quarantine, with memory bounded
//! for large objects: git's `index-pack --stdin --fix-thin`.
//!
//! gix-pack reads the pack as it streams in (verifying it and completing a thin
//! pack from the repository's objects) and writes it to a file. Object ids are
//! then computed by gix-pack's delta-tree traversal, which holds each object it
//! resolves in memory as a whole: fine for source code, fatal for a pushed
//! 1 GiB blob (a 1 MB pack of zeros) under a 256 MiB memory limit. So, as git's
//! index-pack does for big blobs, an object of at least [`STREAM_THRESHOLD`]
//! bytes that is not a delta and that no delta in the pack is based on is hashed
//! by inflating it from the pack file in small pieces; the traversal resolves the
//! rest, and both go into one index. A big object that is a delta base is
//! resolved in memory, as git does too.

use std::collections::HashSet;
use std::io::{self, BufRead, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gix::ObjectId;
use gix_pack::data::entry::Header;
use gix_pack::data::input;

use super::pack_stream::{self, Meta};

/// Objects at least this large are hashed as they inflate when nothing needs
/// them whole.
pub const STREAM_THRESHOLD: u64 = 32 << 20;

/// Removes a temporary file unless it was renamed into place.
struct Temp(Option<PathBuf>);

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Temp {
    fn persist(mut self, to: &Path) -> io::Result<()> {
        let from = self.0.take().expect("not yet persisted");
        std::fs::rename(from, to)
    }
}

/// Read the pack from `input` into `pack_dir` as `pack-<hash>.{keep,pack,idx}`;
/// returns the number of objects (0: an empty pack, nothing written).
pub fn write(
    input: &mut dyn BufRead,
    pack_dir: &Path,
    thin_bases: impl gix::objs::Find,
    interrupt: &AtomicBool,
    alloc_limit: usize,
) -> Result<u32, String> {
    let io_err = |e: io::Error| e.to_string();
    let gix_err = |e: gix::Error| describe(&e);
    let tmp_pack = Temp(Some(
        pack_dir.join(format!("tmp_pack_{}", std::process::id())),
    ));
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(tmp_pack.0.as_ref().expect("set"))
        .map_err(io_err)?;
    let (mut metas, pack_hash, version, mut file) =
        pack_stream::read(input, file, interrupt).map_err(io_err)?;
    let Some(mut pack_hash) = pack_hash else {
        return Ok(0); // an empty pack: nothing to keep
    };
    if let Some(hash) =
        pack_stream::fix_thin(&mut file, &mut metas, &thin_bases, version).map_err(io_err)?
    {
        pack_hash = hash;
    }
    drop(file);
    let pack_path = tmp_pack.0.clone().expect("set");
    let map = {
        let file = std::fs::File::open(&pack_path).map_err(io_err)?;
        // SAFETY: the file is ours, complete, and no one writes to it any more.
        unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?
    };

    // Big objects nothing depends on are hashed from the file, in pieces.
    let ofs_bases: HashSet<u64> = metas
        .iter()
        .filter_map(|m| match m.header {
            Header::OfsDelta { base_distance } => {
                Header::verified_base_pack_offset(m.offset, base_distance)
            }
            _ => None,
        })
        .collect();
    let ref_bases: HashSet<ObjectId> = metas
        .iter()
        .filter_map(|m| match m.header {
            Header::RefDelta { base_id } => Some(base_id),
            _ => None,
        })
        .collect();
    let mut streamed: Vec<(ObjectId, u64, u32)> = Vec::new();
    let mut skip = HashSet::new();
    for m in &metas {
        let Some(kind) = m.header.as_kind() else {
            continue;
        };
        if m.decompressed_size < STREAM_THRESHOLD || ofs_bases.contains(&m.offset) {
            continue;
        }
        // Read, not through the mapping: touched pages of a mapping count as
        // resident memory, and this object may be as large as the pack.
        let mut file = std::fs::File::open(&pack_path).map_err(io_err)?;
        file.seek(io::SeekFrom::Start(m.offset + u64::from(m.header_size)))
            .map_err(io_err)?;
        let compressed = io::BufReader::with_capacity(64 * 1024, file.take(m.compressed_size));
        let id =
            hash_streaming(kind, m.decompressed_size, compressed, interrupt).map_err(io_err)?;
        if !ref_bases.contains(&id) {
            streamed.push((id, m.offset, m.crc32));
            skip.insert(m.offset);
        }
    }

    // The rest through gix-pack's traversal, into a first index.
    let tmp_idx = Temp(Some(
        pack_dir.join(format!("tmp_idx_{}", std::process::id())),
    ));
    let mut from_traversal: Vec<(ObjectId, u64, u32)> = Vec::new();
    let rest: Vec<&Meta> = metas.iter().filter(|m| !skip.contains(&m.offset)).collect();
    if !rest.is_empty() {
        let last = rest.len() - 1;
        let mut iter = rest.iter().enumerate().map(|(i, m)| {
            Ok::<_, gix::Error>(input::Entry {
                header: m.header,
                header_size: m.header_size,
                pack_offset: m.offset,
                compressed: None,
                compressed_size: m.compressed_size,
                crc32: Some(m.crc32),
                decompressed_size: m.decompressed_size,
                trailer: (i == last).then_some(pack_hash),
            })
        });
        let mut out = BufWriter::new(
            std::fs::File::create(tmp_idx.0.as_ref().expect("set")).map_err(io_err)?,
        );
        gix_pack::index::write_data_iter_to_stream(
            gix_pack::index::Version::V2,
            move || Ok((slice, map)),
            &mut iter,
            Some(1),
            &mut gix::progress::Discard,
            &mut out,
            interrupt,
            gix::hash::Kind::Sha1,
            Some(alloc_limit),
            version,
        )
        .map_err(gix_err)?;
        out.flush().map_err(io_err)?;
        drop(out);
        if streamed.is_empty() {
            return finish(pack_dir, pack_hash, tmp_pack, tmp_idx, metas.len()).map_err(io_err);
        }
        let index =
            gix_pack::index::File::at(tmp_idx.0.as_ref().expect("set"), gix::hash::Kind::Sha1)
                .map_err(gix_err)?;
        from_traversal.extend(
            index
                .iter()
                .map(|e| (e.oid, e.pack_offset, e.crc32.unwrap_or_default())),
        );
    }
    streamed.extend(from_traversal);
    streamed.sort_unstable_by_key(|e| e.0);
    streamed.dedup_by_key(|e| e.0);
    let idx = write_index(&streamed, &pack_hash);
    std::fs::write(tmp_idx.0.as_ref().expect("set"), idx).map_err(io_err)?;
    finish(pack_dir, pack_hash, tmp_pack, tmp_idx, streamed.len()).map_err(io_err)
}

/// The bytes of one entry in the mapped pack, for gix-pack's traversal.
fn slice(range: gix_pack::data::EntryRange, map: &memmap2::Mmap) -> Option<&[u8]> {
    map.get(range.start as usize..range.end as usize)
}

/// The most telling line of a gix error chain: its innermost cause.
pub fn describe(err: &gix::Error) -> String {
    let cause = err.probable_cause().to_string();
    let top = err.to_string();
    if cause == top || cause.is_empty() {
        top
    } else {
        format!("{top}: {cause}")
    }
}

/// Name the files by the pack's checksum, the `.keep` first, as gix-pack does.
fn finish(dir: &Path, hash: ObjectId, pack: Temp, idx: Temp, n: usize) -> io::Result<u32> {
    let base = dir.join(format!("pack-{hash}"));
    std::fs::write(base.with_extension("keep"), b"")?;
    pack.persist(&base.with_extension("pack"))?;
    idx.persist(&base.with_extension("idx"))?;
    u32::try_from(n).map_err(|_| io::Error::other("too many objects"))
}

/// The id of a whole object whose deflated bytes are `compressed`, inflated and
/// hashed 64 KiB at a time.
fn hash_streaming(
    kind: gix::objs::Kind,
    size: u64,
    compressed: impl BufRead,
    interrupt: &AtomicBool,
) -> io::Result<ObjectId> {
    let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
    hasher.update(&gix::objs::encode::loose_header(kind, size));
    let mut inflate = flate2::bufread::ZlibDecoder::new(compressed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        if interrupt.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(io::Error::other("interrupted"));
        }
        let n = inflate.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    if total != size {
        return Err(io::Error::other(format!(
            "object inflated to {total} bytes instead of {size}"
        )));
    }
    hasher.try_finalize().map_err(io::Error::other)
}

/// A version 2 pack index of `entries` (sorted by id): git's format.
fn write_index(entries: &[(ObjectId, u64, u32)], pack_hash: &ObjectId) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 1024 + entries.len() * 28 + 40);
    out.extend_from_slice(b"\xfftOc\0\0\0\x02");
    let mut fanout = [0u32; 256];
    for (id, _, _) in entries {
        fanout[usize::from(id.as_bytes()[0])] += 1;
    }
    let mut sum = 0;
    for n in fanout {
        sum += n;
        out.extend_from_slice(&sum.to_be_bytes());
    }
    for (id, _, _) in entries {
        out.extend_from_slice(id.as_bytes());
    }
    for (_, _, crc) in entries {
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut large = Vec::new();
    for (_, offset, _) in entries {
        if *offset < 0x8000_0000 {
            out.extend_from_slice(&(*offset as u32).to_be_bytes());
        } else {
            out.extend_from_slice(&(0x8000_0000 | large.len() as u32).to_be_bytes());
            large.push(*offset);
        }
    }
    for offset in large {
        out.extend_from_slice(&offset.to_be_bytes());
    }
    out.extend_from_slice(pack_hash.as_bytes());
    let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
    hasher.update(&out);
    let checksum = hasher
        .try_finalize()
        .expect("no collision attack in our own index");
    out.extend_from_slice(checksum.as_bytes());
    out
}
