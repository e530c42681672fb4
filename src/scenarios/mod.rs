//! The Goose scenarios: REST API and webhook users, media-stream calls and AI audio calls.
//!
//! Each kind lives in its own module and exposes a function building its [`Scenario`]; this
//! module gives each the run's [`Shared`] state and registers them with the profile's counts as
//! weights, so Goose's round-robin allocation gives every kind exactly its number of users.

use crate::audio::Utterance;
use crate::measure::Measurements;
use crate::plan::RunPlan;
use std::sync::Arc;

/// What every scenario of a run can see.
#[derive(Debug)]
pub struct Shared {
    pub plan: RunPlan,
    pub measurements: Arc<Measurements>,
    /// The caller's utterances (built in, or `--audio-dir`).
    pub utterances: Arc<Vec<Utterance>>,
}
