//! One request must never hurt the others. gitd serves every client from one
//! process, so each hostile request here runs while a real `git clone` is served
//! beside it: the hostile one is refused (or answered) without taking the process
//! down, freezing it or growing its memory, and the clone completes.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::{Gitd, Raw, Reply, assert_mirror, fixture, git, pkt, rev, scratch, vm_kib};

/// A deterministic stream of object ids no repository has.
fn random_ids(n: usize) -> impl Iterator<Item = String> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n).map(move |_| {
        let mut hex = String::with_capacity(40);
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            hex.push_str(&format!("{x:016x}"));
        }
        hex.truncate(40);
        hex
    })
}

fn setup(name: &str, args: &[&str]) -> (PathBuf, PathBuf, Gitd) {
    let dir = scratch(name);
    let repo = fixture(&dir, "repo.git", 30);
    git(&repo, &["config", "uploadpack.allowFilter", "true"]);
    let base = format!("--base-path={}", dir.display());
    let mut all = vec![base.as_str()];
    all.extend_from_slice(args);
    let gitd = Gitd::start(&dir, &all);
    (dir, repo, gitd)
}

/// Clone while `hostile` runs on another thread, then check both outcomes: the
/// clone is complete, gitd is still up and never panicked.
fn clone_beside<T: Send + 'static>(
    dir: &Path,
    repo: &Path,
    gitd: &mut Gitd,
    hostile: impl FnOnce() -> T + Send + 'static,
) -> T {
    let attacker = std::thread::spawn(hostile);
    // Let the hostile request get going first.
    std::thread::sleep(Duration::from_millis(300));
    let dest = dir.join(format!("clone-{}.git", rand_suffix()));
    assert_mirror(dir, &gitd.url("/repo.git"), &dest, repo);
    let result = attacker.join().expect("the hostile client itself is fine");
    assert!(gitd.is_running(), "gitd went down: {}", gitd.logs());
    assert!(!gitd.logs().contains("panicked"), "{}", gitd.logs());
    result
}

fn rand_suffix() -> usize {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// Send `request` from one thread while reading the reply on another: a server that
/// refuses early answers before the client has finished sending. Returns the first
/// pkt-line of the reply and how many bytes had been sent when it arrived.
fn send_and_read_first(port: u16, request: Vec<u8>) -> (Reply, usize, usize) {
    let mut reader = Raw::connect(port);
    reader
        .stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut writer: TcpStream = reader.stream.try_clone().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let total = request.len();
    let counter = Arc::clone(&sent);
    let w = std::thread::spawn(move || {
        for chunk in request.chunks(64 * 1024) {
            if writer.write_all(chunk).is_err() {
                return;
            }
            counter.fetch_add(chunk.len(), Ordering::SeqCst);
        }
    });
    // Skip the capability advertisement of v2 (up to its flush).
    let mut first = reader.read();
    if first.text() == "version 2" {
        while !matches!(first, Reply::Flush | Reply::Closed) {
            first = reader.read();
        }
        first = reader.read();
    }
    let at = sent.load(Ordering::SeqCst);
    drop(reader);
    let _ = w.join();
    (first, at, total)
}

fn v2_request(repo_path: &str, args: &[String]) -> Vec<u8> {
    let mut req =
        pkt(format!("git-upload-pack {repo_path}\0host=localhost\0\0version=2\0").as_bytes());
    req.extend(pkt(b"command=fetch\n"));
    req.extend(b"0001");
    for a in args {
        req.extend(pkt(format!("{a}\n").as_bytes()));
    }
    req.extend(b"0000");
    req
}

fn assert_err(reply: &Reply, needle: &str) {
    let text = reply.text();
    assert!(
        text.starts_with("ERR ") && text.contains(needle),
        "expected ERR with {needle:?}, got {text:?}"
    );
}

/// A filter spec nested 8,000 levels deep (64 KB: the whole pkt-line) once overflowed
/// the stack while being applied, aborting every connection. Now it is refused as
/// it is parsed, in v2 and in v0, and the server serves on.
#[test]
fn deeply_nested_filters_are_refused() {
    let (dir, repo, mut gitd) = setup("limits-filter", &[]);
    let main = rev(&repo, "main");
    let deep = format!("{}blob:none", "combine:".repeat(8000));
    let port = gitd.port;
    let (reply, _, _) = clone_beside(&dir, &repo, &mut gitd, move || {
        let req = v2_request(
            "/repo.git",
            &[
                format!("want {main}"),
                format!("filter {deep}"),
                "done".into(),
            ],
        );
        send_and_read_first(port, req)
    });
    assert_err(
        &reply,
        "filter-spec has too many sub-filters (more than 16)",
    );

    // v0: the spec rides on a `filter` line of the want section.
    let main = rev(&repo, "main");
    let deep = format!("{}blob:none", "combine:".repeat(6000));
    let (reply, _, _) = clone_beside(&dir, &repo, &mut gitd, move || {
        let mut raw = Raw::connect(port);
        raw.send_pkt(b"git-upload-pack /repo.git\0host=localhost\0");
        raw.read_until_flush();
        raw.send_pkt(format!("want {main} filter side-band-64k\n").as_bytes());
        raw.send_pkt(format!("filter {deep}\n").as_bytes());
        raw.send(b"0000");
        raw.send_pkt(b"done\n");
        (raw.read(), 0, 0)
    });
    assert_err(&reply, "too many sub-filters");
}

/// 300,000 `want` lines of objects we do not have: git refuses at the first; gitd
/// looks them up a batch at a time off the async thread and refuses within the
/// first batch, long before the client is done sending (it used to scan a list per
/// line, freezing every client for up to 47 s).
#[test]
fn a_flood_of_unknown_wants_is_refused_early() {
    let (dir, repo, mut gitd) = setup("limits-wants", &[]);
    let port = gitd.port;
    let (reply, sent, total) = clone_beside(&dir, &repo, &mut gitd, move || {
        let args: Vec<String> = random_ids(300_000).map(|id| format!("want {id}")).collect();
        send_and_read_first(port, v2_request("/repo.git", &args))
    });
    assert_err(&reply, "not our ref");
    assert!(
        sent < total / 2,
        "refused only after {sent} of {total} bytes: not early"
    );
}

/// 500,000 random `have` lines (24 MB) with a real want: the fetch is answered, and
/// what gitd holds meanwhile is bounded by the repository, not by the lines (it used
/// to keep every line, then every id: 2M haves took 257 MB and kept 132 MB).
#[test]
fn a_flood_of_unknown_haves_costs_no_memory() {
    let (dir, repo, mut gitd) = setup("limits-haves", &[]);
    let pid = gitd.child.id();
    // A first clone, so the baseline includes what serving one costs.
    clone_beside(&dir, &repo, &mut gitd, || ());
    let before = vm_kib(pid, "VmHWM:");
    // Idle again: what serving made resident has been given back.
    std::thread::sleep(Duration::from_secs(5));
    let idle_anon = vm_kib(pid, "RssAnon:");
    let main = rev(&repo, "main");
    let port = gitd.port;
    let (reply, _, _) = clone_beside(&dir, &repo, &mut gitd, move || {
        let mut args = vec![format!("want {main}")];
        args.extend(random_ids(500_000).map(|id| format!("have {id}")));
        args.push("done".into());
        send_and_read_first(port, v2_request("/repo.git", &args))
    });
    assert_eq!(reply.text(), "packfile", "the fetch is served");
    let after = vm_kib(pid, "VmHWM:");
    assert!(
        after.saturating_sub(before) < 12 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
    // And once idle, the heap is back where it was.
    assert!(
        support::wait_until(Duration::from_secs(15), || vm_kib(pid, "RssAnon:")
            <= idle_anon + 2048),
        "anonymous RSS {} KiB, idle before the flood {idle_anon} KiB",
        vm_kib(pid, "RssAnon:")
    );
}

/// v0: one round of a common `have` and 1,000,000 unknown ones under
/// multi_ack_detailed is read and answered a batch at a time (it used to be held
/// whole, and every unknown have walked the history again to see whether the
/// negotiation could stop).
#[test]
fn a_v0_round_of_unknown_haves_is_answered_in_bounded_memory() {
    let (dir, repo, mut gitd) = setup("limits-v0-haves", &[]);
    let pid = gitd.child.id();
    clone_beside(&dir, &repo, &mut gitd, || ());
    let before = vm_kib(pid, "VmHWM:");
    // A tree is common but never makes the negotiation ready (only commits do).
    let (main, tree) = (rev(&repo, "main"), rev(&repo, "main^{tree}"));
    let port = gitd.port;
    let replies = clone_beside(&dir, &repo, &mut gitd, move || {
        let mut raw = Raw::connect(port);
        raw.stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        raw.send_pkt(b"git-upload-pack /repo.git\0host=localhost\0");
        raw.read_until_flush();
        let mut req = pkt(format!("want {main} multi_ack_detailed side-band-64k\n").as_bytes());
        req.extend(b"0000");
        req.extend(pkt(format!("have {tree}\n").as_bytes()));
        raw.send(&req);
        let mut batch = Vec::new();
        for id in random_ids(1_000_000) {
            batch.extend(pkt(format!("have {id}\n").as_bytes()));
            if batch.len() > 1 << 20 {
                raw.send(&batch);
                batch.clear();
            }
        }
        batch.extend(b"0000");
        batch.extend(pkt(b"done\n"));
        raw.send(&batch);
        let mut replies = vec![raw.read(), raw.read(), raw.read()];
        // Progress (band 2) may come first; then the pack on band 1.
        for _ in 0..1000 {
            let r = raw.read();
            let stop = !matches!(&r, Reply::Data(d) if d[0] == 2);
            if stop {
                replies.push(r);
                break;
            }
        }
        replies
    });
    // The tree's ACK, the round's NAK, the final ACK, then the pack.
    let tree = rev(&repo, "main^{tree}");
    assert_eq!(
        replies[0].text(),
        format!("ACK {tree} common"),
        "{replies:?}"
    );
    assert_eq!(replies[1].text(), "NAK", "{replies:?}");
    assert_eq!(replies[2].text(), format!("ACK {tree}"), "{replies:?}");
    match &replies[3] {
        Reply::Data(d) => assert!(d.starts_with(b"\x01PACK"), "a pack on band 1"),
        other => panic!("no pack: {other:?}"),
    }
    let after = vm_kib(pid, "VmHWM:");
    assert!(
        after.saturating_sub(before) < 12 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
}

/// Hundreds of connections from one address that never send a request line, with
/// the connection limit reached: like git daemon, gitd makes room by dropping a
/// connection of the address holding the most (an idle one first), even when the
/// newcomer comes from that same address, so a clone from it still succeeds.
#[test]
fn idle_connections_cannot_lock_out_a_clone() {
    let (dir, repo, mut gitd) = setup(
        "limits-fair",
        &["--max-connections=32", "--init-timeout=120"],
    );
    let port = gitd.port;
    let idle: Vec<Raw> = (0..500).map(|_| Raw::connect(port)).collect();
    // The clone comes from the same address as all of them.
    clone_beside(&dir, &repo, &mut gitd, || ());
    // Room was made by closing idle ones: at most the limit are still open.
    let mut open = 0;
    for mut raw in idle {
        raw.stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 1];
        if let Err(e) = raw.stream.read(&mut buf) {
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut
            {
                open += 1;
            }
        }
    }
    assert!(open <= 32, "{open} idle connections still open");
    assert!(
        gitd.logs()
            .contains("too many connections: dropping one of the")
    );
}
