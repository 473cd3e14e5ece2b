//! The git:// request line, parsed exactly as git daemon parses it.
//!
//! ```text
//! git-upload-pack /path/repo.git\0host=example.com:9418\0\0version=2\0
//! ```
//! The service and path run up to the first NUL (one trailing newline is dropped).
//! Then comes an optional `host=` parameter, then a second NUL, then extra
//! parameters such as `version=2` that select the protocol (`man 5 gitprotocol-pack`,
//! `daemon.c: parse_extra_args`).

use crate::ClientError;

/// The services git daemon knows by name (`git-<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    UploadPack,
    UploadArchive,
    ReceivePack,
}

impl Service {
    /// The name used on the wire and in `--enable=`/`daemon.<name>` (without `git-`).
    pub fn name(self) -> &'static str {
        match self {
            Service::UploadPack => "upload-pack",
            Service::UploadArchive => "upload-archive",
            Service::ReceivePack => "receive-pack",
        }
    }

    /// The key in `daemon.<key>` that enables or disables it per repository.
    pub fn config_name(self) -> &'static str {
        match self {
            Service::UploadPack => "uploadpack",
            Service::UploadArchive => "uploadarch",
            Service::ReceivePack => "receivepack",
        }
    }

    /// Look a service up by its name (`--enable=upload-pack`).
    pub fn from_name(name: &str) -> Option<Service> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    const ALL: [Service; 3] = [
        Service::UploadPack,
        Service::UploadArchive,
        Service::ReceivePack,
    ];
}

/// The protocol version a client asked for with `version=N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProtocolVersion {
    V0 = 0,
    V1 = 1,
    V2 = 2,
}

/// The virtual host the client addressed (`host=`), sanitised as git daemon does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// Lower-cased host name without `/` and without leading, trailing or doubled dots.
    pub hostname: String,
    /// The port, if the client gave one, sanitised the same way.
    pub port: Option<String>,
}

/// A parsed request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub service: Service,
    /// The requested path, raw bytes as sent.
    pub path: Vec<u8>,
    pub host: Option<HostInfo>,
    /// Extra parameters after the second NUL (`version=2`, …), in order.
    pub extra: Vec<Vec<u8>>,
    /// True if anything followed the first NUL (git daemon's `saw_extended_args`).
    pub saw_extended_args: bool,
}

impl Request {
    /// Parse the payload of the first pkt-line of a connection.
    pub fn parse(line: &[u8]) -> Result<Request, ClientError> {
        let (head, rest) = match line.iter().position(|&b| b == 0) {
            Some(nul) => (&line[..nul], Some(&line[nul + 1..])),
            None => (line, None),
        };
        let head = head.strip_suffix(b"\n").unwrap_or(head);
        let (service, path) = Service::ALL
            .into_iter()
            .find_map(|s| {
                let prefix = format!("git-{} ", s.name());
                head.strip_prefix(prefix.as_bytes()).map(|path| (s, path))
            })
            .ok_or_else(|| ClientError(format!("invalid request: {}", crate::escape(head))))?;
        let mut req = Request {
            service,
            path: path.to_vec(),
            host: None,
            extra: Vec::new(),
            saw_extended_args: false,
        };
        if let Some(rest) = rest {
            req.parse_extra_args(rest)?;
        }
        Ok(req)
    }

    /// `daemon.c: parse_extra_args` and `parse_host_arg`.
    fn parse_extra_args(&mut self, mut args: &[u8]) -> Result<(), ClientError> {
        if args.first().is_some_and(|&b| b != 0) {
            self.saw_extended_args = true;
            let (first, after) = split_nul(args);
            if first.len() >= 5 && first[..5].eq_ignore_ascii_case(b"host=") {
                let value = &first[5..];
                if !value.is_empty() {
                    self.host = Some(parse_host_and_port(value)?);
                }
                args = after;
            }
            // Anything but the second NUL here is malformed. (Old git daemons looped
            // for ever on this; git 2.x dies, and so do we.)
            if args.first().is_some_and(|&b| b != 0) {
                return Err(ClientError(
                    "invalid request ('[host=<host>]\\0[extra-params]\\0' expected)".into(),
                ));
            }
        }
        while !args.is_empty() {
            let (arg, after) = split_nul(args);
            if !arg.is_empty() {
                self.saw_extended_args = true;
                self.extra.push(arg.to_vec());
            }
            args = after;
        }
        Ok(())
    }

    /// The highest `version=N` among the extra parameters (git's
    /// `determine_protocol_version_server`); unknown versions are ignored.
    pub fn protocol_version(&self) -> ProtocolVersion {
        self.extra
            .iter()
            .filter_map(|p| match p.strip_prefix(b"version=")? {
                b"0" => Some(ProtocolVersion::V0),
                b"1" => Some(ProtocolVersion::V1),
                b"2" => Some(ProtocolVersion::V2),
                _ => None,
            })
            .max()
            .unwrap_or(ProtocolVersion::V0)
    }
}

/// Split at the first NUL: (before, after). Without a NUL everything is "before".
fn split_nul(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|&b| b == 0) {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &[]),
    }
}

/// `host[:port]` or `[v6]:port`, as `daemon.c: parse_host_and_port`.
fn parse_host_and_port(value: &[u8]) -> Result<HostInfo, ClientError> {
    let (host, port) = if let Some(bracketed) = value.strip_prefix(b"[") {
        let end = bracketed
            .iter()
            .position(|&b| b == b']')
            .ok_or_else(|| ClientError("invalid request ('[' without ']')".into()))?;
        let after = &bracketed[end + 1..];
        let port = match after {
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => {
                return Err(ClientError(
                    "invalid request (garbage after end of host part)".into(),
                ));
            }
        };
        (&bracketed[..end], port)
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(i) => (&value[..i], Some(&value[i + 1..])),
            None => (value, None),
        }
    };
    Ok(HostInfo {
        hostname: sanitize(host).to_ascii_lowercase(),
        port: port.map(sanitize),
    })
}

/// `daemon.c: sanitize_client`: drop `/`, leading and doubled dots, trailing dots.
pub(crate) fn sanitize(input: &[u8]) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(input.len());
    for &b in input {
        if b == b'/' || (b == b'.' && out.last().is_none_or(|&l| l == b'.')) {
            continue;
        }
        out.push(b);
    }
    while out.last() == Some(&b'.') {
        out.pop();
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_v0_request() {
        let r = Request::parse(b"git-upload-pack /repo.git\0host=Example.COM\0").unwrap();
        assert_eq!(r.service, Service::UploadPack);
        assert_eq!(r.path, b"/repo.git");
        assert_eq!(
            r.host,
            Some(HostInfo {
                hostname: "example.com".into(),
                port: None
            })
        );
        assert_eq!(r.protocol_version(), ProtocolVersion::V0);
        assert!(r.saw_extended_args);
    }

    #[test]
    fn version_2_after_the_second_nul() {
        let r = Request::parse(b"git-upload-pack /r\0host=h:9418\0\0version=2\0").unwrap();
        assert_eq!(
            r.host,
            Some(HostInfo {
                hostname: "h".into(),
                port: Some("9418".into())
            })
        );
        assert_eq!(r.extra, vec![b"version=2".to_vec()]);
        assert_eq!(r.protocol_version(), ProtocolVersion::V2);
        // Without a host, the parameters follow the double NUL directly.
        let r = Request::parse(b"git-upload-pack /r\0\0version=1\0").unwrap();
        assert_eq!(
            (r.host.clone(), r.protocol_version()),
            (None, ProtocolVersion::V1)
        );
        // The highest known version wins, unknown ones are ignored.
        let r = Request::parse(b"git-upload-pack /r\0\0version=3\0version=1\0foo\0").unwrap();
        assert_eq!(r.protocol_version(), ProtocolVersion::V1);
    }

    #[test]
    fn trailing_newline_and_no_extra_args() {
        let r = Request::parse(b"git-receive-pack /r.git\n").unwrap();
        assert_eq!(
            (r.service, r.path.as_slice(), r.saw_extended_args),
            (Service::ReceivePack, &b"/r.git"[..], false)
        );
        assert_eq!(
            Request::parse(b"git-upload-archive /a").unwrap().service,
            Service::UploadArchive
        );
    }

    #[test]
    fn host_forms() {
        let host = |v: &[u8]| parse_host_and_port(v).unwrap();
        assert_eq!(
            host(b"[::1]:19418"),
            HostInfo {
                hostname: "::1".into(),
                port: Some("19418".into())
            }
        );
        assert_eq!(
            host(b"[::1]"),
            HostInfo {
                hostname: "::1".into(),
                port: None
            }
        );
        assert_eq!(
            host(b"..evil/../host.."),
            HostInfo {
                hostname: "evil.host".into(),
                port: None
            }
        );
        assert!(parse_host_and_port(b"[::1").is_err());
        assert!(parse_host_and_port(b"[::1]x").is_err());
    }

    #[test]
    fn malformed_requests() {
        assert!(Request::parse(b"git-frobnicate /r\0").is_err());
        assert!(Request::parse(b"git-upload-pack/r").is_err());
        assert!(Request::parse(b"GET / HTTP/1.1").is_err());
        // Something other than host= before the second NUL.
        assert!(Request::parse(b"git-upload-pack /r\0version=2\0").is_err());
        assert!(Request::parse(b"git-upload-pack /r\0host=h\0junk\0").is_err());
    }
}
