//! The REST/webhook fault suite: the real binary against a `serve` process whose API misbehaves,
//! one fault at a time. For each fault the tool must keep its word: every failed request counted
//! and named (in Goose's errors, the results file's `api` `errors`, and the console's "Failed
//! requests by reason" table), no panic, bounded memory, a readable console, and the run over on
//! time with its results written and judged.
//!
//! | fault | what the requests report |
//! |---|---|
//! | `--stall-rate 1` (and `--timeout 2`) | `timeout` on the console; Goose: `... operation timed out` |
//! | `--error-rate 0.2` / `0.005` | `Unexpected status 500` (the high-load user's `Unexpected status: 500`); success rate 80 % (critical) / 99.5 % |
//! | `--garbage-kind not-json` | `wrong content type: text/html` |
//! | `--garbage-kind wrong-type` | `wrong content type: text/plain` |
//! | `--garbage-kind truncated` | `truncated body: end of file before message length reached` |
//! | `--garbage-kind huge` | `body too large (over 1 MiB)`, and the load generator's peak RSS stays flat |
//! | the target killed mid-run | `connection refused`, the run goes on to its end, exit status 2 |

use crate::harness::{count, results, run_against, verdict, Output, Server};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// The results file's API errors, "METHOD name: error" -> count.
fn api_errors(r: &Value) -> BTreeMap<String, u64> {
    serde_json::from_value(r["api"]["errors"].clone()).unwrap()
}

/// REST and webhook users only, `users` of them, with no waits.
fn api_only(users: &str) -> Vec<&str> {
    vec!["--skip-ws", "--skip-ai", "--users", users, "--no-wait"]
}

#[test]
fn stalled_requests_end_at_the_timeout_named_and_the_run_ends_on_time() {
    let server = Server::start(&["--stall-rate", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let mut args = api_only("4");
    args.extend(["--timeout", "2", "-q"]);
    let run = run_against(&server.url, 5, &args, &out, |_| {});
    run.assert_clean_exit();
    let r = results(&out);
    let api = &r["api"];
    // Four users, each request held until Goose's 2 s timeout: a few each, every one failed.
    let requests = count(&api["requests"]);
    assert!((4..=4 * 4).contains(&requests), "{api}");
    assert_eq!(count(&api["failures"]), requests, "{api}");
    let errors = api_errors(&r);
    assert!(
        !errors.is_empty() && errors.keys().all(|e| e.ends_with("operation timed out")),
        "Goose names the timeout: {errors:?}"
    );
    assert_eq!(errors.values().sum::<u64>(), requests, "{errors:?}");
    // Each request took the whole timeout, and no more.
    let p50 = api["p50_ms"].as_f64().unwrap();
    assert!((1900.0..2500.0).contains(&p50), "{api}");
    let table = run.failed_by_reason();
    assert_eq!(
        table.keys().collect::<Vec<_>>(),
        ["timeout"],
        "{table:?}\n{}",
        run.stdout
    );
    assert!(table["timeout"] >= requests, "{table:?}");
    // The simulator counted a stall for every request it received (each of the tool's, and any
    // the tool left out of its metrics), none cut at once, and no other fault.
    let stats = server.stats();
    let received: u64 = stats["requests"].as_object().unwrap().values().map(count).sum();
    let faults = &stats["faults"];
    assert_eq!(count(&faults["stalled"]), received, "{stats}");
    assert!(received >= requests, "{stats}");
    assert_eq!(count(&faults["stalls_cut_at_once"]), 0, "{faults}");
    assert!(
        faults["garbage"]
            .as_object()
            .unwrap()
            .values()
            .all(|n| count(n) == 0),
        "{faults}"
    );
    assert_eq!(verdict(&r, "API success rate")["status"], "critical");
    assert_eq!(run.code, Some(2), "{}", run.all());
    // The users in a stalled request at the end wait out its timeout, no more (start-up and
    // the post-run hook take a second or two).
    assert!(run.elapsed < Duration::from_secs(5 + 2 + 5), "{:?}", run.elapsed);
    eprintln!(
        "stall: {requests} requests timed out; the 5 s run took {:?}",
        run.elapsed
    );
}

/// A 5 s run against a simulator failing `error_rate` of the requests with 500: the results
/// file, the run, and the share of the requests the simulator failed, in %.
fn run_with_error_rate(error_rate: &str) -> (Value, Output, f64) {
    let server = Server::start(&["--error-rate", error_rate]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let mut args = api_only("8");
    args.push("-q");
    let run = run_against(&server.url, 5, &args, &out, |_| {});
    run.assert_clean_exit();
    let stats = server.stats();
    let received: u64 = stats["requests"].as_object().unwrap().values().map(count).sum();
    let injected = 100.0 * count(&stats["injected_errors"]) as f64 / received as f64;
    (results(&out), run, injected)
}

/// The API success rate says what the simulator did (within what Goose leaves out: the moment
/// before its metrics reset after the ramp), and is `expected` % within one point, or within
/// four standard deviations of a binomial draw where too few requests were made to be closer.
fn assert_success_rate(r: &Value, injected: f64, expected: f64) -> f64 {
    let api = &r["api"];
    let requests = count(&api["requests"]);
    assert!(requests >= 2000, "too few requests to judge: {api}");
    let rate = api["success_rate"].as_f64().unwrap();
    assert!(
        (rate - (100.0 - injected)).abs() < 0.3,
        "success rate {rate} %, while the simulator failed {injected} %"
    );
    let p = expected / 100.0;
    let sigma = 100.0 * (p * (1.0 - p) / requests as f64).sqrt();
    let tolerance = (4.0 * sigma).max(1.0);
    assert!(
        (rate - expected).abs() < tolerance,
        "success rate {rate} % of {requests} requests, expected {expected} ± {tolerance:.2}"
    );
    rate
}

#[test]
fn a_fifth_of_requests_failing_500_is_an_80_percent_success_rate_and_critical() {
    let (r, run, injected) = run_with_error_rate("0.2");
    let api = &r["api"];
    let rate = assert_success_rate(&r, injected, 80.0);
    let v = verdict(&r, "API success rate");
    assert_eq!(v["status"], "critical", "{v}");
    assert_eq!(api["success"], false);
    assert_eq!(run.code, Some(2), "{}", run.all());
    // Every failure names the status, in Goose's errors and on the console.
    let errors = api_errors(&r);
    assert!(
        errors.keys().all(|e| e.contains("500 Internal Server Error")),
        "{errors:?}"
    );
    assert_eq!(
        errors.values().sum::<u64>(),
        count(&api["failures"]),
        "{errors:?}"
    );
    // "Unexpected status: 500" is the high-load user's wording, as the Python suite's.
    let table = run.failed_by_reason();
    assert!(
        table
            .keys()
            .all(|k| k == "Unexpected status 500" || k == "Unexpected status: 500"),
        "{table:?}"
    );
    assert!(
        table.values().sum::<u64>() >= count(&api["failures"]),
        "{table:?}"
    );
    eprintln!(
        "error rate 0.2: {} requests, success rate {rate:.2} % (simulator failed {injected:.2} %)",
        api["requests"]
    );
}

#[test]
fn a_few_requests_in_a_thousand_failing_500_is_no_critical_success_rate() {
    let (r, run, injected) = run_with_error_rate("0.005");
    let api = &r["api"];
    let rate = assert_success_rate(&r, injected, 99.5);
    assert!(count(&api["failures"]) > 0, "{api}");
    // 99.5 % is on target (above 99 %).
    let v = verdict(&r, "API success rate");
    assert_eq!(v["status"], "target", "{v}");
    let table = run.failed_by_reason();
    assert!(
        !table.is_empty()
            && table
                .keys()
                .all(|k| k == "Unexpected status 500" || k == "Unexpected status: 500"),
        "{table:?}"
    );
    eprintln!(
        "error rate 0.005: {} requests, success rate {rate:.2} % (simulator failed {injected:.2} %)",
        api["requests"]
    );
}

/// A 3 s run of eight users against a simulator replacing a fifth of its answers by garbage of
/// `kind`: every failure is of that kind, named `reason` in the results and on the console.
/// `json_rows_only`: only the JSON endpoints can tell (not the webhooks, whose body is any type).
/// The load generator's peak RSS must stay under `max_peak_mib`.
fn garbage_is_named(kind: &str, reason: &str, json_rows_only: bool, max_peak_mib: u64) {
    const USERS: u64 = 8;
    let server = Server::start(&["--garbage-rate", "0.2", "--garbage-kind", kind]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let users = USERS.to_string();
    let mut args = api_only(&users);
    args.push("-q");
    let run = run_against(&server.url, 3, &args, &out, |_| {});
    run.assert_clean_exit();
    let peak_mib = run.peak_kib as f64 / 1024.0;
    assert!(
        run.peak_kib > 0 && run.peak_kib < max_peak_mib * 1024,
        "{kind}: peak RSS {peak_mib:.1} MiB"
    );
    let r = results(&out);
    let api = &r["api"];
    let failures = count(&api["failures"]);
    let errors = api_errors(&r);
    // Every failure is garbage, named: no other error, no second error for one request.
    assert!(failures >= 20, "{kind}: {api}");
    assert!(
        errors.keys().all(|e| e.ends_with(&format!(": {reason}"))),
        "{kind}: {errors:?}"
    );
    // Goose counts a failure in an atomic counter and its error in a batch sent later, and around
    // its metrics reset and the end of the run a request can land in one and not the other (a CI
    // run once saw 4 of 1,070 apart). A second error per request would be hundreds apart.
    let named = errors.values().sum::<u64>();
    assert!(
        named.abs_diff(failures) <= 2 * USERS,
        "{kind}: {failures} failed, {named} named: {errors:?}"
    );
    // About a fifth of the requests that can tell fail.
    let mut telling = 0;
    for e in api["endpoints"].as_array().unwrap() {
        let webhook = e["name"].as_str().unwrap().starts_with("/webhooks/");
        if json_rows_only && webhook {
            assert_eq!(count(&e["failures"]), 0, "{kind}: {e}");
        } else {
            telling += count(&e["requests"]);
        }
    }
    let share = failures as f64 / telling as f64;
    assert!(
        (0.12..0.28).contains(&share),
        "{kind}: {failures} of {telling} failed"
    );
    let table = run.failed_by_reason();
    assert_eq!(table.keys().collect::<Vec<_>>(), [reason], "{kind}: {table:?}");
    assert!(table[reason] >= failures, "{kind}: {table:?}");
    // The simulator counted every garbage answer under its kind (those the tool could not tell
    // too), about a fifth of what it received, and nothing else.
    let stats = server.stats();
    let received: u64 = stats["requests"].as_object().unwrap().values().map(count).sum();
    let garbage = &stats["faults"]["garbage"];
    let sent = count(&garbage[kind]);
    assert!(
        sent >= failures,
        "{kind}: {failures} failed, {sent} garbage sent: {garbage}"
    );
    let sent_share = sent as f64 / received as f64;
    assert!(
        (0.12..0.28).contains(&sent_share),
        "{kind}: {sent} of {received} answers garbage"
    );
    let others: u64 = garbage.as_object().unwrap().values().map(count).sum::<u64>() - sent;
    assert_eq!(others, 0, "{kind}: {garbage}");
    assert_eq!(count(&stats["faults"]["stalled"]), 0, "{kind}: {stats}");
    assert_eq!(run.code, Some(2), "a fifth failing is critical\n{}", run.all());
    eprintln!(
        "garbage {kind}: {failures} of {telling} requests failed as '{reason}', peak RSS {peak_mib:.1} MiB"
    );
}

/// Peak RSS no run of the tool should reach here (these take 45-55 MiB).
const USUAL_PEAK_MIB: u64 = 300;

#[test]
fn html_where_json_was_due_is_named() {
    garbage_is_named("not-json", "wrong content type: text/html", true, USUAL_PEAK_MIB);
}

#[test]
fn json_labelled_text_is_named() {
    garbage_is_named(
        "wrong-type",
        "wrong content type: text/plain",
        true,
        USUAL_PEAK_MIB,
    );
}

#[test]
fn truncated_bodies_are_named() {
    garbage_is_named(
        "truncated",
        "truncated body: end of file before message length reached",
        false,
        USUAL_PEAK_MIB,
    );
}

#[test]
fn huge_bodies_are_refused_without_being_read() {
    // Eight users each meeting a 64 MiB answer every few requests: reading them whole would take
    // 64 MiB (and more while the buffer grows) per user at once; runs of it peak at ~55 MiB.
    garbage_is_named("huge", "body too large (over 1 MiB)", false, 100);
}

/// The target dies 3 s into a 10 s run of 40 users: the run goes on to its end, every request
/// after the death fails as "connection refused", the run is judged critical, and the console
/// reports the failures by reason, not one line each.
fn target_killed_mid_run(quiet: bool) {
    let mut server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let mut args = api_only("40");
    if quiet {
        args.push("-q");
    }
    let mut killed = None;
    let run = run_against(&server.url, 10, &args, &out, |elapsed| {
        if killed.is_none() && elapsed >= Duration::from_secs(3) {
            server.signal(libc::SIGKILL);
            killed = Some(elapsed);
        }
    });
    let _ = server.child.wait();
    let killed = killed.expect("the target was killed mid-run");
    run.assert_clean_exit();
    assert_eq!(run.code, Some(2), "{}", run.all());
    // On to its end (start-up included), not stopped when the target died.
    assert!(run.elapsed >= Duration::from_secs(10), "{:?}", run.elapsed);
    let r = results(&out);
    assert_eq!(r["interrupted"], false, "{}", r["interrupt_reason"]);
    let api = &r["api"];
    assert!(
        count(&api["failures"]) > 0 && count(&api["requests"]) > count(&api["failures"]),
        "{api}"
    );
    assert_eq!(verdict(&r, "API success rate")["status"], "critical");
    let table = run.failed_by_reason();
    let refused = table.get("connection refused").copied().unwrap_or(0);
    assert!(table.values().all(|&n| n <= refused), "mostly refused: {table:?}");
    // Refused requests are thousands; the console has a few lines about them.
    assert!(refused >= 1000, "{table:?}");
    // The results file keeps the same counts, with the cause Goose's errors leave out.
    assert_eq!(
        count(&r["failures_by_reason"]["connection refused"]),
        refused,
        "{}",
        r["failures_by_reason"]
    );
    let all = run.all();
    assert!(all.contains("failed requests in the last 5 s: "), "{all}");
    assert!(all.contains("Failed requests by reason"), "{all}");
    let per_request: Vec<&str> = all.lines().filter(|l| l.contains("[WARN] \"/")).collect();
    assert!(
        per_request.is_empty(),
        "{} lines like {:?}",
        per_request.len(),
        per_request.first()
    );
    // Failure lines: the periodic counts, the final table, Goose's own errors table (a row per
    // request name and kind of error: 8 names, a few kinds) and the summary's top ten. Printed
    // per request, they would be thousands.
    let failure_lines = all
        .lines()
        .filter(|l| {
            let l = l.to_lowercase();
            ["fail", "error", "refused", "reset", "closed"]
                .iter()
                .any(|w| l.contains(w))
        })
        .count();
    assert!(
        failure_lines <= 80,
        "{failure_lines} lines about failures:\n{all}"
    );
    eprintln!(
        "target killed at {killed:?} (quiet {quiet}): {refused} refused, {failure_lines} lines \
         about failures, run took {:?}",
        run.elapsed
    );
}

#[test]
fn target_killed_mid_run_is_reported_in_a_few_lines() {
    target_killed_mid_run(true);
}

#[test]
fn target_killed_mid_run_is_reported_in_a_few_lines_without_quiet() {
    target_killed_mid_run(false);
}
