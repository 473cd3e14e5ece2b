//! Every input of the fuzz corpora and every crash the fuzzers ever found goes
//! through the same entry points the fuzz targets use: none may panic.

use std::path::{Path, PathBuf};

/// Regression inputs for the limit on `combine:` nesting: a filter nested 8,000
/// levels deep once overflowed the stack where filters are applied.
const NESTING_LIMIT: &str = "nesting-limit-";

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut paths = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if !path
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with('.'))
            {
                paths.push(path);
            }
        }
    }
    paths.sort();
    paths
}

fn has(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn run_all(target: &str, f: fn(&[u8])) {
    let mut n = 0;
    for path in inputs(target) {
        f(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "no inputs for {target}");
}

#[test]
fn request_line_inputs() {
    run_all("request_line", gitd::fuzz::request_line);
}

#[test]
fn pkt_line_inputs() {
    run_all("pkt_line", gitd::fuzz::pkt_lines);
}

#[test]
fn v2_command_inputs() {
    run_all("v2_command", gitd::fuzz::v2_commands);
}

#[test]
fn v0_negotiation_inputs() {
    run_all("v0_negotiation", gitd::fuzz::v0_negotiation);
}

#[test]
fn push_command_inputs() {
    run_all("push_commands", gitd::fuzz::push_commands);
}

#[test]
fn filter_spec_inputs() {
    run_all("filter_spec", gitd::fuzz::filter_spec);
}

#[test]
fn archive_args_inputs() {
    run_all("archive_args", gitd::fuzz::archive_args);
}

#[test]
fn path_policy_inputs() {
    run_all("path_policy", gitd::fuzz::path_policy);
}

#[test]
fn session_inputs() {
    run_all("session", |data| {
        gitd::fuzz::session(data);
    });
}

/// The session target reaches every service: the seed requests get real answers,
/// not a refusal at the door.
#[test]
fn session_seeds_are_served() {
    let seed = |name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/session");
        gitd::fuzz::session(&std::fs::read(path.join(name)).unwrap())
    };
    for (name, expected) in [
        ("v0-ls", &b"refs/heads/main"[..]),
        ("v0-clone", b"PACK"),
        ("v0-shallow", b"shallow "),
        ("v0-filter", b"PACK"),
        ("v2-ls-refs", b"refs/tags/v1 peeled:"),
        ("v2-fetch", b"packfile\n"),
        ("v2-fetch-filter-combine", b"PACK"),
        ("v2-fetch-filter-bitmap", b"PACK"),
        ("v2-fetch-shallow", b"shallow-info\n"),
        ("v2-object-info", b"size"),
        ("v2-bundle-uri", b"bundle.one.uri=https://example.com/"),
        ("archive-tar", b"ustar"),
        ("archive-zip", b"PK\x03\x04"),
        ("push-ff", b"ok refs/heads/main"),
        ("push-full-pack-new-branch", b"ok refs/heads/topic"),
        ("push-non-ff", b"ok refs/heads/main"),
        ("push-stale-old", b"ng refs/heads/main"),
    ] {
        let response = seed(name);
        assert!(
            has(&response, expected),
            "{name}: no {:?} in {:?}",
            String::from_utf8_lossy(expected),
            String::from_utf8_lossy(&response)
        );
        assert!(!has(&response, b"ERR "), "{name}: refused");
    }
}

/// A filter nested 8,000 levels deep, through the parsers and whole fetches: the
/// fetches are refused with the limit's message.
#[test]
fn nested_filters() {
    let nested = |target: &str| {
        inputs(target).into_iter().filter(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with(NESTING_LIMIT))
        })
    };
    let mut n = 0;
    for path in nested("filter_spec") {
        gitd::fuzz::filter_spec(&std::fs::read(&path).unwrap());
        n += 1;
    }
    for path in nested("v2_command") {
        gitd::fuzz::v2_commands(&std::fs::read(&path).unwrap());
        n += 1;
    }
    for path in nested("session") {
        let response = gitd::fuzz::session(&std::fs::read(&path).unwrap());
        assert!(
            has(&response, b"too many sub-filters"),
            "{}: {:?}",
            path.display(),
            String::from_utf8_lossy(&response)
        );
        n += 1;
    }
    assert!(n >= 3, "nested filter inputs missing: {n}");
}
