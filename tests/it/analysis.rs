//! The post-run analysis: verdict edges, the slope fit, the results file's contract, the api
//! section from a real Goose run on loopback, the memory sampler, hooks and the HTML report.

use crate::harness;
use axum::routing::get;
use goose::config::GooseConfiguration;
use goose::metrics::{GooseMetrics, GooseRequestMetricAggregate, GooseRequestMetricTimingData, TimeBuckets};
use goose::prelude::*;
use phone_agent_load::analysis::results::{Results, Section};
use phone_agent_load::analysis::verdicts::{judge, Status, Verdict};
use phone_agent_load::analysis::{analyse, report, summary, PostRunHook, RunRecord};
use phone_agent_load::config::plan::{AiMode, Overrides, RunPlan, Skips};
use phone_agent_load::config::profile::{Profile, Thresholds};
use phone_agent_load::measure::memory::{MemoryReport, MemorySampler, MemorySeries, MemoryTarget};
use phone_agent_load::measure::{AiStats, Snapshot, StreamStats, Turn};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

fn plan(mode: AiMode, skips: Skips) -> RunPlan {
    let o = Overrides {
        skips,
        ..Default::default()
    };
    RunPlan::new(Profile::load("quick").unwrap(), &o, mode, false).unwrap()
}

// ---------------------------------------------------------------- verdicts

#[test]
fn every_default_threshold_edge_is_judged_both_ways() {
    let t = Thresholds::default();
    // (band, higher is worse): just better than warning, at warning, at critical, just past critical.
    let cases = [
        (t.api_p95_ms, true),
        (t.api_success_pct, false),
        (t.ws_success_pct, false),
        (t.ai_rtf, true),
        (t.memory_growth_mb, true),
    ];
    for (band, higher_is_worse) in cases {
        let step = if higher_is_worse { 1e-6 } else { -1e-6 };
        let expect = [
            (band.warning - step, Status::Target),
            (band.warning, Status::Warning),
            (band.warning + step, Status::Warning),
            (band.critical - step, Status::Warning),
            (band.critical, Status::Warning),
            (band.critical + step, Status::Critical),
        ];
        for (value, want) in expect {
            assert_eq!(judge(value, band, higher_is_worse), want, "{value} in {band:?}");
        }
    }
    // Points either side of the default bands.
    assert_eq!(judge(199.0, t.api_p95_ms, true), Status::Target);
    assert_eq!(judge(501.0, t.api_p95_ms, true), Status::Critical);
    assert_eq!(judge(99.5, t.api_success_pct, false), Status::Target);
    assert_eq!(judge(94.0, t.api_success_pct, false), Status::Critical);
    assert_eq!(judge(0.9, t.ai_rtf, true), Status::Warning);
    assert_eq!(judge(101.0, t.memory_growth_mb, true), Status::Critical);
}

// ---------------------------------------------------------------- slope fit

fn fit_slope(samples: &[(f64, f64)]) -> (f64, f64) {
    let f = phone_agent_load::measure::slope::fit(samples);
    (f.slope_per_min(), f.r2)
}

#[test]
fn flat_series_has_no_slope_and_no_nan() {
    let flat: Vec<(f64, f64)> = (0..120).map(|s| (s as f64, 512.0)).collect();
    let (slope, r2) = fit_slope(&flat);
    assert_eq!(slope, 0.0);
    assert!(r2.is_finite());
    for few in [&flat[..0], &flat[..1]] {
        let (slope, r2) = fit_slope(few);
        assert!(slope.is_finite() && r2.is_finite());
    }
    // Noise around a flat line: slope near 0, R² low.
    let noisy: Vec<(f64, f64)> = (0..600)
        .map(|s| (s as f64, 300.0 + ((s * 7919) % 13) as f64 * 0.1))
        .collect();
    let (slope, r2) = fit_slope(&noisy);
    assert!(slope.abs() < 0.05 && r2 < 0.1, "{slope} {r2}");
}

#[test]
fn linear_leak_of_10_mb_per_minute_is_measured() {
    // One sample a second for ten minutes, with a little deterministic jitter.
    let leak: Vec<(f64, f64)> = (0..600)
        .map(|s| {
            (
                s as f64,
                200.0 + s as f64 / 6.0 + if s % 2 == 0 { 0.3 } else { -0.3 },
            )
        })
        .collect();
    let (slope, r2) = fit_slope(&leak);
    assert!((slope - 10.0).abs() < 0.1, "slope {slope}");
    assert!(r2 > 0.99, "r2 {r2}");
}

#[test]
fn warm_up_then_flat_has_no_slope_after_the_ramp() {
    // A minute of warm-up climbing 3 MB/s, then flat for half a minute.
    let samples: Vec<[f64; 2]> = (0..90)
        .map(|s| [s as f64, 10.0 + 3.0 * (s.min(60) as f64)])
        .collect();
    let whole: Vec<(f64, f64)> = samples.iter().map(|p| (p[0], p[1])).collect();
    let (whole_slope, _) = fit_slope(&whole);
    assert!(
        whole_slope > 3.0,
        "the whole run looks like a leak: {whole_slope}"
    );
    let s = MemorySeries::from_samples("x".into(), samples, Some(60.0)).unwrap();
    assert!(s.slope_mb_per_min.abs() < 1e-9, "{}", s.slope_mb_per_min);
    assert_eq!(
        (s.initial_mb, s.final_mb, s.growth_mb, s.peak_mb),
        (190.0, 190.0, 0.0, 190.0)
    );
    assert_eq!(s.window_start_s, 60.0);
}

// ---------------------------------------------------------------- results file

/// A bucket key as Goose makes it (64 sub-buckets per power of two).
fn floor(us: u64) -> u64 {
    if us < 128 {
        return us;
    }
    let bits = 63 - us.leading_zeros() - 6;
    (us >> bits) << bits
}

fn timing(times_us: &[u64]) -> GooseRequestMetricTimingData {
    let mut t = GooseRequestMetricTimingData {
        times_us: times_us.iter().map(|&us| (floor(us), 1)).collect::<TimeBuckets>(),
        ..Default::default()
    };
    t.minimum_time_us = times_us.iter().copied().min().unwrap_or(0);
    t.maximum_time_us = times_us.iter().copied().max().unwrap_or(0);
    t.total_time_us = times_us.iter().sum();
    t.counter = times_us.len();
    t
}

fn row(
    path: &str,
    method: GooseMethod,
    times_us: &[u64],
    codes: &[(u16, usize)],
    fails: usize,
) -> GooseRequestMetricAggregate {
    GooseRequestMetricAggregate {
        path: path.to_string(),
        method,
        raw_data: timing(times_us),
        coordinated_omission_data: None,
        status_code_counts: codes.iter().copied().collect(),
        status_code_timings: HashMap::new(),
        success_count: times_us.len() - fails,
        fail_count: fails,
        load_test_hash: 0,
        custom_method: if method == GooseMethod::Custom {
            "WS".into()
        } else {
            String::new()
        },
    }
}

fn synthetic_metrics() -> GooseMetrics {
    let mut m = GooseMetrics::default();
    m.duration = 10;
    let fast: Vec<u64> = (0..90).map(|i| 10_000 + i * 100).collect();
    let slow: Vec<u64> = (0..10).map(|i| 300_000 + i * 1000).collect();
    m.requests.insert(
        "GET /api/v1/health".into(),
        row("/api/v1/health", GooseMethod::Get, &fast, &[(200, 90)], 0),
    );
    m.requests.insert(
        "POST /api/v1/calls [CREATE]".into(),
        row(
            "/api/v1/calls [CREATE]",
            GooseMethod::Post,
            &slow,
            &[(201, 9), (429, 1)],
            1,
        ),
    );
    m.requests.insert(
        "WS media stream".into(),
        row(
            "media stream",
            GooseMethod::Custom,
            &[30_000_000; 5],
            &[(0, 5)],
            0,
        ),
    );
    m
}

fn synthetic_snapshot() -> Snapshot {
    let mut streams = StreamStats {
        calls_attempted: 10,
        calls_connected: 10,
        calls_completed: 9,
        calls_failed: 1,
        messages_sent: 15_000,
        messages_received: 300,
        bytes_sent: 4_000_000,
        bytes_received: 90_000,
        frames_scheduled: 15_000,
        frames_sent: 14_850,
        frames_late: 30,
        ..Default::default()
    };
    for us in [2_000, 3_000, 4_000, 50_000] {
        streams.connect_us.record(us);
    }
    streams.error("closed by server mid-call");
    let turns = (0..20)
        .map(|i| Turn {
            at_s: 5.0 + i as f64,
            audio_ms: 2000.0,
            ok: true,
            rtf: 0.3 + 0.01 * i as f64,
            ttfa_ms: Some(400.0 + i as f64),
            turn_ms: Some(600.0 + i as f64),
            stt_ms: Some(100.0),
            llm_ms: Some(200.0),
            tts_ms: Some(80.0),
        })
        .collect();
    Snapshot {
        streams,
        ai: AiStats {
            calls: 3,
            turns,
            errors: Default::default(),
        },
    }
}

fn synthetic_memory(server_growth_per_s: f64) -> MemoryReport {
    let lg: Vec<[f64; 2]> = (0..60).map(|s| [s as f64, 40.0 + (s % 3) as f64]).collect();
    let server: Vec<[f64; 2]> = (0..60)
        .map(|s| [s as f64, 80.0 + server_growth_per_s * s as f64])
        .collect();
    MemoryReport::from_samples(
        Some(("load generator".into(), lg)),
        Some(("pid 1".into(), server)),
        Some(5.0),
    )
}

fn healthy_record(mode: AiMode) -> RunRecord {
    let mut run = RunRecord::new(plan(mode, Skips::default()), "http://127.0.0.1:1");
    run.duration = Duration::from_secs(60);
    run.goose = Some(synthetic_metrics());
    run.measured = synthetic_snapshot();
    run.memory = synthetic_memory(0.1);
    run
}

#[test]
fn results_hold_every_contract_key_and_round_trip() {
    let results = analyse(&healthy_record(AiMode::Stream), &[]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("load-results.json");
    results.write_json(&path).unwrap();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();

    let has = |obj: &Value, keys: &[&str], at: &str| {
        for k in keys {
            assert!(obj.get(k).is_some(), "{at} lacks \"{k}\": {obj:#}");
        }
    };
    has(
        &v,
        &[
            "profile",
            "timestamp",
            "host",
            "passed",
            "interrupted",
            "interrupt_reason",
            "duration_s",
        ],
        "top",
    );
    assert!(chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).is_ok());
    has(
        &v["api"],
        &[
            "success",
            "requests",
            "failures",
            "success_rate",
            "avg_ms",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "rps",
            "endpoints",
        ],
        "api",
    );
    for e in v["api"]["endpoints"].as_array().unwrap() {
        has(
            e,
            &["name", "requests", "failures", "p50_ms", "p95_ms", "status_codes"],
            "endpoint",
        );
    }
    has(
        &v["websocket"],
        &[
            "success",
            "connections_attempted",
            "connections_successful",
            "connections_failed",
            "success_rate",
            "messages_sent",
            "messages_received",
            "bytes_sent",
            "bytes_received",
            "frame_rate_pct",
            "late_frames_pct",
            "connect_p95_ms",
            "errors",
        ],
        "websocket",
    );
    has(
        &v["ai_pipeline"],
        &[
            "success",
            "mode",
            "calls",
            "turns",
            "successful_turns",
            "success_rate",
            "rtf",
            "realtime_capable_pct",
            "ttfa_ms",
            "errors",
        ],
        "ai_pipeline",
    );
    has(&v["ai_pipeline"]["rtf"], &["mean", "p50", "p95", "max"], "rtf");
    has(&v["ai_pipeline"]["ttfa_ms"], &["p50", "p95"], "ttfa_ms");
    for who in ["load_generator", "server"] {
        has(
            &v["memory"][who],
            &[
                "initial_mb",
                "peak_mb",
                "final_mb",
                "growth_mb",
                "slope_mb_per_min",
                "r2",
                "samples",
            ],
            who,
        );
        assert_eq!(v["memory"][who]["samples"][0].as_array().unwrap().len(), 2);
    }
    let verdicts = v["verdicts"].as_array().unwrap();
    // API p95 and success, stream connections and completed calls, AI turns and RTF, two memories.
    assert_eq!(verdicts.len(), 8, "{verdicts:#?}");
    for verdict in verdicts {
        has(
            verdict,
            &[
                "metric", "value", "unit", "status", "target", "warning", "critical",
            ],
            "verdict",
        );
    }

    // Figures from the synthetic data.
    assert_eq!(v["api"]["requests"], 100);
    assert_eq!(v["api"]["failures"], 1);
    assert_eq!(v["api"]["success_rate"], 99.0);
    assert_eq!(v["api"]["rps"], 10.0);
    assert_eq!(
        v["api"]["endpoints"].as_array().unwrap().len(),
        2,
        "the WS row is not an API endpoint"
    );
    assert_eq!(v["api"]["endpoints"][0]["name"], "/api/v1/calls [CREATE]");
    assert_eq!(v["api"]["endpoints"][0]["status_codes"]["429"], 1);
    assert_eq!(v["websocket"]["success_rate"], 100.0);
    assert_eq!(v["websocket"]["frame_rate_pct"], 99.0);
    assert_eq!(v["ai_pipeline"]["mode"], "stream");
    assert_eq!(v["ai_pipeline"]["realtime_capable_pct"], 100.0);
    assert_eq!(v["ai_pipeline"]["rtf"]["max"], 0.49);
    assert!(v["ai_pipeline"].get("stt_ms").is_none());
    // 99 % success is a warning; 10 % of requests at 300 ms puts the merged p95 past 200 ms.
    let status = |metric: &str| {
        verdicts
            .iter()
            .find(|x| x["metric"] == metric)
            .map(|x| x["status"].clone())
            .unwrap()
    };
    assert_eq!(status("API success rate"), "warning");
    assert_eq!(status("API p95 latency"), "warning");
    assert_eq!(status("AI real-time factor"), "target");
    assert_eq!(v["passed"], true);
    assert_eq!(
        v["api"]["success"], true,
        "warnings do not fail a section by default"
    );

    let back = Results::read_json(&path).unwrap();
    assert_eq!(back, results);
    assert_eq!(results.exit_code(Status::Critical), 0);
    assert_eq!(results.exit_code(Status::Warning), 2);
}

#[test]
fn mock_mode_reports_stages_and_skipped_sections_are_marked() {
    let mut run = healthy_record(AiMode::Mock);
    run.plan = plan(
        AiMode::Mock,
        Skips {
            api: false,
            ws: true,
            ai: false,
        },
    );
    let r = analyse(&run, &[]);
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["websocket"], serde_json::json!({"skipped": true}));
    for stage in ["stt_ms", "llm_ms", "tts_ms"] {
        assert_eq!(
            v["ai_pipeline"][stage]["avg"],
            100.0
                * [1.0, 2.0, 0.8][["stt_ms", "llm_ms", "tts_ms"]
                    .iter()
                    .position(|s| *s == stage)
                    .unwrap()]
        );
    }
    assert!(v["ai_pipeline"].get("ttfa_ms").is_none());
    assert!(r.verdicts.iter().all(|v| v.metric != "media stream success"));
    // A skipped section reads back as skipped.
    let text = serde_json::to_string(&r).unwrap();
    let back: Results = serde_json::from_str(&text).unwrap();
    assert_eq!(back.websocket, Section::Skipped);
}

#[test]
fn sections_without_data_get_no_verdict_and_do_not_succeed() {
    let mut run = RunRecord::new(plan(AiMode::Stream, Skips::default()), "http://127.0.0.1:1");
    run.interrupted = true;
    run.interrupt_reason = Some("target unreachable".into());
    let r = analyse(&run, &[]);
    assert!(r.verdicts.is_empty(), "{:?}", r.verdicts);
    assert!(!r.api.ran().unwrap().success && !r.ai_pipeline.ran().unwrap().success);
    assert!(r.passed);
    assert_eq!(
        r.exit_code(Status::Critical),
        1,
        "an interrupted run is not a clean pass"
    );
    let text = summary::summary_text(&r);
    assert!(
        text.contains("no data") && text.contains("INTERRUPTED: target unreachable"),
        "{text}"
    );
}

#[test]
fn leak_and_slow_pipeline_are_critical_and_fail_the_run() {
    let mut run = healthy_record(AiMode::Stream);
    run.memory = synthetic_memory(3.0); // 3 MB/s for a minute: ~160 MB after the ramp
    for t in &mut run.measured.ai.turns {
        t.rtf *= 4.0;
    }
    let r = analyse(&run, &[]);
    let status = |m: &str| r.verdicts.iter().find(|v| v.metric == m).unwrap().status;
    assert_eq!(status("server memory growth"), Status::Critical);
    assert_eq!(status("load generator memory growth"), Status::Target);
    assert_eq!(status("AI real-time factor"), Status::Critical);
    assert!(!r.passed && !r.memory.success && !r.ai_pipeline.ran().unwrap().success);
    assert!(r.api.ran().unwrap().success);
    assert_eq!(r.exit_code(Status::Critical), 2);
    let server = r.memory.report.server.as_ref().unwrap();
    assert!((server.slope_mb_per_min - 180.0).abs() < 1e-6 && server.r2 > 0.999);
    let text = summary::summary_text(&r);
    assert!(text.contains("pipeline slower than real time"), "{text}");
    assert!(
        text.contains("MB in one hour") && text.contains("RESULT: FAILED"),
        "{text}"
    );
}

#[test]
fn unanswered_turns_and_failed_calls_are_critical_though_everything_connected() {
    let mut run = healthy_record(AiMode::Stream);
    // Every stream connected, but most calls ended in a protocol error or a drop.
    run.measured.streams.calls_completed = 2;
    run.measured.streams.calls_failed = 8;
    // The agent never answered: no RTF, so only the turn verdict can say so.
    for t in &mut run.measured.ai.turns {
        t.ok = false;
    }
    let r = analyse(&run, &[]);
    let verdict = |m: &str| r.verdicts.iter().find(|v| v.metric == m).cloned();
    assert_eq!(verdict("media stream success").unwrap().status, Status::Target);
    let calls = verdict("media stream calls completed").unwrap();
    assert_eq!((calls.value, calls.status), (20.0, Status::Critical));
    let turns = verdict("AI turn success").unwrap();
    assert_eq!((turns.value, turns.status), (0.0, Status::Critical));
    assert!(
        verdict("AI real-time factor").is_none(),
        "no answered turn, no RTF"
    );
    assert!(!r.passed);
    assert_eq!(r.exit_code(Status::Critical), 2);

    // 19 of 20 answered: a warning at the 95 % edge; 9 of 10 calls: a warning.
    let mut run = healthy_record(AiMode::Stream);
    run.measured.ai.turns[0].ok = false;
    run.measured.streams.calls_completed = 9;
    run.measured.streams.calls_failed = 1;
    let r = analyse(&run, &[]);
    let status = |m: &str| r.verdicts.iter().find(|v| v.metric == m).unwrap().status;
    assert_eq!(status("AI turn success"), Status::Warning);
    assert_eq!(status("media stream calls completed"), Status::Warning);
}

#[test]
fn read_json_refuses_bad_files_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let err = format!("{:#}", Results::read_json(&missing).unwrap_err());
    assert!(
        err.contains("cannot read results file") && err.contains("nope.json"),
        "{err}"
    );
    let cases = [
        ("garbage", "not JSON"),
        ("[1,2]", "expected a JSON object"),
        ("{\"profile\": \"quick\"}", "no \"api\" key"),
    ];
    for (text, want) in cases {
        let p = dir.path().join("bad.json");
        std::fs::write(&p, text).unwrap();
        let err = format!("{:#}", Results::read_json(&p).unwrap_err());
        assert!(err.contains(want), "{text}: {err}");
    }
    // A well-formed file with a wrong type inside names the field.
    let mut v = serde_json::to_value(analyse(&healthy_record(AiMode::Stream), &[])).unwrap();
    v["api"]["requests"] = Value::String("many".into());
    let p = dir.path().join("typed.json");
    std::fs::write(&p, v.to_string()).unwrap();
    let err = format!("{:#}", Results::read_json(&p).unwrap_err());
    assert!(
        err.contains("not a valid results file") && err.contains("invalid type"),
        "{err}"
    );
}

#[test]
fn unwritable_output_is_refused_and_writes_are_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let r = analyse(&healthy_record(AiMode::Stream), &[]);
    let bad = dir.path().join("no-such-dir").join("out.json");
    assert!(phone_agent_load::config::outputs::check_output_path(&bad).is_err());
    assert!(phone_agent_load::config::outputs::check_output_path(dir.path()).is_err());
    assert!(r.write_json(&bad).is_err());
    let good = dir.path().join("out.json");
    phone_agent_load::config::outputs::check_output_path(&good).unwrap();
    r.write_json(&good).unwrap();
    r.write_json(&good).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("out.json")],
        "no temp files left behind"
    );
}

// ---------------------------------------------------------------- hooks

struct AddsFigureAndVerdict;
impl PostRunHook for AddsFigureAndVerdict {
    fn name(&self) -> &str {
        "webhook p99"
    }
    fn after_run(&self, run: &RunRecord, results: &mut Results) -> anyhow::Result<()> {
        let p99 = run.goose.as_ref().map(|g| g.requests.len() as f64).unwrap_or(0.0);
        results.add_figure("rows", p99, "");
        let band = phone_agent_load::config::profile::Band {
            warning: 1.0,
            critical: 2.0,
        };
        results.add_verdict(Verdict::judged("rows seen", p99, "", band, true, Some("api")));
        Ok(())
    }
}

struct Fails;
impl PostRunHook for Fails {
    fn name(&self) -> &str {
        "fails"
    }
    fn after_run(&self, _: &RunRecord, _: &mut Results) -> anyhow::Result<()> {
        anyhow::bail!("no database")
    }
}

struct Panics;
impl PostRunHook for Panics {
    fn name(&self) -> &str {
        "panics"
    }
    fn after_run(&self, _: &RunRecord, _: &mut Results) -> anyhow::Result<()> {
        panic!("hook bug")
    }
}

#[test]
fn hooks_add_figures_and_verdicts_and_their_failures_are_contained() {
    let hooks: Vec<Box<dyn PostRunHook>> =
        vec![Box::new(Fails), Box::new(Panics), Box::new(AddsFigureAndVerdict)];
    let r = analyse(&healthy_record(AiMode::Stream), &hooks);
    assert_eq!(r.hook_errors.len(), 2, "{:?}", r.hook_errors);
    assert!(r.hook_errors[0].contains("'fails'") && r.hook_errors[0].contains("no database"));
    assert!(r.hook_errors[1].contains("hook bug"));
    assert_eq!(r.figures[0].value, 3.0);
    let v = r.verdicts.last().unwrap();
    assert_eq!((v.metric.as_str(), v.status), ("rows seen", Status::Critical));
    assert!(
        !r.passed && !r.api.ran().unwrap().success,
        "a hook's critical verdict fails its section"
    );
    assert!(r.ai_pipeline.ran().unwrap().success);
}

// ---------------------------------------------------------------- HTML report

#[test]
fn html_report_has_charts_and_the_verdict_table() {
    let mut run = healthy_record(AiMode::Stream);
    run.host = "http://127.0.0.1:1/<x>".into();
    let r = analyse(&run, &[]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.html");
    report::write_html(&r, &path).unwrap();
    let html = std::fs::read_to_string(&path).unwrap();
    assert!(
        html.matches("<svg").count() >= 3,
        "memory, RTF histogram, RTF over time"
    );
    for text in [
        "Memory over the run",
        "RTF distribution",
        "warning 0.8x",
        "critical 1.0x",
        "API p95 latency",
        "server fit",
    ] {
        assert!(html.contains(text), "{text} missing");
    }
    assert!(
        html.contains("&lt;x&gt;") && !html.contains("<x>"),
        "text is escaped"
    );
    assert!(
        !html.contains("<script") && !html.contains("src=\"http"),
        "no network, no scripts"
    );
    // Nothing to plot is still a page.
    let empty = analyse(&RunRecord::new(plan(AiMode::Stream, Skips::default()), "h"), &[]);
    report::write_html(&empty, &path).unwrap();
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("No memory samples"));
}

// ---------------------------------------------------------------- api section from real Goose

async fn serve(router: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (url, task)
}

async fn calls(user: &mut GooseUser) -> TransactionResult {
    for _ in 0..8 {
        user.get("/fast").await?;
    }
    user.get("/slow").await?;
    user.get("/missing").await?;
    // A whole media call, as the stream scenarios record it: must stay out of the API figures.
    user.record_custom_request_duration("WS", "media stream", Duration::from_secs(30), true, None, None)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_section_from_a_real_goose_run_merges_histograms_and_drops_custom_rows() {
    let router = axum::Router::new().route("/fast", get(|| async { "ok" })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            "ok"
        }),
    );
    let (url, server) = serve(router).await;
    let config = GooseConfiguration::parse_args_default(&[
        "--host",
        &url,
        "--users",
        "2",
        "--increase-rate",
        "100",
        "--iterations",
        "5",
        "--quiet",
        "--no-telnet",
        "--no-print-metrics",
    ])
    .unwrap();
    let attack = GooseAttack::initialize_with_config(config)
        .unwrap()
        .register_scenario(scenario!("Api").register_transaction(transaction!(calls)));
    let metrics = tokio::time::timeout(Duration::from_secs(60), attack.execute())
        .await
        .expect("goose run finished in time")
        .unwrap();
    server.abort();

    let mut run = RunRecord::new(plan(AiMode::Stream, Skips::default()), &url);
    run.duration = Duration::from_secs(2);
    run.goose = Some(metrics);
    let r = analyse(&run, &[]);
    let api = r.api.ran().unwrap();
    // 2 users x 5 iterations x 10 HTTP requests; the custom WS rows are not among them.
    assert_eq!(api.requests, 100, "{api:#?}");
    assert_eq!(api.failures, 10, "the 404s");
    assert_eq!(api.success_rate, 90.0);
    assert_eq!(api.endpoints.len(), 3);
    let missing = api.endpoints.iter().find(|e| e.name == "/missing").unwrap();
    assert_eq!(missing.status_codes.get("404"), Some(&10));
    let fast = api.endpoints.iter().find(|e| e.name == "/fast").unwrap();
    assert_eq!(fast.status_codes.get("200"), Some(&80));
    assert!(
        api.max_ms < 10_000.0,
        "no 30 s custom times in the API figures: {}",
        api.max_ms
    );
    // 10 % of requests are slow: the merged p95 is theirs; the mean of the rows' p95s would not be.
    let slow = api.endpoints.iter().find(|e| e.name == "/slow").unwrap();
    assert!(api.p95_ms >= 145.0, "merged p95 {}", api.p95_ms);
    let mean_of_p95s = api.endpoints.iter().map(|e| e.p95_ms).sum::<f64>() / 3.0;
    assert!(mean_of_p95s < 100.0 && slow.p95_ms >= 145.0);
    assert!(api.p50_ms < 100.0, "p50 {}", api.p50_ms);
    let seconds = match run.goose.as_ref().unwrap().duration {
        0 => 2.0, // Goose counted under a second: the run's own duration is used
        s => s as f64,
    };
    assert_eq!(api.rps, 100.0 / seconds);
    let p95 = r.verdicts.iter().find(|v| v.metric == "API p95 latency").unwrap();
    assert_eq!(p95.status, Status::Target, "150 ms is under 200 ms");
    assert_eq!(
        r.verdicts
            .iter()
            .find(|v| v.metric == "API success rate")
            .unwrap()
            .status,
        Status::Critical
    );
}

// ---------------------------------------------------------------- memory sampler

/// Samples this process's own memory, which the tests running beside it would blur: alone in a
/// process of its own.
#[test]
fn sampler_sees_a_50_mb_allocation_as_growth() {
    harness::alone_in_a_process(
        "analysis::sampler_sees_a_50_mb_allocation_as_growth",
        Duration::from_secs(60),
        || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(a_50_mb_allocation_is_growth())
        },
    );
}

async fn a_50_mb_allocation_is_growth() {
    let sampler = MemorySampler::start(
        Some(MemoryTarget::Pid(std::process::id())),
        Duration::from_millis(50),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    sampler.ramp_done();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let block = vec![1u8; 50 * 1024 * 1024]; // written, so resident
    tokio::time::sleep(Duration::from_millis(400)).await;
    let report = tokio::time::timeout(Duration::from_secs(10), sampler.stop())
        .await
        .unwrap();
    std::hint::black_box(&block);
    drop(block);
    let lg = report.load_generator.expect("load generator sampled");
    assert!(lg.samples.len() >= 10, "{} samples", lg.samples.len());
    assert!(
        lg.growth_mb > 45.0 && lg.growth_mb < 80.0,
        "growth {} MB",
        lg.growth_mb
    );
    assert!(lg.peak_mb >= lg.final_mb);
    // Growth is seen at once; a slope needs MIN_FIT_SPAN_S of samples, which 0.6 s is not.
    assert_eq!((lg.slope_mb_per_min, lg.r2), (0.0, 0.0));
    assert!(report.ramp_done_s.unwrap() >= 0.25);
    assert!(lg.window_start_s >= report.ramp_done_s.unwrap());
    let server = report.server.expect("server (this process, by pid) sampled");
    assert!(server.growth_mb > 45.0, "{}", server.growth_mb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampler_reads_a_prometheus_endpoint_and_checks_targets() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let rss = Arc::new(AtomicU64::new(100 * 1024 * 1024));
    let served = rss.clone();
    let router = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let bytes = served.fetch_add(1024 * 1024, Ordering::SeqCst);
                async move {
                    format!(
                        "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {bytes}\n"
                    )
                }
            }),
        )
        .route("/empty", get(|| async { "up 1\n" }));
    let (url, server) = serve(router).await;
    let target = MemoryTarget::MetricsUrl(format!("{url}/metrics"));
    target.check().await.unwrap();
    let sampler = MemorySampler::start(Some(target), Duration::from_millis(30));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = tokio::time::timeout(Duration::from_secs(10), sampler.stop())
        .await
        .unwrap();
    let s = report.server.expect("server series from the endpoint");
    assert!(s.initial_mb >= 100.0 && s.growth_mb >= 3.0, "{s:?}");
    assert!(report.server_error.is_none(), "{:?}", report.server_error);

    let err = MemoryTarget::MetricsUrl(format!("{url}/empty"))
        .check()
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("no process_resident_memory_bytes"),
        "{err:#}"
    );
    server.abort();
    let err = MemoryTarget::MetricsUrl("ftp://127.0.0.1/x".into())
        .check()
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("only http"), "{err:#}");
    let err = MemoryTarget::Pid(u32::MAX - 1).check().await.unwrap_err();
    assert!(format!("{err:#}").contains("no such process"), "{err:#}");
    let err = MemoryTarget::ProcessName("no-such-process-xyz".into())
        .check()
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("no running process"), "{err:#}");

    // A server that goes away mid-run: samples stop, the error is kept, the report still comes.
    let sampler = MemorySampler::start(
        Some(MemoryTarget::MetricsUrl(format!("{url}/metrics"))),
        Duration::from_millis(30),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = tokio::time::timeout(Duration::from_secs(15), sampler.stop())
        .await
        .unwrap();
    assert!(report.server.is_none() && report.server_error.is_some());
    assert!(report.load_generator.is_some());
}
