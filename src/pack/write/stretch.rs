//! Partial pack reuse: stretches of stored entries copied as they are.
//!
//! When the objects sent include a run of consecutive entries of a stored pack (a
//! clone wants most of a repacked repository, in pack order), the run is copied
//! byte for byte, as git's `pack.allowPackReuse` does: no entry is parsed beyond its
//! header, none is looked up or re-framed. An offset delta whose base lies in the
//! same stretch keeps its distance, since the bytes between them come along
//! unchanged; any other entry (a delta whose base is before the stretch, so the
//! distance changes or the base is not sent, or a stored ref-delta) ends the stretch
//! and goes through the per-entry path, and the next stretch begins after it.
//!
//! Entry boundaries come from the pack order (the `.rev` file) and the index's
//! offsets, read through its mapping: a clone reads most of them, and with `pread`
//! each was a system call (the pages are given back when the pack is written).
//! Bytes are read through a window of the pack and written from it, so each byte
//! is read once.

use std::io::Write;
use std::ops::Range;

use gix::odb::pack::data::{self, entry::Header};

use super::{Placed, Writer};
use crate::Result;

/// Bytes of a pack read at a time.
const WINDOW: usize = 256 * 1024;
/// Room for any entry header: type and size, then a base offset (a stretch never
/// holds ref-deltas, whose header is longer, but reading them must not fail).
const MAX_HEADER: u64 = 32;

/// A window of one pack's bytes: `buf` holds the pack from `at`.
#[derive(Default)]
pub(super) struct Window {
    at: u64,
    buf: Vec<u8>,
    /// Where the entries written from the pack so far start, in order.
    starts: Vec<u64>,
}

impl Window {
    fn end(&self) -> u64 {
        self.at + self.buf.len() as u64
    }

    /// Whether an entry written from the pack starts at `offset`.
    pub(super) fn starts(&self, offset: u64) -> bool {
        self.starts.binary_search(&offset).is_ok()
    }

    fn holds(&self, range: &Range<u64>) -> bool {
        self.at <= range.start && range.end <= self.end()
    }
}

/// The stretch being copied: the pack's bytes `start..end` go to `at` in ours, and
/// those before `written` have been.
#[derive(Clone, Copy)]
struct Stretch {
    start: u64,
    end: u64,
    at: u64,
    written: u64,
    objects: usize,
    deltas: usize,
}

impl Writer<'_> {
    /// Write the entries at `positions` of our pack `n`, all of them sent, copying
    /// what can be copied unchanged; `on_object` is called after each entry.
    pub(super) fn stretches(
        &mut self,
        n: usize,
        positions: Range<u32>,
        on_object: &mut dyn FnMut(),
    ) -> Result<()> {
        let pack = &self.packs.packs[n];
        if self.current != Some(n) {
            self.current = Some(n);
            self.placed.clear();
            self.stretch.starts.clear();
            self.stretch.buf.clear();
        }
        let mut offset = pack.offset_mapped(positions.start);
        let run_end = pack.offset_mapped(positions.end);
        let mut stretch = self.new_stretch(offset);
        for pos in positions {
            let end = pack.offset_mapped(pos + 1);
            let head = offset..end.min(offset + MAX_HEADER);
            if !self.stretch.holds(&head) {
                self.refill(n, &mut stretch, offset, run_end)?;
            }
            let from = (offset - self.stretch.at) as usize;
            let bytes = &self.stretch.buf[from..from + (head.end - head.start) as usize];
            let entry = data::Entry::from_bytes(bytes, 0, gix::hash::Kind::Sha1)?;
            // A base must be an entry written before: a distance to anywhere else
            // would be a damaged pack, which the per-entry path does not copy.
            let base = match entry.header {
                Header::OfsDelta { base_distance } => offset
                    .checked_sub(base_distance)
                    .filter(|&base| self.stretch.starts(base))
                    .ok_or(()),
                Header::RefDelta { .. } => Err(()),
                _ => Ok(offset),
            };
            match base {
                Ok(base) if base >= stretch.start => {
                    stretch.end = end;
                    stretch.objects += 1;
                    stretch.deltas += usize::from(entry.header.is_delta());
                }
                // The base went out earlier, at a distance of its own.
                Ok(base) => {
                    self.close(n, &stretch)?;
                    let (at, ..) = self.placed(base).ok_or("a written base is not placed")?;
                    let here = self.out.written;
                    let header = Header::OfsDelta {
                        base_distance: here - at,
                    };
                    header.write_to(entry.decompressed_size, &mut self.out)?;
                    let mut data = self.new_stretch(offset + entry.data_offset);
                    data.end = end;
                    self.write_stretch(n, &mut data)?;
                    self.placed.push(Placed {
                        from: offset,
                        end,
                        at: here,
                        depth: 0,
                        grown: false,
                    });
                    self.stats.pack_reused += 1;
                    self.stats.deltas += 1;
                    stretch = self.new_stretch(end);
                }
                Err(()) => {
                    self.close(n, &stretch)?;
                    self.packed(n, pos)?;
                    stretch = self.new_stretch(end);
                }
            }
            self.stretch.starts.push(offset);
            self.stats.objects += 1;
            on_object();
            offset = end;
        }
        self.close(n, &stretch)
    }

    fn new_stretch(&self, start: u64) -> Stretch {
        Stretch {
            start,
            end: start,
            at: self.out.written,
            written: start,
            objects: 0,
            deltas: 0,
        }
    }

    /// Write what of `stretch` is not written yet and refill the window from
    /// `offset`, the end of the stretch so far, up to `run_end` at most (a sparse
    /// selection reads only what it sends).
    fn refill(&mut self, n: usize, stretch: &mut Stretch, offset: u64, run_end: u64) -> Result<()> {
        self.write_stretch(n, stretch)?;
        let pack = &self.packs.packs[n];
        let len = (WINDOW as u64).min(run_end - offset) as usize;
        self.stretch.buf.resize(len, 0);
        pack.read_entry_into(offset, &mut self.stretch.buf)?;
        self.stretch.at = offset;
        Ok(())
    }

    /// Write the bytes of `stretch` not written yet: from the window where it holds
    /// them, else read in pieces.
    fn write_stretch(&mut self, n: usize, stretch: &mut Stretch) -> Result<()> {
        let pending = stretch.written..stretch.end;
        if pending.is_empty() {
            return Ok(());
        }
        let window = &self.stretch;
        if window.at <= pending.start && pending.start < window.end() {
            let upto = pending.end.min(window.end());
            let from = (pending.start - window.at) as usize;
            self.out
                .write_all(&window.buf[from..(upto - window.at) as usize])?;
            stretch.written = upto;
        }
        // What a large entry holds beyond the window.
        let pack = &self.packs.packs[n];
        while stretch.written < stretch.end {
            let len = (stretch.end - stretch.written).min(WINDOW as u64) as usize;
            self.entry.resize(len, 0);
            pack.read_entry_into(stretch.written, &mut self.entry)?;
            self.out.write_all(&self.entry)?;
            stretch.written += len as u64;
        }
        Ok(())
    }

    /// Finish `stretch`: write the rest of it and note where its entries went.
    fn close(&mut self, n: usize, stretch: &Stretch) -> Result<()> {
        if stretch.end == stretch.start {
            return Ok(());
        }
        let mut rest = Stretch { ..*stretch };
        self.write_stretch(n, &mut rest)?;
        self.placed.push(Placed {
            from: stretch.start,
            end: stretch.end,
            at: stretch.at,
            depth: 0,
            grown: false,
        });
        self.stats.pack_reused += stretch.objects;
        self.stats.deltas += stretch.deltas;
        Ok(())
    }
}
