//! Differential tests against `git upload-pack` (the oracle): the same request bytes
//! go to git and to gitd, and the protocol lines that come back must be the same.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use support::{Gitd, fixture, git, git_cmd, normalize, oracle, ours, pkt, pkt_lines, rev, scratch};

fn setup(name: &str) -> (std::path::PathBuf, std::path::PathBuf, Gitd) {
    let dir = scratch(name);
    let repo = fixture(&dir, "repo.git", 40);
    // A symref besides HEAD, and an unborn one, to exercise ls-refs.
    git(
        &repo,
        &["symbolic-ref", "refs/heads/alias", "refs/heads/side"],
    );
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    (dir, repo, gitd)
}

#[test]
fn v0_ref_advertisement_matches_git() {
    let (_dir, repo, gitd) = setup("adv-v0");
    let ours = normalize(pkt_lines(&ours(gitd.port, false, b"0000")));
    let theirs = normalize(pkt_lines(&oracle(&repo, b"0000", false)));
    assert_eq!(ours, theirs);
    assert!(ours.iter().any(|l| l.ends_with("refs/tags/nested^{}\n")));
}

/// Peeled tags come from `packed-refs` as git takes them: a `^` line is used as it
/// is, and under the `fully-peeled` trait a packed ref without one is not a tag (no
/// object is read, so git advertises no `^{}` even for a tag object); without the
/// traits, and for loose refs, the objects are read.
#[test]
fn peeled_values_follow_packed_refs_as_git_does() {
    let (_dir, repo, gitd) = setup("adv-packed");
    git(&repo, &["pack-refs", "--all"]);
    let packed = std::fs::read_to_string(repo.join("packed-refs")).unwrap();
    assert!(
        packed.starts_with("# pack-refs with: peeled fully-peeled"),
        "{packed}"
    );
    // Drop the `^` line of refs/tags/v1.0 (an annotated tag), keep the others.
    let mut lines: Vec<&str> = Vec::new();
    for line in packed.lines() {
        if line.starts_with('^') && lines.last().is_some_and(|l| l.ends_with(" refs/tags/v1.0")) {
            continue;
        }
        lines.push(line);
    }
    let without_peel = lines.join("\n") + "\n";
    let ls_refs_peel = {
        let mut req = pkt(b"command=ls-refs\n");
        req.extend(b"0001");
        req.extend(pkt(b"peel\n"));
        req.extend(b"0000");
        req
    };
    for (header, tag_peeled) in [
        ("# pack-refs with: peeled fully-peeled sorted ", false),
        ("# pack-refs with: sorted ", true),
    ] {
        let body = without_peel.split_once('\n').unwrap().1;
        std::fs::write(repo.join("packed-refs"), format!("{header}\n{body}")).unwrap();
        let ours_v0 = normalize(pkt_lines(&ours(gitd.port, false, b"0000")));
        let theirs_v0 = normalize(pkt_lines(&oracle(&repo, b"0000", false)));
        assert_eq!(ours_v0, theirs_v0, "{header}");
        assert_eq!(
            ours_v0.iter().any(|l| l.ends_with("refs/tags/v1.0^{}\n")),
            tag_peeled,
            "{header}: {ours_v0:?}"
        );
        // The other tags kept their `^` lines either way.
        assert!(ours_v0.iter().any(|l| l.ends_with("refs/tags/nested^{}\n")));
        let ours_v2 = normalize(pkt_lines(&ours(gitd.port, true, &ls_refs_peel)));
        let theirs_v2 = normalize(pkt_lines(&oracle(&repo, &ls_refs_peel, true)));
        assert_eq!(ours_v2, theirs_v2, "{header}");
    }
    // A loose ref overrides its packed entry and is peeled by reading the tag.
    let tag = rev(&repo, "refs/tags/v1.0");
    std::fs::create_dir_all(repo.join("refs/tags")).unwrap();
    std::fs::write(repo.join("refs/tags/v1.0"), format!("{tag}\n")).unwrap();
    std::fs::write(
        repo.join("packed-refs"),
        format!(
            "# pack-refs with: peeled fully-peeled sorted \n{}",
            without_peel.split_once('\n').unwrap().1
        ),
    )
    .unwrap();
    let ours_v0 = normalize(pkt_lines(&ours(gitd.port, false, b"0000")));
    let theirs_v0 = normalize(pkt_lines(&oracle(&repo, b"0000", false)));
    assert_eq!(ours_v0, theirs_v0);
}

#[test]
fn v2_ls_refs_matches_git() {
    let (_dir, repo, gitd) = setup("ls-refs");
    let arg_sets: &[&[&str]] = &[
        &[],
        &["symrefs"],
        &["peel"],
        &["symrefs", "peel", "ref-prefix refs/tags/"],
        &[
            "symrefs",
            "unborn",
            "ref-prefix HEAD",
            "ref-prefix refs/heads/",
        ],
        &["ref-prefix refs/heads/ma", "ref-prefix refs/nothing"],
    ];
    for args in arg_sets {
        let mut req = pkt(b"command=ls-refs\n");
        req.extend(pkt(b"object-format=sha1\n"));
        req.extend(b"0001");
        for a in *args {
            req.extend(pkt(format!("{a}\n").as_bytes()));
        }
        req.extend(b"0000");
        let ours = normalize(pkt_lines(&ours(gitd.port, true, &req)));
        let theirs = normalize(pkt_lines(&oracle(&repo, &req, true)));
        assert_eq!(ours, theirs, "ls-refs {args:?}");
    }
    // Unborn HEAD: reported only when asked for with both unborn and symrefs.
    git(&repo, &["symbolic-ref", "HEAD", "refs/heads/unborn"]);
    for args in [
        &["symrefs", "unborn"][..],
        &["symrefs"][..],
        &["unborn"][..],
    ] {
        let mut req = pkt(b"command=ls-refs\n");
        req.extend(b"0001");
        for a in args {
            req.extend(pkt(format!("{a}\n").as_bytes()));
        }
        req.extend(b"0000");
        let ours = normalize(pkt_lines(&ours(gitd.port, true, &req)));
        let theirs = normalize(pkt_lines(&oracle(&repo, &req, true)));
        assert_eq!(ours, theirs, "unborn, ls-refs {args:?}");
    }
}

#[test]
fn v0_negotiation_matches_git_for_each_ack_mode() {
    let (_dir, repo, gitd) = setup("nego-v0");
    let main = rev(&repo, "main");
    let side = rev(&repo, "side");
    let unknown = "1234567890123456789012345678901234567890";
    let modes = [
        "",
        " multi_ack",
        " multi_ack_detailed",
        " multi_ack_detailed no-done",
        " multi_ack no-done",
    ];
    for mode in modes {
        for haves in [
            vec![],
            vec![unknown.to_string()],
            vec![
                unknown.to_string(),
                rev(&repo, "main~5"),
                rev(&repo, "main~10"),
            ],
            vec![rev(&repo, "side~1"), unknown.to_string()],
        ] {
            let mut req = pkt(format!("want {main} side-band-64k ofs-delta{mode}\n").as_bytes());
            req.extend(pkt(format!("want {side}\n").as_bytes()));
            req.extend(b"0000");
            // Two rounds, then done.
            for have in &haves {
                req.extend(pkt(format!("have {have}\n").as_bytes()));
            }
            req.extend(b"0000");
            req.extend(pkt(format!("have {}\n", rev(&repo, "main~20")).as_bytes()));
            req.extend(b"0000");
            req.extend(pkt(b"done\n"));
            let ours = normalize(pkt_lines(&ours(gitd.port, false, &req)));
            let theirs = normalize(pkt_lines(&oracle(&repo, &req, false)));
            assert_eq!(ours, theirs, "mode {mode:?}, haves {haves:?}");
            assert_eq!(
                ours.last().map(String::as_str),
                Some("<side-band>"),
                "a pack follows ({mode:?})"
            );
        }
    }
}

#[test]
fn v2_fetch_acknowledgments_match_git() {
    let (_dir, repo, gitd) = setup("nego-v2");
    let main = rev(&repo, "main");
    let unknown = "1234567890123456789012345678901234567890";
    let cases: Vec<(Vec<String>, bool, bool)> = vec![
        (vec![unknown.into()], false, false),
        (vec![unknown.into(), rev(&repo, "main~3")], false, false),
        (vec![rev(&repo, "side")], false, false),
        (vec![rev(&repo, "main~3")], false, true),
        (vec![rev(&repo, "main~3")], true, false),
    ];
    for (haves, done, wait_for_done) in cases {
        let mut req = pkt(b"command=fetch\n");
        req.extend(b"0001");
        req.extend(pkt(format!("want {main}\n").as_bytes()));
        req.extend(pkt(b"ofs-delta\n"));
        if wait_for_done {
            req.extend(pkt(b"wait-for-done\n"));
        }
        for have in &haves {
            req.extend(pkt(format!("have {have}\n").as_bytes()));
        }
        if done {
            req.extend(pkt(b"done\n"));
        }
        req.extend(b"0000");
        let ours = normalize(pkt_lines(&ours(gitd.port, true, &req)));
        let theirs = normalize(pkt_lines(&oracle(&repo, &req, true)));
        assert_eq!(
            ours, theirs,
            "haves {haves:?} done={done} wait-for-done={wait_for_done}"
        );
    }
}

/// Feed a raw pack to `git index-pack --strict` and return the number of objects.
fn index_pack(dir: &Path, pack: &[u8]) -> usize {
    let check = dir.join("check.git");
    let _ = std::fs::remove_dir_all(&check);
    git(dir, &["init", "-q", "--bare", check.to_str().unwrap()]);
    let mut child = git_cmd(&check)
        .args(["index-pack", "--stdin", "--strict"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(pack).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "index-pack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    u32::from_be_bytes(pack[8..12].try_into().unwrap()) as usize
}

#[test]
fn packs_without_side_band_or_ofs_delta_are_valid() {
    let (dir, repo, gitd) = setup("raw-pack");
    let main = rev(&repo, "main");
    let expected = git(&repo, &["rev-list", "--objects", "main"])
        .lines()
        .count();
    // No capabilities at all: NAK, then the bare pack, with ref deltas only.
    let mut req = pkt(format!("want {main}\n").as_bytes());
    req.extend(b"0000");
    req.extend(pkt(b"done\n"));
    let out = ours(gitd.port, false, &req);
    // After the advertisement: NAK, then the pack right away.
    let nak = out.windows(8).position(|w| w == b"0008NAK\n").expect("NAK");
    assert_eq!(&out[nak + 8..nak + 12], b"PACK");
    assert_eq!(index_pack(&dir, &out[nak + 8..]), expected);

    // The old 1000-byte side-band.
    let mut req = pkt(format!("want {main} side-band ofs-delta no-progress\n").as_bytes());
    req.extend(b"0000");
    req.extend(pkt(b"done\n"));
    let out = ours(gitd.port, false, &req);
    let mut rest = &out[out.windows(8).position(|w| w == b"0008NAK\n").unwrap() + 8..];
    let mut pack = Vec::new();
    while !rest.is_empty() {
        let n = usize::from_str_radix(std::str::from_utf8(&rest[..4]).unwrap(), 16).unwrap();
        if n == 0 {
            break;
        }
        assert!(n <= 1000, "side-band lines are at most 1000 bytes, got {n}");
        assert_eq!(rest[4], 1, "no-progress: only pack data");
        pack.extend_from_slice(&rest[5..n]);
        rest = &rest[n..];
    }
    assert_eq!(index_pack(&dir, &pack), expected);
}
