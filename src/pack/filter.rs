//! Partial clone filter specs (`filter <spec>`): parsed the way git's
//! `list-objects-filter-options.c` parses them, and checked against the repository's
//! `uploadpackfilter.*` settings the way `upload-pack.c` checks them. Error texts are
//! git's, so a client sees the same message from gitd as from git.

use gix::bstr::BString;

use crate::upload_pack::config::UploadPackConfig;
use crate::{ClientError, Result};

/// A parsed filter spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `blob:none`
    BlobNone,
    /// `blob:limit=<n>[kmg]`: blobs of at least this many bytes are left out.
    BlobLimit(u64),
    /// `tree:<depth>`: trees and blobs at this depth below a root tree or deeper are
    /// left out (`tree:0` leaves out all trees and blobs).
    TreeDepth(u64),
    /// `sparse:oid=<blob-ish>`: parsed, but never allowed (see [`Filter::check_allowed`]).
    SparseOid(BString),
    /// `object:type=<type>`
    ObjectType(gix::object::Kind),
    /// `combine:<spec>+<spec>…`: only what every sub-filter keeps.
    Combine(Vec<Filter>),
}

/// At most this many sub-filters in one spec, nested ones included. git sets no
/// limit, but every sub-filter keeps its own "seen" set while walking (memory grows
/// with sub-filters × objects) and each level of `combine:` nesting is a level of
/// recursion in parsing and applying; a real client sends a handful (`--filter` given
/// twice makes one `combine:` of two), so 16 is far above use and far below harm.
pub const MAX_SUB_FILTERS: usize = 16;

/// Characters a sub-spec of `combine:` must percent-encode (git's `RESERVED_NON_WS`;
/// whitespace, control characters and non-ASCII bytes are reserved too).
const RESERVED: &[u8] = b"~`!@#$^&*()[]{}\\;'\",<>?";

impl Filter {
    /// Parse a filter spec as sent by the client (`gently_parse_list_objects_filter`).
    pub fn parse(spec: &[u8]) -> Result<Filter> {
        // git handles the spec as a C string.
        let spec = spec.split(|&b| b == 0).next().unwrap_or_default();
        parse_spec(spec, &mut 0).map_err(ClientError::boxed)
    }

    /// The name `uploadpackfilter.<name>.allow` uses (`list_object_filter_config_name`).
    pub fn config_name(&self) -> &'static str {
        match self {
            Filter::BlobNone => "blob:none",
            Filter::BlobLimit(_) => "blob:limit",
            Filter::TreeDepth(_) => "tree",
            Filter::SparseOid(_) => "sparse:oid",
            Filter::ObjectType(_) => "object:type",
            Filter::Combine(_) => "combine",
        }
    }

    /// Refuse filters the repository does not allow (`check_filter_recurse`: the
    /// filter itself, then each sub-filter of a `combine:` in order).
    ///
    /// `sparse:oid` is always refused as unsupported: matching its sparse-checkout
    /// patterns exactly as git does is not implemented, and sending a different set
    /// of objects than git would be worse than saying no.
    pub fn check_allowed(&self, cfg: &UploadPackConfig) -> Result<()> {
        let name = self.config_name();
        if !cfg.filter_allowed(name) || matches!(self, Filter::SparseOid(_)) {
            return Err(ClientError::boxed(format!("filter '{name}' not supported")));
        }
        if let (Filter::TreeDepth(depth), Some(max)) = (self, cfg.tree_filter_max_depth)
            && *depth > max
        {
            return Err(ClientError::boxed(format!(
                "tree filter allows max depth {max}, but got {depth}"
            )));
        }
        if let Filter::Combine(subs) = self {
            for sub in subs {
                sub.check_allowed(cfg)?;
            }
        }
        Ok(())
    }

    /// Whether the filter can be applied to what a pack bitmap selects, by object
    /// kind and size alone (git's `can_filter_bitmap`): `tree:<depth>` only at depth
    /// 0, where it does not depend on where in a tree an object is.
    pub fn bitmap_able(&self) -> bool {
        match self {
            Filter::BlobNone | Filter::BlobLimit(_) | Filter::ObjectType(_) => true,
            Filter::TreeDepth(depth) => *depth == 0,
            Filter::SparseOid(_) => false,
            Filter::Combine(subs) => subs.iter().all(Filter::bitmap_able),
        }
    }
}

/// `count` counts the sub-filters parsed so far, so that neither the number of
/// sub-filters nor the nesting depth (never more than that number) can exceed
/// [`MAX_SUB_FILTERS`].
fn parse_spec(arg: &[u8], count: &mut usize) -> std::result::Result<Filter, String> {
    if arg == b"blob:none" {
        return Ok(Filter::BlobNone);
    } else if let Some(v) = arg.strip_prefix(b"blob:limit=") {
        // A bad size falls through to the generic message, as in git.
        if let Some(n) = parse_ulong(v) {
            return Ok(Filter::BlobLimit(n));
        }
    } else if let Some(v) = arg.strip_prefix(b"tree:") {
        return parse_ulong(v)
            .map(Filter::TreeDepth)
            .ok_or_else(|| "expected 'tree:<depth>'".to_string());
    } else if let Some(v) = arg.strip_prefix(b"sparse:oid=") {
        return Ok(Filter::SparseOid(v.into()));
    } else if arg.starts_with(b"sparse:path=") {
        return Err("sparse:path filters support has been dropped".into());
    } else if let Some(v) = arg.strip_prefix(b"object:type=") {
        use gix::object::Kind;
        return match v {
            b"blob" => Ok(Filter::ObjectType(Kind::Blob)),
            b"tree" => Ok(Filter::ObjectType(Kind::Tree)),
            b"commit" => Ok(Filter::ObjectType(Kind::Commit)),
            b"tag" => Ok(Filter::ObjectType(Kind::Tag)),
            _ => Err(format!(
                "'{}' for 'object:type=<type>' is not a valid object type",
                crate::escape(v)
            )),
        };
    } else if let Some(v) = arg.strip_prefix(b"combine:") {
        return parse_combine(v, count);
    }
    Err(format!("invalid filter-spec '{}'", crate::escape(arg)))
}

/// `parse_combine_filter`: split at `+` (git's `strbuf_split_str`, which keeps the
/// separator on every piece but the last), then check and decode each sub-spec.
fn parse_combine(arg: &[u8], count: &mut usize) -> std::result::Result<Filter, String> {
    if arg.is_empty() {
        return Err("expected something after combine:".into());
    }
    let mut pieces: Vec<&[u8]> = arg.split_inclusive(|&b| b == b'+').collect();
    let last = pieces.len() - 1;
    for piece in &mut pieces[..last] {
        *piece = &piece[..piece.len() - 1];
    }
    let mut subs = Vec::with_capacity(pieces.len());
    for piece in pieces {
        *count += 1;
        if *count > MAX_SUB_FILTERS {
            return Err(format!(
                "filter-spec has too many sub-filters (more than {MAX_SUB_FILTERS})"
            ));
        }
        // git compares a (signed) `char`, so bytes past ASCII count as reserved too.
        if let Some(&c) = piece
            .iter()
            .find(|&&c| c <= b' ' || c >= 0x80 || RESERVED.contains(&c))
        {
            return Err(format!(
                "must escape char in sub-filter-spec: '{}'",
                crate::escape(&[c])
            ));
        }
        let decoded = percent_decode(piece);
        let decoded = decoded.split(|&b| b == 0).next().unwrap_or_default();
        subs.push(parse_spec(decoded, count)?);
    }
    Ok(Filter::Combine(subs))
}

/// `url_percent_decode`: `%XX` becomes the byte; anything else, including a `%` not
/// followed by two hex digits, is kept as it is (`+` stays `+`).
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// git's `git_parse_ulong`: `strtoumax` with base 0 (leading blanks, `+`, `0x` hex,
/// `0` octal), then an optional `k`, `m` or `g` unit (any case); no `-` anywhere, and
/// nothing that overflows.
pub fn parse_ulong(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.contains(&b'-') {
        return None;
    }
    let mut i = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
        .unwrap_or(v.len());
    if v.get(i) == Some(&b'+') {
        i += 1;
    }
    let rest = &v[i..];
    let (radix, digits) = if (rest.starts_with(b"0x") || rest.starts_with(b"0X"))
        && rest.get(2).is_some_and(u8::is_ascii_hexdigit)
    {
        (16, &rest[2..])
    } else if rest.starts_with(b"0") {
        (8, rest)
    } else {
        (10, rest)
    };
    let n = digits
        .iter()
        .take_while(|&&b| (b as char).is_digit(radix))
        .count();
    if n == 0 {
        return None;
    }
    let mut value: u64 = 0;
    for &b in &digits[..n] {
        let d = (b as char).to_digit(radix).expect("checked") as u64;
        value = value.checked_mul(radix as u64)?.checked_add(d)?;
    }
    let factor: u64 = match digits[n..].to_ascii_lowercase().as_slice() {
        b"" => 1,
        b"k" => 1 << 10,
        b"m" => 1 << 20,
        b"g" => 1 << 30,
        _ => return None,
    };
    value.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gix::object::Kind;

    fn err(spec: &str) -> String {
        Filter::parse(spec.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn specs() {
        let ok = |s: &str| Filter::parse(s.as_bytes()).unwrap();
        assert_eq!(ok("blob:none"), Filter::BlobNone);
        assert_eq!(ok("blob:limit=0"), Filter::BlobLimit(0));
        assert_eq!(ok("blob:limit=2k"), Filter::BlobLimit(2048));
        assert_eq!(ok("blob:limit=1M"), Filter::BlobLimit(1 << 20));
        assert_eq!(ok("blob:limit=0x10"), Filter::BlobLimit(16));
        assert_eq!(ok("blob:limit=010"), Filter::BlobLimit(8));
        assert_eq!(ok("tree:0"), Filter::TreeDepth(0));
        assert_eq!(ok("tree: +3"), Filter::TreeDepth(3));
        assert_eq!(ok("object:type=tag"), Filter::ObjectType(Kind::Tag));
        assert_eq!(ok("sparse:oid=main:s"), Filter::SparseOid("main:s".into()));
        assert_eq!(
            ok("combine:blob:none+tree:2"),
            Filter::Combine(vec![Filter::BlobNone, Filter::TreeDepth(2)])
        );
        assert_eq!(
            ok("combine:blob%3Alimit%3D1k+combine:tree:1%2Bblob:none"),
            Filter::Combine(vec![
                Filter::BlobLimit(1024),
                Filter::Combine(vec![Filter::TreeDepth(1), Filter::BlobNone])
            ])
        );
    }

    #[test]
    fn errors_use_gits_wording() {
        assert_eq!(err("blob:nonsense"), "invalid filter-spec 'blob:nonsense'");
        assert_eq!(err("blob:limit=1x"), "invalid filter-spec 'blob:limit=1x'");
        assert_eq!(err("blob:limit=-1"), "invalid filter-spec 'blob:limit=-1'");
        assert_eq!(err("blob:limit="), "invalid filter-spec 'blob:limit='");
        assert_eq!(
            err("blob:limit=99999999999999999999"),
            "invalid filter-spec 'blob:limit=99999999999999999999'"
        );
        assert_eq!(err("tree:x"), "expected 'tree:<depth>'");
        assert_eq!(err("tree:"), "expected 'tree:<depth>'");
        assert_eq!(
            err("object:type=Blob"),
            "'Blob' for 'object:type=<type>' is not a valid object type"
        );
        assert_eq!(
            err("sparse:path=x"),
            "sparse:path filters support has been dropped"
        );
        assert_eq!(err("combine:"), "expected something after combine:");
        assert_eq!(
            err("combine:blob:none+"),
            "invalid filter-spec 'blob:none+'"
        );
        assert_eq!(err("combine:blob:none++tree:1"), "invalid filter-spec ''");
        assert_eq!(err("combine:tree:1+x%41"), "invalid filter-spec 'xA'");
        assert_eq!(
            err("combine:blob:none+tree:1&"),
            "must escape char in sub-filter-spec: '&'"
        );
        assert_eq!(
            err("combine:tree:1\u{e9}"),
            "must escape char in sub-filter-spec: '\\xc3'"
        );
    }

    #[test]
    fn nesting_and_width_are_bounded() {
        let too_many = "filter-spec has too many sub-filters (more than 16)";
        // 8,000 levels, as a hostile client sends them: refused before any recursion
        // deeper than the limit.
        let deep = format!("{}blob:none", "combine:".repeat(8000));
        assert_eq!(err(&deep), too_many);
        let wide = format!("combine:{}", vec!["blob:none"; 17].join("+"));
        assert_eq!(err(&wide), too_many);
        // Within the limit both shapes parse.
        let ok = format!("combine:{}", vec!["blob:none"; 16].join("+"));
        assert!(Filter::parse(ok.as_bytes()).is_ok());
        let nested = format!("{}blob:none", "combine:".repeat(16));
        assert!(Filter::parse(nested.as_bytes()).is_ok());
    }

    #[test]
    fn bitmaps_answer_filters_by_kind_and_size_only() {
        let able = |spec: &str| Filter::parse(spec.as_bytes()).unwrap().bitmap_able();
        for spec in [
            "blob:none",
            "blob:limit=1k",
            "tree:0",
            "object:type=tag",
            "combine:blob:limit=1+object:type=blob+tree:0",
        ] {
            assert!(able(spec), "{spec}");
        }
        for spec in ["tree:1", "combine:blob:none+tree:2", "sparse:oid=main:x"] {
            assert!(!able(spec), "{spec}");
        }
    }

    #[test]
    fn allow_lists_and_max_depth() {
        let mut cfg = UploadPackConfig {
            filter_allow_default: true,
            ..Default::default()
        };
        let combined = Filter::parse(b"combine:blob:none+tree:5").unwrap();
        assert!(combined.check_allowed(&cfg).is_ok());
        cfg.tree_filter_max_depth = Some(3);
        assert_eq!(
            combined.check_allowed(&cfg).unwrap_err().to_string(),
            "tree filter allows max depth 3, but got 5"
        );
        cfg.filter_allow.push(("combine".into(), false));
        assert_eq!(
            combined.check_allowed(&cfg).unwrap_err().to_string(),
            "filter 'combine' not supported"
        );
        let sparse = Filter::parse(b"sparse:oid=main:x").unwrap();
        assert_eq!(
            sparse.check_allowed(&cfg).unwrap_err().to_string(),
            "filter 'sparse:oid' not supported"
        );
    }
}
