//! Case 3, media streams: the media-stream calls one generator core sustains at 50 frames/s
//! with at least 99 % of frames on time (examples/bench_streams.rs), and a raw send loop's CPU
//! per 330-byte send, the loopback ceiling for any sender. The capacity target: 5,000 calls per
//! core, under 64 KiB each.

use crate::process::{spawn, spawn_listening};
use crate::procfs::thread_cpu;
use crate::run::Bench;
use crate::table::Row;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs the case; its rows and raw figures.
pub fn run(bench: &mut Bench) -> Result<(Vec<Row>, Value)> {
    let steps = if bench.quick {
        "1000,2000"
    } else {
        "1000,1500,2000,2500,5000"
    };
    let hold = if bench.quick { 5 } else { bench.secs.min(20) };
    let (mut largest, mut us_frame, mut estimate, mut kib, mut kernel) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut on_time_5k, mut p99_5k) = (Vec::new(), Vec::new());
    let mut runs = Vec::new();
    for rep in 0..bench.reps {
        let json_path = bench.out.join(format!("streams-{rep}.json"));
        let _ = std::fs::remove_file(&json_path);
        // bench_streams pins itself (generator core) and its simulator (the other cores).
        let mut cmd = Command::new(bench.example("bench_streams"));
        cmd.args(["--steps", steps, "--hold", &hold.to_string()])
            .args(["--core", &bench.gen_core().unwrap_or(0).to_string()])
            .arg("--sim-bin")
            .arg(bench.tool())
            .arg("--json")
            .arg(&json_path);
        let log = format!("streams-{rep}.log");
        let proc = spawn(cmd, "bench_streams", bench.log(&log)?)?;
        let status = proc.wait(Duration::from_secs(900))?;
        let text = std::fs::read_to_string(&json_path)
            .with_context(|| format!("bench_streams wrote no results ({status}); see {log}"))?;
        let v: Value = serde_json::from_str(&text)?;
        let steps_v = v["steps"].as_array().cloned().unwrap_or_default();
        for s in &steps_v {
            println!(
                "  rep {rep} {:>5} calls: {:.2} frames/s per call, {:.2} % on time, p99 {:.1} ms, \
                 {:.1} KiB per call, {:.2} us CPU per frame ({:.0} % kernel){}",
                s["calls"].as_u64().unwrap_or(0),
                s["frames_per_call_sec"].as_f64().unwrap_or(0.0),
                s["on_time_pct"].as_f64().unwrap_or(0.0),
                s["p99_us"].as_f64().unwrap_or(0.0) / 1000.0,
                s["kib_per_call"].as_f64().unwrap_or(0.0),
                s["cpu_us_per_frame"].as_f64().unwrap_or(0.0),
                s["kernel_pct"].as_f64().unwrap_or(0.0),
                if s["meets_target"] == true {
                    "  [meets target]"
                } else {
                    ""
                }
            );
        }
        largest.push(v["largest_meeting_target"].as_f64().unwrap_or(0.0));
        if let Some(last) = steps_v.last() {
            us_frame.push(last["cpu_us_per_frame"].as_f64().unwrap_or(f64::NAN));
            kernel.push(last["kernel_pct"].as_f64().unwrap_or(f64::NAN));
            estimate.push(1e6 / (last["cpu_us_per_frame"].as_f64().unwrap_or(f64::NAN) * 50.0));
            kib.push(last["kib_per_call"].as_f64().unwrap_or(f64::NAN));
        }
        if let Some(s) = steps_v.iter().find(|s| s["calls"] == 5000) {
            on_time_5k.push(s["on_time_pct"].as_f64().unwrap_or(f64::NAN));
            p99_5k.push(s["p99_us"].as_f64().unwrap_or(f64::NAN) / 1000.0);
        }
        runs.push(v);
    }
    let mut rows = vec![Row::new(
        "3 streams",
        format!("calls at 50 frames/s, ≥ 99 % on time, one core (steps {steps})"),
        "calls",
        largest,
    )
    .target(">=", 5000.0)];
    if !on_time_5k.is_empty() {
        rows.push(Row::new("3 streams", "5,000 calls: frames on time", "%", on_time_5k).target(">=", 99.0));
        rows.push(Row::new("3 streams", "5,000 calls: lateness p99", "ms", p99_5k));
    }
    rows.push(Row::new(
        "3 streams",
        "generator CPU per frame (largest step)",
        "µs",
        us_frame,
    ));
    rows.push(Row::new("3 streams", "of which in the kernel", "%", kernel));
    rows.push(
        Row::new(
            "3 streams",
            "calls one idle core affords at that CPU per frame",
            "calls",
            estimate,
        )
        .note("CPU-bound estimate"),
    );
    rows.push(Row::new("3 streams", "memory per call (largest step)", "KiB", kib).target("<=", 64.0));

    // The raw loop: the kernel's share of a send, whatever the sender does.
    let (mut raw_us, mut raw_kernel) = (Vec::new(), Vec::new());
    let mut raw_runs = Vec::new();
    for rep in 0..bench.reps {
        let mut sink_cmd = bench.pinned(bench.sim_core(), &std::env::current_exe()?);
        sink_cmd.arg("sink");
        let (sink, addr) = spawn_listening(sink_cmd, "the sink")?;
        let mut cmd = bench.pinned(bench.gen_core(), &std::env::current_exe()?);
        cmd.args(["raw-loop", "--addr", &addr, "--sockets", "2000"])
            .args(["--secs", &bench.secs.min(10).to_string()]);
        let out = cmd.output().context("raw loop")?;
        drop(sink);
        let v: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("raw loop: {}", String::from_utf8_lossy(&out.stderr)))?;
        println!(
            "  rep {rep} raw loop: {:.2} us CPU per 330-byte send ({:.0} % kernel) over 2,000 sockets",
            v["us_per_send"].as_f64().unwrap_or(0.0),
            v["kernel_pct"].as_f64().unwrap_or(0.0)
        );
        raw_us.push(v["us_per_send"].as_f64().unwrap_or(f64::NAN));
        raw_kernel.push(v["kernel_pct"].as_f64().unwrap_or(f64::NAN));
        raw_runs.push(v);
    }
    let afford: Vec<f64> = raw_us.iter().map(|us| 1e6 / (us * 50.0)).collect();
    rows.push(Row::new(
        "3 streams",
        "raw loop: CPU per 330-byte send over 2,000 loopback sockets",
        "µs",
        raw_us,
    ));
    rows.push(Row::new(
        "3 streams",
        "raw loop: of which in the kernel",
        "%",
        raw_kernel,
    ));
    rows.push(
        Row::new(
            "3 streams",
            "raw loop: calls one core affords at 50 sends/s",
            "calls",
            afford,
        )
        .note("the loopback ceiling for any sender"),
    );
    Ok((rows, json!({"bench_streams": runs, "raw_loop": raw_runs})))
}

/// Accepts connections and discards their bytes (one thread, many sockets).
pub fn sink() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        loop {
            let (mut tcp, _) = listener.accept().await?;
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    })
}

/// Sends 330-byte frames (a media event's size on the wire) round-robin over `sockets`
/// loopback connections, as fast as it can, for `secs`; prints CPU per send.
pub fn raw_loop(addr: &str, sockets: usize, secs: u64) -> Result<()> {
    let mut conns = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let tcp = std::net::TcpStream::connect(addr)?;
        tcp.set_nodelay(true)?;
        conns.push(tcp);
    }
    let frame = vec![b'x'; 330];
    std::thread::sleep(Duration::from_millis(300));
    let (start, cpu0) = (Instant::now(), thread_cpu());
    let mut sends = 0u64;
    'run: loop {
        for tcp in conns.iter_mut() {
            tcp.write_all(&frame)?;
            sends += 1;
        }
        if start.elapsed() >= Duration::from_secs(secs) {
            break 'run;
        }
    }
    let cpu = thread_cpu();
    let took = start.elapsed().as_secs_f64();
    let (user, system) = (cpu.0 - cpu0.0, cpu.1 - cpu0.1);
    let v = json!({
        "sockets": sockets,
        "sends": sends,
        "seconds": took,
        "us_per_send": (user + system) * 1e6 / sends as f64,
        "kernel_pct": 100.0 * system / (user + system),
        "cpu_share": (user + system) / took,
    });
    println!("{v}");
    Ok(())
}
