//! The gaggle's wire protocol: JSON messages over TCP, each prefixed by its length (4 bytes, big
//! endian), with a size limit, a timeout on every read, heartbeats, and the handshake's checks
//! (token, crate version, scenario set).
//!
//! A conversation: the worker says [`Hello`]; the manager answers `Welcome` or `Refused`; once
//! every worker has joined it sends each an [`Assignment`], waits for `Ready` from all, then says
//! `Go` to all at once. Workers report [`Progress`] every few seconds and `Finished` at the end;
//! the manager acknowledges with `Received`. Either side sends `Heartbeat` when it has nothing
//! else to say, so silence means the peer is gone.
//!
//! This module holds the messages and the protocol's limits; `framing` writes and reads one
//! message, `link` keeps a connection with heartbeats, and `handshake` holds the manager's checks
//! of a worker's hello.

mod framing;
mod handshake;
mod link;

pub use framing::{read_message, write_message};
pub use handshake::{check_hello, scenario_set};
pub use link::{Event, Link};

use super::merge::RunData;
use crate::analysis::results::RawGoose;
use crate::analysis::verdicts::Status;
use crate::config::plan::RunPlan;
use crate::measure::Snapshot;
use anyhow::{Context, Result};
use base64::Engine;
use goose::config::{GooseConfiguration, Scenarios};
use goose::metrics::GooseCoordinatedOmissionMitigation;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Bumped when a message changes shape; checked with the crate version.
pub const PROTOCOL: u32 = 1;
/// The largest message either side accepts (a worker's final results, AI turns included).
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// A side with nothing to say sends a heartbeat this often...
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// ...and a peer silent for this long is gone.
pub const SILENCE: Duration = Duration::from_secs(5);
/// How long the rest of a message may take once its length has arrived, and a write.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the first message of a connection may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Test hook: a worker claims this crate version instead of its own.
pub const CLAIM_VERSION_ENV: &str = "PHONE_AGENT_LOAD_GAGGLE_CLAIM_VERSION";

/// The crate version this process speaks for.
pub fn crate_version() -> String {
    std::env::var(CLAIM_VERSION_ENV).unwrap_or_else(|_| env!("CARGO_PKG_VERSION").to_string())
}

/// A worker introduces itself.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Hello {
    pub protocol: u32,
    pub version: String,
    /// [`scenario_set`] of the worker's build.
    pub scenarios: Vec<String>,
    pub token: Option<String>,
    pub hostname: String,
    pub pid: u32,
}

impl Hello {
    pub fn new(token: Option<String>) -> Result<Hello> {
        Ok(Hello {
            protocol: PROTOCOL,
            version: crate_version(),
            scenarios: scenario_set()?,
            token,
            hostname: crate::analysis::results::hostname(),
            pid: std::process::id(),
        })
    }
}

/// What a worker runs: its share of the plan and the manager's load options.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Assignment {
    /// The run's plan with this worker's share of the users.
    pub plan: RunPlan,
    pub host: String,
    pub goose: GooseSettings,
    pub fail_on: Status,
    /// The manager's `--audio-dir` recordings; empty for the built-in ones.
    pub utterances: Vec<WireUtterance>,
}

/// An utterance on the wire: its mu-law audio in base64.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct WireUtterance {
    pub text: String,
    pub mulaw_base64: String,
}

impl WireUtterance {
    pub fn encode(u: &crate::config::utterances::Utterance) -> WireUtterance {
        WireUtterance {
            text: u.text.clone(),
            mulaw_base64: base64::engine::general_purpose::STANDARD.encode(&u.mulaw),
        }
    }

    pub fn decode(&self) -> Result<crate::config::utterances::Utterance> {
        let mulaw = base64::engine::general_purpose::STANDARD
            .decode(&self.mulaw_base64)
            .with_context(|| format!("utterance '{}': bad audio", self.text))?;
        Ok(crate::config::utterances::Utterance {
            text: self.text.clone(),
            mulaw,
        })
    }
}

/// The Goose options that shape the load, which the manager decides for every worker. Logs and
/// Goose's own report files stay each worker's own.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct GooseSettings {
    /// This worker's share of the rate.
    pub increase_rate: Option<String>,
    pub increase_time: Option<String>,
    pub run_time: Option<String>,
    pub decrease_rate: Option<String>,
    pub decrease_time: Option<String>,
    pub iterations: Option<usize>,
    pub scenarios: Option<Vec<String>>,
    /// This worker's share of `--throttle-requests`.
    pub throttle_requests: Option<usize>,
    pub threshold: Vec<String>,
    pub no_threshold_abort: bool,
    pub threshold_abort_delay: Option<String>,
    pub no_reset_metrics: bool,
    pub co_mitigation: Option<GooseCoordinatedOmissionMitigation>,
    pub timeout: Option<String>,
    pub no_gzip: bool,
    pub accept_invalid_certs: bool,
    pub sticky_follow: bool,
    pub no_status_codes: bool,
}

impl GooseSettings {
    /// The manager's options (the shares of rate and throttle are set per worker afterwards).
    pub fn from_config(c: &GooseConfiguration) -> GooseSettings {
        GooseSettings {
            increase_rate: c.increase_rate.clone(),
            increase_time: c.increase_time.clone(),
            run_time: c.run_time.clone(),
            decrease_rate: c.decrease_rate.clone(),
            decrease_time: c.decrease_time.clone(),
            iterations: c.iterations,
            scenarios: c.scenarios.as_ref().map(|s| s.active.clone()),
            throttle_requests: c.throttle_requests,
            threshold: c.threshold.clone(),
            no_threshold_abort: c.no_threshold_abort,
            threshold_abort_delay: c.threshold_abort_delay.clone(),
            no_reset_metrics: c.no_reset_metrics,
            co_mitigation: c.co_mitigation.clone(),
            timeout: c.timeout.clone(),
            no_gzip: c.no_gzip,
            accept_invalid_certs: c.accept_invalid_certs,
            sticky_follow: c.sticky_follow,
            no_status_codes: c.no_status_codes,
        }
    }

    /// Sets these options on a worker's own configuration.
    pub fn apply(&self, c: &mut GooseConfiguration) {
        c.increase_rate = self.increase_rate.clone();
        c.increase_time = self.increase_time.clone();
        c.run_time = self.run_time.clone();
        c.decrease_rate = self.decrease_rate.clone();
        c.decrease_time = self.decrease_time.clone();
        c.iterations = self.iterations;
        c.scenarios = self.scenarios.clone().map(|active| Scenarios { active });
        c.throttle_requests = self.throttle_requests;
        c.threshold = self.threshold.clone();
        c.no_threshold_abort = self.no_threshold_abort;
        c.threshold_abort_delay = self.threshold_abort_delay.clone();
        c.no_reset_metrics = self.no_reset_metrics;
        c.co_mitigation = self.co_mitigation.clone();
        c.timeout = self.timeout.clone();
        c.no_gzip = self.no_gzip;
        c.accept_invalid_certs = self.accept_invalid_certs;
        c.sticky_follow = self.sticky_follow;
        c.no_status_codes = self.no_status_codes;
    }
}

/// A worker's running report: everything measured so far, mergeable.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Progress {
    /// Seconds since the worker's attack started.
    pub elapsed_s: f64,
    /// Goose's metrics so far (None until its controller answers).
    pub goose: Option<RawGoose>,
    pub measured: Snapshot,
    /// Failed requests by reason so far.
    #[serde(default)]
    pub failures_by_reason: BTreeMap<String, u64>,
}

/// Worker -> manager. Externally tagged (`{"progress": {...}}`): serde's internally tagged enums
/// cannot read maps with integer keys, such as Goose's histogram buckets.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "snake_case")]
pub enum ToManager {
    Hello(Hello),
    Ready,
    Failed { reason: String },
    Progress(Box<Progress>),
    Finished(Box<RunData>),
    Heartbeat,
}

/// Manager -> worker.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "snake_case")]
pub enum ToWorker {
    Welcome {
        name: String,
        expected: usize,
    },
    Refused {
        reason: String,
    },
    Assign(Box<Assignment>),
    Go,
    /// Stop the load now (Ctrl-C on the manager, or the run overran).
    Stop {
        reason: String,
    },
    /// The worker's final results arrived.
    Received,
    /// The run is cancelled before it started.
    Abort {
        reason: String,
    },
    Heartbeat,
}

/// A message type one side receives.
pub trait Wire: Serialize + DeserializeOwned + Send + Sync + 'static {
    fn heartbeat() -> Self;
    fn is_heartbeat(&self) -> bool;
}

impl Wire for ToManager {
    fn heartbeat() -> Self {
        ToManager::Heartbeat
    }
    fn is_heartbeat(&self) -> bool {
        matches!(self, ToManager::Heartbeat)
    }
}

impl Wire for ToWorker {
    fn heartbeat() -> Self {
        ToWorker::Heartbeat
    }
    fn is_heartbeat(&self) -> bool {
        matches!(self, ToWorker::Heartbeat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goose_settings_carry_the_load_options() {
        let cli = super::super::TestLine::parse(&[
            "--run-time",
            "30s",
            "--increase-rate",
            "4",
            "--threshold",
            "p95<300ms",
            "--scenarios",
            "apiuser",
        ])
        .unwrap();
        let s = GooseSettings::from_config(&cli.goose);
        let mut c = GooseConfiguration::default();
        s.apply(&mut c);
        assert_eq!(GooseSettings::from_config(&c), s);
        assert_eq!(c.run_time.as_deref(), Some("30s"));
        assert_eq!(c.scenarios.unwrap().active, vec!["apiuser".to_string()]);
    }
}
