//! One media stream's session: the Media Streams event order (`connected`, `start`,
//! `media`/`mark`..., `stop`) checked message by message (a `start` with no `connected` before
//! it, and frames only the [`lenient`] read accepts, counted as deviations unless
//! `--strict-protocol`), the caller's speech heard through the VAD, the answers sent and played,
//! and the per-stream faults (drops, bad messages, muted answers) carried out at their time.

use super::bad_messages::{self, BadMessage, BadMessageQueue};
use super::close::Abortable;
use super::close::{close, End};
use super::inbound::{self, CallerEvent};
use super::lenient;
use crate::protocol::twilio::Mark;
use crate::protocol::{mulaw, Event};
use crate::simulator::conformance::{Deviation, Fault};
use crate::simulator::voice::{self, Answer, Vad, VadEvent};
use crate::simulator::{chance, Sim};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

/// How long a send (an answer burst, a bad message) may take before the caller counts as gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// A caller must have sent `start` this soon after the upgrade, and may not fall silent (send
/// nothing at all, not even silence frames) for longer than the idle limit: a stalled client
/// must not hold a stream's place forever.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a call is in the Media Streams event order.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    AwaitConnected,
    AwaitStart,
    Streaming,
}

/// An answer the caller is hearing.
struct Playing {
    number: u64,
    until: Instant,
}

/// One media stream's state.
pub(super) struct StreamSession {
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
    /// Bad messages still to send (`--ws-garbage-rate`, `--ws-oversized-rate`).
    bad: BadMessageQueue,
    opened_at: Instant,
    last_heard: Instant,
}

impl StreamSession {
    pub(super) fn new(sim: &Arc<Sim>) -> StreamSession {
        let mut rng = rand::rng();
        let drop_at = chance(&mut rng, sim.opts.drop_rate)
            .then(|| Instant::now() + Duration::from_secs_f64(rng.random_range(1.0..=5.0)));
        let bad = sim
            .bad_messages
            .plan(sim.opts.ws_garbage_rate, sim.opts.ws_oversized_rate, &mut rng);
        StreamSession {
            sim: sim.clone(),
            phase: Phase::AwaitConnected,
            stream_sid: String::new(),
            media_prefix: String::new(),
            last_seq: None,
            vad: Vad::new(sim.opts.max_utterance_ms),
            audio: Vec::with_capacity(mulaw::FRAME_BYTES),
            pending: None,
            playing: None,
            answers: 0,
            drop_at,
            bad,
            opened_at: Instant::now(),
            last_heard: Instant::now(),
        }
    }

    pub(super) async fn run<S>(mut self, mut ws: WebSocketStream<S>, shutdown: &CancellationToken)
    where
        S: AsyncRead + AsyncWrite + Unpin + Abortable,
    {
        // One timer for the session, re-armed only when a deadline comes earlier than the armed
        // one; a timer that fires early just re-arms (the VAD deadline moves on every voiced frame).
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        let shutdown = shutdown.cancelled();
        tokio::pin!(timer, shutdown);
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
        close(ws, end, &self.sim.stats).await;
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.drop_at,
            self.bad.deadline(),
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
        if self.bad.is_due(now) {
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
        let strict = self.sim.opts.strict_protocol;
        let event = match inbound::read(text) {
            Ok(event) => event,
            Err(Fault::Malformed) if !strict => match lenient::read(text) {
                Ok((event, deviation)) => {
                    self.sim.stats.deviation(deviation);
                    event
                }
                Err(fault) => return Some(End::Broken(fault)),
            },
            Err(fault) => return Some(End::Broken(fault)),
        };
        match event {
            CallerEvent::Connected => {
                if self.phase != Phase::AwaitConnected {
                    return Some(End::Broken(Fault::UnexpectedConnected));
                }
                self.phase = Phase::AwaitStart;
                None
            }
            CallerEvent::Start {
                sequence_number,
                stream_sid,
                media_format,
            } => {
                match self.phase {
                    Phase::AwaitConnected if strict => return Some(End::Broken(Fault::StartBeforeConnected)),
                    Phase::AwaitConnected => self.sim.stats.deviation(Deviation::StartWithoutConnected),
                    Phase::Streaming => return Some(End::Broken(Fault::DuplicateStart)),
                    Phase::AwaitStart => {}
                }
                if !inbound::is_phone_audio(&media_format) {
                    return Some(End::Broken(Fault::BadMediaFormat));
                }
                self.check_sequence(sequence_number);
                self.media_prefix = format!(
                    r#"{{"event":"media","streamSid":{},"media":{{"payload":""#,
                    serde_json::Value::from(stream_sid.as_str())
                );
                self.stream_sid = stream_sid;
                self.phase = Phase::Streaming;
                self.bad.start(Instant::now());
                None
            }
            CallerEvent::Media {
                sequence_number,
                stream_sid,
                payload,
            } => {
                self.on_media(sequence_number, stream_sid.as_deref(), &payload, ws)
                    .await
            }
            CallerEvent::Mark {
                sequence_number,
                stream_sid,
                name,
            } => {
                if let Err(fault) = self.check_streaming(stream_sid.as_deref(), Fault::MarkBeforeStart) {
                    return Some(End::Broken(fault));
                }
                self.check_sequence(sequence_number);
                self.on_mark(&name);
                None
            }
            CallerEvent::Stop {
                sequence_number,
                stream_sid,
            } => {
                if let Err(fault) = self.check_streaming(stream_sid.as_deref(), Fault::StopBeforeStart) {
                    return Some(End::Broken(fault));
                }
                self.check_sequence(sequence_number);
                Some(End::Stopped)
            }
            CallerEvent::Clear => Some(End::Broken(Fault::UnexpectedClear)),
        }
    }

    /// Whether an event may come now, on this call's stream (one without a `streamSid`, let
    /// pass by the lenient read, is taken as on it).
    fn check_streaming(&self, stream_sid: Option<&str>, before_start: Fault) -> Result<(), Fault> {
        if self.phase != Phase::Streaming {
            Err(before_start)
        } else if stream_sid.is_some_and(|sid| sid != self.stream_sid) {
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
        stream_sid: Option<&str>,
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
                let playing = self.playing.as_ref().is_some_and(|p| now < p.until);
                if self.pending.is_some() || playing {
                    // Only sound going on through an answer without a pause gets here (speech
                    // starting anew is a barge-in, which stops the answer): the agent finishes
                    // its answer rather than talk over it or drop it for the next.
                    streams.answers_skipped.fetch_add(1, Relaxed);
                    return None;
                }
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
            mark: Mark {
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

    /// Sends the next bad message, if one is left, and schedules the one after.
    async fn send_bad<S>(&mut self, ws: &mut WebSocketStream<S>) -> Option<End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let bad = self.bad.take(Instant::now())?;
        if let BadMessage::Oversized { fragmented } = bad {
            return self.send_oversized(fragmented, ws).await;
        }
        self.sim.stats.faults.ws_garbage.fetch_add(1, Relaxed);
        let messages = bad_messages::on_the_wire(bad, &self.stream_sid, &self.media_prefix);
        self.send(messages, ws).await
    }

    /// Sends the oversized message, trickled. Counted as it starts: a caller that refuses it
    /// mostly hangs up before the last piece.
    async fn send_oversized<S>(&mut self, fragmented: bool, ws: &mut WebSocketStream<S>) -> Option<End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.sim.stats.faults.ws_oversized.fetch_add(1, Relaxed);
        let text = bad_messages::oversized(&self.media_prefix);
        let sent =
            tokio::time::timeout(SEND_TIMEOUT, bad_messages::write_oversized(&text, fragmented, ws)).await;
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
}

#[cfg(test)]
mod tests {
    use super::super::bad_messages::{GARBAGE_MESSAGES, OVERSIZED_TRICKLE};
    use super::super::upgrade::ws_config;
    use super::*;
    use crate::simulator::ServeOptions;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

    #[test]
    fn stalled_callers_have_a_deadline() {
        let sim = Arc::new(Sim::new(
            ServeOptions::for_tests(),
            "127.0.0.1:1".parse().unwrap(),
        ));
        let mut session = StreamSession::new(&sim);
        assert_eq!(session.next_deadline(), Some(session.opened_at + START_TIMEOUT));
        session.phase = Phase::Streaming;
        session.last_heard += Duration::from_secs(3);
        assert_eq!(session.next_deadline(), Some(session.last_heard + IDLE_TIMEOUT));
        // Sooner deadlines come first.
        session.drop_at = Some(session.last_heard + Duration::from_secs(2));
        assert_eq!(session.next_deadline(), session.drop_at);
    }

    /// The trickled oversized message is a well-formed WebSocket message, whole or fragmented,
    /// and the stream goes on after it.
    #[tokio::test]
    async fn oversized_messages_arrive_whole_for_a_caller_that_takes_them() {
        let sim = Arc::new(Sim::new(
            ServeOptions::for_tests(),
            "127.0.0.1:1".parse().unwrap(),
        ));
        let mut session = StreamSession::new(&sim);
        session.stream_sid = "MZ1".into();
        session.media_prefix = r#"{"event":"media","streamSid":"MZ1","media":{"payload":""#.into();
        let want = bad_messages::oversized(&session.media_prefix);
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
            ServeOptions {
                ws_garbage_rate: 1.0,
                ai_mute_rate: 1.0,
                ..ServeOptions::for_tests()
            },
            "127.0.0.1:1".parse().unwrap(),
        ));
        let faults = || sim.stats_json()["faults"].clone();
        let mut session = StreamSession::new(&sim);
        assert_eq!(session.bad.len(), GARBAGE_MESSAGES.len());
        assert_eq!(faults()["ws_garbage"], 0, "counted when sent, not when planned");
        session.stream_sid = "MZ1".into();
        session.media_prefix = r#"{"event":"media","streamSid":"MZ1","media":{"payload":""#.into();
        let (a, b) = tokio::io::duplex(64 << 10);
        let mut server = WebSocketStream::from_raw_socket(a, Role::Server, Some(ws_config())).await;
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        for sent in 1..=GARBAGE_MESSAGES.len() {
            assert!(session.send_bad(&mut server).await.is_none());
            assert!(client.next().await.unwrap().is_ok());
            assert_eq!(faults()["ws_garbage"], sent);
        }
        // Nothing left to send: nothing more counted.
        assert!(session.send_bad(&mut server).await.is_none());
        assert_eq!(session.bad.deadline(), None);
        assert_eq!(faults()["ws_garbage"], GARBAGE_MESSAGES.len());

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
}
