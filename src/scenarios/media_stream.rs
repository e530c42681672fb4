//! The "Media stream call" scenario: the original WebSocket stress script as Goose users.
//!
//! Each user places a call to the media-stream endpoint, streams silence at 50 frames/s for the
//! profile's stream duration (echoing the agent's marks, obeying its clears), hangs up and dials
//! again. Transport figures (frames, lateness, messages, errors) go to [`StreamStats`]; the
//! handshake, each whole call and each mark echo are Goose custom requests.
//!
//! [`StreamStats`]: crate::measure::StreamStats

use super::call::{self, CallFailure, Flow, Heard, Line, Names, Record, Script};
use super::Shared;
use crate::measure::Measurements;
use goose::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The scenario's name, as registered with Goose.
pub const SCENARIO: &str = "Media stream call";

pub static NAMES: Names = Names {
    connect: "media stream: connect",
    call: "media stream: call",
    mark: "media stream: mark echo",
};

/// A caller who listens: silence for the call's duration.
struct Listener {
    duration: Duration,
    ends: Option<Instant>,
}

impl Script for Listener {
    fn begin(&mut self, now: Instant) {
        self.ends = Some(now + self.duration);
    }

    fn next_frame(&mut self, _now: Instant) -> Option<&[u8]> {
        None
    }

    fn heard(&mut self, _now: Instant, _what: Heard) {}

    fn poll(&mut self, now: Instant) -> Flow {
        match self.ends {
            Some(ends) if now >= ends => Flow::HangUp,
            _ => Flow::Continue,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.ends
    }

    fn end(&mut self, _failure: Option<&CallFailure>) {
        self.ends = None;
    }

    fn flush(&mut self, _measurements: &Measurements, _records: &mut Vec<Record>) {}
}

fn new_line(shared: &Shared) -> Line<Listener> {
    let script = Listener {
        duration: shared.plan.media_stream_duration,
        ends: None,
    };
    Line::new(script, &NAMES)
}

/// The "Media stream call" scenario. Register it with weight = the number of concurrent calls.
pub fn media_stream_call(shared: &Arc<Shared>) -> Result<Scenario, GooseError> {
    if shared.plan.media_stream_duration < call::FRAME {
        return Err(GooseError::InvalidOption {
            option: "media_streams.duration".into(),
            value: format!("{:?}", shared.plan.media_stream_duration),
            detail: "a media-stream call must last at least one 20 ms frame".into(),
        });
    }
    let stream = super::transaction(shared, "call", |user, shared| {
        Box::pin(async move { Line::step(user, &shared, || new_line(&shared)).await })
    });
    let hang_up = super::transaction(shared, "hang up", |user, shared| {
        Box::pin(async move { Line::<Listener>::stop(user, &shared).await })
    })
    .set_on_stop();
    Ok(Scenario::new(SCENARIO)
        .register_transaction(stream)
        .register_transaction(hang_up))
}
