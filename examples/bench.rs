//! `scripts/bench`: every speed figure of the project, side by side, in one table.
//!
//! ```text
//! scripts/bench            # release build, all cases, 3 repetitions of ~20 s each (~25 minutes)
//! scripts/bench --quick    # one repetition of ~5 s cases: a smoke pass (~5 minutes)
//! scripts/bench --only api,sim --reps 5 --secs 30
//! ```
//!
//! The load generator runs pinned to one core (`--gen-core`, default 0), the system under test
//! (the simulator, a static server, a sink) in its own process on another (`--sim-core`,
//! default 1), both with `taskset`. Where two things are compared (our generator and plain
//! Goose; the simulator's mixes and a static server), they take turns on the core, a slice of
//! 2 s each round after round with the others stopped (SIGSTOP), so a machine whose speed
//! drifts (other work, a noisy hypervisor) slows them alike. CPU time comes from /proc (utime +
//! stime of the measured process, over its own slices only), request counts from the
//! simulator's `/_sim/stats`, the crate's results file (`--output`), Goose's JSON report and
//! wrk. Every figure is given as min / median / max over the repetitions, next to its target.
//! The table is printed (Markdown) and written with all raw figures as JSON
//! (`target/bench/results.json`, `results.md`). It always exits 0 once it has printed.
//!
//! The cases (issue 8):
//! 1. `api`: requests per second per generator CPU-second of the crate's API scenarios
//!    (`--no-wait --skip-ws --skip-ai`) next to a plain-Goose test (examples/plain_goose.rs),
//!    each against a simulator of its own, in turns. Target: ours >= 85 % of plain Goose.
//! 2. `sim`: requests per second one core of `serve` answers for the API mixes, driven by `wrk`
//!    on the other core, and a trivial hyper server sending the API user mix's mean body size:
//!    the ceiling of the kernel and HTTP path. Target: >= 60,000.
//! 3. `streams`: media-stream calls one generator core sustains at 50 frames/s with >= 99 % of
//!    frames on time (examples/bench_streams.rs), and a raw send loop's CPU per 330-byte send.
//!    Target: 5,000.
//! 4. `ai`: concurrent `--ai-mode mock` calls one core runs while the timer error's p99 stays
//!    within 1 ms of an idle runtime's, next to a Python asyncio loop doing the same sleeps (the
//!    original mock's design).
//! 5. `memory`: the generator's RSS per user of each kind (N users, then 2N) and its RSS slope
//!    over a shortened soak run.
//!
//! Internal subcommands (run pinned by the orchestrator): `static-server`, `sink`, `raw-loop`,
//! `ai-mock`; and `prepare-mix`, which fills a running simulator and writes a wrk script of a
//! mix, to profile the simulator by hand.

mod bench_os;

use anyhow::{bail, Context, Result};
use bench_os::{pin, raise_fd_limit};
use clap::{Parser, Subcommand, ValueEnum};
use goose::prelude::*;
use phone_agent_load::config::plan::{AiMode, Overrides, RunPlan, Skips};
use phone_agent_load::config::profile::Profile;
use phone_agent_load::measure::{Histogram, Measurements};
use phone_agent_load::scenarios::{ai_call, data, Shared};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Speed figures of phone-agent-load, side by side (see scripts/bench)")]
struct Cli {
    #[command(subcommand)]
    internal: Option<Internal>,
    /// One repetition of ~5 s cases: a smoke pass
    #[arg(long)]
    quick: bool,
    /// Repetitions of each case (default 3, 1 with --quick)
    #[arg(long)]
    reps: Option<usize>,
    /// Seconds of each measured window (default 20, 5 with --quick)
    #[arg(long)]
    secs: Option<u64>,
    /// Cases to run (default all)
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Case>,
    /// Where results.json, results.md and the runs' files go
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
    /// Where phone-agent-load and the examples were built
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// The load generator's core
    #[arg(long, default_value_t = 0)]
    gen_core: usize,
    /// The system under test's core
    #[arg(long, default_value_t = 1)]
    sim_core: usize,
    /// Seconds of each soak run of the memory case (default 600, 30 with --quick)
    #[arg(long)]
    soak_secs: Option<u64>,
    /// Concurrent users of the API throughput case
    #[arg(long, default_value_t = 64)]
    api_users: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Case {
    Api,
    Sim,
    Streams,
    Ai,
    Memory,
}

#[derive(Subcommand, Debug)]
enum Internal {
    /// A trivial hyper server answering every request with a static body
    StaticServer {
        #[arg(long)]
        body: usize,
    },
    /// Accepts connections and discards what they send (the raw loop's other end)
    Sink,
    /// Sends 330-byte frames round-robin over many loopback sockets; prints CPU per send
    RawLoop {
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 2000)]
        sockets: usize,
        #[arg(long, default_value_t = 5)]
        secs: u64,
    },
    /// Fills a running simulator with calls and writes a wrk script of a request mix for it
    /// (to profile the simulator by hand: `wrk -t1 -c64 -d20s -s FILE URL`)
    PrepareMix {
        #[arg(long)]
        url: String,
        #[arg(long, value_enum)]
        mix: Mix,
        #[arg(long, default_value_t = 100_000)]
        calls: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// N concurrent `--ai-mode mock` calls in this process, with timer probes; prints JSON
    AiMock {
        #[arg(long)]
        calls: usize,
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    raise_fd_limit();
    match &cli.internal {
        Some(Internal::StaticServer { body }) => static_server(*body),
        Some(Internal::Sink) => sink(),
        Some(Internal::RawLoop { addr, sockets, secs }) => raw_loop(addr, *sockets, *secs),
        Some(Internal::AiMock { calls, secs }) => ai_mock(*calls, *secs),
        Some(Internal::PrepareMix { url, mix, calls, out }) => {
            let filler = Filler::new(url)?;
            let ids = filler.fill(*calls)?;
            std::fs::write(out, mix.lua(&ids))?;
            Ok(())
        }
        None => orchestrate(&cli),
    }
}

// ---------------------------------------------------------------------------------------------
// The orchestrator

/// The run's settings, derived from the command line.
struct Bench {
    reps: usize,
    secs: u64,
    quick: bool,
    out: PathBuf,
    bin: PathBuf,
    examples: PathBuf,
    /// `Some((gen, sim))` when pinned.
    cores: Option<(usize, usize)>,
    taskset: bool,
    api_users: usize,
    soak_secs: Option<u64>,
    notes: Vec<String>,
}

impl Bench {
    fn tool(&self) -> PathBuf {
        self.bin.join("phone-agent-load")
    }

    fn example(&self, name: &str) -> PathBuf {
        self.examples.join(name)
    }

    fn gen_core(&self) -> Option<usize> {
        self.cores.map(|c| c.0)
    }

    fn sim_core(&self) -> Option<usize> {
        self.cores.map(|c| c.1)
    }

    /// `program` pinned to `core` (with taskset, or with sched_setaffinity when it is missing).
    fn pinned(&self, core: Option<usize>, program: &Path) -> Command {
        match core {
            Some(core) if self.taskset => {
                let mut cmd = Command::new("taskset");
                cmd.arg("-c").arg(core.to_string()).arg(program);
                cmd
            }
            Some(core) => {
                let mut cmd = Command::new(program);
                // SAFETY: sched_setaffinity is async-signal-safe; nothing else runs before exec.
                unsafe {
                    use std::os::unix::process::CommandExt;
                    cmd.pre_exec(move || pin(0, &[core]).map_err(std::io::Error::other));
                }
                cmd
            }
            None => Command::new(program),
        }
    }

    /// The steady window's start after a process started: its ramp and warm-up.
    fn warm(&self) -> Duration {
        Duration::from_secs(if self.quick { 2 } else { 4 })
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.secs)
    }

    fn log(&self, name: &str) -> Result<std::fs::File> {
        std::fs::File::create(self.out.join(name)).with_context(|| format!("cannot create {name}"))
    }
}

fn orchestrate(cli: &Cli) -> Result<()> {
    let started = Instant::now();
    let cases: Vec<Case> = if cli.only.is_empty() {
        vec![Case::Api, Case::Sim, Case::Streams, Case::Ai, Case::Memory]
    } else {
        cli.only.clone()
    };
    std::fs::create_dir_all(&cli.out_dir)?;
    let out = cli.out_dir.canonicalize()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut notes = Vec::new();
    let pinned = if cores >= 2 && cli.gen_core != cli.sim_core && cli.gen_core.max(cli.sim_core) < cores {
        Some((cli.gen_core, cli.sim_core))
    } else {
        let note = format!(
            "{cores} core(s) available: generator and target run unpinned and share the CPU, so \
             every figure is a lower bound"
        );
        println!("note: {note}");
        notes.push(note);
        None
    };
    let taskset = Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut bench = Bench {
        reps: cli.reps.unwrap_or(if cli.quick { 1 } else { 3 }).max(1),
        secs: cli.secs.unwrap_or(if cli.quick { 5 } else { 20 }).max(1),
        quick: cli.quick,
        bin: cli
            .bin_dir
            .canonicalize()
            .context("--bin-dir: build first (scripts/bench does)")?,
        examples: cli.bin_dir.join("examples").canonicalize()?,
        out,
        cores: pinned,
        taskset,
        api_users: cli.api_users,
        soak_secs: cli.soak_secs,
        notes,
    };
    for need in [
        bench.tool(),
        bench.example("plain_goose"),
        bench.example("bench_streams"),
    ] {
        if !need.exists() {
            bail!(
                "{} is missing: run scripts/bench (it builds everything first)",
                need.display()
            );
        }
    }
    let machine = machine();
    let load_start = loadavg();
    println!(
        "machine: {} cores ({}), {} MiB; {}; load average {}",
        machine["nproc"], machine["cpu"], machine["mem_mib"], machine["date"], load_start
    );
    match bench.cores {
        Some((g, s)) => println!(
            "generator on core {g}, target on core {s} ({}); {} repetition(s), {} s windows",
            if bench.taskset {
                "taskset"
            } else {
                "sched_setaffinity"
            },
            bench.reps,
            bench.secs
        ),
        None => println!("unpinned; {} repetition(s), {} s windows", bench.reps, bench.secs),
    }
    if load_start
        .split_whitespace()
        .next()
        .and_then(|l| l.parse::<f64>().ok())
        .unwrap_or(0.0)
        > 0.5
    {
        let note = format!(
            "load average {load_start} at the start: other work shared these cores, so rates may be low"
        );
        println!("note: {note}");
        bench.notes.push(note);
    }

    let mut rows: Vec<Row> = Vec::new();
    let mut raw = serde_json::Map::new();
    let mut steal = serde_json::Map::new();
    for case in cases {
        println!("\n== {case:?} ==");
        let cpu0 = cpu_times();
        let result = match case {
            Case::Api => case_api(&mut bench),
            Case::Sim => case_sim(&mut bench),
            Case::Streams => case_streams(&mut bench),
            Case::Ai => case_ai(&mut bench),
            Case::Memory => case_memory(&mut bench),
        };
        let stolen = steal_share(cpu0, cpu_times());
        steal.insert(format!("{case:?}").to_lowercase(), json!(stolen));
        if stolen > 0.02 {
            let note = format!(
                "{case:?}: the hypervisor took {:.0} % of the CPU time during this case (steal): \
                 its figures vary more than usual",
                stolen * 100.0
            );
            println!("note: {note}");
            bench.notes.push(note);
        }
        match result {
            Ok((case_rows, case_raw)) => {
                rows.extend(case_rows);
                raw.insert(format!("{case:?}").to_lowercase(), case_raw);
            }
            Err(e) => {
                let note = format!("{case:?} case failed: {e:#}");
                println!("error: {note}");
                bench.notes.push(note);
            }
        }
    }
    let load_end = loadavg();
    let report = json!({
        "machine": machine,
        "load_average": {"start": load_start, "end": load_end},
        "pinned": bench.cores.map(|(g, s)| json!({"generator_core": g, "target_core": s})),
        "quick": bench.quick,
        "repetitions": bench.reps,
        "window_s": bench.secs,
        "took_s": started.elapsed().as_secs(),
        "notes": bench.notes,
        "steal_share": steal,
        "table": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        "raw": raw,
    });
    let md = markdown(&rows, &report);
    println!("\n{md}");
    std::fs::write(
        bench.out.join("results.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(bench.out.join("results.md"), &md)?;
    println!(
        "written: {} and results.md ({} s)",
        bench.out.join("results.json").display(),
        started.elapsed().as_secs()
    );
    Ok(())
}

/// One line of the table: a figure's repetitions and its target.
struct Row {
    case: &'static str,
    figure: String,
    unit: &'static str,
    values: Vec<f64>,
    /// `(comparison, target)`: ">=" or "<=".
    target: Option<(&'static str, f64)>,
    note: String,
}

impl Row {
    fn new(case: &'static str, figure: impl Into<String>, unit: &'static str, values: Vec<f64>) -> Row {
        Row {
            case,
            figure: figure.into(),
            unit,
            values,
            target: None,
            note: String::new(),
        }
    }

    fn target(mut self, cmp: &'static str, value: f64) -> Row {
        self.target = Some((cmp, value));
        self
    }

    fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }

    fn stats(&self) -> Option<(f64, f64, f64)> {
        let mut v: Vec<f64> = self.values.iter().copied().filter(|v| v.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let median = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        Some((v[0], median, v[v.len() - 1]))
    }

    /// The median as a share of the target, and whether it meets it.
    fn verdict(&self) -> Option<(f64, bool)> {
        let (cmp, target) = self.target?;
        let (_, median, _) = self.stats()?;
        Some(match cmp {
            "<=" => (median / target, median <= target),
            _ => (median / target, median >= target),
        })
    }

    fn to_json(&self) -> Value {
        let stats = self.stats();
        json!({
            "case": self.case,
            "figure": self.figure,
            "unit": self.unit,
            "values": self.values,
            "min": stats.map(|s| s.0),
            "median": stats.map(|s| s.1),
            "max": stats.map(|s| s.2),
            "target": self.target.map(|(c, t)| format!("{c} {}", fmt_num(t))),
            "vs_target": self.verdict().map(|v| v.0),
            "met": self.verdict().map(|v| v.1),
            "note": self.note,
        })
    }
}

/// A number for the table: grouped thousands for big ones, a few digits for small ones.
fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        let s = format!("{:.0}", a);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 {
            out.insert(0, '-');
        }
        out
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn markdown(rows: &[Row], report: &Value) -> String {
    let mut md = String::new();
    let m = &report["machine"];
    let _ = writeln!(
        md,
        "Machine: {} cores, {}, {} MiB RAM; {}; load average {} at the start, {} at the end; \
         {} repetition(s) of {} s windows{}.\n",
        m["nproc"],
        m["cpu"].as_str().unwrap_or("?"),
        m["mem_mib"],
        m["date"].as_str().unwrap_or("?"),
        report["load_average"]["start"].as_str().unwrap_or("?"),
        report["load_average"]["end"].as_str().unwrap_or("?"),
        report["repetitions"],
        report["window_s"],
        if report["quick"] == true { " (--quick)" } else { "" },
    );
    md.push_str("| case | figure | min | median | max | target | median vs target |\n");
    md.push_str("|---|---|---|---|---|---|---|\n");
    for r in rows {
        let (min, med, max) = match r.stats() {
            Some((a, b, c)) => (fmt_num(a), fmt_num(b), fmt_num(c)),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let unit = if r.unit.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.unit)
        };
        let target = r
            .target
            .map(|(c, t)| format!("{} {}", if c == "<=" { "≤" } else { "≥" }, fmt_num(t)))
            .unwrap_or_default();
        let verdict = match r.verdict() {
            Some((share, met)) => {
                let of = if r.target.is_some_and(|t| t.0 == "<=") {
                    " of the limit"
                } else {
                    ""
                };
                format!(
                    "{:.0} %{of}, {}",
                    share * 100.0,
                    if met { "met" } else { "**missed**" }
                )
            }
            None => String::new(),
        };
        let figure = if r.note.is_empty() {
            format!("{}{unit}", r.figure)
        } else {
            format!("{}{unit} — {}", r.figure, r.note)
        };
        let _ = writeln!(
            md,
            "| {} | {figure} | {min} | {med} | {max} | {target} | {verdict} |",
            r.case
        );
    }
    if let Some(notes) = report["notes"].as_array().filter(|n| !n.is_empty()) {
        md.push('\n');
        for n in notes {
            let _ = writeln!(md, "- {}", n.as_str().unwrap_or_default());
        }
    }
    md
}

// ---------------------------------------------------------------------------------------------
// Processes, /proc and the simulator

/// CPU time (user, system) of a process so far, in seconds, from /proc/PID/stat.
fn cpu_of(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is [0], utime [11], stime [12].
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((
        f.get(11)?.parse::<f64>().ok()? / tick,
        f.get(12)?.parse::<f64>().ok()? / tick,
    ))
}

fn cpu_total(pid: u32) -> f64 {
    cpu_of(pid).map_or(f64::NAN, |(u, s)| u + s)
}

/// Resident memory of a process, in KiB, from /proc/PID/status.
fn rss_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The machine's CPU time so far, (steal, total), in clock ticks, from /proc/stat.
fn cpu_times() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is counted in user already).
    let total = fields.iter().take(8).sum();
    (fields.get(7).copied().unwrap_or(0), total)
}

/// The share of the machine's CPU time a hypervisor took between two readings.
fn steal_share(a: (u64, u64), b: (u64, u64)) -> f64 {
    (b.0 - a.0) as f64 / (b.1 - a.1).max(1) as f64
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "?".into());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "nproc": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu": cpu,
        "mem_mib": mem_kib / 1024,
        "kernel": kernel.trim(),
        "date": chrono::Local::now().format("%Y-%m-%d %H:%M %Z").to_string(),
    })
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to end by itself, at most `limit`; kills it past that.
    fn wait(mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} did not end within {limit:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill with a pid we own.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `cmd`, its output to `log`.
fn spawn(mut cmd: Command, name: &str, log: std::fs::File) -> Result<Proc> {
    let err = log.try_clone()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    Ok(Proc {
        child,
        name: name.to_string(),
    })
}

/// Starts `cmd` and waits for its `listening on ...` line; returns what follows it.
fn spawn_listening(mut cmd: Command, name: &str) -> Result<(Proc, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let proc = Proc {
        child,
        name: name.to_string(),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .with_context(|| format!("{name} did not say where it listens within 10 s"))?;
    Ok((proc, addr))
}

/// The simulator, in its own process on the target core.
struct Sim {
    proc: Proc,
    url: String,
    http: reqwest::blocking::Client,
}

/// Creates calls in a simulator.
struct Filler {
    url: String,
    http: reqwest::blocking::Client,
}

impl Filler {
    fn new(url: &str) -> Result<Filler> {
        Ok(Filler {
            url: url.trim_end_matches('/').to_string(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    /// Creates `n` calls (8 connections); returns the ids of the last few thousand.
    fn fill(&self, n: usize) -> Result<Vec<String>> {
        let threads = 8;
        let ids = Arc::new(Mutex::new(Vec::new()));
        std::thread::scope(|s| {
            let mut handles = Vec::new();
            for t in 0..threads {
                let (http, url, ids) = (
                    self.http.clone(),
                    format!("{}/api/v1/calls", self.url),
                    ids.clone(),
                );
                handles.push(s.spawn(move || -> Result<()> {
                    let rng = &mut rand::rng();
                    let share = n / threads + usize::from(t < n % threads);
                    for i in 0..share {
                        let body = data::create_call_body(rng, t);
                        let r = http
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()?;
                        if r.status().as_u16() != 201 {
                            bail!("creating a call: status {}", r.status());
                        }
                        if share - i <= 512 {
                            let v: Value = r.json()?;
                            if let Some(id) = v["id"].as_str() {
                                ids.lock().unwrap().push(id.to_string());
                            }
                        }
                    }
                    Ok(())
                }));
            }
            handles
                .into_iter()
                .try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("a fill thread panicked"))?)
        })?;
        let ids = std::mem::take(&mut *ids.lock().unwrap());
        Ok(ids)
    }
}

impl Sim {
    fn start(bench: &Bench, extra: &[&str]) -> Result<Sim> {
        let mut cmd = bench.pinned(bench.sim_core(), &bench.tool());
        cmd.args(["serve", "--port", "0", "--bind", "127.0.0.1"])
            .args(extra);
        let (proc, url) = spawn_listening(cmd, "the simulator")?;
        Ok(Sim {
            proc,
            url,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    fn stats(&self) -> Result<Value> {
        Ok(self.http.get(format!("{}/_sim/stats", self.url)).send()?.json()?)
    }

    /// Requests it has received (REST and webhooks; its own endpoints are not counted).
    fn requests(&self) -> Result<u64> {
        let stats = self.stats()?;
        Ok(stats["requests"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum()))
    }

    /// Creates `n` calls; returns the ids of the last few thousand.
    fn fill(&self, n: usize) -> Result<Vec<String>> {
        Filler::new(&self.url)?.fill(n)
    }
}

/// One member of a rotation: a load-generating process, and how to count what its target
/// answered and what that cost.
struct Member {
    name: String,
    proc: Proc,
    /// Requests its target has answered so far.
    count: Box<dyn Fn() -> Result<u64>>,
    /// The target's process (its CPU is measured too).
    target_pid: u32,
}

/// Figures of one member over its active slices.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct Rotated {
    seconds: f64,
    requests: u64,
    gen_cpu_s: f64,
    target_cpu_s: f64,
    /// Requests per second while it ran.
    rps: f64,
    /// Requests per CPU-second of the load generator.
    per_gen_cpu_s: f64,
    /// Requests per CPU-second of the target.
    per_target_cpu_s: f64,
    gen_cpu_share: f64,
    target_cpu_share: f64,
}

fn signal(proc: &Proc, sig: libc::c_int) {
    // SAFETY: kill with a pid we own.
    unsafe { libc::kill(proc.pid() as libc::pid_t, sig) };
}

/// Runs `members` in turns on the generator core: each in turn runs alone for a slice while
/// the others are stopped (SIGSTOP), round after round, until each has run `bench.secs`
/// seconds measured (after a first warm-up turn each). A machine whose speed drifts (other
/// work, a noisy hypervisor) then slows every member alike, so their ratios hold. Each
/// member's figures count only its own slices. At the end every member gets SIGINT (Goose,
/// the CLI and wrk all stop cleanly on it) and is waited for.
fn rotate(bench: &Bench, members: Vec<Member>) -> Result<Vec<Rotated>> {
    let slice = Duration::from_millis(if bench.quick { 1000 } else { 2000 });
    let settle = Duration::from_millis(250);
    let rounds = (bench.window().as_secs_f64() / slice.as_secs_f64())
        .ceil()
        .max(1.0) as usize;
    for m in &members[1..] {
        signal(&m.proc, libc::SIGSTOP);
    }
    signal(&members[0].proc, libc::SIGCONT);
    let mut got = vec![Rotated::default(); members.len()];
    let mut active = 0;
    let mut turn = |i: usize, len: Duration, measure: bool, got: &mut Vec<Rotated>| -> Result<()> {
        let m = &members[i];
        if active != i {
            signal(&members[active].proc, libc::SIGSTOP);
            signal(&m.proc, libc::SIGCONT);
            active = i;
        }
        std::thread::sleep(settle);
        let (n0, g0, t0, at) = (
            (m.count)()?,
            cpu_total(m.proc.pid()),
            cpu_total(m.target_pid),
            Instant::now(),
        );
        std::thread::sleep(len);
        let (n1, g1, t1) = ((m.count)()?, cpu_total(m.proc.pid()), cpu_total(m.target_pid));
        if measure {
            let r = &mut got[i];
            r.seconds += at.elapsed().as_secs_f64();
            r.requests += n1.saturating_sub(n0);
            r.gen_cpu_s += g1 - g0;
            r.target_cpu_s += t1 - t0;
        }
        Ok(())
    };
    let result = (|| -> Result<()> {
        for i in 0..members.len() {
            turn(i, bench.warm(), false, &mut got)?;
        }
        for _ in 0..rounds {
            for i in 0..members.len() {
                turn(i, slice, true, &mut got)?;
            }
        }
        Ok(())
    })();
    for m in &members {
        signal(&m.proc, libc::SIGCONT);
        signal(&m.proc, libc::SIGINT);
    }
    for mut m in members {
        // A process may miss a signal that raced its SIGCONT: ask again before giving up.
        let mut ended = false;
        for _ in 0..3 {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = m.proc.child.try_wait() {
                    ended = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if ended {
                break;
            }
            signal(&m.proc, libc::SIGINT);
        }
        if !ended {
            println!("  ({} did not stop on SIGINT; terminated)", m.name);
        }
    }
    result?;
    for r in &mut got {
        r.rps = r.requests as f64 / r.seconds;
        r.per_gen_cpu_s = r.requests as f64 / r.gen_cpu_s;
        r.per_target_cpu_s = r.requests as f64 / r.target_cpu_s;
        r.gen_cpu_share = r.gen_cpu_s / r.seconds;
        r.target_cpu_share = r.target_cpu_s / r.seconds;
    }
    Ok(got)
}

// ---------------------------------------------------------------------------------------------
// Case 1: API throughput per generator CPU-second, ours and plain Goose

fn case_api(bench: &mut Bench) -> Result<(Vec<Row>, Value)> {
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

// ---------------------------------------------------------------------------------------------
// Case 2: simulator capacity

fn case_sim(bench: &mut Bench) -> Result<(Vec<Row>, Value)> {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mix {
    /// Locust's API user: list 10, create 5, update 3, get 2, health 1.
    ApiUser,
    /// All three API user classes at their 1 : 2 : 1 weights: the API user, the webhook user
    /// (status 10, voice 5) and the high-load user (list 5, health 1).
    AllApi,
    /// List pages only (the high-load user's rapid list).
    Lists,
}

impl Mix {
    fn name(self) -> &'static str {
        match self {
            Mix::ApiUser => "api-user",
            Mix::AllApi => "all-api",
            Mix::Lists => "lists",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Mix::ApiUser => "API user mix (48 % lists)",
            Mix::AllApi => "all API users' mix (33 % lists, 50 % webhooks)",
            Mix::Lists => "list pages only",
        }
    }

    /// A wrk script cycling through 4,096 requests drawn like the scenarios draw them.
    fn lua(self, ids: &[String]) -> String {
        use rand::Rng;
        let rng = &mut rand::rng();
        let mut lua = String::from("local reqs = {\n");
        let sids: Vec<(data::Sid, data::Sid)> = (0..64)
            .map(|_| (data::Sid::call(rng), data::Sid::account(rng)))
            .collect();
        for _ in 0..4096 {
            let pick = rng.random_range(0..1000u32);
            let kind = match self {
                Mix::Lists => "list",
                Mix::ApiUser => api_user_pick(pick),
                Mix::AllApi => match pick {
                    0..250 => api_user_pick(rng.random_range(0..1000)),
                    250..750 => {
                        if rng.random_range(0..15) < 10 {
                            "status"
                        } else {
                            "voice"
                        }
                    }
                    _ => {
                        if rng.random_range(0..6) < 5 {
                            "list"
                        } else {
                            "health"
                        }
                    }
                },
            };
            let id = ids
                .get(rng.random_range(0..ids.len().max(1)))
                .cloned()
                .unwrap_or_default();
            let (method, path, ctype, body) = match kind {
                "list" => ("GET", data::random_list_path(rng).to_string(), "", String::new()),
                "create" => (
                    "POST",
                    data::CALLS_PATH.to_string(),
                    "application/json",
                    data::create_call_body(rng, 1),
                ),
                "update" => (
                    "PATCH",
                    data::call_path(&id),
                    "application/json",
                    data::update_call_body(rng),
                ),
                "get" => ("GET", data::call_path(&id), "", String::new()),
                "health" => ("GET", "/api/v1/health".to_string(), "", String::new()),
                "status" | "voice" => {
                    let (call_sid, account_sid) = &sids[rng.random_range(0..sids.len())];
                    let call = data::TwilioCall {
                        call_sid,
                        account_sid,
                    };
                    let form = if kind == "status" {
                        data::status_webhook_form(rng, call)
                    } else {
                        data::voice_webhook_form(rng, call)
                    };
                    let path = format!("/webhooks/twilio/{kind}");
                    ("POST", path, "application/x-www-form-urlencoded", form)
                }
                _ => unreachable!(),
            };
            if ctype.is_empty() {
                let _ = writeln!(lua, "  wrk.format(\"{method}\", [==[{path}]==]),");
            } else {
                let _ = writeln!(
                    lua,
                    "  wrk.format(\"{method}\", [==[{path}]==], {{[\"Content-Type\"] = \"{ctype}\"}}, [==[{body}]==]),"
                );
            }
        }
        lua.push_str(
            "}\nlocal i = 0\nfunction setup(thread) end\nfunction init(args) i = math.random(#reqs) end\n\
             function request()\n  i = i % #reqs + 1\n  return reqs[i]\nend\n",
        );
        lua
    }
}

/// The API user's task for a draw in 0..1000: list 10, create 5, update 3, get 2, health 1.
fn api_user_pick(pick: u32) -> &'static str {
    match pick * 21 / 1000 {
        0..10 => "list",
        10..15 => "create",
        15..18 => "update",
        18..20 => "get",
        _ => "health",
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
struct WrkOut {
    requests: u64,
    bytes_per_response: f64,
    errors: String,
    text: String,
}

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
fn static_server(body: usize) -> Result<()> {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static ANSWERED: AtomicU64 = AtomicU64::new(0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let payload = bytes::Bytes::from(vec![b'x'; body]);
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            let payload = payload.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    // `/_count` says how many requests were answered (not counted itself).
                    let data = if req.uri().path() == "/_count" {
                        bytes::Bytes::from(ANSWERED.load(Relaxed).to_string())
                    } else {
                        ANSWERED.fetch_add(1, Relaxed);
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

// ---------------------------------------------------------------------------------------------
// Case 3: media streams

fn case_streams(bench: &mut Bench) -> Result<(Vec<Row>, Value)> {
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
fn sink() -> Result<()> {
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
fn raw_loop(addr: &str, sockets: usize, secs: u64) -> Result<()> {
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

/// This thread's CPU time (user, system) in seconds.
fn thread_cpu() -> (f64, f64) {
    // SAFETY: getrusage fills a valid, zeroed struct.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut u);
        u
    };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (s(u.ru_utime), s(u.ru_stime))
}

// ---------------------------------------------------------------------------------------------
// Case 4: AI calls in mock mode

/// The load may add at most this to the timer error's p99 (over an idle runtime's).
const AI_ADDED_P99_MS: f64 = 1.0;

/// One AI-mock measurement: ours (`ai-mock`) or the Python loop, `n` calls; its JSON.
fn ai_point(bench: &Bench, python: bool, n: usize, secs: u64) -> Result<Value> {
    let mut cmd = if python {
        let mut cmd = bench.pinned(bench.gen_core(), Path::new("python3"));
        cmd.args(["-c", PY_MOCK, &n.to_string(), &secs.to_string()]);
        cmd
    } else {
        let mut cmd = bench.pinned(bench.gen_core(), &std::env::current_exe()?);
        cmd.args(["ai-mock", "--calls", &n.to_string(), "--secs", &secs.to_string()]);
        cmd
    };
    let out = cmd.output().context("the AI mock measurement")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| serde_json::from_str(l.strip_prefix("RESULT ")?).ok())
        .with_context(|| format!("no result: {}", String::from_utf8_lossy(&out.stderr).trim()))
}

fn case_ai(bench: &mut Bench) -> Result<(Vec<Row>, Value)> {
    let ladder: Vec<usize> = if bench.quick {
        vec![1_000, 10_000, 40_000]
    } else {
        vec![1_000, 5_000, 10_000, 20_000, 40_000, 80_000]
    };
    let secs = bench.secs.min(10);
    let python = Command::new("python3")
        .args(["-c", "import asyncio"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !python {
        bench
            .notes
            .push("python3 not found: the asyncio comparison was not measured".into());
    }
    let mut rows = Vec::new();
    let mut runs = Vec::new();
    for (who, py) in [("ours", false), ("python", true)] {
        if py && !python {
            continue;
        }
        let (mut best, mut base_p50, mut base_p99) = (Vec::new(), Vec::new(), Vec::new());
        let mut p99_at: std::collections::BTreeMap<usize, Vec<f64>> = Default::default();
        let mut cpu_at: std::collections::BTreeMap<usize, Vec<f64>> = Default::default();
        for rep in 0..bench.reps {
            // The timer's own error, with next to nothing to do.
            let idle = ai_point(bench, py, 100, secs.min(8))?;
            let floor = idle["late_ms"]["p99"].as_f64().unwrap_or(f64::NAN);
            base_p50.push(idle["late_ms"]["p50"].as_f64().unwrap_or(f64::NAN));
            base_p99.push(floor);
            println!(
                "  rep {rep} {who:<6}    100 calls: timer error p50 {:.3} ms p99 {floor:.3} ms (the floor)",
                idle["late_ms"]["p50"].as_f64().unwrap_or(0.0)
            );
            runs.push(json!({"rep": rep, "who": who, "calls": 100, "result": idle}));
            let (mut largest, mut misses) = (0.0, 0);
            for &n in &ladder {
                let v = match ai_point(bench, py, n, secs) {
                    Ok(v) => v,
                    Err(e) => {
                        println!("  rep {rep} {who} {n}: {e:#}");
                        break;
                    }
                };
                let p99 = v["late_ms"]["p99"].as_f64().unwrap_or(f64::NAN);
                let cpu = v["cpu_share"].as_f64().unwrap_or(f64::NAN) * 100.0;
                let ok = p99 <= floor + AI_ADDED_P99_MS;
                println!(
                    "  rep {rep} {who:<6} {n:>6} calls: timer error p50 {:.3} ms p99 {p99:.3} ms max {:.1} ms, \
                     {cpu:.0} % CPU{}{}",
                    v["late_ms"]["p50"].as_f64().unwrap_or(0.0),
                    v["late_ms"]["max"].as_f64().unwrap_or(0.0),
                    v["kib_per_call"]
                        .as_f64()
                        .map_or(String::new(), |k| format!(", {k:.1} KiB per call")),
                    if ok { "" } else { "  [over]" }
                );
                p99_at.entry(n).or_default().push(p99);
                cpu_at.entry(n).or_default().push(cpu);
                runs.push(json!({"rep": rep, "who": who, "calls": n, "result": v}));
                // One miss may be a noisy moment of the machine: two in a row end the ladder.
                if ok {
                    largest = n as f64;
                    misses = 0;
                } else {
                    misses += 1;
                    if misses == 2 {
                        break;
                    }
                }
            }
            best.push(largest);
        }
        let ladder_s = ladder
            .iter()
            .map(|n| fmt_num(*n as f64))
            .collect::<Vec<_>>()
            .join(", ");
        let (name, unit) = if py {
            ("Python asyncio, same sleeps", "coroutines")
        } else {
            ("ours, --ai-mode mock", "calls")
        };
        let mut row = Row::new(
            "4 AI mock",
            format!("{name}: concurrent calls with timer error p99 ≤ floor + 1 ms (ladder {ladder_s})"),
            unit,
            best,
        );
        if py {
            row = row.note("measured here: a bare asyncio loop, not the original suite");
        }
        rows.push(row);
        rows.push(Row::new(
            "4 AI mock",
            format!("{name}: timer error floor (100 calls), p50"),
            "ms",
            base_p50,
        ));
        rows.push(Row::new(
            "4 AI mock",
            format!("{name}: timer error floor (100 calls), p99"),
            "ms",
            base_p99,
        ));
        for (n, v) in &p99_at {
            let cpu = Row::new("", "", "", cpu_at[n].clone())
                .stats()
                .map_or(f64::NAN, |s| s.1);
            rows.push(
                Row::new(
                    "4 AI mock",
                    format!("{name}, {}: timer error p99", fmt_num(*n as f64)),
                    "ms",
                    v.clone(),
                )
                .note(format!("{cpu:.0} % of the core")),
            );
        }
    }
    Ok((rows, json!({"ladder": ladder, "runs": runs})))
}

/// A bare asyncio equivalent of the original mock: N coroutines, each a loop of a pause and
/// three stage sleeps drawn from the same model, timing how late each sleep wakes.
const PY_MOCK: &str = r#"
import asyncio, json, os, random, sys, time
n, secs = int(sys.argv[1]), float(sys.argv[2])
late = []
async def call(start_at, stop_at):
    loop = asyncio.get_running_loop()
    while True:
        audio = random.choice([500, 1000, 1500, 2000, 2500, 3000, 4000, 5000])
        words = random.randint(1, 20)
        stages = [random.uniform(0.5, 1.5) * 1000,
                  (50 + 0.3 * audio) * random.uniform(0.8, 1.2),
                  (100 + 0.5 * words * 1.3 * 3) * random.uniform(0.8, 1.3),
                  (75 + 0.5 * words * 12) * random.uniform(0.8, 1.2)]
        for ms in stages:
            due = loop.time() + ms / 1000
            await asyncio.sleep(ms / 1000)
            now = loop.time()
            if now >= stop_at:
                return
            if now >= start_at:
                late.append(now - due)
async def main():
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    ramp = n / 10000
    start_at, stop_at = t0 + ramp + 2, t0 + ramp + 2 + secs
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(call(start_at, stop_at)))
        if i % 1000 == 999:
            await asyncio.sleep(0.1)
    await asyncio.sleep(max(0, start_at - loop.time()))
    c0, w0 = time.process_time(), time.monotonic()
    await asyncio.gather(*tasks)
    c1, w1 = time.process_time(), time.monotonic()
    late.sort()
    q = lambda p: late[min(len(late) - 1, int(p * len(late)))] * 1000 if late else 0
    print("RESULT " + json.dumps({"calls": n, "samples": len(late), "late_ms": {"p50": q(0.5), "p99": q(0.99), "max": q(1.0)},
                      "cpu_share": (c1 - c0) / (w1 - w0)}))
asyncio.run(main())
"#;

/// N mock AI calls (the real scenario, as `--ai-mode mock` runs it) in this process, plus timer
/// probes: tasks that sleep like the mock's stages and note how late each sleep wakes, which is
/// the mock's timing error (its stage times are measured the same way). Prints JSON.
fn ai_mock(calls: usize, secs: u64) -> Result<()> {
    // As the CLI's runtime: multi-threaded, as many workers as this process may use.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let rss0 = rss_kib_of(std::process::id()).unwrap_or(0);
    let v = runtime.block_on(async move {
        let profile = Profile::load("standard")?;
        let overrides = Overrides {
            ai_calls: Some(calls),
            skips: Skips {
                api: true,
                ws: true,
                ai: false,
            },
            ..Overrides::default()
        };
        let plan = RunPlan::new(profile, &overrides, AiMode::Mock, false)?;
        let shared = Arc::new(Shared {
            plan,
            measurements: Arc::new(Measurements::default()),
            utterances: Default::default(),
        });
        let rate = 10_000usize;
        let ramp = Duration::from_secs_f64(calls as f64 / rate as f64);
        let settle = Duration::from_secs(3);
        let hold = Duration::from_secs(secs);
        let attack = GooseAttack::initialize_with_config(goose::config::GooseConfiguration::default())?
            .set_scheduler(GooseScheduler::RoundRobin)
            .set_client_builder_without_cookies(goose::client::GooseClientBuilder::new().without_cookies())?
            .register_scenario(ai_call::ai_call(&shared)?)
            .set_default(GooseDefault::Host, "http://127.0.0.1:9")?
            .set_default(GooseDefault::Users, calls)?
            .set_default(GooseDefault::IncreaseRate, rate.to_string().as_str())?
            .set_default(GooseDefault::RunTime, (settle + hold).as_secs() as usize + 1)?
            .set_default(GooseDefault::NoTelnet, true)?
            .set_default(GooseDefault::NoResetMetrics, true)?
            .set_default(GooseDefault::NoPrintMetrics, true)?
            .set_default(GooseDefault::Quiet, 1)?;
        let run = tokio::spawn(attack.execute());
        tokio::time::sleep(ramp + settle).await;
        let probes = 256;
        let lateness = Arc::new(Mutex::new(Histogram::default()));
        let until = tokio::time::Instant::now() + hold;
        let turns0 = shared.measurements.snapshot().ai.turns.len();
        let (cpu0, t0) = (cpu_total(std::process::id()), Instant::now());
        let mut tasks = Vec::new();
        for _ in 0..probes {
            let lateness = lateness.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Histogram::default();
                loop {
                    let ms = rand::random_range(20.0..500.0f64);
                    let due = tokio::time::Instant::now() + Duration::from_secs_f64(ms / 1000.0);
                    if due > until {
                        break;
                    }
                    tokio::time::sleep_until(due).await;
                    mine.record(due.elapsed().as_micros() as u64);
                }
                lateness.lock().unwrap().merge(&mine);
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let cpu = cpu_total(std::process::id()) - cpu0;
        let took = t0.elapsed().as_secs_f64();
        let turns = shared.measurements.snapshot().ai.turns.len() - turns0;
        let rss = rss_kib_of(std::process::id()).unwrap_or(0);
        let _ = tokio::time::timeout(Duration::from_secs(30), run).await;
        let h = lateness.lock().unwrap().clone();
        let ms = |us: u64| us as f64 / 1000.0;
        anyhow::Ok(json!({
            "calls": calls,
            "samples": h.count,
            "late_ms": {"p50": ms(h.quantile(0.5)), "p99": ms(h.quantile(0.99)), "max": ms(h.max),
                        "mean": h.mean() / 1000.0},
            "cpu_share": cpu / took,
            "turns_per_s": turns as f64 / took,
            "kib_per_call": rss.saturating_sub(rss0) as f64 / calls as f64,
        }))
    })?;
    println!("RESULT {v}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Case 5: the generator's memory

fn case_memory(bench: &mut Bench) -> Result<(Vec<Row>, Value)> {
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
                for s in from..to {
                    let _ = s;
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
    let (mut late, mut early, mut slope, mut growth) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
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
        // Our own fits over each half, in MB per minute: warm-up, then what is left.
        let mid = samples.len() / 2;
        let (first, second) = samples.split_at(mid);
        let (early_slope, late_slope) = (fit_slope(first) * 60.0, fit_slope(second) * 60.0);
        let v: Value = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let lg = &v["memory"]["load_generator"];
        println!(
            "  rep {rep} soak {soak_secs} s: RSS {:.1} -> {:.1} -> {:.1} MB (start, middle, end); \
             first-half slope {early_slope:.3} MB/min, second-half {late_slope:.3} MB/min; \
             results file slope {} MB/min (R² {}), growth {} MB",
            samples.first().map_or(0.0, |s| s.1),
            samples.get(mid).map_or(0.0, |s| s.1),
            samples.last().map_or(0.0, |s| s.1),
            lg["slope_mb_per_min"],
            lg["r2"],
            lg["growth_mb"],
        );
        late.push(late_slope);
        early.push(early_slope);
        slope.push(lg["slope_mb_per_min"].as_f64().unwrap_or(f64::NAN));
        growth.push(lg["growth_mb"].as_f64().unwrap_or(f64::NAN));
        runs.push(json!({"rep": rep, "seconds": soak_secs, "load_generator": lg, "rss_mb": samples}));
    }
    rows.push(
        Row::new(
            "5 memory",
            format!("soak profile, {soak_secs} s: generator RSS slope over the second half"),
            "MB/min",
            late,
        )
        .target("<=", 0.1),
    );
    rows.push(
        Row::new(
            "5 memory",
            "soak: generator RSS slope over the first half",
            "MB/min",
            early,
        )
        .note("the allocator's warm-up"),
    );
    rows.push(
        Row::new(
            "5 memory",
            "soak: generator RSS slope after the ramp (results file)",
            "MB/min",
            slope,
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

/// Least-squares slope of (x, y) points.
fn fit_slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    sxy / sxx
}
