//! What the pusher reads besides the report: receive-pack's own `error:` and
//! `warning:` lines and the hooks' output, on side-band 2 (the client prints them
//! as `remote: …`). Without side-band git writes them to its stderr, which git
//! daemon sends to its log; gitd logs them.
//!
//! Once the client is gone, writes are dropped rather than failing the push: refs
//! may already be updated, and `post-receive` must still run.

use gix_packetline::Channel;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::info;

use crate::connection::{Connection, MAX_BAND_DATA};

/// The connection, seen as the place messages for the pusher go.
pub struct Remote<'c, S> {
    pub conn: &'c mut Connection<S>,
    sideband: bool,
    gone: bool,
    /// The report has been sent: the data channel is finished.
    reported: bool,
}

impl<'c, S: AsyncRead + AsyncWrite + Unpin> Remote<'c, S> {
    pub fn new(conn: &'c mut Connection<S>, sideband: bool) -> Self {
        Remote {
            conn,
            sideband,
            gone: false,
            reported: false,
        }
    }

    pub fn sideband(&self) -> bool {
        self.sideband
    }

    /// Whether a write to the client has failed.
    pub fn gone(&self) -> bool {
        self.gone
    }

    /// Whether the pusher has gone: a write failed, or it closed its side.
    pub async fn hung_up(&mut self) -> bool {
        if !self.gone && self.conn.hung_up().await {
            self.gone = true;
        }
        self.gone
    }

    /// Text for the pusher, sent as it is (hooks' output).
    pub async fn send(&mut self, bytes: &[u8]) {
        if !self.sideband {
            for line in String::from_utf8_lossy(bytes).lines() {
                info!("remote: {line}");
            }
            return;
        }
        self.band(Channel::Progress, bytes).await;
    }

    /// `error: <msg>` (git's `rp_error`).
    pub async fn error(&mut self, msg: &str) {
        self.send(format!("error: {msg}\n").as_bytes()).await;
    }

    /// `warning: <msg>` (git's `rp_warning`).
    pub async fn warning(&mut self, msg: &str) {
        self.send(format!("warning: {msg}\n").as_bytes()).await;
    }

    /// An empty side-band packet that keeps the connection alive while a hook
    /// takes its time (git's keepalive, `0005\1`).
    /// Only before the report: after it the client reads nothing more on the data
    /// channel.
    pub async fn keepalive(&mut self) {
        if self.sideband && !self.reported {
            self.band(Channel::Data, b"").await;
        }
    }

    /// The report, on the data channel with side-band, else as it is.
    pub async fn report(&mut self, bytes: &[u8]) {
        if self.sideband {
            self.band(Channel::Data, bytes).await;
        } else {
            self.raw(bytes).await;
        }
        self.reported = true;
    }

    /// Bytes as they are (the closing flush with side-band).
    pub async fn raw(&mut self, bytes: &[u8]) {
        if self.gone {
            return;
        }
        if self.conn.raw(bytes).await.is_err() || self.conn.flush().await.is_err() {
            self.gone = true;
        }
    }

    async fn band(&mut self, channel: Channel, bytes: &[u8]) {
        if self.gone {
            return;
        }
        let sent = if bytes.is_empty() {
            // band_to_write refuses empty payloads; a keepalive is just the band byte.
            self.conn.data(&[channel as u8]);
            Ok(())
        } else {
            self.conn.band(channel, bytes, MAX_BAND_DATA).await
        };
        if sent.is_err() || self.conn.flush().await.is_err() {
            self.gone = true;
        }
    }
}
