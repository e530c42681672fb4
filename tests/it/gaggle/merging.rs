//! A manager and two workers merging exactly: counts, failures by reason, percentiles of the
//! union of the workers' histograms, and `merge` of the workers' own files agreeing with the
//! manager's merge.

use super::{Proc, LIMIT};
use crate::harness::{free_port, results, Server};
use goose::goose::GooseMethod;
use goose::metrics::GooseRequestMetricTimingData;
use phone_agent_load::analysis::results::RawData;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

fn raw(r: &Value) -> RawData {
    serde_json::from_value(r["raw"].clone()).expect("raw data in the results file")
}

/// The union of the runs' HTTP histograms, built here independently of the crate's merge.
fn union_of_http_rows(raws: &[RawData]) -> GooseRequestMetricTimingData {
    let rows: Vec<&GooseRequestMetricTimingData> = raws
        .iter()
        .flat_map(|r| r.goose.as_ref().unwrap().requests.values())
        .filter(|row| row.method != GooseMethod::Custom)
        .map(|row| &row.raw_data)
        .filter(|t| t.counter > 0)
        .collect();
    let mut all = GooseRequestMetricTimingData {
        times_us: rows
            .iter()
            .flat_map(|t| t.times_us.iter().map(|(&b, &c)| (b, c)))
            .collect(),
        ..Default::default()
    };
    all.minimum_time_us = rows.iter().map(|t| t.minimum_time_us).min().unwrap();
    all.maximum_time_us = rows.iter().map(|t| t.maximum_time_us).max().unwrap();
    all.total_time_us = rows.iter().map(|t| t.total_time_us).sum();
    all.counter = rows.iter().map(|t| t.counter).sum();
    all
}

/// Nearest-rank quantile, as the results file computes RTF percentiles.
fn nearest_rank(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

#[test]
fn manager_and_two_workers_merge_exactly_and_merge_agrees() {
    // A fifth of the API answers fail, so the failures by reason have something to add up (and
    // the merged verdict is critical).
    let server = Server::start(&["--error-rate", "0.2"]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let manager = Proc::start(
        &[
            "--manager",
            "--expect-workers",
            "2",
            "--manager-bind-port",
            &port,
            "--host",
            &server.url,
            "--run-time",
            "3s",
            "--hatch-rate",
            "100",
            "--skip-ws",
            "--ai-mode",
            "mock",
            "--headless",
            "--output",
            "m.json",
        ],
        dir.path(),
        &[],
    );
    let workers: Vec<Proc> = ["w1.json", "w2.json"]
        .iter()
        .map(|out| {
            Proc::start(
                &["--worker", "--manager-port", &port, "--output", out],
                dir.path(),
                &[],
            )
        })
        .collect();
    let (code, out) = manager.finish(LIMIT);
    assert_eq!(
        code,
        Some(2),
        "a fifth of the requests failing is critical\n{out}"
    );
    for w in workers {
        let (code, out) = w.finish(Duration::from_secs(10));
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("Results delivered to the gaggle manager"), "{out}");
    }
    let m = results(&dir.path().join("m.json"));
    let ws: Vec<Value> = ["w1.json", "w2.json"]
        .iter()
        .map(|f| results(&dir.path().join(f)))
        .collect();

    // Counts add up, and each worker carried load.
    let requests: Vec<u64> = ws
        .iter()
        .map(|w| w["api"]["requests"].as_u64().unwrap())
        .collect();
    assert!(requests.iter().all(|&n| n > 0), "{requests:?}");
    assert_eq!(
        m["api"]["requests"].as_u64().unwrap(),
        requests.iter().sum::<u64>()
    );
    let turns: Vec<u64> = ws
        .iter()
        .map(|w| w["ai_pipeline"]["turns"].as_u64().unwrap())
        .collect();
    assert_eq!(
        m["ai_pipeline"]["turns"].as_u64().unwrap(),
        turns.iter().sum::<u64>()
    );
    let users: u64 = m["users"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        users, 13,
        "quick without media streams: 10 API users and 3 AI calls"
    );

    // Failures by reason add up too, and the manager's console table shows them.
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for w in &ws {
        for (reason, n) in w["failures_by_reason"].as_object().unwrap() {
            *by_reason.entry(reason.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    // The API and webhook users name a 500 "Unexpected status 500", the high-load user
    // "Unexpected status: 500", as the Python suite's Locust users did.
    assert!(
        by_reason
            .keys()
            .all(|k| k == "Unexpected status 500" || k == "Unexpected status: 500"),
        "{by_reason:?}"
    );
    assert_eq!(m["failures_by_reason"], serde_json::to_value(&by_reason).unwrap());
    let failed: u64 = ws.iter().map(|w| w["api"]["failures"].as_u64().unwrap()).sum();
    let counted: u64 = by_reason.values().sum();
    assert!(failed > 0 && counted >= failed, "{by_reason:?} vs {failed}");
    let table = out.split("Failed requests by reason").nth(1).unwrap_or_default();
    assert!(table.contains("Unexpected status 500"), "{out}");

    // Percentiles are those of the union of the workers' histograms (and samples).
    let raws: Vec<RawData> = ws.iter().map(raw).collect();
    let all = union_of_http_rows(&raws);
    assert_eq!(all.counter as u64, m["api"]["requests"].as_u64().unwrap());
    for (key, q) in [("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)] {
        let want = all.percentile_us(q) as f64 / 1000.0;
        assert_eq!(m["api"][key].as_f64().unwrap(), want, "{key}");
    }
    let rtfs: Vec<f64> = raws
        .iter()
        .flat_map(|r| r.measured.ai.turns.iter().filter(|t| t.ok).map(|t| t.rtf))
        .collect();
    if !rtfs.is_empty() {
        assert_eq!(
            m["ai_pipeline"]["rtf"]["p95"].as_f64().unwrap(),
            nearest_rank(rtfs, 0.95)
        );
    }

    // The workers list names both, with their shares.
    let list = m["workers"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|w| w["status"] == "finished"), "{list:?}");

    // `merge` of the workers' own files gives the manager's results.
    let (code, out) = Proc::start(
        &["merge", "w1.json", "w2.json", "--output", "mm.json"],
        dir.path(),
        &[],
    )
    .finish(Duration::from_secs(20));
    assert_eq!(code, Some(2), "the same critical verdict\n{out}");
    let mm = results(&dir.path().join("mm.json"));
    for key in [
        "api",
        "websocket",
        "ai_pipeline",
        "users",
        "passed",
        "interrupted",
        "timestamp",
        "duration_s",
        "failures_by_reason",
    ] {
        assert_eq!(
            m[key], mm[key],
            "{key} differs between the manager's merge and `merge`"
        );
    }
    assert_eq!(m["raw"]["goose"], mm["raw"]["goose"]);
    assert_eq!(m["raw"]["measured"], mm["raw"]["measured"]);
    assert_eq!(
        m["memory"]["load_generator"]["growth_mb"],
        mm["memory"]["load_generator"]["growth_mb"]
    );
}
