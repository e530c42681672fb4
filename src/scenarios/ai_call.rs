//! The "AI call" scenario: a caller who speaks, timing the agent's spoken answers.
//!
//! Two modes (`--ai-mode`):
//! - **stream**: a media-stream call that speaks. Each turn sends one utterance paced in real
//!   time, then silence (a live phone line), and times the agent's answer: time to first audio
//!   (end of the utterance to the agent's first `media` frame) and turn time (to the last frame
//!   before the agent's `mark`). RTF = turn time / utterance duration. Once the answer has
//!   played (its mark echoed), a pause of U(0.5, 1.5) s and the next turn, until the call's
//!   duration; then `stop`. A turn unanswered within `--turn-timeout` (15 s after the caller
//!   stopped speaking unless set) fails as "no answer within 15s" ("answer not finished within
//!   15s" when audio came but no `mark`), and the call goes on: the usual pause, then the next
//!   turn, the call still ending at its duration. A turn cut short by the call failing fails with the
//!   call's reason; one cut short by the run ending is not counted.
//! - **mock**: the original suite's in-process `MockAudioProcessor`, no server at all: the
//!   original's STT -> LLM -> TTS latency model slept stage by stage, each stage timed, RTF = total / audio duration.
//!
//! Both run as short transactions (at most [`SLICE`] each) so a stopping run ends calls at once,
//! record each turn as Goose custom requests (method "AI"), and keep every turn in
//! [`AiStats`] for the post-run analysis.

use super::call::{self, CallFailure, Flow, Heard, Line, Names, Record, Script, SLICE};
use super::Shared;
use crate::ai_model::{self, StageLatencies};
use crate::config::plan::AiMode;
use crate::config::utterances::Utterance;
use crate::measure::{AiStats, Measurements, Turn};
use crate::protocol::mulaw::FRAME_BYTES;
use goose::prelude::*;
use rand::seq::IndexedRandom;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The scenario's name, as registered with Goose.
pub const SCENARIO: &str = "AI call";
/// The method label of AI rows in Goose's reports.
pub const AI: &str = "AI";

pub static NAMES: Names = Names {
    connect: "AI call: connect",
    call: "AI call: call",
    mark: "AI call: mark echo",
};

const TURN: &str = "turn";
const TTFA: &str = "time to first audio";
const MOCK_CALL: &str = "mock call";
const STAGES: [&str; 3] = ["stt", "llm", "tts"];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The pause before a turn: the original's U(0.5, 1.5) s, or none with `--no-wait`.
fn pause(no_wait: bool) -> Duration {
    if no_wait {
        Duration::ZERO
    } else {
        ai_model::pause_between_turns(&mut rand::rng())
    }
}

/// Where a stream-mode conversation is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// No call.
    Idle,
    /// Silence until `until`, then the next turn (or the end of the call).
    Pausing { until: Instant },
    /// Sending utterance `utt`, `pos` bytes in.
    Speaking { utt: usize, pos: usize },
    /// The utterance ended at `ended`; the agent's answer is awaited.
    Waiting {
        utt: usize,
        ended: Instant,
        first: Option<Instant>,
        last: Option<Instant>,
    },
    /// The answer is timed; it plays until its mark is echoed.
    Playing,
    /// The call is over: hang up.
    Done,
}

/// The stream-mode caller.
struct Conversation {
    utterances: Arc<Vec<Utterance>>,
    measurements: Arc<Measurements>,
    duration: Duration,
    no_wait: bool,
    /// A turn whose answer has not ended (with the agent's `mark`) this long after the caller
    /// stopped speaking fails, and the call goes on with the next turn.
    turn_timeout: Duration,
    /// When the call should end (no turn starts that would not finish by then).
    ends: Option<Instant>,
    phase: Phase,
    stats: AiStats,
    records: Vec<Record>,
}

impl Conversation {
    fn audio_ms(&self, utt: usize) -> f64 {
        self.utterances[utt].mulaw.len() as f64 / 8.0
    }

    fn next_turn(&mut self, now: Instant) -> Flow {
        let utt = rand::random_range(0..self.utterances.len());
        let speech = Duration::from_secs_f64(self.audio_ms(utt) / 1000.0);
        match self.ends {
            Some(ends) if now + speech <= ends => {
                self.phase = Phase::Speaking { utt, pos: 0 };
                Flow::Continue
            }
            _ => {
                self.phase = Phase::Done;
                Flow::HangUp
            }
        }
    }

    fn answered(&mut self, utt: usize, ended: Instant, first: Instant, last: Instant) {
        let (ttfa, took) = (
            first.saturating_duration_since(ended),
            last.saturating_duration_since(ended),
        );
        let audio_ms = self.audio_ms(utt);
        self.stats.turns.push(Turn {
            at_s: self.measurements.elapsed_s(),
            audio_ms,
            ok: true,
            rtf: ms(took) / audio_ms,
            ttfa_ms: Some(ms(ttfa)),
            turn_ms: Some(ms(took)),
            ..Turn::default()
        });
        self.records.push(Record::ok(AI, TURN, took));
        self.records.push(Record::ok(AI, TTFA, ttfa));
        self.phase = Phase::Playing;
    }

    /// A turn that got no (complete) answer.
    fn turn_failed(&mut self, now: Instant, utt: usize, since: Instant, failure: &CallFailure) {
        self.stats.turns.push(Turn {
            at_s: self.measurements.elapsed_s(),
            audio_ms: self.audio_ms(utt),
            ok: false,
            ..Turn::default()
        });
        self.stats.error(failure.to_string());
        self.records.push(Record::failed(
            AI,
            TURN,
            now.saturating_duration_since(since),
            failure,
        ));
    }
}

impl Script for Conversation {
    fn begin(&mut self, now: Instant) {
        self.stats.calls += 1;
        self.ends = Some(now + self.duration);
        // The caller listens a moment after pick-up, as between turns.
        self.phase = Phase::Pausing {
            until: now + pause(self.no_wait),
        };
    }

    fn next_frame(&mut self, now: Instant) -> Option<&[u8]> {
        let Phase::Speaking { utt, pos } = self.phase else {
            return None;
        };
        let len = self.utterances[utt].mulaw.len();
        let end = (pos + FRAME_BYTES).min(len);
        self.phase = if end >= len {
            Phase::Waiting {
                utt,
                ended: now,
                first: None,
                last: None,
            }
        } else {
            Phase::Speaking { utt, pos: end }
        };
        Some(&self.utterances[utt].mulaw[pos..end])
    }

    fn heard(&mut self, now: Instant, what: Heard) {
        match (self.phase, what) {
            (
                Phase::Waiting {
                    utt, ended, first, ..
                },
                Heard::Audio(_),
            ) => {
                self.phase = Phase::Waiting {
                    utt,
                    ended,
                    first: first.or(Some(now)),
                    last: Some(now),
                };
            }
            (
                Phase::Waiting {
                    utt,
                    ended,
                    first: Some(first),
                    last: Some(last),
                },
                Heard::Mark,
            ) => self.answered(utt, ended, first, last),
            (Phase::Playing, Heard::Played) => {
                self.phase = Phase::Pausing {
                    until: now + pause(self.no_wait),
                };
            }
            _ => {}
        }
    }

    fn poll(&mut self, now: Instant) -> Flow {
        if self.ends.is_some_and(|e| now >= e + self.turn_timeout) {
            // Past the call's end with an answer still playing: enough.
            self.phase = Phase::Done;
        }
        match self.phase {
            Phase::Done => Flow::HangUp,
            Phase::Pausing { until } if now >= until => self.next_turn(now),
            Phase::Waiting {
                utt, ended, first, ..
            } if now >= ended + self.turn_timeout => {
                let within = self.turn_timeout;
                let failure = if first.is_some() {
                    CallFailure::AnswerNotFinished { within }
                } else {
                    CallFailure::NoAnswer { within }
                };
                self.turn_failed(now, utt, ended, &failure);
                self.phase = Phase::Pausing {
                    until: now + pause(self.no_wait),
                };
                Flow::Continue
            }
            _ => Flow::Continue,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let hard_stop = self.ends.map(|e| e + self.turn_timeout);
        let phase = match self.phase {
            Phase::Pausing { until } => Some(until),
            Phase::Waiting { ended, .. } => Some(ended + self.turn_timeout),
            _ => None,
        };
        phase.into_iter().chain(hard_stop).min()
    }

    fn end(&mut self, failure: Option<&CallFailure>) {
        if let Some(f) = failure {
            let now = Instant::now();
            match self.phase {
                Phase::Speaking { utt, .. } => self.turn_failed(now, utt, now, f),
                Phase::Waiting { utt, ended, .. } => self.turn_failed(now, utt, ended, f),
                // The call as a whole failed (to connect, or between turns).
                _ => self.stats.error(f.to_string()),
            }
        }
        // A turn cut short by a hang-up (the run ending) is not counted.
        self.phase = Phase::Idle;
        self.ends = None;
    }

    fn flush(&mut self, measurements: &Measurements, records: &mut Vec<Record>) {
        if self.stats.calls > 0 || !self.stats.turns.is_empty() || !self.stats.errors.is_empty() {
            measurements.add_ai(&std::mem::take(&mut self.stats));
        }
        records.append(&mut self.records);
    }
}

fn new_conversation(shared: &Shared) -> Line<Conversation> {
    let script = Conversation {
        utterances: shared.utterances.clone(),
        measurements: shared.measurements.clone(),
        duration: shared.plan.ai_call_duration,
        no_wait: shared.plan.no_wait,
        turn_timeout: shared.plan.turn_timeout,
        ends: None,
        phase: Phase::Idle,
        stats: AiStats::default(),
        records: Vec::new(),
    };
    Line::new(script, &NAMES)
}

/// One mock turn: the model's stage latencies, slept one stage after the other.
#[derive(Debug)]
struct MockTurn {
    audio_ms: u64,
    planned: [Duration; 3],
    took: [Duration; 3],
    stage: usize,
    stage_started: Instant,
}

impl MockTurn {
    /// The original mock's turn: a random utterance and audio duration, the original's latency model.
    fn new(now: Instant) -> MockTurn {
        let rng = &mut rand::rng();
        let text = ai_model::UTTERANCES.choose(rng).copied().unwrap_or("Ja.");
        let audio_ms = ai_model::AUDIO_DURATIONS_MS.choose(rng).copied().unwrap_or(1000);
        let answer = ai_model::answer_text(text);
        let StageLatencies { stt, llm, tts } = ai_model::latencies(rng, audio_ms as f64, text, &answer, 1.0);
        MockTurn {
            audio_ms,
            planned: [stt, llm, tts],
            took: [Duration::ZERO; 3],
            stage: 0,
            stage_started: now,
        }
    }

    fn stage_ends(&self) -> Instant {
        self.stage_started + self.planned[self.stage]
    }
}

#[derive(Debug)]
enum MockPhase {
    Pausing { until: Instant },
    Turn(MockTurn),
}

/// The mock-mode caller: no server, the pipeline's latencies slept in process.
struct Mock {
    measurements: Arc<Measurements>,
    duration: Duration,
    no_wait: bool,
    /// When the current call began.
    call: Option<Instant>,
    phase: MockPhase,
    stats: AiStats,
    records: Vec<Record>,
}

impl Mock {
    /// Runs the mock for at most one slice.
    async fn step(&mut self) {
        let slice_end = Instant::now() + SLICE;
        loop {
            let now = Instant::now();
            if now >= slice_end {
                return;
            }
            let Some(call) = self.call else {
                self.call = Some(now);
                self.stats.calls += 1;
                self.phase = MockPhase::Pausing {
                    until: now + pause(self.no_wait),
                };
                continue;
            };
            let wake = match &mut self.phase {
                MockPhase::Pausing { until } if now >= *until => {
                    if now >= call + self.duration {
                        self.records
                            .push(Record::ok(AI, MOCK_CALL, now.saturating_duration_since(call)));
                        self.call = None;
                    } else {
                        self.phase = MockPhase::Turn(MockTurn::new(now));
                    }
                    continue;
                }
                MockPhase::Pausing { until } => *until,
                MockPhase::Turn(turn) if now >= turn.stage_ends() => {
                    turn.took[turn.stage] = now.saturating_duration_since(turn.stage_started);
                    turn.stage += 1;
                    turn.stage_started = now;
                    if turn.stage == STAGES.len() {
                        self.turn_done(now);
                    }
                    continue;
                }
                MockPhase::Turn(turn) => turn.stage_ends(),
            };
            tokio::time::sleep_until(wake.min(slice_end)).await;
        }
    }

    fn turn_done(&mut self, now: Instant) {
        let MockPhase::Turn(turn) = &self.phase else {
            return;
        };
        let total: Duration = turn.took.iter().sum();
        self.stats.turns.push(Turn {
            at_s: self.measurements.elapsed_s(),
            audio_ms: turn.audio_ms as f64,
            ok: true,
            rtf: ms(total) / turn.audio_ms as f64,
            stt_ms: Some(ms(turn.took[0])),
            llm_ms: Some(ms(turn.took[1])),
            tts_ms: Some(ms(turn.took[2])),
            ..Turn::default()
        });
        for (stage, took) in STAGES.iter().zip(turn.took) {
            self.records.push(Record::ok(AI, stage, took));
        }
        self.records.push(Record::ok(AI, TURN, total));
        self.phase = MockPhase::Pausing {
            until: now + pause(self.no_wait),
        };
    }

    /// The run is ending: the call in progress ends with it (an unfinished turn is not counted).
    fn stop(&mut self) {
        if let Some(call) = self.call.take() {
            self.records.push(Record::ok(AI, MOCK_CALL, call.elapsed()));
        }
    }

    async fn flush(&mut self, user: &mut GooseUser) -> TransactionResult {
        if self.stats.calls > 0 || !self.stats.turns.is_empty() {
            self.measurements.add_ai(&std::mem::take(&mut self.stats));
        }
        call::record_all(user, &mut self.records, &self.measurements.failures).await
    }
}

fn new_mock(shared: &Shared) -> Mock {
    Mock {
        measurements: shared.measurements.clone(),
        duration: shared.plan.ai_call_duration,
        no_wait: shared.plan.no_wait,
        call: None,
        phase: MockPhase::Pausing {
            until: Instant::now(),
        },
        stats: AiStats::default(),
        records: Vec::new(),
    }
}

async fn mock_step(user: &mut GooseUser, shared: &Shared) -> TransactionResult {
    let mock = call::user_state(user, || new_mock(shared));
    let mut mock = mock.lock().await;
    mock.step().await;
    mock.flush(user).await
}

async fn mock_stop(user: &mut GooseUser) -> TransactionResult {
    let Some(mock) = user.get_session_data::<call::UserState<Mock>>().cloned() else {
        return Ok(());
    };
    let mut mock = mock.lock().await;
    mock.stop();
    mock.flush(user).await
}

fn invalid(option: &str, value: String, detail: &str) -> GooseError {
    GooseError::InvalidOption {
        option: option.into(),
        value,
        detail: detail.into(),
    }
}

/// Checks what a stream-mode AI call needs: something to say, and time to say it.
fn check_stream(shared: &Shared) -> Result<(), GooseError> {
    if shared.utterances.is_empty() {
        return Err(invalid(
            "--audio-dir",
            "0 utterances".into(),
            "AI calls need at least one utterance",
        ));
    }
    if let Some(u) = shared.utterances.iter().find(|u| u.mulaw.is_empty()) {
        return Err(invalid(
            "--audio-dir",
            u.text.clone(),
            "an utterance has no audio",
        ));
    }
    Ok(())
}

/// The "AI call" scenario, in the plan's `ai_mode`. Register it with weight = the number of
/// concurrent AI calls.
pub fn ai_call(shared: &Arc<Shared>) -> Result<Scenario, GooseError> {
    if shared.plan.ai_call_duration.is_zero() {
        return Err(invalid(
            "ai_calls.duration",
            "0s".into(),
            "an AI call must last at least one second",
        ));
    }
    let scenario = Scenario::new(SCENARIO);
    Ok(match shared.plan.ai_mode {
        AiMode::Stream => {
            check_stream(shared)?;
            let talk = super::transaction(shared, "talk", |user, shared| {
                Box::pin(async move { Line::step(user, &shared, || new_conversation(&shared)).await })
            });
            let hang_up = super::transaction(shared, "hang up", |user, shared| {
                Box::pin(async move { Line::<Conversation>::stop(user, &shared).await })
            })
            .set_on_stop();
            scenario.register_transaction(talk).register_transaction(hang_up)
        }
        AiMode::Mock => {
            let talk = super::transaction(shared, "talk", |user, shared| {
                Box::pin(async move { mock_step(user, &shared).await })
            });
            let hang_up = super::transaction(shared, "hang up", |user, _shared| Box::pin(mock_stop(user)))
                .set_on_stop();
            scenario.register_transaction(talk).register_transaction(hang_up)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TURN_TIMEOUT: Duration = crate::config::plan::DEFAULT_TURN_TIMEOUT;

    fn conversation(speech_bytes: usize) -> Conversation {
        Conversation {
            utterances: Arc::new(vec![Utterance {
                text: "a".into(),
                mulaw: vec![0x10; speech_bytes],
            }]),
            measurements: Arc::new(Measurements::default()),
            duration: Duration::from_secs(60),
            no_wait: true,
            turn_timeout: TURN_TIMEOUT,
            ends: None,
            phase: Phase::Idle,
            stats: AiStats::default(),
            records: Vec::new(),
        }
    }

    /// Speaks the whole utterance, one frame per 20 ms from `t`; returns when it ended.
    fn speak(c: &mut Conversation, mut t: Instant) -> Instant {
        assert_eq!(c.poll(t), Flow::Continue);
        let mut frames = 0;
        while matches!(c.phase, Phase::Speaking { .. }) {
            assert!(c.next_frame(t).is_some_and(|f| f.len() <= FRAME_BYTES));
            frames += 1;
            t += call::FRAME;
        }
        assert_eq!(frames, 25, "500 ms of speech is 25 frames");
        match c.phase {
            Phase::Waiting { ended, .. } => ended,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_turn_times_the_answer_from_the_end_of_speech() {
        let mut c = conversation(4000); // 500 ms
        let t0 = Instant::now();
        c.begin(t0);
        let ended = speak(&mut c, t0);
        assert_eq!(c.next_frame(ended), None, "silence while the agent thinks");
        let ms = Duration::from_millis;
        c.heard(ended + ms(600), Heard::Audio(160));
        c.heard(ended + ms(650), Heard::Audio(16_000));
        c.heard(ended + ms(651), Heard::Mark);
        assert_eq!(c.phase, Phase::Playing);
        let turn = &c.stats.turns[0];
        assert!(turn.ok);
        assert_eq!((turn.ttfa_ms, turn.turn_ms), (Some(600.0), Some(650.0)));
        assert!((turn.rtf - 1.3).abs() < 1e-9, "650 ms for 500 ms of speech");
        c.heard(ended + ms(3000), Heard::Played);
        assert!(matches!(c.phase, Phase::Pausing { .. }));
        let mut records = Vec::new();
        c.flush(&Measurements::default(), &mut records);
        let names: Vec<_> = records
            .iter()
            .map(|r| (r.method, r.name, r.error.is_none()))
            .collect();
        assert_eq!(names, vec![(AI, TURN, true), (AI, TTFA, true)]);
    }

    #[test]
    fn an_unanswered_turn_fails_and_the_call_goes_on() {
        let mut c = conversation(4000);
        let t0 = Instant::now();
        c.begin(t0);
        let ended = speak(&mut c, t0);
        assert_eq!(c.deadline(), Some(ended + TURN_TIMEOUT));
        assert_eq!(
            c.poll(ended + TURN_TIMEOUT - Duration::from_millis(1)),
            Flow::Continue
        );
        assert_eq!(c.poll(ended + TURN_TIMEOUT), Flow::Continue);
        assert!(!c.stats.turns[0].ok);
        assert_eq!(c.stats.errors.get("no answer within 15s"), Some(&1));
        // The next turn starts after the pause (none with --no-wait).
        assert_eq!(c.poll(ended + TURN_TIMEOUT), Flow::Continue);
        assert!(matches!(c.phase, Phase::Speaking { .. }));
        // A call that drops mid-turn fails that turn with the call's reason.
        c.end(Some(&CallFailure::ClosedByServer));
        assert_eq!(c.stats.turns.len(), 2);
        assert_eq!(c.stats.errors.get("closed by server mid-call"), Some(&1));
        assert_eq!(c.phase, Phase::Idle);
    }

    #[test]
    fn no_turn_starts_that_would_outlast_the_call() {
        let mut c = conversation(8000 * 5); // 5 s of speech
        c.duration = Duration::from_secs(4);
        let t0 = Instant::now();
        c.begin(t0);
        assert_eq!(c.poll(t0), Flow::HangUp);
        assert!(c.stats.turns.is_empty());
    }
}
