//! Command line: git daemon's flag spelling (`--base-path=DIR`, `--export-all`, …)
//! plus the `install` subcommand that sets up the systemd user units.

use std::path::PathBuf;

use clap::{ArgMatches, Args, Parser, Subcommand, ValueEnum};

use crate::policy::{Policy, Services};
use crate::request::Service;

/// A git:// server for systemd socket activation, serving repositories with gix.
#[derive(Debug, Parser)]
// A flag given twice takes the last value, as in git daemon: a `systemctl edit`
// drop-in can then append `--idle-timeout=…` to the shipped `ExecStart=`.
#[command(
    name = "gitd",
    version,
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
#[command(after_help = "Examples:\n  \
    gitd --base-path=$HOME/git --export-all          serve ~/git standalone on port 9418\n  \
    gitd install --user --now                        install and start git.socket for this user\n  \
    git clone git://localhost/myrepo.git             clone ~/git/myrepo.git")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install git.socket and git.service as systemd user units.
    #[command(args_override_self = true)]
    Install(InstallArgs),
    /// Show which repositories would be served, and why others would not.
    #[command(args_override_self = true)]
    Check(Box<CheckArgs>),
    /// Print the manual page (roff).
    Man,
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `gitd check`: the server's own flags, so it can run as `ExecStartPre=` with the
/// same arguments as `ExecStart=`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Flags of the server itself, spelled as `git daemon` spells them.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Remap every requested path relative to DIR (`git://host/foo` serves DIR/foo).
    #[arg(long, value_name = "DIR")]
    pub base_path: Option<PathBuf>,

    /// If a path is not found under --base-path, also try it as an absolute path.
    #[arg(long)]
    pub base_path_relaxed: bool,

    /// Serve every repository, without looking for `git-daemon-export-ok`.
    #[arg(long)]
    pub export_all: bool,

    /// Match paths exactly: no suffix guessing and no whitelist prefixes.
    #[arg(long)]
    pub strict_paths: bool,

    /// Serve repositories that symbolic links under --base-path lead to even when
    /// they are outside it (git daemon does; gitd refuses by default).
    #[arg(long)]
    pub allow_symlinks_outside_base: bool,

    /// Tell clients why a request was refused instead of a generic message.
    #[arg(long)]
    pub informative_errors: bool,

    /// Address to listen on when not socket-activated (repeatable; default: all).
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,

    /// Port to listen on when not socket-activated.
    #[arg(long, default_value_t = 9418)]
    pub port: u16,

    /// Exit after this many seconds without connections (0: never; fractions
    /// allowed). Default: 60 when socket-activated, never when standalone.
    #[arg(long, value_name = "SECONDS", value_parser = non_negative_seconds)]
    pub idle_timeout: Option<f64>,

    /// Refuse connections past this many at once (0: unlimited).
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub max_connections: usize,

    /// Seconds a client has to send its request line after connecting.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub init_timeout: u64,

    /// Seconds any single read or write of a request may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,

    /// Largest number of files and directories one `git archive --remote` may hold.
    #[arg(long, value_name = "N", default_value_t = 200_000)]
    pub archive_max_entries: u64,

    /// Largest total file content one `git archive --remote` may hold (bytes; k, m
    /// and g suffixes as in git's config).
    #[arg(long, value_name = "BYTES", default_value = "4g", value_parser = byte_size)]
    pub archive_max_bytes: u64,

    /// Memory one request may make gitd hold for what the client sends (bytes; k, m
    /// and g suffixes): a pushed pack's index tables and any pushed object resolved
    /// whole. Keep MemoryMax= above a few times this.
    #[arg(long, value_name = "BYTES", default_value = "64m", value_parser = byte_size)]
    pub max_request_memory: u64,

    /// Refuse pushed packs larger than this many bytes (0: no limit), for every
    /// repository; a repository's receive.maxInputSize may set a lower one.
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub max_input_size: u64,

    /// Log every request at INFO, not only failures (and lower the default log level
    /// to debug).
    #[arg(long)]
    pub verbose: bool,

    /// Virtual hosting: build the repository path from TEMPLATE, with %H (host as
    /// sent, lower-cased), %CH (canonical host), %IP, %P (port), %D (path), %%.
    #[arg(long, value_name = "TEMPLATE")]
    pub interpolated_path: Option<String>,

    /// Serve `~user/repo` from user's home directory (below DIR if given).
    #[arg(long, value_name = "DIR", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub user_path: Option<String>,

    /// Run this program before serving; a non-zero exit refuses the request. It gets
    /// `service path host canonical-host ip port` and REMOTE_ADDR/REMOTE_PORT.
    #[arg(long, value_name = "PATH")]
    pub access_hook: Option<String>,

    /// Enable a service by default (upload-pack, upload-archive, receive-pack).
    #[arg(long, value_name = "SERVICE", value_parser = service_name)]
    pub enable: Vec<String>,

    /// Disable a service by default.
    #[arg(long, value_name = "SERVICE", value_parser = service_name)]
    pub disable: Vec<String>,

    /// Let repositories override the default with `daemon.<service>` (the default).
    #[arg(long, value_name = "SERVICE", value_parser = service_name)]
    pub allow_override: Vec<String>,

    /// Ignore a repository's `daemon.<service>` setting.
    #[arg(long, value_name = "SERVICE", value_parser = service_name)]
    pub forbid_override: Vec<String>,

    /// Do not tell clients why a request was refused (the default).
    #[arg(long, overrides_with = "informative_errors")]
    pub no_informative_errors: bool,

    /// Short for --log-destination=syslog.
    #[arg(long)]
    pub syslog: bool,

    /// Where logs go: stderr, syslog (the journal) or none.
    #[arg(long, value_enum, value_name = "DESTINATION")]
    pub log_destination: Option<LogDestination>,

    /// Write the process id to FILE.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,

    /// Accepted for compatibility: gitd always sets SO_REUSEADDR.
    #[arg(long)]
    pub reuseaddr: bool,

    /// Serve one connection on stdin/stdout (for inetd or systemd Accept=yes).
    #[arg(long, conflicts_with_all = ["listen", "detach", "user", "group"])]
    pub inetd: bool,

    /// Not supported: gitd does not daemonize itself (use systemd or `&`).
    #[arg(long)]
    pub detach: bool,

    /// Switch to this user after binding the sockets (needs root).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Switch to this group (default: the user's primary group).
    #[arg(long, value_name = "GROUP", requires = "user")]
    pub group: Option<String>,

    /// Only serve repositories under these directories (git daemon's whitelist).
    #[arg(value_name = "DIRECTORY")]
    pub directories: Vec<PathBuf>,
}

/// `gitd install --user`: write the units and (with `--now`) start the socket.
#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// Install for the current user's systemd manager (the only mode for now).
    #[arg(long, required = true)]
    pub user: bool,

    /// Directory of the repositories to serve (default: ~/git).
    #[arg(long, value_name = "DIR")]
    pub base_path: Option<PathBuf>,

    /// Serve every repository, without `git-daemon-export-ok` files.
    #[arg(long)]
    pub export_all: bool,

    /// Port for git.socket to listen on.
    #[arg(long, default_value_t = 9418)]
    pub port: u16,

    /// Address for git.socket to listen on (default: every address).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Idle timeout written into git.service, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0, value_parser = non_negative_seconds)]
    pub idle_timeout: f64,

    /// Also enable and start git.socket right away.
    #[arg(long)]
    pub now: bool,
}

/// `--log-destination`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogDestination {
    Stderr,
    Syslog,
    None,
}

/// Accept only the services git daemon knows (`No such service …` otherwise).
fn service_name(name: &str) -> Result<String, String> {
    crate::request::Service::from_name(name)
        .map(|_| name.to_string())
        .ok_or_else(|| format!("No such service {name}"))
}

/// A size in bytes with an optional `k`, `m` or `g` suffix (git's config style).
fn byte_size(s: &str) -> Result<u64, String> {
    let lower = s.to_ascii_lowercase();
    let (digits, unit) = match lower.as_bytes().last() {
        Some(b'k') => (&lower[..lower.len() - 1], 1u64 << 10),
        Some(b'm') => (&lower[..lower.len() - 1], 1 << 20),
        Some(b'g') => (&lower[..lower.len() - 1], 1 << 30),
        _ => (&lower[..], 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("'{s}' is not a size in bytes"))
}

/// A number of seconds, possibly fractional, not negative.
fn non_negative_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1e9).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a number of seconds")),
    }
}

impl ServeArgs {
    /// The access policy these flags describe (`matches` for the order of the
    /// service switches).
    pub fn policy(&self, matches: &ArgMatches) -> Policy {
        Policy {
            base_path: self.base_path.clone(),
            base_path_relaxed: self.base_path_relaxed,
            export_all: self.export_all,
            strict_paths: self.strict_paths,
            informative_errors: self.informative_errors && !self.no_informative_errors,
            whitelist: self.directories.clone(),
            interpolated_path: self.interpolated_path.clone(),
            user_path: self.user_path.clone(),
            services: services(matches),
            access_hook: self.access_hook.clone(),
            symlinks_outside_base: self.allow_symlinks_outside_base,
        }
    }
}

/// `--enable`/`--disable`/`--allow-override`/`--forbid-override`, applied in the order
/// given on the command line (the last word on a service wins, as in git daemon).
fn services(matches: &ArgMatches) -> Services {
    let mut actions: Vec<(usize, &str, String)> = Vec::new();
    for id in ["enable", "disable", "allow_override", "forbid_override"] {
        if let (Some(values), Some(indices)) =
            (matches.get_many::<String>(id), matches.indices_of(id))
        {
            actions.extend(indices.zip(values).map(|(i, v)| (i, id, v.clone())));
        }
    }
    actions.sort_by_key(|(i, _, _)| *i);
    let mut services = Services::default();
    for (_, action, name) in actions {
        let s = services.get_mut(Service::from_name(&name).expect("validated by clap"));
        match action {
            "enable" => s.enabled = true,
            "disable" => s.enabled = false,
            "allow_override" => s.overridable = true,
            _ => s.overridable = false,
        }
    }
    services
}

/// The manual page, generated from the flag definitions.
pub fn man_page() -> Vec<u8> {
    let mut out = Vec::new();
    clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
        .render(&mut out)
        .expect("writing to a Vec");
    out
}

/// Completions for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(
        shell,
        &mut <Cli as clap::CommandFactory>::command(),
        "gitd",
        &mut out,
    );
    out
}
