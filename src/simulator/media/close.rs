//! How a media stream ends: with a close frame saying why (and the caller's close awaited), a
//! bare close, or a reset with no close frame at all (`--drop-rate`).

use crate::simulator::conformance::Fault;
use crate::simulator::stats::Stats;
use futures_util::StreamExt;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::WebSocketStream;

/// How long a close handshake may take before the caller counts as gone.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a media stream's session ended.
pub(super) enum End {
    /// `stop` received: close normally.
    Stopped,
    /// The caller broke the protocol: close with the reason.
    Broken(Fault),
    /// The server is shutting down.
    Shutdown,
    /// `--drop-rate` picked this call: vanish without a close frame.
    Dropped,
    /// The caller closed or went away without a `stop`.
    Gone,
}

/// Ends the stream as `end` says, counting how it ended in `stats`.
pub(super) async fn close<S>(mut ws: WebSocketStream<S>, end: End, stats: &Stats)
where
    S: AsyncRead + AsyncWrite + Unpin + Abortable,
{
    let streams = &stats.streams;
    let (code, reason) = match end {
        End::Stopped => {
            streams.completed.fetch_add(1, Relaxed);
            (CloseCode::Normal, "stop received")
        }
        End::Broken(fault) => {
            stats.fault(fault);
            let code = match fault {
                Fault::TooLarge => CloseCode::Size,
                Fault::Binary => CloseCode::Unsupported,
                Fault::NotUtf8 => CloseCode::Invalid,
                Fault::NoStart | Fault::Idle => CloseCode::Policy,
                _ => CloseCode::Protocol,
            };
            (code, fault.reason())
        }
        End::Shutdown => (CloseCode::Away, "server shutting down"),
        End::Dropped => {
            // Abruptly: no close frame, the TCP connection is reset.
            streams.dropped.fetch_add(1, Relaxed);
            ws.get_ref().reset_on_drop();
            return;
        }
        End::Gone => {
            streams.closed_without_stop.fetch_add(1, Relaxed);
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
            return;
        }
    };
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    // Close, then read until the caller's close comes back (or it takes too long).
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// A connection that can be made to end with a reset rather than a clean FIN.
pub(super) trait Abortable {
    fn reset_on_drop(&self) {}
}

impl Abortable for tokio::net::TcpStream {
    fn reset_on_drop(&self) {
        let _ = self.set_zero_linger();
    }
}

impl Abortable for hyper_util::rt::TokioIo<hyper::upgrade::Upgraded> {}
