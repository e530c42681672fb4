//! The crate's options on the command line, and how they become a run's [`RunOptions`].

use crate::analysis::verdicts::Status;
use crate::config::options::RunOptions;
use crate::config::plan::{AiMode, Skips};
use crate::measure::memory::MemoryTarget;
use std::path::PathBuf;
use std::time::Duration;

/// The options phone-agent-load adds to Goose's.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Phone Agent")]
pub struct LoadOptions {
    /// Load profile: quick, standard, stress, soak, or a path to a profile .toml file
    #[arg(long, value_name = "NAME|FILE", default_value = crate::config::options::DEFAULT_PROFILE)]
    pub profile: String,
    /// Write the run's results (JSON, see README) to FILE
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Leave out the REST API and webhook users
    #[arg(long)]
    pub skip_api: bool,
    /// Leave out the media-stream calls
    #[arg(long)]
    pub skip_ws: bool,
    /// Leave out the AI audio calls
    #[arg(long)]
    pub skip_ai: bool,
    /// Concurrent media-stream calls (overrides the profile)
    #[arg(long, value_name = "N")]
    pub ws_connections: Option<usize>,
    /// Concurrent AI audio calls (overrides the profile)
    #[arg(long, value_name = "N")]
    pub ai_calls: Option<usize>,
    /// AI calls over media streams against the server, or the in-process mock pipeline
    #[arg(long, value_enum, default_value = "stream")]
    pub ai_mode: AiMode,
    /// The caller's utterances from your own WAV files (mono/stereo PCM or mu-law, any rate)
    #[arg(long, value_name = "DIR")]
    pub audio_dir: Option<PathBuf>,
    /// No web UI (like `locust --headless`)
    #[arg(long)]
    pub headless: bool,
    /// Read the server's memory from this local process id
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Read the server's memory from the local process with this name
    #[arg(long, value_name = "NAME", conflicts_with = "server_pid")]
    pub server_process: Option<String>,
    /// Read the server's memory (process_resident_memory_bytes) from this Prometheus endpoint
    #[arg(long, value_name = "URL", conflicts_with_all = ["server_pid", "server_process"])]
    pub server_metrics_url: Option<String>,
    /// Which verdict fails the run (exit status 2)
    #[arg(long, value_enum, default_value = "critical")]
    pub fail_on: Status,
    /// Switch the scenarios' wait times off (benchmarks, breaking-point searches)
    #[arg(long)]
    pub no_wait: bool,
    /// How long an AI turn may take, from the end of the caller's speech to the end of the
    /// agent's answer, before it fails as "no answer within 15s" (stream mode; the call goes on).
    /// Seconds, or a span such as 1m
    #[arg(long, value_name = "SPAN", default_value_t = crate::config::plan::DEFAULT_TURN_TIMEOUT.as_secs(), value_parser = turn_timeout)]
    pub turn_timeout: u64,
    /// Whether Goose's `--test-plan` was given (Goose keeps the plan itself private).
    #[arg(skip)]
    pub test_plan_given: bool,
}

impl LoadOptions {
    /// The run these options ask for, as plain values.
    pub fn run_options(&self) -> RunOptions {
        RunOptions {
            profile: self.profile.clone(),
            output: self.output.clone(),
            skips: Skips {
                api: self.skip_api,
                ws: self.skip_ws,
                ai: self.skip_ai,
            },
            ws_connections: self.ws_connections,
            ai_calls: self.ai_calls,
            ai_mode: self.ai_mode,
            audio_dir: self.audio_dir.clone(),
            server_memory: match (&self.server_pid, &self.server_process, &self.server_metrics_url) {
                (Some(pid), _, _) => Some(MemoryTarget::Pid(*pid)),
                (_, Some(name), _) => Some(MemoryTarget::ProcessName(name.clone())),
                (_, _, Some(url)) => Some(MemoryTarget::MetricsUrl(url.clone())),
                _ => None,
            },
            no_wait: self.no_wait,
            turn_timeout: Duration::from_secs(self.turn_timeout),
            test_plan_given: self.test_plan_given,
        }
    }
}

/// The options that shape the load (the crate's and Goose's), by clap id: a gaggle worker
/// takes its load from the manager and refuses them.
pub const LOAD_SHAPING: &[&str] = &[
    "profile",
    "skip_api",
    "skip_ws",
    "skip_ai",
    "ws_connections",
    "ai_calls",
    "ai_mode",
    "audio_dir",
    "server_pid",
    "server_process",
    "server_metrics_url",
    "fail_on",
    "no_wait",
    "turn_timeout",
    "test_plan",
    "host",
    "users",
    "increase_rate",
    "increase_time",
    "run_time",
    "decrease_rate",
    "decrease_time",
    "iterations",
    "scenarios",
    "throttle_requests",
    "threshold",
];

/// `--test-plan` as Goose reads it ("users,time" steps separated by `;`, at least one user
/// started), checked here first so Goose's parser, which prints its refusals, only ever sees a
/// plan it takes.
pub(super) fn test_plan(value: &str) -> Result<goose::test_plan::TestPlan, String> {
    const EXPECTED: &str = "expected steps of users,time separated by ; such as \"10,1m;10,5m;0,30s\"";
    let mut previous = 0usize;
    let mut started = 0usize;
    for step in value.split(';') {
        let Some((users, span)) = step.split_once(',') else {
            return Err(format!("step '{}' has no comma; {EXPECTED}", step.trim()));
        };
        let (users, span) = (users.trim(), span.trim());
        let users = users
            .parse::<usize>()
            .ok()
            .filter(|_| users.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("'{users}' is not a number of users; {EXPECTED}"))?;
        let seconds = timespan_secs(span).and_then(|s| s.checked_mul(1_000));
        if seconds.is_none() {
            return Err(format!("'{span}' is not a time span; {EXPECTED}"));
        }
        started = started.saturating_add(users.saturating_sub(previous));
        previous = users;
    }
    if started == 0 {
        return Err(format!("the plan starts no user; {EXPECTED}"));
    }
    value.parse().map_err(|e: goose::GooseError| e.to_string())
}

/// The seconds in a time span such as `90`, `30s` or `1h30m`, in ASCII digits only (Goose's
/// parser takes other scripts' digits too).
pub(super) fn timespan_secs(span: &str) -> Option<usize> {
    goose::util::parse_timespan(span)
        .filter(|_| span.bytes().all(|b| b.is_ascii_digit() || b"hmsHMS".contains(&b)))
}

/// `--turn-timeout`: a time span from 1 s to 10 min, in seconds.
fn turn_timeout(value: &str) -> Result<u64, String> {
    let seconds = timespan_secs(value.trim()).ok_or_else(|| {
        format!("'{value}' is not a time span: expected seconds or a span such as 30s or 1m")
    })?;
    if !(1..=600).contains(&seconds) {
        return Err(format!("{seconds} s is out of range: expected 1 s to 10 minutes"));
    }
    Ok(seconds as u64)
}
