//! `working-tree-encoding` for UTF-16 and UTF-32, as git writes them through iconv.
//!
//! gix encodes with encoding_rs, which follows the WHATWG encoding standard: it knows
//! the UTF-16 labels but encodes them as UTF-8, and does not know UTF-32 or git's
//! `UTF-16LE-BOM`. These are the encodings `working-tree-encoding` is mostly used
//! for, and they are simple, so they are done here; other encodings are left to gix.

/// A UTF-16 or UTF-32 target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf {
    /// 2 or 4 bytes per unit.
    width: u8,
    big_endian: bool,
    bom: bool,
}

impl Utf {
    /// The UTF-16/32 encoding `label` names, as iconv and git's `same_utf_encoding`
    /// read it (any case, `UTF16` or `UTF-16`). Plain `UTF-16` and `UTF-32` are
    /// glibc's: a byte order mark, then the machine's byte order.
    pub fn from_label(label: &[u8]) -> Option<Utf> {
        let label = label.to_ascii_uppercase();
        let rest = label.strip_prefix(b"UTF")?;
        let rest = rest.strip_prefix(b"-").unwrap_or(rest);
        let native_big = cfg!(target_endian = "big");
        let (width, big_endian, bom) = match rest {
            b"16" => (2, native_big, true),
            b"16LE" => (2, false, false),
            b"16BE" => (2, true, false),
            b"16LE-BOM" => (2, false, true),
            b"16BE-BOM" => (2, true, true),
            b"32" => (4, native_big, true),
            b"32LE" => (4, false, false),
            b"32BE" => (4, true, false),
            _ => return None,
        };
        Some(Utf {
            width,
            big_endian,
            bom,
        })
    }

    /// `utf8` in this encoding; `None` if it is not UTF-8 (git then reports the
    /// failure and writes the content unchanged).
    pub fn encode(self, utf8: &[u8]) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(utf8).ok()?;
        let mut out = Vec::with_capacity(utf8.len() * usize::from(self.width) + 4);
        let mut unit = |u: u32| {
            let bytes = u.to_be_bytes();
            let bytes = if self.width == 2 {
                [bytes[2], bytes[3]].to_vec()
            } else {
                bytes.to_vec()
            };
            if self.big_endian {
                out.extend(bytes);
            } else {
                out.extend(bytes.into_iter().rev());
            }
        };
        if self.bom {
            unit(0xfeff);
        }
        if self.width == 2 {
            text.encode_utf16().for_each(|u| unit(u32::from(u)));
        } else {
            text.chars().for_each(|c| unit(u32::from(c)));
        }
        Some(out)
    }
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    fn hex(label: &str, text: &str) -> String {
        let utf = Utf::from_label(label.as_bytes()).expect(label);
        utf.encode(text.as_bytes())
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// What git 2.47 with glibc's iconv writes for "é😀".
    #[test]
    fn as_git_and_glibc_write_it() {
        let s = "é😀";
        assert_eq!(hex("UTF-16", s), "fffee9003dd800de");
        assert_eq!(hex("utf16le", s), "e9003dd800de");
        assert_eq!(hex("UTF-16BE", s), "00e9d83dde00");
        assert_eq!(hex("UTF-16LE-BOM", s), "fffee9003dd800de");
        assert_eq!(hex("UTF-16BE-BOM", s), "feff00e9d83dde00");
        assert_eq!(hex("UTF-32", s), "fffe0000e900000000f60100");
        assert_eq!(hex("UTF-32LE", s), "e900000000f60100");
        assert_eq!(hex("UTF-32BE", s), "000000e90001f600");
        assert_eq!(Utf::from_label(b"ISO-8859-1"), None);
        assert_eq!(Utf::from_label(b"UTF-8"), None);
        assert_eq!(Utf::from_label(b"UTF-16").unwrap().encode(b"\xff"), None);
    }
}
