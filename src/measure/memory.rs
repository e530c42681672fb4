//! Memory over the run: RSS of the load generator and of the server, sampled every second, and
//! the Theil–Sen slope (`measure::slope`) that tells a leak from warm-up.
//!
//! Local processes are read with sysinfo; a remote server through a Prometheus endpoint's
//! `process_resident_memory_bytes`. Growth (final − initial) judges the verdict; the slope
//! over the post-ramp window, with its R², is what a soak test is for.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::sync::oneshot;

const MB: f64 = 1024.0 * 1024.0;

/// Where the server's memory is read (`--server-pid`, `--server-process`, `--server-metrics-url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryTarget {
    Pid(u32),
    /// Every local process of this name, added up (a server may run several workers).
    ProcessName(String),
    /// A Prometheus text endpoint exposing `process_resident_memory_bytes`.
    MetricsUrl(String),
}

impl MemoryTarget {
    /// Words for the summary: "pid 1234", "process nginx", the URL.
    pub fn describe(&self) -> String {
        match self {
            MemoryTarget::Pid(p) => format!("pid {p}"),
            MemoryTarget::ProcessName(n) => format!("process {n}"),
            MemoryTarget::MetricsUrl(u) => u.clone(),
        }
    }

    /// Checks the target before a run starts, so a typo is one clear error, not an empty chart.
    pub async fn check(&self) -> Result<()> {
        match self {
            MemoryTarget::Pid(pid) => {
                if local_rss(&mut new_system()?, self).is_none() {
                    bail!("--server-pid {pid}: no such process");
                }
            }
            MemoryTarget::ProcessName(name) => {
                if name.trim().is_empty() {
                    bail!("--server-process: the process name is empty");
                }
                if local_rss(&mut new_system()?, self).is_none() {
                    bail!("--server-process {name}: no running process has this name");
                }
            }
            MemoryTarget::MetricsUrl(url) => {
                scrape_rss(&http_client()?, url).await?;
            }
        }
        Ok(())
    }
}

/// One process's (or endpoint's) memory over the run: the results file's `memory.*` object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MemorySeries {
    /// Where it was read: "load generator (pid 42)", "pid 1234", a URL.
    pub source: String,
    /// First sample at or after the ramp ended (all users started).
    pub initial_mb: f64,
    pub peak_mb: f64,
    pub final_mb: f64,
    pub growth_mb: f64,
    /// Theil–Sen slope over the post-ramp window ([`crate::measure::slope`]).
    pub slope_mb_per_min: f64,
    pub r2: f64,
    /// `slope_mb_per_min` x 60: where an hour at this rate would take it.
    pub projected_growth_1h_mb: f64,
    /// Where the post-ramp window starts, in the samples' seconds.
    pub window_start_s: f64,
    /// `[seconds since sampling began, MB]`, the whole run.
    pub samples: Vec<[f64; 2]>,
}

/// What the sampler saw, for the load generator and the server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct MemoryReport {
    pub load_generator: Option<MemorySeries>,
    pub server: Option<MemorySeries>,
    /// When all users had started, in the samples' seconds (None: the ramp never finished).
    pub ramp_done_s: Option<f64>,
    /// The last error reading the server's memory, if any ("connection refused", "not running").
    pub server_error: Option<String>,
}

impl MemoryReport {
    /// Builds a report from raw samples (`[s, MB]`), as the sampler does; for merges and tests.
    pub fn from_samples(
        load_generator: Option<(String, Vec<[f64; 2]>)>,
        server: Option<(String, Vec<[f64; 2]>)>,
        ramp_done_s: Option<f64>,
    ) -> MemoryReport {
        let series = |s: Option<(String, Vec<[f64; 2]>)>| {
            s.and_then(|(source, samples)| MemorySeries::from_samples(source, samples, ramp_done_s))
        };
        MemoryReport {
            load_generator: series(load_generator),
            server: series(server),
            ramp_done_s,
            server_error: None,
        }
    }
}

/// The shortest stretch of samples a slope is fitted over, in seconds (four samples at the
/// default one a second).
pub const MIN_FIT_SPAN_S: f64 = 3.0;

impl MemorySeries {
    /// The hour's projection in words: "+12 MB in one hour", or "not growing" for a flat or
    /// falling slope (memory handed back after a peak does not fall for an hour).
    pub fn projection(&self) -> String {
        if self.projected_growth_1h_mb >= 0.5 {
            format!("{:+.0} MB in one hour", self.projected_growth_1h_mb)
        } else {
            "not growing".to_string()
        }
    }

    /// Summarises samples; None without any.
    pub fn from_samples(source: String, samples: Vec<[f64; 2]>, ramp_done_s: Option<f64>) -> Option<Self> {
        let last = *samples.last()?;
        // The window starts at the first sample taken once the ramp was done; a run stopped during
        // the ramp has only the whole run to judge.
        let start = ramp_done_s
            .and_then(|r| samples.iter().position(|s| s[0] >= r))
            .unwrap_or(0);
        let window: Vec<(f64, f64)> = samples[start..].iter().map(|s| (s[0], s[1])).collect();
        let span_s = window.last().map_or(0.0, |l| l.0) - window.first().map_or(0.0, |f| f.0);
        // A few samples over a moment (a run stopped at start-up) would project a start-up
        // allocation into gigabytes per hour: no slope below MIN_FIT_SPAN_S.
        let (slope, r2) = if span_s >= MIN_FIT_SPAN_S {
            let f = crate::measure::slope::fit(&window);
            (f.slope_per_min(), f.r2)
        } else {
            (0.0, 0.0)
        };
        let initial = samples[start][1];
        Some(MemorySeries {
            source,
            initial_mb: initial,
            peak_mb: samples.iter().map(|s| s[1]).fold(f64::MIN, f64::max),
            final_mb: last[1],
            growth_mb: last[1] - initial,
            slope_mb_per_min: slope,
            r2,
            projected_growth_1h_mb: slope * 60.0,
            window_start_s: samples[start][0],
            samples,
        })
    }
}

/// Samples memory in the background until [`MemorySampler::stop`].
pub struct MemorySampler {
    started: Instant,
    /// Milliseconds from `started` to the end of the ramp, plus one (0: not yet).
    ramp_done_ms: Arc<AtomicU64>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Sampled>,
}

/// What the sampling task hands back.
#[derive(Default)]
struct Sampled {
    own: Vec<[f64; 2]>,
    /// The server's description and samples, when one was given.
    server: Option<(String, Vec<[f64; 2]>)>,
    server_error: Option<String>,
}

impl MemorySampler {
    /// Starts sampling this process and, if given, the server, every `every` (a second in a
    /// run). Needs a tokio runtime.
    pub fn start(server: Option<MemoryTarget>, every: Duration) -> MemorySampler {
        let (stop, stopped) = oneshot::channel();
        let started = Instant::now();
        let task = tokio::spawn(sample_until(
            server,
            every.max(Duration::from_millis(1)),
            started,
            stopped,
        ));
        MemorySampler {
            started,
            ramp_done_ms: Arc::new(AtomicU64::new(0)),
            stop,
            task,
        }
    }

    /// Marks the end of the ramp (all users started): the first sample after this is "initial".
    /// Only the first call counts.
    pub fn ramp_done(&self) {
        let ms = self.started.elapsed().as_millis() as u64 + 1;
        let _ = self
            .ramp_done_ms
            .compare_exchange(0, ms, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// A handle that can mark the ramp's end from elsewhere (e.g. a Goose transaction).
    pub fn ramp_marker(&self) -> RampMarker {
        RampMarker {
            started: self.started,
            ramp_done_ms: self.ramp_done_ms.clone(),
        }
    }

    /// Takes a last sample, stops, and summarises.
    pub async fn stop(self) -> MemoryReport {
        let _ = self.stop.send(());
        let sampled = self.task.await.unwrap_or_default();
        let ramp = match self.ramp_done_ms.load(Ordering::SeqCst) {
            0 => None,
            ms => Some((ms - 1) as f64 / 1000.0),
        };
        let own_source = format!("load generator (pid {})", std::process::id());
        let mut report = MemoryReport::from_samples(Some((own_source, sampled.own)), sampled.server, ramp);
        report.server_error = sampled.server_error;
        report
    }
}

/// A cloneable [`MemorySampler::ramp_done`].
#[derive(Clone)]
pub struct RampMarker {
    started: Instant,
    ramp_done_ms: Arc<AtomicU64>,
}

impl RampMarker {
    pub fn ramp_done(&self) {
        let ms = self.started.elapsed().as_millis() as u64 + 1;
        let _ = self
            .ramp_done_ms
            .compare_exchange(0, ms, Ordering::SeqCst, Ordering::SeqCst);
    }
}

async fn sample_until(
    server: Option<MemoryTarget>,
    every: Duration,
    started: Instant,
    mut stopped: oneshot::Receiver<()>,
) -> Sampled {
    let mut out = Sampled {
        server: server.as_ref().map(|t| (t.describe(), Vec::new())),
        ..Sampled::default()
    };
    let mut system = match new_system() {
        Ok(s) => s,
        Err(e) => {
            out.server_error = Some(format!("{e:#}"));
            return out;
        }
    };
    let own = MemoryTarget::Pid(std::process::id());
    let client = match &server {
        Some(MemoryTarget::MetricsUrl(_)) => match http_client() {
            Ok(c) => Some(c),
            Err(e) => {
                out.server_error = Some(format!("{e:#}"));
                None
            }
        },
        _ => None,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = &mut stopped => true,
        };
        let at = started.elapsed().as_secs_f64();
        if let Some(mb) = local_rss(&mut system, &own) {
            out.own.push([at, mb]);
        }
        if let (Some(target), Some((_, samples))) = (&server, &mut out.server) {
            let sample = match (target, &client) {
                (MemoryTarget::MetricsUrl(url), Some(client)) => scrape_rss(client, url).await.map(Some),
                (MemoryTarget::MetricsUrl(_), None) => Ok(None),
                (target, _) => local_rss(&mut system, target)
                    .map(Some)
                    .ok_or_else(|| anyhow::anyhow!("{} is not running", target.describe())),
            };
            match sample {
                Ok(Some(mb)) => samples.push([at, mb]),
                Ok(None) => {}
                Err(e) => out.server_error = Some(format!("{e:#}")),
            }
        }
        if last {
            return out;
        }
    }
}

fn new_system() -> Result<System> {
    System::new().map_err(|e| anyhow::anyhow!("cannot read process memory: {e:?}"))
}

/// RSS in MB of a local process, or of all processes with a name; None if none is running.
fn local_rss(system: &mut System, target: &MemoryTarget) -> Option<f64> {
    let kind = ProcessRefreshKind::nothing().with_memory().without_tasks();
    match target {
        MemoryTarget::Pid(pid) => {
            let pid = Pid::from_u32(*pid);
            system.refresh_processes_specifics(ProcessesToUpdate::Some(&[pid]), true, kind);
            system.process(pid).map(|p| p.memory() as f64 / MB)
        }
        MemoryTarget::ProcessName(name) => {
            system.refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
            let me = Pid::from_u32(std::process::id());
            let matching: Vec<f64> = system
                .processes()
                .values()
                .filter(|p| p.pid() != me && p.thread_kind().is_none() && name_matches(p, name))
                .map(|p| p.memory() as f64 / MB)
                .collect();
            (!matching.is_empty()).then(|| matching.iter().sum())
        }
        MemoryTarget::MetricsUrl(_) => None,
    }
}

/// Linux cuts process names to 15 bytes, so a longer name matches its first 15.
fn name_matches(p: &sysinfo::Process, name: &str) -> bool {
    let pname = p.name().to_string_lossy();
    pname == name || (pname.len() == 15 && name.len() > 15 && name.starts_with(pname.as_ref()))
}

fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .context("cannot build an HTTP client for --server-metrics-url")
}

/// Reads `process_resident_memory_bytes` from a Prometheus text endpoint, in MB.
async fn scrape_rss(client: &reqwest::Client, url: &str) -> Result<f64> {
    let parsed = url::Url::parse(url).with_context(|| format!("--server-metrics-url {url}: not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!("--server-metrics-url {url}: only http:// and https:// are supported");
    }
    let response = client
        .get(parsed)
        .send()
        .await
        .with_context(|| format!("--server-metrics-url {url}: cannot fetch"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("--server-metrics-url {url}: answered {status}");
    }
    let text = response
        .text()
        .await
        .with_context(|| format!("--server-metrics-url {url}: cannot read the answer"))?;
    parse_prometheus_rss(&text)
        .map(|bytes| bytes / MB)
        .with_context(|| {
            format!("--server-metrics-url {url}: no process_resident_memory_bytes in the answer")
        })
}

/// The value of `process_resident_memory_bytes` (with or without labels) in Prometheus text.
pub fn parse_prometheus_rss(text: &str) -> Option<f64> {
    const NAME: &str = "process_resident_memory_bytes";
    text.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(NAME)?;
        let rest = match rest.chars().next()? {
            '{' => &rest[rest.find('}')? + 1..],
            c if c.is_whitespace() => rest,
            _ => return None, // a longer metric name
        };
        let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
        (value.is_finite() && value >= 0.0).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_rising_slope_is_projected_over_an_hour() {
        let rising: Vec<[f64; 2]> = (0..60).map(|i| [i as f64, 20.0 + 0.01 * i as f64]).collect();
        let s = MemorySeries::from_samples("x".into(), rising, Some(0.0)).unwrap();
        assert_eq!(s.projection(), "+36 MB in one hour");
        // A peak handed back: the fitted slope falls, and an hour of it would be nonsense.
        let falling: Vec<[f64; 2]> = (0..60).map(|i| [i as f64, 40.0 - 0.04 * i as f64]).collect();
        let s = MemorySeries::from_samples("x".into(), falling, Some(0.0)).unwrap();
        assert!(s.projected_growth_1h_mb < -100.0, "{}", s.projected_growth_1h_mb);
        assert_eq!(s.projection(), "not growing");
    }

    #[test]
    fn prometheus_text_is_read_with_and_without_labels() {
        let text = "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
                    # TYPE process_resident_memory_bytes gauge\n\
                    process_resident_memory_bytes_total 1\n\
                    process_resident_memory_bytes 1.2582912e+07\n";
        assert_eq!(parse_prometheus_rss(text), Some(12_582_912.0));
        let text = "process_resident_memory_bytes{pid=\"7\"} 2048 1700000000\n";
        assert_eq!(parse_prometheus_rss(text), Some(2048.0));
        assert_eq!(parse_prometheus_rss("up 1\n"), None);
        assert_eq!(parse_prometheus_rss("process_resident_memory_bytes NaN\n"), None);
    }

    #[test]
    fn series_starts_its_window_at_the_ramp() {
        let samples: Vec<[f64; 2]> = (0..20)
            .map(|i| [i as f64, if i < 5 { 10.0 * i as f64 } else { 50.0 }])
            .collect();
        let s = MemorySeries::from_samples("x".into(), samples, Some(4.5)).unwrap();
        assert_eq!(
            (s.initial_mb, s.final_mb, s.peak_mb, s.growth_mb),
            (50.0, 50.0, 50.0, 0.0)
        );
        assert_eq!(s.window_start_s, 5.0);
        assert_eq!(s.slope_mb_per_min, 0.0);
        assert!(MemorySeries::from_samples("x".into(), vec![], None).is_none());
    }
}
