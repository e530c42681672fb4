//! The results file: every key of its contract and a round trip, mock mode's stages and skipped
//! sections, bad files refused clearly, and unwritable output refused with atomic writes.

use super::plan;
use super::synthetic::healthy_record;
use phone_agent_load::analysis::analyse;
use phone_agent_load::analysis::results::{Results, Section};
use phone_agent_load::analysis::verdicts::Status;
use phone_agent_load::config::plan::{AiMode, Skips};
use serde_json::Value;

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
