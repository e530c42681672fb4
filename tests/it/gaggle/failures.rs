//! What goes wrong in a gaggle: mismatched workers refused with both sides saying why, a killed
//! worker reported while the run completes, and a lost manager stopping workers who keep their
//! results.

use super::{Proc, LIMIT};
use crate::harness::{free_port, results, Server};
use std::time::{Duration, Instant};

#[test]
fn mismatched_workers_are_refused_and_both_sides_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let mut manager = Proc::start(
        &[
            "--manager",
            "--expect-workers",
            "1",
            "--manager-bind-port",
            &port,
            "--host",
            "http://127.0.0.1:9",
            "--skip-api",
            "--skip-ws",
            "--ai-mode",
            "mock",
            "--gaggle-token",
            "right",
            "--gaggle-timeout",
            "6s",
            "--headless",
        ],
        dir.path(),
        &[],
    );
    manager.wait_for("listening on", Duration::from_secs(20));
    let worker = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["--worker", "--manager-port", &port];
        args.extend_from_slice(extra);
        Proc::start(&args, dir.path(), env).finish(Duration::from_secs(20))
    };
    let (code, out) = worker(
        &["--gaggle-token", "right"],
        &[("PHONE_AGENT_LOAD_GAGGLE_CLAIM_VERSION", "9.9.9")],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("refused this worker: crate version mismatch") && out.contains("9.9.9"),
        "{out}"
    );
    let (code, out) = worker(&["--gaggle-token", "wrong"], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("refused this worker: wrong gaggle token"), "{out}");
    let (code, out) = worker(&[], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("needs a token"), "{out}");
    let (code, out) = manager.finish(Duration::from_secs(20));
    assert_eq!(code, Some(1), "{out}");
    for needle in [
        "Refused a worker from 127.0.0.1",
        "crate version mismatch",
        "wrong gaggle token",
        "only 0 of 1 workers joined within 6s",
    ] {
        assert!(out.contains(needle), "{needle:?} missing:\n{out}");
    }
    assert!(!out.contains("right"), "the token must not be printed:\n{out}");

    // Off loopback without a token, and load options on a worker: refused before anything starts.
    let (code, out) = Proc::start(
        &[
            "--manager",
            "--expect-workers",
            "1",
            "--manager-bind-host",
            "0.0.0.0",
        ],
        dir.path(),
        &[],
    )
    .finish(Duration::from_secs(10));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("off loopback") && out.contains("--gaggle-token"),
        "{out}"
    );
    let (code, out) =
        Proc::start(&["--worker", "--users", "5"], dir.path(), &[]).finish(Duration::from_secs(10));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("give --users to the --manager"), "{out}");
    // Given at its default value it is still given, and would still be ignored.
    let (code, out) =
        Proc::start(&["--worker", "--profile", "quick"], dir.path(), &[]).finish(Duration::from_secs(10));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("give --profile to the --manager"), "{out}");

    // `merge` names a file without the raw data.
    let old = r#"{"profile": "quick", "timestamp": "2026-01-01T00:00:00Z", "host": "h", "passed": true,
        "interrupted": false, "interrupt_reason": null, "duration_s": 1.0, "api": {"skipped": true},
        "websocket": {"skipped": true}, "ai_pipeline": {"skipped": true}, "memory": {}, "verdicts": []}"#;
    std::fs::write(dir.path().join("old.json"), old).unwrap();
    let (code, out) = Proc::start(&["merge", "old.json"], dir.path(), &[]).finish(Duration::from_secs(10));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("old.json: no raw data to merge"), "{out}");
}

#[test]
fn a_killed_worker_is_reported_and_the_run_completes_non_zero() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let mut manager = Proc::start(
        &[
            "--manager",
            "--expect-workers",
            "2",
            "--manager-bind-port",
            &port,
            "--host",
            &server.url,
            "--run-time",
            "6s",
            "--hatch-rate",
            "100",
            "--skip-ws",
            "--skip-ai",
            "--headless",
            "--output",
            "m.json",
        ],
        dir.path(),
        &[],
    );
    let w1 = Proc::start(&["--worker", "--manager-port", &port], dir.path(), &[]);
    let mut w2 = Proc::start(&["--worker", "--manager-port", &port], dir.path(), &[]);
    manager.wait_for("Started 2 workers", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(2500));
    w2.kill();
    let (code, out) = manager.finish(LIMIT);
    assert_eq!(code, Some(1), "{out}");
    let (w1_code, w1_out) = w1.finish(Duration::from_secs(10));
    assert_eq!(w1_code, Some(0), "{w1_out}");
    let r = results(&dir.path().join("m.json"));
    assert_eq!(r["interrupted"], true);
    let lost_name = r["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["status"] == "lost")
        .unwrap_or_else(|| panic!("no lost worker: {}", r["workers"]))["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        r["interrupt_reason"].as_str().unwrap().contains(&lost_name),
        "{}",
        r["interrupt_reason"]
    );
    assert!(
        out.contains("LOST") && out.contains("going on with the others"),
        "{out}"
    );
    assert!(r["api"]["requests"].as_u64().unwrap() > 0);
}

#[test]
fn a_lost_manager_stops_the_workers_who_keep_their_results() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let mut manager = Proc::start(
        &[
            "--manager",
            "--expect-workers",
            "1",
            "--manager-bind-port",
            &port,
            "--host",
            &server.url,
            "--run-time",
            "60s",
            "--hatch-rate",
            "100",
            "--skip-ai",
            "--headless",
        ],
        dir.path(),
        &[],
    );
    let worker = Proc::start(&["--worker", "--manager-port", &port], dir.path(), &[]);
    manager.wait_for("Started 1 workers", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    manager.kill();
    let killed = Instant::now();
    let (code, out) = worker.finish(Duration::from_secs(20));
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "took {:?}",
        killed.elapsed()
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("lost the gaggle manager"), "{out}");
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap_or_else(|| panic!("no local results file:\n{out}"));
    assert!(out.contains(&format!(
        "Results written to {}",
        file.file_name().unwrap().to_string_lossy()
    )));
    let r = results(&file);
    assert_eq!(r["interrupted"], true);
    assert!(r["interrupt_reason"]
        .as_str()
        .unwrap()
        .contains("lost the gaggle manager"));
    assert!(r["raw"].is_object());
}
