//! The quarantine: a temporary object directory inside the repository
//! (`objects/tmp_objdir-incoming-XXXXXX`, git's name, which `git prune` knows to
//! clean up) that receives the pushed pack. Nothing in it is visible to readers of
//! the repository until [`Quarantine::migrate`] moves it into `objects/pack`, which
//! happens only after the pack is complete, connected and accepted by
//! `pre-receive`. Dropping a `Quarantine` (a failed push, a dropped connection)
//! removes the directory, so a push that does not finish leaves nothing behind.
//!
//! Two more exits are covered. gitd stopping with pushes still running (after
//! its grace period) removes the quarantines still alive ([`remove_abandoned`]):
//! their owners may be blocked threads that never get to drop them. And a gitd
//! that was killed outright leaves its quarantines behind, so each holds a lock
//! file (`gitd.lock`, flocked while its owner lives); [`sweep`] removes the ones
//! whose lock is free, never one of another live gitd, nor one of git's own
//! receive-pack (which has no lock file).

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::warn;

/// The prefix git uses, so that `git prune` removes leftovers of a killed server.
const PREFIX: &str = "tmp_objdir-incoming-";

/// The lock file that marks a quarantine as gitd's, locked while its owner lives.
const LOCK: &str = "gitd.lock";

/// Quarantines of this process not yet removed or migrated.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A temporary object directory; removed on drop unless migrated.
#[derive(Debug)]
pub struct Quarantine {
    /// `objects/tmp_objdir-incoming-XXXXXX`.
    dir: PathBuf,
    /// The repository's `objects`.
    objects: PathBuf,
    /// `gitd.lock`, flocked for as long as this process has the quarantine.
    _lock: File,
}

impl Quarantine {
    /// Create a fresh quarantine (with its `pack/`) in `objects`.
    pub fn create(objects: &Path) -> io::Result<Quarantine> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let mut last_err = None;
        // A name taken by another process is retried with another; bounded.
        for _ in 0..16 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let seq = SEQ.fetch_add(1, Ordering::Relaxed);
            let tag = (u64::from(std::process::id()) << 32) ^ (u64::from(nanos) << 8) ^ seq;
            let dir = objects.join(format!("{PREFIX}{}", suffix(tag)));
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    live().push(dir.clone());
                    let lock = match File::create(dir.join(LOCK)).and_then(|f| flock(f, true)) {
                        Ok(Some(f)) => f,
                        other => {
                            remove(&dir);
                            return Err(other.err().unwrap_or_else(|| {
                                io::Error::other("the new lock file is locked")
                            }));
                        }
                    };
                    let q = Quarantine {
                        dir,
                        objects: objects.to_owned(),
                        _lock: lock,
                    };
                    std::fs::create_dir(q.pack_dir())?;
                    return Ok(q);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no free quarantine name")))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pack_dir(&self) -> PathBuf {
        self.dir.join("pack")
    }

    /// What git's `tmp_objdir_env` gives hooks: new objects are written to and read
    /// from the quarantine, existing ones found through the repository's objects as
    /// an alternate.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        let mut alternates = self.objects.clone().into_os_string();
        if let Some(existing) = std::env::var_os("GIT_ALTERNATE_OBJECT_DIRECTORIES") {
            alternates.push(":");
            alternates.push(existing);
        }
        vec![
            ("GIT_ALTERNATE_OBJECT_DIRECTORIES", alternates),
            ("GIT_OBJECT_DIRECTORY", self.dir.clone().into_os_string()),
            ("GIT_QUARANTINE_PATH", self.dir.clone().into_os_string()),
        ]
    }

    /// Move the received files into `objects/pack` and remove the quarantine.
    ///
    /// As git's `tmp_objdir_migrate`: `.keep` first (so the pack cannot be collected
    /// before the refs point into it), then the pack, the index last, so no reader
    /// ever finds an index without its pack. A file that already exists there has
    /// the same content (packs are named by their checksum) and is left as it is.
    pub fn migrate(self) -> io::Result<Migrated> {
        // Not at the same time as the removal at exit: never half a pack moved.
        let live = live();
        if !live.contains(&self.dir) {
            return Err(io::Error::other("the quarantine was removed"));
        }
        let target = self.objects.join("pack");
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.pack_dir())?
            .map(|e| e.map(|e| e.path()))
            .collect::<io::Result<_>>()?;
        files.sort_by_key(|p| (priority(p), p.clone()));
        let mut migrated = Migrated { keeps: Vec::new() };
        for from in files {
            let Some(name) = from.file_name() else {
                continue;
            };
            if priority(&from) == u8::MAX {
                continue; // temporary files of an unfinished write
            }
            let to = target.join(name);
            if to.exists() {
                continue;
            }
            std::fs::rename(&from, &to)?;
            if to.extension().is_some_and(|e| e == "keep") {
                migrated.keeps.push(to);
            }
        }
        Ok(migrated)
        // `self` drops here and removes what is left of the quarantine.
    }
}

impl Drop for Quarantine {
    fn drop(&mut self) {
        remove(&self.dir);
    }
}

/// Remove a quarantine of this process and forget it.
fn remove(dir: &Path) {
    let mut live = live();
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        warn!("cannot remove {}: {e}", dir.display());
    }
    live.retain(|d| d != dir);
}

/// At exit: remove the quarantines of pushes that did not finish.
pub fn remove_abandoned() {
    let dirs = std::mem::take(&mut *live());
    for dir in dirs {
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!("cannot remove {}: {e}", dir.display());
        }
    }
}

/// Remove the quarantines in `objects` that a gitd left behind: those with a lock
/// file nobody holds. Returns how many went. Bounded: at most 10 000 entries of
/// `objects` are looked at.
pub fn sweep(objects: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(objects) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten().take(10_000) {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let dir = entry.path();
        let Ok(file) = File::options().read(true).write(true).open(dir.join(LOCK)) else {
            continue; // not gitd's
        };
        // Held while removing, so that no other gitd sweeps it at the same time.
        if let Ok(Some(_held)) = flock(file, false) {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => removed += 1,
                Err(e) => warn!("cannot remove {}: {e}", dir.display()),
            }
        }
    }
    if removed > 0 {
        tracing::info!(
            "removed {removed} quarantine(s) left by an earlier gitd in {}",
            objects.display()
        );
    }
    removed
}

/// At start: [`sweep`] the repositories under `roots` (the base path or the
/// whitelist), without following symbolic links, at most 4 levels down and 10 000
/// directories in all; repositories beyond are swept by their next push.
pub fn sweep_under(roots: &[PathBuf]) -> usize {
    let mut removed = 0;
    let mut budget = 10_000usize;
    let mut stack: Vec<(PathBuf, usize)> = roots.iter().map(|r| (r.clone(), 0)).collect();
    while let Some((dir, depth)) = stack.pop() {
        if budget == 0 {
            break;
        }
        budget -= 1;
        for objects in [dir.join("objects"), dir.join(".git/objects")] {
            if objects.join("pack").is_dir() {
                removed += sweep(&objects);
            }
        }
        if depth >= 4 {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten().take(budget) {
            let name = entry.file_name();
            if entry.file_type().is_ok_and(|t| t.is_dir()) && name != "objects" && name != ".git" {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    removed
}

/// Lock `file` exclusively; `None` if another holds it (`wait`: never, it is ours).
fn flock(file: File, wait: bool) -> io::Result<Option<File>> {
    let flags = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), flags) } == 0 {
        return Ok(Some(file));
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(None)
    } else {
        Err(e)
    }
}

/// Files migrated into the repository whose `.keep` must go once the refs are
/// updated (or the push has failed); done on drop.
#[derive(Debug)]
pub struct Migrated {
    keeps: Vec<PathBuf>,
}

impl Drop for Migrated {
    fn drop(&mut self) {
        for keep in &self.keeps {
            if let Err(e) = std::fs::remove_file(keep) {
                warn!("cannot remove {}: {e}", keep.display());
            }
        }
    }
}

/// Migration order: `.keep`, `.pack`, `.rev`, `.idx`; anything else is skipped.
fn priority(path: &Path) -> u8 {
    match path.extension().and_then(|e| e.to_str()) {
        Some("keep") => 0,
        Some("pack") => 1,
        Some("rev") => 2,
        Some("idx") => 3,
        _ => u8::MAX,
    }
}

/// Six characters from `[a-zA-Z0-9]`, like mkdtemp's `XXXXXX`.
fn suffix(mut tag: u64) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    // Mix the bits so that consecutive tags differ in every position.
    tag = tag.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..6)
        .map(|i| CHARS[((tag >> (i * 10)) % CHARS.len() as u64) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gitd-q-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("objects/pack")).unwrap();
        dir.join("objects")
    }

    #[test]
    fn dropped_quarantine_leaves_nothing() {
        let objects = scratch("drop");
        let q = Quarantine::create(&objects).unwrap();
        assert!(
            q.dir()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(PREFIX)
        );
        std::fs::write(q.pack_dir().join("pack-1.pack"), b"x").unwrap();
        drop(q);
        let left: Vec<_> = std::fs::read_dir(&objects).unwrap().collect();
        assert_eq!(left.len(), 1, "only objects/pack remains");
        let _ = std::fs::remove_dir_all(objects.parent().unwrap());
    }

    #[test]
    fn migration_moves_pack_and_index_and_drops_the_keep_later() {
        let objects = scratch("migrate");
        let q = Quarantine::create(&objects).unwrap();
        for ext in ["keep", "pack", "idx"] {
            std::fs::write(q.pack_dir().join(format!("pack-1.{ext}")), ext).unwrap();
        }
        std::fs::write(q.pack_dir().join("tmp_pack_x"), b"partial").unwrap();
        let dir = q.dir().to_owned();
        let migrated = q.migrate().unwrap();
        assert!(!dir.exists());
        let pack = objects.join("pack");
        assert!(pack.join("pack-1.pack").exists() && pack.join("pack-1.idx").exists());
        assert!(pack.join("pack-1.keep").exists());
        assert!(!pack.join("tmp_pack_x").exists());
        drop(migrated);
        assert!(!pack.join("pack-1.keep").exists());
        let _ = std::fs::remove_dir_all(objects.parent().unwrap());
    }
}
