//! Case 5, the generator's memory: its RSS per user of each kind (N users, then 2N, in one
//! process) and its RSS trend over shortened soak runs, fitted with the crate's Theil–Sen
//! estimator over each half. The target: the second half's slope at most 0.1 MB per minute.

use crate::process::spawn;
use crate::procfs::rss_kib_of;
use crate::run::Bench;
use crate::simulator::Sim;
use crate::table::Row;
use anyhow::Result;
use phone_agent_load::measure::slope;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Runs the case; its rows and raw figures.
pub fn run(bench: &mut Bench) -> Result<(Vec<Row>, Value)> {
    // N is large enough to stand out of the allocator's slack, and small enough that the users'
    // requests (a webhook user sends one every 0.1-0.5 s) leave the core idle most of the time:
    // past that, requests queue and their buffers count as the users' memory.
    let kinds: [(&str, &[&str], usize); 4] = [
        (
            "API user",
            &["--skip-ws", "--skip-ai", "--scenarios", "apiuser"],
            2000,
        ),
        (
            "webhook user",
            &["--skip-ws", "--skip-ai", "--scenarios", "webhookuser"],
            500,
        ),
        ("media-stream call", &["--skip-api", "--skip-ai"], 500),
        ("AI call (stream mode)", &["--skip-api", "--skip-ws"], 100),
    ];
    let mut rows = Vec::new();
    let mut raw = serde_json::Map::new();
    let hold = if bench.quick { 4 } else { 8 };
    for (kind, args, n) in kinds {
        let mut per_user = Vec::new();
        let mut runs = Vec::new();
        for rep in 0..bench.reps {
            let sim = Sim::start(bench, &[])?;
            // N users, hold, 2N users, hold: both measured in one process.
            let plan = format!("{n},1s;{n},{hold}s;{},1s;{},{hold}s;0,0s", 2 * n, 2 * n);
            let mut cmd = bench.pinned(bench.gen_core(), &bench.tool());
            cmd.args(["--host", &sim.url, "--headless", "-q"])
                .args(args)
                .args(["--test-plan", &plan]);
            let log = format!(
                "memory-{}-{rep}.log",
                kind.split_whitespace().next().unwrap_or("x")
            );
            let proc = spawn(cmd, kind, bench.log(&log)?)?;
            let rss_at = |from: u64, to: u64| -> Vec<u64> {
                let mut v = Vec::new();
                for _ in from..to {
                    if let Some(r) = rss_kib_of(proc.pid()) {
                        v.push(r);
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                v
            };
            // Settle for half the hold, then sample the rest.
            std::thread::sleep(Duration::from_secs(1 + hold / 2));
            let at_n = rss_at(0, hold - hold / 2);
            std::thread::sleep(Duration::from_secs(1 + hold / 2));
            let at_2n = rss_at(0, hold - hold / 2);
            let _ = proc.wait(Duration::from_secs(60));
            let med = |v: &[u64]| {
                let mut v = v.to_vec();
                v.sort();
                v.get(v.len() / 2).copied().unwrap_or(0) as f64
            };
            let (a, b) = (med(&at_n), med(&at_2n));
            let kib = (b - a) / n as f64;
            println!(
                "  rep {rep} {kind}: RSS {a:.0} KiB at {n}, {b:.0} KiB at {} -> {kib:.1} KiB per user",
                2 * n
            );
            per_user.push(kib);
            runs.push(json!({"rep": rep, "n": n, "rss_kib_n": at_n, "rss_kib_2n": at_2n}));
            drop(sim);
        }
        rows.push(Row::new(
            "5 memory",
            format!("RSS per {kind} (N = {n}, then 2N)"),
            "KiB",
            per_user,
        ));
        raw.insert(kind.into(), json!(runs));
    }

    // A shortened soak: the soak profile's mix, the generator's RSS slope. Memory, not speed,
    // so the repetitions run side by side (each generator uses about a tenth of its core), long
    // enough that the allocator's warm-up (the first ~5 minutes) can be told from growth: the
    // slope that counts is fitted over the second half.
    let soak_secs: u64 = bench.soak_secs.unwrap_or(if bench.quick { 30 } else { 600 });
    let soaks = bench.reps.min(3);
    let (mut late, mut early, mut file_slope, mut growth) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut runs = Vec::new();
    let mut started = Vec::new();
    for rep in 0..soaks {
        let sim = Sim::start(bench, &[])?;
        let file = bench.out.join(format!("soak-{rep}.json"));
        let mut cmd = bench.pinned(bench.gen_core(), &bench.tool());
        cmd.args(["--host", &sim.url, "--headless", "-q", "--profile", "soak"])
            .args(["--run-time", &format!("{soak_secs}s"), "--increase-rate", "50"])
            .arg("--output")
            .arg(&file);
        let proc = spawn(cmd, "soak", bench.log(&format!("soak-{rep}.log"))?)?;
        started.push((sim, file, proc, Vec::new()));
    }
    println!("  {soaks} soak run(s) of {soak_secs} s side by side ...");
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(soak_secs + 2) {
        for (_, _, proc, samples) in &mut started {
            if let Some(r) = rss_kib_of(proc.pid()) {
                samples.push((t0.elapsed().as_secs_f64(), r as f64 / 1024.0));
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    for (rep, (sim, file, proc, samples)) in started.into_iter().enumerate() {
        let _ = proc.wait(Duration::from_secs(60));
        drop(sim);
        // Theil–Sen fits over each half, in MB per minute: warm-up, then what is left.
        let mid = samples.len() / 2;
        let (first, second) = samples.split_at(mid);
        let (early_slope, late_slope) = (
            slope::fit(first).slope_per_min(),
            slope::fit(second).slope_per_min(),
        );
        let v: Value = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let lg = &v["memory"]["load_generator"];
        println!(
            "  rep {rep} soak {soak_secs} s: RSS {:.1} -> {:.1} -> {:.1} MB (start, middle, end); \
             Theil–Sen slope first half {early_slope:.3} MB/min, second half {late_slope:.3} MB/min; \
             results file Theil–Sen slope {} MB/min (R² {}), growth {} MB",
            samples.first().map_or(0.0, |s| s.1),
            samples.get(mid).map_or(0.0, |s| s.1),
            samples.last().map_or(0.0, |s| s.1),
            lg["slope_mb_per_min"],
            lg["r2"],
            lg["growth_mb"],
        );
        late.push(late_slope);
        early.push(early_slope);
        file_slope.push(lg["slope_mb_per_min"].as_f64().unwrap_or(f64::NAN));
        growth.push(lg["growth_mb"].as_f64().unwrap_or(f64::NAN));
        runs.push(json!({"rep": rep, "seconds": soak_secs, "load_generator": lg, "rss_mb": samples}));
    }
    rows.push(
        Row::new(
            "5 memory",
            format!("soak profile, {soak_secs} s: generator RSS Theil–Sen slope over the second half"),
            "MB/min",
            late,
        )
        .target("<=", 0.1),
    );
    rows.push(
        Row::new(
            "5 memory",
            "soak: generator RSS Theil–Sen slope over the first half",
            "MB/min",
            early,
        )
        .note("the allocator's warm-up"),
    );
    rows.push(
        Row::new(
            "5 memory",
            "soak: generator RSS Theil–Sen slope after the ramp (results file)",
            "MB/min",
            file_slope,
        )
        .note("the whole run, warm-up included"),
    );
    rows.push(Row::new(
        "5 memory",
        "soak: generator memory growth (results file)",
        "MB",
        growth,
    ));
    raw.insert("soak".into(), json!(runs));
    Ok((rows, Value::Object(raw)))
}
