//! Turning a list of object ids into a pack stream with gix-pack.
//!
//! Stored entries are copied as they are (`PackCopyAndBaseObjects`): compressed data
//! and deltas whose base is also sent are never re-deflated. Objects that are loose,
//! or deltas whose base is not sent, go out as whole objects: always a valid,
//! self-contained pack (no thin packs yet).

use std::io::Write;

use gix::ObjectId;
use gix::error::ErrorExt;
use gix::odb::pack::data::output;
use gix::parallel::InOrderIter;
use gix::prelude::Finalize;

use crate::{ClientError, Result};

/// What went into a pack, for the `Total …` progress line and the request log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PackStats {
    pub objects: usize,
    pub deltas: usize,
    pub reused: usize,
    pub bytes: u64,
}

/// Write a version 2 pack of `ids` to `out`.
///
/// `ofs_delta`: the client understands offset deltas; without it, deltas refer to
/// their base by id. A missing object aborts the pack with an error *before* the
/// trailer, so the client never receives a pack that looks complete but is not.
pub fn write_pack(
    repo: &gix::ThreadSafeRepository,
    ids: Vec<ObjectId>,
    ofs_delta: bool,
    threads: usize,
    out: &mut dyn Write,
) -> Result<PackStats> {
    let compression = repo.to_thread_local().pack_compression()?;
    let num_entries = u32::try_from(ids.len()).map_err(|_| "too many objects for one pack")?;
    let counts: Vec<output::Count> = ids
        .into_iter()
        .map(|id| output::Count {
            id,
            entry_pack_location: output::count::PackLocation::NotLookedUp,
        })
        .collect();

    // The pack pipeline needs a Send + Clone handle whose pack ids stay valid for the
    // whole run, even if `git gc` replaces packs meanwhile.
    let mut db = repo.objects.to_cache_arc();
    db.prevent_pack_unload();
    db.ignore_replacements = true;

    let entries = output::entry::iter_from_counts(
        counts,
        db,
        Box::new(gix::progress::Discard),
        output::entry::iter_from_counts::Options {
            thread_limit: Some(threads),
            mode: output::entry::iter_from_counts::Mode::PackCopyAndBaseObjects,
            allow_thin_pack: false,
            chunk_size: 256,
            version: gix::odb::pack::data::Version::V2,
            compression,
        },
    )?;
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
