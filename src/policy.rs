//! Which directory a request path names, and whether it may be served.
//!
//! Every access decision lives here so a security review reads one file. The rules
//! are git daemon's (`daemon.c: path_ok`, `setup.c: enter_repo`):
//! - the path must start with `/` and contain no `//`, `/./` or `/../` segment (nor
//!   end in `/.` or `/..`);
//! - with `--base-path` the path is taken relative to it;
//! - unless `--strict-paths`, the suffixes `/.git`, ``, `.git/.git`, `.git` are tried
//!   in that order and the first that is a repository wins;
//! - trailing directory arguments form a whitelist (prefixes, or exact paths with
//!   `--strict-paths`);
//! - a repository is served only if it holds `git-daemon-export-ok`, unless
//!   `--export-all`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Why a request was refused. The client sees the reason only with
/// `--informative-errors`, as with git daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    NoSuchRepository,
    NotExported,
    ServiceNotEnabled,
}

impl Denied {
    pub fn reason(self) -> &'static str {
        match self {
            Denied::NoSuchRepository => "no such repository",
            Denied::NotExported => "repository not exported",
            Denied::ServiceNotEnabled => "service not enabled",
        }
    }
}

/// The path rules configured on the command line.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub base_path: Option<PathBuf>,
    pub base_path_relaxed: bool,
    pub export_all: bool,
    pub strict_paths: bool,
    pub informative_errors: bool,
    /// Trailing directory arguments; empty means no whitelist.
    pub whitelist: Vec<PathBuf>,
}

/// A repository that may be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The validated path (as requested, with the suffix that matched), for logs and
    /// the whitelist.
    pub path: PathBuf,
    /// The git directory to open (after following a `.git` file).
    pub git_dir: PathBuf,
}

impl Policy {
    /// Resolve a requested path to a servable repository, or say why not.
    pub fn resolve(&self, requested: &[u8]) -> Result<Resolved, Denied> {
        if avoid_alias(requested) {
            return Err(Denied::NoSuchRepository);
        }
        if requested.first() == Some(&b'~') {
            return Err(Denied::NoSuchRepository); // --user-path is not supported yet
        }
        let requested_path = Path::new(OsStr::from_bytes(requested));
        let mut found = match &self.base_path {
            Some(base) => {
                let mut joined = base.as_os_str().to_owned();
                joined.push(requested_path.as_os_str());
                enter_repo(Path::new(&joined), self.strict_paths)
            }
            None => enter_repo(requested_path, self.strict_paths),
        };
        if found.is_none() && self.base_path.is_some() && self.base_path_relaxed {
            found = enter_repo(requested_path, self.strict_paths);
        }
        let resolved = found.ok_or(Denied::NoSuchRepository)?;
        if !self.whitelisted(&resolved.path) {
            return Err(Denied::NoSuchRepository);
        }
        if !self.export_all && !resolved.git_dir.join("git-daemon-export-ok").exists() {
            return Err(Denied::NotExported);
        }
        Ok(resolved)
    }

    fn whitelisted(&self, path: &Path) -> bool {
        if self.whitelist.is_empty() {
            return !self.strict_paths;
        }
        let path = path.as_os_str().as_bytes();
        self.whitelist.iter().any(|dir| {
            let dir = dir.as_os_str().as_bytes();
            path.starts_with(dir)
                && (path.len() == dir.len() || (!self.strict_paths && path[dir.len()] == b'/'))
        })
    }

    /// The `ERR` text for a refusal: git daemon's `daemon_error`.
    pub fn error_message(&self, denied: Denied, requested: &[u8]) -> String {
        let msg = if self.informative_errors {
            denied.reason()
        } else {
            "access denied or repository not exported"
        };
        format!("{msg}: {}", crate::escape(requested))
    }
}

/// `daemon.c: daemon_avoid_alias`: true for paths that must be refused.
fn avoid_alias(p: &[u8]) -> bool {
    match p.first() {
        Some(b'/') | Some(b'~') => {}
        _ => return true,
    }
    // Each segment after the leading '/' or '~' must not be "", "." or ".." ("..."
    // is a name); only the very last segment may be empty (a trailing slash).
    let segments: Vec<&[u8]> = p[1..].split(|&b| b == b'/').collect();
    let last = segments.len() - 1;
    segments.iter().enumerate().any(|(i, seg)| {
        seg.len() < 3 && seg.iter().all(|&b| b == b'.') && !(i == last && seg.is_empty())
    })
}

/// The suffixes git tries, in git's order.
const SUFFIXES: [&str; 4] = ["/.git", "", ".git/.git", ".git"];

/// `setup.c: enter_repo`: find the repository a path names.
fn enter_repo(path: &Path, strict: bool) -> Option<Resolved> {
    if strict {
        let git_dir = follow_gitfile(path)?;
        return is_git_directory(&git_dir).then(|| Resolved {
            path: path.to_owned(),
            git_dir,
        });
    }
    let mut bytes = path.as_os_str().as_bytes();
    while bytes.len() > 1 && bytes.ends_with(b"/") {
        bytes = &bytes[..bytes.len() - 1];
    }
    if bytes.len() >= 4096 {
        return None;
    }
    for suffix in SUFFIXES {
        let mut candidate = bytes.to_vec();
        candidate.extend_from_slice(suffix.as_bytes());
        let candidate = PathBuf::from(OsStr::from_bytes(&candidate));
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if meta.is_file() || (meta.is_dir() && is_git_directory(&candidate)) {
            let git_dir = follow_gitfile(&candidate)?;
            return is_git_directory(&git_dir).then_some(Resolved {
                path: candidate,
                git_dir,
            });
        }
    }
    None
}

/// A `.git` *file* (`gitdir: <path>`) points at the real git directory.
fn follow_gitfile(path: &Path) -> Option<PathBuf> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_dir() {
        return Some(path.to_owned());
    }
    let content = std::fs::read(path).ok()?;
    let target = content.strip_prefix(b"gitdir: ")?;
    let target = Path::new(OsStr::from_bytes(target.trim_ascii_end()));
    Some(if target.is_absolute() {
        target.to_owned()
    } else {
        path.parent()?.join(target)
    })
}

/// `setup.c: is_git_directory`: `objects/` and `refs/` directories and a `HEAD`.
fn is_git_directory(dir: &Path) -> bool {
    dir.join("objects").is_dir() && dir.join("refs").is_dir() && dir.join("HEAD").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_rules_match_git_daemon() {
        for ok in [
            "/repo.git",
            "/a/b",
            "/",
            "/.../x",
            "/a.",
            "/.hidden",
            "/a/",
            "~user/r",
        ] {
            assert!(!avoid_alias(ok.as_bytes()), "{ok} should be accepted");
        }
        for bad in [
            "repo", "", "//x", "/./x", "/../x", "/a/..", "/a/.", "/a//b", "/a/../b", "~/../x",
        ] {
            assert!(avoid_alias(bad.as_bytes()), "{bad} should be refused");
        }
    }

    fn bare_repo(dir: &Path) {
        std::fs::create_dir_all(dir.join("objects")).unwrap();
        std::fs::create_dir_all(dir.join("refs")).unwrap();
        std::fs::write(dir.join("HEAD"), "ref: refs/heads/main\n").unwrap();
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gitd-policy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn suffixes_export_ok_and_errors() {
        let base = scratch("suffix");
        bare_repo(&base.join("a.git"));
        bare_repo(&base.join("work/.git"));
        std::fs::write(base.join("a.git/git-daemon-export-ok"), "").unwrap();
        let mut p = Policy {
            base_path: Some(base.clone()),
            ..Default::default()
        };
        assert_eq!(p.resolve(b"/a").unwrap().git_dir, base.join("a.git"));
        assert_eq!(p.resolve(b"/a.git/").unwrap().path, base.join("a.git"));
        assert_eq!(p.resolve(b"/work"), Err(Denied::NotExported));
        assert_eq!(p.resolve(b"/missing"), Err(Denied::NoSuchRepository));
        assert_eq!(p.resolve(b"/../a.git"), Err(Denied::NoSuchRepository));
        assert_eq!(
            p.error_message(Denied::NotExported, b"/work"),
            "access denied or repository not exported: /work"
        );
        p.informative_errors = true;
        assert_eq!(
            p.error_message(Denied::NotExported, b"/work"),
            "repository not exported: /work"
        );
        p.export_all = true;
        assert_eq!(p.resolve(b"/work").unwrap().git_dir, base.join("work/.git"));
        p.strict_paths = true;
        assert_eq!(p.resolve(b"/a"), Err(Denied::NoSuchRepository));
        p.whitelist = vec![base.join("a.git")];
        assert!(p.resolve(b"/a.git").is_ok());
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn whitelist_prefixes() {
        let base = scratch("white");
        bare_repo(&base.join("pub/x.git"));
        bare_repo(&base.join("private/y.git"));
        let p = Policy {
            export_all: true,
            whitelist: vec![base.join("pub")],
            ..Default::default()
        };
        let abs =
            |rel: &str| std::os::unix::ffi::OsStringExt::into_vec(base.join(rel).into_os_string());
        assert!(p.resolve(&abs("pub/x.git")).is_ok());
        assert_eq!(
            p.resolve(&abs("private/y.git")),
            Err(Denied::NoSuchRepository)
        );
        // A prefix must end at a path component.
        let p2 = Policy {
            export_all: true,
            whitelist: vec![base.join("pu")],
            ..Default::default()
        };
        assert_eq!(p2.resolve(&abs("pub/x.git")), Err(Denied::NoSuchRepository));
        std::fs::remove_dir_all(base).unwrap();
    }
}
