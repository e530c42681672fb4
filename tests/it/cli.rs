//! The command line as a user meets it: the real binary, against the simulator on loopback.

use crate::harness::{results, run, Server};
use std::time::Duration;

/// The default run (no --host): starts its own simulator, runs, writes results, exits 0.
/// Eight seconds give the AI calls several turns: one short turn alone ("Ja.", 0.4 s of speech
/// against a 0.5 s end-of-speech hangover) is slower than real time and would judge the run.
#[test]
fn default_run_starts_its_own_simulator_and_writes_results() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("load-results.json");
    let out = run(
        &[
            "--headless",
            "--run-time",
            "8s",
            "--output",
            out_path.to_str().unwrap(),
        ],
        Duration::from_secs(90),
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout
            .contains("Started the built-in Phone Agent simulator at http://127.0.0.1:"),
        "{}",
        out.all()
    );
    let r = results(&out_path);
    assert_eq!(r["profile"], "quick");
    assert_eq!(r["interrupted"], false);
    assert!(r["host"].as_str().unwrap().starts_with("http://127.0.0.1:"));
    let api = &r["api"];
    assert!(api["requests"].as_u64().unwrap() > 20, "{api}");
    assert_eq!(api["success"], true, "{api}");
    let names: Vec<&str> = api["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for want in ["/api/v1/calls [LIST]", "/webhooks/twilio/status"] {
        assert!(names.iter().any(|n| n.contains(want)), "{want} not in {names:?}");
    }
}

/// `--hatch-rate` (old Goose) and `--spawn-rate` (Locust) both start users at the given rate.
#[test]
fn hatch_rate_and_spawn_rate_are_increase_rate() {
    let server = Server::start(&[]);
    for flag in ["--hatch-rate", "--spawn-rate"] {
        let out = run(
            &[
                "--host",
                &server.url,
                "--headless",
                "--skip-ws",
                "--skip-ai",
                "--users",
                "6",
                flag,
                "3",
                "--run-time",
                "2s",
            ],
            Duration::from_secs(60),
        );
        assert_eq!(out.code, Some(0), "{flag}: {}", out.all());
        // Goose reports the ramp: 6 users at 3/s take ~2 s to start.
        assert!(out.all().contains("6 users"), "{flag}: {}", out.all());
    }
    let stats = server.stats();
    assert!(
        stats["requests"]["GET /api/v1/health"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
}

#[test]
fn unreachable_host_fails_fast_naming_host_and_cause() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("http://127.0.0.1:{port}");
    let out = run(&["--host", &host, "--headless"], Duration::from_secs(20));
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.elapsed < Duration::from_secs(5), "took {:?}", out.elapsed);
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .expect("an error line");
    assert!(
        line.contains(&host) && line.contains("connection refused"),
        "{line}"
    );
}

#[test]
fn malformed_profile_names_file_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "run_time = \"1m\"\nspawn_rate = 5\n[api]\nusers = -3\n").unwrap();
    let out = run(
        &["--profile", path.to_str().unwrap(), "--headless"],
        Duration::from_secs(20),
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("broken.toml") && out.stderr.contains("users"),
        "{}",
        out.stderr
    );
    let out = run(&["--profile", "quik", "--headless"], Duration::from_secs(20));
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("quick, standard, stress, soak"),
        "{}",
        out.stderr
    );
}

#[test]
fn help_shows_goose_and_crate_options() {
    let out = run(&["--help"], Duration::from_secs(20));
    assert_eq!(out.code, Some(0));
    for needle in [
        "--profile",
        "--output",
        "--skip-api",
        "--no-wait",
        "--hatch-rate",
        "--spawn-rate",
        "--report-file",
        "serve",
    ] {
        assert!(out.stdout.contains(needle), "{needle} missing from --help");
    }
}

#[test]
fn serve_prints_its_address_and_stops_on_ctrl_c() {
    let mut server = Server::start(&[]);
    assert!(server.url.starts_with("http://127.0.0.1:"));
    server.signal(libc::SIGINT);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "serve exited with {status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not stop on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn unwritable_output_is_refused_before_the_run() {
    let out = run(
        &["--output", "/nonexistent-dir/r.json", "--headless"],
        Duration::from_secs(20),
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("/nonexistent-dir"), "{}", out.stderr);
    assert!(
        !out.stdout.contains("Started the built-in"),
        "the run started anyway"
    );
}

/// Goose's warnings about the options come once, from the real run: the check of the options
/// before it (a dry run of Goose) used to print them too.
#[test]
fn goose_warnings_are_printed_once() {
    let server = Server::start(&[]);
    let out = run(
        &[
            "--host",
            &server.url,
            "--headless",
            "--skip-ws",
            "--skip-ai",
            "--test-plan",
            "2,1s;0,1s",
            "--threshold",
            "p95<5s",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    let warning = "the test plan never holds its users steady";
    assert_eq!(out.all().matches(warning).count(), 1, "{}", out.all());
}
