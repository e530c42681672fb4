//! The Python suite's results keys: every key of a results file of the suite's shape (the fixture)
//! is in what a real run writes, with the same JSON type; the suite's figures come from the run as
//! the README's mapping says; files written before them still read; and `users` counts the users
//! that ran (all of them in one kind under `--scenarios`).

use super::plan;
use super::synthetic::healthy_record;
use crate::harness::{count, results, run, run_against, Server};
use goose::metrics::ScenarioMetricAggregate;
use phone_agent_load::analysis::results::{LocustStats, Results};
use phone_agent_load::analysis::{analyse, user_kind};
use phone_agent_load::config::plan::{AiMode, Skips};
use phone_agent_load::config::utterances;
use phone_agent_load::scenarios::{ai_call, api, media_stream, webhooks, Shared};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const FIXTURE: &str = include_str!("../fixtures/python_suite_results.json");

/// Every path of `v` below its top ("api.stats.p95") with its JSON type; arrays are leaves.
fn key_tree(v: &Value) -> BTreeMap<String, &'static str> {
    fn walk(v: &Value, at: &str, out: &mut BTreeMap<String, &'static str>) {
        let Value::Object(map) = v else { return };
        for (key, child) in map {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            let kind = match child {
                Value::Null => "null",
                Value::Bool(_) => "bool",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            out.insert(path.clone(), kind);
            walk(child, &path, out);
        }
    }
    let mut out = BTreeMap::new();
    walk(v, "", &mut out);
    out
}

#[test]
fn a_real_run_writes_every_key_of_the_python_suite() {
    let fixture: Value = serde_json::from_str(FIXTURE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("load-results.json");
    let out = run(
        &[
            "--headless",
            "--run-time",
            "5s",
            "--output",
            path.to_str().unwrap(),
        ],
        Duration::from_secs(90),
    );
    out.assert_clean_exit();
    let ours = results(&path);
    let (want, have) = (key_tree(&fixture), key_tree(&ours));
    assert_eq!(
        want.len(),
        26,
        "the suite's 20 paths, 3 sections and their `success`: {want:?}"
    );
    let missing: Vec<String> = want
        .iter()
        .filter(|(p, kind)| have.get(*p) != Some(*kind))
        .map(|(p, kind)| format!("{p} ({kind}; ours {:?})", have.get(p)))
        .collect();
    assert!(
        missing.is_empty(),
        "missing or of another type: {missing:?}\n{ours:#}"
    );

    // The suite's figures are ours under its names.
    let api = &ours["api"];
    for (suite, own) in [
        ("requests", "requests"),
        ("failures", "failures"),
        ("avg_response_time", "avg_ms"),
        ("p50", "p50_ms"),
        ("p95", "p95_ms"),
        ("p99", "p99_ms"),
        ("rps", "rps"),
    ] {
        assert_eq!(api["stats"][suite], api[own], "api.stats.{suite}");
    }
    assert!(count(&api["requests"]) > 0, "{api}");
    assert_eq!(api["duration"], ours["duration_s"]);
    let stdout = api["stdout"].as_str().unwrap();
    assert!(
        stdout.contains("requests") && stdout.contains("/api/v1/calls [LIST]"),
        "{stdout}"
    );
    let ws = &ours["websocket"];
    assert_eq!(ws["duration"], ours["duration_s"]);
    assert_eq!(ws["avg_latency_ms"], ws["connect_avg_ms"]);
    assert_eq!(ws["p95_latency_ms"], ws["connect_p95_ms"]);
    let ai = &ours["ai_pipeline"];
    assert_eq!(ai["duration"], ours["duration_s"]);
    assert_eq!(ai["total_requests"], ai["turns"]);
    assert_eq!(ai["concurrent_calls"], ours["users"]["ai_calls"]);
    assert_eq!(ai["memory_peak_mb"], ours["memory"]["load_generator"]["peak_mb"]);
}

#[test]
fn the_suite_figures_come_from_the_run_record() {
    let r = analyse(&healthy_record(AiMode::Stream), &[]);
    let api = r.api.ran().unwrap();
    assert_eq!(api.duration, 60.0, "the run's wall time");
    assert_eq!(
        api.stats,
        LocustStats {
            requests: 100,
            failures: 1,
            avg_response_time: api.avg_ms,
            p50: api.p50_ms,
            p95: api.p95_ms,
            p99: api.p99_ms,
            rps: 10.0,
        }
    );
    assert!(api.avg_ms > 0.0 && api.p99_ms >= api.p95_ms, "{api:#?}");
    assert!(
        api.stdout.contains("100 requests, 1 failed") && api.stdout.contains("POST /api/v1/calls [CREATE]"),
        "{}",
        api.stdout
    );
    assert!(
        !api.stdout.contains("media stream"),
        "custom rows stay out: {}",
        api.stdout
    );

    // Handshakes of 2, 3, 4 and 50 ms.
    let ws = r.websocket.ran().unwrap();
    assert_eq!((ws.duration, ws.avg_latency_ms), (60.0, 14.75));
    assert_eq!(ws.p95_latency_ms, ws.connect_p95_ms);
    assert!(
        (49.0..=50.0).contains(&ws.p95_latency_ms),
        "{}",
        ws.p95_latency_ms
    );

    // Twenty answered turns of 600..=619 ms, over a 60 s run.
    let ai = r.ai_pipeline.ran().unwrap();
    assert_eq!(ai.duration, 60.0);
    assert_eq!(ai.concurrent_calls, 3, "the plan's: the metrics name no scenario");
    assert_eq!(ai.total_requests, 20);
    assert!(
        (ai.throughput_rps - 20.0 / 60.0).abs() < 1e-12,
        "{}",
        ai.throughput_rps
    );
    assert_eq!((ai.avg_latency_ms, ai.p95_latency_ms), (609.5, 618.0));
    assert_eq!(ai.memory_peak_mb, 42.0, "the load generator's peak");

    // Mock mode: a turn's latency is its three stages.
    let mock = analyse(&healthy_record(AiMode::Mock), &[]);
    let ai = mock.ai_pipeline.ran().unwrap();
    assert_eq!((ai.avg_latency_ms, ai.p95_latency_ms), (380.0, 380.0));
}

#[test]
fn results_files_without_the_suite_keys_still_read() {
    let r = analyse(&healthy_record(AiMode::Stream), &[]);
    let mut v = serde_json::to_value(&r).unwrap();
    let added: [(&str, &[&str]); 3] = [
        ("api", &["duration", "stdout", "stats"]),
        ("websocket", &["duration", "avg_latency_ms", "p95_latency_ms"]),
        (
            "ai_pipeline",
            &[
                "duration",
                "concurrent_calls",
                "total_requests",
                "throughput_rps",
                "avg_latency_ms",
                "p95_latency_ms",
                "memory_peak_mb",
            ],
        ),
    ];
    for (section, keys) in added {
        let obj = v[section].as_object_mut().unwrap();
        for key in keys {
            assert!(obj.remove(*key).is_some(), "{section}.{key}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("older.json");
    std::fs::write(&path, v.to_string()).unwrap();
    let back = Results::read_json(&path).unwrap();
    let api = back.api.ran().unwrap();
    assert_eq!(api.requests, 100);
    assert_eq!((api.duration, api.stdout.as_str()), (0.0, ""));
    assert_eq!(api.stats, LocustStats::default());
    assert_eq!(back.websocket.ran().unwrap().avg_latency_ms, 0.0);
    let ai = back.ai_pipeline.ran().unwrap();
    assert_eq!((ai.turns, ai.total_requests, ai.memory_peak_mb), (20, 0, 0.0));
}

fn scenario(index: usize, name: &str, users: std::ops::Range<usize>) -> ScenarioMetricAggregate {
    ScenarioMetricAggregate {
        index,
        name: name.into(),
        users: users.collect(),
        run_times: Default::default(),
    }
}

#[test]
fn users_are_those_goose_saw_run_else_the_plans_split() {
    let mut run = healthy_record(AiMode::Stream);
    let planned = analyse(&run, &[]).users;
    assert_eq!((planned["media_streams"], planned["ai_calls"]), (5, 3));
    run.goose.as_mut().unwrap().scenarios = vec![
        scenario(0, "API user", 0..0),
        scenario(1, "High-load user", 0..4),
        scenario(2, media_stream::SCENARIO, 4..6),
        scenario(3, ai_call::SCENARIO, 6..7),
        scenario(4, "Callback user", 7..8),
    ];
    let r = analyse(&run, &[]);
    let want: BTreeMap<String, u64> = [
        ("api", 0),
        ("webhook", 0),
        ("high_load", 4),
        ("media_streams", 2),
        ("ai_calls", 1),
        ("Callback user", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    assert_eq!(r.users, want);
    assert_eq!(r.ai_pipeline.ran().unwrap().concurrent_calls, 1);
    // Scenarios no user ran through tell nothing: the plan's split stays.
    for s in &mut run.goose.as_mut().unwrap().scenarios {
        s.users.clear();
    }
    assert_eq!(analyse(&run, &[]).users, planned);
}

#[test]
fn every_built_in_scenario_is_counted_under_its_kind() {
    let shared = Arc::new(Shared {
        plan: plan(AiMode::Stream, Skips::default()),
        measurements: Default::default(),
        utterances: Arc::new(utterances::builtin()),
        unknown_events: Default::default(),
    });
    type Build = fn(&Arc<Shared>) -> Result<goose::goose::Scenario, goose::GooseError>;
    let kinds: [(Build, &str); 5] = [
        (api::api_user, "api"),
        (webhooks::webhook_user, "webhook"),
        (api::high_load_user, "high_load"),
        (media_stream::media_stream_call, "media_streams"),
        (ai_call::ai_call, "ai_calls"),
    ];
    for (build, kind) in kinds {
        let scenario = build(&shared).unwrap();
        assert_eq!(user_kind(&scenario.name), kind, "{}", scenario.name);
    }
}

/// `--scenarios highloaduser` gives Goose's every user to the high-load user, and a rate limit's
/// 429s, which its rapid requests accept, are neither failures nor errors.
#[test]
fn scenarios_highloaduser_runs_only_high_load_users_and_accepted_429s_are_no_errors() {
    let server = Server::start(&["--rate-limit", "5"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    let args = [
        "--scenarios",
        "highloaduser",
        "--users",
        "3",
        "--skip-ws",
        "--skip-ai",
    ];
    let out = run_against(&server.url, 4, &args, &path, |_| {});
    out.assert_clean_exit();
    let r = results(&path);
    assert_eq!(
        r["users"],
        json!({"api": 0, "webhook": 0, "high_load": 3, "media_streams": 0, "ai_calls": 0}),
        "{}",
        out.all()
    );
    let api = &r["api"];
    let endpoints = api["endpoints"].as_array().unwrap();
    assert!(
        endpoints
            .iter()
            .all(|e| e["name"].as_str().unwrap().ends_with("[RAPID]")),
        "{api}"
    );
    let limited: u64 = endpoints
        .iter()
        .filter_map(|e| e["status_codes"].get("429"))
        .map(count)
        .sum();
    assert!(limited > 0, "the rate limit answered 429: {api}");
    assert_eq!(count(&api["failures"]), 0, "{api}");
    assert_eq!(api["errors"], json!({}), "accepted answers are no errors");
}
