//! The crate's options for one run, as plain values: what the command line (or a library user)
//! asks for, before the profile's numbers are applied ([`RunOptions::plan`]).
//!
//! Goose keeps its own options in its `GooseConfiguration`; the command line's parser fills both
//! and nothing below it sees a parser's types.

use super::plan::{AiMode, Overrides, RunPlan, Skips, DEFAULT_TURN_TIMEOUT};
use super::profile::Profile;
use crate::measure::memory::MemoryTarget;
use anyhow::Result;
use std::path::PathBuf;
use std::time::Duration;

/// The name of the profile a run uses unless told otherwise.
pub const DEFAULT_PROFILE: &str = "quick";

/// What one run is asked to do beyond Goose's own options.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// A built-in profile's name or a profile file's path.
    pub profile: String,
    /// Where the results file goes (and the HTML report beside it).
    pub output: Option<PathBuf>,
    pub skips: Skips,
    /// Concurrent media-stream calls instead of the profile's.
    pub ws_connections: Option<usize>,
    /// Concurrent AI calls instead of the profile's.
    pub ai_calls: Option<usize>,
    pub ai_mode: AiMode,
    /// The caller's utterances from these WAV files instead of the built-in ones.
    pub audio_dir: Option<PathBuf>,
    /// Where the server's memory is read, if anywhere.
    pub server_memory: Option<MemoryTarget>,
    /// The scenarios' wait times switched off.
    pub no_wait: bool,
    /// How long an AI turn may go unanswered.
    pub turn_timeout: Duration,
    /// Whether Goose's `--test-plan` rules the users and the run time (Goose keeps the plan
    /// itself private).
    pub test_plan_given: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            profile: DEFAULT_PROFILE.to_string(),
            output: None,
            skips: Skips::default(),
            ws_connections: None,
            ai_calls: None,
            ai_mode: AiMode::Stream,
            audio_dir: None,
            server_memory: None,
            no_wait: false,
            turn_timeout: DEFAULT_TURN_TIMEOUT,
            test_plan_given: false,
        }
    }
}

impl RunOptions {
    /// The plan these options ask for: their profile, scaled by `users` (Goose's `--users`, so
    /// passed apart), with their counts, skips, AI mode, wait times and turn timeout.
    pub fn plan(&self, users: Option<usize>) -> Result<RunPlan> {
        let overrides = Overrides {
            users,
            ws_connections: self.ws_connections,
            ai_calls: self.ai_calls,
            skips: self.skips,
        };
        let mut plan = RunPlan::new(
            Profile::load(&self.profile)?,
            &overrides,
            self.ai_mode,
            self.no_wait,
        )?;
        plan.turn_timeout = self.turn_timeout;
        Ok(plan)
    }
}
