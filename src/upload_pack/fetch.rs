//! The part of a fetch both protocol versions share: the arguments (`want`,
//! `shallow`, `deepen*`, `filter`, flags), checking the wants against what may be
//! served, and planning the pack.

use gix::ObjectId;
use gix::bstr::BString;
use gix::hashtable::HashSet;

use super::config::UploadPackConfig;
use super::not_our_ref;
use super::refs::AdvertisedRef;
use crate::pack::filter::Filter;
use crate::{ClientError, Result};

/// At most this many `want-ref` or `deepen-not` lines in one request: each holds a
/// name the request keeps until it resolves them all. git sets no limit; a client
/// sends one per ref it fetches by name, so this is far above use.
pub const MAX_NAMES: usize = 100_000;

/// New ids looked up in the object database at once, off the async thread.
pub const BATCH: usize = 4096;

/// The refusal for a request with more lines of one kind than gitd takes.
pub fn too_many(what: &str) -> crate::Error {
    ClientError::boxed(format!("too many {what} lines (at most {MAX_NAMES})"))
}

/// What the client asked for about history depth.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeepenRequest {
    /// `deepen <n>`.
    pub depth: Option<u32>,
    /// `deepen-since <timestamp>`.
    pub since: Option<u64>,
    /// `deepen-not <ref>` (repeatable).
    pub not: Vec<BString>,
    /// `deepen-relative`: depth counts from the client's current shallow boundary.
    pub relative: bool,
}

impl DeepenRequest {
    /// True if the client asked for a new shallow boundary.
    pub fn requested(&self) -> bool {
        self.depth.is_some() || self.since.is_some() || !self.not.is_empty()
    }
}

/// Everything one fetch asked for (v0: the want section; v2: the `fetch` arguments).
#[derive(Debug, Clone, Default)]
pub struct FetchArgs {
    pub wants: Vec<ObjectId>,
    /// v2 `want-ref <name>`.
    pub want_refs: Vec<BString>,
    /// v2 only: v0 sends haves in rounds after the want section. Only those we
    /// have (see [`Intake`]).
    pub haves: Vec<ObjectId>,
    /// v2: the client sent `have` lines, known to us or not (git's `seen_haves`:
    /// the response then starts with acknowledgments).
    pub seen_haves: bool,
    /// The client's current shallow commits.
    pub shallows: Vec<ObjectId>,
    pub deepen: DeepenRequest,
    pub filter: Option<Filter>,
    pub done: bool,
    pub wait_for_done: bool,
    pub thin_pack: bool,
    pub ofs_delta: bool,
    pub no_progress: bool,
    pub include_tag: bool,
    pub sideband_all: bool,
}

impl FetchArgs {
    /// Parse a line both versions spell the same (`shallow`, `deepen`,
    /// `deepen-since`, `deepen-not`, `filter`). False if the line is none of them.
    /// (`deepen-relative` is a line in v2 but a capability of the first want in v0.)
    pub fn parse_shared(&mut self, line: &[u8], cfg: &UploadPackConfig) -> Result<bool> {
        let invalid = |what: &str| ClientError::boxed(format!("{what}: {}", crate::escape(line)));
        if let Some(hex) = line.strip_prefix(b"shallow ") {
            let id = ObjectId::from_hex(hex).map_err(|_| invalid("invalid shallow line"))?;
            // Deduplicated and looked up in batches by [`Intake`].
            self.shallows.push(id);
        } else if let Some(n) = line.strip_prefix(b"deepen ") {
            // git: `(int)strtol(arg, &end, 0)`, refused unless positive.
            let n = c_strtol(n)
                .map(|(neg, n)| {
                    let n = i64::try_from(n).unwrap_or(i64::MAX);
                    if neg { n.saturating_neg() } else { n }
                })
                .map(|n| n as i32)
                .filter(|n| *n > 0);
            self.deepen.depth = Some(n.ok_or_else(|| invalid("Invalid deepen"))? as u32);
        } else if let Some(ts) = line.strip_prefix(b"deepen-since ") {
            // git: `strtoumax(arg, &end, 0)`, refused only when it is -1. Its check
            // for zero tests the pointer instead of the value, so 0 (and an empty
            // argument) is accepted and means "no age limit".
            let ts = c_strtol(ts)
                .map(|(neg, n)| if neg { n.wrapping_neg() } else { n })
                .filter(|t| *t != u64::MAX);
            self.deepen.since = Some(ts.ok_or_else(|| invalid("Invalid deepen-since"))?);
        } else if let Some(r) = line.strip_prefix(b"deepen-not ") {
            // Each name is resolved against every ref later: bounded here.
            if self.deepen.not.len() >= MAX_NAMES {
                return Err(too_many("deepen-not"));
            }
            self.deepen.not.push(r.into());
        } else if let Some(spec) = line.strip_prefix(b"filter ").filter(|_| cfg.allow_filter) {
            // Without `uploadpack.allowFilter` the line is not an argument at all (v2:
            // "unexpected line"); v0 refuses it earlier, as not negotiated.
            if self.filter.is_some() {
                return Err(ClientError::boxed(
                    "multiple filter-specs cannot be combined",
                ));
            }
            let filter = Filter::parse(spec)?;
            filter.check_allowed(cfg)?;
            self.filter = Some(filter);
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// `deepen` with `deepen-since`/`deepen-not` is refused, as git refuses it.
    pub fn check_deepen(&self) -> Result<()> {
        if self.deepen.depth.is_some()
            && (self.deepen.since.is_some() || !self.deepen.not.is_empty())
        {
            return Err(ClientError::boxed(
                "git upload-pack: deepen and deepen-since (or deepen-not) cannot be used together",
            ));
        }
        Ok(())
    }
}

/// Takes in a fetch's `want`, `have` and `shallow` ids as their lines arrive, so that
/// what a request holds is bounded by the repository, not by how many lines the
/// client sends: duplicates are dropped with sets (a scan per line would make n lines
/// cost n²), and every [`BATCH`] new ids are looked up off the async thread. A want we
/// do not have is refused then, as git refuses it at once; haves and shallow commits
/// we do not have are dropped (git ignores them too), never stored.
#[derive(Debug, Default)]
pub struct Intake {
    wants: HashSet<ObjectId>,
    haves: HashSet<ObjectId>,
    shallows: HashSet<ObjectId>,
    /// How many of `args.wants`, `args.haves`, `args.shallows` are already checked.
    checked: [usize; 3],
}

impl Intake {
    /// True when enough new ids wait in `args` to be worth a lookup.
    pub fn due(&self, args: &FetchArgs) -> bool {
        args.wants.len() - self.checked[0] >= BATCH
            || args.haves.len() - self.checked[1] >= BATCH
            || args.shallows.len() - self.checked[2] >= BATCH
    }

    /// Look up the ids added to `args` since the last call: refuse wants we do not
    /// have and shallow lines that name non-commits (git's "invalid shallow object"),
    /// drop unknown haves and shallows, and drop duplicates.
    pub async fn settle(
        &mut self,
        repo: &gix::ThreadSafeRepository,
        args: &mut FetchArgs,
    ) -> Result<()> {
        let new = [
            args.wants.split_off(self.checked[0]),
            args.haves.split_off(self.checked[1]),
            args.shallows.split_off(self.checked[2]),
        ];
        if new.iter().all(Vec::is_empty) {
            return Ok(());
        }
        let sets = std::mem::take(self);
        let (sets, [wants, haves, shallows]) = super::blocking(repo, move |r| {
            let quick = super::without_refresh(r);
            let mut sets = sets;
            let [wants, haves, shallows] = new;
            let mut kept = [Vec::new(), Vec::new(), Vec::new()];
            for id in wants {
                if sets.wants.contains(&id) {
                    continue;
                }
                if !r.has_object(id) {
                    return Err(not_our_ref(&id));
                }
                sets.wants.insert(id);
                kept[0].push(id);
            }
            for id in haves {
                if !sets.haves.contains(&id) && quick.has_object(id) {
                    sets.haves.insert(id);
                    kept[1].push(id);
                }
            }
            for id in shallows {
                if sets.shallows.contains(&id) {
                    continue;
                }
                match quick.try_find_header(id)? {
                    None => {}
                    Some(h) if h.kind() == gix::object::Kind::Commit => {
                        sets.shallows.insert(id);
                        kept[2].push(id);
                    }
                    Some(_) => {
                        return Err(ClientError::boxed(format!("invalid shallow object {id}")));
                    }
                }
            }
            Ok((sets, kept))
        })
        .await?;
        *self = sets;
        args.wants.extend(wants);
        args.haves.extend(haves);
        args.shallows.extend(shallows);
        self.checked = [args.wants.len(), args.haves.len(), args.shallows.len()];
        Ok(())
    }

    /// Add a want that needs no lookup (the target of a ref), unless already there.
    /// Only after [`Self::settle`]: every want in `args` is checked then.
    pub fn add_known_want(&mut self, args: &mut FetchArgs, id: ObjectId) {
        debug_assert_eq!(self.checked[0], args.wants.len(), "wants left unchecked");
        if self.wants.insert(id) {
            args.wants.push(id);
            self.checked[0] = args.wants.len();
        }
    }
}

/// v2: any object we have may be wanted, whatever the configuration (git's
/// `parse_want` only looks the object up).
pub fn check_wants_exist(repo: &gix::Repository, wants: &[ObjectId]) -> Result<()> {
    match wants.iter().find(|w| !repo.has_object(w)) {
        Some(missing) => Err(not_our_ref(missing)),
        None => Ok(()),
    }
}

/// v0/v1: check that every want may be served (git's `receive_needs`/`check_non_tip`):
/// advertised tips always; hidden tips with `allowTipSHA1InWant`; with
/// `allowReachableSHA1InWant`, commits reachable from a ref and any tree or blob (git
/// asks `rev-list`, which ignores those); anything with `allowAnySHA1InWant`.
/// `refs` are all refs, hidden ones included.
pub fn check_wants(
    repo: &gix::Repository,
    cfg: &UploadPackConfig,
    refs: &[AdvertisedRef],
    wants: &[ObjectId],
) -> Result<()> {
    check_wants_exist(repo, wants)?;
    if cfg.allow.any {
        return Ok(());
    }
    let mut ours: HashSet<ObjectId> = HashSet::default();
    let mut hidden: HashSet<ObjectId> = HashSet::default();
    for r in refs {
        if let Some(t) = r.target {
            if cfg.is_hidden(r.name.as_ref()) {
                hidden.insert(t);
            } else {
                ours.insert(t);
            }
        }
    }
    let allowed_tip = |w: &ObjectId| {
        ours.contains(w) || ((cfg.allow.tip || cfg.allow.reachable) && hidden.contains(w))
    };
    let non_tips: Vec<ObjectId> = wants.iter().copied().filter(|w| !allowed_tip(w)).collect();
    let Some(first) = non_tips.first() else {
        return Ok(());
    };
    if !cfg.allow.reachable {
        return Err(not_our_ref(first));
    }
    // Only commits (tags peeled) need to be reachable.
    let non_tips: Vec<(ObjectId, ObjectId)> = non_tips
        .iter()
        .filter_map(|w| {
            let obj = repo.find_object(*w).ok()?.peel_tags_to_end().ok()?;
            (obj.kind == gix::object::Kind::Commit).then_some((*w, obj.id))
        })
        .collect();
    // Reachable from some ref (hidden ones count): walk from all tips.
    let tips: Vec<ObjectId> = ours.iter().chain(hidden.iter()).copied().collect();
    let mut pending: HashSet<ObjectId> = non_tips.iter().map(|(_, c)| *c).collect();
    let mut seen: HashSet<ObjectId> = HashSet::default();
    let mut buf = Vec::new();
    let mut stack: Vec<ObjectId> = Vec::new();
    for tip in tips {
        if let Ok(obj) = repo.find_object(tip)
            && let Ok(c) = obj.peel_tags_to_end()
        {
            pending.remove(&tip);
            stack.push(c.id);
        }
    }
    while let Some(id) = stack.pop() {
        if pending.is_empty() {
            break;
        }
        if !seen.insert(id) {
            continue;
        }
        pending.remove(&id);
        let Ok(commit) = repo
            .objects
            .find_commit_iter(&id, &mut buf)
            .map(|c| c.parent_ids().collect::<Vec<_>>())
        else {
            continue;
        };
        stack.extend(commit);
    }
    match non_tips.iter().find(|(_, c)| pending.contains(c)) {
        Some((w, _)) => Err(not_our_ref(w)),
        None => Ok(()),
    }
}

use gix::objs::FindExt;

/// C's `strtoumax(s, &end, 0)` over a whole argument, as git parses numbers in the
/// protocol: optional leading white space and sign, then hex (`0x`), octal (`0`)
/// or decimal digits. Returns the sign and the magnitude (saturated at `u64::MAX`
/// as C does on overflow), or `None` if anything follows the number. With no digits
/// at all C consumes nothing, so only an empty argument passes (as zero).
fn c_strtol(s: &[u8]) -> Option<(bool, u64)> {
    let start = s.iter().position(|b| !b" \t\n\x0b\x0c\r".contains(b));
    let Some(mut i) = start else {
        return s.is_empty().then_some((false, 0));
    };
    let neg = s[i] == b'-';
    if s[i] == b'-' || s[i] == b'+' {
        i += 1;
    }
    let rest = &s[i..];
    let (radix, digits) = match rest {
        [b'0', b'x' | b'X', d, ..] if d.is_ascii_hexdigit() => (16, &rest[2..]),
        [b'0', ..] => (8, rest),
        _ => (10, rest),
    };
    let n = digits
        .iter()
        .take_while(|d| (**d as char).is_digit(radix))
        .count();
    if n == 0 {
        return s.is_empty().then_some((false, 0));
    }
    if n != digits.len() {
        return None;
    }
    let value = digits.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(u64::from(radix))?
            .checked_add(u64::from((*d as char).to_digit(radix)?))
    });
    Some((neg, value.unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_like_c() {
        assert_eq!(c_strtol(b"12"), Some((false, 12)));
        assert_eq!(c_strtol(b" +0x1f"), Some((false, 31)));
        assert_eq!(c_strtol(b"010"), Some((false, 8)));
        assert_eq!(c_strtol(b"-3"), Some((true, 3)));
        assert_eq!(c_strtol(b""), Some((false, 0)));
        assert_eq!(
            c_strtol(b"99999999999999999999999"),
            Some((false, u64::MAX))
        );
        for bad in [&b"1q"[..], b" ", b"0x", b"08", b"x"] {
            assert_eq!(c_strtol(bad), None, "{bad:?}");
        }
        let cfg = UploadPackConfig::default();
        let parse = |line: &str| {
            let mut a = FetchArgs::default();
            a.parse_shared(line.as_bytes(), &cfg).map(|_| a.deepen)
        };
        assert_eq!(parse("deepen 0x10").unwrap().depth, Some(16));
        assert!(parse("deepen 0").is_err());
        assert!(parse("deepen -1").is_err());
        assert!(parse("deepen 4294967296").is_err()); // (int) truncation gives 0
        assert_eq!(parse("deepen-since 0").unwrap().since, Some(0));
        assert_eq!(parse("deepen-since -2").unwrap().since, Some(u64::MAX - 1));
        assert!(parse("deepen-since -1").is_err());
        assert!(parse("deepen-since 12x").is_err());
    }
}
