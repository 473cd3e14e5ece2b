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

    /// Whether the pusher has gone, once its request is complete. Its end of
    /// stream proves nothing then: git's client may half-close and wait for the
    /// report, and git's receive-pack applies such a push. A client that closed
    /// for good answers our next bytes with a reset, and the write after that
    /// fails: with side-band two keepalives (which git's client ignores) are that
    /// probe. (A read cannot tell: after the client's FIN it returns end of
    /// stream, reset or not.) Without side-band only an earlier failed write
    /// tells.
    pub async fn gone_after_request(&mut self) -> bool {
        if self.sideband && !self.reported {
            self.keepalive().await;
            // Over loopback the reset is in before the first write returns;
            // elsewhere it may come later, and the push goes through as git's would.
            tokio::task::yield_now().await;
            self.keepalive().await;
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
