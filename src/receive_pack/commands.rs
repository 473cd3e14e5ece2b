//! What a pusher sends before its pack: `old new ref` commands (the first carrying
//! the capabilities after a NUL), `shallow` lines from shallow clients, and the
//! push options when negotiated (`builtin/receive-pack.c: read_head_info`,
//! `read_push_options`).

use gix::ObjectId;
use gix::bstr::{BString, ByteSlice};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::connection::{Connection, Packet};
use crate::{ClientError, Result};

/// Most commands one push may carry: far beyond any real push, it bounds memory.
pub const MAX_COMMANDS: usize = 100_000;
/// Most push options one push may carry.
pub const MAX_PUSH_OPTIONS: usize = 1_000;
/// Most bytes of commands, or of push options, one push may send: pkt-lines are
/// up to 64 KiB each, so the counts alone would still allow gigabytes.
pub const MAX_SECTION_BYTES: usize = 32 << 20;

/// One ref update the client asked for, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub old: ObjectId,
    pub new: ObjectId,
    pub name: BString,
    /// Why the update was refused (`ng <ref> <error>`); `None` is `ok`.
    pub error: Option<String>,
    /// Reported as done without an update of its own (a symbolic ref whose target
    /// is updated by the same push).
    pub skip_update: bool,
    /// A deletion of a ref that did not exist: not passed to `post-receive`.
    pub did_not_exist: bool,
}

impl Command {
    pub fn is_delete(&self) -> bool {
        self.new.is_null()
    }

    pub fn is_create(&self) -> bool {
        self.old.is_null()
    }

    /// The hook input line `old new ref`.
    pub fn hook_line(&self) -> Vec<u8> {
        let mut line = format!("{} {} ", self.old, self.new).into_bytes();
        line.extend_from_slice(&self.name);
        line.push(b'\n');
        line
    }

    /// Refuse this command unless it already failed.
    pub fn fail(&mut self, reason: &str) {
        if self.error.is_none() {
            self.error = Some(reason.to_string());
        }
    }
}

/// The capabilities the client chose, from its first command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub report_status: bool,
    pub report_status_v2: bool,
    pub side_band_64k: bool,
    pub quiet: bool,
    pub atomic: bool,
    pub push_options: bool,
}

/// What the server advertised, which bounds what the client may choose.
#[derive(Debug, Clone, Copy, Default)]
pub struct Offered {
    pub atomic: bool,
    pub push_options: bool,
}

/// The command section of a push.
#[derive(Debug, Default)]
pub struct Commands {
    pub commands: Vec<Command>,
    pub caps: Capabilities,
    /// The client's shallow boundary (`shallow <id>` lines).
    pub shallow: Vec<ObjectId>,
}

impl Commands {
    /// A push of deletions only comes without a pack.
    pub fn delete_only(&self) -> bool {
        self.commands.iter().all(Command::is_delete)
    }
}

/// Read the commands up to the flush. `None` if the client sent none (nothing to
/// push, or it hung up after the advertisement).
pub async fn read<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    offered: Offered,
) -> Result<Option<Commands>> {
    let mut out = Commands::default();
    let mut bytes = 0;
    loop {
        let packet = match conn.read_packet().await? {
            None => return Ok(None),
            Some(p) => p,
        };
        let line = match &packet {
            Packet::Data(_) => packet.text().expect("data"),
            _ => break,
        };
        parse_line(line, offered, &mut out)?;
        bytes += line.len();
        if bytes > MAX_SECTION_BYTES {
            return Err(ClientError::boxed(format!(
                "protocol error: more than {MAX_SECTION_BYTES} bytes of commands"
            )));
        }
        if out.commands.len() > MAX_COMMANDS {
            return Err(ClientError::boxed(format!(
                "protocol error: more than {MAX_COMMANDS} commands"
            )));
        }
    }
    Ok((!out.commands.is_empty()).then_some(out))
}

/// One line of the command section.
pub fn parse_line(line: &[u8], offered: Offered, out: &mut Commands) -> Result<()> {
    if line.len() > 8
        && let Some(hex) = line.strip_prefix(b"shallow ")
    {
        let id = ObjectId::from_hex(hex).map_err(|_| {
            ClientError::boxed(format!(
                "protocol error: expected shallow sha, got '{}'",
                crate::escape(hex)
            ))
        })?;
        out.shallow.push(id);
        return Ok(());
    }
    let (line, features) = match line.find_byte(0) {
        Some(nul) => (&line[..nul], Some(&line[nul + 1..])),
        None => (line, None),
    };
    if let Some(features) = features {
        out.caps = parse_capabilities(features, offered)?;
    }
    out.commands.push(parse_command(line)?);
    Ok(())
}

/// `old new ref`.
pub fn parse_command(line: &[u8]) -> Result<Command> {
    let bad = || {
        ClientError::boxed(format!(
            "protocol error: expected old/new/ref, got '{}'",
            crate::escape(line)
        ))
    };
    let hex = gix::hash::Kind::Sha1.len_in_hex();
    if line.len() < 2 * hex + 2 || line[hex] != b' ' || line[2 * hex + 1] != b' ' {
        return Err(bad());
    }
    let old = ObjectId::from_hex(&line[..hex]).map_err(|_| bad())?;
    let new = ObjectId::from_hex(&line[hex + 1..2 * hex + 1]).map_err(|_| bad())?;
    Ok(Command {
        old,
        new,
        name: line[2 * hex + 2..].into(),
        error: None,
        skip_update: false,
        did_not_exist: false,
    })
}

/// The capability list after the NUL of the first command. `atomic` and
/// `push-options` count only if they were offered, as in git.
pub fn parse_capabilities(features: &[u8], offered: Offered) -> Result<Capabilities> {
    let mut caps = Capabilities::default();
    let mut format: Option<&[u8]> = None;
    for word in features.split(|&b| b == b' ').filter(|w| !w.is_empty()) {
        match word {
            b"report-status" => caps.report_status = true,
            b"report-status-v2" => caps.report_status_v2 = true,
            b"side-band-64k" => caps.side_band_64k = true,
            b"quiet" => caps.quiet = true,
            b"atomic" => caps.atomic = offered.atomic,
            b"push-options" => caps.push_options = offered.push_options,
            _ => {
                if let Some(f) = word.strip_prefix(b"object-format=") {
                    format = Some(f);
                }
            }
        }
    }
    let format = format.unwrap_or(b"sha1");
    if format != b"sha1" {
        return Err(ClientError::boxed(format!(
            "error: unsupported object format '{}'",
            crate::escape(format)
        )));
    }
    Ok(caps)
}

/// The push options after the commands, up to the flush.
pub async fn read_push_options<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
) -> Result<Vec<BString>> {
    let mut options = Vec::new();
    let mut bytes = 0;
    loop {
        let packet = conn.expect_packet().await?;
        let Some(line) = packet.text() else {
            return Ok(options);
        };
        bytes += line.len();
        if bytes > MAX_SECTION_BYTES {
            return Err(ClientError::boxed(format!(
                "protocol error: more than {MAX_SECTION_BYTES} bytes of push options"
            )));
        }
        if options.len() >= MAX_PUSH_OPTIONS {
            return Err(ClientError::boxed(format!(
                "protocol error: more than {MAX_PUSH_OPTIONS} push options"
            )));
        }
        options.push(line.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const Z: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn first_command_carries_capabilities() {
        let mut out = Commands::default();
        let offered = Offered {
            atomic: true,
            push_options: false,
        };
        let line = format!(
            "{Z} {A} refs/heads/main\0 report-status-v2 side-band-64k quiet atomic push-options object-format=sha1 agent=git/2.47"
        );
        parse_line(line.as_bytes(), offered, &mut out).unwrap();
        parse_line(
            format!("{A} {Z} refs/heads/old").as_bytes(),
            offered,
            &mut out,
        )
        .unwrap();
        parse_line(format!("shallow {A}").as_bytes(), offered, &mut out).unwrap();
        assert_eq!(
            out.caps,
            Capabilities {
                report_status_v2: true,
                side_band_64k: true,
                quiet: true,
                atomic: true,
                ..Default::default()
            }
        );
        assert_eq!(out.commands.len(), 2);
        assert!(out.commands[0].is_create());
        assert!(out.commands[1].is_delete());
        assert_eq!(out.commands[1].name, "refs/heads/old");
        assert_eq!(out.shallow.len(), 1);
        assert!(!out.delete_only());
    }

    #[tokio::test]
    async fn the_command_section_is_bounded_in_bytes() {
        let name = "x".repeat(65_000);
        let mut input = Vec::new();
        for _ in 0..(MAX_SECTION_BYTES / 65_000 + 2) {
            let line = format!("{Z} {A} refs/heads/{name}");
            input.extend_from_slice(format!("{:04x}", line.len() + 4).as_bytes());
            input.extend_from_slice(line.as_bytes());
        }
        input.extend_from_slice(b"0000");
        let stream = tokio::io::join(&input[..], tokio::io::sink());
        let mut conn = Connection::new(stream, std::time::Duration::from_secs(5));
        let err = read(&mut conn, Offered::default()).await.unwrap_err();
        assert!(err.to_string().contains("bytes of commands"), "{err}");
    }

    #[test]
    fn malformed_lines_get_gits_messages() {
        let err = parse_command(b"abc refs/heads/x").unwrap_err().to_string();
        assert_eq!(
            err,
            "protocol error: expected old/new/ref, got 'abc refs/heads/x'"
        );
        let err = parse_capabilities(b"object-format=sha256", Offered::default())
            .unwrap_err()
            .to_string();
        assert_eq!(err, "error: unsupported object format 'sha256'");
        let mut out = Commands::default();
        assert!(parse_line(b"shallow xyz", Offered::default(), &mut out).is_err());
    }
}
