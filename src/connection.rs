//! pkt-line framing over an async byte stream (see `man 5 gitprotocol-common`).
//!
//! Decoding and encoding are gix-packetline's; this module adds what a server needs
//! around them: buffering on a tokio stream, a timeout on every read and write (a
//! stalled client must not hold a connection slot for ever), git's wording for
//! malformed lengths, and a count of the bytes sent for the request log.

use std::time::Duration;

use gix_packetline::blocking_io::encode;
use gix_packetline::{Channel, PacketLineRef};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{ClientError, Result};

/// Largest payload of one pkt-line (65520 bytes on the wire, 4 of them length).
pub const MAX_DATA: usize = 65516;
/// Largest side-band payload: one byte of each pkt-line goes to the band number.
pub const MAX_BAND_DATA: usize = MAX_DATA - 1;
/// Largest side-band payload with the old `side-band` capability (1000-byte lines).
pub const MAX_SMALL_BAND_DATA: usize = 1000 - 5;

/// One decoded pkt-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Data(Vec<u8>),
    Flush,
    Delimiter,
    ResponseEnd,
}

impl Packet {
    /// The payload with one trailing newline removed, as git's `PACKET_READ_CHOMP_NEWLINE`.
    pub fn text(&self) -> Option<&[u8]> {
        match self {
            Packet::Data(d) => Some(d.strip_suffix(b"\n").unwrap_or(d)),
            _ => None,
        }
    }

    /// [`Self::text`], owned: the payload without its trailing newline.
    pub fn into_text(self) -> Option<Vec<u8>> {
        match self {
            Packet::Data(mut d) => {
                if d.last() == Some(&b'\n') {
                    d.pop();
                }
                Some(d)
            }
            _ => None,
        }
    }
}

/// A client connection: buffered pkt-line reads and writes with timeouts.
pub struct Connection<S> {
    stream: S,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    timeout: Duration,
    bytes_sent: u64,
}

/// Flush the write buffer once it holds this much.
const WRITE_HIGH_WATER: usize = 256 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S, timeout: Duration) -> Self {
        Connection {
            stream,
            rbuf: Vec::with_capacity(1024),
            rpos: 0,
            wbuf: Vec::with_capacity(1024),
            timeout,
            bytes_sent: 0,
        }
    }

    /// Change the per-operation timeout (the first line has a shorter one).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Bytes written to the socket so far.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    /// Read the next pkt-line. `Ok(None)` is a clean end of stream between lines.
    pub async fn read_packet(&mut self) -> Result<Option<Packet>> {
        loop {
            let avail = &self.rbuf[self.rpos..];
            if avail.len() >= 4 {
                match gix_packetline::decode::streaming(avail) {
                    Ok(gix_packetline::decode::Stream::Complete {
                        line,
                        bytes_consumed,
                    }) => {
                        let packet = match line {
                            PacketLineRef::Data(d) => Packet::Data(d.to_vec()),
                            PacketLineRef::Flush => Packet::Flush,
                            PacketLineRef::Delimiter => Packet::Delimiter,
                            PacketLineRef::ResponseEnd => Packet::ResponseEnd,
                        };
                        self.rpos += bytes_consumed;
                        return Ok(Some(packet));
                    }
                    Ok(gix_packetline::decode::Stream::Incomplete { .. }) => {}
                    Err(_) => return Err(bad_length(&avail[..4])),
                }
            }
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            self.rbuf.reserve(4096);
            let n = tokio::time::timeout(self.timeout, self.stream.read_buf(&mut self.rbuf))
                .await
                .map_err(|_| timed_out("reading from the client"))??;
            if n == 0 {
                if self.rbuf.is_empty() {
                    return Ok(None);
                }
                return Err("the client hung up in the middle of a pkt-line".into());
            }
        }
    }

    /// The per-operation timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Read raw bytes, not pkt-lines (the pack a pusher sends after its commands):
    /// whatever is already buffered, else what one read of the socket returns.
    /// `Ok(None)` at the end of the stream. No timeout: the caller decides how long
    /// a silent client may take (see `receive_pack::unpack`). Cancel-safe: a read
    /// interrupted by `select!` loses nothing.
    pub async fn read_raw(&mut self) -> Result<Option<Vec<u8>>> {
        if self.rpos < self.rbuf.len() {
            let out = self.rbuf[self.rpos..].to_vec();
            self.rbuf.clear();
            self.rpos = 0;
            return Ok(Some(out));
        }
        self.rbuf.clear();
        self.rpos = 0;
        self.rbuf.reserve(64 * 1024);
        if self.stream.read_buf(&mut self.rbuf).await? == 0 {
            return Ok(None);
        }
        let out = self.rbuf.clone();
        self.rbuf.clear();
        Ok(Some(out))
    }

    /// Whether the client has closed its side, without waiting: a pusher sends
    /// nothing while it waits for the report, so an end of stream then means it is
    /// gone. Bytes that did come stay buffered for the next read.
    pub async fn hung_up(&mut self) -> bool {
        if self.rpos < self.rbuf.len() {
            return false;
        }
        self.rbuf.clear();
        self.rpos = 0;
        self.rbuf.reserve(4096);
        // `timeout` polls the read once before looking at the (expired) deadline.
        match tokio::time::timeout(Duration::ZERO, self.stream.read_buf(&mut self.rbuf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        }
    }

    /// Read the next pkt-line; the end of the stream is an error here.
    pub async fn expect_packet(&mut self) -> Result<Packet> {
        self.read_packet()
            .await?
            .ok_or_else(|| "the client hung up unexpectedly".into())
    }

    /// Queue a data pkt-line.
    pub fn data(&mut self, payload: &[u8]) {
        encode::data_to_write(payload, &mut self.wbuf)
            .expect("payloads are below the pkt-line limit");
    }

    /// Queue a text pkt-line: `text` plus a newline.
    pub fn text(&mut self, text: impl AsRef<[u8]>) {
        encode::text_to_write(text.as_ref(), &mut self.wbuf).expect("text lines are short");
    }

    pub fn flush_pkt(&mut self) {
        encode::flush_to_write(&mut self.wbuf).expect("writing to a Vec");
    }

    pub fn delim_pkt(&mut self) {
        encode::delim_to_write(&mut self.wbuf).expect("writing to a Vec");
    }

    /// Queue `ERR <message>`: the client prints it as "remote error".
    pub fn error(&mut self, message: &str) {
        let msg = &message.as_bytes()[..message.len().min(MAX_DATA - 4)];
        encode::error_to_write(msg, &mut self.wbuf).expect("writing to a Vec");
    }

    /// Queue `data` on a side-band channel, split into pkt-lines of at most `max` bytes.
    pub async fn band(&mut self, channel: Channel, data: &[u8], max: usize) -> Result<()> {
        for chunk in data.chunks(max) {
            encode::band_to_write(channel, chunk, &mut self.wbuf)?;
            if self.wbuf.len() >= WRITE_HIGH_WATER {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Queue raw bytes (a pack without side-band).
    pub async fn raw(&mut self, data: &[u8]) -> Result<()> {
        self.wbuf.extend_from_slice(data);
        if self.wbuf.len() >= WRITE_HIGH_WATER {
            self.flush().await?;
        }
        Ok(())
    }

    /// Write everything queued to the socket.
    pub async fn flush(&mut self) -> Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        tokio::time::timeout(self.timeout, async {
            self.stream.write_all(&self.wbuf).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| timed_out("writing to the client"))??;
        self.bytes_sent += self.wbuf.len() as u64;
        self.wbuf.clear();
        Ok(())
    }

    /// Flush and close our sending side, so the client sees a clean end of stream.
    pub async fn shutdown(&mut self) -> Result<()> {
        self.flush().await?;
        let _ = tokio::time::timeout(self.timeout, self.stream.shutdown()).await;
        Ok(())
    }

    /// After an error: read and drop what the client still sends, until it closes, a
    /// little data has come, or `limit` passes. A socket closed with unread input is
    /// reset, and a client still writing its request (`git archive` sends arguments
    /// right after the request line) would then die of SIGPIPE before it reads the
    /// error.
    pub async fn drain(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while total < 64 * 1024 {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => total += n,
                _ => break,
            }
        }
    }
}

fn timed_out(what: &str) -> crate::Error {
    format!("timed out {what}").into()
}

/// git's wording for a malformed length prefix (`protocol error: bad line length …`).
fn bad_length(prefix: &[u8]) -> crate::Error {
    if prefix.iter().all(u8::is_ascii_hexdigit) {
        let n = u16::from_str_radix(std::str::from_utf8(prefix).expect("hex digits"), 16)
            .expect("four hex digits");
        ClientError::boxed(format!("protocol error: bad line length {n}"))
    } else {
        ClientError::boxed(format!(
            "protocol error: bad line length character: {}",
            crate::escape(prefix)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(input: &[u8]) -> Vec<std::result::Result<Packet, String>> {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(input).await.unwrap();
        drop(client);
        let mut conn = Connection::new(server, Duration::from_secs(5));
        let mut out = Vec::new();
        loop {
            match conn.read_packet().await {
                Ok(Some(p)) => out.push(Ok(p)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    break;
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn decodes_data_flush_and_delimiter() {
        let got = read_all(b"0009hello000000010005\n").await;
        assert_eq!(
            got,
            vec![
                Ok(Packet::Data(b"hello".to_vec())),
                Ok(Packet::Flush),
                Ok(Packet::Delimiter),
                Ok(Packet::Data(b"\n".to_vec()))
            ]
        );
        assert_eq!(
            Packet::Data(b"want x\n".to_vec()).text(),
            Some(&b"want x"[..])
        );
    }

    #[tokio::test]
    async fn rejects_malformed_lengths_with_gits_wording() {
        assert_eq!(
            read_all(b"GET / HTTP/1.1\r\n").await,
            vec![Err("protocol error: bad line length character: GET ".into())]
        );
        assert_eq!(
            read_all(b"0003").await,
            vec![Err("protocol error: bad line length 3".into())]
        );
        assert_eq!(
            read_all(b"0004").await,
            vec![Err("protocol error: bad line length 4".into())]
        );
        assert_eq!(
            read_all(b"fff1").await,
            vec![Err("protocol error: bad line length 65521".into())]
        );
        assert!(
            read_all(b"0009hel").await[0]
                .as_ref()
                .unwrap_err()
                .contains("hung up")
        );
    }

    #[tokio::test]
    async fn side_band_splits_large_payloads() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut conn = Connection::new(server, Duration::from_secs(5));
        conn.band(Channel::Data, &vec![7u8; MAX_BAND_DATA + 10], MAX_BAND_DATA)
            .await
            .unwrap();
        conn.flush().await.unwrap();
        drop(conn);
        let mut reader = Connection::new(client, Duration::from_secs(5));
        let first = reader.expect_packet().await.unwrap();
        let second = reader.expect_packet().await.unwrap();
        match (first, second) {
            (Packet::Data(a), Packet::Data(b)) => {
                assert_eq!((a.len(), a[0]), (MAX_DATA, 1));
                assert_eq!((b.len(), b[0]), (11, 1));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
