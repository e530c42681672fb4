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
//! The frame path is allocation-free and serde-free: `media` messages are written by the
//! protocol layer's [`media_writer`](crate::protocol::media_writer), and lateness is counted
//! inline.
//!
//! # When the agent misbehaves
//!
//! Every way a call can go wrong ends that call (never the user, never the run) with one failed
//! row under the call's name in Goose's reports, its reason a [`CallFailure`] (a small fixed set
//! of texts), counted in the run's failure tally ([`record_all`]) and in the run's stream errors;
//! then the user dials again after a back-off (half a second doubling to 8 s), so a broken agent
//! is never hammered.
//!
//! - Upgrade refused: `refused upgrade: 503` (the connect row fails too, with the status).
//! - The agent ends the call before we hang up (a TCP reset, end of stream, or its close frame):
//!   `closed by server mid-call`.
//! - Anything the agent may not send, as Twilio sees it (error 31924: only `media`, `mark` and
//!   `clear` go from the agent to Twilio), is a protocol error and ends the call, answered with a
//!   close frame that names it: `protocol error: not JSON`, `... not a JSON object`, `... no
//!   'event' name`, `... bad 'media' event` (a known event with a missing or mistyped field),
//!   `... unknown event 'NAME'` (the first [`MAX_UNKNOWN_EVENTS`] names of a run; later ones
//!   share one reason), `... unexpected 'stop' event` (one only Twilio sends), `... media payload
//!   is not base64`, `... wrong streamSid`, `... unexpected binary frame`, `... invalid UTF-8`.
//!   Unknown events are not skipped: an agent that sends them is broken, and a skipped event
//!   would hide it (a script that did skip them would still have to count them somewhere).
//! - A message over [`MAX_AGENT_MESSAGE`] (1 MiB; the agent's legitimate messages are a few KB):
//!   `protocol error: message too large (over 1 MiB)`, detected from the frame header (or as a
//!   fragmented message reaches the limit), so no call ever buffers more than that.
//! - A send that cannot complete within 5 s (the agent stopped reading): `timeout`.

mod backoff;
mod connection;
mod failure;
mod lateness;
mod loudspeaker;
mod unknown_events;

pub use connection::{media_url, Call};
pub use failure::{CallFailure, ConnectFailure, ProtocolFailure};
pub use unknown_events::UnknownEvents;

use crate::measure::failures::FailureTally;
use crate::measure::{Measurements, StreamStats};
use crate::scenarios::Shared;
use backoff::Backoff;
use goose::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// Media Streams' frame period.
pub const FRAME: Duration = Duration::from_millis(crate::protocol::mulaw::FRAME_MS);
/// The longest stretch of a call one transaction streams: how soon a stopping user hangs up.
pub const SLICE: Duration = Duration::from_secs(1);
/// Largest message (and frame) accepted from the agent: a whole minute of answer audio in one
/// `media` message fits; anything bigger fails the call before it is buffered.
pub const MAX_AGENT_MESSAGE: usize = 1 << 20;
/// Unknown event names a run reports by name; further names share one reason, so an agent
/// inventing names cannot grow the reports without bound.
pub const MAX_UNKNOWN_EVENTS: usize = 16;

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

    pub fn failed(method: &'static str, name: &'static str, took: Duration, f: &CallFailure) -> Record {
        Record {
            method,
            name,
            took,
            error: Some(f.to_string()),
            status: f.status(),
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
    fn end(&mut self, failure: Option<&CallFailure>);
    /// Hands over what the script measured since the last flush.
    fn flush(&mut self, measurements: &Measurements, records: &mut Vec<Record>);
}

/// A user's state kept in its Goose session data. Session data must be `Clone`: the state is
/// shared, and only its own user ever locks it.
pub type UserState<T> = Arc<tokio::sync::Mutex<T>>;

/// The user's state of type `T`, made by `make` on first use.
pub fn user_state<T: Send + 'static>(user: &mut GooseUser, make: impl FnOnce() -> T) -> UserState<T> {
    if let Some(state) = user.get_session_data::<UserState<T>>() {
        return state.clone();
    }
    let state = Arc::new(tokio::sync::Mutex::new(make()));
    user.set_session_data(state.clone());
    state
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
        let line = user_state(user, make);
        let mut line = line.lock().await;
        line.advance(&user.base_url, &shared.unknown_events).await;
        line.flush(user, shared).await
    }

    /// The `on_stop` transaction: hangs up the call in progress, if any.
    pub async fn stop(user: &mut GooseUser, shared: &Shared) -> TransactionResult {
        let Some(line) = user.get_session_data::<UserState<Line<S>>>().cloned() else {
            return Ok(());
        };
        let mut line = line.lock().await;
        if let Some(call) = line.call.take() {
            line.hang_up(call).await;
        }
        line.flush(user, shared).await
    }

    async fn advance(&mut self, host: &Url, unknown_events: &UnknownEvents) {
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
                    self.stats.error(f.to_string());
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
        match call
            .stream(Instant::now() + SLICE, &mut self.script, unknown_events)
            .await
        {
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

    async fn failed(&mut self, mut call: Call, f: &CallFailure) {
        call.abort(f).await;
        self.stats.calls_failed += 1;
        self.stats.error(f.to_string());
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
