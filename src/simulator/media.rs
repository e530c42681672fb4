//! The agent's side of Twilio Media Streams at `/webhooks/twilio/media/{call_sid}`.
//!
//! The WebSocket upgrade is done by hand (axum's `ws` feature would pull a second tungstenite):
//! check the headers, answer 101, then run a session on the upgraded connection. A session
//! validates the event order (`connected`, `start`, `media`/`mark`..., `stop`), listens with
//! the VAD of [`super::voice`], and answers each utterance after the simulated pipeline with a
//! burst of mu-law `media` frames (TTS is faster than real time) followed at once by a `mark`
//! `answer-N`. The answer then "plays" at the caller for its length; caller speech before that
//! and before the mark comes back is a barge-in, answered with `clear`.
//!
//! Silent calls are the common case, so a `media` frame costs a borrowed JSON parse, a base64
//! decode into a reused buffer and a table-driven RMS: no allocation, no timer, no lock.
//! Faults, each decided per stream (per answer for `--ai-mute-rate`):
//! - `--max-streams`: the upgrade is refused with 503 above it.
//! - `--drop-rate`: the call is dropped 1-5 s in by resetting its TCP connection, with no close
//!   frame.
//! - `--ws-garbage-rate`: 0.3-1 s after `start`, the agent sends, 100 ms apart, one of each
//!   [`GARBAGE`] message (text that is not JSON, JSON without an `event`, an unknown event, a
//!   `media` event whose payload is not base64, a binary frame), starting at a different one on
//!   each such stream, so a caller that gives up at the first still meets every kind. Then the
//!   call goes on as usual.
//! - `--ws-oversized-rate`: 0.3-1 s after `start` (after any garbage), one [`OVERSIZED_BYTES`]
//!   `media` message: in one frame on every other such stream, in 256 KiB fragments on the rest,
//!   trickled over [`OVERSIZED_TRICKLE`] as a slow network would, so a caller that buffers what
//!   it should refuse holds it a while (and its memory shows it).
//! - `--ai-mute-rate` ([`voice::mutes`]): the agent hears the utterance and never answers it.
//!
//! The stats' `faults` count the last three as they happen: `ws_garbage` for each garbage
//! message and `ws_oversized` for each oversized one as it starts going out (whether or not the
//! caller takes it all), `ai_muted` for each utterance left unanswered.

use super::api::detail;
use super::stats::Fault;
use super::voice::{self, Answer, Vad, VadEvent};
use super::Sim;
use crate::protocol::{mulaw, Event, ProtocolError};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rand::Rng;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// Largest message accepted: far above a 20 ms frame (about 300 bytes), far below harm.
const MAX_MESSAGE: usize = 64 * 1024;
/// How long a close handshake or an answer burst may take before the caller counts as gone.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// A caller must have sent `start` this soon after the upgrade, and may not fall silent (send
/// nothing at all, not even silence frames) for longer than the idle limit: a stalled client
/// must not hold a stream slot forever.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Size of the message `--ws-oversized-rate` sends.
pub(crate) const OVERSIZED_BYTES: usize = 4 << 20;
/// Pieces an oversized message is written in (and its fragments, when fragmented).
const OVERSIZED_FRAGMENT: usize = 256 << 10;
/// How long writing an oversized message takes, piece by piece.
const OVERSIZED_TRICKLE: Duration = Duration::from_millis(640);
/// When a stream's first bad message goes out, in seconds after `start`, and the gap between.
const BAD_AFTER_S: std::ops::RangeInclusive<f64> = 0.3..=1.0;
const BAD_GAP: Duration = Duration::from_millis(100);

/// Small buffers: thousands of mostly silent calls must stay cheap. (tungstenite zero-fills
/// the read buffer before each read, so its size is paid per frame, not just per call.)
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// A message a broken agent might send (`--ws-garbage-rate`, `--ws-oversized-rate`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bad {
    /// Text that is not JSON (a Python dict's repr, a classic).
    NotJson,
    /// A JSON object with no `event`.
    NoEvent,
    /// An event Media Streams does not have.
    UnknownEvent,
    /// A `media` event whose payload is not base64.
    NotBase64,
    /// Raw audio in a binary frame.
    Binary,
    /// One [`OVERSIZED_BYTES`] `media` message, in one frame or in fragments.
    Oversized { fragmented: bool },
}

/// WebSocket opcodes of the frames written by hand.
const OP_CONTINUE: u8 = 0x0;
const OP_TEXT: u8 = 0x1;

/// The header of an unmasked (server to client) frame of `len` payload bytes (RFC 6455 5.2).
fn frame_header(opcode: u8, fin: bool, len: usize) -> Vec<u8> {
    let mut h = vec![if fin { 0x80 | opcode } else { opcode }];
    match len {
        0..=125 => h.push(len as u8),
        126..=0xFFFF => {
            h.push(126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            h.push(127);
            h.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    h
}

/// What `--ws-garbage-rate` sends, one of each.
const GARBAGE: [Bad; 5] = [
    Bad::NotJson,
    Bad::NoEvent,
    Bad::UnknownEvent,
    Bad::NotBase64,
    Bad::Binary,
];
/// Which garbage message the next garbage stream starts with, and whether the next oversized
/// message is fragmented: taken in turn, so a few streams see every kind.
static NEXT_GARBAGE: AtomicU64 = AtomicU64::new(0);
static NEXT_OVERSIZED: AtomicU64 = AtomicU64::new(0);

/// The bad messages a new stream will send, in order, given the fault rates.
fn plan_bad(garbage_rate: f64, oversized_rate: f64, rng: &mut impl Rng) -> Vec<Bad> {
    let mut bad = Vec::new();
    if voice::chance(rng, garbage_rate) {
        let first = NEXT_GARBAGE.fetch_add(1, Relaxed) as usize;
        bad.extend((0..GARBAGE.len()).map(|i| GARBAGE[(first + i) % GARBAGE.len()]));
    }
    if voice::chance(rng, oversized_rate) {
        let fragmented = NEXT_OVERSIZED.fetch_add(1, Relaxed) % 2 == 1;
        bad.push(Bad::Oversized { fragmented });
    }
    bad
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
    let Some(slot) = Slot::reserve(&sim) else {
        sim.stats.streams.refused.fetch_add(1, Relaxed);
        let why = match sim.sessions.is_closing() {
            true => "the server is shutting down",
            false => "too many concurrent media streams",
        };
        let mut refusal = detail(StatusCode::SERVICE_UNAVAILABLE, why);
        refusal
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return refusal;
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    sim.stats.streams.accepted.fetch_add(1, Relaxed);
    sim.leak.leak(&sim.stats);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                Session::new(&slot.sim)
                    .run_upgraded(upgraded, slot.shutdown)
                    .await
            }
            Err(_) => {
                slot.sim.stats.streams.closed_without_stop.fetch_add(1, Relaxed);
            }
        }
        drop(slot.guard);
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

/// The live sessions, so a shutdown can close each with a close frame. Registration happens
/// once per call; a session waits on its own oneshot, so nothing is shared per frame.
#[derive(Default)]
pub(crate) struct Sessions {
    shards: [Mutex<HashMap<u64, oneshot::Sender<()>>>; 8],
    next_id: AtomicU64,
    closing: AtomicBool,
}

impl Sessions {
    fn register(&self) -> (u64, oneshot::Receiver<()>) {
        let id = self.next_id.fetch_add(1, Relaxed);
        let (tx, rx) = oneshot::channel();
        self.shard(id).insert(id, tx);
        (id, rx)
    }

    fn unregister(&self, id: u64) {
        self.shard(id).remove(&id);
    }

    fn shard(&self, id: u64) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<()>>> {
        self.shards[id as usize % self.shards.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Relaxed)
    }

    /// Refuses new sessions and tells every live one to close.
    pub(crate) fn close_all(&self) {
        self.closing.store(true, Relaxed);
        for shard in &self.shards {
            let senders: Vec<_> = shard.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
            for (_, tx) in senders {
                let _ = tx.send(());
            }
        }
    }
}

/// A reserved place among the concurrent streams (`--max-streams`), released on drop.
struct Slot {
    sim: Arc<Sim>,
    shutdown: oneshot::Receiver<()>,
    guard: SlotGuard,
}

struct SlotGuard {
    sim: Arc<Sim>,
    id: u64,
}

impl Slot {
    fn reserve(sim: &Arc<Sim>) -> Option<Slot> {
        if sim.sessions.is_closing() {
            return None;
        }
        let active = &sim.stats.streams.active;
        match sim.opts.max_streams {
            Some(max) => {
                active
                    .fetch_update(Relaxed, Relaxed, |n| (n < max as u64).then_some(n + 1))
                    .ok()?;
            }
            None => {
                active.fetch_add(1, Relaxed);
            }
        }
        let (id, shutdown) = sim.sessions.register();
        Some(Slot {
            sim: sim.clone(),
            shutdown,
            guard: SlotGuard { sim: sim.clone(), id },
        })
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.sim.sessions.unregister(self.id);
        self.sim.stats.streams.active.fetch_sub(1, Relaxed);
    }
}

/// Where a call is in the Media Streams event order.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    AwaitConnected,
    AwaitStart,
    Streaming,
}

/// How a session ended.
enum End {
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

/// An answer the caller is hearing.
struct Playing {
    number: u64,
    until: Instant,
}

/// One call's state.
struct Session {
    sim: Arc<Sim>,
    phase: Phase,
    stream_sid: String,
    /// `{"event":"media","streamSid":"…","media":{"payload":"` for this call, escaped once.
    media_prefix: String,
    last_seq: Option<u64>,
    vad: Vad,
    audio: Vec<u8>,
    pending: Option<Answer>,
    playing: Option<Playing>,
    answers: u64,
    drop_at: Option<Instant>,
    /// Bad messages still to send (`--ws-garbage-rate`, `--ws-oversized-rate`), next first.
    bad: std::collections::VecDeque<Bad>,
    /// When the next one goes out (set once streaming).
    bad_at: Option<Instant>,
    opened_at: Instant,
    last_heard: Instant,
}

/// The fields of an inbound `media` message, borrowed from the frame.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(rename = "sequenceNumber", default, deserialize_with = "sequence_number")]
    sequence_number: Option<u64>,
    #[serde(rename = "streamSid", borrow)]
    stream_sid: Cow<'a, str>,
    #[serde(borrow)]
    media: IncomingMedia<'a>,
}

#[derive(Deserialize)]
struct IncomingMedia<'a> {
    #[serde(borrow)]
    payload: Cow<'a, str>,
}

/// Twilio writes numbers as strings; accept both without allocating.
fn sequence_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct NumOrStr;
    impl Visitor<'_> for NumOrStr {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a sequence number")
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.parse()
                .map(Some)
                .map_err(|_| E::custom("sequenceNumber is not a number"))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(NumOrStr)
}

/// A connection that can be made to end with a reset rather than a clean FIN.
trait Abortable {
    fn reset_on_drop(&self) {}
}

impl Abortable for TcpStream {
    fn reset_on_drop(&self) {
        let _ = self.set_zero_linger();
    }
}

impl Abortable for TokioIo<Upgraded> {}

impl Session {
    /// Runs on the plain TCP stream under hyper's upgrade when it is one (as under
    /// `axum::serve`): no dynamic dispatch per read, and a drop can reset the connection.
    async fn run_upgraded(self, upgraded: Upgraded, shutdown: oneshot::Receiver<()>) {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let (tcp, early) = (parts.io.into_inner(), parts.read_buf.to_vec());
                let ws =
                    WebSocketStream::from_partially_read(tcp, early, Role::Server, Some(ws_config())).await;
                self.run(ws, shutdown).await
            }
            Err(upgraded) => {
                let io = TokioIo::new(upgraded);
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config())).await;
                self.run(ws, shutdown).await
            }
        }
    }

    fn new(sim: &Arc<Sim>) -> Session {
        let mut rng = rand::rng();
        let drop_at = voice::chance(&mut rng, sim.opts.drop_rate)
            .then(|| Instant::now() + Duration::from_secs_f64(rng.random_range(1.0..=5.0)));
        let bad = plan_bad(sim.opts.ws_garbage_rate, sim.opts.ws_oversized_rate, &mut rng);
        Session {
            sim: sim.clone(),
            phase: Phase::AwaitConnected,
            stream_sid: String::new(),
            media_prefix: String::new(),
            last_seq: None,
            vad: Vad::default(),
            audio: Vec::with_capacity(mulaw::FRAME_BYTES),
            pending: None,
            playing: None,
            answers: 0,
            drop_at,
            bad: bad.into(),
            bad_at: None,
            opened_at: Instant::now(),
            last_heard: Instant::now(),
        }
    }

    async fn run<S>(mut self, mut ws: WebSocketStream<S>, mut shutdown: oneshot::Receiver<()>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Abortable,
    {
        // One timer for the session, re-armed only when a deadline comes earlier than the armed
        // one; a timer that fires early just re-arms (the VAD deadline moves on every voiced frame).
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let end = loop {
            if let Some(next) = self.next_deadline() {
                if armed.is_none_or(|a| next < a) {
                    timer.as_mut().reset(next.into());
                    armed = Some(next);
                }
            }
            let step = tokio::select! {
                biased;
                _ = &mut shutdown => Some(End::Shutdown),
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.on_timer(&mut ws).await
                }
                msg = ws.next() => self.on_message(msg, &mut ws).await,
            };
            if let Some(end) = step {
                break end;
            }
        };
        self.finish(ws, end).await;
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.drop_at,
            self.bad_at,
            self.vad.deadline(),
            self.pending.map(|p| p.due),
            Some(self.silence_limit()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When the caller counts as stalled.
    fn silence_limit(&self) -> Instant {
        match self.phase {
            Phase::Streaming => self.last_heard + IDLE_TIMEOUT,
            _ => self.opened_at + START_TIMEOUT,
        }
    }

    async fn on_timer<S>(&mut self, ws: &mut WebSocketStream<S>) -> Option<End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let now = Instant::now();
        if self.drop_at.is_some_and(|d| d <= now) {
            return Some(End::Dropped);
        }
        if self.silence_limit() <= now {
            let fault = match self.phase {
                Phase::Streaming => Fault::Idle,
                _ => Fault::NoStart,
            };
            return Some(End::Broken(fault));
        }
        if self.bad_at.is_some_and(|t| t <= now) {
            if let Some(end) = self.send_bad(ws).await {
                return Some(end);
            }
        }
        if let Some(event) = self.vad.poll_timeout(now) {
            self.on_voice(event, now, ws).await?;
        }
        match self.pending {
            Some(answer) if answer.due <= now => self.send_answer(answer, ws).await,
            _ => None,
        }
    }

    async fn on_message<S>(
        &mut self,
        msg: Option<Result<Message, WsError>>,
        ws: &mut WebSocketStream<S>,
    ) -> Option<End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.last_heard = Instant::now();
        match msg {
            Some(Ok(Message::Text(text))) => self.on_text(&text, ws).await,
            Some(Ok(Message::Binary(_))) => Some(End::Broken(Fault::Binary)),
            Some(Ok(Message::Close(_))) | None => Some(End::Gone),
            Some(Ok(_)) => None, // ping/pong: tungstenite answers pings itself
            Some(Err(WsError::Capacity(_))) => Some(End::Broken(Fault::TooLarge)),
            Some(Err(WsError::Utf8(_))) => Some(End::Broken(Fault::NotUtf8)),
            Some(Err(WsError::Protocol(_))) => Some(End::Broken(Fault::Malformed)),
            Some(Err(_)) => Some(End::Gone),
        }
    }

    async fn on_text<S>(&mut self, text: &str, ws: &mut WebSocketStream<S>) -> Option<End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // The hot path: a media frame, parsed without allocating.
        if let Ok(Incoming {
            event,
            sequence_number,
            stream_sid,
            media,
        }) = serde_json::from_str::<Incoming>(text)
        {
            if event == "media" {
                return self
                    .on_media(sequence_number, &stream_sid, &media.payload, ws)
                    .await;
            }
        }
        let event = match Event::parse(text) {
            Ok(event) => event,
            Err(ProtocolError::UnknownEvent(_)) => return Some(End::Broken(Fault::UnknownEvent)),
            Err(_) => return Some(End::Broken(Fault::Malformed)),
        };
        match event {
            Event::Connected { .. } => {
                if self.phase != Phase::AwaitConnected {
                    return Some(End::Broken(Fault::UnexpectedConnected));
                }
                self.phase = Phase::AwaitStart;
                None
            }
            Event::Start {
                sequence_number,
                start,
                stream_sid,
            } => {
                match self.phase {
                    Phase::AwaitConnected => return Some(End::Broken(Fault::StartBeforeConnected)),
                    Phase::Streaming => return Some(End::Broken(Fault::DuplicateStart)),
                    Phase::AwaitStart => {}
                }
                let format = &start.media_format;
                if !format.encoding.eq_ignore_ascii_case("audio/x-mulaw")
                    || format.sample_rate != mulaw::SAMPLE_RATE
                    || format.channels != 1
                {
                    return Some(End::Broken(Fault::BadMediaFormat));
                }
                self.check_sequence(Some(sequence_number));
                self.media_prefix = format!(
                    r#"{{"event":"media","streamSid":{},"media":{{"payload":""#,
                    serde_json::Value::from(stream_sid.as_str())
                );
                self.stream_sid = stream_sid;
                self.phase = Phase::Streaming;
                if !self.bad.is_empty() {
                    let after = rand::rng().random_range(BAD_AFTER_S);
                    self.bad_at = Some(Instant::now() + Duration::from_secs_f64(after));
                }
                None
            }
            Event::Media {
                sequence_number,
                media,
                stream_sid,
            } => {
                self.on_media(sequence_number, &stream_sid, &media.payload, ws)
                    .await
            }
            Event::Mark {
                sequence_number,
                mark,
                stream_sid,
            } => {
                if let Err(fault) = self.check_streaming(&stream_sid, Fault::MarkBeforeStart) {
                    return Some(End::Broken(fault));
                }
                self.check_sequence(sequence_number);
                self.on_mark(&mark.name);
                None
            }
            Event::Stop {
                sequence_number,
                stream_sid,
                ..
            } => {
                if let Err(fault) = self.check_streaming(&stream_sid, Fault::StopBeforeStart) {
                    return Some(End::Broken(fault));
                }
                self.check_sequence(Some(sequence_number));
                Some(End::Stopped)
            }
            Event::Clear { .. } => Some(End::Broken(Fault::UnexpectedClear)),
        }
    }

    /// Whether an event may come now, on this call's stream.
    fn check_streaming(&self, stream_sid: &str, before_start: Fault) -> Result<(), Fault> {
        if self.phase != Phase::Streaming {
            Err(before_start)
        } else if stream_sid != self.stream_sid {
            Err(Fault::StreamSidMismatch)
        } else {
            Ok(())
        }
    }

    fn check_sequence(&mut self, seq: Option<u64>) {
        let Some(seq) = seq else { return };
        if self.last_seq.is_some_and(|last| seq <= last) {
            self.sim.stats.streams.bad_sequence.fetch_add(1, Relaxed);
        }
        self.last_seq = Some(seq);
    }

    async fn on_media<S>(
        &mut self,
        seq: Option<u64>,
        stream_sid: &str,
        payload: &str,
        ws: &mut WebSocketStream<S>,
    ) -> Option<End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if let Err(fault) = self.check_streaming(stream_sid, Fault::MediaBeforeStart) {
            return Some(End::Broken(fault));
        }
        self.check_sequence(seq);
        self.audio.clear();
        if base64::engine::general_purpose::STANDARD
            .decode_vec(payload, &mut self.audio)
            .is_err()
        {
            return Some(End::Broken(Fault::BadPayload));
        }
        let streams = &self.sim.stats.streams;
        streams.media_frames.fetch_add(1, Relaxed);
        streams.media_bytes.fetch_add(self.audio.len() as u64, Relaxed);
        let now = self.last_heard; // stamped on arrival by on_message
        let event = self
            .vad
            .push(self.audio.len() as u64, voice::is_voiced(&self.audio), now)?;
        self.on_voice(event, now, ws).await
    }

    /// Reacts to the caller starting or finishing an utterance.
    async fn on_voice<S>(&mut self, event: VadEvent, now: Instant, ws: &mut WebSocketStream<S>) -> Option<End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let streams = &self.sim.stats.streams;
        match event {
            VadEvent::Onset => {
                if self.pending.take().is_some() {
                    streams.answers_cancelled.fetch_add(1, Relaxed);
                }
                if self.playing.as_ref().is_some_and(|p| now < p.until) {
                    self.playing = None;
                    streams.clears_sent.fetch_add(1, Relaxed);
                    let clear = Event::Clear {
                        stream_sid: self.stream_sid.clone(),
                    };
                    return self.send(vec![Message::text(clear.to_json())], ws).await;
                }
                None
            }
            VadEvent::End { audio_ms, speech_end } => {
                streams.utterances.fetch_add(1, Relaxed);
                if voice::mutes(self.sim.opts.ai_mute_rate) {
                    // Heard, and never answered.
                    self.sim.stats.faults.ai_muted.fetch_add(1, Relaxed);
                    return None;
                }
                self.pending = Some(voice::plan_answer(
                    audio_ms,
                    speech_end,
                    now,
                    self.sim.opts.ai_slowdown,
                ));
                None
            }
        }
    }

    /// Sends the answer's frames and its mark in one burst.
    async fn send_answer<S>(&mut self, answer: Answer, ws: &mut WebSocketStream<S>) -> Option<End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.pending = None;
        self.answers += 1;
        let mut burst: Vec<Message> = voice::ANSWER_PAYLOADS[..answer.frames]
            .iter()
            .map(|payload| {
                let mut frame = String::with_capacity(self.media_prefix.len() + payload.len() + 3);
                frame.push_str(&self.media_prefix);
                frame.push_str(payload);
                frame.push_str("\"}}");
                Message::text(frame)
            })
            .collect();
        let mark = Event::Mark {
            sequence_number: None,
            mark: crate::protocol::twilio::Mark {
                name: format!("answer-{}", self.answers),
            },
            stream_sid: self.stream_sid.clone(),
        };
        burst.push(Message::text(mark.to_json()));
        let streams = &self.sim.stats.streams;
        streams.answers.fetch_add(1, Relaxed);
        streams.answer_frames.fetch_add(answer.frames as u64, Relaxed);
        let sent_at = Instant::now();
        self.playing = Some(Playing {
            number: self.answers,
            until: sent_at + Duration::from_millis(answer.frames as u64 * mulaw::FRAME_MS),
        });
        self.send(burst, ws).await
    }

    /// Sends the next bad message, and schedules the one after.
    async fn send_bad<S>(&mut self, ws: &mut WebSocketStream<S>) -> Option<End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(bad) = self.bad.pop_front() else {
            self.bad_at = None;
            return None;
        };
        self.bad_at = (!self.bad.is_empty()).then(|| Instant::now() + BAD_GAP);
        if let Bad::Oversized { fragmented } = bad {
            return self.send_oversized(fragmented, ws).await;
        }
        self.sim.stats.faults.ws_garbage.fetch_add(1, Relaxed);
        let messages = self.bad_messages(bad);
        self.send(messages, ws).await
    }

    /// What a bad message is on the wire.
    fn bad_messages(&self, bad: Bad) -> Vec<Message> {
        let sid = serde_json::Value::from(self.stream_sid.as_str());
        let text = match bad {
            Bad::NotJson => format!("{{'event': 'media', 'streamSid': {sid}}}"),
            Bad::NoEvent => format!(
                r#"{{"streamSid":{sid},"media":{{"payload":"{}"}}}}"#,
                voice::ANSWER_PAYLOADS[0]
            ),
            Bad::UnknownEvent => {
                format!(r#"{{"event":"transcript","streamSid":{sid},"transcript":{{"text":"Guten Tag"}}}}"#)
            }
            Bad::NotBase64 => format!("{}@@not base64@@!!\"}}}}", self.media_prefix),
            Bad::Binary => {
                let audio = base64::engine::general_purpose::STANDARD
                    .decode(&voice::ANSWER_PAYLOADS[0])
                    .unwrap_or_default();
                return vec![Message::binary(audio)];
            }
            Bad::Oversized { .. } => self.oversized(),
        };
        vec![Message::text(text)]
    }

    /// A `media` message of exactly [`OVERSIZED_BYTES`]: valid, silent, and far too big.
    fn oversized(&self) -> String {
        let suffix = "\"}}";
        let room = OVERSIZED_BYTES.saturating_sub(self.media_prefix.len() + suffix.len());
        let payload = room / 4 * 4;
        let mut text = String::with_capacity(OVERSIZED_BYTES);
        text.push_str(&self.media_prefix);
        // "////" is three bytes of mu-law silence.
        text.extend(std::iter::repeat_n('/', payload));
        text.push_str(suffix);
        // Trailing whitespace is valid JSON: pad to the exact size.
        text.extend(std::iter::repeat_n(' ', room - payload));
        text
    }

    /// Sends the oversized message as raw frames on the connection, a piece at a time over
    /// [`OVERSIZED_TRICKLE`]: tungstenite would only queue it whole. The message is complete on
    /// the wire, so the session goes on as usual if the caller takes it. Counted as it starts:
    /// a caller that refuses it mostly hangs up before the last piece.
    async fn send_oversized<S>(&mut self, fragmented: bool, ws: &mut WebSocketStream<S>) -> Option<End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.sim.stats.faults.ws_oversized.fetch_add(1, Relaxed);
        let text = self.oversized();
        let pieces: Vec<&[u8]> = text.as_bytes().chunks(OVERSIZED_FRAGMENT).collect();
        let gap = OVERSIZED_TRICKLE / pieces.len() as u32;
        let sent = tokio::time::timeout(SEND_TIMEOUT, async {
            // Whatever tungstenite holds goes first.
            ws.flush().await.map_err(std::io::Error::other)?;
            let io = ws.get_mut();
            if !fragmented {
                io.write_all(&frame_header(OP_TEXT, true, text.len())).await?;
            }
            for (i, piece) in pieces.iter().enumerate() {
                if fragmented {
                    let op = if i == 0 { OP_TEXT } else { OP_CONTINUE };
                    io.write_all(&frame_header(op, i + 1 == pieces.len(), piece.len()))
                        .await?;
                }
                io.write_all(piece).await?;
                io.flush().await?;
                tokio::time::sleep(gap).await;
            }
            Ok::<_, std::io::Error>(())
        })
        .await;
        match sent {
            Ok(Ok(())) => None,
            _ => Some(End::Gone),
        }
    }

    /// Sends messages and flushes; a caller who can't take them in time is gone.
    async fn send<S>(&mut self, messages: Vec<Message>, ws: &mut WebSocketStream<S>) -> Option<End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let sent = tokio::time::timeout(SEND_TIMEOUT, async {
            for m in messages {
                ws.feed(m).await?;
            }
            ws.flush().await
        })
        .await;
        match sent {
            Ok(Ok(())) => None,
            _ => Some(End::Gone),
        }
    }

    /// A `mark` echoed by the caller: the answer it ended has finished playing.
    fn on_mark(&mut self, name: &str) {
        let number = name.strip_prefix("answer-").and_then(|n| n.parse::<u64>().ok());
        let streams = &self.sim.stats.streams;
        match number {
            Some(n) if (1..=self.answers).contains(&n) => {
                streams.marks_echoed.fetch_add(1, Relaxed);
                if self.playing.as_ref().is_some_and(|p| p.number == n) {
                    self.playing = None;
                }
            }
            _ => {
                streams.unknown_marks.fetch_add(1, Relaxed);
            }
        }
    }

    async fn finish<S>(self, mut ws: WebSocketStream<S>, end: End)
    where
        S: AsyncRead + AsyncWrite + Unpin + Abortable,
    {
        let streams = &self.sim.stats.streams;
        let (code, reason) = match end {
            End::Stopped => {
                streams.completed.fetch_add(1, Relaxed);
                (CloseCode::Normal, "stop received")
            }
            End::Broken(fault) => {
                self.sim.stats.fault(fault);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_frames_parse_on_the_fast_path() {
        let text = r#"{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"2","timestamp":"20","payload":"/////w=="},"streamSid":"MZ1"}"#;
        let m: Incoming = serde_json::from_str(text).unwrap();
        assert_eq!(m.event, "media");
        assert_eq!(m.sequence_number, Some(3));
        assert!(matches!(m.stream_sid, Cow::Borrowed("MZ1")));
        assert!(matches!(m.media.payload, Cow::Borrowed("/////w==")));
        let rest = r#","streamSid":"MZ1","media":{"payload":""}}"#;
        let numeric = format!(r#"{{"event":"media","sequenceNumber":4{rest}"#);
        let numeric: Incoming = serde_json::from_str(&numeric).unwrap();
        assert_eq!(numeric.sequence_number, Some(4));
        let bad = format!(r#"{{"event":"media","sequenceNumber":"x"{rest}"#);
        assert!(serde_json::from_str::<Incoming>(&bad).is_err());
        // Other events take the full parser.
        assert!(serde_json::from_str::<Incoming>(r#"{"event":"connected","protocol":"Call"}"#).is_err());
    }

    #[test]
    fn stalled_callers_have_a_deadline() {
        let sim = Arc::new(Sim::new(
            super::super::ServeOptions::for_tests(),
            "127.0.0.1:1".parse().unwrap(),
        ));
        let mut session = Session::new(&sim);
        assert_eq!(session.next_deadline(), Some(session.opened_at + START_TIMEOUT));
        session.phase = Phase::Streaming;
        session.last_heard += Duration::from_secs(3);
        assert_eq!(session.next_deadline(), Some(session.last_heard + IDLE_TIMEOUT));
        // Sooner deadlines come first.
        session.drop_at = Some(session.last_heard + Duration::from_secs(2));
        assert_eq!(session.next_deadline(), session.drop_at);
    }

    #[test]
    fn garbage_streams_meet_every_kind_starting_at_a_different_one() {
        let rng = &mut rand::rng();
        assert!(plan_bad(0.0, 0.0, rng).is_empty());
        let (a, b) = (plan_bad(1.0, 0.0, rng), plan_bad(1.0, 0.0, rng));
        for plan in [&a, &b] {
            assert_eq!(plan.len(), GARBAGE.len());
            assert!(GARBAGE.iter().all(|g| plan.contains(g)), "{plan:?}");
        }
        assert_ne!(a[0], b[0]);
        let both = plan_bad(1.0, 1.0, rng);
        assert!(
            matches!(both.last(), Some(Bad::Oversized { .. })),
            "oversized comes last"
        );
        let (c, d) = (plan_bad(0.0, 1.0, rng), plan_bad(0.0, 1.0, rng));
        assert_ne!(c, d, "one frame and fragments in turn");
    }

    #[test]
    fn bad_messages_are_what_they_say() {
        use crate::protocol::ProtocolError::{Malformed, UnknownEvent};
        let sim = Arc::new(Sim::new(
            super::super::ServeOptions::for_tests(),
            "127.0.0.1:1".parse().unwrap(),
        ));
        let mut session = Session::new(&sim);
        session.stream_sid = "MZ1".into();
        session.media_prefix = r#"{"event":"media","streamSid":"MZ1","media":{"payload":""#.into();
        let text = |bad| match session.bad_messages(bad).as_slice() {
            [Message::Text(t)] => t.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            Event::parse(&text(Bad::NotJson)),
            Err(Malformed("not JSON".into()))
        );
        assert_eq!(
            Event::parse(&text(Bad::NoEvent)),
            Err(Malformed("no 'event' name".into()))
        );
        assert_eq!(
            Event::parse(&text(Bad::UnknownEvent)),
            Err(UnknownEvent("transcript".into()))
        );
        let Ok(Event::Media {
            media, stream_sid, ..
        }) = Event::parse(&text(Bad::NotBase64))
        else {
            panic!("a media event");
        };
        assert_eq!(stream_sid, "MZ1");
        assert!(base64::engine::general_purpose::STANDARD
            .decode(&media.payload)
            .is_err());
        assert!(
            matches!(session.bad_messages(Bad::Binary).as_slice(), [Message::Binary(b)] if b.len() == 160)
        );

        let one = text(Bad::Oversized { fragmented: false });
        assert_eq!(one.len(), OVERSIZED_BYTES);
        let Ok(Event::Media { media, .. }) = Event::parse(&one) else {
            panic!("a valid media event");
        };
        let audio = base64::engine::general_purpose::STANDARD
            .decode(&media.payload)
            .unwrap();
        assert!(audio.len() > 3_000_000 && !voice::is_voiced(&audio[..160]));
    }

    #[test]
    fn frame_headers_follow_rfc_6455() {
        assert_eq!(frame_header(OP_TEXT, true, 5), [0x81, 5]);
        assert_eq!(frame_header(OP_CONTINUE, false, 126), [0x00, 126, 0, 126]);
        assert_eq!(
            frame_header(OP_TEXT, false, 70_000),
            [0x01, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]
        );
    }

    /// The trickled oversized message is a well-formed WebSocket message, whole or fragmented,
    /// and the stream goes on after it.
    #[tokio::test]
    async fn oversized_messages_arrive_whole_for_a_caller_that_takes_them() {
        let sim = Arc::new(Sim::new(
            super::super::ServeOptions::for_tests(),
            "127.0.0.1:1".parse().unwrap(),
        ));
        let mut session = Session::new(&sim);
        session.stream_sid = "MZ1".into();
        session.media_prefix = r#"{"event":"media","streamSid":"MZ1","media":{"payload":""#.into();
        let want = session.oversized();
        for fragmented in [false, true] {
            let (a, b) = tokio::io::duplex(64 << 10);
            let mut server = WebSocketStream::from_raw_socket(a, Role::Server, Some(ws_config())).await;
            let big = WebSocketConfig::default()
                .max_message_size(Some(8 << 20))
                .max_frame_size(Some(8 << 20));
            let mut client = WebSocketStream::from_raw_socket(b, Role::Client, Some(big)).await;
            let reader = tokio::spawn(async move {
                let first = client.next().await.unwrap().unwrap();
                let second = client.next().await.unwrap().unwrap();
                (first, second)
            });
            let started = Instant::now();
            assert!(session.send_oversized(fragmented, &mut server).await.is_none());
            assert!(started.elapsed() >= OVERSIZED_TRICKLE / 2, "trickled");
            assert!(session
                .send(vec![Message::text("after")], &mut server)
                .await
                .is_none());
            let (first, second) = reader.await.unwrap();
            assert_eq!(
                first.into_text().unwrap().as_str(),
                want,
                "fragmented {fragmented}"
            );
            assert_eq!(second, Message::text("after"));
        }
        assert_eq!(sim.stats_json()["faults"]["ws_oversized"], 2);
    }

    /// Each garbage message is counted as it goes out, each utterance left unanswered as the
    /// agent decides to leave it.
    #[tokio::test]
    async fn garbage_messages_and_muted_utterances_are_counted() {
        let sim = Arc::new(Sim::new(
            super::super::ServeOptions {
                ws_garbage_rate: 1.0,
                ai_mute_rate: 1.0,
                ..super::super::ServeOptions::for_tests()
            },
            "127.0.0.1:1".parse().unwrap(),
        ));
        let faults = || sim.stats_json()["faults"].clone();
        let mut session = Session::new(&sim);
        assert_eq!(session.bad.len(), GARBAGE.len());
        assert_eq!(faults()["ws_garbage"], 0, "counted when sent, not when planned");
        session.stream_sid = "MZ1".into();
        session.media_prefix = r#"{"event":"media","streamSid":"MZ1","media":{"payload":""#.into();
        let (a, b) = tokio::io::duplex(64 << 10);
        let mut server = WebSocketStream::from_raw_socket(a, Role::Server, Some(ws_config())).await;
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        for sent in 1..=GARBAGE.len() {
            assert!(session.send_bad(&mut server).await.is_none());
            assert!(client.next().await.unwrap().is_ok());
            assert_eq!(faults()["ws_garbage"], sent);
        }
        // Nothing left to send: nothing more counted.
        assert!(session.send_bad(&mut server).await.is_none());
        assert_eq!(session.bad_at, None);
        assert_eq!(faults()["ws_garbage"], GARBAGE.len());

        let now = Instant::now();
        let heard = VadEvent::End {
            audio_ms: 800,
            speech_end: now,
        };
        assert!(session.on_voice(heard, now, &mut server).await.is_none());
        assert!(session.pending.is_none(), "no answer planned");
        assert_eq!(sim.stats_json()["streams"]["utterances"], 1);
        assert_eq!(faults()["ai_muted"], 1);
        assert_eq!(faults()["ws_oversized"], 0);
    }

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
