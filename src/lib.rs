//! gitd: a git:// server for systemd socket activation.
//!
//! systemd owns the listening socket (`git.socket`) and starts `gitd` on the first
//! connection; gitd serves the bare repositories under a base path in-process with
//! gix and exits once idle, so an idle host spends no memory on it.
//!
//! The layout follows tokio's mini-redis: [`server`] accepts and runs one
//! [`server::Handler`] per connection, [`connection`] frames pkt-lines, [`request`]
//! and [`policy`] decide what may be served, [`upload_pack`] speaks the protocol,
//! [`pack`] builds the packfile, [`upload_archive`] serves `git archive --remote`
//! and [`receive_pack`] accepts pushes. The binary in `main.rs` is a thin layer
//! over this.

pub mod activation;
pub mod check;
pub mod cli;
pub mod connection;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
pub mod handler;
pub mod hostinfo;
pub mod install;
pub mod logging;
pub mod memory;
pub mod notify;
pub mod pack;
pub mod policy;
pub mod privileges;
pub mod receive_pack;
pub mod request;
pub mod server;
pub mod shutdown;
pub mod upload_archive;
pub mod upload_pack;

/// Error type for everything that can go wrong while serving.
///
/// Like mini-redis we use a boxed error: most failures end a connection and are only
/// logged. Failures the client should read about are [`ClientError`]s, which the
/// handler sends back as an `ERR` pkt-line.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A specialized `Result` for gitd operations.
pub type Result<T> = std::result::Result<T, Error>;

/// An error whose message is meant for the client: sent as `ERR <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError(pub String);

impl ClientError {
    /// Box a client-facing message as an [`Error`].
    pub fn boxed(msg: impl Into<String>) -> Error {
        Box::new(ClientError(msg.into()))
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientError {}

/// The version of this build, as advertised in `agent=gitd/VERSION`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The `agent=` value gitd advertises to clients.
pub fn agent() -> String {
    format!("gitd/{VERSION}")
}

/// Escape untrusted bytes (paths, host names) for logs and error messages: printable
/// ASCII stays as is, everything else becomes `\xNN`, so a client cannot forge log
/// lines or terminal escapes.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escape_keeps_printable_and_hex_encodes_the_rest() {
        assert_eq!(super::escape(b"/repo.git"), "/repo.git");
        assert_eq!(super::escape(b"a\nb\x1b\\"), "a\\x0ab\\x1b\\x5c");
    }
}
