//! Partial clone filters applied to what a pack bitmap selected, as git's
//! `pack-bitmap.c: filter_bitmap` applies them: by object kind, from the bitmap's
//! type bitmaps, and for `blob:limit` by the size each blob's pack entry states.
//!
//! Only filters that depend on nothing but an object's kind and size can be answered
//! this way (`blob:none`, `blob:limit`, `tree:0`, `object:type` and combinations of
//! them, see [`Filter::bitmap_able`]); the others need to know where in a tree an
//! object was met, and are walked. Without these, a `blob:none` clone of a large
//! history walked every tree of every commit, where git only masks a bitmap.
//!
//! As with the walk, objects the client named in a want (and the tags and objects a
//! wanted tag chain peels to) are sent whatever the filter says: git's "tips", which
//! a lazy fetch of missing blobs (`blob:none` with blob wants) depends on. git's
//! bitmap code walks the commits no bitmap covers under the filter, with the walk's
//! notion of which objects are "user given", so a wanted tree that is also the root
//! tree of such a commit (or a wanted object met inside another wanted tree first)
//! can be left out by git; gitd keeps it. Such requests (commits and trees they
//! reach wanted together) are rare, and one object more is harmless to a client.

use gix::ObjectId;
use gix::hashtable::HashMap;
use gix::object::Kind;
use gix::odb::pack::data;

use super::bitmap::{Bitmap, Bits};
use super::filter::Filter;
use super::objects::peel_tag_chain;
use super::packs::Pack;
use super::reach::Closure;
use crate::Result;

/// Bytes read from the start of a pack entry to learn its object's size: the entry
/// header and, for a delta, enough deflated data for the sizes it starts with.
const HEAD: usize = 256;

/// Leave out of `send` (objects of `pack`, whose bitmap is `bitmap`, and objects
/// elsewhere) what `filter` leaves out, except the objects `wants` name.
pub fn apply(
    repo: &gix::Repository,
    pack: &Pack,
    bitmap: &Bitmap,
    filter: &Filter,
    wants: &[ObjectId],
    send: &mut Closure,
) -> Result<()> {
    let mut tips = Vec::new();
    for want in wants {
        let (peeled, _) = peel_tag_chain(repo, *want, &mut tips)?;
        tips.push(peeled);
    }
    // git never filters out its tips: put back those that were selected.
    let tips: Vec<(ObjectId, Option<u32>)> = tips
        .into_iter()
        .map(|id| (id, pack.position(&id)))
        .filter(|(id, pos)| send.has(id, *pos))
        .collect();
    // Kinds and sizes of the objects outside the bitmapped pack, which the type
    // bitmaps know nothing of (usually a few recent ones).
    let mut others = HashMap::default();
    for id in &send.ext {
        let header = repo.find_header(*id)?;
        others.insert(*id, (header.kind(), header.size()));
    }
    let mut f = Filtering {
        pack,
        bitmap,
        others,
        masks: Default::default(),
        inflate: gix::zlib::Inflate::default(),
        buf: Vec::new(),
    };
    f.apply(filter, send)?;
    for (id, pos) in tips {
        send.add(&id, pos);
    }
    Ok(())
}

struct Filtering<'a> {
    pack: &'a Pack,
    bitmap: &'a Bitmap,
    others: HashMap<ObjectId, (Kind, u64)>,
    /// The type bitmaps decoded so far, by [`kind_index`].
    masks: [Option<Bits>; 4],
    inflate: gix::zlib::Inflate,
    buf: Vec<u8>,
}

fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Commit => 0,
        Kind::Tree => 1,
        Kind::Blob => 2,
        Kind::Tag => 3,
    }
}

impl Filtering<'_> {
    fn apply(&mut self, filter: &Filter, send: &mut Closure) -> Result<()> {
        match filter {
            Filter::BlobNone => self.drop_kind(Kind::Blob, send),
            Filter::BlobLimit(limit) => self.drop_large_blobs(*limit, send),
            Filter::TreeDepth(0) => {
                self.drop_kind(Kind::Tree, send)?;
                self.drop_kind(Kind::Blob, send)
            }
            Filter::ObjectType(keep) => {
                for kind in [Kind::Tag, Kind::Commit, Kind::Tree, Kind::Blob] {
                    if kind != *keep {
                        self.drop_kind(kind, send)?;
                    }
                }
                Ok(())
            }
            Filter::Combine(subs) => subs.iter().try_for_each(|sub| self.apply(sub, send)),
            Filter::TreeDepth(_) | Filter::SparseOid(_) => {
                Err("this filter cannot be applied to a bitmap".into())
            }
        }
    }

    fn mask(&mut self, kind: Kind) -> Result<&Bits> {
        let slot = &mut self.masks[kind_index(kind)];
        if slot.is_none() {
            *slot = Some(self.bitmap.of_kind(kind)?);
        }
        Ok(slot.as_ref().expect("just decoded"))
    }

    fn drop_kind(&mut self, kind: Kind, send: &mut Closure) -> Result<()> {
        send.bits.and_not(self.mask(kind)?);
        let others = &self.others;
        send.ext
            .retain(|id| others.get(id).is_none_or(|(k, _)| *k != kind));
        Ok(())
    }

    /// `blob:limit=<n>`: blobs of `limit` bytes or more are left out.
    fn drop_large_blobs(&mut self, limit: u64, send: &mut Closure) -> Result<()> {
        let mut blobs = send.bits.clone();
        blobs.and(self.mask(Kind::Blob)?);
        for pos in blobs.ones() {
            if self.size_at(pos)? >= limit {
                send.bits.unset(pos);
            }
        }
        let others = &self.others;
        send.ext.retain(|id| {
            others
                .get(id)
                .is_none_or(|(k, size)| *k != Kind::Blob || *size < limit)
        });
        Ok(())
    }

    fn size_at(&mut self, pos: u32) -> Result<u64> {
        object_size(self.pack, pos, &mut self.inflate, &mut self.buf)
    }
}

/// The size of the object at `pos` in `pack`: from the entry's header, or for a delta
/// from the result size at the start of its data (as git's `packed_object_info`
/// reads it), without resolving anything.
fn object_size(
    pack: &Pack,
    pos: u32,
    inflate: &mut gix::zlib::Inflate,
    buf: &mut Vec<u8>,
) -> Result<u64> {
    let (offset, len) = pack.entry_at(pos);
    buf.resize(len.min(HEAD), 0);
    pack.read_entry_into(offset, buf)?;
    let entry = data::Entry::from_bytes(buf, 0, gix::hash::Kind::Sha1)?;
    if !entry.header.is_delta() {
        return Ok(entry.decompressed_size);
    }
    let mut head = [0u8; 20];
    loop {
        inflate.reset();
        let deflated = buf.get(entry.data_offset as usize..).unwrap_or_default();
        let (_, _, written) = inflate.once(deflated, &mut head)?;
        // The base's size, then the result's.
        match delta_sizes(&head[..written]) {
            Some((_, size)) => return Ok(size),
            None if buf.len() < len => {
                buf.resize(len, 0);
                pack.read_entry_into(offset, buf)?;
            }
            None => return Err("corrupt delta header".into()),
        }
    }
}

/// The two sizes a delta starts with (base, result), little-endian base-128; `None`
/// if `head` ends before both.
fn delta_sizes(head: &[u8]) -> Option<(u64, u64)> {
    let mut bytes = head.iter();
    let mut size = || {
        let (mut n, mut shift) = (0u64, 0);
        loop {
            let b = *bytes.next()?;
            n |= u64::from(b & 0x7f).checked_shl(shift)?;
            shift += 7;
            if b & 0x80 == 0 {
                return Some(n);
            }
        }
    };
    Some((size()?, size()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::packs::Packs;

    /// Every object's size, deltas included, is the size git records for it.
    #[test]
    fn object_sizes_of_whole_objects_and_deltas() {
        let dir = crate::pack::test_repo(
            "sizes",
            r#"
            for i in $(seq 1 40); do
                seq 1 $((i * 40)) > a.txt; seq $i 300 > b.txt
                git add -A && git commit -q -m "c$i"
            done
            git repack -adfq --depth=50 --window=50
        "#,
        );
        let repo = gix::open(dir.join("w")).unwrap();
        let packs = Packs::open(repo.objects.store_ref().path());
        let pack = &packs.packs[0];
        let (mut inflate, mut buf, mut deltas) = (gix::zlib::Inflate::default(), Vec::new(), 0);
        for pos in 0..pack.num_objects() {
            let id = pack.index.oid_at_index(pack.index_at(pos));
            let (offset, len) = pack.entry_at(pos);
            let raw = pack.read_entry(offset, len).unwrap();
            let entry = data::Entry::from_bytes(&raw, 0, gix::hash::Kind::Sha1).unwrap();
            deltas += usize::from(entry.header.is_delta() && offset > HEAD as u64);
            let size = object_size(pack, pos, &mut inflate, &mut buf).unwrap();
            assert_eq!(size, repo.find_header(id).unwrap().size(), "{id}");
        }
        assert!(deltas > 40, "deltas past the first bytes: {deltas}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn delta_sizes_are_two_varints() {
        assert_eq!(delta_sizes(&[0x05, 0x07]), Some((5, 7)));
        assert_eq!(delta_sizes(&[0x80 | 0x10, 0x01, 0x03]), Some((0x90, 3)));
        assert_eq!(delta_sizes(&[0x80 | 0x10, 0x01]), None);
        assert_eq!(delta_sizes(&[0x05, 0x80]), None);
    }
}
