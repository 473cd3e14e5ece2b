//! A raw git:// fetch client for benchmarks.
//!
//! It speaks just enough of upload-pack (protocol v2 or v0) to fetch a pack, and
//! reads the pack off the socket and throws it away while counting its bytes, so the
//! time measured is the server's: a real `git clone` also spends seconds in its own
//! `index-pack`, which would hide what the server costs.
//!
//! ```text
//! cargo run --release --example raw_fetch -- [OPTIONS] HOST:PORT /path/repo.git
//!
//!   --protocol 2|0     protocol version (default 2)
//!   --want PATTERN     refs to want: a name ending in `/` is a prefix, anything else
//!                      an exact name (repeatable; default refs/heads/ and refs/tags/)
//!   --have OID         an object the client has (repeatable)
//!   --depth N          shallow fetch (`deepen N`)
//!   --filter SPEC      partial clone filter, e.g. blob:none
//!   --first-ref        only time connect → first ref line, then hang up
//!   --quickack         acknowledge every packet at once (TCP_QUICKACK): no 40 ms
//!                      delayed-ACK stalls with servers that leave Nagle on
//!   --parallel N       run N fetches at once and report them together
//!   --timeout SECS     per read/write (default 600)
//! ```
//!
//! Prints one line of JSON. Times are microseconds from the start of `connect()`:
//! `connect_us`, `first_ref_us` (first ref line), `refs_us` (end of the ref list),
//! `pack_start_us` (first pack byte), `wall_us` (end of the pack). `pack_bytes` counts
//! the pack (side-band channel 1) and `objects` is the count in the pack header. The
//! pack itself is not checked beyond its header: run a real client for correctness.
//! Exits with status 1 if any fetch failed.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Args {
    addr: String,
    path: String,
    protocol: u8,
    wants: Vec<String>,
    haves: Vec<String>,
    depth: Option<u32>,
    filter: Option<String>,
    first_ref: bool,
    parallel: usize,
    timeout: Duration,
    quickack: bool,
}

const USAGE: &str = "usage: raw_fetch [--protocol 2|0] [--want PATTERN].. [--have OID].. \
[--depth N] [--filter SPEC] [--first-ref] [--quickack] [--parallel N] [--timeout SECS] HOST:PORT /path";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: String::new(),
        path: String::new(),
        protocol: 2,
        wants: Vec::new(),
        haves: Vec::new(),
        depth: None,
        filter: None,
        first_ref: false,
        parallel: 0,
        timeout: Duration::from_secs(600),
        quickack: false,
    };
    let mut positional = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--protocol" => {
                args.protocol = match value("--protocol")?.as_str() {
                    "0" => 0,
                    "2" => 2,
                    other => return Err(format!("unsupported protocol {other}")),
                }
            }
            "--want" => args.wants.push(value("--want")?),
            "--have" => args.haves.push(value("--have")?),
            "--depth" => {
                args.depth = Some(
                    value("--depth")?
                        .parse()
                        .map_err(|e| format!("--depth: {e}"))?,
                )
            }
            "--filter" => args.filter = Some(value("--filter")?),
            "--first-ref" => args.first_ref = true,
            "--quickack" => args.quickack = true,
            "--parallel" => {
                args.parallel = value("--parallel")?
                    .parse()
                    .map_err(|e| format!("--parallel: {e}"))?
            }
            "--timeout" => {
                let secs: u64 = value("--timeout")?
                    .parse()
                    .map_err(|e| format!("--timeout: {e}"))?;
                args.timeout = Duration::from_secs(secs);
            }
            "-h" | "--help" => return Err(USAGE.into()),
            s if s.starts_with("--") => return Err(format!("unknown option {s}\n{USAGE}")),
            _ => positional.push(arg),
        }
    }
    let [addr, path] = <[String; 2]>::try_from(positional).map_err(|_| USAGE.to_string())?;
    if args.wants.is_empty() {
        args.wants = vec!["refs/heads/".into(), "refs/tags/".into()];
    }
    for have in &args.haves {
        if have.len() != 40 || !have.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("--have wants a full hex object id, not {have:?}"));
        }
    }
    args.addr = addr;
    args.path = path;
    Ok(args)
}

/// What one fetch measured.
#[derive(Debug, Default, Clone)]
struct Stats {
    connect_us: u64,
    first_ref_us: u64,
    refs_us: u64,
    pack_start_us: u64,
    wall_us: u64,
    refs: usize,
    wants: usize,
    pack_bytes: u64,
    objects: u32,
}

impl Stats {
    fn json(&self) -> String {
        format!(
            "\"connect_us\":{},\"first_ref_us\":{},\"refs_us\":{},\"pack_start_us\":{},\
             \"wall_us\":{},\"refs\":{},\"wants\":{},\"pack_bytes\":{},\"objects\":{}",
            self.connect_us,
            self.first_ref_us,
            self.refs_us,
            self.pack_start_us,
            self.wall_us,
            self.refs,
            self.wants,
            self.pack_bytes,
            self.objects
        )
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.parallel == 0 {
        let start = Instant::now();
        match fetch(&args, start) {
            Ok(stats) => {
                println!("{{\"ok\":true,{}}}", stats.json());
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!(
                    "{{\"ok\":false,\"error\":\"{}\",\"after_us\":{}}}",
                    escape(&e.to_string()),
                    micros(start)
                );
                ExitCode::FAILURE
            }
        }
    } else {
        parallel(&args)
    }
}

/// N fetches started together; reports the time until the last one ended.
fn parallel(args: &Args) -> ExitCode {
    let n = args.parallel;
    let barrier = Arc::new(Barrier::new(n + 1));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let args = args.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                fetch(&args, start).map_err(|e| e.to_string())
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let results: Vec<Result<Stats, String>> = threads
        .into_iter()
        .map(|t| {
            t.join()
                .unwrap_or_else(|_| Err("client thread panicked".into()))
        })
        .collect();
    let wall_us = micros(start);
    let mut walls: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|s| s.wall_us)
        .collect();
    walls.sort_unstable();
    let max = |f: fn(&Stats) -> u64| {
        results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(f)
            .max()
            .unwrap_or(0)
    };
    let (connect_max, first_ref_max) = (max(|s| s.connect_us), max(|s| s.first_ref_us));
    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let bytes: u64 = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|s| s.pack_bytes)
        .sum();
    let mut first_errors: Vec<String> = errors.iter().map(|e| escape(e)).collect();
    first_errors.sort();
    first_errors.dedup();
    first_errors.truncate(5);
    println!(
        "{{\"ok\":{},\"clients\":{n},\"failed\":{},\"wall_us\":{wall_us},\
         \"client_wall_median_us\":{},\"client_wall_max_us\":{},\"connect_max_us\":{connect_max},\
         \"first_ref_max_us\":{first_ref_max},\
         \"pack_bytes\":{bytes},\
         \"errors\":[{}]}}",
        errors.is_empty(),
        errors.len(),
        walls.get(walls.len() / 2).copied().unwrap_or(0),
        walls.last().copied().unwrap_or(0),
        first_errors
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// One pkt-line as read.
enum Pkt {
    Flush,
    Delim,
    ResponseEnd,
    /// Payload length; the bytes are in the reader's buffer.
    Data(usize),
}

/// The connection, optionally re-arming `TCP_QUICKACK` after every read and write.
///
/// Linux delays the ACK of data from a peer it exchanges requests and responses
/// with (up to 40 ms on loopback). A server that leaves Nagle's algorithm on holds
/// a small write back until its previous one is acknowledged, so such a server
/// stalls for that long whenever it sends two small writes in a row: time that is
/// not the server's work. With `--quickack` the client acknowledges at once.
struct Sock {
    stream: TcpStream,
    quickack: bool,
}

impl Sock {
    fn arm(&self) {
        if self.quickack {
            let one: libc::c_int = 1;
            // SAFETY: a valid socket and a c_int option value of the size given.
            unsafe {
                libc::setsockopt(
                    self.stream.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_QUICKACK,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.arm();
        Ok(n)
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.stream.write(buf)?;
        self.arm();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

struct PktReader {
    inner: BufReader<Sock>,
    buf: Vec<u8>,
}

impl PktReader {
    fn read(&mut self) -> io::Result<Pkt> {
        let mut len = [0u8; 4];
        self.inner.read_exact(&mut len).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                err("the server closed the connection")
            } else {
                e
            }
        })?;
        let len = std::str::from_utf8(&len)
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or_else(|| {
                err(format!(
                    "bad pkt-line length {:?}",
                    String::from_utf8_lossy(&len)
                ))
            })?;
        match len {
            0 => Ok(Pkt::Flush),
            1 => Ok(Pkt::Delim),
            2 => Ok(Pkt::ResponseEnd),
            3 => Err(err("bad pkt-line length 3")),
            n => {
                self.buf.resize(n - 4, 0);
                self.inner.read_exact(&mut self.buf)?;
                if self.buf.starts_with(b"ERR ") {
                    return Err(err(format!(
                        "server: {}",
                        String::from_utf8_lossy(&self.buf[4..]).trim_end()
                    )));
                }
                Ok(Pkt::Data(n - 4))
            }
        }
    }

    /// The payload of the last `Data` packet, without a trailing newline.
    fn text(&self) -> &[u8] {
        self.buf.strip_suffix(b"\n").unwrap_or(&self.buf)
    }
}

fn pkt(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    write!(out, "{:04x}", data.len() + 4)?;
    out.write_all(data)
}

fn wanted(args: &Args, name: &str) -> bool {
    args.wants.iter().any(|w| {
        if w.ends_with('/') {
            name.starts_with(w.as_str())
        } else {
            name == w
        }
    })
}

/// Connect, list refs, fetch what `args` asks for, read the pack and drop it.
fn fetch(args: &Args, start: Instant) -> io::Result<Stats> {
    let mut stats = Stats::default();
    let stream = TcpStream::connect(&args.addr)?;
    stats.connect_us = micros(start);
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(args.timeout))?;
    stream.set_write_timeout(Some(args.timeout))?;
    let sock = |stream| {
        let sock = Sock {
            stream,
            quickack: args.quickack,
        };
        sock.arm();
        sock
    };
    let mut reader = PktReader {
        inner: BufReader::with_capacity(128 * 1024, sock(stream.try_clone()?)),
        buf: Vec::with_capacity(65536),
    };
    let mut out = BufWriter::new(sock(stream));
    let host = args.addr.clone();
    let mut request = format!("git-upload-pack {}\0host={host}\0", args.path).into_bytes();
    if args.protocol == 2 {
        request.extend_from_slice(b"\0version=2\0");
    }
    pkt(&mut out, &request)?;
    out.flush()?;

    let mut refs: Vec<(String, String)> = Vec::new();
    let mut caps = String::new();
    if args.protocol == 2 {
        // Capability advertisement.
        match reader.read()? {
            Pkt::Data(_) if reader.text() == b"version 2" => {}
            _ => return Err(err("the server did not answer with protocol v2")),
        }
        while let Pkt::Data(_) = reader.read()? {}
        pkt(&mut out, b"command=ls-refs\n")?;
        pkt(&mut out, b"agent=raw_fetch\n")?;
        pkt(&mut out, b"object-format=sha1\n")?;
        out.write_all(b"0001")?;
        pkt(&mut out, b"peel\n")?;
        pkt(&mut out, b"symrefs\n")?;
        let mut prefixes: Vec<&str> = args
            .wants
            .iter()
            .map(|w| w.as_str())
            .chain(std::iter::once("HEAD"))
            .collect();
        prefixes.dedup();
        for p in prefixes {
            pkt(&mut out, format!("ref-prefix {p}\n").as_bytes())?;
        }
        out.write_all(b"0000")?;
        out.flush()?;
        while let Pkt::Data(_) = reader.read()? {
            if refs.is_empty() {
                stats.first_ref_us = micros(start);
                if args.first_ref {
                    stats.refs = 1;
                    stats.refs_us = stats.first_ref_us;
                    stats.wall_us = stats.first_ref_us;
                    return Ok(stats);
                }
            }
            let line = String::from_utf8_lossy(reader.text()).into_owned();
            let mut words = line.split(' ');
            if let (Some(oid), Some(name)) = (words.next(), words.next()) {
                refs.push((oid.to_owned(), name.to_owned()));
            }
        }
    } else {
        while let Pkt::Data(_) = reader.read()? {
            if refs.is_empty() {
                stats.first_ref_us = micros(start);
                if args.first_ref {
                    stats.refs = 1;
                    stats.refs_us = stats.first_ref_us;
                    stats.wall_us = stats.first_ref_us;
                    return Ok(stats);
                }
            }
            let text = reader.text();
            let (line, rest) = match text.iter().position(|&b| b == 0) {
                Some(nul) => (&text[..nul], Some(&text[nul + 1..])),
                None => (text, None),
            };
            if let Some(rest) = rest {
                caps = String::from_utf8_lossy(rest).into_owned();
            }
            let line = String::from_utf8_lossy(line).into_owned();
            if let Some((oid, name)) = line.split_once(' ')
                && !name.ends_with("^{}")
            {
                refs.push((oid.to_owned(), name.to_owned()));
            }
        }
    }
    stats.refs_us = micros(start);
    stats.refs = refs.len();

    let mut wants: Vec<&str> = refs
        .iter()
        .filter(|(oid, name)| wanted(args, name) && !oid.bytes().all(|b| b == b'0'))
        .map(|(oid, _)| oid.as_str())
        .collect();
    wants.sort_unstable();
    wants.dedup();
    stats.wants = wants.len();
    if wants.is_empty() {
        return Err(err("no refs matched the wanted patterns"));
    }

    if args.protocol == 2 {
        pkt(&mut out, b"command=fetch\n")?;
        pkt(&mut out, b"agent=raw_fetch\n")?;
        pkt(&mut out, b"object-format=sha1\n")?;
        out.write_all(b"0001")?;
        for arg in [
            "thin-pack\n",
            "no-progress\n",
            "ofs-delta\n",
            "include-tag\n",
        ] {
            pkt(&mut out, arg.as_bytes())?;
        }
        if let Some(depth) = args.depth {
            pkt(&mut out, format!("deepen {depth}\n").as_bytes())?;
        }
        if let Some(filter) = &args.filter {
            pkt(&mut out, format!("filter {filter}\n").as_bytes())?;
        }
        for want in &wants {
            pkt(&mut out, format!("want {want}\n").as_bytes())?;
        }
        for have in &args.haves {
            pkt(&mut out, format!("have {have}\n").as_bytes())?;
        }
        pkt(&mut out, b"done\n")?;
        out.write_all(b"0000")?;
        out.flush()?;
        // Sections before the pack (shallow-info, acknowledgments) are skipped.
        loop {
            match reader.read()? {
                Pkt::Data(_) if reader.text() == b"packfile" => break,
                Pkt::Data(_) | Pkt::Delim => {}
                Pkt::Flush | Pkt::ResponseEnd => {
                    return Err(err("the response ended without a pack"));
                }
            }
        }
        read_pack(&mut reader, &mut stats, start, None)?;
    } else {
        let caps: Vec<&str> = caps.split(' ').collect();
        let mut ours = vec![
            "multi_ack_detailed",
            "side-band-64k",
            "thin-pack",
            "ofs-delta",
            "no-progress",
            "include-tag",
            "agent=raw_fetch",
        ];
        if args.depth.is_some() {
            ours.push("shallow");
        }
        if args.filter.is_some() {
            ours.push("filter");
        }
        for cap in &ours {
            let name = cap.split('=').next().unwrap_or(cap);
            if !name.starts_with("agent") && !caps.contains(&name) {
                return Err(err(format!("the server does not offer {name}")));
            }
        }
        for (i, want) in wants.iter().enumerate() {
            if i == 0 {
                pkt(
                    &mut out,
                    format!("want {want} {}\n", ours.join(" ")).as_bytes(),
                )?;
            } else {
                pkt(&mut out, format!("want {want}\n").as_bytes())?;
            }
        }
        if let Some(depth) = args.depth {
            pkt(&mut out, format!("deepen {depth}\n").as_bytes())?;
        }
        if let Some(filter) = &args.filter {
            pkt(&mut out, format!("filter {filter}\n").as_bytes())?;
        }
        out.write_all(b"0000")?;
        for have in &args.haves {
            pkt(&mut out, format!("have {have}\n").as_bytes())?;
        }
        pkt(&mut out, b"done\n")?;
        out.flush()?;
        // Shallow lines, flushes and ACK/NAK come first; the pack is the first line
        // on a side-band channel.
        let first = loop {
            match reader.read()? {
                Pkt::Data(n) if n > 0 && (1..=3).contains(&reader.buf[0]) => break n,
                Pkt::ResponseEnd => return Err(err("the response ended without a pack")),
                _ => {}
            }
        };
        read_pack(&mut reader, &mut stats, start, Some(first))?;
    }
    // Hang up the way git does: a flush, then close.
    let _ = out.write_all(b"0000");
    let _ = out.flush();
    Ok(stats)
}

/// Read side-band packets up to the closing flush, counting pack bytes. `first` is a
/// packet already in the reader's buffer.
fn read_pack(
    reader: &mut PktReader,
    stats: &mut Stats,
    start: Instant,
    mut first: Option<usize>,
) -> io::Result<()> {
    let mut header = Vec::with_capacity(12);
    loop {
        let n = match first.take() {
            Some(n) => n,
            None => match reader.read()? {
                Pkt::Data(n) => n,
                Pkt::Flush => break,
                Pkt::Delim | Pkt::ResponseEnd => return Err(err("unexpected packet in the pack")),
            },
        };
        if n == 0 {
            continue;
        }
        match reader.buf[0] {
            1 => {
                let data = &reader.buf[1..n];
                if stats.pack_bytes == 0 {
                    stats.pack_start_us = micros(start);
                }
                if header.len() < 12 {
                    let take = (12 - header.len()).min(data.len());
                    header.extend_from_slice(&data[..take]);
                }
                stats.pack_bytes += data.len() as u64;
            }
            2 => {}
            3 => {
                return Err(err(format!(
                    "server: {}",
                    String::from_utf8_lossy(&reader.buf[1..n]).trim_end()
                )));
            }
            b => return Err(err(format!("unexpected side-band channel {b}"))),
        }
    }
    stats.wall_us = micros(start);
    if header.len() < 12 || &header[..4] != b"PACK" {
        return Err(err("the pack has no valid header"));
    }
    stats.objects = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    Ok(())
}
