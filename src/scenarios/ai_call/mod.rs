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
//!   original's STT -> LLM -> TTS latency model slept stage by stage, each stage timed,
//!   RTF = total / audio duration.
//!
//! Both run as short transactions (at most [`SLICE`](super::call::SLICE) each) so a stopping run
//! ends calls at once, record each turn as Goose custom requests (method "AI"), and keep every
//! turn in [`AiStats`](crate::measure::AiStats) for the post-run analysis.
//!
//! The stream-mode caller is in `conversation`, the mock pipeline in `mock`; this module builds
//! the scenario from either and holds what both record under.

mod conversation;
mod mock;

use super::call::{Line, Names};
use super::Shared;
use crate::ai_model;
use crate::config::plan::AiMode;
use conversation::{new_conversation, Conversation};
use goose::prelude::*;
use mock::{mock_step, mock_stop};
use std::sync::Arc;
use std::time::Duration;

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
