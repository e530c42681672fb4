//! One phone call over Twilio Media Streams, played from Twilio's side, as short Goose transactions.
//!
//! A [`Call`] owns the WebSocket: it dials (`connected`, `start`), sends a `media` frame on an
//! absolute 20 ms schedule, plays the agent's audio into a virtual loudspeaker (so `mark`s are
//! echoed when the audio before them has played, and `clear` empties it, echoing pending marks as
//! Twilio does), and hangs up (`stop`). What the caller says and when the call is over is a
//! [`Script`]'s business: silence for media-stream calls, turns of speech for AI calls.
//!
//! Goose cannot pre-empt a transaction, so a call is spread over many transactions of at most
//! [`SLICE`] each: the open call lives in the user's session data (a [`Line`]), and an `on_stop`
//! transaction hangs up. Run end, Stop, Ctrl-C and threshold aborts thus end calls within a second.
//!
//! The frame path is allocation-free and serde-free: the silence payload is encoded once, each
//! `media` message is written by hand into a per-thread buffer, and lateness is counted inline.
//!
//! # When the agent misbehaves
//!
//! Every way a call can go wrong ends that call (never the user, never the run) with one failed
//! row under the call's name in Goose's reports, its reason one of a small fixed set of texts,
//! counted in the run's failure tally ([`record_all`]) and in the run's stream errors; then the
//! user dials again after a back-off ([`BACKOFF_MIN`] doubling to [`BACKOFF_MAX`]), so a broken
//! agent is never hammered.
//!
//! - Upgrade refused: `refused upgrade: 503` (the connect row fails too, with the status).
//! - The agent ends the call before we hang up (a TCP reset, end of stream, or its close frame):
//!   `closed by server mid-call`.
//! - Anything the agent may not send, as Twilio sees it (error 31924: only `media`, `mark` and
//!   `clear` go from the agent to Twilio), is a protocol error and ends the call, answered with a
//!   close frame that names it: `protocol error: not JSON`, `... not a JSON object`, `... no
//!   'event' name`, `... bad 'media' event` (a known event with a missing or mistyped field),
//!   `... unknown event 'NAME'` (the first [`MAX_UNKNOWN_EVENTS`] names; later ones share one
//!   reason), `... unexpected 'stop' event` (one only Twilio sends), `... media payload is not
//!   base64`, `... wrong streamSid`, `... unexpected binary frame`, `... invalid UTF-8`. Unknown
//!   events are not skipped: an agent that sends them is broken, and a skipped event would hide
//!   it (a script that did skip them would still have to count them somewhere).
//! - A message over [`MAX_MESSAGE`] (1 MiB; the agent's legitimate messages are a few KB):
//!   `protocol error: message too large (over 1 MiB)`, detected from the frame header (or as a
//!   fragmented message reaches the limit), so no call ever buffers more than that.
//! - A send that cannot complete within 5 s (the agent stopped reading): `timeout`.

use crate::measure::failures::FailureTally;
use crate::measure::{Measurements, StreamStats, LATE_FRAME_US};
use crate::protocol::mulaw::{FRAME_BYTES, SILENCE};
use crate::protocol::twilio::{self, Event, MediaFormat};
use crate::scenarios::Shared;
use base64::Engine;
use bytes::{BufMut, BytesMut};
use futures_util::{SinkExt, StreamExt};
use goose::prelude::*;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

/// Media Streams' frame period.
pub const FRAME: Duration = Duration::from_millis(crate::protocol::mulaw::FRAME_MS);
/// The longest stretch of a call one transaction streams: how soon a stopping user hangs up.
pub const SLICE: Duration = Duration::from_secs(1);
/// Longest wait for the WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for one message to leave (a server that stopped reading).
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a hang-up waits for the server's close reply.
const HANGUP_GRACE: Duration = Duration::from_millis(500);
/// Due frames sent at once to catch up; older ones are skipped (and counted), never bunched.
const MAX_CATCH_UP: u64 = 3;
/// Pending marks a call keeps; more is an agent gone wrong.
const MAX_PENDING_MARKS: usize = 1024;
/// Largest agent message (and frame) accepted: a whole minute of answer audio in one `media`
/// message fits; anything bigger fails the call before it is buffered.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Unknown event names reported by name; further names share one reason, so an agent inventing
/// names cannot grow the reports without bound.
pub const MAX_UNKNOWN_EVENTS: usize = 16;
/// How long a call failed by a protocol error waits to send its close frame.
const ABORT_GRACE: Duration = Duration::from_millis(200);
/// Back-off after a failed call: first and longest wait before dialling again.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// Resolution of recorded frame lateness.
const LATENESS_STEP_US: u64 = 100;
/// Lateness steps a call counts inline (0 to 6.3 ms); later frames go straight to the histogram.
const LATENESS_SLOTS: usize = 64;
/// Mu-law bytes played per ms (8 kHz).
const BYTES_PER_MS: u64 = 8;

/// The method label of call rows in Goose's reports (not an HTTP verb, so rows never merge).
pub const WS: &str = "WS";

/// How one kind of call names its rows in Goose's reports.
#[derive(Debug)]
pub struct Names {
    /// The WebSocket handshake.
    pub connect: &'static str,
    /// A whole call, from connected to hung up (or its failure).
    pub call: &'static str,
    /// A `mark` from its arrival to its echo: the agent audio it waited for played out.
    pub mark: &'static str,
}

/// Why a call failed, named for the reports (no ids, a bounded set of texts).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub reason: String,
    /// The HTTP status of a refused upgrade.
    pub status: Option<u16>,
    /// The close code the caller answers with (protocol errors), if any.
    close: Option<CloseCode>,
}

impl Failure {
    pub fn new(reason: impl Into<String>) -> Failure {
        Failure {
            reason: reason.into(),
            status: None,
            close: None,
        }
    }

    fn closed() -> Failure {
        Failure::new("closed by server mid-call")
    }

    fn protocol(what: impl std::fmt::Display) -> Failure {
        Failure {
            close: Some(CloseCode::Protocol),
            ..Failure::new(format!("protocol error: {what}"))
        }
    }

    fn too_large() -> Failure {
        Failure {
            close: Some(CloseCode::Size),
            ..Failure::protocol(format_args!("message too large (over {} MiB)", MAX_MESSAGE >> 20))
        }
    }

    fn binary() -> Failure {
        Failure {
            close: Some(CloseCode::Unsupported),
            ..Failure::protocol(twilio::ProtocolError::Binary)
        }
    }

    fn unknown_event(name: &str) -> Failure {
        static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        let name: String = name
            .chars()
            .map(|c| if c.is_control() || c == '\'' { '?' } else { c })
            .collect();
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.contains(&name) {
            if seen.len() >= MAX_UNKNOWN_EVENTS {
                return Failure::protocol("unknown event (too many kinds to name)");
            }
            seen.push(name.clone());
        }
        Failure::protocol(format_args!("unknown event '{name}'"))
    }

    fn timeout() -> Failure {
        Failure::new("timeout")
    }
}

/// A Goose custom request waiting for the end of the slice to be recorded.
#[derive(Debug, Clone)]
pub struct Record {
    pub method: &'static str,
    pub name: &'static str,
    pub took: Duration,
    /// `None` for success, else the failure's reason.
    pub error: Option<String>,
    pub status: Option<u16>,
}

impl Record {
    pub fn ok(method: &'static str, name: &'static str, took: Duration) -> Record {
        Record {
            method,
            name,
            took,
            error: None,
            status: None,
        }
    }

    pub fn failed(method: &'static str, name: &'static str, took: Duration, f: &Failure) -> Record {
        Record {
            method,
            name,
            took,
            error: Some(f.reason.clone()),
            status: f.status,
        }
    }
}

/// Records a slice's custom requests with Goose.
/// Each failed one is counted in the run's failure tally under "METHOD name: reason".
pub async fn record_all(
    user: &mut GooseUser,
    records: &mut Vec<Record>,
    failures: &FailureTally,
) -> TransactionResult {
    for r in records.drain(..) {
        if let Some(reason) = &r.error {
            failures.count(&format!("{} {}: {reason}", r.method, r.name));
        }
        user.record_custom_request_duration(
            r.method,
            r.name,
            r.took,
            r.error.is_none(),
            r.status,
            r.error.as_deref(),
        )
        .await?;
    }
    Ok(())
}

/// What the agent did, as a script hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// A `media` message of this many mu-law bytes.
    Audio(usize),
    /// A `mark` (the end of a piece of agent audio).
    Mark,
    /// A mark was echoed: the audio queued before it has played (or was cleared).
    Played,
    /// A `clear`: queued agent audio dropped.
    Clear,
}

/// Whether a call goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    HangUp,
}

/// The caller's side of the conversation: what to say, and when the call is over.
pub trait Script: Send + 'static {
    /// A call has just connected (at `now`).
    fn begin(&mut self, now: Instant);
    /// The caller's next 160 bytes of mu-law (a shorter slice is padded with silence), or
    /// `None` for silence.
    fn next_frame(&mut self, now: Instant) -> Option<&[u8]>;
    /// The agent did something.
    fn heard(&mut self, now: Instant, what: Heard);
    /// Timeouts and the end of the call; called before every frame and after every message.
    fn poll(&mut self, now: Instant) -> Flow;
    /// When `poll` next has something to do, if ever (besides frames and messages).
    fn deadline(&self) -> Option<Instant>;
    /// The call ended: hung up (`None`), or failed, to connect or mid-call.
    fn end(&mut self, failure: Option<&Failure>);
    /// Hands over what the script measured since the last flush.
    fn flush(&mut self, measurements: &Measurements, records: &mut Vec<Record>);
}

/// Twilio's ids: a two-letter prefix and 32 hex digits.
pub fn sid(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}

/// The media-stream URL of a call: the host with http -> ws and https -> wss.
pub fn media_url(host: &Url, call_sid: &str) -> Result<Url, Failure> {
    let scheme = match host.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => return Err(Failure::new(format!("bad host: scheme '{other}' is not http(s)"))),
    };
    let mut url = host.clone();
    url.set_scheme(scheme)
        .map_err(|()| Failure::new("bad host: cannot be a WebSocket URL"))?;
    url.set_path(&format!("/webhooks/twilio/media/{call_sid}"));
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// Base64 of one frame of silence, encoded once.
static SILENCE_B64: LazyLock<String> =
    LazyLock::new(|| base64::engine::general_purpose::STANDARD.encode([SILENCE; FRAME_BYTES]));

/// Base64 length of one frame.
const FRAME_B64: usize = FRAME_BYTES.div_ceil(3) * 4;

thread_local! {
    /// Where `media` messages are written: one buffer per thread, not one per call.
    static SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::with_capacity(4096));
}

/// Writes a `media` message: `sequenceNumber`, `chunk` and `timestamp` in `numbers`.
fn write_media(out: &mut BytesMut, numbers: [u64; 3], audio: Option<&[u8]>, stream_sid: &str) {
    let [seq, chunk, timestamp] = numbers;
    out.reserve(FRAME_B64 + 256);
    out.put_slice(br#"{"event":"media","sequenceNumber":""#);
    put_u64(out, seq);
    out.put_slice(br#"","media":{"track":"inbound","chunk":""#);
    put_u64(out, chunk);
    out.put_slice(br#"","timestamp":""#);
    put_u64(out, timestamp);
    out.put_slice(br#"","payload":""#);
    match audio {
        None => out.put_slice(SILENCE_B64.as_bytes()),
        Some(bytes) => put_base64_frame(out, bytes),
    }
    out.put_slice(br#""},"streamSid":""#);
    out.put_slice(stream_sid.as_bytes());
    out.put_slice(br#""}"#);
}

/// Base64 of one frame of caller audio, padded with silence to 160 bytes.
fn put_base64_frame(out: &mut BytesMut, bytes: &[u8]) {
    let mut frame = [SILENCE; FRAME_BYTES];
    let n = bytes.len().min(FRAME_BYTES);
    frame[..n].copy_from_slice(&bytes[..n]);
    let mut b64 = [0u8; FRAME_B64];
    let len = base64::engine::general_purpose::STANDARD
        .encode_slice(frame, &mut b64)
        .unwrap_or(0);
    out.put_slice(&b64[..len]);
}

/// Frame lateness counted inline: one small array per call instead of a histogram update per
/// frame, folded into the call's [`StreamStats`] when it is flushed.
#[derive(Debug)]
struct Lateness {
    counts: [u32; LATENESS_SLOTS],
}

impl Default for Lateness {
    fn default() -> Self {
        Lateness {
            counts: [0; LATENESS_SLOTS],
        }
    }
}

impl Lateness {
    /// Counts one frame `late_us` late, to the nearest [`LATENESS_STEP_US`].
    fn record(&mut self, late_us: u64, stats: &mut StreamStats) {
        let step = (late_us + LATENESS_STEP_US / 2) / LATENESS_STEP_US;
        match self.counts.get_mut(step as usize) {
            Some(c) => *c += 1,
            None => stats.lateness_us.record(step * LATENESS_STEP_US),
        }
    }

    fn fold_into(&mut self, stats: &mut StreamStats) {
        for (step, c) in self.counts.iter_mut().enumerate() {
            if *c > 0 {
                stats
                    .lateness_us
                    .record_n(step as u64 * LATENESS_STEP_US, u64::from(*c));
                *c = 0;
            }
        }
    }
}

/// The agent's audio as the caller's loudspeaker plays it: when the queue runs dry, and the
/// marks waiting for it.
#[derive(Debug, Default)]
struct Loudspeaker {
    /// When the queued audio has played out (`None`: nothing queued yet).
    ends: Option<Instant>,
    /// (name, when it is due, when it arrived), in arrival order, so due times never decrease.
    marks: VecDeque<(String, Instant, Instant)>,
}

impl Loudspeaker {
    fn queue(&mut self, now: Instant, bytes: usize) {
        let start = self.ends.map_or(now, |e| e.max(now));
        self.ends = Some(start + Duration::from_micros(bytes as u64 * 1000 / BYTES_PER_MS));
    }

    fn mark(&mut self, now: Instant, name: String) -> Result<(), Failure> {
        if self.marks.len() >= MAX_PENDING_MARKS {
            return Err(Failure::protocol("too many pending marks"));
        }
        let due = self.ends.map_or(now, |e| e.max(now));
        self.marks.push_back((name, due, now));
        Ok(())
    }

    /// Drops what is queued: every pending mark is due at once.
    fn clear(&mut self, now: Instant) {
        self.ends = Some(now);
        for m in &mut self.marks {
            m.1 = now;
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.marks.front().map(|m| m.1)
    }

    fn pop_due(&mut self, now: Instant) -> Option<(String, Instant)> {
        if self.next_due()? <= now {
            self.marks.pop_front().map(|(name, _, arrived)| (name, arrived))
        } else {
            None
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One live call: the WebSocket, Twilio's counters and the 20 ms clock.
pub struct Call {
    ws: Ws,
    call_sid: String,
    stream_sid: String,
    account_sid: String,
    /// The last `sequenceNumber` sent.
    seq: u64,
    /// The last media `chunk` sent.
    chunk: u64,
    /// Slot 0 of the frame schedule: slot n is due at t0 + n x 20 ms.
    t0: Instant,
    next_slot: u64,
    speaker: Loudspeaker,
    /// Frame lateness since the last flush, by 0.1 ms step (folded into `stats` on flush).
    lateness: Lateness,
    /// Tallies since the last flush.
    stats: StreamStats,
    /// Custom requests since the last flush.
    records: Vec<Record>,
    names: &'static Names,
    /// When the handshake completed.
    connected_at: Instant,
}

impl Call {
    /// Dials: WebSocket handshake, then `connected` and `start`. `stats` gets the attempt.
    pub async fn dial(host: &Url, names: &'static Names, stats: &mut StreamStats) -> Result<Call, Failure> {
        stats.calls_attempted += 1;
        let call_sid = sid("CA");
        let url = media_url(host, &call_sid)?;
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let started = Instant::now();
        let connect = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
        let ws = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Err(_) => return Err(Failure::timeout()),
            Ok(Err(e)) => return Err(handshake_failure(e, url.scheme() == "wss")),
            Ok(Ok((ws, _response))) => ws,
        };
        let took = started.elapsed();
        stats.calls_connected += 1;
        stats.connect_us.record(took.as_micros() as u64);
        let now = Instant::now();
        let mut call = Call {
            ws,
            call_sid,
            stream_sid: sid("MZ"),
            account_sid: sid("AC"),
            seq: 0,
            chunk: 0,
            t0: now,
            next_slot: 0,
            speaker: Loudspeaker::default(),
            lateness: Lateness::default(),
            stats: StreamStats::default(),
            records: vec![Record::ok(WS, names.connect, took)],
            names,
            connected_at: now,
        };
        call.send_opening().await?;
        Ok(call)
    }

    async fn send_opening(&mut self) -> Result<(), Failure> {
        let connected = Event::Connected {
            protocol: "Call".into(),
            version: "1.0.0".into(),
        };
        self.send_text(connected.to_json()).await?;
        self.seq = 1;
        let start = Event::Start {
            sequence_number: self.seq,
            start: twilio::Start {
                account_sid: self.account_sid.clone(),
                stream_sid: self.stream_sid.clone(),
                call_sid: self.call_sid.clone(),
                tracks: vec!["inbound".into()],
                custom_parameters: Default::default(),
                media_format: MediaFormat::default(),
            },
            stream_sid: self.stream_sid.clone(),
        };
        self.send_text(start.to_json()).await?;
        // The media clock starts with the stream.
        self.t0 = Instant::now();
        Ok(())
    }

    /// The tallies since the last call, lateness included; the call starts afresh.
    pub fn take_stats(&mut self) -> StreamStats {
        self.lateness.fold_into(&mut self.stats);
        std::mem::take(&mut self.stats)
    }

    /// How long the call has been up.
    pub fn age(&self) -> Duration {
        self.connected_at.elapsed()
    }

    /// Streams until `until`, or until the script hangs up (`Flow::HangUp`): frames on the
    /// 20 ms schedule, the agent's messages read in between.
    pub async fn stream<S: Script>(&mut self, until: Instant, script: &mut S) -> Result<Flow, Failure> {
        let sleep = tokio::time::sleep_until(until);
        tokio::pin!(sleep);
        loop {
            let now = Instant::now();
            self.echo_played(now, script).await?;
            if script.poll(now) == Flow::HangUp {
                return Ok(Flow::HangUp);
            }
            self.send_due_frames(now, script).await?;
            if now >= until {
                return Ok(Flow::Continue);
            }
            let wake = [
                Some(self.slot_time(self.next_slot)),
                Some(until),
                self.speaker.next_due(),
                script.deadline(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(until);
            if wake > now {
                sleep.as_mut().reset(wake);
                tokio::select! {
                    biased;
                    () = &mut sleep => {}
                    msg = self.ws.next() => self.receive(msg, script)?,
                }
            } else {
                // Time passed while sending: go round again, but let other calls run first.
                tokio::task::yield_now().await;
            }
        }
    }

    fn slot_time(&self, slot: u64) -> Instant {
        self.t0 + Duration::from_micros(slot * FRAME.as_micros() as u64)
    }

    /// Slots due by `now` (slot n is due at t0 + n x 20 ms).
    fn slots_due(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.t0).as_micros() / FRAME.as_micros()) as u64 + 1
    }

    async fn send_due_frames<S: Script>(&mut self, now: Instant, script: &mut S) -> Result<(), Failure> {
        let due = self.slots_due(now);
        if self.next_slot >= due {
            return Ok(());
        }
        let behind = due - self.next_slot;
        if behind > MAX_CATCH_UP {
            // Far behind: the missed audio is gone, as on a real line; count it, don't burst it.
            let skip = behind - MAX_CATCH_UP;
            for _ in 0..skip {
                script.next_frame(now);
            }
            self.stats.frames_scheduled += skip;
            self.stats.frames_skipped += skip;
            self.stats.frames_late += skip;
            self.next_slot += skip;
        }
        while self.next_slot < due {
            let slot = self.next_slot;
            self.next_slot += 1;
            let message = self.media_message(slot, script.next_frame(now));
            let late = Instant::now().saturating_duration_since(self.slot_time(slot));
            let late_us = late.as_micros() as u64;
            self.stats.frames_scheduled += 1;
            self.lateness.record(late_us, &mut self.stats);
            if late_us > LATE_FRAME_US {
                self.stats.frames_late += 1;
            }
            self.send(message).await?;
            self.stats.frames_sent += 1;
        }
        Ok(())
    }

    /// Slot `slot`'s `media` message, as Twilio words it, written by hand (no serde, no
    /// allocation: the buffer is the thread's, reclaimed once the frame is on its way).
    fn media_message(&mut self, slot: u64, audio: Option<&[u8]>) -> Message {
        self.seq += 1;
        self.chunk += 1;
        SCRATCH.with_borrow_mut(|out| {
            let timestamp = slot * FRAME.as_millis() as u64;
            write_media(out, [self.seq, self.chunk, timestamp], audio, &self.stream_sid);
            // Only ASCII was written, so this never fails.
            Message::Text(Utf8Bytes::try_from(out.split()).unwrap_or_default())
        })
    }

    async fn send_text(&mut self, text: String) -> Result<(), Failure> {
        self.send(Message::Text(text.into())).await
    }

    async fn send(&mut self, msg: Message) -> Result<(), Failure> {
        let len = msg.len() as u64;
        bounded(SEND_TIMEOUT, self.ws.send(msg))
            .await?
            .map_err(stream_failure)?;
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += len;
        Ok(())
    }

    fn receive<S: Script>(
        &mut self,
        msg: Option<Result<Message, tungstenite::Error>>,
        script: &mut S,
    ) -> Result<(), Failure> {
        let text = match msg {
            None => return Err(Failure::closed()),
            Some(Err(e)) => return Err(stream_failure(e)),
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(bytes))) => {
                self.stats.messages_received += 1;
                self.stats.bytes_received += bytes.len() as u64;
                return Err(Failure::binary());
            }
            Some(Ok(Message::Close(_))) => return Err(Failure::closed()),
            // Pings are answered by tungstenite itself.
            Some(Ok(_)) => return Ok(()),
        };
        self.stats.messages_received += 1;
        self.stats.bytes_received += text.len() as u64;
        let now = Instant::now();
        match Event::parse(&text).map_err(parse_failure)? {
            Event::Media {
                media, stream_sid, ..
            } => {
                self.check_sid(&stream_sid)?;
                let bytes = payload_len(&media.payload)?;
                self.speaker.queue(now, bytes);
                script.heard(now, Heard::Audio(bytes));
            }
            Event::Mark { mark, stream_sid, .. } => {
                self.check_sid(&stream_sid)?;
                self.speaker.mark(now, mark.name)?;
                script.heard(now, Heard::Mark);
            }
            Event::Clear { stream_sid } => {
                self.check_sid(&stream_sid)?;
                self.stats.clears_received += 1;
                self.speaker.clear(now);
                script.heard(now, Heard::Clear);
            }
            other => {
                return Err(Failure::protocol(format_args!(
                    "unexpected '{}' event",
                    other.name()
                )))
            }
        }
        Ok(())
    }

    fn check_sid(&self, stream_sid: &str) -> Result<(), Failure> {
        if stream_sid == self.stream_sid {
            Ok(())
        } else {
            Err(Failure::protocol("wrong streamSid"))
        }
    }

    /// Echoes every mark whose audio has played, as Twilio does.
    async fn echo_played<S: Script>(&mut self, now: Instant, script: &mut S) -> Result<(), Failure> {
        while let Some((name, arrived)) = self.speaker.pop_due(now) {
            self.seq += 1;
            let echo = Event::Mark {
                sequence_number: Some(self.seq),
                mark: twilio::Mark { name },
                stream_sid: self.stream_sid.clone(),
            };
            self.send_text(echo.to_json()).await?;
            self.stats.marks_echoed += 1;
            self.records.push(Record::ok(
                WS,
                self.names.mark,
                now.saturating_duration_since(arrived),
            ));
            script.heard(now, Heard::Played);
        }
        Ok(())
    }

    /// Ends a failed call: a protocol error is answered with a close frame naming it (RFC 6455
    /// asks for one), sent briefly and not waited on; a dead or stalled line is just dropped.
    async fn abort(&mut self, f: &Failure) {
        let Some(code) = f.close else { return };
        // A close reason holds at most 123 bytes.
        let mut reason = f.reason.as_str();
        while reason.len() > 123 {
            let mut end = 123;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason = &reason[..end];
        }
        let frame = CloseFrame {
            code,
            reason: reason.to_string().into(),
        };
        let _ = tokio::time::timeout(ABORT_GRACE, self.ws.close(Some(frame))).await;
    }

    /// Hangs up: `stop`, then the WebSocket close handshake (briefly: the server may be gone).
    pub async fn hang_up(&mut self) -> Result<(), Failure> {
        self.seq += 1;
        let stop = Event::Stop {
            sequence_number: self.seq,
            stop: twilio::Stop {
                account_sid: self.account_sid.clone(),
                call_sid: self.call_sid.clone(),
            },
            stream_sid: self.stream_sid.clone(),
        };
        self.send_text(stop.to_json()).await?;
        let _ = tokio::time::timeout(HANGUP_GRACE, async {
            let _ = self.ws.close(None).await;
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
        Ok(())
    }
}

/// Waits for `fut` at most `limit`, without arming a timer when it is ready at once (the usual
/// case for a frame on a healthy socket).
async fn bounded<F: Future>(limit: Duration, fut: F) -> Result<F::Output, Failure> {
    tokio::pin!(fut);
    if let std::task::Poll::Ready(v) = futures_util::poll!(fut.as_mut()) {
        return Ok(v);
    }
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| Failure::timeout())
}

fn put_u64(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

/// Mu-law bytes in a base64 payload, checked but not decoded.
fn payload_len(payload: &str) -> Result<usize, Failure> {
    let b = payload.as_bytes();
    let pad = b.iter().rev().take(2).take_while(|&&c| c == b'=').count();
    let is_b64 = |&c: &u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    if !b.len().is_multiple_of(4) || !b[..b.len() - pad].iter().all(is_b64) {
        return Err(Failure::protocol("media payload is not base64"));
    }
    Ok(b.len() / 4 * 3 - pad)
}

fn parse_failure(e: twilio::ProtocolError) -> Failure {
    match e {
        // A few fixed phrases ("not JSON", "bad 'media' event"): one row per kind.
        twilio::ProtocolError::Malformed(why) => Failure::protocol(why),
        twilio::ProtocolError::UnknownEvent(name) => Failure::unknown_event(&name),
        twilio::ProtocolError::Binary => Failure::binary(),
    }
}

fn handshake_failure(e: tungstenite::Error, tls: bool) -> Failure {
    use tungstenite::Error as E;
    match e {
        // rustls reports a broken TLS handshake as an I/O error.
        E::Io(io) if tls && io.kind() == std::io::ErrorKind::InvalidData => {
            Failure::new("connect failed: TLS error")
        }
        E::Http(response) => {
            let status = response.status().as_u16();
            Failure {
                status: Some(status),
                ..Failure::new(format!("refused upgrade: {status}"))
            }
        }
        E::Io(io) => Failure::new(format!("connect failed: {}", io.kind())),
        E::Tls(_) => Failure::new("connect failed: TLS error"),
        E::Url(_) => Failure::new("connect failed: bad URL"),
        E::HttpFormat(_) => Failure::new("connect failed: bad HTTP"),
        _ => Failure::new("connect failed: WebSocket handshake"),
    }
}

fn stream_failure(e: tungstenite::Error) -> Failure {
    use std::io::ErrorKind as K;
    use tungstenite::error::ProtocolError as P;
    use tungstenite::Error as E;
    match e {
        E::ConnectionClosed | E::AlreadyClosed | E::Protocol(P::ResetWithoutClosingHandshake) => {
            Failure::closed()
        }
        E::Io(io)
            if matches!(
                io.kind(),
                K::ConnectionReset | K::BrokenPipe | K::UnexpectedEof | K::ConnectionAborted
            ) =>
        {
            Failure::closed()
        }
        E::Io(io) => Failure::new(format!("connection error: {}", io.kind())),
        E::Capacity(_) => Failure::too_large(),
        E::Utf8(_) => Failure {
            close: Some(CloseCode::Invalid),
            ..Failure::protocol("invalid UTF-8")
        },
        _ => Failure::protocol("WebSocket protocol violation"),
    }
}

/// Waits before dialling again after a failure: doubling from [`BACKOFF_MIN`] to [`BACKOFF_MAX`],
/// with jitter so a crowd of users does not redial in step.
#[derive(Debug, Default)]
struct Backoff {
    until: Option<Instant>,
    next: Duration,
}

impl Backoff {
    fn failed(&mut self, now: Instant) {
        self.next = (self.next * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        let jitter = rand::random_range(0.75..=1.25);
        self.until = Some(now + self.next.mul_f64(jitter));
    }

    fn succeeded(&mut self) {
        *self = Backoff::default();
    }
}

/// A user's phone line: the call in progress (if any), the script, and tallies not yet merged.
/// Kept in the user's session data, so a call outlives the transaction that streams it.
pub struct Line<S> {
    call: Option<Call>,
    script: S,
    backoff: Backoff,
    stats: StreamStats,
    records: Vec<Record>,
    names: &'static Names,
}

/// Session data must be `Clone`: the state is shared, and only its own user ever locks it.
pub type Session<T> = Arc<tokio::sync::Mutex<T>>;

/// The user's session state of type `T`, made by `make` on first use.
pub fn session<T: Send + 'static>(user: &mut GooseUser, make: impl FnOnce() -> T) -> Session<T> {
    if let Some(state) = user.get_session_data::<Session<T>>() {
        return state.clone();
    }
    let state = Arc::new(tokio::sync::Mutex::new(make()));
    user.set_session_data(state.clone());
    state
}

impl<S: Script> Line<S> {
    pub fn new(script: S, names: &'static Names) -> Line<S> {
        Line {
            call: None,
            script,
            backoff: Backoff::default(),
            stats: StreamStats::default(),
            records: Vec::new(),
            names,
        }
    }

    /// One transaction of a call: dial if there is no call (after any back-off), then stream
    /// at most [`SLICE`], hanging up when the script says so.
    pub async fn step(
        user: &mut GooseUser,
        shared: &Shared,
        make: impl FnOnce() -> Line<S>,
    ) -> TransactionResult {
        let line = session(user, make);
        let mut line = line.lock().await;
        line.advance(&user.base_url).await;
        line.flush(user, shared).await
    }

    /// The `on_stop` transaction: hangs up the call in progress, if any.
    pub async fn stop(user: &mut GooseUser, shared: &Shared) -> TransactionResult {
        let Some(line) = user.get_session_data::<Session<Line<S>>>().cloned() else {
            return Ok(());
        };
        let mut line = line.lock().await;
        if let Some(call) = line.call.take() {
            line.hang_up(call).await;
        }
        line.flush(user, shared).await
    }

    async fn advance(&mut self, host: &Url) {
        let now = Instant::now();
        if self.call.is_none() {
            if let Some(until) = self.backoff.until.filter(|&u| u > now) {
                tokio::time::sleep_until(until.min(now + SLICE)).await;
                return;
            }
            match Call::dial(host, self.names, &mut self.stats).await {
                Ok(call) => {
                    self.script.begin(Instant::now());
                    self.call = Some(call);
                }
                Err(f) => {
                    self.stats.calls_failed += 1;
                    self.stats.error(f.reason.clone());
                    self.records
                        .push(Record::failed(WS, self.names.connect, now.elapsed(), &f));
                    self.records
                        .push(Record::failed(WS, self.names.call, Duration::ZERO, &f));
                    self.script.end(Some(&f));
                    self.backoff.failed(Instant::now());
                    return;
                }
            }
        }
        let Some(call) = self.call.as_mut() else { return };
        match call.stream(Instant::now() + SLICE, &mut self.script).await {
            Ok(Flow::Continue) => {}
            Ok(Flow::HangUp) => {
                let call = self.call.take().expect("a call is up");
                self.hang_up(call).await;
            }
            Err(f) => {
                let call = self.call.take().expect("a call is up");
                self.failed(call, &f).await;
            }
        }
    }

    async fn hang_up(&mut self, mut call: Call) {
        match call.hang_up().await {
            Ok(()) => {
                self.stats.calls_completed += 1;
                self.records.push(Record::ok(WS, self.names.call, call.age()));
                self.script.end(None);
                self.backoff.succeeded();
                self.absorb(call);
            }
            Err(f) => self.failed(call, &f).await,
        }
    }

    async fn failed(&mut self, mut call: Call, f: &Failure) {
        call.abort(f).await;
        self.stats.calls_failed += 1;
        self.stats.error(f.reason.clone());
        self.records
            .push(Record::failed(WS, self.names.call, call.age(), f));
        self.script.end(Some(f));
        self.backoff.failed(Instant::now());
        self.absorb(call);
    }

    /// Takes a finished call's last tallies.
    fn absorb(&mut self, mut call: Call) {
        self.stats.merge(&call.take_stats());
        self.records.append(&mut call.records);
    }

    /// Merges this slice's tallies into the run's measurements and records its requests.
    async fn flush(&mut self, user: &mut GooseUser, shared: &Shared) -> TransactionResult {
        if let Some(call) = self.call.as_mut() {
            self.stats.merge(&call.take_stats());
            self.records.append(&mut call.records);
        }
        shared.measurements.add_streams(&std::mem::take(&mut self.stats));
        self.script.flush(&shared.measurements, &mut self.records);
        record_all(user, &mut self.records, &shared.measurements.failures).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_payload_is_one_frame() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(SILENCE_B64.as_bytes())
            .unwrap();
        assert_eq!(bytes, vec![SILENCE; FRAME_BYTES]);
        assert_eq!(SILENCE_B64.len(), FRAME_B64);
    }

    #[test]
    fn payload_length_without_decoding() {
        for n in 0..400 {
            let b64 = base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
            assert_eq!(payload_len(&b64).unwrap(), n);
        }
        assert!(payload_len("abc").is_err());
        assert!(payload_len("@@not base64@@!!").is_err());
        assert!(payload_len("AA=A").is_err());
        assert_eq!(payload_len("").unwrap(), 0);
    }

    #[test]
    fn agent_garbage_is_named_in_a_few_words() {
        let reason = |text: &str| Event::parse(text).map_err(parse_failure).unwrap_err();
        for (text, want, code) in [
            (
                "{'event': 'media'}",
                "protocol error: not JSON",
                CloseCode::Protocol,
            ),
            ("[]", "protocol error: not a JSON object", CloseCode::Protocol),
            (
                r#"{"streamSid":"MZ1"}"#,
                "protocol error: no 'event' name",
                CloseCode::Protocol,
            ),
            (
                r#"{"event":"mark","streamSid":"MZ1"}"#,
                "protocol error: bad 'mark' event",
                CloseCode::Protocol,
            ),
            (
                r#"{"event":"transcript"}"#,
                "protocol error: unknown event 'transcript'",
                CloseCode::Protocol,
            ),
        ] {
            let f = reason(text);
            assert_eq!((f.reason.as_str(), f.close), (want, Some(code)), "{text}");
        }
        assert_eq!(
            Failure::too_large().reason,
            "protocol error: message too large (over 1 MiB)"
        );
        assert_eq!(Failure::too_large().close, Some(CloseCode::Size));
        assert_eq!(
            Failure::binary().reason,
            "protocol error: unexpected binary frame"
        );
        assert_eq!(
            Failure::closed().close,
            None,
            "nothing to close on a dropped line"
        );
    }

    #[test]
    fn unknown_event_names_are_bounded() {
        let name = |i: usize| format!("ev{i}\u{7}'x");
        let first = Failure::unknown_event(&name(0)).reason;
        assert_eq!(first, "protocol error: unknown event 'ev0??x'");
        for i in 0..100 {
            let _ = Failure::unknown_event(&name(i));
        }
        assert_eq!(
            Failure::unknown_event("brand-new").reason,
            "protocol error: unknown event (too many kinds to name)"
        );
        // Names seen before the limit keep their own row.
        assert_eq!(Failure::unknown_event(&name(0)).reason, first);
    }

    #[test]
    fn media_messages_are_twilio_json() {
        let mut out = BytesMut::new();
        let speech: Vec<u8> = (0..100).collect();
        for (audio, want) in [
            (None, vec![SILENCE; 160]),
            (Some(&speech[..]), {
                let mut v = speech.clone();
                v.resize(160, SILENCE);
                v
            }),
        ] {
            write_media(&mut out, [7, 5, 80], audio, "MZ1");
            let text = std::str::from_utf8(&out.split()).unwrap().to_string();
            let Event::Media {
                sequence_number,
                media,
                stream_sid,
            } = Event::parse(&text).unwrap()
            else {
                panic!("{text}");
            };
            assert_eq!(
                (sequence_number, media.chunk, media.timestamp),
                (Some(7), Some(5), Some(80))
            );
            assert_eq!(
                (media.track.as_deref(), stream_sid.as_str()),
                (Some("inbound"), "MZ1")
            );
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(media.payload)
                .unwrap();
            assert_eq!(bytes, want);
        }
    }

    #[test]
    fn lateness_is_counted_to_a_tenth_of_a_millisecond() {
        let (mut l, mut stats) = (Lateness::default(), StreamStats::default());
        for late_us in [0, 49, 50, 149, 6_300, 6_349, 6_350, 20_000] {
            l.record(late_us, &mut stats);
        }
        l.fold_into(&mut stats);
        let h = &stats.lateness_us;
        assert_eq!(h.count, 8);
        assert_eq!((h.min, h.max), (0, 20_000));
        assert_eq!(h.count_above(6_300), 2, "{h:?}");
        assert_eq!(h.sum, 100 + 100 + 6_300 + 6_300 + 6_400 + 20_000);
        assert!(l.counts.iter().all(|&c| c == 0));
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        let mut out = BytesMut::new();
        for n in [0u64, 7, 10, 1234567890, u64::MAX] {
            out.clear();
            put_u64(&mut out, n);
            assert_eq!(std::str::from_utf8(&out).unwrap(), n.to_string());
        }
    }

    #[test]
    fn media_urls_follow_the_host() {
        let url = media_url(&"http://127.0.0.1:8080/x?y=1".parse().unwrap(), "CA1").unwrap();
        assert_eq!(url.as_str(), "ws://127.0.0.1:8080/webhooks/twilio/media/CA1");
        let url = media_url(&"https://agent.example/".parse().unwrap(), "CA1").unwrap();
        assert_eq!(url.as_str(), "wss://agent.example/webhooks/twilio/media/CA1");
        assert!(media_url(&"ftp://x/".parse().unwrap(), "CA1").is_err());
    }

    #[test]
    fn sids_look_like_twilio_ones() {
        let s = sid("MZ");
        assert_eq!(s.len(), 34);
        assert!(s.starts_with("MZ") && s[2..].chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn marks_wait_for_queued_audio_and_clear_releases_them() {
        let mut sp = Loudspeaker::default();
        let t = Instant::now();
        sp.queue(t, 1600); // 200 ms
        sp.mark(t, "a".into()).unwrap();
        assert_eq!(sp.next_due(), Some(t + Duration::from_millis(200)));
        assert!(sp.pop_due(t + Duration::from_millis(199)).is_none());
        assert_eq!(sp.pop_due(t + Duration::from_millis(200)).unwrap().0, "a");
        // Audio queued after playback ran dry starts when it arrives.
        let later = t + Duration::from_secs(1);
        sp.queue(later, 800);
        sp.mark(later, "b".into()).unwrap();
        assert_eq!(sp.next_due(), Some(later + Duration::from_millis(100)));
        sp.clear(later);
        assert_eq!(sp.pop_due(later).unwrap().0, "b");
        // A mark with nothing queued is due at once.
        sp.mark(later, "c".into()).unwrap();
        assert!(sp.pop_due(later).is_some());
    }
}
