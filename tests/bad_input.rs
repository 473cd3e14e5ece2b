//! Hostile and malformed input over real sockets: each gets a clear `ERR` or a
//! closed connection, and the server keeps serving everyone else.

mod support;

use std::time::{Duration, Instant};

use support::{Gitd, Raw, Reply, fixture, git, pkt, scratch};

const MISSING: &str = "0123456789012345678901234567890123456789";

/// The first reply to `bytes` sent as a whole request.
fn first_reply(port: u16, bytes: &[u8]) -> Reply {
    let mut raw = Raw::connect(port);
    raw.send(bytes);
    raw.read()
}

fn assert_err(reply: Reply, expected: &str) {
    match &reply {
        Reply::Data(d) => {
            let text = String::from_utf8_lossy(d);
            assert!(text.starts_with("ERR "), "expected ERR, got {text:?}");
            assert!(
                text.contains(expected),
                "ERR {text:?} should mention {expected:?}"
            );
        }
        other => panic!("expected ERR containing {expected:?}, got {other:?}"),
    }
}

fn assert_clone_works(gitd: &Gitd, dir: &std::path::Path, repo: &std::path::Path, name: &str) {
    support::assert_mirror(dir, &gitd.url("/repo.git"), &dir.join(name), repo);
}

#[test]
fn malformed_request_lines_get_err_and_the_server_keeps_serving() {
    let dir = scratch("bad-request");
    let repo = fixture(&dir, "repo.git", 5);
    let mut gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "http",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "bad line length character: GET ",
        ),
        (
            "tls",
            vec![
                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
            ],
            "bad line length character",
        ),
        (
            "non-hex",
            b"zzzzgit-upload-pack".to_vec(),
            "bad line length character: zzzz",
        ),
        ("length 3", b"0003".to_vec(), "bad line length 3"),
        (
            "length over 65520",
            b"fff1".to_vec(),
            "bad line length 65521",
        ),
        ("flush first", b"0000".to_vec(), "expected a request line"),
        ("delim first", b"0001".to_vec(), "expected a request line"),
        (
            "unknown service",
            pkt(b"git-frobnicate /repo.git\0host=x\0"),
            "invalid request",
        ),
        (
            "no space",
            pkt(b"git-upload-pack/repo.git\0"),
            "invalid request",
        ),
        (
            "param before second NUL",
            pkt(b"git-upload-pack /repo.git\0version=2\0"),
            "invalid request",
        ),
        (
            "junk after host",
            pkt(b"git-upload-pack /repo.git\0host=x\0junk\0"),
            "invalid request",
        ),
        (
            "unclosed v6 host",
            pkt(b"git-upload-pack /repo.git\0host=[::1\0"),
            "invalid request",
        ),
        (
            "traversal",
            pkt(b"git-upload-pack /../repo.git\0"),
            "access denied or repository not exported: /../repo.git",
        ),
        (
            "dot segment",
            pkt(b"git-upload-pack /./repo.git\0"),
            "access denied",
        ),
        (
            "double slash",
            pkt(b"git-upload-pack //repo.git\0"),
            "access denied",
        ),
        (
            "trailing dotdot",
            pkt(b"git-upload-pack /repo.git/..\0"),
            "access denied",
        ),
        (
            "relative",
            pkt(b"git-upload-pack repo.git\0"),
            "access denied",
        ),
        (
            "newline in path",
            pkt(b"git-upload-pack /repo.git\n/x\0"),
            "access denied or repository not exported: /repo.git\\x0a/x",
        ),
        ("huge line", pkt(&[b'a'; 65516]), "invalid request"),
        (
            "receive-pack",
            pkt(b"git-receive-pack /repo.git\0"),
            "access denied",
        ),
    ];
    for (name, bytes, expected) in cases {
        let reply = first_reply(gitd.port, &bytes);
        assert!(matches!(reply, Reply::Data(_)), "{name}: {reply:?}");
        assert_err(reply, expected);
    }
    // A request without any NUL is valid for git daemon, and for us.
    let mut raw = Raw::connect(gitd.port);
    raw.send_pkt(b"git-upload-pack /repo.git\n");
    assert!(
        raw.read().text().contains("refs/heads/main"),
        "plain request without host is served"
    );
    assert!(gitd.is_running());
    assert_clone_works(&gitd, &dir, &repo, "after.git");
}

#[test]
fn protocol_errors_after_the_request_line() {
    let dir = scratch("bad-protocol");
    let repo = fixture(&dir, "repo.git", 5);
    let mut gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    let v2_hello = pkt(b"git-upload-pack /repo.git\0host=localhost\0\0version=2\0");

    // Unknown v2 command.
    let mut raw = Raw::connect(gitd.port);
    raw.send(&v2_hello);
    raw.read_until_flush();
    raw.send(&pkt(b"command=frobnicate\n")).send(b"0000");
    assert_err(raw.read(), "invalid command 'frobnicate'");

    // Unknown capability and unknown fetch argument.
    let mut raw = Raw::connect(gitd.port);
    raw.send(&v2_hello);
    raw.read_until_flush();
    raw.send(&pkt(b"command=fetch\n"))
        .send(&pkt(b"bogus-cap\n"))
        .send(b"0000");
    assert_err(raw.read(), "unknown capability 'bogus-cap'");
    let mut raw = Raw::connect(gitd.port);
    raw.send(&v2_hello);
    raw.read_until_flush();
    raw.send(&pkt(b"command=fetch\n"))
        .send(b"0001")
        .send(&pkt(b"frob\n"))
        .send(b"0000");
    assert_err(raw.read(), "unexpected line: 'frob'");

    // Wants of objects we do not have, in v2 and v0.
    let mut raw = Raw::connect(gitd.port);
    raw.send(&v2_hello);
    raw.read_until_flush();
    raw.send(&pkt(b"command=fetch\n"))
        .send(b"0001")
        .send(&pkt(format!("want {MISSING}\n").as_bytes()))
        .send(&pkt(b"done\n"))
        .send(b"0000");
    assert_err(raw.read(), &format!("upload-pack: not our ref {MISSING}"));

    let mut raw = Raw::connect(gitd.port);
    raw.send_pkt(b"git-upload-pack /repo.git\0host=localhost\0");
    raw.read_until_flush();
    raw.send(&pkt(format!("want {MISSING} side-band-64k\n").as_bytes()))
        .send(b"0000");
    assert_err(raw.read(), &format!("upload-pack: not our ref {MISSING}"));

    // A v0 want that exists but is not a ref tip is refused too.
    let parent = git(&repo, &["rev-parse", "main~1"]).trim().to_string();
    let mut raw = Raw::connect(gitd.port);
    raw.send_pkt(b"git-upload-pack /repo.git\0host=localhost\0");
    raw.read_until_flush();
    raw.send(&pkt(format!("want {parent}\n").as_bytes()))
        .send(b"0000");
    assert_err(raw.read(), &format!("not our ref {parent}"));

    // Garbage where haves belong.
    let main = git(&repo, &["rev-parse", "main"]).trim().to_string();
    let mut raw = Raw::connect(gitd.port);
    raw.send_pkt(b"git-upload-pack /repo.git\0host=localhost\0");
    raw.read_until_flush();
    raw.send(&pkt(format!("want {main}\n").as_bytes()))
        .send(b"0000")
        .send(&pkt(b"have nonsense\n"));
    raw.send(b"0000");
    assert_err(raw.read(), "expected to get object ID");

    // Truncated negotiations: the client vanishes mid-line and mid-request.
    let mut raw = Raw::connect(gitd.port);
    raw.send(&v2_hello).send(b"0014command=fe");
    drop(raw);
    let mut raw = Raw::connect(gitd.port);
    raw.send_pkt(b"git-upload-pack /repo.git\0host=localhost\0");
    raw.read_until_flush();
    raw.send(&pkt(format!("want {main} multi_ack_detailed\n").as_bytes()))
        .send(b"0000");
    drop(raw);

    assert!(gitd.is_running());
    assert_clone_works(&gitd, &dir, &repo, "after.git");
}

#[test]
fn stalled_clients_time_out_without_blocking_others() {
    let dir = scratch("stalled");
    let repo = fixture(&dir, "repo.git", 5);
    let gitd = Gitd::start(
        &dir,
        &[
            &format!("--base-path={}", dir.display()),
            "--init-timeout=1",
            "--timeout=2",
        ],
    );
    // One says nothing, one stops in the middle of its request line, one stops
    // during negotiation.
    let mut silent = Raw::connect(gitd.port);
    let mut half = Raw::connect(gitd.port);
    half.send(b"0040git-upload-pack /re");
    let mut negotiating = Raw::connect(gitd.port);
    negotiating.send_pkt(b"git-upload-pack /repo.git\0host=localhost\0");
    negotiating.read_until_flush();

    // One drips its request line a byte at a time, each byte well within the timeout.
    let mut drip = Raw::connect(gitd.port);
    let dripper = std::thread::spawn(move || {
        let start = Instant::now();
        for b in pkt(b"git-upload-pack /repo.git\0host=localhost\0") {
            drip.send(&[b]);
            std::thread::sleep(Duration::from_millis(300));
            let closed = drip.stream.set_nonblocking(true).is_ok()
                && drip.stream.peek(&mut [0u8; 8]).is_ok();
            let _ = drip.stream.set_nonblocking(false);
            if closed || start.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        start.elapsed()
    });

    // Meanwhile others are served.
    assert_clone_works(&gitd, &dir, &repo, "meanwhile.git");

    let start = Instant::now();
    assert!(silent.is_closed(), "a silent client is disconnected");
    assert!(half.is_closed(), "a half-sent request line is dropped");
    assert!(negotiating.is_closed(), "a stalled negotiation is dropped");
    assert!(start.elapsed() < Duration::from_secs(15));
    let dripped = dripper.join().unwrap();
    assert!(
        dripped < Duration::from_secs(4),
        "a dripping client is cut off by --init-timeout, not after {dripped:?}"
    );
}

#[test]
fn too_many_connections_are_refused_promptly() {
    let dir = scratch("max-conn");
    let repo = fixture(&dir, "repo.git", 5);
    let gitd = Gitd::start(
        &dir,
        &[
            &format!("--base-path={}", dir.display()),
            "--max-connections=2",
        ],
    );
    // One connection from each of two addresses: no address holds several, so there
    // is nothing git daemon would drop to make room.
    let mut held: Vec<Raw> = [2, 3]
        .map(|last| Raw {
            stream: support::connect_from(std::net::Ipv4Addr::new(127, 0, 0, last), gitd.port),
        })
        .into();
    for raw in &mut held {
        raw.send_pkt(b"git-upload-pack /repo.git\0host=localhost\0\0version=2\0");
        assert_eq!(raw.read().text(), "version 2");
    }
    let start = Instant::now();
    assert_err(first_reply(gitd.port, b""), "too many connections");
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_clone_works(&gitd, &dir, &repo, "after.git");
}
