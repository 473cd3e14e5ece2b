//! Creating deltas in git's format (`Documentation/gitformat-pack.txt`): the base's
//! size and the result's as little-endian base-128 numbers, then instructions that
//! either copy a range of the base (bit 7 set; bits 0-3 say which of four offset
//! bytes follow, bits 4-6 which of three size bytes, size 0 meaning 64 KiB) or insert
//! the 1 to 127 literal bytes that follow (the byte is their count).
//!
//! The matcher works like git's `diff-delta.c`, without copying it: the base is cut
//! into 16-byte blocks, each indexed by a rolling hash; the target is scanned a byte
//! at a time with the same hash over its next 16 bytes, and a hit is extended forward
//! as far as the bytes agree and backward into the literals not yet written. Lines
//! inserted or changed in a text file therefore cost their own bytes plus a few bytes
//! of copy instructions.
//!
//! Work is bounded: a hash bucket is sampled at no more than [`BUCKET_LIMIT`] entries
//! however repetitive the base, a match of [`GOOD_ENOUGH`] bytes ends the search at a
//! position, and encoding stops as soon as the delta grows past the caller's limit.
//! No crate on crates.io that this build can use writes git's format (gix reads
//! deltas but does not create them), hence this one.

/// Bytes hashed at a time, and the distance between indexed blocks of the base.
const WINDOW: usize = 16;
/// Entries of one hash bucket looked at per target position.
const BUCKET_LIMIT: usize = 64;
/// A match this long is taken without looking at further candidates.
const GOOD_ENOUGH: usize = 4096;
/// The longest copy one instruction can say with two size bytes (git writes no
/// longer ones, so every reader accepts them).
const MAX_COPY: usize = 0x10000;
/// The most literal bytes one insert instruction carries.
const MAX_INSERT: usize = 0x7f;
/// Matches shorter than this are checked against those starting a little later.
const LAZY: usize = 128;
/// Multiplier of the rolling hash.
const MULT: u32 = 0x0100_0193;

/// `MULT` to the power `WINDOW - 1`: the weight of the byte leaving the window.
const OUT_WEIGHT: u32 = {
    let mut w = 1u32;
    let mut i = 1;
    while i < WINDOW {
        w = w.wrapping_mul(MULT);
        i += 1;
    }
    w
};

fn hash(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0u32, |h, b| {
        h.wrapping_mul(MULT).wrapping_add(u32::from(*b) + 1)
    })
}

/// Move the hash of `window` one byte on: `out` leaves, `inb` enters.
fn roll(h: u32, out: u8, inb: u8) -> u32 {
    h.wrapping_sub((u32::from(out) + 1).wrapping_mul(OUT_WEIGHT))
        .wrapping_mul(MULT)
        .wrapping_add(u32::from(inb) + 1)
}

/// The blocks of a base, by hash: bucket `b` holds `entries[starts[b]..starts[b+1]]`,
/// each a block's hash and offset, in base order.
pub struct Index<'a> {
    base: &'a [u8],
    shift: u32,
    starts: Vec<u32>,
    entries: Vec<(u32, u32)>,
}

impl<'a> Index<'a> {
    /// Index `base`, which must be shorter than 4 GiB (offsets are 32-bit).
    pub fn new(base: &'a [u8]) -> Index<'a> {
        assert!(u32::try_from(base.len()).is_ok(), "delta base too large");
        let blocks = base.len() / WINDOW;
        let bits = (blocks.max(16).next_power_of_two().trailing_zeros()).min(24);
        let shift = 32 - bits;
        let mut starts = vec![0u32; (1 << bits) + 1];
        let hashes: Vec<u32> = (0..blocks)
            .map(|k| hash(&base[k * WINDOW..(k + 1) * WINDOW]))
            .collect();
        for h in &hashes {
            starts[bucket(*h, shift) + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        let mut fill = starts.clone();
        let mut entries = vec![(0u32, 0u32); blocks];
        for (k, h) in hashes.iter().enumerate() {
            let b = bucket(*h, shift);
            entries[fill[b] as usize] = (*h, (k * WINDOW) as u32);
            fill[b] += 1;
        }
        Index {
            base,
            shift,
            starts,
            entries,
        }
    }

    /// The longest match in the base for the start of `target`, whose first
    /// `WINDOW` bytes hash to `h`: (base offset, length).
    fn best_match(&self, h: u32, target: &[u8]) -> Option<(usize, usize)> {
        let b = bucket(h, self.shift);
        let bucket = &self.entries[self.starts[b] as usize..self.starts[b + 1] as usize];
        // A bucket of a repetitive base can hold thousands of blocks: look at an
        // even sample of them, which still spans the whole base.
        let step = bucket.len().div_ceil(BUCKET_LIMIT).max(1);
        let mut best: Option<(usize, usize)> = None;
        for (eh, offset) in bucket.iter().step_by(step) {
            if *eh != h {
                continue;
            }
            let offset = *offset as usize;
            let len = common_prefix(&self.base[offset..], target);
            if len >= WINDOW && best.is_none_or(|(_, l)| len > l) {
                best = Some((offset, len));
                if len >= GOOD_ENOUGH {
                    break;
                }
            }
        }
        best
    }
}

fn bucket(h: u32, shift: u32) -> usize {
    (h.wrapping_mul(0x9e37_79b1) >> shift) as usize
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    // Eight bytes at a time, then the rest.
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().expect("8 bytes"))
            ^ u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if x != 0 {
            return i + (x.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// A delta that makes `target` from `base`, or `None` if it would be longer than
/// `max` bytes (then encoding stops early).
pub fn encode(base: &[u8], target: &[u8], max: usize) -> Option<Vec<u8>> {
    encode_with(&Index::new(base), target, max)
}

/// [`encode`] with the base's index made once for several targets.
pub fn encode_with(index: &Index<'_>, target: &[u8], max: usize) -> Option<Vec<u8>> {
    let base = index.base;
    let mut out = Vec::with_capacity(max.min(target.len() / 2 + 64));
    write_size(&mut out, base.len());
    write_size(&mut out, target.len());
    // Literal bytes not yet written: target[lit..i].
    let (mut lit, mut i) = (0usize, 0usize);
    let mut h = (target.len() >= WINDOW).then(|| hash(&target[..WINDOW]));
    while i + WINDOW <= target.len() {
        let cur = h.expect("hashed while a window remains");
        let Some((mut offset, mut len)) = index.best_match(cur, &target[i..]) else {
            if i + WINDOW < target.len() {
                h = Some(roll(cur, target[i], target[i + WINDOW]));
            }
            i += 1;
            continue;
        };
        if len < LAZY {
            // A short match is often a chance likeness (text repeats itself) that
            // hides the real continuation of the base a few bytes on, which only
            // shows where a block of the base starts: look there before taking it.
            let (mut j, mut hj, mut reach) = (i, cur, i + len);
            let mut later = None;
            while j + WINDOW < target.len() && j + 1 < i + WINDOW {
                hj = roll(hj, target[j], target[j + WINDOW]);
                j += 1;
                if let Some((o, l)) = index.best_match(hj, &target[j..])
                    && j + l > reach + 8
                {
                    reach = j + l;
                    later = Some((j, o, l));
                }
            }
            if let Some((j, o, l)) = later {
                (i, offset, len) = (j, o, l);
            }
        }
        // Literals just before the match may match the base just before it too.
        while i > lit && offset > 0 && base[offset - 1] == target[i - 1] {
            offset -= 1;
            i -= 1;
            len += 1;
        }
        insert(&mut out, &target[lit..i]);
        copy(&mut out, offset, len);
        if out.len() > max {
            return None;
        }
        i += len;
        lit = i;
        if i + WINDOW <= target.len() {
            h = Some(hash(&target[i..i + WINDOW]));
        }
    }
    insert(&mut out, &target[lit..]);
    (out.len() <= max).then_some(out)
}

fn write_size(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn insert(out: &mut Vec<u8>, bytes: &[u8]) {
    for chunk in bytes.chunks(MAX_INSERT) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
}

fn copy(out: &mut Vec<u8>, mut offset: usize, mut len: usize) {
    while len > 0 {
        let n = len.min(MAX_COPY);
        let at = out.len();
        out.push(0x80);
        let mut cmd = 0x80u8;
        for k in 0..4 {
            let b = (offset >> (8 * k)) as u8;
            if b != 0 {
                cmd |= 1 << k;
                out.push(b);
            }
        }
        // 64 KiB is written as size 0: no size bytes at all.
        for k in 0..2 {
            let b = (n >> (8 * k)) as u8;
            if b != 0 {
                cmd |= 0x10 << k;
                out.push(b);
            }
        }
        out[at] = cmd;
        offset += n;
        len -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::read::apply_delta;

    /// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn text(lines: usize, seed: u64) -> Vec<u8> {
        (0..lines)
            .map(|k| format!("line {k}: {} lorem ipsum {}\n", seed * 31 + k as u64, k % 7))
            .collect::<String>()
            .into_bytes()
    }

    /// Encode without a size limit and check that applying gives `target` back, with
    /// our reader's decoder and with gix's.
    fn round_trip(base: &[u8], target: &[u8]) -> Vec<u8> {
        let delta = encode(base, target, usize::MAX).expect("no limit");
        assert_eq!(apply_delta(base, &delta).unwrap(), target);
        assert!(
            gix_apply(base, &delta) == target,
            "gix decodes it differently"
        );
        delta
    }

    /// Apply `delta` to `base` with gix's pack decoder: a pack of the base, whole,
    /// and the delta as an offset delta against it, written to a file and decoded.
    fn gix_apply(base: &[u8], delta: &[u8]) -> Vec<u8> {
        use gix_pack::data::entry::Header;
        use sha1::Digest;
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let deflate = |data: &[u8]| {
            let mut z = gix::zlib::stream::deflate::Write::new(Vec::new(), Default::default());
            std::io::Write::write_all(&mut z, data).unwrap();
            std::io::Write::flush(&mut z).unwrap();
            z.into_inner()
        };
        let mut pack = b"PACK\0\0\0\x02\0\0\0\x02".to_vec();
        Header::Blob.write_to(base.len() as u64, &mut pack).unwrap();
        pack.extend(deflate(base));
        let at = pack.len() as u64;
        let header = Header::OfsDelta {
            base_distance: at - 12,
        };
        header.write_to(delta.len() as u64, &mut pack).unwrap();
        pack.extend(deflate(delta));
        let trailer = sha1::Sha1::digest(&pack);
        pack.extend_from_slice(&trailer);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("gitd-delta-{}-{n}.pack", std::process::id()));
        std::fs::write(&path, &pack).unwrap();
        let file = gix_pack::data::File::at(&path, gix::hash::Kind::Sha1).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut out = Vec::new();
        file.decode_entry(
            file.entry(at).unwrap(),
            &mut out,
            &mut gix::zlib::Inflate::default(),
            &|_, _| Ok(None),
            &mut gix_pack::cache::Never,
        )
        .unwrap();
        out
    }

    #[test]
    fn empty_inputs() {
        assert_eq!(round_trip(b"", b""), [0, 0]);
        round_trip(b"", b"new content");
        round_trip(b"some base that is not used at all", b"");
    }

    #[test]
    fn identical_is_a_few_copies() {
        let data = text(10_000, 1);
        assert!(data.len() > 3 * MAX_COPY);
        let delta = round_trip(&data, &data);
        // Size header plus one copy per 64 KiB, each at most 7 bytes.
        assert!(
            delta.len() <= 8 + 7 * data.len().div_ceil(MAX_COPY),
            "{}",
            delta.len()
        );
    }

    #[test]
    fn small_edits_cost_their_own_bytes() {
        let base = text(300, 2);
        let mut target = base.clone();
        let at = target.len() / 3;
        target.splice(at..at, b"an inserted line\n".iter().copied());
        target.truncate(target.len() - 40);
        target.extend_from_slice(b"a new ending\n");
        let delta = round_trip(&base, &target);
        assert!(delta.len() < 60, "{} bytes: {delta:?}", delta.len());
    }

    #[test]
    fn totally_different_is_all_inserts() {
        let (base, target) = (noise(1, 5000), noise(2, 5000));
        let delta = round_trip(&base, &target);
        // One count byte per 127 literals, plus the sizes.
        assert!(delta.len() <= target.len() + target.len().div_ceil(MAX_INSERT) + 6);
        assert_eq!(encode(&base, &target, target.len() / 2), None);
    }

    #[test]
    fn large_insert_and_short_targets() {
        let base = text(100, 3);
        let mut target = base.clone();
        let noise = noise(3, 100_000);
        target.splice(1000..1000, noise.iter().copied());
        round_trip(&base, &target);
        for n in 0..WINDOW * 2 {
            round_trip(&base, &base[..n]);
            round_trip(&base[..n], &base[..n]);
        }
    }

    #[test]
    fn copies_past_64_kib_offsets_and_sizes() {
        // A 300 KiB base; the target takes a 150 KiB run from far into it, then a
        // piece from its start, with edits between.
        let base = noise(4, 300 * 1024);
        let mut target = b"head".to_vec();
        target.extend_from_slice(&base[140_000..290_000]);
        target.extend_from_slice(b"middle");
        target.extend_from_slice(&base[..70_000]);
        let delta = round_trip(&base, &target);
        assert!(delta.len() < 100, "{} bytes", delta.len());
        // Offsets of three and four bytes are written and read back.
        let mut big = vec![0u8; 0x0100_0010];
        big[0x0100_0000..].copy_from_slice(b"0123456789abcdef");
        let far = round_trip(&big, &big[0x00ff_fff0..]);
        assert!(far.len() < 32, "{} bytes", far.len());
    }

    #[test]
    fn repetitive_base_stays_bounded() {
        // Every block hashes alike: buckets are sampled, and the result is still right.
        let base = vec![b'a'; 1 << 20];
        let mut target = base.clone();
        target[500_000] = b'b';
        let delta = round_trip(&base, &target);
        assert!(delta.len() < 200, "{} bytes", delta.len());
    }

    #[test]
    fn limit_is_honoured() {
        let base = text(200, 5);
        let target = text(200, 6);
        let full = round_trip(&base, &target);
        assert_eq!(encode(&base, &target, full.len()), Some(full.clone()));
        assert_eq!(encode(&base, &target, full.len() - 1), None);
    }

    /// Random bases (text or noise, up to 150 KiB) with random edits: inserts,
    /// deletions, pieces moved or repeated from elsewhere in the base.
    #[test]
    fn random_inputs_round_trip_through_gix() {
        for seed in 0..120u64 {
            let r = noise(seed + 1000, 64);
            let len = match r[0] % 4 {
                0 => r[1] as usize,
                1 => 1000 + r[1] as usize * 40,
                2 => 20_000 + r[1] as usize * 200,
                _ => 100_000 + r[1] as usize * 200,
            };
            let base = if r[2] % 2 == 0 {
                let mut t = text(len / 40 + 1, seed);
                t.truncate(len);
                t
            } else {
                noise(seed, len)
            };
            let mut target = base.clone();
            for k in 0..(r[3] % 8) as usize {
                let (a, b) = (r[4 + 2 * k] as usize, r[5 + 2 * k] as usize);
                let at = a * target.len() / 256;
                let n = (b * 37) % 3000;
                match r[20 + k] % 4 {
                    0 => drop(target.splice(at..at, noise(seed * 8 + k as u64, n))),
                    1 => drop(target.drain(at..(at + n).min(target.len()))),
                    _ => {
                        let from = b * base.len() / 256;
                        let piece = base[from..(from + n).min(base.len())].to_vec();
                        drop(target.splice(at..at, piece));
                    }
                }
            }
            round_trip(&base, &target);
            // A limit makes the encoder give up, never write a wrong delta.
            let full = encode(&base, &target, usize::MAX).unwrap();
            let limit = full.len() / 2;
            if let Some(d) = encode(&base, &target, limit) {
                assert!(d.len() <= limit);
                assert_eq!(apply_delta(&base, &d).unwrap(), target);
            }
        }
    }

    #[test]
    fn random_edits_round_trip() {
        for seed in 0..200u64 {
            let base = text(50 + (seed as usize % 50), seed);
            let mut target = base.clone();
            let r = noise(seed, 8);
            for k in 0..4 {
                let at = r[k] as usize * target.len() / 256;
                let end = match r[k + 4] % 3 {
                    0 => at,
                    1 => (at + 30).min(target.len()),
                    _ => (at + 5).min(target.len()),
                };
                let new = if end == at {
                    noise(seed + k as u64, 20)
                } else {
                    b"XY".to_vec()
                };
                target.splice(at..end, new);
            }
            round_trip(&base, &target);
        }
    }
}
