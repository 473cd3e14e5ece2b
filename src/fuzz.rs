//! Entry points for the fuzz targets in `fuzz/`: each feeds untrusted bytes through
//! the same parsing code the server runs on a connection, over an in-memory stream.
//! Errors are expected; a panic, a hang or unbounded memory is a bug.

use crate::connection::Connection;
use crate::receive_pack::commands::{self, Offered};
use crate::request::Request;
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
