//! Parity with `git upload-pack` for what a repository's configuration changes:
//! wants by object id, hidden refs, ref-in-want, object-info, sideband-all,
//! include-tag, large have lists, and repositories gitd cannot serve.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use support::oracle::{normalize, oracle, ours, pkt_lines as lines};
use support::{Gitd, fixture, git, git_cmd, git_output, pkt, rev, scratch};

/// Outcome of `git fetch <url> <sha>` into a fresh repository: Ok(true) if the
/// object arrived, Err(first error line) if the fetch failed.
fn fetch_by_id(dir: &Path, url: &str, id: &str, version: &str, tag: &str) -> Result<bool, String> {
    let dest = dir.join(format!("fetch-{tag}"));
    let _ = std::fs::remove_dir_all(&dest);
    git(dir, &["init", "-q", "--bare", dest.to_str().unwrap()]);
    let out = git_output(
        &dest,
        &[
            "-c",
            &format!("protocol.version={version}"),
            "fetch",
            "-q",
            url,
            id,
        ],
    );
    if out.status.success() {
        Ok(git_output(&dest, &["cat-file", "-e", id]).status.success())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .find(|l| l.starts_with("error:") || l.starts_with("fatal:"))
            .unwrap_or("")
            .to_string();
        // Over file:// git prints upload-pack's own stderr, over git:// the ERR line
        // ("remote error: ..."): compare the reason, not the framing.
        for reason in [
            "not our ref",
            "does not allow request for unadvertised object",
        ] {
            if line.contains(reason) {
                return Err(format!("{reason} {id}"));
            }
        }
        Err(line.replace(url, "<url>"))
    }
}

#[test]
fn want_by_id_follows_the_allow_settings_like_git() {
    let dir = scratch("want-by-id");
    let repo = fixture(&dir, "repo.git", 20);
    // A hidden ref, and a commit no ref reaches.
    git(&repo, &["update-ref", "refs/hidden/secret", "side~1"]);
    let tree = rev(&repo, "main^{tree}");
    let dangling = git(&repo, &["commit-tree", &tree, "-m", "dangling"])
        .trim()
        .to_string();
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    let oracle_url = format!("file://{}", repo.display());
    let targets = [
        ("reachable", rev(&repo, "main~3")),
        ("hidden-tip", rev(&repo, "refs/hidden/secret")),
        ("unreachable", dangling),
    ];
    let settings: &[&[(&str, &str)]] = &[
        &[("uploadpack.hideRefs", "refs/hidden")],
        &[
            ("uploadpack.hideRefs", "refs/hidden"),
            ("uploadpack.allowTipSHA1InWant", "true"),
        ],
        &[
            ("uploadpack.hideRefs", "refs/hidden"),
            ("uploadpack.allowReachableSHA1InWant", "true"),
        ],
        &[
            ("uploadpack.hideRefs", "refs/hidden"),
            ("uploadpack.allowAnySHA1InWant", "true"),
        ],
    ];
    let mut refused = 0;
    for (n, setting) in settings.iter().enumerate() {
        for key in [
            "uploadpack.allowTipSHA1InWant",
            "uploadpack.allowReachableSHA1InWant",
            "uploadpack.allowAnySHA1InWant",
            "uploadpack.hideRefs",
        ] {
            let _ = git_output(&repo, &["config", "--unset-all", key]);
        }
        for (k, v) in *setting {
            git(&repo, &["config", k, v]);
        }
        for (what, id) in &targets {
            for v in ["0", "2"] {
                let tag = format!("{n}-{what}-v{v}");
                let theirs = fetch_by_id(&dir, &oracle_url, id, v, &format!("o{tag}"));
                let ours = fetch_by_id(&dir, &gitd.url("/repo.git"), id, v, &format!("g{tag}"));
                assert_eq!(ours, theirs, "{setting:?}, want {what} over v{v}");
                refused += ours.is_err() as usize;
            }
        }
    }
    assert!(
        refused >= 4,
        "some of these requests must be refused ({refused})"
    );
}

#[test]
fn hidden_refs_are_not_advertised() {
    let dir = scratch("hidden");
    let repo = fixture(&dir, "repo.git", 10);
    git(&repo, &["update-ref", "refs/hidden/a", "main"]);
    git(&repo, &["update-ref", "refs/hidden/keep/b", "main"]);
    git(
        &repo,
        &["config", "--add", "transfer.hideRefs", "refs/hidden"],
    );
    git(
        &repo,
        &[
            "config",
            "--add",
            "uploadpack.hideRefs",
            "!refs/hidden/keep",
        ],
    );
    git(
        &repo,
        &["config", "--add", "uploadpack.hideRefs", "refs/tags/v1.0/"],
    );
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    for v in ["0", "2"] {
        let ours = git(
            &dir,
            &[
                "-c",
                &format!("protocol.version={v}"),
                "ls-remote",
                &gitd.url("/repo.git"),
            ],
        );
        let theirs = git(
            &dir,
            &[
                "-c",
                &format!("protocol.version={v}"),
                "ls-remote",
                repo.to_str().unwrap(),
            ],
        );
        assert_eq!(ours, theirs, "v{v}");
        assert!(!ours.contains("refs/hidden/a"));
        assert!(ours.contains("refs/hidden/keep/b"));
        assert!(!ours.contains("refs/tags/v1.0"));
    }
}

/// Run the same v2 request against gitd and the oracle; the normalized lines.
fn v2_both(repo: &Path, port: u16, request: &[u8]) -> (Vec<String>, Vec<String>) {
    (
        normalize(lines(&ours(port, true, request))),
        normalize(lines(&oracle(repo, request, true))),
    )
}

fn v2_request(command: &str, args: &[String]) -> Vec<u8> {
    let mut req = pkt(format!("command={command}\n").as_bytes());
    req.extend(b"0001");
    for a in args {
        req.extend(pkt(format!("{a}\n").as_bytes()));
    }
    req.extend(b"0000");
    req
}

#[test]
fn ref_in_want_object_info_and_sideband_all_match_git() {
    let dir = scratch("v2-extras");
    let repo = fixture(&dir, "repo.git", 10);
    git(&repo, &["config", "uploadpack.allowRefInWant", "true"]);
    git(&repo, &["config", "uploadpack.allowSidebandAll", "true"]);
    git(&repo, &["config", "transfer.advertiseObjectInfo", "true"]);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    let main = rev(&repo, "main");
    let blob = rev(&repo, "main:README");

    // want-ref: the wanted-refs section, then the pack.
    let req = v2_request(
        "fetch",
        &[
            "want-ref refs/heads/side".into(),
            "ofs-delta".into(),
            "done".into(),
        ],
    );
    let (o, t) = v2_both(&repo, gitd.port, &req);
    assert_eq!(o, t);
    assert!(
        o.contains(&format!("{} refs/heads/side\n", rev(&repo, "side"))),
        "{o:?}"
    );
    // An unknown ref is an error.
    let req = v2_request("fetch", &["want-ref refs/heads/nope".into(), "done".into()]);
    let (o, t) = v2_both(&repo, gitd.port, &req);
    assert_eq!(o, t);
    assert!(
        o.iter()
            .any(|l| l.starts_with("ERR unknown ref refs/heads/nope")),
        "{o:?}"
    );

    // object-info.
    let req = v2_request(
        "object-info",
        &[
            "size".into(),
            format!("oid {main}"),
            format!("oid {blob}"),
            format!("oid {}", "ab".repeat(20)),
        ],
    );
    let (o, t) = v2_both(&repo, gitd.port, &req);
    assert_eq!(o, t);
    assert!(o.contains(&"size".to_string()), "{o:?}");

    // sideband-all: every section line travels on band 1.
    let req = v2_request(
        "fetch",
        &[
            "sideband-all".into(),
            format!("want {main}"),
            format!("have {}", rev(&repo, "main~2")),
            "ofs-delta".into(),
        ],
    );
    let ours_raw = ours(gitd.port, true, &req);
    let theirs_raw = oracle(&repo, &req, true);
    let skip_adv = |b: &[u8]| {
        let adv_end = b.windows(4).position(|w| w == b"0000").unwrap() + 4;
        lines(&b[adv_end..])
    };
    assert_eq!(skip_adv(&ours_raw), skip_adv(&theirs_raw));
}

/// Objects in a pack (indexed into a scratch repository).
fn pack_objects(dir: &Path, pack: &[u8]) -> BTreeSet<String> {
    use std::io::Write;
    let check = dir.join("pack-check.git");
    let _ = std::fs::remove_dir_all(&check);
    git(dir, &["init", "-q", "--bare", check.to_str().unwrap()]);
    let mut child = git_cmd(&check)
        .args(["index-pack", "--stdin", "--strict"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(pack).unwrap();
    assert!(child.wait().unwrap().success());
    let idx = std::fs::read_dir(check.join("objects/pack"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "idx"))
        .unwrap();
    git(dir, &["verify-pack", "-v", idx.to_str().unwrap()])
        .lines()
        .filter(|l| l.len() > 41 && l.as_bytes()[40] == b' ' && !l.starts_with("chain"))
        .map(|l| l[..40].to_string())
        .collect()
}

/// The raw pack from a v0 response to `want`s with `features`, then `done`.
fn v0_pack(resp: &[u8]) -> Vec<u8> {
    let nak = resp
        .windows(8)
        .rposition(|w| w == b"0008NAK\n")
        .expect("NAK");
    let mut rest = &resp[nak + 8..];
    let mut pack = Vec::new();
    while rest.len() >= 4 {
        let n = usize::from_str_radix(std::str::from_utf8(&rest[..4]).unwrap(), 16).unwrap();
        if n == 0 {
            break;
        }
        if rest[4] == 1 {
            pack.extend_from_slice(&rest[5..n]);
        }
        rest = &rest[n..];
    }
    pack
}

#[test]
fn include_tag_sends_the_same_tags_as_git() {
    let dir = scratch("include-tag");
    let repo = fixture(&dir, "repo.git", 20);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    let main = rev(&repo, "main");
    for features in [
        "side-band-64k ofs-delta no-progress include-tag",
        "side-band-64k ofs-delta no-progress",
    ] {
        let mut req = pkt(format!("want {main} {features}\n").as_bytes());
        req.extend(b"0000");
        req.extend(pkt(b"done\n"));
        let o = pack_objects(&dir, &v0_pack(&ours(gitd.port, false, &req)));
        let t = pack_objects(&dir, &v0_pack(&oracle(&repo, &req, false)));
        assert_eq!(o, t, "{features}");
        let tag = rev(&repo, "refs/tags/v2.0");
        assert_eq!(
            o.contains(&tag),
            features.contains("include-tag"),
            "{features}"
        );
    }
}

#[test]
fn thousands_of_haves_get_the_same_answer_as_git() {
    let dir = scratch("many-haves");
    let repo = fixture(&dir, "repo.git", 30);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    let main = rev(&repo, "main");
    let mut args = vec![
        format!("want {main}"),
        "ofs-delta".into(),
        "no-progress".into(),
    ];
    for i in 0..20_000u32 {
        args.push(format!(
            "have {:040x}",
            u128::from(i) * 0x9e37_79b9_7f4a_7c15
        ));
    }
    args.push(format!("have {}", rev(&repo, "main~5")));
    let req = v2_request("fetch", &args);
    let (o, t) = v2_both(&repo, gitd.port, &req);
    assert_eq!(o, t);
    assert!(o.contains(&format!("ACK {}\n", rev(&repo, "main~5"))));
}

#[test]
fn sha256_repositories_are_refused_with_the_reason() {
    let dir = scratch("sha256");
    let repo = dir.join("s.git");
    git(
        &dir,
        &[
            "init",
            "-q",
            "--bare",
            "--object-format=sha256",
            repo.to_str().unwrap(),
        ],
    );
    std::fs::write(repo.join("git-daemon-export-ok"), "").unwrap();
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    for v in ["0", "2"] {
        let out = git_output(
            &dir,
            &[
                "-c",
                &format!("protocol.version={v}"),
                "ls-remote",
                &gitd.url("/s.git"),
            ],
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("uses the sha256 object format, which gitd does not serve"),
            "{err}"
        );
    }
}

#[test]
fn server_options_are_accepted_in_v2() {
    let dir = scratch("server-option");
    let repo = fixture(&dir, "repo.git", 5);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    let out = git(
        &dir,
        &[
            "-c",
            "protocol.version=2",
            "ls-remote",
            "-o",
            "trace=1",
            "-o",
            "x",
            &gitd.url("/repo.git"),
        ],
    );
    assert!(out.contains(&rev(&repo, "main")));
    let dest = dir.join("c.git");
    git(
        &dir,
        &[
            "-c",
            "protocol.version=2",
            "clone",
            "-q",
            "--bare",
            "--server-option=anything",
            &gitd.url("/repo.git"),
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(rev(&dest, "main"), rev(&repo, "main"));
}

#[test]
fn bundle_uri_matches_git() {
    let dir = scratch("bundle-uri");
    let repo = fixture(&dir, "repo.git", 5);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    let req = v2_request("bundle-uri", &[]);
    // Not advertised: refused, as git refuses an unknown command.
    let ours_raw = ours(gitd.port, true, &req);
    assert!(
        lines(&ours_raw)
            .iter()
            .any(|l| l.starts_with("ERR invalid command 'bundle-uri'")),
        "{:?}",
        lines(&ours_raw)
    );
    git(&repo, &["config", "uploadpack.advertiseBundleURIs", "true"]);
    git(&repo, &["config", "bundle.version", "1"]);
    git(&repo, &["config", "bundle.mode", "all"]);
    git(
        &repo,
        &[
            "config",
            "bundle.Base.uri",
            "https://example.com/base.bundle",
        ],
    );
    git(&repo, &["config", "bundle.Base.creationToken", "100"]);
    let (o, t) = v2_both(&repo, gitd.port, &req);
    let adv = |l: &Vec<String>| l.iter().any(|x| x == "bundle-uri\n");
    assert!(
        adv(&lines(&ours(gitd.port, true, b"0000"))),
        "advertised once enabled"
    );
    assert_eq!(o, t);
    assert!(
        o.contains(&"bundle.Base.uri=https://example.com/base.bundle".to_string()),
        "{o:?}"
    );
}
