//! Choosing a pack's objects with a pack bitmap: what the wants reach, less what the
//! client's commits reach, mostly without walking history (git's
//! `pack-bitmap.c: prepare_bitmap_walk`).
//!
//! A commit with a bitmap contributes it whole. From a commit without one (a tip
//! newer than the bitmap, or one git did not select) the walk goes on through its
//! parents until it meets commits that have one or are already covered, and only
//! then walks the trees of the commits it passed, which by then stop at objects the
//! bitmaps already hold. Objects outside the bitmapped pack (loose, or in another
//! pack) are kept by id, as git's "extended index" does. Bitmaps describe full
//! closures, so an object found in a set has all it reaches there too: the walks stop
//! at anything already in the set they build, or in the client's set.
//!
//! Unlike the commit walk (`rev-list --objects wants --not haves`), the client's
//! side is its whole history, not only the trees at the boundary: objects that the
//! client has from further back are not sent again, as with git's bitmaps.

use std::rc::Rc;

use gix::ObjectId;
use gix::hashtable::HashSet;
use gix::object::Kind;
use gix::objs::commit::ref_iter::Token;
use gix::objs::{CommitRefIter, TreeRefIter};

use super::bitmap::{Bitmap, Bits};
use super::bitmap_filter;
use super::filter::Filter;
use super::objects::Selection;
use super::packs::{Pack, Packs};
use super::progress::Meter;
use super::read::Reader;
use super::write::Item;
use crate::Result;

/// Objects reached from some roots.
pub struct Closure {
    /// Those in the bitmapped pack.
    pub bits: Bits,
    /// Those elsewhere.
    pub ext: HashSet<ObjectId>,
}

impl Closure {
    fn new(len: u32) -> Closure {
        Closure {
            bits: Bits::new(len),
            ext: HashSet::default(),
        }
    }

    /// Whether `id`, at `pos` in the bitmapped pack if it is there, is in the set.
    pub fn has(&self, id: &gix::hash::oid, pos: Option<u32>) -> bool {
        match pos {
            Some(p) => self.bits.get(p),
            None => self.ext.contains(id),
        }
    }

    pub fn add(&mut self, id: &gix::hash::oid, pos: Option<u32>) {
        match pos {
            Some(p) => self.bits.set(p),
            None => {
                self.ext.insert(id.to_owned());
            }
        }
    }

    pub fn len(&self) -> usize {
        self.bits.count() as usize + self.ext.len()
    }
}

/// What a pack built from a bitmap holds.
pub struct Selected {
    /// The objects to send.
    pub send: Closure,
    /// Everything the client's commits reach (the possible thin-pack bases).
    pub client: Closure,
    pub client_has_objects: bool,
}

/// Whether a bitmap can answer `sel`: not for shallow fetches (the client's history
/// and ours end at grafts, which bitmaps know nothing of), nor for filters that
/// depend on where an object is in a tree.
pub fn applies(sel: &Selection) -> bool {
    sel.filter.as_ref().is_none_or(Filter::bitmap_able)
        && sel.grafts.is_empty()
        && sel.extra_edges.is_empty()
}

/// The objects for `sel`, with the bitmap of our pack number `n`, or without one by
/// walking everything (still a set of positions in that pack: a few bytes per
/// thousand objects where a set of ids would take tens of kilobytes, and no lookup
/// afterwards to put the objects in pack order). `meter` counts what the walks find.
pub fn select(
    repo: &gix::Repository,
    sel: &Selection,
    packs: &Packs,
    n: usize,
    bitmap: Option<Bitmap>,
    meter: &mut Meter,
) -> Result<Selected> {
    let pack = &packs.packs[n];
    let mut walk = Walk {
        repo,
        pack,
        pack_number: n,
        reader: Reader::new(packs),
        bitmap,
        meter,
        found: 0,
    };
    // A fetch with haves walks from them to the nearest bitmapped commits: through
    // the index's mapping (see `with_mapped_lookups`). A clone keeps to `pread`.
    let mut walks = || -> Result<_> {
        let client = walk.closure(&sel.common, None)?;
        let send = walk.closure(&sel.wants, Some(&client))?;
        Ok((client, send))
    };
    let (client, mut send) = if sel.common.is_empty() {
        walks()?
    } else {
        pack.with_mapped_lookups(walks)?
    };
    send.bits.and_not(&client.bits);
    if let Some(filter) = &sel.filter {
        // The type masks come from the bitmap: without one, `plan` walks instead.
        let bitmap = walk.bitmap.as_ref().ok_or("a filter needs a bitmap")?;
        bitmap_filter::apply(repo, pack, bitmap, filter, &sel.wants, &mut send)?;
    }

    // include-tag: annotated tags whose peeled object is sent, with every tag of
    // their chain, unless the client has them.
    let mut tags = Vec::new();
    for (tag, peeled) in &sel.include_tags {
        if send.has(peeled, pack.position(peeled)) {
            walk.tag_chain(*tag, &mut tags)?;
        }
    }
    for tag in tags {
        let pos = pack.position(&tag);
        if !client.has(&tag, pos) {
            send.add(&tag, pos);
        }
    }
    Ok(Selected {
        send,
        client,
        client_has_objects: !sel.common.is_empty(),
    })
}

struct Walk<'a> {
    repo: &'a gix::Repository,
    pack: &'a Pack,
    /// Our pack number of `pack`.
    pack_number: usize,
    /// Reads the commits and trees of our packs (others through gix).
    reader: Reader<'a>,
    bitmap: Option<Bitmap>,
    meter: &'a mut Meter,
    /// Objects the walks added one by one, for `meter`.
    found: usize,
}

impl Walk<'_> {
    /// Everything reachable from `roots` that `exclude` does not hold (an object in
    /// it is not walked: it and all it reaches are in `exclude`).
    fn closure(&mut self, roots: &[ObjectId], exclude: Option<&Closure>) -> Result<Closure> {
        let len = self
            .bitmap
            .as_ref()
            .map_or(self.pack.num_objects(), Bitmap::len);
        let mut c = Closure::new(len);
        let skip = |c: &Closure, id: &gix::hash::oid, pos| {
            c.has(id, pos) || exclude.is_some_and(|x| x.has(id, pos))
        };
        let (mut commits, mut trees) = (Vec::new(), Vec::new());
        for root in roots {
            self.peel_root(*root, &mut c, &skip, &mut commits, &mut trees)?;
        }
        // Roots with bitmaps first, so that walks from the others stop early.
        commits.sort_by_key(|id| self.bitmapped(id).is_some());
        // Once the set holds the whole pack, nothing in the pack needs walking: the
        // pack is closed under reachability. The common full clone of a repacked
        // repository ends here, however far some tips are from a bitmapped commit.
        let mut full = false;
        let skip = |c: &Closure, id: &gix::hash::oid, pos: Option<u32>, full: bool| {
            (full && pos.is_some()) || skip(c, id, pos)
        };
        while let Some(id) = commits.pop() {
            let pos = self.pack.position(&id);
            if skip(&c, &id, pos, full) {
                continue;
            }
            if let Some((n, bitmap)) = self.bitmapped(&id) {
                c.bits.or(&*bitmap.reachable(n)?);
                full = c.bits.count() == len;
                continue;
            }
            self.add(&mut c, &id, pos);
            let data = self.object(&id, pos, Kind::Commit)?;
            for token in CommitRefIter::from_bytes(&data, gix::hash::Kind::Sha1) {
                match token? {
                    Token::Tree { id } => trees.push(id),
                    Token::Parent { id } => commits.push(id),
                    _ => break,
                }
            }
        }
        while let Some(id) = trees.pop() {
            let pos = self.pack.position(&id);
            if skip(&c, &id, pos, full) {
                continue;
            }
            self.add(&mut c, &id, pos);
            let data = self.object(&id, pos, Kind::Tree)?;
            for entry in TreeRefIter::from_bytes(&data, gix::hash::Kind::Sha1) {
                let entry = entry?;
                if entry.mode.is_commit() {
                    continue; // submodules are not ours to send
                }
                if entry.mode.is_tree() {
                    trees.push(entry.oid.to_owned());
                } else {
                    let pos = self.pack.position(entry.oid);
                    if !skip(&c, entry.oid, pos, full) {
                        self.add(&mut c, entry.oid, pos);
                    }
                }
            }
        }
        Ok(c)
    }

    /// Sort a root into the commit or tree walk; tags on the way are added.
    fn peel_root(
        &mut self,
        mut id: ObjectId,
        c: &mut Closure,
        skip: &impl Fn(&Closure, &gix::hash::oid, Option<u32>) -> bool,
        commits: &mut Vec<ObjectId>,
        trees: &mut Vec<ObjectId>,
    ) -> Result<()> {
        loop {
            let pos = self.pack.position(&id);
            let (kind, data) = self.read_any(id, pos)?;
            match kind {
                Kind::Commit => commits.push(id),
                Kind::Tree => trees.push(id),
                kind => {
                    if skip(c, &id, pos) {
                        return Ok(());
                    }
                    c.add(&id, pos);
                    if kind == Kind::Tag {
                        id = gix::objs::TagRefIter::from_bytes(&data, gix::hash::Kind::Sha1)
                            .target_id()?;
                        continue;
                    }
                }
            }
            return Ok(());
        }
    }

    /// The object `id`, at `pos` of the bitmapped pack through gitd's reader where it
    /// is there, else through gix's object store.
    fn read_any(&mut self, id: ObjectId, pos: Option<u32>) -> Result<(Kind, Rc<[u8]>)> {
        if let Some(pos) = pos
            && let Some(object) = self.reader.read(self.pack_number, pos)?
        {
            return Ok(object);
        }
        let obj = self.repo.find_object(id)?;
        Ok((obj.kind, Rc::from(&*obj.data)))
    }

    /// `id` and the tags it points to, through gitd's reader where they are in the
    /// bitmapped pack (a clone's include-tag peels every annotated tag: through gix's
    /// object store that made its whole index mapping resident), else through gix.
    fn tag_chain(&mut self, mut id: ObjectId, tags: &mut Vec<ObjectId>) -> Result<()> {
        loop {
            let (kind, data) = self.read_any(id, self.pack.position(&id))?;
            if kind != Kind::Tag {
                return Ok(());
            }
            tags.push(id);
            id = gix::objs::TagRefIter::from_bytes(&data, gix::hash::Kind::Sha1).target_id()?;
        }
    }

    /// The data of `id`, a `kind`, at `pos` of the bitmapped pack if it is there.
    fn object(&mut self, id: &gix::hash::oid, pos: Option<u32>, kind: Kind) -> Result<Rc<[u8]>> {
        let item = pos.map(|pos| Item::Packed {
            pack: self.pack_number,
            pos,
        });
        self.reader.object(self.repo, id, item, kind)
    }

    /// The bitmap entry of commit `id`, if it has one, with the bitmap.
    fn bitmapped(&mut self, id: &gix::hash::oid) -> Option<(usize, &mut Bitmap)> {
        let bitmap = self.bitmap.as_mut()?;
        Some((bitmap.entry_of(self.pack.lookup(id)?)?, bitmap))
    }

    /// Add `id` to `c`, counting it.
    fn add(&mut self, c: &mut Closure, id: &gix::hash::oid, pos: Option<u32>) {
        c.add(id, pos);
        self.found += 1;
        if self.found % 1024 == 0 {
            self.meter.set(self.found);
        }
    }
}
