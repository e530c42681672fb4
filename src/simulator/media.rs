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
//! `--drop-rate` drops a call by resetting its TCP connection, with no close frame.

use super::api::detail;
use super::stats::Fault;
use super::voice::{self, Answer, Vad, VadEvent};
use super::Sim;
use crate::twilio::{mulaw, Event, ProtocolError};
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
use tokio::io::{AsyncRead, AsyncWrite};
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
        let drop_at = (sim.opts.drop_rate > 0.0 && rng.random_bool(sim.opts.drop_rate))
            .then(|| Instant::now() + Duration::from_secs_f64(rng.random_range(1.0..=5.0)));
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
            mark: crate::twilio::protocol::Mark {
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
