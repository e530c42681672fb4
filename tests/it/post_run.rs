//! The post-run hook end to end: the real binary against a `serve` process with faults injected,
//! judged by the verdicts, the exit status and the results file a CI step reads.

use crate::harness::{self, results, run, verdict, Server};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The check a CI step makes on the results file: api and ai_pipeline must both succeed.
fn ci_snippet_passes(r: &Value) -> bool {
    r["api"]["success"] == true && r["ai_pipeline"]["success"] == true
}

#[test]
fn healthy_target_passes_with_every_metric_on_target() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let pid = server.child.id().to_string();
    let run_out = run(
        &[
            "--host",
            &server.url,
            "--headless",
            "--run-time",
            "8s",
            // The RTF verdict judges the mean turn: over the quick profile's 3 AI calls (3-5
            // turns in 8 s) one "Ja." (RTF 1.3; a long sentence's is 0.45) put it at 0.85, a
            // warning, in 1 of 6 runs. Twenty-four calls make ~26 turns: means 0.50-0.63 in six
            // runs.
            "--ai-calls",
            "24",
            "--hatch-rate",
            "50",
            "--server-pid",
            &pid,
            "--output",
            out.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(run_out.code, Some(0), "{}", run_out.all());
    let r = results(&out);
    assert_eq!(r["passed"], true);
    assert!(ci_snippet_passes(&r), "{r}");
    for v in r["verdicts"].as_array().unwrap() {
        assert_eq!(v["status"], "target", "{v}");
    }
    assert!(
        r["memory"]["server"]["samples"].as_array().unwrap().len() >= 5,
        "{}",
        r["memory"]
    );
    assert!(r["websocket"]["connections_successful"].as_u64().unwrap() >= 5);
    assert!(
        r["ai_pipeline"]["turns"].as_u64().unwrap() >= 15,
        "{}",
        r["ai_pipeline"]
    );
    eprintln!(
        "healthy: {} AI turns, RTF {}",
        r["ai_pipeline"]["turns"], r["ai_pipeline"]["rtf"]
    );
    assert!(
        dir.path().join("r.html").exists(),
        "the HTML report is written next to the results"
    );
}

#[test]
fn slow_api_is_critical_and_fails_the_run() {
    let server = Server::start(&["--api-latency-ms", "600"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let run_out = run(
        &[
            "--host",
            &server.url,
            "--headless",
            "--skip-ws",
            "--skip-ai",
            "--users",
            "3",
            "--run-time",
            "3s",
            "--output",
            out.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(run_out.code, Some(2), "{}", run_out.all());
    let r = results(&out);
    let v = verdict(&r, "API p95 latency");
    assert_eq!(v["status"], "critical", "{v}");
    assert!(v["value"].as_f64().unwrap() >= 600.0, "{v}");
    assert_eq!(r["api"]["success"], false);
    assert!(!ci_snippet_passes(&r));
    assert_eq!(r["websocket"]["skipped"], true);
}

#[test]
fn slow_ai_pipeline_makes_rtf_critical() {
    let server = Server::start(&["--ai-slowdown", "4"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let run_out = run(
        &[
            "--host",
            &server.url,
            "--headless",
            "--skip-api",
            "--skip-ws",
            "--ai-calls",
            "3",
            "--run-time",
            "12s",
            "--output",
            out.to_str().unwrap(),
        ],
        Duration::from_secs(90),
    );
    assert_eq!(run_out.code, Some(2), "{}", run_out.all());
    let r = results(&out);
    let v = verdict(&r, "AI real-time factor");
    assert_eq!(v["status"], "critical", "{v}");
    assert!(r["ai_pipeline"]["rtf"]["mean"].as_f64().unwrap() > 1.0);
    assert_eq!(r["ai_pipeline"]["success"], false);
}

#[test]
fn leaking_server_memory_is_critical() {
    // Tighter memory thresholds (a profile may set its own) keep the deliberate leak small.
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("leak.toml");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/quick.toml"))
        .unwrap()
        .replace(
            "# memory_growth_mb = { warning = 50, critical = 100 }",
            "memory_growth_mb = { warning = 10, critical = 20 }",
        );
    std::fs::write(&profile, text).unwrap();
    let server = Server::start(&["--leak-kb-per-call", "1024"]);
    let out = dir.path().join("r.json");
    let pid = server.child.id().to_string();
    let run_out = run(
        &[
            "--host",
            &server.url,
            "--headless",
            "--profile",
            profile.to_str().unwrap(),
            "--skip-ws",
            "--skip-ai",
            "--users",
            "3",
            "--no-wait",
            "--run-time",
            "6s",
            "--server-pid",
            &pid,
            "--output",
            out.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(run_out.code, Some(2), "{}", run_out.all());
    let r = results(&out);
    let v = verdict(&r, "server memory growth");
    assert_eq!(v["status"], "critical", "{v}");
    assert!(
        r["memory"]["server"]["slope_mb_per_min"].as_f64().unwrap() > 20.0,
        "{}",
        r["memory"]["server"]
    );
    // The load generator itself does not leak.
    assert_ne!(verdict(&r, "load generator memory growth")["status"], "critical");
}

#[test]
fn ctrl_c_mid_run_still_writes_results_marked_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let report = dir.path().join("goose.html");
    let child = std::process::Command::new(harness::BIN)
        .args([
            "--headless",
            "--run-time",
            "60s",
            "--output",
            out.to_str().unwrap(),
            "--report-file",
            report.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(8));
    let sent = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = harness::wait_bounded(child, Duration::from_secs(30));
    let stopped_in = sent.elapsed();
    let all = output.all();
    assert!(
        stopped_in < Duration::from_secs(8),
        "took {stopped_in:?} to stop after Ctrl-C\n{all}"
    );
    assert_ne!(output.code, Some(0), "{all}");
    let r = results(&out);
    assert_eq!(r["interrupted"], true);
    assert!(
        r["interrupt_reason"].as_str().unwrap().contains("Ctrl-C"),
        "{}",
        r["interrupt_reason"]
    );
    assert!(r["api"]["requests"].as_u64().unwrap() > 0);
    assert!(report.exists(), "Goose's own report is written too");
}
