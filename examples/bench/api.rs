//! Case 1, API throughput: requests per generator CPU-second of the crate's API scenarios
//! (`--no-wait --skip-ws --skip-ai`) next to plain Goose tests (examples/plain_goose.rs), each
//! against a simulator of its own, taking turns on the generator core. The target: ours at least
//! 85 % of plain Goose.

use crate::process::{signal, spawn};
use crate::rotation::{rotate, Member};
use crate::run::Bench;
use crate::simulator::Sim;
use crate::table::Row;
use anyhow::Result;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

/// Runs the case; its rows and raw figures.
pub fn run(bench: &mut Bench) -> Result<(Vec<Row>, Value)> {
    let users = bench.api_users.to_string();
    let kinds = ["ours", "plain", "plain-list", "plain-shared"];
    let mut runs = Vec::new();
    let mut per_cpu: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    let (mut ratio, mut ratio_list) = (Vec::new(), Vec::new());
    for rep in 0..bench.reps {
        // Each generator has a simulator of its own (so each one's requests are counted apart),
        // all on the target core; the generators take turns on theirs.
        let mut sims = Vec::new();
        let mut members = Vec::new();
        for (k, kind) in kinds.iter().enumerate() {
            let sim = Arc::new(Sim::start(bench, &[])?);
            sim.fill(20_000)?;
            let file = bench.out.join(format!("api-{kind}-{rep}.json"));
            let _ = std::fs::remove_file(&file);
            let mut cmd;
            if *kind == "ours" {
                cmd = bench.pinned(bench.gen_core(), &bench.tool());
                cmd.args([
                    "--host",
                    &sim.url,
                    "--headless",
                    "--no-wait",
                    "--skip-ws",
                    "--skip-ai",
                ])
                .args(["--users", &users, "--increase-rate", "1000", "--run-time", "1h"])
                .arg("--output")
                .arg(&file)
                .arg("-q");
            } else {
                cmd = bench.pinned(bench.gen_core(), &bench.example("plain_goose"));
                cmd.args(["--host", &sim.url, "--users", &users, "--increase-rate", "1000"])
                    .args(["--run-time", "1h", "--no-telnet", "-q", "--report-file"])
                    .arg(&file);
                if *kind == "plain-list" {
                    for p in PLAIN_LIST_PATHS {
                        cmd.args(["--path", p]);
                    }
                }
                if *kind == "plain-shared" {
                    cmd.arg("--shared-client");
                }
            }
            let proc = spawn(cmd, kind, bench.log(&format!("api-{kind}-{rep}.log"))?)?;
            signal(&proc, libc::SIGSTOP);
            let counter = sim.clone();
            members.push(Member {
                name: kind.to_string(),
                proc,
                count: Box::new(move || counter.requests()),
                target_pid: sim.proc.pid(),
            });
            sims.push((k, sim, file));
        }
        let got = rotate(bench, members)?;
        for (k, _sim, file) in &sims {
            let (kind, w) = (kinds[*k], got[*k]);
            let failures = read_failures(file, kind == "ours");
            println!(
                "  rep {rep} {kind:<12}: {:>8.0} req/s, generator {:>5.1} % CPU, {:>8.0} req per CPU-s; \
                 simulator {:>5.1} % CPU; {}",
                w.rps,
                w.gen_cpu_share * 100.0,
                w.per_gen_cpu_s,
                w.target_cpu_share * 100.0,
                failures
                    .as_ref()
                    .map_or_else(|e| e.clone(), |(r, f)| format!("{r} requests in all, {f} failed")),
            );
            per_cpu[*k].push(w.per_gen_cpu_s);
            rps[*k].push(w.rps);
            runs.push(json!({"kind": kind, "rep": rep, "window": w, "requests_failures": failures.ok()}));
        }
        ratio.push(100.0 * got[0].per_gen_cpu_s / got[1].per_gen_cpu_s);
        ratio_list.push(100.0 * got[0].per_gen_cpu_s / got[2].per_gen_cpu_s);
        drop(sims);
    }
    let [ours, plain, plain_list, plain_shared]: [Vec<f64>; 4] =
        per_cpu.try_into().map_err(|_| anyhow::anyhow!("four kinds"))?;
    let rows = vec![
        Row::new(
            "1 API",
            "ours: API scenarios, --no-wait",
            "req/s per generator CPU-s",
            ours,
        ),
        Row::new(
            "1 API",
            "plain Goose: one GET (health, 15 B body)",
            "req/s per CPU-s",
            plain,
        ),
        Row::new(
            "1 API",
            "plain Goose: one GET, 1/3 list pages, 2/3 health",
            "req/s per CPU-s",
            plain_list,
        ),
        Row::new(
            "1 API",
            "plain Goose: one GET (health), one shared client",
            "req/s per CPU-s",
            plain_shared,
        )
        .note("as ours shares one client"),
        Row::new("1 API", "ours / plain Goose (health)", "%", ratio).target(">=", 85.0),
        Row::new("1 API", "ours / plain Goose (1/3 list pages)", "%", ratio_list)
            .note("our mix's share of list pages"),
        Row::new("1 API", "ours: request rate on one core", "req/s", rps[0].clone()),
        Row::new(
            "1 API",
            "plain Goose (health): request rate on one core",
            "req/s",
            rps[1].clone(),
        ),
    ];
    Ok((rows, json!({"users": bench.api_users, "runs": runs})))
}

/// The plain-Goose path mix matching our mix's response bytes: a third list pages (our mix's
/// share of list requests: 33 %), two thirds small answers (health; ours are webhooks' TwiML,
/// created calls and health).
const PLAIN_LIST_PATHS: [&str; 6] = [
    "/api/v1/calls",
    "/api/v1/health",
    "/api/v1/health",
    "/api/v1/calls?industry=gastro",
    "/api/v1/health",
    "/api/v1/health",
];

/// (requests, failures) from our results file or Goose's JSON report.
fn read_failures(file: &Path, ours: bool) -> std::result::Result<(u64, u64), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("no report: {e}"))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("unreadable report: {e}"))?;
    if ours {
        return Ok((
            v["api"]["requests"].as_u64().unwrap_or(0),
            v["api"]["failures"].as_u64().unwrap_or(0),
        ));
    }
    // Goose's JSON report: raw_request_metrics rows with number_of_requests / number_of_failures.
    let rows = v["raw_request_metrics"].as_array().cloned().unwrap_or_default();
    let sum = |k: &str| {
        rows.iter()
            .filter(|r| r["name"] != "Aggregated")
            .filter_map(|r| r[k].as_u64())
            .sum::<u64>()
    };
    Ok((sum("number_of_requests"), sum("number_of_failures")))
}
