//! Mock mode: the in-process mock pipeline, no server at all. Each turn draws an utterance and
//! an audio duration, then sleeps the pipeline latency model's STT, LLM and TTS stages one after
//! the other, timing each; a call lasts the plan's AI call duration.

use super::{ms, pause, AI, TURN};
use crate::ai_model::{self, StageLatencies};
use crate::measure::{AiStats, Measurements, Turn};
use crate::scenarios::call::{self, Record, SLICE};
use crate::scenarios::Shared;
use goose::prelude::*;
use rand::seq::IndexedRandom;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const MOCK_CALL: &str = "mock call";
const STAGES: [&str; 3] = ["stt", "llm", "tts"];

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

pub(super) async fn mock_step(user: &mut GooseUser, shared: &Shared) -> TransactionResult {
    let mock = call::user_state(user, || new_mock(shared));
    let mut mock = mock.lock().await;
    mock.step().await;
    mock.flush(user).await
}

pub(super) async fn mock_stop(user: &mut GooseUser) -> TransactionResult {
    let Some(mock) = user.get_session_data::<call::UserState<Mock>>().cloned() else {
        return Ok(());
    };
    let mut mock = mock.lock().await;
    mock.stop();
    mock.flush(user).await
}
