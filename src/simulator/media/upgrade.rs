//! The WebSocket handshake of `GET /webhooks/twilio/media/{call_sid}`, done by hand: check the
//! upgrade headers, admit the stream, answer 101, then run a [`StreamSession`] on the upgraded
//! connection with the WebSocket settings below.

use super::gate::StreamPermit;
use super::session::StreamSession;
use crate::simulator::api::detail;
use crate::simulator::conformance::Fault;
use crate::simulator::Sim;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

/// Largest message accepted from a caller: far above a 20 ms frame (about 300 bytes), far below
/// harm.
const MAX_CALLER_MESSAGE: usize = 64 * 1024;

/// Small buffers: thousands of mostly silent calls must stay cheap. (tungstenite zero-fills
/// the read buffer before each read, so its size is paid per frame, not just per call.)
pub(super) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(MAX_CALLER_MESSAGE))
        .max_frame_size(Some(MAX_CALLER_MESSAGE))
}

/// `GET /webhooks/twilio/media/{call_sid}`: upgrade to a Media Streams session.
pub(crate) async fn media_stream(
    State(sim): State<Arc<Sim>>,
    Path(_call_sid): Path<String>,
    mut req: Request,
) -> Response {
    let key = match check_upgrade(req.headers()) {
        Ok(key) => key,
        Err(bad) => {
            sim.stats.fault(Fault::BadUpgrade);
            return bad.response();
        }
    };
    let permit = match StreamPermit::admit(&sim) {
        Ok(permit) => permit,
        Err(refusal) => {
            sim.stats.streams.refused.fetch_add(1, Relaxed);
            return refusal.response();
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    sim.stats.streams.accepted.fetch_add(1, Relaxed);
    sim.leak.leak(&sim.stats);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => run_upgraded(upgraded, StreamSession::new(permit.sim()), permit.shutdown()).await,
            Err(_) => {
                permit
                    .sim()
                    .stats
                    .streams
                    .closed_without_stop
                    .fetch_add(1, Relaxed);
            }
        }
        drop(permit);
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::CONNECTION, HeaderValue::from_static("Upgrade")),
            (header::SEC_WEBSOCKET_ACCEPT, key),
        ],
    )
        .into_response()
}

/// Runs a session on the plain TCP stream under hyper's upgrade when it is one (as under
/// `axum::serve`): no dynamic dispatch per read, and a drop can reset the connection.
async fn run_upgraded(upgraded: Upgraded, session: StreamSession, shutdown: &CancellationToken) {
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let (tcp, early) = (parts.io.into_inner(), parts.read_buf.to_vec());
            let ws = WebSocketStream::from_partially_read(tcp, early, Role::Server, Some(ws_config())).await;
            session.run(ws, shutdown).await
        }
        Err(upgraded) => {
            let io = TokioIo::new(upgraded);
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config())).await;
            session.run(ws, shutdown).await
        }
    }
}

/// Why an upgrade request was refused.
#[derive(Debug, PartialEq)]
enum BadUpgrade {
    NotWebSocket,
    Version,
    Key,
}

impl BadUpgrade {
    fn response(&self) -> Response {
        match self {
            BadUpgrade::NotWebSocket => detail(
                StatusCode::BAD_REQUEST,
                "expected a WebSocket upgrade (Twilio Media Streams)",
            ),
            BadUpgrade::Version => {
                let mut refusal = detail(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 is required");
                refusal
                    .headers_mut()
                    .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
                refusal
            }
            BadUpgrade::Key => detail(StatusCode::BAD_REQUEST, "bad Sec-WebSocket-Key"),
        }
    }
}

/// The `Sec-WebSocket-Accept` value for a valid upgrade request.
fn check_upgrade(headers: &HeaderMap) -> Result<HeaderValue, BadUpgrade> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(BadUpgrade::NotWebSocket);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(BadUpgrade::NotWebSocket)?;
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err(BadUpgrade::Version);
    }
    HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(|_| BadUpgrade::Key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_headers_are_checked() {
        let mut h = HeaderMap::new();
        assert_eq!(check_upgrade(&h), Err(BadUpgrade::NotWebSocket));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert_eq!(check_upgrade(&h), Err(BadUpgrade::Version));
        assert_eq!(
            BadUpgrade::Version.response().status(),
            StatusCode::UPGRADE_REQUIRED
        );
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        // RFC 6455's example key and answer.
        assert_eq!(check_upgrade(&h).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
