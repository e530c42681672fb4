//! Bad input, as a user types it: every case runs the real binary and must be refused before any
//! load starts — exit status 1, exactly one `error:` line naming what is wrong and what is
//! expected, no panic, within a couple of seconds, and no simulator or Goose output.
//! (the `cli` tests cover an unknown profile, a negative count in a profile, a missing output
//! folder and an unreachable host; the cases here are the rest.)

use crate::harness;
use std::path::Path;
use std::time::Duration;

/// One refused command line: `{dir}` in an argument is the case's scratch folder.
struct Case {
    args: &'static [&'static str],
    /// Words the `error:` line must hold (compared without case).
    words: &'static [&'static str],
}

const fn case(args: &'static [&'static str], words: &'static [&'static str]) -> Case {
    Case { args, words }
}

/// A profile file like the built-in quick one, with `from` replaced by `to`.
fn profile_with(dir: &Path, name: &str, from: &str, to: &str) {
    let quick =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/quick.toml")).unwrap();
    assert!(quick.contains(from), "quick.toml has no {from:?}");
    std::fs::write(dir.join(name), quick.replacen(from, to, 1)).unwrap();
}

/// The files the cases point at.
fn scratch(dir: &Path) {
    profile_with(dir, "type.toml", "users = 10", "users = \"ten\"");
    profile_with(dir, "field.toml", "users = 10", "user = 10");
    profile_with(dir, "rate.toml", "spawn_rate = 5", "spawn_rate = 0");
    profile_with(dir, "span.toml", "run_time = \"1m\"", "run_time = \"1 minute\"");
    profile_with(dir, "syntax.toml", "[api]", "[api");
    std::fs::write(
        dir.join("missing.toml"),
        "run_time = \"1m\"\nspawn_rate = 5\n[api]\nusers = 1\n",
    )
    .unwrap();
    std::fs::create_dir(dir.join("profile-dir.toml")).unwrap();
    std::fs::create_dir(dir.join("empty-audio")).unwrap();
    std::fs::create_dir(dir.join("text-audio")).unwrap();
    std::fs::write(dir.join("text-audio/hello.wav"), "this is not audio\n").unwrap();
    std::fs::create_dir(dir.join("dangling-audio")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/hello.wav", dir.join("dangling-audio/hello.wav")).unwrap();
    std::fs::write(dir.join("plain-file"), "x").unwrap();
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    // Profiles: the name, or the file with its line and field.
    case(&["--profile", "stres"], &["unknown profile", "quick, standard, stress, soak"]),
    case(&["--profile", "{dir}/type.toml"], &["type.toml", "line ", "api.users", "expected"]),
    case(&["--profile", "{dir}/field.toml"], &["field.toml", "line ", "api.user", "expected `users`"]),
    case(&["--profile", "{dir}/rate.toml"], &["rate.toml", "line 8", "spawn_rate = 0", "positive"]),
    case(&["--profile", "{dir}/span.toml"], &["span.toml", "run_time", "not a time span", "30s"]),
    case(&["--profile", "{dir}/syntax.toml"], &["syntax.toml", "line ", "expected `]`"]),
    case(&["--profile", "{dir}/missing.toml"], &["missing.toml", "missing field", "media_streams"]),
    case(&["--profile", "{dir}/profile-dir.toml"], &["profile-dir.toml", "directory"]),
    case(&["--profile", "{dir}/no-such.toml"], &["no-such.toml", "no such file"]),
    // Users and counts.
    case(&["--users", "0"], &["--users", "at least 1"]),
    case(&["--users", "-3"], &["'-3'", "--users"]),
    case(&["--users", "many"], &["'many'", "--users"]),
    case(&["--ws-connections", "-1"], &["'-1'", "--ws-connections"]),
    case(&["--ai-calls", "99999999999"], &["--ai-calls", "at most"]),
    case(&["--skip-api", "--ws-connections", "0", "--ai-calls", "0"], &["no users to run"]),
    // Time spans: Goose's own checks, made before anything starts.
    case(&["--run-time", "abc"], &["--run-time abc", "such as 90"]),
    case(&["--run-time", "-5"], &["--run-time -5", "such as 90"]),
    case(&["--run-time", "1 minute"], &["--run-time", "such as 90"]),
    case(&["--increase-time", "5x"], &["--increase-time 5x", "such as 90"]),
    case(&["--decrease-time", "soon"], &["--decrease-time soon", "such as 90"]),
    case(&["--threshold", "p95<1s", "--threshold-abort-delay", "later"], &["--threshold-abort-delay later"]),
    case(&["--timeout", "abc"], &["--timeout abc", "number"]),
    case(&["--turn-timeout", "0"], &["--turn-timeout", "out of range", "1 s to 10 minutes"]),
    case(&["--turn-timeout", "soon"], &["--turn-timeout", "'soon'", "such as 30s"]),
    case(&["--manager", "--expect-workers", "1", "--gaggle-timeout", "0"], &["--gaggle-timeout 0", "such as 30s"]),
    case(&["--worker", "--gaggle-timeout", "whenever"], &["--gaggle-timeout whenever", "such as 30s"]),
    // Rates.
    case(&["--hatch-rate", "0"], &["--increase-rate 0", "non-zero"]),
    case(&["--spawn-rate", "abc"], &["--increase-rate abc", "number"]),
    case(&["--hatch-rate", "-2"], &["--increase-rate -2", "at least"]),
    case(&["--hatch-rate", "inf"], &["--increase-rate inf", "number"]),
    case(&["--decrease-rate", "0"], &["--decrease-rate 0", "non-zero"]),
    // The target; credentials in a URL would end up in logs and reports, and are not echoed.
    case(&["--host", "localhost:8080"], &["--host localhost:8080", "http"]),
    case(&["--host", "127.0.0.1"], &["--host 127.0.0.1", "base url such as http://"]),
    case(&["--host", "http://localhost:8080/api/v1"], &["--host", "without a path"]),
    case(&["--host", "ws://localhost:8080"], &["--host", "http or https"]),
    case(&["--host", "http://"], &["--host", "expected a base url"]),
    case(&["--host", "http://agent:hunter2@localhost:8080"], &["--host http://***@localhost", "password"]),
    case(&["--server-metrics-url", "http://u:hunter2@localhost:1/metrics"], &["--server-metrics-url", "password"]),
    // The caller's audio.
    case(&["--audio-dir", "{dir}/empty-audio"], &["--audio-dir", "empty-audio", "no .wav files"]),
    case(&["--audio-dir", "{dir}/text-audio"], &["--audio-dir", "hello.wav", "not a wav file"]),
    case(&["--audio-dir", "{dir}/dangling-audio"], &["--audio-dir", "hello.wav", "cannot read"]),
    case(&["--audio-dir", "{dir}/no-such-dir"], &["--audio-dir", "does not exist"]),
    case(&["--audio-dir", "{dir}/plain-file"], &["--audio-dir", "not a directory"]),
    // Options that contradict each other.
    case(&["--skip-api", "--skip-ws", "--skip-ai"], &["--skip-api", "nothing to run"]),
    case(&["--skip-ws", "--ws-connections", "3"], &["--ws-connections 3", "--skip-ws"]),
    case(&["--skip-ai", "--ai-calls", "2"], &["--ai-calls 2", "--skip-ai"]),
    case(&["--no-autostart"], &["--no-autostart", "--headless"]),
    case(&["-v", "-q"], &["--verbose", "--quiet"]),
    case(&["--iterations", "5", "--run-time", "5s"], &["--run-time", "--iterations"]),
    case(&["--users", "10", "--test-plan", "1,1s"], &["--users", "--test-plan"]),
    case(&["--test-plan", "10 users for 1m"], &["--test-plan", "users,time", "10,1m;10,5m;0,30s"]),
    case(&["--test-plan", "0,1m"], &["--test-plan", "starts no user"]),
    case(&["--no-metrics", "--report-file", "{dir}/r.html"], &["--report-file", "--no-metrics"]),
    case(&["--server-pid", "1", "--server-process", "x"], &["--server-process", "--server-pid"]),
    // Where the results, reports and logs go.
    case(&["--output", "{dir}"], &["--output", "is a directory"]),
    case(&["--output", "/dev/full"], &["--output", "/dev/full", "not a regular file"]),
    case(&["--output", "{dir}/a/b/r.json"], &["--output", "cannot write there", "existing"]),
    case(&["--output", "{dir}/r.html"], &["--output", "r.html", "another extension"]),
    case(&["--output", "{dir}/r.json", "--report-file", "{dir}/r.html"], &["--report-file", "html report"]),
    case(&["--output", "{dir}/r.json", "--goose-log", "{dir}/r.json"], &["--goose-log", "results file"]),
    case(&["--report-file", "{dir}/r.xyz"], &["--report-file", "r.xyz", ".html"]),
    case(&["--report-file", "{dir}/r.pdf"], &["--report-file", "pdf-reports"]),
    case(&["--report-file", "{dir}/none/r.html"], &["--report-file", "cannot write there"]),
    case(&["--goose-log", "{dir}/none/goose.log"], &["--goose-log", "none/goose.log", "cannot write"]),
    case(&["--goose-log", "{dir}/none/goose.log.gz"], &["--goose-log", "cannot write there"]),
    case(&["--request-log", "{dir}/none/requests.log"], &["--request-log", "cannot write there"]),
    case(&["--error-log", "{dir}"], &["--error-log", "is a directory"]),
    case(&["--baseline-file", "{dir}/none.json"], &["--baseline-file", "earlier run"]),
    case(&["--fail-on", "bogus"], &["'bogus'", "--fail-on"]),
    case(&["--ai-mode", "bogus"], &["'bogus'", "--ai-mode"]),
    // Memory targets.
    case(&["--server-pid", "99999999"], &["--server-pid 99999999", "no such process"]),
    case(&["--server-metrics-url", "metrics"], &["--server-metrics-url metrics", "not a url"]),
    // The web UI.
    case(&["--dashboard-host", "0.0.0.0", "--no-headless"], &["--dashboard-auth-token"]),
    case(&["--dashboard-port", "0", "--no-headless"], &["--dashboard-port 0", "1 to 65535"]),
    case(&["--dashboard-host", "web.example", "--no-headless"], &["--dashboard-host web.example", "ip address"]),
    // Gaggle options.
    case(&["--manager"], &["--expect-workers"]),
    case(&["--manager", "--expect-workers", "0"], &["--expect-workers", "at least 1"]),
    case(&["--manager", "--expect-workers", "4", "--users", "2"], &["4 workers", "2 users"]),
    case(&["--manager", "--expect-workers", "1", "--manager-bind-host", "0.0.0.0"], &["--gaggle-token", "off loopback"]),
    case(&["--manager", "--expect-workers", "1", "--manager-bind-host", ""], &["--manager-bind-host", "empty"]),
    case(&["--manager", "--expect-workers", "1", "--gaggle-token", ""], &["--gaggle-token", "empty"]),
    case(&["--manager", "--expect-workers", "1", "--run-time", "abc"], &["--run-time abc"]),
    case(&["--manager", "--expect-workers", "1", "--no-autostart"], &["--no-autostart", "--manager"]),
    case(&["--worker", "--manager-port", "0"], &["--manager-port 0", "1 to 65535"]),
    case(&["--worker", "--manager-host", ""], &["--manager-host", "empty"]),
    case(&["--worker", "--users", "3"], &["--users", "--manager"]),
    case(&["--worker", "--goose-log", "{dir}/none/w.log"], &["--goose-log", "none/w.log", "cannot write"]),
    case(&["--manager-host", "10.0.0.5"], &["required arguments"]),
    case(&["--gaggle-token", "s3cret"], &["--gaggle-token", "--manager or --worker"]),
    case(&["--gaggle-timeout", "30s"], &["--gaggle-timeout", "--manager or --worker"]),
    // The other commands.
    case(&["serve", "--port", "70000"], &["'70000'", "--port"]),
    case(&["serve", "--bind", "localhost"], &["'localhost'", "--bind"]),
    case(&["serve", "--error-rate", "2"], &["--error-rate"]),
    case(&["merge", "{dir}/none.json"], &["none.json", "cannot read"]),
    case(&["merge", "{dir}/plain-file", "--output", "{dir}"], &["--output", "is a directory"]),
];

/// Goose's and the run's own output: none of it may appear for a refused command line.
const STARTED: [&str; 6] = [
    "Started the built-in",
    "listening on",
    "[INFO]",
    "launching user",
    "Gaggle manager listening",
    "Web UI:",
];

#[test]
fn bad_input_is_refused_with_one_error_line_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    scratch(dir.path());
    let shown = dir.path().to_str().unwrap();
    let mut failures = Vec::new();
    for case in CASES {
        let mut args: Vec<String> = case.args.iter().map(|a| a.replace("{dir}", shown)).collect();
        // Headless unless the case is about the web UI (a free port for it, so no run collides).
        let web = args.iter().any(|a| a == "--no-headless");
        args.retain(|a| a != "--no-headless");
        let command = args.first().map(String::as_str);
        if !web && !matches!(command, Some("serve" | "merge")) {
            args.push("--headless".into());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = harness::run_in(&argv, Duration::from_secs(20), Some(dir.path()));
        let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("error:")).collect();
        let mut wrong = Vec::new();
        if out.code != Some(1) {
            wrong.push(format!("exit status {:?}, expected 1", out.code));
        }
        if errors.len() != 1 {
            wrong.push(format!("{} error: lines, expected one", errors.len()));
        }
        let line = errors.first().copied().unwrap_or_default().to_lowercase();
        for word in case.words {
            if !line.contains(&word.to_lowercase()) {
                wrong.push(format!("the error line lacks {word:?}"));
            }
        }
        if out.all().contains("panicked") {
            wrong.push("panicked".into());
        }
        if out.elapsed > Duration::from_secs(3) {
            wrong.push(format!("took {:?} to refuse", out.elapsed));
        }
        if out.all().contains("hunter2") {
            wrong.push("the password was echoed".into());
        }
        if let Some(started) = STARTED.iter().find(|s| out.all().contains(*s)) {
            wrong.push(format!("the run started ({started:?} printed)"));
        }
        if !wrong.is_empty() {
            failures.push(format!("{argv:?}: {}\n{}", wrong.join("; "), out.all().trim()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n\n")
    );
}

/// A file system that is full is refused before the run, like an unwritable folder. Only a
/// device stands in for one here (making a small full file system needs privileges); the check
/// itself writes a results file's worth of bytes beside the target, so a full disk fails it.
#[test]
fn a_full_device_is_refused_and_a_good_path_is_left_untouched() {
    use phone_agent_load::config::outputs::check_output_path;
    let err = format!("{:#}", check_output_path(Path::new("/dev/full")).unwrap_err());
    assert!(err.contains("not a regular file"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    check_output_path(&path).unwrap();
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "the check leaves nothing behind"
    );
    std::fs::write(&path, "kept").unwrap();
    check_output_path(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "kept");
}
