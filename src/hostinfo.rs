//! What the client said about the host it connected to (`host=`), with the
//! lookups git daemon performs for `%CH`, `%IP` and the access hook.

use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

use crate::request::Request;

/// The client's view of the server: requested host name and port, and its peer address.
#[derive(Debug, Default)]
pub struct HostInfo {
    /// `%H`: the host name from `host=`, sanitised and lower-cased ("" if none).
    pub hostname: String,
    /// `%P`: the port from `host=` ("" if none), as git daemon does.
    pub port: String,
    /// Whether the request carried extended arguments (interpolation needs them).
    pub saw_extended_args: bool,
    /// The client's address, for the access hook's `REMOTE_ADDR`/`REMOTE_PORT`.
    pub peer: Option<SocketAddr>,
    lookup: OnceLock<(String, String)>,
}

impl HostInfo {
    pub fn new(request: &Request, peer: Option<SocketAddr>) -> Self {
        HostInfo {
            hostname: request
                .host
                .as_ref()
                .map(|h| h.hostname.clone())
                .unwrap_or_default(),
            port: request
                .host
                .as_ref()
                .and_then(|h| h.port.clone())
                .unwrap_or_default(),
            saw_extended_args: request.saw_extended_args,
            peer,
            lookup: OnceLock::new(),
        }
    }

    /// `%CH`: the canonical name of the requested host (DNS, blocking).
    pub fn canonical_hostname(&self) -> &str {
        &self.looked_up().0
    }

    /// `%IP`: an address of the requested host (DNS, blocking).
    pub fn ip_address(&self) -> &str {
        &self.looked_up().1
    }

    fn looked_up(&self) -> &(String, String) {
        self.lookup.get_or_init(|| {
            if self.hostname.is_empty() {
                return Default::default();
            }
            lookup_hostname(&self.hostname).unwrap_or_default()
        })
    }
}

/// `daemon.c: lookup_hostname`: getaddrinfo with `AI_CANONNAME`. git formats the first
/// address as IPv4 whatever its family; we prefer the first IPv4 address and fall
/// back to IPv6, which is what git means for every host that has an IPv4 address.
fn lookup_hostname(host: &str) -> Option<(String, String)> {
    let c_host = CString::new(host).ok()?;
    // SAFETY: plain getaddrinfo/freeaddrinfo use; every pointer read comes from the
    // list getaddrinfo returned and is read before freeaddrinfo.
    unsafe {
        let mut hints: libc::addrinfo = std::mem::zeroed();
        hints.ai_flags = libc::AI_CANONNAME;
        hints.ai_socktype = libc::SOCK_STREAM;
        let mut res: *mut libc::addrinfo = std::ptr::null_mut();
        if libc::getaddrinfo(c_host.as_ptr(), std::ptr::null(), &hints, &mut res) != 0
            || res.is_null()
        {
            return None;
        }
        let canon = if (*res).ai_canonname.is_null() {
            None
        } else {
            Some(
                CStr::from_ptr((*res).ai_canonname)
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        let mut v4 = None;
        let mut v6 = None;
        let mut ai = res;
        while !ai.is_null() {
            match (*ai).ai_family {
                libc::AF_INET if v4.is_none() => {
                    let sin = (*ai).ai_addr as *const libc::sockaddr_in;
                    v4 = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        (*sin).sin_addr.s_addr,
                    ))));
                }
                libc::AF_INET6 if v6.is_none() => {
                    let sin6 = (*ai).ai_addr as *const libc::sockaddr_in6;
                    v6 = Some(IpAddr::V6(Ipv6Addr::from((*sin6).sin6_addr.s6_addr)));
                }
                _ => {}
            }
            ai = (*ai).ai_next;
        }
        libc::freeaddrinfo(res);
        let ip = v4.or(v6)?.to_string();
        let canon = canon
            .map(|c| crate::request::sanitize(c.as_bytes()))
            .unwrap_or_else(|| ip.clone());
        Some((canon, ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_resolves_and_unknown_hosts_are_empty() {
        let req = Request::parse(b"git-upload-pack /r\0host=LOCALHOST:9418\0").unwrap();
        let info = HostInfo::new(&req, None);
        assert_eq!(
            (info.hostname.as_str(), info.port.as_str()),
            ("localhost", "9418")
        );
        assert!(
            ["127.0.0.1", "::1"].contains(&info.ip_address()),
            "{}",
            info.ip_address()
        );
        assert!(!info.canonical_hostname().is_empty());
        let req = Request::parse(b"git-upload-pack /r\0host=no-such-host.invalid\0").unwrap();
        let info = HostInfo::new(&req, None);
        assert_eq!((info.ip_address(), info.canonical_hostname()), ("", ""));
    }
}
