//! Exact merging of runs: the manager's merge of its workers, and `phone-agent-load merge` of
//! results files. Both go through [`merge_parts`], so they give the same results for the same data.
//!
//! Counts add; latency histograms (Goose's `times_us` buckets) add bucket by bucket, so merged
//! percentiles are those of the union of the requests, never averages of percentiles; the crate's
//! own measurements merge with [`Snapshot::merge`] (histograms add, AI turns concatenate, so the
//! RTF percentiles are exact). Memory is not additive: each worker's is kept, and the verdicts
//! judge the worst.

use super::MergeArgs;
use crate::analysis::api::merge_timings;
use crate::analysis::results::{RawData, RawGoose, Results, WorkerResult};
use crate::analysis::{PostRunHook, RunRecord};
use crate::config::plan::{RunPlan, UserCounts};
use crate::measure::memory::{MemoryReport, MemorySeries};
use crate::measure::{Snapshot, Turn};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use goose::goose::GooseMethod;
use goose::metrics::{GooseRequestMetricAggregate, StatusCodeTimingSummary};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

/// One load generator's run, as a worker sends it and a results file keeps it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RunData {
    pub host: String,
    /// RFC 3339.
    pub started: String,
    pub duration_s: f64,
    pub interrupted: bool,
    pub interrupt_reason: Option<String>,
    pub memory: MemoryReport,
    pub raw: RawData,
    /// Failed requests by reason (absent from the results files of versions before it).
    #[serde(default)]
    pub failures_by_reason: BTreeMap<String, u64>,
}

impl RunData {
    pub fn from_record(r: &RunRecord) -> RunData {
        RunData {
            host: r.host.clone(),
            started: r.started.to_rfc3339(),
            duration_s: r.duration.as_secs_f64(),
            interrupted: r.interrupted,
            interrupt_reason: r.interrupt_reason.clone(),
            memory: r.memory.clone(),
            raw: RawData::of(r),
            failures_by_reason: r.failures_by_reason.clone(),
        }
    }

    /// A results file's run; an error naming the file when it lacks the raw data.
    pub fn from_results(r: Results, path: &Path) -> Result<RunData> {
        let Some(raw) = r.raw else {
            bail!(
                "{}: no raw data to merge (no \"raw\" key): it was written by an older phone-agent-load, \
                 or edited; rerun it with this version",
                path.display()
            );
        };
        Ok(RunData {
            host: r.host,
            started: r.timestamp,
            duration_s: r.duration_s,
            interrupted: r.interrupted,
            interrupt_reason: r.interrupt_reason,
            memory: r.memory.report,
            raw,
            failures_by_reason: r.failures_by_reason,
        })
    }
}

/// One run to merge, with its name and fate.
#[derive(Clone, Debug)]
pub struct Part {
    /// "w1" for a gaggle worker, the file's path for `merge`.
    pub name: String,
    /// The worker's address as the manager saw it.
    pub address: Option<String>,
    /// Why the worker was lost; its data is then its last report.
    pub lost: Option<String>,
    pub data: RunData,
}

/// Merges runs into one record for the post-run hook, and describes each for the `workers` list.
pub fn merge_parts(parts: &[Part]) -> Result<(RunRecord, Vec<WorkerResult>)> {
    let Some(first) = parts.first() else {
        bail!("nothing to merge");
    };
    let plan = merge_plans(parts)?;
    let mut starts = Vec::new();
    for p in parts {
        let started = DateTime::parse_from_rfc3339(&p.data.started)
            .with_context(|| format!("{}: bad start time {:?}", p.name, p.data.started))?
            .with_timezone(&Utc);
        starts.push((
            started,
            started + chrono::Duration::microseconds((p.data.duration_s * 1e6) as i64),
        ));
    }
    let started = starts.iter().map(|s| s.0).min().unwrap_or_else(Utc::now);
    let ended = starts.iter().map(|s| s.1).max().unwrap_or(started);
    let goose_parts: Vec<(&str, &RawGoose)> = parts
        .iter()
        .filter_map(|p| p.data.raw.goose.as_ref().map(|g| (p.name.as_str(), g)))
        .collect();
    let mut measured = Snapshot::default();
    for p in parts {
        measured.merge(&p.data.raw.measured);
    }
    // One order whatever the parts' order, so float sums (the mean RTF) come out the same.
    measured.ai.turns.sort_by(turn_order);
    let reasons: Vec<String> = parts
        .iter()
        .filter_map(|p| {
            p.data
                .interrupt_reason
                .as_ref()
                .map(|r| format!("{}: {r}", p.name))
        })
        .collect();
    let mut hosts: Vec<&str> = Vec::new();
    for p in parts {
        if !hosts.contains(&p.data.host.as_str()) {
            hosts.push(&p.data.host);
        }
    }
    let record = RunRecord {
        plan,
        host: if hosts.len() == 1 {
            first.data.host.clone()
        } else {
            hosts.join(", ")
        },
        started,
        duration: (ended - started).to_std().unwrap_or(Duration::ZERO),
        interrupted: parts.iter().any(|p| p.data.interrupted || p.lost.is_some()),
        interrupt_reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        goose: (!goose_parts.is_empty()).then(|| merge_goose(&goose_parts).to_metrics()),
        measured,
        memory: merge_memory(parts),
        failures_by_reason: parts.iter().fold(BTreeMap::new(), |mut all, p| {
            crate::measure::merge_counts(&mut all, &p.data.failures_by_reason);
            all
        }),
    };
    Ok((record, parts.iter().map(worker_result).collect()))
}

/// Orders turns by when they ended, then by every figure, so equal sets sort equally.
fn turn_order(a: &Turn, b: &Turn) -> std::cmp::Ordering {
    let figures = |t: &Turn| {
        [t.at_s, t.rtf, t.audio_ms]
            .into_iter()
            .chain([t.ttfa_ms, t.turn_ms, t.stt_ms, t.llm_ms, t.tts_ms].map(|v| v.unwrap_or(-1.0)))
            .collect::<Vec<f64>>()
    };
    let (fa, fb) = (figures(a), figures(b));
    fa.iter()
        .zip(&fb)
        .map(|(x, y)| x.total_cmp(y))
        .find(|o| o.is_ne())
        .unwrap_or(a.ok.cmp(&b.ok))
}

/// Adds Goose's rows exactly; threshold results are kept per part, labelled with its name.
pub fn merge_goose(parts: &[(&str, &RawGoose)]) -> RawGoose {
    let mut rows: BTreeMap<&String, Vec<&GooseRequestMetricAggregate>> = BTreeMap::new();
    for (_, g) in parts {
        for (key, row) in &g.requests {
            rows.entry(key).or_default().push(row);
        }
    }
    let mut errors = BTreeMap::new();
    for (_, g) in parts {
        for (key, e) in &g.errors {
            errors
                .entry(key.clone())
                .and_modify(|m: &mut goose::metrics::GooseErrorMetricAggregate| {
                    m.occurrences += e.occurrences
                })
                .or_insert_with(|| e.clone());
        }
    }
    RawGoose {
        duration: parts.iter().map(|(_, g)| g.duration).max().unwrap_or(0),
        maximum_users: parts.iter().map(|(_, g)| g.maximum_users).sum(),
        total_users: parts.iter().map(|(_, g)| g.total_users).sum(),
        requests: rows
            .into_iter()
            .map(|(k, r)| (k.clone(), merge_row(&r)))
            .collect(),
        errors,
        thresholds: parts
            .iter()
            .flat_map(|(name, g)| {
                g.thresholds.iter().map(move |t| {
                    let mut t = t.clone();
                    t.rule = format!("{} [{name}]", t.rule);
                    t
                })
            })
            .collect(),
    }
}

/// One Goose row from the same row of several runs.
fn merge_row(rows: &[&GooseRequestMetricAggregate]) -> GooseRequestMetricAggregate {
    let mut merged = rows[0].clone();
    merged.raw_data = merge_timings(rows.iter().map(|r| &r.raw_data));
    merged.coordinated_omission_data =
        rows.iter()
            .any(|r| r.coordinated_omission_data.is_some())
            .then(|| {
                merge_timings(
                    rows.iter()
                        .map(|r| r.coordinated_omission_data.as_ref().unwrap_or(&r.raw_data)),
                )
            });
    merged.success_count = rows.iter().map(|r| r.success_count).sum();
    merged.fail_count = rows.iter().map(|r| r.fail_count).sum();
    let mut counts: HashMap<u16, usize> = HashMap::new();
    let mut timings: HashMap<u16, StatusCodeTimingSummary> = HashMap::new();
    for r in rows {
        for (code, n) in &r.status_code_counts {
            *counts.entry(*code).or_default() += n;
        }
        for (code, t) in &r.status_code_timings {
            add_timing(timings.entry(*code).or_default(), t);
        }
    }
    merged.status_code_counts = counts;
    merged.status_code_timings = timings;
    merged
}

fn add_timing(into: &mut StatusCodeTimingSummary, t: &StatusCodeTimingSummary) {
    if t.count == 0 {
        return;
    }
    into.min_time_us = if into.count == 0 {
        t.min_time_us
    } else {
        into.min_time_us.min(t.min_time_us)
    };
    into.max_time_us = into.max_time_us.max(t.max_time_us);
    into.count += t.count;
    into.total_time_us += t.total_time_us;
}

/// The runs' plan: the first's profile and durations, every part's users added up; a kind is
/// skipped only when every part skipped it. Runs of different AI modes do not merge.
fn merge_plans(parts: &[Part]) -> Result<RunPlan> {
    let mut plan = parts[0].data.raw.plan.clone();
    for p in &parts[1..] {
        let other = &p.data.raw.plan;
        if other.ai_mode != plan.ai_mode {
            bail!(
                "cannot merge {} (AI mode {:?}) with {} (AI mode {:?}): their AI figures mean different things",
                parts[0].name,
                plan.ai_mode,
                p.name,
                other.ai_mode
            );
        }
        if other.profile.name != plan.profile.name {
            eprintln!(
                "note: {} ran profile {} and {} profile {}: the verdicts use {}'s thresholds",
                parts[0].name, plan.profile.name, p.name, other.profile.name, plan.profile.name
            );
        }
        plan.users = add_users(plan.users, other.users);
        plan.skips.api &= other.skips.api;
        plan.skips.ws &= other.skips.ws;
        plan.skips.ai &= other.skips.ai;
    }
    Ok(plan)
}

fn add_users(a: UserCounts, b: UserCounts) -> UserCounts {
    UserCounts {
        api: a.api + b.api,
        webhook: a.webhook + b.webhook,
        high_load: a.high_load + b.high_load,
        media_streams: a.media_streams + b.media_streams,
        ai_calls: a.ai_calls + b.ai_calls,
    }
}

/// Memory is per machine: the merged report shows the worst load generator and the worst view
/// of the server (largest growth), each named after its part; every part's own stays in `workers`.
fn merge_memory(parts: &[Part]) -> MemoryReport {
    let worst = |pick: fn(&MemoryReport) -> &Option<MemorySeries>| {
        parts
            .iter()
            .filter_map(|p| pick(&p.data.memory).as_ref().map(|s| (p, s)))
            .max_by(|a, b| a.1.growth_mb.total_cmp(&b.1.growth_mb))
            .map(|(p, s)| {
                let mut s = s.clone();
                s.source = format!("{} on {}: {}", p.name, p.data.raw.hostname, s.source);
                (p, s)
            })
    };
    let load_generator = worst(|m| &m.load_generator);
    let server = worst(|m| &m.server);
    MemoryReport {
        ramp_done_s: load_generator
            .as_ref()
            .and_then(|(p, _)| p.data.memory.ramp_done_s),
        load_generator: load_generator.map(|(_, s)| s),
        server: server.map(|(_, s)| s),
        server_error: parts.iter().find_map(|p| p.data.memory.server_error.clone()),
    }
}

fn worker_result(p: &Part) -> WorkerResult {
    let (requests, failures) = p.data.raw.goose.as_ref().map_or((0, 0), |g| {
        g.requests
            .values()
            .filter(|r| r.method != GooseMethod::Custom)
            .fold((0, 0), |(n, f), r| {
                (
                    n + (r.success_count + r.fail_count) as u64,
                    f + r.fail_count as u64,
                )
            })
    });
    let status = match (&p.lost, p.data.interrupted) {
        (Some(_), _) => "lost",
        (None, true) => "interrupted",
        (None, false) => "finished",
    };
    WorkerResult {
        name: p.name.clone(),
        hostname: p.data.raw.hostname.clone(),
        address: p.address.clone(),
        status: status.to_string(),
        detail: p.data.interrupt_reason.clone(),
        users: user_map(&p.data.raw.plan.users),
        duration_s: p.data.duration_s,
        api_requests: requests,
        api_failures: failures,
        memory: p.data.memory.load_generator.clone(),
    }
}

/// Users per kind as the results file names them.
fn user_map(u: &UserCounts) -> BTreeMap<String, u64> {
    [
        ("api", u.api),
        ("webhook", u.webhook),
        ("high_load", u.high_load),
        ("media_streams", u.media_streams),
        ("ai_calls", u.ai_calls),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v as u64))
    .collect()
}

/// Adds the `workers` list to the merged results.
pub struct WorkersHook(pub Vec<WorkerResult>);

impl PostRunHook for WorkersHook {
    fn name(&self) -> &str {
        "gaggle workers"
    }

    fn after_run(&self, _run: &RunRecord, results: &mut Results) -> Result<()> {
        results.workers = self.0.clone();
        Ok(())
    }
}

/// `merge`: returns the exit status.
pub fn merge_files(args: &MergeArgs) -> i32 {
    match merge_results_files(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn merge_results_files(args: &MergeArgs) -> Result<i32> {
    if let Some(out) = &args.output {
        crate::config::outputs::check_output_path(out).context("--output")?;
    }
    let mut parts = Vec::new();
    let mut fail_on = None;
    for path in &args.files {
        let r = Results::read_json(path)?;
        fail_on.get_or_insert(r.fail_on);
        parts.push(Part {
            name: path.display().to_string(),
            address: None,
            lost: None,
            data: RunData::from_results(r, path)?,
        });
    }
    let (record, workers) = merge_parts(&parts)?;
    println!("Merged {} results files", parts.len());
    let hooks: Vec<Box<dyn PostRunHook>> = vec![Box::new(WorkersHook(workers))];
    let fail_on = fail_on.unwrap_or(crate::analysis::verdicts::Status::Critical);
    Ok(crate::analysis::conclude(
        &record,
        args.output.as_deref(),
        fail_on,
        &hooks,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use goose::metrics::GooseRequestMetricTimingData;

    /// Goose's bucket key: 64 buckets per power of two, exact below 128 µs.
    fn floor(us: u64) -> u64 {
        let bits = if us < 128 { 0 } else { 63 - us.leading_zeros() - 6 };
        (us >> bits) << bits
    }

    fn timing(times_us: &[u64]) -> GooseRequestMetricTimingData {
        let mut t = GooseRequestMetricTimingData {
            times_us: times_us.iter().map(|&us| (floor(us), 1usize)).collect(),
            ..Default::default()
        };
        t.minimum_time_us = times_us.iter().copied().min().unwrap_or(0);
        t.maximum_time_us = times_us.iter().copied().max().unwrap_or(0);
        t.total_time_us = times_us.iter().sum();
        t.counter = times_us.len();
        t
    }

    fn raw(times_us: &[u64], fails: usize) -> RawGoose {
        let row = GooseRequestMetricAggregate {
            path: "/api/v1/health".into(),
            method: GooseMethod::Get,
            raw_data: timing(times_us),
            coordinated_omission_data: None,
            status_code_counts: [(200, times_us.len() - fails), (500, fails)].into(),
            status_code_timings: HashMap::new(),
            success_count: times_us.len() - fails,
            fail_count: fails,
            load_test_hash: 0,
            custom_method: String::new(),
        };
        RawGoose {
            duration: 10,
            requests: [("GET /api/v1/health".to_string(), row)].into(),
            ..Default::default()
        }
    }

    #[test]
    fn merged_rows_equal_the_union() {
        let a: Vec<u64> = (0..500).map(|i| 1_000 + i * 37 % 9_000).collect();
        let b: Vec<u64> = (0..300).map(|i| 20_000 + i * 101 % 50_000).collect();
        let all: Vec<u64> = a.iter().chain(&b).copied().collect();
        let merged = merge_goose(&[("a", &raw(&a, 3)), ("b", &raw(&b, 1))]);
        let row = &merged.requests["GET /api/v1/health"];
        assert_eq!(row.raw_data, timing(&all));
        assert_eq!((row.success_count, row.fail_count), (796, 4));
        assert_eq!(row.status_code_counts[&500], 4);
        for q in [0.5, 0.95, 0.99] {
            assert_eq!(row.raw_data.percentile_us(q), timing(&all).percentile_us(q));
        }
    }

    #[test]
    fn raw_goose_survives_json() {
        let r = raw(&[1, 2, 3_000, 45_678, 9_999_999], 1);
        let back: RawGoose = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        // And inside a message, as workers send it.
        let msg = super::super::protocol::ToManager::Progress(Box::new(super::super::protocol::Progress {
            elapsed_s: 1.5,
            goose: Some(r.clone()),
            measured: Snapshot::default(),
            failures_by_reason: [("timeout".to_string(), 3)].into(),
        }));
        let text = serde_json::to_string(&msg).unwrap();
        match serde_json::from_str(&text).unwrap() {
            super::super::protocol::ToManager::Progress(p) => {
                assert_eq!(p.goose, Some(r));
                assert_eq!(p.failures_by_reason["timeout"], 3);
            }
            other => panic!("{other:?}"),
        }
    }
}
