//! The `gitd` binary: parse flags, set up logging and sockets, run the server.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use gitd::cli::{Cli, Command, ServeArgs};
use gitd::policy::Policy;
use gitd::server::{self, Config};
use gitd::{activation, install, logging, shutdown};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Install(args)) => install::run(&args),
        None => serve(cli.serve),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    logging::init(args.verbose);
    // Before any thread exists: this edits the environment.
    let sockets = match activation::acquire(&args.listen, args.port) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot get a listening socket: {e}");
            return ExitCode::FAILURE;
        }
    };
    let idle_timeout = match args.idle_timeout {
        Some(0) => None,
        Some(s) => Some(Duration::from_secs(s)),
        None if sockets.activated => Some(Duration::from_secs(60)),
        None => None,
    };
    let config = Config {
        policy: Policy {
            base_path: args.base_path,
            base_path_relaxed: args.base_path_relaxed,
            export_all: args.export_all,
            strict_paths: args.strict_paths,
            informative_errors: args.informative_errors,
            whitelist: args.directories,
        },
        idle_timeout,
        max_connections: args.max_connections,
        init_timeout: Duration::from_secs(args.init_timeout),
        timeout: Duration::from_secs(args.timeout),
        ..Config::default()
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
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
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
