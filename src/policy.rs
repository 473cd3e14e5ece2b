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
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::hostinfo::HostInfo;
use crate::request::Service;

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
    /// `--interpolated-path`: virtual hosting template (`%H`, `%CH`, `%IP`, `%P`, `%D`).
    pub interpolated_path: Option<String>,
    /// `--user-path[=DIR]`: `~user/repo` is looked up in user's home (below DIR).
    pub user_path: Option<String>,
    /// `--enable`/`--disable`/`--allow-override`/`--forbid-override`.
    pub services: Services,
    /// `--access-hook`.
    pub access_hook: Option<String>,
    /// `--allow-symlinks-outside-base`: serve repositories that symbolic links under
    /// the base path lead to, wherever they are (git daemon's behaviour).
    pub symlinks_outside_base: bool,
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
    pub fn resolve(&self, requested: &[u8], host: &HostInfo) -> Result<Resolved, Denied> {
        if avoid_alias(requested) {
            return Err(Denied::NoSuchRepository);
        }
        let requested_path = Path::new(OsStr::from_bytes(requested));
        let mut found = if requested.first() == Some(&b'~') {
            // `~user` paths: only with --user-path, never with --strict-paths.
            match (&self.user_path, self.strict_paths) {
                (Some(dir), false) => user_repo(requested, dir),
                _ => None,
            }
        } else if let Some(template) = self
            .interpolated_path
            .as_ref()
            .filter(|_| host.saw_extended_args)
        {
            let expanded = interpolate(template, requested, host);
            // A host name must not lead out of the tree: the expanded path obeys the
            // same rules as a requested one.
            if avoid_alias(&expanded) {
                return Err(Denied::NoSuchRepository);
            }
            enter_repo(Path::new(OsStr::from_bytes(&expanded)), self.strict_paths)
        } else {
            match &self.base_path {
                Some(base) => {
                    let mut joined = base.as_os_str().to_owned();
                    joined.push(requested_path.as_os_str());
                    // A symbolic link under the base path must not lead to a
                    // repository elsewhere (unlike git daemon, unless allowed).
                    enter_repo(Path::new(&joined), self.strict_paths)
                        .filter(|r| self.symlinks_outside_base || inside(base, &r.git_dir))
                }
                None => enter_repo(requested_path, self.strict_paths),
            }
        };
        if found.is_none()
            && self.base_path.is_some()
            && self.base_path_relaxed
            && requested.first() != Some(&b'~')
        {
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
        self.error_text(denied.reason(), requested)
    }

    /// git daemon's `daemon_error`: the reason only with `--informative-errors`.
    pub fn error_text(&self, reason: &str, requested: &[u8]) -> String {
        let msg = if self.informative_errors {
            reason
        } else {
            "access denied or repository not exported"
        };
        format!("{msg}: {}", crate::escape(requested))
    }
}

/// Whether a service is on by default and whether a repository may change that
/// (`daemon.uploadpack`, `daemon.uploadarch`, `daemon.receivepack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceSetting {
    pub enabled: bool,
    pub overridable: bool,
}

/// git daemon's defaults: upload-pack on, upload-archive and receive-pack off, all
/// overridable per repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Services {
    pub upload_pack: ServiceSetting,
    pub upload_archive: ServiceSetting,
    pub receive_pack: ServiceSetting,
}

impl Default for Services {
    fn default() -> Self {
        let on = ServiceSetting {
            enabled: true,
            overridable: true,
        };
        let off = ServiceSetting {
            enabled: false,
            overridable: true,
        };
        Services {
            upload_pack: on,
            upload_archive: off,
            receive_pack: off,
        }
    }
}

impl Services {
    pub fn get(&self, service: Service) -> ServiceSetting {
        match service {
            Service::UploadPack => self.upload_pack,
            Service::UploadArchive => self.upload_archive,
            Service::ReceivePack => self.receive_pack,
        }
    }

    pub fn get_mut(&mut self, service: Service) -> &mut ServiceSetting {
        match service {
            Service::UploadPack => &mut self.upload_pack,
            Service::UploadArchive => &mut self.upload_archive,
            Service::ReceivePack => &mut self.receive_pack,
        }
    }

    /// Is `service` enabled for a repository whose `daemon.<name>` is `repo_setting`?
    pub fn enabled_for(&self, service: Service, repo_setting: Option<bool>) -> bool {
        let s = self.get(service);
        match repo_setting {
            Some(on) if s.overridable => on,
            _ => s.enabled,
        }
    }
}

/// Run `--access-hook` as git daemon does: `hook service path host canonical-host ip
/// port`, with `REMOTE_ADDR`/`REMOTE_PORT` in its environment. A non-zero exit refuses
/// the request; the first line the hook printed becomes the reason (only shown to
/// the client with `--informative-errors`). The hook gets `timeout` to decide.
pub async fn run_access_hook(
    hook: &str,
    service: Service,
    path: &Path,
    host: &HostInfo,
    timeout: std::time::Duration,
) -> Result<(), String> {
    let (canonical, ip) = (
        host.canonical_hostname().to_string(),
        host.ip_address().to_string(),
    );
    // Like git's run-command with use_shell: plain paths run directly, anything with
    // shell syntax through `sh -c`.
    let mut cmd = if hook
        .bytes()
        .any(|b| b"|&;<>()$`\\\"' \t\n*?[#~=%".contains(&b))
    {
        let mut c = tokio::process::Command::new("sh");
        c.arg("-c").arg(format!("{hook} \"$@\"")).arg(hook);
        c
    } else {
        tokio::process::Command::new(hook)
    };
    cmd.arg(service.name())
        .arg(path)
        .arg(&host.hostname)
        .arg(canonical)
        .arg(ip)
        .arg(&host.port);
    match host.peer {
        Some(peer) => {
            let addr = match peer.ip() {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            };
            cmd.env("REMOTE_ADDR", addr)
                .env("REMOTE_PORT", peer.port().to_string());
        }
        None => {
            cmd.env_remove("REMOTE_ADDR").env_remove("REMOTE_PORT");
        }
    }
    cmd.stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    cmd.kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| {
        tracing::warn!("daemon access hook '{hook}' failed to start: {e}");
        "service rejected".to_string()
    })?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            tracing::warn!("daemon access hook '{hook}' failed: {e}");
            return Err("service rejected".into());
        }
        Err(_) => {
            tracing::warn!("daemon access hook '{hook}' timed out");
            return Err("service rejected".into());
        }
    };
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.trim_start().lines().next().unwrap_or("").trim_end();
    Err(if line.is_empty() {
        "service rejected".into()
    } else {
        line.to_string()
    })
}

/// Is `dir`, with every symbolic link resolved, inside `base`?
fn inside(base: &Path, dir: &Path) -> bool {
    match (base.canonicalize(), dir.canonicalize()) {
        (Ok(base), Ok(dir)) => dir.starts_with(base),
        _ => false,
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
    enter_repo_as(path.as_os_str().as_bytes(), path.as_os_str().as_bytes())
}

/// The non-strict `enter_repo`: `validated` is the path as the whitelist and logs see
/// it (for `~user` paths git keeps the `~user` form), `actual` the one on disk.
fn enter_repo_as(validated: &[u8], actual: &[u8]) -> Option<Resolved> {
    let trim = |mut p: &[u8]| {
        while p.len() > 1 && p.ends_with(b"/") {
            p = &p[..p.len() - 1];
        }
        p.to_vec()
    };
    let (validated, actual) = (trim(validated), trim(actual));
    if actual.len() >= 4096 {
        return None;
    }
    for suffix in SUFFIXES {
        let with = |p: &[u8]| PathBuf::from(OsStr::from_bytes(&[p, suffix.as_bytes()].concat()));
        let candidate = with(&actual);
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if meta.is_file() || (meta.is_dir() && is_git_directory(&candidate)) {
            let git_dir = follow_gitfile(&candidate)?;
            return is_git_directory(&git_dir).then(|| Resolved {
                path: with(&validated),
                git_dir,
            });
        }
    }
    None
}

/// `~alice/foo` with `--user-path=DIR` is `<home of alice>/DIR/foo` (without DIR:
/// `<home>/foo`), as git daemon rewrites it before `enter_repo` expands `~alice`.
fn user_repo(requested: &[u8], user_path: &str) -> Option<Resolved> {
    let after_tilde = &requested[1..];
    let slash = after_tilde
        .iter()
        .position(|&b| b == b'/')
        .unwrap_or(after_tilde.len());
    let (user, rest) = after_tilde.split_at(slash);
    let mut validated = requested[..1 + slash].to_vec();
    if !user_path.is_empty() {
        validated.push(b'/');
        validated.extend_from_slice(user_path.as_bytes());
    }
    validated.extend_from_slice(rest);
    let home = home_of(user)?;
    let mut actual = home.into_os_string().into_vec();
    actual.extend_from_slice(&validated[1 + slash..]);
    enter_repo_as(&validated, &actual)
}

/// The home directory of a user (`getpwnam_r`).
fn home_of(user: &[u8]) -> Option<PathBuf> {
    if user.is_empty() {
        return None;
    }
    let name = std::ffi::CString::new(user).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: getpwnam_r writes into `pwd` and `buf`, both valid for its duration;
    // pw_dir points into `buf`, which outlives the read below.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        if libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        ) != 0
            || result.is_null()
        {
            return None;
        }
        let dir = std::ffi::CStr::from_ptr(pwd.pw_dir);
        Some(PathBuf::from(OsStr::from_bytes(dir.to_bytes())))
    }
}

/// Expand an `--interpolated-path` template (`daemon.c: expand_path`). Unknown
/// placeholders stay as they are.
fn interpolate(template: &str, dir: &[u8], host: &HostInfo) -> Vec<u8> {
    let mut out = Vec::with_capacity(template.len() + dir.len());
    let mut rest = template.as_bytes();
    while let Some(pos) = rest.iter().position(|&b| b == b'%') {
        out.extend_from_slice(&rest[..pos]);
        rest = &rest[pos + 1..];
        let (value, used): (&[u8], usize) = if rest.starts_with(b"CH") {
            (host.canonical_hostname().as_bytes(), 2)
        } else if rest.starts_with(b"IP") {
            (host.ip_address().as_bytes(), 2)
        } else if rest.starts_with(b"H") {
            (host.hostname.as_bytes(), 1)
        } else if rest.starts_with(b"P") {
            (host.port.as_bytes(), 1)
        } else if rest.starts_with(b"D") {
            (dir, 1)
        } else if rest.starts_with(b"%") {
            (b"%", 1)
        } else {
            (b"%", 0)
        };
        out.extend_from_slice(value);
        rest = &rest[used..];
    }
    out.extend_from_slice(rest);
    out
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
        assert_eq!(
            p.resolve(b"/a", &HostInfo::default()).unwrap().git_dir,
            base.join("a.git")
        );
        assert_eq!(
            p.resolve(b"/a.git/", &HostInfo::default()).unwrap().path,
            base.join("a.git")
        );
        assert_eq!(
            p.resolve(b"/work", &HostInfo::default()),
            Err(Denied::NotExported)
        );
        assert_eq!(
            p.resolve(b"/missing", &HostInfo::default()),
            Err(Denied::NoSuchRepository)
        );
        assert_eq!(
            p.resolve(b"/../a.git", &HostInfo::default()),
            Err(Denied::NoSuchRepository)
        );
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
        assert_eq!(
            p.resolve(b"/work", &HostInfo::default()).unwrap().git_dir,
            base.join("work/.git")
        );
        p.strict_paths = true;
        assert_eq!(
            p.resolve(b"/a", &HostInfo::default()),
            Err(Denied::NoSuchRepository)
        );
        p.whitelist = vec![base.join("a.git")];
        assert!(p.resolve(b"/a.git", &HostInfo::default()).is_ok());
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
        assert!(p.resolve(&abs("pub/x.git"), &HostInfo::default()).is_ok());
        assert_eq!(
            p.resolve(&abs("private/y.git"), &HostInfo::default()),
            Err(Denied::NoSuchRepository)
        );
        // A prefix must end at a path component.
        let p2 = Policy {
            export_all: true,
            whitelist: vec![base.join("pu")],
            ..Default::default()
        };
        assert_eq!(
            p2.resolve(&abs("pub/x.git"), &HostInfo::default()),
            Err(Denied::NoSuchRepository)
        );
        std::fs::remove_dir_all(base).unwrap();
    }
}
