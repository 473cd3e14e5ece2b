//! git's zip layout (`archive-zip.c`), written front to back without seeking, as git
//! writes it to a pipe: per entry a local header with sizes and CRC known up front
//! (the content is in memory), an extended-timestamp extra field, the data stored
//! or raw-deflated (stored when deflating does not make it smaller); then the central
//! directory, kept in memory until the end (bounded by the entry limit), zip64
//! records when counts or offsets overflow, and the commit id as the zip comment.

use std::io::{self, Write};

use flate2::Compression;
use gix::ObjectId;

use super::Entry;

const STORE: u16 = 0;
const DEFLATE: u16 = 8;
const UTF8: u16 = 1 << 11;
/// `UT` extra field: magic, size, flags, mtime.
const EXTRA_MTIME_SIZE: u16 = 9;

pub struct ZipWriter<W: Write> {
    out: W,
    /// `None` for zlib's default level.
    level: Option<u32>,
    dir: Vec<u8>,
    entries: u64,
    offset: u64,
    dos_date: u16,
    dos_time: u16,
    mtime: u32,
    max_creator: u16,
    /// Paths that are not UTF-8, for git's warning.
    pub non_utf8: Vec<Vec<u8>>,
}

impl<W: Write> ZipWriter<W> {
    pub fn new(out: W, level: Option<u32>, mtime: i64) -> Self {
        let (dos_date, dos_time) = dos_time(mtime);
        ZipWriter {
            out,
            level,
            dir: Vec::new(),
            entries: 0,
            offset: 0,
            dos_date,
            dos_time,
            mtime: mtime as u32,
            max_creator: 0,
            non_utf8: Vec::new(),
        }
    }

    /// Append one entry (`write_zip_entry`); `binary` is the `diff` attribute's
    /// verdict where it gives one (`-diff`: binary), else the content decides.
    pub fn entry(&mut self, e: &Entry<'_>, binary: Option<bool>) -> io::Result<()> {
        let path = e.path;
        let mut flags = 0u16;
        if !path.is_ascii() {
            if std::str::from_utf8(path).is_ok() {
                flags |= UTF8;
            } else {
                self.non_utf8.push(path.to_vec());
            }
        }
        if path.len() > 0xffff {
            return Err(io::Error::other(format!(
                "path too long ({} chars, SHA1: {}): {}",
                path.len(),
                e.id,
                crate::escape(path)
            )));
        }
        let kind = e.mode & 0o170000;
        let mut creator = 0u16;
        let mut method = STORE;
        let mut is_binary = false;
        let (attr2, crc, mut data, size): (u32, u32, std::borrow::Cow<'_, [u8]>, u64) = match kind {
            0o040000 | 0o160000 => (16, 0, Default::default(), 0),
            0o100000 | 0o120000 => {
                let link = kind == 0o120000;
                let attr2 = if link {
                    (e.mode | 0o777) << 16
                } else if e.mode & 0o111 != 0 {
                    e.mode << 16
                } else {
                    0
                };
                if link || e.mode & 0o111 != 0 {
                    creator = 0x0317;
                }
                if !link && self.level != Some(0) && !e.data.is_empty() {
                    method = DEFLATE;
                }
                is_binary = binary.unwrap_or_else(|| e.data[..e.data.len().min(8000)].contains(&0));
                (
                    attr2,
                    crc32fast::hash(e.data),
                    e.data.into(),
                    e.data.len() as u64,
                )
            }
            _ => {
                return Err(io::Error::other(format!(
                    "unsupported file mode: 0{:o} (SHA1: {})",
                    e.mode, e.id
                )));
            }
        };
        self.max_creator = self.max_creator.max(creator);
        if method == DEFLATE {
            let level = Compression::new(self.level.unwrap_or(6));
            let mut z = flate2::write::DeflateEncoder::new(Vec::new(), level);
            z.write_all(&data)?;
            let deflated = z.finish()?;
            if deflated.len() < data.len() {
                data = deflated.into();
            } else {
                method = STORE;
            }
        }
        let compressed = data.len() as u64;
        let zip64 = size > 0xffff_ffff || compressed > 0xffff_ffff;
        let version: u16 = if zip64 { 45 } else { 10 };
        let offset = self.offset;

        let mut h = Vec::with_capacity(30 + path.len() + 29);
        le32(&mut h, 0x0403_4b50);
        le16(&mut h, version);
        le16(&mut h, flags);
        le16(&mut h, method);
        le16(&mut h, self.dos_time);
        le16(&mut h, self.dos_date);
        le32(&mut h, crc);
        if zip64 {
            le32(&mut h, 0xffff_ffff);
            le32(&mut h, 0xffff_ffff);
        } else {
            le32(&mut h, compressed as u32);
            le32(&mut h, size as u32);
        }
        le16(&mut h, path.len() as u16);
        le16(&mut h, EXTRA_MTIME_SIZE + if zip64 { 20 } else { 0 });
        h.extend_from_slice(path);
        self.extra_mtime(&mut h);
        if zip64 {
            le16(&mut h, 0x0001);
            le16(&mut h, 16);
            h.extend_from_slice(&size.to_le_bytes());
            h.extend_from_slice(&compressed.to_le_bytes());
        }
        self.out.write_all(&h)?;
        self.out.write_all(&data)?;
        self.offset += h.len() as u64 + compressed;

        let mut zip64_payload = 0u16;
        if compressed > 0xffff_ffff || size > 0xffff_ffff || offset > 0xffff_ffff {
            zip64_payload = 8
                * (u16::from(compressed >= 0xffff_ffff)
                    + u16::from(size >= 0xffff_ffff)
                    + u16::from(offset >= 0xffff_ffff));
        }
        let dir_extra = EXTRA_MTIME_SIZE
            + if zip64_payload > 0 {
                4 + zip64_payload
            } else {
                0
            };
        let d = &mut self.dir;
        le32(d, 0x0201_4b50);
        le16(d, creator);
        le16(d, version);
        le16(d, flags);
        le16(d, method);
        le16(d, self.dos_time);
        le16(d, self.dos_date);
        le32(d, crc);
        le32(d, clamp32(compressed));
        le32(d, clamp32(size));
        le16(d, path.len() as u16);
        le16(d, dir_extra);
        le16(d, 0); // comment length
        le16(d, 0); // disk
        le16(
            d,
            u16::from(matches!(kind, 0o100000 | 0o120000) && !is_binary),
        );
        le32(d, attr2);
        le32(d, clamp32(offset));
        d.extend_from_slice(path);
        let mut extra = Vec::with_capacity(9);
        self.extra_mtime(&mut extra);
        let d = &mut self.dir;
        d.extend_from_slice(&extra);
        if zip64_payload > 0 {
            le16(d, 0x0001);
            le16(d, zip64_payload);
            if size >= 0xffff_ffff {
                d.extend_from_slice(&size.to_le_bytes());
            }
            if compressed >= 0xffff_ffff {
                d.extend_from_slice(&compressed.to_le_bytes());
            }
            if offset >= 0xffff_ffff {
                d.extend_from_slice(&offset.to_le_bytes());
            }
        }
        self.entries += 1;
        Ok(())
    }

    /// The sink, for messages between entries.
    pub fn sink(&mut self) -> &mut W {
        &mut self.out
    }

    /// Central directory, zip64 records if needed, end record and comment.
    pub fn finish(mut self, commit: Option<ObjectId>) -> io::Result<W> {
        let clamped =
            self.entries > 0xffff || self.offset > 0xffff_ffff || self.dir.len() > 0xffff_ffff;
        self.out.write_all(&self.dir)?;
        let mut t = Vec::with_capacity(128);
        if clamped {
            le32(&mut t, 0x0606_4b50);
            t.extend_from_slice(&44u64.to_le_bytes());
            le16(&mut t, self.max_creator);
            le16(&mut t, 45);
            le32(&mut t, 0);
            le32(&mut t, 0);
            t.extend_from_slice(&self.entries.to_le_bytes());
            t.extend_from_slice(&self.entries.to_le_bytes());
            t.extend_from_slice(&(self.dir.len() as u64).to_le_bytes());
            t.extend_from_slice(&self.offset.to_le_bytes());
            le32(&mut t, 0x0706_4b50);
            le32(&mut t, 0);
            t.extend_from_slice(&(self.offset + self.dir.len() as u64).to_le_bytes());
            le32(&mut t, 1);
        }
        le32(&mut t, 0x0605_4b50);
        le16(&mut t, 0);
        le16(&mut t, 0);
        le16(&mut t, self.entries.min(0xffff) as u16);
        le16(&mut t, self.entries.min(0xffff) as u16);
        le32(&mut t, self.dir.len() as u32);
        le32(&mut t, clamp32(self.offset));
        let comment = commit.map(|id| id.to_hex().to_string());
        le16(&mut t, comment.as_ref().map_or(0, |c| c.len() as u16));
        if let Some(c) = comment {
            t.extend_from_slice(c.as_bytes());
        }
        self.out.write_all(&t)?;
        Ok(self.out)
    }

    fn extra_mtime(&self, out: &mut Vec<u8>) {
        le16(out, 0x5455);
        le16(out, 5);
        out.push(1);
        le32(out, self.mtime);
    }
}

fn le16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn le32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn clamp32(v: u64) -> u32 {
    v.min(0xffff_ffff) as u32
}

/// MS-DOS date and time of `t` in the server's local time zone, as git computes them
/// (`localtime_r`).
fn dos_time(t: i64) -> (u16, u16) {
    // SAFETY: localtime_r only writes the `tm` we pass; a zeroed tm is a valid value.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let time = t as libc::time_t;
        libc::localtime_r(&time, &mut tm);
        tm
    };
    let date = tm.tm_mday + (tm.tm_mon + 1) * 32 + (tm.tm_year + 1900 - 1980) * 512;
    let time = tm.tm_sec / 2 + tm.tm_min * 32 + tm.tm_hour * 2048;
    (date as u16, time as u16)
}
