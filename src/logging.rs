//! Logs through tracing: to the journal when systemd connected our output to it
//! (`JOURNAL_STREAM`), else to stderr.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;

use crate::cli::LogDestination;
use tracing_subscriber::prelude::*;

/// Install the global subscriber. `verbose` lowers the default level to debug;
/// `GITD_LOG` (`level` or `target=level,…` directives) overrides both. The simple
/// `Targets` filter, not the regex-based `EnvFilter`, keeps an idle gitd small. `syslog` goes to the
/// journal (which is the system log on systemd hosts), falling back to stderr.
pub fn init(verbose: bool, destination: LogDestination) {
    if destination == LogDestination::None {
        return;
    }
    let default = if verbose { "debug" } else { "info" };
    let filter: Targets = std::env::var("GITD_LOG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| default.parse().expect("a valid level"));
    let journal =
        destination == LogDestination::Syslog || std::env::var_os("JOURNAL_STREAM").is_some();
    if journal && let Ok(journald) = tracing_journald::layer() {
        tracing_subscriber::registry()
            .with(filter)
            .with(
                journald
                    .with_syslog_identifier("gitd".into())
                    .with_field_prefix(Some("GITD".into())),
            )
            .init();
        return;
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
        .init();
}
