//! Case 2, simulator capacity: requests per second one core of `serve` answers for the API
//! request mixes, driven by `wrk` on the generator core, next to a trivial hyper server sending
//! the API user mix's mean body size (the ceiling of the kernel and HTTP path). The capacity
//! target: 60,000 requests per second on one core. Needs `wrk`; skipped without it.

use crate::mix::Mix;
use crate::process::{signal, spawn, spawn_listening};
use crate::rotation::{rotate, Member};
use crate::run::Bench;
use crate::simulator::Sim;
use crate::table::Row;
use anyhow::Result;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Runs the case; its rows and raw figures.
pub fn run(bench: &mut Bench) -> Result<(Vec<Row>, Value)> {
    let wrk_ok = Command::new("wrk")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !wrk_ok {
        let note = "sim case skipped: it needs `wrk` as the driver (e.g. apt-get install wrk)".to_string();
        println!("{note}");
        bench.notes.push(note);
        return Ok((Vec::new(), json!({"skipped": "wrk not found"})));
    }
    let mixes = [Mix::ApiUser, Mix::AllApi, Mix::Lists];
    let n = mixes.len() + 1;
    let mut rate: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut capacity: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut share: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut bytes: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut of_ceiling = Vec::new();
    let mut body = None;
    let mut runs = Vec::new();
    for rep in 0..bench.reps {
        // A simulator per mix (no eviction during the run, so get and update always find their
        // calls), each with its own wrk; then the static server. They take turns.
        let mut members = Vec::new();
        let mut logs = Vec::new();
        let mut keep = Vec::new();
        for mix in mixes {
            let sim = Arc::new(Sim::start(bench, &["--max-calls", "2000000"])?);
            let ids = sim.fill(100_000)?;
            let script = bench.out.join(format!("mix-{}.lua", mix.name()));
            std::fs::write(&script, mix.lua(&ids))?;
            if body.is_none() {
                // The ceiling's body: this mix's mean answer, from a short calibration run.
                let cal = bench.out.join("calibration.wrk");
                let cmd = wrk_command(bench, &sim.url, Some(&script), 2);
                spawn(cmd, "wrk", std::fs::File::create(&cal)?)?.wait(Duration::from_secs(30))?;
                let w = parse_wrk(&std::fs::read_to_string(&cal).unwrap_or_default());
                body = Some(
                    (w.bytes_per_response as usize)
                        .saturating_sub(HEADER_BYTES)
                        .max(16),
                );
            }
            let log = bench.out.join(format!("sim-{}-{rep}.wrk", mix.name()));
            let cmd = wrk_command(bench, &sim.url, Some(&script), 3600);
            let proc = spawn(cmd, "wrk", std::fs::File::create(&log)?)?;
            signal(&proc, libc::SIGSTOP);
            let counter = sim.clone();
            members.push(Member {
                name: format!("wrk {}", mix.name()),
                proc,
                count: Box::new(move || counter.requests()),
                target_pid: sim.proc.pid(),
            });
            logs.push(log);
            keep.push(sim);
        }
        let body = body.unwrap_or(7000);
        let mut cmd = bench.pinned(bench.sim_core(), &std::env::current_exe()?);
        cmd.args(["static-server", "--body", &body.to_string()]);
        let (server, addr) = spawn_listening(cmd, "the static server")?;
        let log = bench.out.join(format!("static-{rep}.wrk"));
        let proc = spawn(
            wrk_command(bench, &format!("http://{addr}/"), None, 3600),
            "wrk",
            std::fs::File::create(&log)?,
        )?;
        signal(&proc, libc::SIGSTOP);
        let http = reqwest::blocking::Client::new();
        let count_url = format!("http://{addr}/_count");
        members.push(Member {
            name: "wrk static".into(),
            proc,
            count: Box::new(move || Ok(http.get(&count_url).send()?.text()?.trim().parse()?)),
            target_pid: server.pid(),
        });
        logs.push(log);
        let got = rotate(bench, members)?;
        drop(server);
        drop(keep);
        let names = ["api-user", "all-api", "lists", "static"];
        for (i, w) in got.iter().enumerate() {
            let wrk = parse_wrk(&std::fs::read_to_string(&logs[i]).unwrap_or_default());
            println!(
                "  rep {rep} {:<9}: {:>8.0} req/s, server {:>5.1} % CPU -> {:>8.0} req per server CPU-s; \
                 {:.0} bytes per response; {}",
                names[i],
                w.rps,
                w.target_cpu_share * 100.0,
                w.per_target_cpu_s,
                wrk.bytes_per_response,
                wrk.errors
            );
            rate[i].push(w.rps);
            capacity[i].push(w.per_target_cpu_s);
            share[i].push(100.0 * w.target_cpu_share);
            bytes[i].push(wrk.bytes_per_response);
            runs.push(json!({"rep": rep, "what": names[i], "window": w, "wrk": wrk}));
        }
        of_ceiling.push(100.0 * got[0].per_target_cpu_s / got[3].per_target_cpu_s);
    }
    let mut rows = Vec::new();
    for (i, mix) in mixes.iter().enumerate() {
        let label = mix.label();
        let mut answered = Row::new(
            "2 sim",
            format!("{label}: answered, one core"),
            "req/s",
            rate[i].clone(),
        );
        if *mix != Mix::Lists {
            answered = answered.target(">=", 60_000.0);
        }
        rows.push(answered);
        rows.push(
            Row::new(
                "2 sim",
                format!("{label}: per simulator CPU-second"),
                "req/s",
                capacity[i].clone(),
            )
            .note("what one fully used core affords"),
        );
        rows.push(Row::new(
            "2 sim",
            format!("{label}: simulator CPU"),
            "% of a core",
            share[i].clone(),
        ));
        rows.push(Row::new(
            "2 sim",
            format!("{label}: bytes per answer"),
            "bytes",
            bytes[i].clone(),
        ));
    }
    let body = body.unwrap_or(0);
    rows.push(Row::new(
        "2 sim",
        format!("ceiling: trivial hyper server, static {body} B body (the API user mix's mean), answered"),
        "req/s",
        rate[3].clone(),
    ));
    rows.push(Row::new(
        "2 sim",
        "ceiling: per server CPU-second",
        "req/s",
        capacity[3].clone(),
    ));
    rows.push(Row::new(
        "2 sim",
        "API user mix as a share of the ceiling (per CPU-second)",
        "%",
        of_ceiling,
    ));
    Ok((rows, json!({"static_body_bytes": body, "runs": runs})))
}

/// Response header bytes of the simulator's JSON answers (status line, date, type, length).
const HEADER_BYTES: usize = 110;

/// What a wrk run printed, and what it means.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct WrkOut {
    requests: u64,
    bytes_per_response: f64,
    errors: String,
    text: String,
}

/// Reads wrk's summary: the requests, the bytes per response and any errors.
fn parse_wrk(text: &str) -> WrkOut {
    // wrk's units are binary (1 MB = 1024 * 1024 B).
    let amount = |v: &str| -> Option<f64> {
        let (num, mult) = [("GB", 1u64 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)]
            .iter()
            .find_map(|(unit, mult)| Some((v.strip_suffix(unit)?, *mult as f64)))
            .unwrap_or((v, 1.0));
        num.parse::<f64>().ok().map(|n| n * mult)
    };
    // "  1234567 requests in 20.00s, 8.00GB read"
    let (requests, read) = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| {
            let requests = l.split_whitespace().next()?.parse::<f64>().ok()?;
            let read = l.split(',').nth(1)?.split_whitespace().next().and_then(amount)?;
            Some((requests, read))
        })
        .unwrap_or((0.0, 0.0));
    let errors: Vec<String> = text
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .map(|l| l.trim().to_string())
        .collect();
    WrkOut {
        requests: requests as u64,
        bytes_per_response: if requests > 0.0 { read / requests } else { f64::NAN },
        errors: if errors.is_empty() {
            "no errors".into()
        } else {
            errors.join("; ")
        },
        text: text.to_string(),
    }
}

/// wrk on the generator core: one thread, 64 connections, `secs` long.
fn wrk_command(bench: &Bench, url: &str, script: Option<&Path>, secs: u64) -> Command {
    let mut cmd = bench.pinned(bench.gen_core(), Path::new("wrk"));
    cmd.args(["-t1", "-c64", "--timeout", "60s", &format!("-d{secs}s")]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    cmd.arg(url);
    cmd
}

/// A trivial hyper server: one thread, every request answered with the same static body.
pub fn static_server(body: usize) -> Result<()> {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let payload = bytes::Bytes::from(vec![b'x'; body]);
        let answered = Arc::new(AtomicU64::new(0));
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            let (payload, answered) = (payload.clone(), answered.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    // `/_count` says how many requests were answered (not counted itself).
                    let data = if req.uri().path() == "/_count" {
                        bytes::Bytes::from(answered.load(Relaxed).to_string())
                    } else {
                        answered.fetch_add(1, Relaxed);
                        payload.clone()
                    };
                    async move {
                        let mut r = hyper::Response::new(http_body_util_full(data));
                        r.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = http1::Builder::new().serve_connection(io, service).await;
            });
        }
    })
}

/// A one-frame body (what `http_body_util::Full` is, without the extra dependency).
fn http_body_util_full(data: bytes::Bytes) -> axum::body::Body {
    axum::body::Body::from(data)
}
