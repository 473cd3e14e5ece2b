//! Files whose trailing checksum was verified, so that it is verified once per file
//! and not once per request.
//!
//! Hashing a `.rev` or `.bitmap` file is most of the work of opening a large pack,
//! and git itself never does it when serving. git writes these files whole under a
//! new name and renames them into place, never into an old file, so a file that
//! keeps its device, inode, size and modification time keeps its contents: a file
//! rewritten in place is a new identity and is verified again.

use std::fs::File;
use std::sync::Mutex;

/// Files remembered: the packs served lately, a few per repository.
const MAX_VERIFIED: usize = 256;

/// Shared by the threads that build packs; held only to look up or add one entry.
static VERIFIED: Mutex<Vec<FileIdentity>> = Mutex::new(Vec::new());

/// What tells one file from another, and a file from itself rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileIdentity {
    pub fn of(file: &File) -> Option<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata().ok()?;
        Some(FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }

    /// Whether this file's checksum was verified before.
    pub fn verified(&self) -> bool {
        lock().contains(self)
    }

    /// Remember that this file's checksum is right.
    pub fn remember(self) {
        let mut v = lock();
        if !v.contains(&self) {
            if v.len() >= MAX_VERIFIED {
                v.remove(0);
            }
            v.push(self);
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<FileIdentity>> {
    VERIFIED.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file rewritten in place (same inode) under a new size or time is not taken
    /// for the file verified before.
    #[test]
    fn a_rewritten_file_is_a_new_identity() {
        let path = std::env::temp_dir().join(format!("gitd-verified-{}", std::process::id()));
        std::fs::write(&path, b"first").unwrap();
        let first = FileIdentity::of(&File::open(&path).unwrap()).unwrap();
        assert!(!first.verified());
        first.remember();
        assert!(
            FileIdentity::of(&File::open(&path).unwrap())
                .unwrap()
                .verified()
        );
        std::fs::write(&path, b"second, longer").unwrap();
        let second = FileIdentity::of(&File::open(&path).unwrap()).unwrap();
        assert_ne!(first, second);
        assert!(!second.verified());
        let _ = std::fs::remove_file(&path);
    }
}
