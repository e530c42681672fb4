//! The results file (`--output FILE`, README "The results file"): its types, atomic writing, careful reading and
//! the exit status it implies.
//!
//! The key names are a contract with users' CI scripts (`r['api']['success']`), so every field
//! the Python suite's runner wrote keeps its name; fields beyond them are additions.

use super::verdicts::{Status, Verdict};
use crate::config::outputs::temp_path;
use crate::config::plan::RunPlan;
use crate::measure::memory::{MemoryReport, MemorySeries};
use crate::measure::Snapshot;
use crate::run::RunRecord;
use anyhow::{bail, Context, Result};
use goose::metrics::{GooseErrorMetricAggregate, GooseMetrics, GooseRequestMetricAggregate};
use goose::threshold::ThresholdResult;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// One run's results, as written to the JSON file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Results {
    pub profile: String,
    /// When the run started, RFC 3339.
    pub timestamp: String,
    pub host: String,
    /// No verdict at or above `fail_on`.
    pub passed: bool,
    pub interrupted: bool,
    pub interrupt_reason: Option<String>,
    pub duration_s: f64,
    /// The verdict that fails the run (`--fail-on`); sections' `success` and `passed` follow it.
    #[serde(default = "critical")]
    pub fail_on: Status,
    /// Goose users per kind of load: api, webhook, high_load, media_streams, ai_calls.
    #[serde(default)]
    pub users: BTreeMap<String, u64>,
    pub api: Section<ApiResults>,
    pub websocket: Section<WebsocketResults>,
    pub ai_pipeline: Section<AiResults>,
    pub memory: MemoryResults,
    pub verdicts: Vec<Verdict>,
    /// Figures added by post-run hooks.
    #[serde(default)]
    pub figures: Vec<Figure>,
    /// Post-run hooks that failed, with their errors.
    #[serde(default)]
    pub hook_errors: Vec<String>,
    /// Failed requests by reason, as the console's table counts them: the root cause of a
    /// request with no answer ("connection refused", "timeout") where Goose's errors say only
    /// "error sending request"; rows of a call named `"WS media stream: call: <reason>"`.
    #[serde(default)]
    pub failures_by_reason: BTreeMap<String, u64>,
    /// A distributed run's load generators (gaggle workers or merged files); absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerResult>,
    /// The run's exact, mergeable data, read by `phone-agent-load merge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<RawData>,
}

/// One load generator of a distributed run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct WorkerResult {
    /// "w1", "w2", ... for gaggle workers; the file name for merged files.
    pub name: String,
    /// The machine it ran on.
    pub hostname: String,
    /// Its network address as the manager saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// "finished", "interrupted" or "lost".
    pub status: String,
    /// Why it was interrupted or lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Goose users per kind of load, as in the top-level `users`.
    pub users: BTreeMap<String, u64>,
    pub duration_s: f64,
    pub api_requests: u64,
    pub api_failures: u64,
    /// Its own memory over the run; None when it was lost before reporting it.
    pub memory: Option<MemorySeries>,
}

/// What merging needs and the sections only summarise: the run's plan, Goose's request rows
/// with their histograms and status counts, and the crate's own measurements.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RawData {
    pub plan: RunPlan,
    /// The machine that generated the load.
    pub hostname: String,
    pub goose: Option<RawGoose>,
    pub measured: Snapshot,
}

/// The mergeable part of Goose's metrics (everything the analysis reads).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct RawGoose {
    /// Seconds Goose measured (from its metrics reset).
    pub duration: usize,
    pub maximum_users: usize,
    pub total_users: usize,
    /// "METHOD name" -> the row, with `raw_data.times_us` histogram buckets.
    pub requests: BTreeMap<String, GooseRequestMetricAggregate>,
    pub errors: BTreeMap<String, GooseErrorMetricAggregate>,
    #[serde(default)]
    pub thresholds: Vec<ThresholdResult>,
}

impl RawGoose {
    pub fn from_metrics(m: &GooseMetrics) -> RawGoose {
        RawGoose {
            duration: m.duration,
            maximum_users: m.maximum_users,
            total_users: m.total_users,
            requests: m.requests.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            errors: m.errors.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            thresholds: m.thresholds.clone(),
        }
    }

    /// Goose metrics holding these rows (transactions, scenarios and history stay empty).
    pub fn to_metrics(&self) -> GooseMetrics {
        let mut m = GooseMetrics::default();
        m.duration = self.duration;
        m.maximum_users = self.maximum_users;
        m.total_users = self.total_users;
        m.requests = self
            .requests
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        m.errors = self.errors.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        m.thresholds = self.thresholds.clone();
        m
    }
}

impl RawData {
    /// A run's raw data, as its results file keeps it.
    pub fn of(run: &RunRecord) -> RawData {
        RawData {
            plan: run.plan.clone(),
            hostname: hostname(),
            goose: run.goose.as_ref().map(RawGoose::from_metrics),
            measured: run.measured.clone(),
        }
    }
}

/// This machine's name ("unknown" if it has none).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match (rc, std::str::from_utf8(&buf[..end])) {
        (0, Ok(name)) if !name.is_empty() => name.to_string(),
        _ => "unknown".to_string(),
    }
}

fn critical() -> Status {
    Status::Critical
}

/// A results section, or `{"skipped": true}` for a kind of load left out of the run.
#[derive(Clone, Debug, PartialEq)]
pub enum Section<T> {
    Skipped,
    Ran(T),
}

impl<T> Section<T> {
    pub fn ran(&self) -> Option<&T> {
        match self {
            Section::Ran(t) => Some(t),
            Section::Skipped => None,
        }
    }

    pub fn ran_mut(&mut self) -> Option<&mut T> {
        match self {
            Section::Ran(t) => Some(t),
            Section::Skipped => None,
        }
    }
}

impl<T: Serialize> Serialize for Section<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Section::Ran(t) => t.serialize(s),
            Section::Skipped => BTreeMap::from([("skipped", true)]).serialize(s),
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Section<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        if value.get("skipped").and_then(|v| v.as_bool()) == Some(true) {
            return Ok(Section::Skipped);
        }
        T::deserialize(value).map(Section::Ran).map_err(D::Error::custom)
    }
}

/// The REST API and webhooks: Goose's HTTP request rows (never the custom WS/AI rows).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ApiResults {
    pub success: bool,
    pub requests: u64,
    pub failures: u64,
    /// Successful requests / requests x 100.
    pub success_rate: f64,
    pub avg_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    #[serde(default)]
    pub max_ms: f64,
    /// Requests per second over the measured window.
    pub rps: f64,
    pub endpoints: Vec<Endpoint>,
    /// "METHOD name: error" -> count, leaving out the answers the scenarios' success rules
    /// accepted (a 404 on an update, a 429 on a rapid list), which Goose lists among its errors.
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    /// The Python suite's keys from here on (README "Coming from the Python suite"); files
    /// written before them read as zero and empty. Seconds the API load ran (the run's wall time).
    #[serde(default)]
    pub duration: f64,
    /// Where the suite kept Locust's console output: the API lines of the console summary.
    #[serde(default)]
    pub stdout: String,
    /// The figures above, as the suite named Locust's aggregated row.
    #[serde(default)]
    pub stats: LocustStats,
}

/// The suite's `api.stats`: Locust's aggregated row, in its names (times in ms).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct LocustStats {
    pub requests: u64,
    pub failures: u64,
    pub avg_response_time: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub rps: f64,
}

/// One Goose request row.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Endpoint {
    pub name: String,
    #[serde(default)]
    pub method: String,
    pub requests: u64,
    pub failures: u64,
    #[serde(default)]
    pub avg_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    #[serde(default)]
    pub p99_ms: f64,
    /// Status code ("200", "0" for no response) -> count.
    pub status_codes: BTreeMap<String, u64>,
}

/// Media-stream calls, from the crate's own measurements.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct WebsocketResults {
    pub success: bool,
    pub connections_attempted: u64,
    pub connections_successful: u64,
    /// Handshakes that failed.
    pub connections_failed: u64,
    /// Connected / attempted x 100, as the original defined it.
    pub success_rate: f64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Frames sent / frames due on the 20 ms schedule x 100.
    pub frame_rate_pct: f64,
    pub late_frames_pct: f64,
    pub connect_p95_ms: f64,
    /// Calls that ran to their end, and calls that failed (to connect or mid-call).
    #[serde(default)]
    pub calls_completed: u64,
    #[serde(default)]
    pub calls_failed: u64,
    #[serde(default)]
    pub frames_scheduled: u64,
    #[serde(default)]
    pub frames_sent: u64,
    /// Frames dropped for being too far behind schedule (counted as late too).
    #[serde(default)]
    pub frames_skipped: u64,
    #[serde(default)]
    pub connect_avg_ms: f64,
    #[serde(default)]
    pub frame_lateness_p95_ms: f64,
    #[serde(default)]
    pub marks_echoed: u64,
    pub errors: BTreeMap<String, u64>,
    /// The Python suite's keys from here on (README "Coming from the Python suite"); files
    /// written before them read as zero. Seconds the media streams ran (the run's wall time).
    #[serde(default)]
    pub duration: f64,
    /// The suite's latency is the WebSocket handshake time: `connect_avg_ms`.
    #[serde(default)]
    pub avg_latency_ms: f64,
    /// The handshake time's p95: `connect_p95_ms`.
    #[serde(default)]
    pub p95_latency_ms: f64,
}

/// AI audio calls: per-turn latency and the real-time factor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct AiResults {
    pub success: bool,
    /// "stream" or "mock".
    pub mode: String,
    pub calls: u64,
    pub turns: u64,
    pub successful_turns: u64,
    pub success_rate: f64,
    /// Over the successful turns, exact from the samples.
    pub rtf: RtfStats,
    /// Turns answered faster than real time (RTF < 1.0), as a share of all turns.
    pub realtime_capable_pct: f64,
    /// Stream mode: end of utterance to the agent's first audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttfa_ms: Option<Percentiles>,
    /// Stream mode: end of utterance to the end of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_ms: Option<Percentiles>,
    /// Mock mode: the pipeline's stages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stt_ms: Option<AvgP95>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_ms: Option<AvgP95>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tts_ms: Option<AvgP95>,
    pub errors: BTreeMap<String, u64>,
    /// `[seconds into the run, RTF]` of each successful turn, for plotting.
    #[serde(default)]
    pub rtf_series: Vec<[f64; 2]>,
    /// The Python suite's keys from here on (README "Coming from the Python suite"); files
    /// written before them read as zero. Seconds the AI calls ran (the run's wall time).
    #[serde(default)]
    pub duration: f64,
    /// AI-call users, each holding one call at a time (the suite's `--calls`).
    #[serde(default)]
    pub concurrent_calls: u64,
    /// Turns spoken, answered or not: each is one pass through STT -> LLM -> TTS.
    #[serde(default)]
    pub total_requests: u64,
    /// `total_requests` / `duration`.
    #[serde(default)]
    pub throughput_rps: f64,
    /// A successful turn's latency, the numerator of its RTF: the answer's end (stream mode,
    /// `turn_ms`) or STT + LLM + TTS (mock mode).
    #[serde(default)]
    pub avg_latency_ms: f64,
    #[serde(default)]
    pub p95_latency_ms: f64,
    /// The load generator's peak memory (0 when it was not sampled).
    #[serde(default)]
    pub memory_peak_mb: f64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Default)]
pub struct RtfStats {
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Default)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Default)]
pub struct AvgP95 {
    pub avg: f64,
    pub p95: f64,
}

/// The memory section: the sampler's report, and whether its verdicts passed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct MemoryResults {
    #[serde(default)]
    pub success: bool,
    #[serde(flatten)]
    pub report: MemoryReport,
}

/// A figure a post-run hook adds to the results (and the summary prints).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

impl Results {
    /// Writes the file atomically: a temporary file beside it, then a rename, so a reader never
    /// sees half a file and a failed write never destroys the last good one.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).context("cannot encode the results as JSON")?;
        let tmp = temp_path(path)?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow::anyhow!("cannot write results file {}: {e}", path.display())
        })
    }

    /// Reads a results file written by this tool (or another worker's), with errors that say
    /// which file and what is wrong with it.
    pub fn read_json(path: &Path) -> Result<Results> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read results file {}", path.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
        if !value.is_object() {
            bail!("{} is not a results file: expected a JSON object", path.display());
        }
        for key in ["profile", "api", "websocket", "ai_pipeline", "memory", "verdicts"] {
            if value.get(key).is_none() {
                bail!("{} is not a results file: no \"{key}\" key", path.display());
            }
        }
        if let Some((at, n)) = implausible_count(&value, String::new()) {
            bail!(
                "{} is not a valid results file: {at} = {n} is larger than any run produces (a damaged file?)",
                path.display()
            );
        }
        serde_json::from_value(value)
            .with_context(|| format!("{} is not a valid results file", path.display()))
    }

    /// The process exit status: 2 when a verdict is at or above `fail_on`, 1 when the run was
    /// interrupted (it did not run as planned), else 0.
    pub fn exit_code(&self, fail_on: Status) -> i32 {
        if self.verdicts.iter().any(|v| v.status >= fail_on) {
            2
        } else if self.interrupted {
            1
        } else {
            0
        }
    }

    /// Adds a verdict and settles `passed` and the sections' `success` again.
    pub fn add_verdict(&mut self, v: Verdict) {
        self.verdicts.push(v);
        self.settle();
    }

    /// Adds a hook's figure.
    pub fn add_figure(&mut self, name: &str, value: f64, unit: &str) {
        self.figures.push(Figure {
            name: name.to_string(),
            value,
            unit: unit.to_string(),
        });
    }

    /// `--fail-on`: which verdict fails the run; `passed` and `success` follow it.
    pub fn set_fail_on(&mut self, fail_on: Status) {
        self.fail_on = fail_on;
        self.settle();
    }

    /// The verdicts at or above `fail_on`.
    pub fn failing(&self) -> impl Iterator<Item = &Verdict> {
        self.verdicts.iter().filter(move |v| v.status >= self.fail_on)
    }

    /// Recomputes `passed` and each section's `success` from the verdicts: a section succeeds
    /// when it has data (requests, connection attempts, answered AI turns, memory samples) and
    /// none of its verdicts is at or above `fail_on`.
    pub fn settle(&mut self) {
        let fail_on = self.fail_on;
        let ok = |section: &str, verdicts: &[Verdict]| {
            !verdicts
                .iter()
                .any(|v| v.section.as_deref() == Some(section) && v.status >= fail_on)
        };
        self.passed = !self.verdicts.iter().any(|v| v.status >= fail_on);
        if let Some(api) = self.api.ran_mut() {
            api.success = api.requests > 0 && ok("api", &self.verdicts);
        }
        if let Some(ws) = self.websocket.ran_mut() {
            ws.success = ws.connections_attempted > 0 && ok("websocket", &self.verdicts);
        }
        if let Some(ai) = self.ai_pipeline.ran_mut() {
            ai.success = ai.successful_turns > 0 && ok("ai_pipeline", &self.verdicts);
        }
        let m = &self.memory.report;
        self.memory.success =
            (m.load_generator.is_some() || m.server.is_some()) && ok("memory", &self.verdicts);
    }
}

/// Counts and times above 2^53 (exact in any JSON reader) come from no real run; refusing them
/// keeps `merge` from overflowing when it adds several files' counters.
const MAX_PLAUSIBLE: u64 = 1 << 53;

/// The first integer in a results file too large to be real, with where it is.
fn implausible_count(value: &serde_json::Value, at: String) -> Option<(String, String)> {
    match value {
        serde_json::Value::Number(n) => {
            let too_big = match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => u > MAX_PLAUSIBLE,
                (None, Some(i)) => i.unsigned_abs() > MAX_PLAUSIBLE,
                _ => false,
            };
            too_big.then(|| (at, n.to_string()))
        }
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| implausible_count(v, format!("{at}[{i}]"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            let key = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            // Histogram bucket keys are times too; check them like values.
            let key_too_big = k.parse::<u64>().is_ok_and(|b| b > MAX_PLAUSIBLE);
            if key_too_big {
                Some((key.clone(), k.clone()))
            } else {
                implausible_count(v, key)
            }
        }),
        _ => None,
    }
}
