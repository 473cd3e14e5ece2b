//! Pushes by a hand-made client: cut off mid-pack or after it, and malformed
//! input, answered as git's receive-pack answers the same bytes.

mod support;

use std::time::Duration;

use support::push::*;
use support::{Raw, fixture, git_bounded, pkt, scratch, wait_until};

#[test]
fn a_push_cut_off_mid_pack_changes_nothing() {
    let dir = scratch("push-cut");
    let repo = fixture(&dir, "repo.git", 3);
    let wc = work(&dir, &repo, "wc");
    let old = rev(&repo, "main").unwrap();
    // Incompressible content, so that half the pack is half of an object.
    let new = noise_commit(&wc, 200_000);
    let pack = pack_of(&wc, &format!("{new}\n^{old}"));
    let packs_before = std::fs::read_dir(repo.join("objects/pack"))
        .unwrap()
        .count();
    let gitd = gitd(&dir);

    let mut raw = Raw::connect(gitd.port);
    raw.send_pkt(b"git-receive-pack /repo.git\0host=127.0.0.1\0");
    let adv = raw.read_until_flush();
    assert!(adv[0].text().contains("report-status"), "{adv:?}");
    raw.send_pkt(
        format!("{old} {new} refs/heads/main\0 report-status side-band-64k quiet").as_bytes(),
    );
    raw.send(b"0000");
    raw.send(&pack[..pack.len() / 2]);
    std::thread::sleep(Duration::from_millis(300));
    drop(raw);

    assert!(
        wait_until(Duration::from_secs(20), || gitd
            .logs()
            .contains("service=\"receive-pack\"")),
        "{}",
        gitd.logs()
    );
    assert_eq!(rev(&repo, "main").as_deref(), Some(old.as_str()));
    assert!(!has_object(&repo, &new));
    assert!(wait_until(Duration::from_secs(5), || quarantines(&repo).is_empty()));
    assert_eq!(
        std::fs::read_dir(repo.join("objects/pack"))
            .unwrap()
            .count(),
        packs_before
    );
    assert!(
        wait_until(Duration::from_secs(5), || gitd.logs().contains("hung up")),
        "{}",
        gitd.logs()
    );

    // A pusher that sends everything and leaves while pre-receive runs (with
    // side-band, so that gitd can tell leaving from half-closing).
    hook(&repo, "pre-receive", "cat >/dev/null\nsleep 1\n");
    let mut raw = Raw::connect(gitd.port);
    raw.send_pkt(b"git-receive-pack /repo.git\0host=127.0.0.1\0");
    raw.read_until_flush();
    raw.send_pkt(
        format!("{old} {new} refs/heads/main\0 report-status side-band-64k quiet").as_bytes(),
    );
    raw.send(b"0000");
    raw.send(&pack);
    std::thread::sleep(Duration::from_millis(300));
    drop(raw);
    assert!(
        wait_until(Duration::from_secs(20), || gitd
            .logs()
            .contains("hung up before the refs were updated")),
        "{}",
        gitd.logs()
    );
    assert_eq!(rev(&repo, "main").as_deref(), Some(old.as_str()));
    assert!(!has_object(&repo, &new));
    assert!(wait_until(Duration::from_secs(5), || quarantines(&repo).is_empty()));
    std::fs::remove_file(repo.join("hooks/pre-receive")).unwrap();

    // The server is still there, and the same push done properly goes through.
    let out = push(&wc, &gitd.url("/repo.git"), &["main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rev(&repo, "main").as_deref(), Some(new.as_str()));
    fsck(&repo);
}

#[test]
fn a_complete_push_then_a_half_close_is_applied_and_reported() {
    let dir = scratch("push-half-close");
    let repo = fixture(&dir, "repo.git", 3);
    let wc = work(&dir, &repo, "wc");
    let gitd = gitd(&dir);
    let mut old = rev(&repo, "main").unwrap();
    // A pre-receive hook that takes a moment: the end of stream is long in by then.
    hook(&repo, "pre-receive", "cat >/dev/null\nsleep 0.3\n");
    for caps in ["report-status", "report-status side-band-64k"] {
        let new = commit(&wc, &format!("half-{}", caps.len()));
        let pack = pack_of(&wc, &format!("{new}\n^{old}"));
        let mut raw = Raw::connect(gitd.port);
        raw.send_pkt(b"git-receive-pack /repo.git\0host=127.0.0.1\0");
        raw.read_until_flush();
        raw.send_pkt(format!("{old} {new} refs/heads/main\0 {caps} quiet").as_bytes());
        raw.send(b"0000").send(&pack);
        raw.stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        std::io::Read::read_to_end(&mut raw.stream, &mut answer).unwrap();
        let report = if caps.contains("side-band") {
            let mut bytes = b"0000".to_vec();
            bytes.extend_from_slice(&answer);
            demux(&bytes).1
        } else {
            support::pkt_lines(&answer)
        };
        assert_eq!(
            report,
            ["unpack ok\n", "ok refs/heads/main\n", "0000"],
            "{caps}"
        );
        assert_eq!(rev(&repo, "main").as_deref(), Some(new.as_str()), "{caps}");
        old = new;
    }
    assert!(quarantines(&repo).is_empty());
    fsck(&repo);
}

#[test]
fn malformed_pushes_get_clear_answers() {
    let dir = scratch("push-malformed");
    let repo = fixture(&dir, "repo.git", 3);
    let theirs = twin(&repo);
    let gitd = gitd(&dir);
    let old = rev(&repo, "main").unwrap();
    let side = rev(&repo, "side").unwrap();
    let zero = "0".repeat(40);

    // A pack that is not one: the report says why, without side-band (report-status v1).
    let mut input = pkt(format!("{zero} {old} refs/heads/copy\0 report-status").as_bytes());
    input.extend_from_slice(b"0000KCAP\0\0\0\x02\0\0\0\x01");
    let ours = raw_push(gitd.port, "/repo.git", &input);
    assert_eq!(
        ours,
        [
            "unpack protocol error (pack signature mismatch detected)\n",
            "ng refs/heads/copy unpacker error\n",
            "0000"
        ]
    );
    assert_eq!(ours, git_push(&theirs, &input));

    // A deletion with a stale old value, and a delete-only push (no pack at all).
    let mut input = pkt(format!("{old} {zero} refs/heads/side\0 report-status").as_bytes());
    input.extend(pkt(format!("{side} {zero} refs/heads/topic").as_bytes()));
    input.extend_from_slice(b"0000");
    let ours = raw_push(gitd.port, "/repo.git", &input);
    assert_eq!(ours[0], "unpack ok\n");
    assert_eq!(ours[1], "ng refs/heads/side failed to update ref\n");
    assert_eq!(ours[2], "ng refs/heads/topic failed to update ref\n");
    assert_eq!(ours, git_push(&theirs, &input));
    assert!(rev(&repo, "refs/heads/side").is_some());

    // A line that is no command: an ERR line, and the server goes on.
    let mut raw = Raw::connect(gitd.port);
    raw.send_pkt(b"git-receive-pack /repo.git\0host=127.0.0.1\0");
    raw.read_until_flush();
    raw.send_pkt(b"abc refs/heads/x").send(b"0000");
    let reply = raw.read().text();
    assert!(
        reply.contains("protocol error: expected old/new/ref, got 'abc refs/heads/x'"),
        "{reply}"
    );
    let out = git_bounded(&dir, &["ls-remote", &gitd.url("/repo.git")], PUSH_TIMEOUT);
    assert!(out.status.success());
}
