//! `gitd check`: which repositories under the base path would be served, which would
//! not and why, and what would make clones faster. The decisions are the server's
//! own ([`Policy::resolve`]), so what `check` says is what clients get.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::hostinfo::HostInfo;
use crate::policy::{Denied, Policy};

/// How deep below the base path to look for repositories (`group/sub/project.git`).
const MAX_DEPTH: usize = 4;
/// How many directories to look at, at most.
const MAX_DIRS: usize = 100_000;

/// What `check` found about one repository.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Served { bitmaps: bool, commit_graph: bool },
    Skipped(String),
    Problem(String),
}

pub fn run(policy: &Policy) -> ExitCode {
    let Some(base) = &policy.base_path else {
        eprintln!("gitd check: needs --base-path=DIR (the directory to look in)");
        return ExitCode::from(2);
    };
    let entries = match check(policy, base) {
        Ok(e) => e,
        Err(e) => {
            println!("PROBLEM  {}: {e}", base.display());
            return ExitCode::FAILURE;
        }
    };
    let (mut served, mut skipped, mut problems) = (0, 0, 0);
    for (path, verdict) in &entries {
        let shown = String::from_utf8_lossy(path.as_os_str().as_bytes());
        match verdict {
            Verdict::Served {
                bitmaps,
                commit_graph,
            } => {
                served += 1;
                let yn = |b: &bool| if *b { "yes" } else { "no" };
                print!(
                    "served   {shown}  bitmaps: {}  commit-graph: {}",
                    yn(bitmaps),
                    yn(commit_graph)
                );
                if !bitmaps || !commit_graph {
                    let dir = base.join(path.strip_prefix("/").unwrap_or(path));
                    print!(
                        "  faster clones: git -C {} repack -adb && git -C {0} commit-graph write --reachable",
                        dir.display()
                    );
                }
                println!();
            }
            Verdict::Skipped(why) => {
                skipped += 1;
                println!("skipped  {shown}  {why}");
            }
            Verdict::Problem(why) => {
                problems += 1;
                println!("PROBLEM  {shown}  {why}");
            }
        }
    }
    println!(
        "{served} served, {skipped} skipped, {problems} problems under {}",
        base.display()
    );
    if problems > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Look at every repository below `base`; paths are returned as clients request them.
pub fn check(policy: &Policy, base: &Path) -> std::io::Result<Vec<(PathBuf, Verdict)>> {
    std::fs::read_dir(base)?;
    let mut out = Vec::new();
    let mut stack = vec![(base.to_owned(), 0usize)];
    let mut seen_dirs = 0;
    while let Some((dir, depth)) = stack.pop() {
        seen_dirs += 1;
        if seen_dirs > MAX_DIRS {
            break;
        }
        let Ok(read) = std::fs::read_dir(&dir) else {
            if dir != base {
                out.push((
                    request_path(base, &dir),
                    Verdict::Problem("unreadable directory".into()),
                ));
            }
            continue;
        };
        let mut children: Vec<PathBuf> = read
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        children.sort();
        for child in children.into_iter().rev() {
            if looks_like_repository(&child) {
                out.push((request_path(base, &child), verdict(policy, base, &child)));
            } else if depth + 1 < MAX_DEPTH {
                stack.push((child, depth + 1));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn request_path(base: &Path, dir: &Path) -> PathBuf {
    Path::new("/").join(dir.strip_prefix(base).unwrap_or(dir))
}

/// A bare repository, or a work tree with a `.git`.
fn looks_like_repository(dir: &Path) -> bool {
    dir.join("HEAD").is_file() && dir.join("objects").exists() || dir.join(".git").exists()
}

fn verdict(policy: &Policy, base: &Path, dir: &Path) -> Verdict {
    let requested = request_path(base, dir);
    let resolved = match policy.resolve(requested.as_os_str().as_bytes(), &HostInfo::default()) {
        Ok(r) => r,
        Err(Denied::NotExported) => {
            return Verdict::Skipped(
                "not exported: no git-daemon-export-ok (or run with --export-all)".into(),
            );
        }
        Err(_) => {
            let why = if !policy.symlinks_outside_base
                && std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_symlink())
            {
                "a symbolic link out of the base path (--allow-symlinks-outside-base serves it)"
            } else {
                "not served: not a complete repository, or outside the whitelist"
            };
            return Verdict::Skipped(why.into());
        }
    };
    if let Err(e) = std::fs::read(resolved.git_dir.join("HEAD")) {
        return Verdict::Problem(format!("unreadable: {e}"));
    }
    match gix::open_opts(&resolved.git_dir, gix::open::Options::isolated()) {
        Ok(repo) => {
            if let Some(why) = crate::handler::unserved_layout(&repo) {
                return Verdict::Skipped(why);
            }
            // Only a pack's own bitmap (`pack-*.bitmap` beside its pack): gitd does
            // not read multi-pack-index bitmaps.
            let pack_dir = resolved.git_dir.join("objects/pack");
            let bitmaps = std::fs::read_dir(&pack_dir)
                .map(|d| {
                    d.filter_map(|e| e.ok()).any(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        name.strip_suffix(".bitmap")
                            .filter(|stem| stem.starts_with("pack-"))
                            .is_some_and(|stem| pack_dir.join(format!("{stem}.pack")).is_file())
                    })
                })
                .unwrap_or(false);
            let info = resolved.git_dir.join("objects/info");
            let commit_graph =
                info.join("commit-graph").is_file() || info.join("commit-graphs").is_dir();
            Verdict::Served {
                bitmaps,
                commit_graph,
            }
        }
        Err(e) => match crate::handler::object_format(&resolved.git_dir) {
            Some(f) if !f.eq_ignore_ascii_case("sha1") => Verdict::Skipped(format!(
                "uses the {f} object format, which gitd does not serve"
            )),
            _ => Verdict::Problem(format!("cannot be opened: {e}")),
        },
    }
}
