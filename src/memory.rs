//! Keeping an idle gitd small.
//!
//! The memory an idle gitd holds is mostly its own machine code: the pages of the
//! executable that start-up touched (argument parsing, logging set-up, the runtime,
//! binding), mapped into the process 64–128 KiB at a time by the kernel's fault-around.
//! Most of that code never runs again. Once serving starts, [`release_start_up_code`]
//! unmaps the executable's code pages from the process: the page cache keeps them,
//! nothing is lost, and the code a request needs maps back in on its first use as
//! minor faults (no disk reads while the file stays cached), tens of microseconds.

/// Drop the pages of gitd's code mapping from this process (not from the page
/// cache). Only the mapping that holds this function's code: executable, private,
/// never written, so `MADV_DONTNEED` cannot lose anything (unlike the relocated,
/// written pages of a read-only data mapping, which it would reset to the file's).
pub fn release_start_up_code() {
    let here = release_start_up_code as fn() as usize;
    release_code(|start, end, _| (start..end).contains(&here));
}

/// Drop the pages of every pack index (`.idx`) mapped in this process, once a pack's
/// objects are chosen and before it is written. Choosing them looks ids up through
/// two mappings of each index, gix's object store's and gitd's own: on git.git that
/// held the 11 MiB index resident twice through the whole write. Writing reads only
/// the offsets it needs, which map back in from the page cache; an index is never
/// written, so nothing is lost (another request using it meanwhile refaults too).
pub fn release_index_pages() {
    release_mappings(&["r--p", "r--s"], |_, _, path| path.ends_with(".idx"));
}

/// `MADV_DONTNEED` on the private, read-only, executable file mappings `pick` chooses
/// (from `/proc/self/maps`: start, end, path).
fn release_code(pick: impl Fn(usize, usize, &str) -> bool) {
    release_mappings(&["r-xp"], pick);
}

/// `MADV_DONTNEED` on the file mappings with one of `perms` (never writable) that
/// `pick` chooses.
fn release_mappings(perms_ok: &[&str], pick: impl Fn(usize, usize, &str) -> bool) {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for line in maps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        // offset, device, inode, then the path (none for anonymous mappings).
        let path = fields.nth(3).unwrap_or("");
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        if perms_ok.contains(&perms) && path.starts_with('/') && pick(start, end, path) {
            // SAFETY: the range is a read-only file mapping of this process that was
            // never written (no `w` in its permissions, and never writable: code and
            // pack indexes); MADV_DONTNEED unmaps its pages, which fault back in
            // unchanged from the file on their next use.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

/// One malloc arena for every thread. glibc gives each thread that allocates its own
/// arena, and memory freed in an arena stays there: after a large request ran on the
/// blocking pool's threads, their arenas kept 1.5 MiB each resident even after
/// `malloc_trim`. With one arena an idle gitd went back to 2.8 MiB after three
/// floods of 2M haves (6 MiB with an arena per thread), at the same speed: the
/// runtime is one thread, and glibc's per-thread caches serve most small
/// allocations without the arena's lock.
pub fn use_one_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt before any thread is started; it only sets a tunable.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Hand the heap's free memory back to the kernel: after each pack, archive and
/// pushed pack (whose buffers freed tens of MiB), and when gitd goes idle.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free pages of the allocator's own heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Return what serving made resident, once the last connection has ended: the
/// heap's free memory (glibc keeps what a request freed in its arenas, one per
/// thread that allocated, and requests allocate on the blocking pool's threads, so
/// one large request's peak would otherwise stay resident for the life of the
/// process), and the code pages requests touched (gitd's and its libraries'), as
/// at start-up. Both come back as minor faults on the next request.
pub fn give_back() {
    trim_heap();
    release_code(|_, _, _| true);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resident size of the code mapping that holds `release_start_up_code`.
    fn code_rss_kib() -> u64 {
        let here = release_start_up_code as fn() as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((start, end)) = range.split_once('-')
                && let (Ok(start), Ok(end)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                )
            {
                inside = (start..end).contains(&here);
            } else if inside && let Some(rss) = line.strip_prefix("Rss:") {
                return rss.trim().trim_end_matches(" kB").trim().parse().unwrap();
            }
        }
        panic!("no mapping holds this code");
    }

    /// After the release, less of the code is resident than before: by more than
    /// the few pages that reading the numbers touches again.
    #[test]
    fn start_up_code_is_released() {
        let before = code_rss_kib();
        release_start_up_code();
        let after = code_rss_kib();
        assert!(
            before >= 512,
            "a test binary's code touched so far: {before} KiB"
        );
        assert!(
            after + 256 < before,
            "{before} KiB before, {after} KiB after"
        );
    }
}
