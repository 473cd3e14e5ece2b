//! The `gitd` binary: parse flags, set up logging and sockets, run the server.

use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgMatches, CommandFactory, FromArgMatches, parser::ValueSource};
use gitd::cli::{Cli, Command, LogDestination, ServeArgs};
use gitd::server::{self, Config};
use gitd::{activation, check, install, logging, privileges, shutdown};

fn main() -> ExitCode {
    gitd::memory::use_one_arena();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Some(Command::Install(args)) => install::run(&args),
        Some(Command::Check(args)) => {
            let sub = matches
                .subcommand_matches("check")
                .expect("the check subcommand");
            check::run(&args.serve.policy(sub))
        }
        Some(Command::Man) => print_or_fail(gitd::cli::man_page()),
        Some(Command::Completions { shell }) => print_or_fail(gitd::cli::completions(shell)),
        None => serve(cli.serve, &matches),
    }
}

/// A usage error: message on stderr, exit status 2 (as clap and git daemon do).
fn usage_error(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

fn serve(args: ServeArgs, matches: &ArgMatches) -> ExitCode {
    if args.detach {
        return usage_error(
            "--detach is not supported: gitd does not daemonize itself; run it under systemd (gitd install --user) or in the background",
        );
    }
    if args.strict_paths && args.directories.is_empty() {
        return usage_error("--strict-paths requires at least one directory to be whitelisted");
    }
    if args.inetd && matches.value_source("port") == Some(ValueSource::CommandLine) {
        return usage_error("--inetd cannot be used with --port");
    }
    let destination = match (args.log_destination, args.syslog, args.inetd) {
        (Some(d), _, _) => d,
        (None, true, _) | (None, false, true) => LogDestination::Syslog,
        _ => LogDestination::Stderr,
    };
    logging::init(args.verbose, destination);
    raise_fd_limit();
    if let Some(pid_file) = &args.pid_file
        && let Err(e) = std::fs::write(pid_file, format!("{}\n", std::process::id()))
    {
        tracing::error!("cannot write {}: {e}", pid_file.display());
        return ExitCode::FAILURE;
    }
    let idle_timeout = |activated: bool| match args.idle_timeout {
        Some(s) if s <= 0.0 => None,
        Some(s) => Some(Duration::from_secs_f64(s)),
        None if activated => Some(Duration::from_secs(60)),
        None => None,
    };
    let mut config = Config {
        policy: args.policy(matches),
        max_connections: args.max_connections,
        init_timeout: Duration::from_secs(args.init_timeout),
        timeout: Duration::from_secs(args.timeout),
        archive_limits: gitd::upload_archive::Limits {
            max_entries: args.archive_max_entries,
            max_bytes: args.archive_max_bytes,
        },
        max_input_size: args.max_input_size,
        log_requests: args.verbose,
        max_request_memory: args.max_request_memory,
        ..Config::default()
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Blocking-pool threads (pack writing, lookups) exit soon after their work,
        // not 10 s later, so an idle gitd holds no stacks or per-thread caches.
        .thread_keep_alive(Duration::from_secs(1))
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.inetd {
        let result = runtime.block_on(server::serve_inetd(config));
        runtime.shutdown_timeout(Duration::from_secs(1));
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        };
    }

    // Before any thread that matters exists: this edits the environment.
    let sockets = match activation::acquire(&args.listen, args.port) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot get a listening socket: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(user) = &args.user
        && let Err(e) = privileges::drop_to(user, args.group.as_deref())
    {
        tracing::error!("{e}");
        return ExitCode::FAILURE;
    }
    config.idle_timeout = idle_timeout(sockets.activated);
    let result = runtime.block_on(async {
        let mut signals = shutdown::Signals::new()?;
        let stop = async move {
            let sig = signals.recv().await;
            tracing::info!("received {sig}");
        };
        server::run(sockets.listeners, config, stop).await
    });
    // Blocking pack threads of abandoned requests must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    // Nor leave their pushes' quarantines behind.
    gitd::receive_pack::quarantine::remove_abandoned();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Every connection is a file descriptor: lift the soft limit (often 1024) to the
/// hard one, as servers do, so --max-connections is the limit rather than EMFILE.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::debug!(
                    "cannot raise the open file limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

fn print_or_fail(text: Vec<u8>) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().write_all(&text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
