//! Entry points for the fuzz targets in `fuzz/`: each feeds untrusted bytes through
//! the same parsing code the server runs on a connection, over an in-memory stream.
//! Errors are expected; a panic, a hang or unbounded memory is a bug.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::connection::Connection;
use crate::handler::Handler;
use crate::hostinfo::HostInfo;
use crate::pack::filter::Filter;
use crate::policy::{Policy, ServiceSetting, Services};
use crate::receive_pack::commands::{self, Offered};
use crate::request::Request;
use crate::server::Config;
use crate::shutdown::Activity;
use crate::upload_archive::args;
use crate::upload_pack::config::UploadPackConfig;
use crate::upload_pack::{v0, v2};

/// A connection whose peer sent exactly `data` and then hung up.
fn connection(data: &[u8]) -> Connection<tokio::io::Join<&[u8], tokio::io::Sink>> {
    Connection::new(
        tokio::io::join(data, tokio::io::sink()),
        std::time::Duration::from_secs(5),
    )
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// [`block_on`] with the clock paused (tokio's `test-util`): time only moves when
/// every task waits, and then straight to the next timer.
fn block_on_paused<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .thread_name(BLOCKING_THREAD)
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A configuration that enables every optional argument, so the parsers see them all.
fn permissive() -> UploadPackConfig {
    UploadPackConfig {
        allow_filter: true,
        filter_allow_default: true,
        allow_ref_in_want: true,
        allow_sideband_all: true,
        ..Default::default()
    }
}

/// The git:// request line (the first pkt-line's payload).
pub fn request_line(data: &[u8]) {
    if let Ok(req) = Request::parse(data) {
        let _ = req.protocol_version();
    }
}

/// pkt-line framing: read packets until the stream ends or is malformed.
pub fn pkt_lines(data: &[u8]) {
    block_on(async {
        let mut conn = connection(data);
        while let Ok(Some(_)) = conn.read_packet().await {}
    })
}

/// Protocol v2 requests: command, capabilities and arguments, parsed as `ls-refs`,
/// `fetch` and `object-info` parse them.
pub fn v2_commands(data: &[u8]) {
    let cfg = permissive();
    block_on(async {
        let mut conn = connection(data);
        while let Ok(Some(mut cmd)) = v2::read_command(&mut conn).await {
            let mut args = Vec::new();
            while let Ok(Some(arg)) = cmd.next_arg(&mut conn).await {
                args.push(arg);
            }
            match cmd.name.as_slice() {
                b"ls-refs" => {
                    let _ = v2::LsRefsArgs::parse(&args, &cfg);
                }
                _ => {
                    let _ = v2::parse_fetch(&args, &cfg);
                }
            }
        }
    })
}

/// Protocol v0: the want section, then rounds of haves.
pub fn v0_negotiation(data: &[u8]) {
    let cfg = permissive();
    block_on(async {
        let mut conn = connection(data);
        if let Ok(Some(_wants)) = v0::read_wants(&mut conn, &cfg, None).await {
            while let Ok(Some(_round)) = v0::read_round(&mut conn).await {}
        }
    })
}

/// A push's command section, with `shallow` lines and push options.
pub fn push_commands(data: &[u8]) {
    let offered = Offered {
        atomic: true,
        push_options: true,
    };
    block_on(async {
        let mut conn = connection(data);
        if let Ok(Some(cmds)) = commands::read(&mut conn, offered).await
            && cmds.caps.push_options
        {
            let _ = commands::read_push_options(&mut conn).await;
        }
    })
}

/// A filter spec as `filter <spec>` carries it: parsed, checked against a permissive
/// and a restrictive `uploadpackfilter.*` configuration, and asked about bitmaps.
pub fn filter_spec(data: &[u8]) {
    let Ok(filter) = Filter::parse(data) else {
        return;
    };
    let _ = filter.check_allowed(&permissive());
    let strict = UploadPackConfig {
        allow_filter: true,
        filter_allow: vec![
            ("blob:none".into(), true),
            ("tree".into(), true),
            ("combine".into(), true),
        ],
        tree_filter_max_depth: Some(1),
        ..Default::default()
    };
    let _ = filter.check_allowed(&strict);
    let _ = (filter.bitmap_able(), filter.config_name());
}

/// `git archive --remote` arguments, one per line (as `argument <arg>` packets carry
/// them, after the UTF-8 check).
pub fn archive_args(data: &[u8]) {
    let argv: Vec<String> = data
        .split(|&b| b == b'\n')
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let _ = args::parse(&argv);
}

/// The fixture repository under `fuzz/fixture` (packed, with a bitmap, and
/// configured to offer every optional feature).
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fixture/repo.git")
}

/// Copy a directory tree (the small fixture: a few levels, a few files).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create fixture copy");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("read fixture");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy fixture");
        }
    }
}

/// A scratch directory of this process, removed and made anew on first use.
fn scratch() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("gitd-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

/// The tree `path_policy` resolves in, made once per process:
///
/// ```text
/// base/repo.git           the fixture
/// base/exported.git       the fixture, with git-daemon-export-ok
/// base/example.com/9418/x.git    for `--interpolated-path=base/%H/%P/%D`
/// base/link.git  -> outside/repo.git   (a symbolic link out of the base path)
/// base/file.git           a `gitdir:` file pointing at outside/repo.git
/// outside/repo.git
/// ```
fn policy_tree() -> &'static (PathBuf, PathBuf) {
    static TREE: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    TREE.get_or_init(|| {
        let root = scratch().join("policy");
        let (base, outside) = (root.join("base"), root.join("outside"));
        copy_tree(&fixture(), &base.join("repo.git"));
        copy_tree(&fixture(), &base.join("exported.git"));
        std::fs::write(base.join("exported.git/git-daemon-export-ok"), "").expect("export-ok");
        copy_tree(&fixture(), &base.join("example.com/9418/x.git"));
        copy_tree(&fixture(), &outside.join("repo.git"));
        std::os::unix::fs::symlink(outside.join("repo.git"), base.join("link.git"))
            .expect("symlink");
        let gitdir = format!("gitdir: {}\n", outside.join("repo.git").display());
        std::fs::write(base.join("file.git"), gitdir).expect("gitdir file");
        (base, outside)
    })
}

/// Path policy: the first byte picks the daemon options, the rest is the request
/// line whose path (and `host=`) is resolved. With a base path, no interpolation,
/// no `~user` and no permission to leave it, what resolves is inside the base path.
pub fn path_policy(data: &[u8]) {
    let Some((&mode, line)) = data.split_first() else {
        return;
    };
    let Ok(request) = Request::parse(line) else {
        return;
    };
    let (base, _) = policy_tree();
    let bit = |n: u8| mode & (1 << n) != 0;
    // No %CH or %IP: those would look the host name up in DNS.
    let template = format!("{}/%H/%P%D%%%x", base.display());
    let policy = Policy {
        base_path: bit(0).then(|| base.clone()),
        base_path_relaxed: bit(1),
        export_all: bit(2),
        strict_paths: bit(3),
        informative_errors: bit(4),
        whitelist: if bit(5) { vec![base.clone()] } else { vec![] },
        interpolated_path: bit(6).then_some(template),
        user_path: bit(7).then(|| "public_git".to_string()),
        symlinks_outside_base: bit(3) && bit(4),
        ..Default::default()
    };
    let host = HostInfo::new(&request, None);
    match policy.resolve(&request.path, &host) {
        Ok(resolved) => {
            let confined = policy.base_path.is_some()
                && !policy.base_path_relaxed
                && !policy.symlinks_outside_base
                && request.path.first() != Some(&b'~')
                && (policy.interpolated_path.is_none() || !host.saw_extended_args);
            if confined {
                let base = base.canonicalize().expect("base");
                let git_dir = resolved.git_dir.canonicalize().expect("resolved exists");
                assert!(
                    git_dir.starts_with(&base),
                    "{} resolved outside the base path: {}",
                    crate::escape(&request.path),
                    git_dir.display()
                );
            }
        }
        Err(denied) => {
            let _ = policy.error_message(denied, &request.path);
        }
    }
}

/// The name of [`session`]'s blocking threads, whose panics [`count_panics`] counts.
const BLOCKING_THREAD: &str = "gitd-fuzz-blocking";

static BLOCKING_PANICS: AtomicU64 = AtomicU64::new(0);

/// Count panics on blocking threads: tokio catches them (the server sees an error),
/// so without this a test would not notice one.
fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some(BLOCKING_THREAD) {
                BLOCKING_PANICS.fetch_add(1, Ordering::Relaxed);
            }
            previous(info)
        }));
    });
}

/// How long (in the paused clock) one whole request may take before it counts as a
/// hang: far longer than every timeout of the server (6 s of real time at most).
const REQUEST_BOUND: Duration = Duration::from_secs(600);

/// The paused clock's pace while blocking work runs (see [`session`]).
const CLOCK_TICK: Duration = Duration::from_millis(10);
const CLOCK_STEP: Duration = Duration::from_secs(1);

/// A whole connection: `data` is everything the client sends (request line, then the
/// service's requests and any pack), served by [`Handler`] against a fresh copy of
/// the fixture repository, with every service enabled, over an in-memory stream.
/// The response is read to its end and returned.
pub fn session(data: &[u8]) -> Vec<u8> {
    static N: AtomicU64 = AtomicU64::new(0);
    let base = scratch().join(format!("session-{}", N.fetch_add(1, Ordering::Relaxed)));
    copy_tree(&fixture(), &base.join("repo.git"));
    let on = ServiceSetting {
        enabled: true,
        overridable: true,
    };
    let config = Config {
        policy: Policy {
            base_path: Some(base.clone()),
            export_all: true,
            informative_errors: true,
            services: Services {
                upload_pack: on,
                upload_archive: on,
                receive_pack: on,
            },
            ..Default::default()
        },
        init_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(5),
        max_input_size: 1 << 20,
        ..Default::default()
    };
    let handler = Handler::new(Arc::new(config), Arc::new(Activity::default()), None);
    // Paused time: once client and server both wait, the clock jumps to the next
    // timer, so a server waiting for more than was sent meets its read timeout at
    // once, as it would meet it later with a client that sends nothing more. While
    // blocking work runs (indexing a pack, which may itself wait for the client) the
    // clock does not jump: then it runs at CLOCK_STEP per CLOCK_TICK of real time.
    let (tick, stop) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(AtomicBool::new(false)),
    );
    let ticker = {
        let (tick, stop) = (Arc::clone(&tick), Arc::clone(&stop));
        move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::park_timeout(CLOCK_TICK);
                tick.notify_one();
            }
        }
    };
    let ticker = std::thread::spawn(ticker);
    count_panics();
    let panics = BLOCKING_PANICS.load(Ordering::Relaxed);
    let received = block_on_paused(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (mut rx, mut tx) = tokio::io::split(client);
        // The client keeps its end open, as git does while it waits for an answer.
        let send = async {
            // The server may stop reading early (an error): then writing fails.
            let _ = tx.write_all(data).await;
        };
        let receive = async {
            let mut response = Vec::new();
            // Ends when the handler is done and drops its end of the stream.
            let _ = rx.read_to_end(&mut response).await;
            response
        };
        let all = async { tokio::join!(handler.run(server), send, receive).2 };
        let clock = async {
            loop {
                tick.notified().await;
                tokio::time::advance(CLOCK_STEP).await;
            }
        };
        tokio::select! {
            received = tokio::time::timeout(REQUEST_BOUND, all) => received,
            never = clock => never,
        }
    });
    // Joined, not left to end on its own: the leak checker sees a running thread's
    // bookkeeping as a leak.
    stop.store(true, Ordering::Relaxed);
    ticker.thread().unpark();
    ticker.join().expect("ticker");
    let _ = std::fs::remove_dir_all(&base);
    assert_eq!(
        BLOCKING_PANICS.load(Ordering::Relaxed),
        panics,
        "blocking work panicked"
    );
    received.unwrap_or_else(|_| panic!("a request did not end within {REQUEST_BOUND:?}"))
}
