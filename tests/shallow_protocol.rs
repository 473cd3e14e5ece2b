//! Differential tests of the shallow parts of the protocol against `git upload-pack`
//! (the oracle): the same request bytes go to both, and the `shallow`/`unshallow`
//! lines (v0 shallow list, v2 `shallow-info` section), the negotiation after them and
//! the refusals must be the same.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{
    Gitd, fixture, git, git_bounded, merge_depth, normalize, oracle, oracle_output, ours, pkt,
    pkt_lines, rev, scratch,
};

const LIMIT: Duration = Duration::from_secs(120);

struct Ctx {
    dir: PathBuf,
    repo: PathBuf,
    gitd: Gitd,
}

fn setup(name: &str) -> Ctx {
    let dir = scratch(name);
    let repo = fixture(&dir, "repo.git", 40);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    Ctx { dir, repo, gitd }
}

/// A v0 request: the wants (capabilities on the first), `lines`, a flush, then
/// `after` (haves, rounds) and `done`.
fn v0_request(wants: &[String], caps: &str, lines: &[String], after: &[String]) -> Vec<u8> {
    let mut req = Vec::new();
    for (i, w) in wants.iter().enumerate() {
        let caps = if i == 0 {
            format!(" {caps}")
        } else {
            String::new()
        };
        req.extend(pkt(format!("want {w}{caps}\n").as_bytes()));
    }
    for l in lines {
        req.extend(pkt(format!("{l}\n").as_bytes()));
    }
    req.extend(b"0000");
    for l in after {
        if l == "0000" {
            req.extend(b"0000");
        } else {
            req.extend(pkt(format!("{l}\n").as_bytes()));
        }
    }
    req.extend(pkt(b"done\n"));
    req
}

/// A v2 fetch with `args` (each one pkt-line).
fn v2_request(args: &[String]) -> Vec<u8> {
    let mut req = pkt(b"command=fetch\n");
    req.extend(pkt(b"object-format=sha1\n"));
    req.extend(b"0001");
    for a in args {
        req.extend(pkt(format!("{a}\n").as_bytes()));
    }
    req.extend(b"0000");
    req
}

/// Requests (wants, shallow lines and deepen arguments) worth comparing line by line.
fn shallow_cases(repo: &Path) -> Vec<(Vec<String>, Vec<String>)> {
    let r = |s: &str| rev(repo, s);
    let (_, above) = merge_depth(repo);
    let ct = |s: &str| {
        git(repo, &["log", "-1", "--format=%ct", s])
            .trim()
            .to_string()
    };
    vec![
        (vec![r("main")], vec!["deepen 1".into()]),
        (vec![r("main"), r("side")], vec!["deepen 3".into()]),
        // A tag chain is peeled to its commit.
        (vec![r("refs/tags/nested")], vec!["deepen 2".into()]),
        // Across the merge, and ending exactly on it.
        (vec![r("main")], vec![format!("deepen {}", above + 3)]),
        (vec![r("main")], vec![format!("deepen {}", above + 1)]),
        // Client shallow commits: kept, unshallowed, or left alone.
        (
            vec![r("main")],
            vec![
                format!("shallow {}", r("main~1")),
                format!("shallow {}", r("main~2")),
                format!("shallow {}", r("main~7")),
                "deepen 2".into(),
            ],
        ),
        (
            vec![r("main")],
            vec![
                format!("shallow {}", r("main~3")),
                "deepen 2147483647".into(),
            ],
        ),
        (
            vec![r("main")],
            vec![
                format!("shallow {}", r("main~2")),
                "deepen-relative".into(),
                "deepen 3".into(),
            ],
        ),
        // Shallow lines alone: no list in v0, an empty section in v2.
        (vec![r("main")], vec![format!("shallow {}", r("main~4"))]),
        // Unknown shallow commits are ignored.
        (
            vec![r("main")],
            vec![
                "shallow 1234567890123456789012345678901234567890".into(),
                "deepen 1".into(),
            ],
        ),
        (
            vec![r("main"), r("side")],
            vec![format!("deepen-since {}", ct("main~5"))],
        ),
        (vec![r("main")], vec!["deepen-since 0".into()]),
        (
            vec![r("main"), r("side"), r("topic")],
            vec![
                "deepen-not topic".into(),
                "deepen-not refs/tags/v1.0".into(),
            ],
        ),
        (
            vec![r("main")],
            vec![
                format!("shallow {}", r("main~1")),
                format!("deepen-since {}", ct("main~4")),
                "deepen-not side".into(),
            ],
        ),
    ]
}

#[test]
fn v0_shallow_lists_match_git() {
    let ctx = setup("raw-v0");
    let unknown = "1234567890123456789012345678901234567890".to_string();
    for (wants, lines) in shallow_cases(&ctx.repo) {
        for (caps, after) in [
            ("side-band-64k ofs-delta shallow no-progress", vec![]),
            // Negotiation after the shallow list sees the boundary as grafts and
            // the unshallowed commits' parents as wants.
            (
                "side-band-64k ofs-delta shallow no-progress multi_ack_detailed",
                vec![
                    format!("have {}", rev(&ctx.repo, "main~1")),
                    format!("have {unknown}"),
                    "0000".into(),
                    format!("have {}", rev(&ctx.repo, "main~3")),
                    "0000".into(),
                ],
            ),
        ] {
            // v0 asks for deepen-relative as a capability, not with a line.
            let relative = lines.iter().any(|l| l == "deepen-relative");
            let lines: Vec<String> = lines
                .iter()
                .filter(|l| *l != "deepen-relative")
                .cloned()
                .collect();
            let caps = if relative {
                format!("{caps} deepen-relative")
            } else {
                caps.to_string()
            };
            let req = v0_request(&wants, &caps, &lines, &after);
            let ours = normalize(pkt_lines(&ours(ctx.gitd.port, false, &req)));
            let theirs = normalize(pkt_lines(&oracle(&ctx.repo, &req, false)));
            assert_eq!(ours, theirs, "wants {wants:?}, {lines:?}, caps {caps}");
            assert_eq!(ours.last().map(String::as_str), Some("<side-band>"));
        }
    }
}

#[test]
fn v2_shallow_info_matches_git() {
    let ctx = setup("raw-v2");
    for (wants, lines) in shallow_cases(&ctx.repo) {
        let mut args: Vec<String> = wants.iter().map(|w| format!("want {w}")).collect();
        args.extend(lines.iter().cloned());
        args.push("ofs-delta".into());
        args.push("no-progress".into());
        for tail in [
            vec!["done".to_string()],
            // A negotiation round: acknowledgments only, no shallow-info yet.
            vec![format!("have {}", rev(&ctx.repo, "main~2"))],
            vec![format!("have {}", rev(&ctx.repo, "side")), "done".into()],
        ] {
            let mut a = args.clone();
            a.extend(tail.iter().cloned());
            let req = v2_request(&a);
            let ours = normalize(pkt_lines(&ours(ctx.gitd.port, true, &req)));
            let theirs = normalize(pkt_lines(&oracle(&ctx.repo, &req, true)));
            assert_eq!(ours, theirs, "{a:?}");
        }
    }
}

#[test]
fn deepen_relative_with_several_shallow_commits_matches_git() {
    // git walks the reachable shallow commits in the order of its object hash table,
    // so the order of the boundary lines may differ: compare them as sets.
    let ctx = setup("relative-set");
    let r = |s: &str| rev(&ctx.repo, s);
    let (_, above) = merge_depth(&ctx.repo);
    let mut lines = vec![
        format!("shallow {}", r("main~2")),
        format!("shallow {}", r(&format!("main~{}^2", above))),
        format!("shallow {}", r("side~1")),
    ];
    lines.push("deepen-relative".into());
    lines.push("deepen 2".into());
    let wants = [r("main"), r("side")];
    let mut args: Vec<String> = wants.iter().map(|w| format!("want {w}")).collect();
    args.extend(lines.iter().cloned());
    args.push("done".into());
    let req = v2_request(&args);
    let mut ours = normalize(pkt_lines(&ours(ctx.gitd.port, true, &req)));
    let mut theirs = normalize(pkt_lines(&oracle(&ctx.repo, &req, true)));
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
    assert!(ours.iter().filter(|l| l.starts_with("unshallow ")).count() == 3);
}

#[test]
fn bad_shallow_requests_are_refused_like_git() {
    let ctx = setup("refused");
    // `dup` is both a branch and a tag: ambiguous. `nosuch` matches nothing.
    git(&ctx.repo, &["branch", "dup", "main~3"]);
    git(&ctx.repo, &["tag", "dup", "main~4"]);
    let main = rev(&ctx.repo, "main");
    let tree = rev(&ctx.repo, "main^{tree}");
    // Only ref names: an object id or a revision expression names no ref.
    let by_id = format!("deepen-not {}", rev(&ctx.repo, "main~3"));
    let by_id_message = format!("git upload-pack: ambiguous deepen-not: {by_id}");
    for (line, message) in [
        (&by_id[..], &by_id_message[..]),
        (
            "deepen-not main~3",
            "git upload-pack: ambiguous deepen-not: deepen-not main~3",
        ),
        (
            "deepen-not dup",
            "git upload-pack: ambiguous deepen-not: deepen-not dup",
        ),
        (
            "deepen-not nosuch",
            "git upload-pack: ambiguous deepen-not: deepen-not nosuch",
        ),
        (
            &format!("shallow {tree}")[..],
            &format!("invalid shallow object {tree}")[..],
        ),
        ("deepen 0", "Invalid deepen: deepen 0"),
        (
            "deepen-relative",
            "git upload-pack: protocol error, expected to get object ID, not 'deepen-relative'",
        ),
    ] {
        for v2 in [false, true] {
            if v2 && line == "deepen-relative" {
                continue; // a valid argument in v2
            }
            let req = if v2 {
                v2_request(&[format!("want {main}"), line.to_string(), "done".into()])
            } else {
                v0_request(
                    std::slice::from_ref(&main),
                    "side-band-64k",
                    &[line.to_string()],
                    &[],
                )
            };
            let theirs = oracle_output(&ctx.repo, &req, v2);
            assert!(!theirs.status.success());
            assert!(
                String::from_utf8_lossy(&theirs.stderr).contains(message),
                "git says {}",
                String::from_utf8_lossy(&theirs.stderr)
            );
            let ours = pkt_lines(&ours(ctx.gitd.port, v2, &req));
            assert!(
                ours.iter()
                    .any(|l| l.trim_end() == format!("ERR {message}")),
                "{line} (v2={v2}): {ours:?}"
            );
            assert!(
                !ours
                    .iter()
                    .any(|l| l.starts_with("shallow") || l == "packfile\n")
            );
        }
    }
    // And the real client gets an error from both servers.
    for url in [
        ctx.gitd.url("/repo.git"),
        format!("file://{}", ctx.repo.display()),
    ] {
        let dest = ctx.dir.join("refused-clone");
        let out = git_bounded(
            &ctx.dir,
            &[
                "clone",
                "-q",
                "--shallow-exclude=dup",
                &url,
                dest.to_str().unwrap(),
            ],
            LIMIT,
        );
        assert!(!out.status.success(), "{url}");
    }
}

#[test]
fn deepen_not_may_name_a_hidden_ref_like_in_git() {
    // git resolves deepen-not without looking at uploadpack.hideRefs.
    let ctx = setup("hidden-not");
    git(
        &ctx.repo,
        &["config", "uploadpack.hideRefs", "refs/heads/side"],
    );
    let main = rev(&ctx.repo, "main");
    for v2 in [false, true] {
        let req = if v2 {
            v2_request(&[
                format!("want {main}"),
                "deepen-not side".into(),
                "done".into(),
            ])
        } else {
            v0_request(
                std::slice::from_ref(&main),
                "side-band-64k shallow",
                &["deepen-not side".into()],
                &[],
            )
        };
        let ours = normalize(pkt_lines(&ours(ctx.gitd.port, v2, &req)));
        let theirs = normalize(pkt_lines(&oracle(&ctx.repo, &req, v2)));
        assert_eq!(ours, theirs, "v2={v2}");
        assert!(ours.iter().any(|l| l.starts_with("shallow ")), "{ours:?}");
        assert!(!ours.iter().any(|l| l.contains("refs/heads/side")));
    }
}

#[test]
fn shallow_capabilities_are_advertised_in_gits_order() {
    let ctx = setup("caps");
    let caps = |out: Vec<u8>| -> Vec<String> {
        let first = pkt_lines(&out).into_iter().next().unwrap();
        let caps = first.split('\0').nth(1).unwrap().trim_end().to_string();
        caps.split(' ')
            .filter(|c| !c.starts_with("agent=") && !c.starts_with("symref="))
            .map(str::to_owned)
            .collect()
    };
    let ours = caps(ours(ctx.gitd.port, false, b"0000"));
    let theirs = caps(oracle(&ctx.repo, b"0000", false));
    for c in ["shallow", "deepen-since", "deepen-not", "deepen-relative"] {
        assert!(ours.iter().any(|x| x == c), "{c} in {ours:?}");
    }
    // The same capabilities in git's order: git daemon's upload-pack (not stateless)
    // offers no `no-done`, so neither do we.
    assert_eq!(ours, theirs);
    assert!(!ours.iter().any(|c| c == "no-done"), "{ours:?}");

    let v2 = pkt_lines(&support::ours(ctx.gitd.port, true, b"0000"));
    let fetch = v2.iter().find(|l| l.starts_with("fetch=")).unwrap();
    assert!(fetch.starts_with("fetch=shallow wait-for-done"), "{fetch}");
}
