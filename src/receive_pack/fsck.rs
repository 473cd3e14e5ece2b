//! Checks of pushed commits, trees and tags, in git's words.
//!
//! Two levels, as in git. Parsing ([`parse`]) is what every reader of an object
//! needs: git's `parse_commit_buffer` and tree-walk decoding. An object that fails
//! it cannot be walked, so the connectivity check reports the push as `missing
//! necessary objects`, with the message git's `rev-list` prints. With
//! `receive.fsckObjects` (or `transfer.fsckObjects`) every pushed object is also
//! checked as `index-pack --strict` does ([`fsck`]): git's `fsck_commit`,
//! `fsck_tree` and `fsck_tag` rules that are errors by default; warnings are
//! reported but do not refuse the push. Blobs are never read (`.gitmodules` checks
//! are not done).

use gix::ObjectId;
use gix::objs::Kind;

/// The SHA-1 length in hex and in bytes.
const HEX: usize = 40;
const RAW: usize = 20;

/// Why an object cannot be parsed: the lines git prints (`error: …`), the last one
/// as its fatal message.
pub fn parse(id: &ObjectId, kind: Kind, data: &[u8]) -> Result<(), String> {
    match kind {
        Kind::Commit => parse_commit(id, data),
        Kind::Tree => parse_tree(data).map_err(str::to_string),
        Kind::Tag | Kind::Blob => Ok(()),
    }
}

/// git's `parse_commit_buffer`: a `tree` line, then well-formed `parent` lines.
fn parse_commit(id: &ObjectId, data: &[u8]) -> Result<(), String> {
    let tree_line = 5 + HEX;
    if data.len() <= tree_line + 1 || !data.starts_with(b"tree ") || data[tree_line] != b'\n' {
        return Err(format!("bogus commit object {id}"));
    }
    if !is_hex(&data[5..tree_line]) {
        return Err(format!("bad tree pointer in commit {id}"));
    }
    let mut rest = &data[tree_line + 1..];
    let parent_line = 7 + HEX;
    while rest.len() > parent_line && rest.starts_with(b"parent ") {
        if rest.len() <= parent_line + 1
            || !is_hex(&rest[7..parent_line])
            || rest[parent_line] != b'\n'
        {
            return Err(format!("bad parents in commit {id}"));
        }
        rest = &rest[parent_line + 1..];
    }
    Ok(())
}

fn is_hex(s: &[u8]) -> bool {
    s.iter()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// One decoded tree entry.
struct Entry<'a> {
    mode: u32,
    /// The mode as written (for zero padding).
    raw_mode: &'a [u8],
    name: &'a [u8],
    oid: &'a [u8],
}

/// git's `decode_tree_entry` over the whole tree: the entries, or git's message.
fn entries(mut data: &[u8]) -> Result<Vec<Entry<'_>>, &'static str> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < RAW + 3 || data[data.len() - (RAW + 1)] != 0 {
            return Err("too-short tree object");
        }
        let space = data
            .iter()
            .position(|&c| c == b' ')
            .ok_or("malformed mode in tree entry")?;
        let raw_mode = &data[..space];
        if raw_mode.iter().any(|c| !(b'0'..=b'7').contains(c)) {
            return Err("malformed mode in tree entry");
        }
        let mode = raw_mode
            .iter()
            .fold(0u32, |m, c| (m << 3).wrapping_add(u32::from(c - b'0')));
        let after = &data[space + 1..];
        let nul = after.iter().position(|&c| c == 0).expect("checked above");
        if nul == 0 {
            return Err("empty filename in tree entry");
        }
        let len = space + 1 + nul + 1 + RAW;
        if data.len() < len {
            return Err("too-short tree file");
        }
        out.push(Entry {
            mode,
            raw_mode,
            name: &after[..nul],
            oid: &after[nul + 1..nul + 1 + RAW],
        });
        data = &data[len..];
    }
    Ok(out)
}

fn parse_tree(data: &[u8]) -> Result<(), &'static str> {
    entries(data).map(drop)
}

/// What `fsck` found in one object: git's `error:`/`warning:` lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// git's fsck rules for one object that parsed.
pub fn fsck(id: &ObjectId, kind: Kind, data: &[u8]) -> Report {
    let mut report = Report::default();
    let mut error = |msg_id: &str, text: &str| {
        report.errors.push(format!("object {id}: {msg_id}: {text}"));
    };
    match kind {
        Kind::Commit => {
            if let Err((msg_id, text)) = fsck_commit(data) {
                error(msg_id, &text);
            }
        }
        Kind::Tag => {
            if let Err((msg_id, text)) = fsck_tag(data) {
                error(msg_id, &text);
            }
        }
        Kind::Tree => fsck_tree(id, data, &mut report),
        Kind::Blob => {}
    }
    report
}

type Failure = (&'static str, String);

fn fail<T>(msg_id: &'static str, text: &str) -> Result<T, Failure> {
    Err((msg_id, text.to_string()))
}

/// git's `verify_headers`: no NUL in the header, which ends with a newline.
fn verify_headers(data: &[u8]) -> Result<(), Failure> {
    for (i, &c) in data.iter().enumerate() {
        match c {
            0 => {
                return fail(
                    "nulInHeader",
                    &format!("unterminated header: NUL at offset {i}"),
                );
            }
            b'\n' if data.get(i + 1) == Some(&b'\n') => return Ok(()),
            _ => {}
        }
    }
    if data.last() == Some(&b'\n') {
        return Ok(());
    }
    fail("unterminatedHeader", "unterminated header")
}

/// `<prefix><hex>\n` at the start of `data`: the rest, or `None`.
fn oid_line<'a>(data: &'a [u8], prefix: &[u8]) -> Option<Option<&'a [u8]>> {
    let rest = data.strip_prefix(prefix)?;
    let ok = rest.len() > HEX && is_hex(&rest[..HEX]) && rest[HEX] == b'\n';
    Some(ok.then(|| &rest[HEX + 1..]))
}

fn fsck_commit(data: &[u8]) -> Result<(), Failure> {
    verify_headers(data)?;
    let Some(tree) = oid_line(data, b"tree ") else {
        return fail("missingTree", "invalid format - expected 'tree' line");
    };
    let Some(mut rest) = tree else {
        return fail("badTreeSha1", "invalid 'tree' line format - bad sha1");
    };
    while let Some(parent) = oid_line(rest, b"parent ") {
        let Some(after) = parent else {
            return fail("badParentSha1", "invalid 'parent' line format - bad sha1");
        };
        rest = after;
    }
    let mut authors = 0;
    while let Some(after) = rest.strip_prefix(b"author ") {
        authors += 1;
        rest = ident(after)?;
    }
    match authors {
        0 => return fail("missingAuthor", "invalid format - expected 'author' line"),
        1 => {}
        _ => {
            return fail(
                "multipleAuthors",
                "invalid format - multiple 'author' lines",
            );
        }
    }
    let Some(after) = rest.strip_prefix(b"committer ") else {
        return fail(
            "missingCommitter",
            "invalid format - expected 'committer' line",
        );
    };
    ident(after)?;
    Ok(())
}

fn fsck_tag(data: &[u8]) -> Result<(), Failure> {
    verify_headers(data)?;
    let Some(object) = oid_line(data, b"object ") else {
        return fail("missingObject", "invalid format - expected 'object' line");
    };
    let Some(rest) = object else {
        return fail("badObjectSha1", "invalid 'object' line format - bad sha1");
    };
    let Some(rest) = rest.strip_prefix(b"type ") else {
        return fail("missingTypeEntry", "invalid format - expected 'type' line");
    };
    let Some(eol) = rest.iter().position(|&c| c == b'\n') else {
        return fail(
            "missingType",
            "invalid format - unexpected end after 'type' line",
        );
    };
    if Kind::from_bytes(&rest[..eol]).is_err() {
        return fail("badType", "invalid 'type' value");
    }
    let rest = &rest[eol + 1..];
    let Some(rest) = rest.strip_prefix(b"tag ") else {
        return fail("missingTagEntry", "invalid format - expected 'tag' line");
    };
    let Some(eol) = rest.iter().position(|&c| c == b'\n') else {
        return fail(
            "missingTag",
            "invalid format - unexpected end after 'type' line",
        );
    };
    let rest = &rest[eol + 1..];
    // Old tags have no tagger (git reports that as missingTaggerEntry, info only).
    if let Some(after) = rest.strip_prefix(b"tagger ") {
        ident(after)?;
    }
    Ok(())
}

/// git's `fsck_ident`: `Name <email> <date> <tz>\n`; the rest after the line.
fn ident(line: &[u8]) -> Result<&[u8], Failure> {
    let end = line.iter().position(|&c| c == b'\n');
    let rest = end.map_or(&line[line.len()..], |e| &line[e + 1..]);
    // git reads up to a NUL that ends the buffer: treat the end as one.
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let bad = |msg_id, what: &str| fail(msg_id, &format!("invalid author/committer line - {what}"));
    if at(0) == b'<' {
        return bad("missingNameBeforeEmail", "missing space before email");
    }
    let stop = |from: usize| {
        (from..=line.len())
            .find(|&i| matches!(at(i), b'<' | b'>' | b'\n' | 0))
            .unwrap_or(line.len())
    };
    let mut p = stop(0);
    if at(p) == b'>' {
        return bad("badName", "bad name");
    }
    if at(p) != b'<' {
        return bad("missingEmail", "missing email");
    }
    if at(p - 1) != b' ' {
        return bad("missingSpaceBeforeEmail", "missing space before email");
    }
    p = stop(p + 1);
    if at(p) != b'>' {
        return bad("badEmail", "bad email");
    }
    p += 1;
    if at(p) != b' ' {
        return bad("missingSpaceBeforeDate", "missing space before date");
    }
    p += 1;
    if at(p) == b'0' && at(p + 1) != b' ' {
        return bad("zeroPaddedDate", "zero-padded date");
    }
    let digits = (p..).take_while(|&i| at(i).is_ascii_digit()).count();
    let date = std::str::from_utf8(&line[p..p + digits]).unwrap_or("");
    if digits > 0 && date.parse::<i64>().is_err() {
        return bad("badDateOverflow", "date causes integer overflow");
    }
    if digits == 0 || at(p + digits) != b' ' {
        return bad("badDate", "bad date");
    }
    p += digits + 1;
    if !matches!(at(p), b'+' | b'-')
        || !(1..5).all(|i| at(p + i).is_ascii_digit())
        || at(p + 5) != b'\n'
    {
        return bad("badTimezone", "bad time zone");
    }
    Ok(rest)
}

/// git's `fsck_tree`: errors for unsorted and duplicate entries, warnings for
/// suspicious names and modes.
fn fsck_tree(id: &ObjectId, data: &[u8], report: &mut Report) {
    let entries = match entries(data) {
        Ok(e) => e,
        Err(why) => {
            report.errors.push(why.to_string());
            report
                .errors
                .push(format!("object {id}: badTree: cannot be parsed as a tree"));
            return;
        }
    };
    let mut flags = [false; 9];
    let (null, full, empty, dot, dotdot, dotgit, zero, dups, unsorted) =
        (0, 1, 2, 3, 4, 5, 6, 7, 8);
    for (i, e) in entries.iter().enumerate() {
        flags[null] |= e.oid.iter().all(|&b| b == 0);
        flags[full] |= e.name.contains(&b'/');
        flags[empty] |= e.name.is_empty();
        flags[dot] |= e.name == b".";
        flags[dotdot] |= e.name == b"..";
        flags[dotgit] |= e.name.eq_ignore_ascii_case(b".git");
        flags[zero] |= e.raw_mode.first() == Some(&b'0');
        if i > 0 {
            match order(&entries[i - 1], e) {
                Order::Sorted => {}
                Order::Unsorted => flags[unsorted] = true,
                Order::Duplicate => flags[dups] = true,
            }
        }
    }
    let texts = [
        ("nullSha1", "contains entries pointing to null sha1"),
        ("fullPathname", "contains full pathnames"),
        ("emptyName", "contains empty pathname"),
        ("hasDot", "contains '.'"),
        ("hasDotdot", "contains '..'"),
        ("hasDotgit", "contains '.git'"),
        ("zeroPaddedFilemode", "contains zero-padded file modes"),
        ("duplicateEntries", "contains duplicate file entries"),
        ("treeNotSorted", "not properly sorted"),
    ];
    for (i, (msg_id, text)) in texts.iter().enumerate() {
        if flags[i] {
            let line = format!("object {id}: {msg_id}: {text}");
            if i >= dups {
                report.errors.push(line);
            } else {
                report.warnings.push(line);
            }
        }
    }
}

enum Order {
    Sorted,
    Unsorted,
    Duplicate,
}

/// git's `verify_ordered`: names compare as if directories ended in `/`.
fn order(a: &Entry<'_>, b: &Entry<'_>) -> Order {
    let len = a.name.len().min(b.name.len());
    match a.name[..len].cmp(&b.name[..len]) {
        std::cmp::Ordering::Less => return Order::Sorted,
        std::cmp::Ordering::Greater => return Order::Unsorted,
        std::cmp::Ordering::Equal => {}
    }
    let is_dir = |e: &Entry<'_>| e.mode & 0o170000 == 0o040000;
    let mut c1 = a.name.get(len).copied().unwrap_or(0);
    let mut c2 = b.name.get(len).copied().unwrap_or(0);
    if c1 == 0 && c2 == 0 {
        return Order::Duplicate;
    }
    if c1 == 0 && is_dir(a) {
        c1 = b'/';
    }
    if c2 == 0 && is_dir(b) {
        c2 = b'/';
    }
    if c1 < c2 {
        Order::Sorted
    } else {
        Order::Unsorted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_are_gits() {
        let id = ObjectId::null(gix::hash::Kind::Sha1);
        assert_eq!(
            parse(&id, Kind::Commit, b"garbage\n"),
            Err(format!("bogus commit object {id}"))
        );
        let tree = format!("tree {}\n", "a".repeat(40));
        assert_eq!(
            parse(&id, Kind::Commit, format!("{tree}author x").as_bytes()),
            Ok(())
        );
        let bad_parent = format!("{tree}parent {}\n", "z".repeat(40));
        assert_eq!(
            parse(&id, Kind::Commit, bad_parent.as_bytes()),
            Err(format!("bad parents in commit {id}"))
        );
        let mut entry = b"100644 f\0".to_vec();
        entry.extend_from_slice(&[1; 20]);
        assert_eq!(parse(&id, Kind::Tree, &entry), Ok(()));
        entry[0] = b'9';
        assert_eq!(
            parse(&id, Kind::Tree, &entry),
            Err("malformed mode in tree entry".into())
        );
        assert_eq!(
            parse(&id, Kind::Tree, b"100644 f\0abc"),
            Err("too-short tree object".into())
        );
    }

    #[test]
    fn fsck_reports_gits_message_ids() {
        let id = ObjectId::null(gix::hash::Kind::Sha1);
        let tree = format!("tree {}\n", "a".repeat(40));
        let good = format!("{tree}author A U <a@b> 1 +0000\ncommitter A U <a@b> 1 +0000\n\nmsg\n");
        assert_eq!(fsck(&id, Kind::Commit, good.as_bytes()), Report::default());
        let no_author = format!("{tree}committer A U <a@b> 1 +0000\n\nmsg\n");
        assert_eq!(
            fsck(&id, Kind::Commit, no_author.as_bytes()).errors,
            [format!(
                "object {id}: missingAuthor: invalid format - expected 'author' line"
            )]
        );
        let bad_tz = good.replace("1 +0000\ncommitter", "1 0000\ncommitter");
        assert!(fsck(&id, Kind::Commit, bad_tz.as_bytes()).errors[0].ends_with("bad time zone"));
        let mut unsorted = b"100644 b\0".to_vec();
        unsorted.extend_from_slice(&[1; 20]);
        unsorted.extend_from_slice(b"100644 a\0");
        unsorted.extend_from_slice(&[1; 20]);
        assert_eq!(
            fsck(&id, Kind::Tree, &unsorted).errors,
            [format!("object {id}: treeNotSorted: not properly sorted")]
        );
    }
}
