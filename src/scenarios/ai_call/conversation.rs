//! Stream mode: the caller's turns over a media-stream call. A [`Conversation`] is the call's
//! [`Script`]: it speaks an utterance paced frame by frame, waits for the agent's answer (first
//! audio, then its `mark`), lets the answer play out, pauses, and speaks again until the call's
//! duration; a turn left unanswered past the turn timeout fails and the call goes on.

use super::{ms, pause, AI, NAMES, TURN};
use crate::config::utterances::Utterance;
use crate::measure::{AiStats, Measurements, Turn};
use crate::protocol::mulaw::FRAME_BYTES;
use crate::scenarios::call::{CallFailure, Flow, Heard, Line, Record, Script};
use crate::scenarios::Shared;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const TTFA: &str = "time to first audio";

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
pub(super) struct Conversation {
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

pub(super) fn new_conversation(shared: &Shared) -> Line<Conversation> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::call;

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
