//! Turning a list of object ids into a pack stream with gix-pack.
//!
//! Stored entries are copied as they are (`PackCopyAndBaseObjects`): compressed data
//! and deltas whose base is also sent are never re-deflated. Objects that are loose,
//! or deltas whose base is neither sent nor allowed as a thin base, go out as whole
//! objects. There is no delta search: every delta in the pack is a stored one.
//!
//! Thin packs: gix's `allow_thin_pack` names *any* base missing from the pack by id,
//! and a client that lacks it fails with "unresolved deltas". gix asks the object
//! database for the ids of those bases, so [`Odb`] answers only for bases in the
//! known set; for any other base gix finds no id and sends the whole object instead.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use gix::ObjectId;
use gix::error::ErrorExt;
use gix::hashtable::HashSet;
use gix::odb::pack::data::output;
use gix::odb::pack::{self, Find};
use gix::parallel::InOrderIter;
use gix::prelude::Finalize;

use super::packs::{self, Packs};
use super::progress::Meter;
use super::reach::Closure;
use crate::{ClientError, Result};

/// What went into a pack, for the `Total …` progress line and the request log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PackStats {
    pub objects: usize,
    pub deltas: usize,
    pub reused: usize,
    pub bytes: u64,
    /// Objects sent as part of a whole stored pack, streamed as it is.
    pub pack_reused: usize,
    /// The objects were chosen with a pack bitmap.
    pub bitmap: bool,
}

/// Write a version 2 pack of the objects of `counts` to `out`.
///
/// `counts`: entries of our own `packs` come located (with their sizes), so gix only
/// copies them; gix looks up the others. `thin_bases`: for a thin pack, the objects
/// a delta may name as its base although they are not in the pack (the client has
/// them; objects of the pack may be in the set too). `ofs_delta`: the client
/// understands offset deltas; without it, deltas refer to their base by id.
/// `counting` advances as gix locates objects. A missing object aborts the pack with
/// an error *before* the trailer, so the client never receives a pack that looks
/// complete but is not.
#[allow(clippy::too_many_arguments)]
pub fn write_pack(
    repo: &gix::ThreadSafeRepository,
    packs: Arc<Packs>,
    counts: Vec<output::Count>,
    thin_bases: Option<Known>,
    ofs_delta: bool,
    threads: usize,
    counting: Meter,
    out: &mut dyn Write,
) -> Result<PackStats> {
    let compression = repo.to_thread_local().pack_compression()?;
    let num_entries = u32::try_from(counts.len()).map_err(|_| "too many objects for one pack")?;

    // The pack pipeline needs a Send + Clone handle whose pack ids stay valid for the
    // whole run, even if `git gc` replaces packs meanwhile.
    let mut db = repo.objects.to_cache_arc();
    db.prevent_pack_unload();
    db.ignore_replacements = true;
    let thin = thin_bases.is_some();
    let shared = Arc::new(Shared {
        counting: Mutex::new(counting),
        bases: thin_bases.unwrap_or(Known::Ids(HashSet::default())),
        packs,
        offsets: Mutex::default(),
    });
    let db = Odb {
        inner: db,
        shared: shared.clone(),
    };

    // Locating every object is git's "Counting objects" phase; it is over when
    // `iter_from_counts` returns.
    let entries = output::entry::iter_from_counts(
        counts,
        db,
        Box::new(gix::progress::Discard),
        output::entry::iter_from_counts::Options {
            thread_limit: Some(threads),
            mode: output::entry::iter_from_counts::Mode::PackCopyAndBaseObjects,
            allow_thin_pack: thin,
            chunk_size: 256,
            version: gix::odb::pack::data::Version::V2,
            compression,
        },
    )?;
    lock(&shared.counting).done();
    let mut in_order = InOrderIter::from(entries);
    let mut checked = Checked {
        inner: &mut in_order,
        ofs_delta,
        ids: Vec::new(),
        stats: PackStats::default(),
    };
    let mut writer = output::bytes::FromEntriesIter::new(
        &mut checked,
        out,
        num_entries,
        gix::odb::pack::data::Version::V2,
        gix::hash::Kind::Sha1,
    );
    let mut bytes = 0;
    for written in writer.by_ref() {
        bytes += written?;
    }
    drop(writer);
    let mut stats = checked.stats;
    let outcome = in_order.inner.finalize()?;
    stats.bytes = bytes;
    stats.reused = outcome.objects_copied_from_pack;
    Ok(stats)
}

/// Sits between gix's entry iterator and the byte writer: turns a missing object into
/// an error (gix would skip it and leave a short pack behind a full object count),
/// rewrites offset deltas as ref deltas for clients without `ofs-delta`, and counts.
struct Checked<I> {
    inner: I,
    ofs_delta: bool,
    /// Ids of all entries so far, only kept when deltas must name their base by id.
    ids: Vec<ObjectId>,
    stats: PackStats,
}

impl<I> Iterator for Checked<I>
where
    I: Iterator<Item = gix::Result<Vec<output::Entry>>>,
{
    type Item = gix::Result<Vec<output::Entry>>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut entries = match self.inner.next()? {
            Ok(entries) => entries,
            Err(err) => return Some(Err(err)),
        };
        for entry in &mut entries {
            if entry.is_invalid() {
                return Some(Err(ClientError(
                    "an object to be sent is missing from the repository".into(),
                )
                .raise()));
            }
            match entry.kind {
                output::entry::Kind::DeltaRef { object_index } => {
                    self.stats.deltas += 1;
                    if !self.ofs_delta {
                        entry.kind = output::entry::Kind::DeltaOid {
                            id: self.ids[object_index],
                        };
                    }
                }
                // Only in thin packs, against a base `Odb` let through.
                output::entry::Kind::DeltaOid { .. } => self.stats.deltas += 1,
                output::entry::Kind::Base(_) => {}
            }
            if !self.ofs_delta {
                self.ids.push(entry.id);
            }
            self.stats.objects += 1;
        }
        Some(Ok(entries))
    }
}

/// Objects the client has, which deltas of a thin pack may name as their base.
pub enum Known {
    /// As ids (the commit walk's seen-set).
    Ids(HashSet<ObjectId>),
    /// What the client's commits reach, with the bitmap of our pack `pack`.
    Bitmap { pack: usize, client: Closure },
}

impl Known {
    fn contains(&self, packs: &Packs, id: &gix::hash::oid) -> bool {
        match self {
            Known::Ids(ids) => ids.contains(id),
            Known::Bitmap { pack, client } => client.has(id, packs.packs[*pack].position(id)),
        }
    }

    /// Offsets and ids of the known objects in our pack number `n`.
    fn in_pack(&self, packs: &Packs, n: usize) -> OffsetsAndIds {
        let pack = &packs.packs[n];
        let at = |pos: u32| {
            let id = pack.index.oid_at_index(pack.index_at(pos)).to_owned();
            (pack.entry_at(pos).0, id)
        };
        match self {
            Known::Bitmap { pack: p, client } if *p == n => client.bits.ones().map(at).collect(),
            _ => (0..pack.num_objects())
                .map(at)
                .filter(|(_, id)| self.contains(packs, id))
                .collect(),
        }
    }
}

/// What the [`Odb`] clones of all pack threads share.
struct Shared {
    counting: Mutex<Meter>,
    /// Objects a delta may name by id (none unless the pack is thin).
    bases: Known,
    packs: Arc<Packs>,
    /// Per pack id: offsets and ids of its objects that are in `bases`, by offset.
    offsets: Mutex<Vec<(u32, OffsetsAndIds)>>,
}

type OffsetsAndIds = Vec<(pack::data::Offset, ObjectId)>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The object database seen through the pack pipeline: counts look-ups and hides
/// the ids of objects that may not be thin bases.
#[derive(Clone)]
struct Odb<F> {
    inner: F,
    shared: Arc<Shared>,
}

impl<F: Find> Find for Odb<F> {
    fn contains(&self, id: &gix::hash::oid) -> bool {
        self.inner.contains(id)
    }

    fn try_find<'a>(
        &self,
        id: &gix::hash::oid,
        buffer: &'a mut Vec<u8>,
    ) -> gix::Result<Option<(gix::objs::Data<'a>, Option<pack::data::entry::Location>)>> {
        self.inner.try_find(id, buffer)
    }

    fn try_find_cached<'a>(
        &self,
        id: &gix::hash::oid,
        buffer: &'a mut Vec<u8>,
        pack_cache: &mut dyn pack::cache::DecodeEntry,
    ) -> gix::Result<Option<(gix::objs::Data<'a>, Option<pack::data::entry::Location>)>> {
        self.inner.try_find_cached(id, buffer, pack_cache)
    }

    fn location_by_oid(
        &self,
        id: &gix::hash::oid,
        buf: &mut Vec<u8>,
    ) -> gix::Result<Option<pack::data::entry::Location>> {
        let location = self.inner.location_by_oid(id, buf);
        lock(&self.shared.counting).inc();
        location
    }

    /// gix resolves the base of a stored offset delta whose base is not sent through
    /// this list; a base left out of it makes gix send the whole object. gix asks
    /// once per chunk of entries, so the filtered list is built once per pack.
    fn pack_offsets_and_oid(&self, pack_id: u32) -> gix::Result<Option<OffsetsAndIds>> {
        let mut cache = lock(&self.shared.offsets);
        if let Some((_, list)) = cache.iter().find(|(id, _)| *id == pack_id) {
            return Ok(Some(list.clone()));
        }
        let (bases, packs) = (&self.shared.bases, &self.shared.packs);
        let mut list = match packs::pack_number(pack_id) {
            Some(n) => bases.in_pack(packs, n),
            None => {
                let Some(mut list) = self.inner.pack_offsets_and_oid(pack_id)? else {
                    return Ok(None);
                };
                list.retain(|(_, id)| bases.contains(packs, id));
                list
            }
        };
        list.sort_by_key(|(offset, _)| *offset);
        cache.push((pack_id, list.clone()));
        Ok(Some(list))
    }

    fn entry_by_location(
        &self,
        location: &pack::data::entry::Location,
    ) -> Option<pack::find::Entry> {
        match packs::pack_number(location.pack_id) {
            Some(_) => self.shared.packs.entry(location),
            None => self.inner.entry_by_location(location),
        }
    }
}
