//! The quarantine: a temporary object directory inside the repository
//! (`objects/tmp_objdir-incoming-XXXXXX`, git's name, which `git prune` knows to
//! clean up) that receives the pushed pack. Nothing in it is visible to readers of
//! the repository until [`Quarantine::migrate`] moves it into `objects/pack`, which
//! happens only after the pack is complete, connected and accepted by
//! `pre-receive`. Dropping a `Quarantine` (a failed push, a dropped connection)
//! removes the directory, so a push that does not finish leaves nothing behind.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::warn;

/// The prefix git uses, so that `git prune` removes leftovers of a killed server.
const PREFIX: &str = "tmp_objdir-incoming-";

/// A temporary object directory; removed on drop unless migrated.
#[derive(Debug)]
pub struct Quarantine {
    /// `objects/tmp_objdir-incoming-XXXXXX`.
    dir: PathBuf,
    /// The repository's `objects`.
    objects: PathBuf,
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
                    let q = Quarantine {
                        dir,
                        objects: objects.to_owned(),
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
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!("cannot remove {}: {e}", self.dir.display());
        }
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
