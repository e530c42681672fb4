//! What one run produced, gathered when it ends however it ends: the facts the post-run
//! analysis, the results file and a gaggle's merge start from.

use crate::config::plan::RunPlan;
use crate::measure::failures::Tally;
use crate::measure::memory::MemoryReport;
use crate::measure::Snapshot;
use std::time::Duration;

/// Everything a run produced, as the post-run hooks see it.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Profile, users, skips, AI mode, durations.
    pub plan: RunPlan,
    pub host: String,
    pub started: chrono::DateTime<chrono::Utc>,
    /// Wall time of the attack.
    pub duration: Duration,
    pub interrupted: bool,
    pub interrupt_reason: Option<String>,
    /// None if Goose failed before producing metrics.
    pub goose: Option<goose::metrics::GooseMetrics>,
    /// Streams and AI turns.
    pub measured: Snapshot,
    pub memory: MemoryReport,
    /// Failed requests by reason, as the console counted them (with the root cause Goose's
    /// errors leave out); a gaggle's are its workers' added up.
    pub failures_by_reason: Tally,
}

impl RunRecord {
    /// A record of a run that measured nothing yet, starting now; fill in what is known.
    pub fn new(plan: RunPlan, host: &str) -> RunRecord {
        RunRecord {
            plan,
            host: host.to_string(),
            started: chrono::Utc::now(),
            duration: Duration::ZERO,
            interrupted: false,
            interrupt_reason: None,
            goose: None,
            measured: Default::default(),
            memory: Default::default(),
            failures_by_reason: Default::default(),
        }
    }
}
