//! The agent's side of Twilio Media Streams at `/webhooks/twilio/media/{call_sid}`.
//!
//! [`upgrade`] checks the WebSocket handshake and answers 101 (by hand: axum's `ws` feature
//! would pull a second tungstenite), once [`gate`] has admitted the stream; a [`session`] then
//! runs the call on the upgraded connection. A session validates the event order (`connected`,
//! `start`, `media`/`mark`..., `stop`), listens with the VAD of [`super::voice`], and answers
//! each utterance after the simulated pipeline with a burst of mu-law `media` frames (TTS is
//! faster than real time) followed at once by a `mark` `answer-N`. The answer then "plays" at
//! the caller for its length; caller speech before that and before the mark comes back is a
//! barge-in, answered with `clear`. How the stream ends is [`close`]'s.
//!
//! Callers are taken as test clients and real Twilio send, not only as the protocol has it: a
//! `start` with no `connected` before it, and events missing fields the agent can do without
//! ([`lenient`]: a bare `stop`, a `media` with no `streamSid`), go on and are counted as
//! deviations. `--strict-protocol` closes the stream for them instead (1002, with the reason).
//! Sound that never pauses (noise) is cut into utterances of `--max-utterance-ms` and answered,
//! one at a time: what goes on through an answer is not answered until that answer has played.
//!
//! Silent calls are the common case, so a `media` frame costs a borrowed JSON parse
//! ([`inbound`]), a base64 decode into a reused buffer and a table-driven RMS: no allocation,
//! no timer, no lock shared with other streams.
//!
//! Faults, each decided per stream (per answer for `--ai-mute-rate`):
//! - `--max-streams`: the upgrade is refused with 503 above it ([`gate`]).
//! - `--drop-rate`: the call is dropped 1-5 s in by resetting its TCP connection, with no close
//!   frame.
//! - `--ws-garbage-rate`, `--ws-oversized-rate`: the agent sends malformed, unknown or far too
//!   large messages ([`bad_messages`]), then the call goes on as usual.
//! - `--ai-mute-rate` ([`super::voice::mutes`]): the agent hears the utterance and never answers
//!   it.
//!
//! The stats' `faults` count the last three as they happen: `ws_garbage` for each garbage
//! message and `ws_oversized` for each oversized one as it starts going out (whether or not the
//! caller takes it all), `ai_muted` for each utterance left unanswered.

mod bad_messages;
mod close;
mod gate;
mod inbound;
mod lenient;
mod session;
mod upgrade;

pub(crate) use bad_messages::BadMessageTurns;
pub(crate) use gate::StreamGate;
pub(crate) use upgrade::media_stream;
