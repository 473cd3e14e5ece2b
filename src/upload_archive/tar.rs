//! git's tar layout (`archive-tar.c`), byte for byte: ustar headers with git's field
//! formatting, a pax global header carrying the commit id, pax extended headers for
//! long names, long link targets and huge sizes, and output in 10240-byte blocks
//! ending with at least two zero records. `tgz`/`tar.gz` is the same stream through
//! git's internal gzip (`git archive gzip`): a gzip header with no name, mtime 0 and
//! OS 3 ("Unix, for reproducibility"), then raw deflate, CRC-32 and length.

use std::io::{self, Write};

use flate2::Compression;
use gix::ObjectId;

use super::Entry;

const RECORD: usize = 512;
const BLOCK: usize = RECORD * 20;
/// The largest size or mtime an 11-digit octal field holds.
const USTAR_MAX: u64 = 0o77777777777;

/// Writes git's tar stream to `out`, a block at a time.
pub struct TarWriter<W: Write> {
    out: W,
    block: Box<[u8; BLOCK]>,
    offset: usize,
    mtime: u64,
    umask: u32,
}

impl<W: Write> TarWriter<W> {
    /// Start the archive: the pax global header with `commit` (when the tree-ish was
    /// a commit) and, past the ustar range, the real mtime.
    pub fn new(out: W, commit: Option<ObjectId>, mtime: i64, umask: u32) -> io::Result<Self> {
        let mut w = TarWriter {
            out,
            block: Box::new([0; BLOCK]),
            offset: 0,
            mtime: mtime.max(0) as u64,
            umask,
        };
        let mut ext = Vec::new();
        if let Some(id) = commit {
            pax_record(&mut ext, "comment", id.to_hex().to_string().as_bytes());
        }
        if w.mtime > USTAR_MAX {
            pax_record(&mut ext, "mtime", w.mtime.to_string().as_bytes());
            w.mtime = USTAR_MAX;
        }
        if !ext.is_empty() {
            let mut h = [0u8; RECORD];
            put(&mut h[0..100], b"pax_global_header");
            h[156] = b'g';
            w.header(&mut h, 0o100666, ext.len() as u64);
            w.blocked(&h)?;
            w.blocked(&ext)?;
        }
        Ok(w)
    }

    /// Append one entry (`write_tar_entry`).
    pub fn entry(&mut self, e: &Entry<'_>) -> io::Result<()> {
        let mut h = [0u8; RECORD];
        let kind = e.mode & 0o170000;
        let mode = match kind {
            0o040000 | 0o160000 => {
                h[156] = b'5';
                (e.mode | 0o777) & !self.umask
            }
            0o120000 => {
                h[156] = b'2';
                e.mode | 0o777
            }
            0o100000 => {
                h[156] = b'0';
                let bits = if e.mode & 0o100 != 0 { 0o777 } else { 0o666 };
                (e.mode | bits) & !self.umask
            }
            _ => {
                return Err(io::Error::other(format!(
                    "unsupported file mode: 0{:o} (SHA1: {})",
                    e.mode, e.id
                )));
            }
        };
        let mut ext = Vec::new();
        let path = e.path;
        if path.len() > 100 {
            let plen = path_prefix(path, 155);
            let rest = path.len() - plen - 1;
            if plen > 0 && rest <= 100 {
                put(&mut h[345..500], &path[..plen]);
                put(&mut h[0..100], &path[plen + 1..]);
            } else {
                put(&mut h[0..100], format!("{}.data", e.id).as_bytes());
                pax_record(&mut ext, "path", path);
            }
        } else {
            put(&mut h[0..100], path);
        }
        if kind == 0o120000 {
            if e.data.len() > 100 {
                put(
                    &mut h[157..257],
                    format!("see {}.paxheader", e.id).as_bytes(),
                );
                pax_record(&mut ext, "linkpath", e.data);
            } else {
                put(&mut h[157..257], e.data);
            }
        }
        let regular = kind == 0o100000;
        let mut size = if regular { e.data.len() as u64 } else { 0 };
        if size > USTAR_MAX {
            pax_record(&mut ext, "size", size.to_string().as_bytes());
            size = 0;
        }
        self.header(&mut h, mode, size);
        if !ext.is_empty() {
            let mut x = [0u8; RECORD];
            x[156] = b'x';
            put(&mut x[0..100], format!("{}.paxheader", e.id).as_bytes());
            self.header(&mut x, 0o100666, ext.len() as u64);
            self.blocked(&x)?;
            self.blocked(&ext)?;
        }
        self.blocked(&h)?;
        if regular && !e.data.is_empty() {
            self.blocked(e.data)?;
        }
        Ok(())
    }

    /// The sink, for messages between entries.
    pub fn sink(&mut self) -> &mut W {
        &mut self.out
    }

    /// End the archive (`write_trailer`) and hand back the sink.
    pub fn finish(mut self) -> io::Result<W> {
        let tail = BLOCK - self.offset;
        self.block[self.offset..].fill(0);
        self.out.write_all(&self.block[..])?;
        if tail < 2 * RECORD {
            self.block.fill(0);
            self.out.write_all(&self.block[..])?;
        }
        Ok(self.out)
    }

    /// Fill in the fields git fills in `prepare_header`, checksum last.
    fn header(&self, h: &mut [u8; RECORD], mode: u32, size: u64) {
        octal(&mut h[100..108], u64::from(mode & 0o7777));
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], self.mtime);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        put(&mut h[265..297], b"root");
        put(&mut h[297..329], b"root");
        octal(&mut h[329..337], 0);
        octal(&mut h[337..345], 0);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u32 = h[..148]
            .iter()
            .chain(&h[156..])
            .map(|&b| u32::from(b))
            .sum();
        octal(&mut h[148..156], u64::from(sum + 8 * u32::from(b' ')));
    }

    /// Append `data` padded to a whole record (`write_blocked`).
    fn blocked(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = data.len().min(BLOCK - self.offset);
            self.block[self.offset..self.offset + n].copy_from_slice(&data[..n]);
            self.offset += n;
            data = &data[n..];
            self.write_if_full()?;
        }
        let tail = self.offset % RECORD;
        if tail != 0 {
            self.block[self.offset..self.offset + RECORD - tail].fill(0);
            self.offset += RECORD - tail;
            self.write_if_full()?;
        }
        Ok(())
    }

    fn write_if_full(&mut self) -> io::Result<()> {
        if self.offset == BLOCK {
            self.out.write_all(&self.block[..])?;
            self.offset = 0;
        }
        Ok(())
    }
}

/// Where git splits a long path into ustar's prefix and name (`get_path_prefix`).
fn path_prefix(path: &[u8], max: usize) -> usize {
    let mut i = path.len();
    if i > 1 && path[i - 1] == b'/' {
        i -= 1;
    }
    i = i.min(max);
    if i == 0 {
        return 0;
    }
    loop {
        i -= 1;
        if i == 0 || path[i] == b'/' {
            return i;
        }
    }
}

/// `"%0*o"` into a field, leaving its last byte NUL, as git's `xsnprintf` does.
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    let s = &s.as_bytes()[s.len().saturating_sub(width)..];
    field[..s.len()].copy_from_slice(s);
}

fn put(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// One pax record, `"<len> <keyword>=<value>\n"`, where len counts itself.
fn pax_record(out: &mut Vec<u8>, keyword: &str, value: &[u8]) {
    let mut len = 1 + 1 + keyword.len() + 1 + value.len() + 1;
    let mut tmp = 1;
    while len / 10 >= tmp {
        len += 1;
        tmp *= 10;
    }
    out.extend_from_slice(format!("{len} {keyword}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// git's internal gzip: zlib's gzip framing as `deflateSetHeader` with `os = 3` and
/// no name or time writes it, around a raw deflate stream.
pub struct Gzip<W: Write> {
    deflate: flate2::write::DeflateEncoder<W>,
    crc: crc32fast::Hasher,
    len: u32,
}

impl<W: Write> Gzip<W> {
    /// `level` is git's: `None` for zlib's default (6), else 0–9.
    pub fn new(mut out: W, level: Option<u32>) -> io::Result<Self> {
        let level = level.unwrap_or(6);
        // zlib's XFL: 2 for the slowest level, 4 for the fastest ones.
        let xfl = match level {
            9 => 2,
            0 | 1 => 4,
            _ => 0,
        };
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3])?;
        Ok(Gzip {
            deflate: flate2::write::DeflateEncoder::new(out, Compression::new(level)),
            crc: crc32fast::Hasher::new(),
            len: 0,
        })
    }

    /// The sink below the compressor.
    pub fn sink(&mut self) -> &mut W {
        self.deflate.get_mut()
    }

    /// Finish the deflate stream and write the trailer.
    pub fn finish(self) -> io::Result<W> {
        let mut out = self.deflate.finish()?;
        out.write_all(&self.crc.finalize().to_le_bytes())?;
        out.write_all(&self.len.to_le_bytes())?;
        Ok(out)
    }
}

impl<W: Write> Write for Gzip<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.deflate.write(data)?;
        self.crc.update(&data[..n]);
        self.len = self.len.wrapping_add(n as u32);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // A flush would end a deflate block early and change the bytes: the
        // stream is only flushed by `finish`.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_count_their_own_length() {
        let mut v = Vec::new();
        pax_record(&mut v, "comment", &[b'a'; 40]);
        assert!(v.starts_with(b"52 comment="));
        assert_eq!(v.len(), 52);
        // Where the length grows a digit it counts that digit too: no record is 100 long.
        for (value, len) in [(89, 98), (90, 99), (91, 101), (94, 104)] {
            let mut v = Vec::new();
            pax_record(&mut v, "path", &vec![b'p'; value]);
            assert_eq!(v.len(), len, "{value}");
            assert!(v.starts_with(format!("{len} path=").as_bytes()));
        }
    }

    #[test]
    fn long_paths_split_at_a_slash() {
        let path = format!("{}/{}", "d".repeat(60), "f".repeat(60));
        assert_eq!(path_prefix(path.as_bytes(), 155), 60);
        assert_eq!(path_prefix(b"/x", 155), 0);
    }
}
