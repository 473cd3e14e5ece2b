//! Where the listening sockets come from: systemd (socket activation) or our own bind.
//!
//! Under `git.socket` systemd owns port 9418 and passes the listening socket(s) as
//! fds 3.. with `LISTEN_FDS`/`LISTEN_PID`/`LISTEN_FDNAMES`. Those sockets are shared
//! with systemd: gitd may close its copies but must never `shutdown()` them, because
//! connections still queued in the backlog when gitd exits belong to the next
//! instance that systemd starts.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, ToSocketAddrs};

/// The listening sockets gitd serves on.
#[derive(Debug)]
pub struct Sockets {
    pub listeners: Vec<TcpListener>,
    /// True when the sockets were inherited from systemd (or another activator).
    pub activated: bool,
}

/// Take inherited sockets if there are any, else bind `listen` × `port`.
///
/// Must run before any other thread exists: it removes the `LISTEN_*` variables from
/// the environment so that nothing gitd might spawn inherits them.
pub fn acquire(listen: &[String], port: u16) -> io::Result<Sockets> {
    let mut fds = listenfd::ListenFd::from_env();
    // SAFETY (of the environment): called from `main` before the runtime starts.
    unsafe { std::env::remove_var("LISTEN_FDNAMES") };
    if fds.len() > 0 {
        let mut listeners = Vec::with_capacity(fds.len());
        for idx in 0..fds.len() {
            match fds.take_tcp_listener(idx)? {
                Some(l) => listeners.push(l),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("inherited fd {} is not a TCP listening socket", idx + 3),
                    ));
                }
            }
        }
        return Ok(Sockets {
            listeners,
            activated: true,
        });
    }
    Ok(Sockets {
        listeners: bind(listen, port)?,
        activated: false,
    })
}

/// Bind each `--listen` address (every address when there is none) on `port`.
fn bind(listen: &[String], port: u16) -> io::Result<Vec<TcpListener>> {
    if listen.is_empty() {
        // One dual-stack socket serves IPv4 and IPv6; hosts without IPv6 get IPv4 only.
        let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
        return match TcpListener::bind(any6) {
            Ok(l) => Ok(vec![l]),
            Err(_) => Ok(vec![TcpListener::bind(("0.0.0.0", port))?]),
        };
    }
    let mut out = Vec::new();
    for addr in listen {
        let addrs: Vec<SocketAddr> = match addr.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => (addr.as_str(), port).to_socket_addrs()?.collect(),
        };
        for a in addrs {
            out.push(
                TcpListener::bind(a)
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {a}: {e}")))?,
            );
        }
    }
    Ok(out)
}
