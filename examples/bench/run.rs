//! The orchestrator: the run's settings ([`Bench`]), then every chosen case in turn, the
//! machine's state around them, and the table and JSON at the end.

use crate::os::pin;
use crate::procfs::{cpu_times, loadavg, machine, steal_share};
use crate::table::{markdown, Row};
use crate::{ai, api, memory, sim, streams, Case, Cli};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The run's settings, derived from the command line.
pub struct Bench {
    pub reps: usize,
    pub secs: u64,
    pub quick: bool,
    pub out: PathBuf,
    bin: PathBuf,
    examples: PathBuf,
    /// `Some((gen, sim))` when pinned.
    cores: Option<(usize, usize)>,
    taskset: bool,
    pub api_users: usize,
    pub soak_secs: Option<u64>,
    /// What the table's reader should know (skipped parts, a busy machine), printed below it.
    pub notes: Vec<String>,
}

impl Bench {
    /// The CLI binary.
    pub fn tool(&self) -> PathBuf {
        self.bin.join("phone-agent-load")
    }

    /// An example's binary.
    pub fn example(&self, name: &str) -> PathBuf {
        self.examples.join(name)
    }

    pub fn gen_core(&self) -> Option<usize> {
        self.cores.map(|c| c.0)
    }

    pub fn sim_core(&self) -> Option<usize> {
        self.cores.map(|c| c.1)
    }

    /// `program` pinned to `core` (with taskset, or with sched_setaffinity when it is missing).
    pub fn pinned(&self, core: Option<usize>, program: &Path) -> Command {
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
    pub fn warm(&self) -> Duration {
        Duration::from_secs(if self.quick { 2 } else { 4 })
    }

    /// A measured window's length.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.secs)
    }

    /// A new log file in the output directory.
    pub fn log(&self, name: &str) -> Result<std::fs::File> {
        std::fs::File::create(self.out.join(name)).with_context(|| format!("cannot create {name}"))
    }
}

pub fn orchestrate(cli: &Cli) -> Result<()> {
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
            Case::Api => api::run(&mut bench),
            Case::Sim => sim::run(&mut bench),
            Case::Streams => streams::run(&mut bench),
            Case::Ai => ai::run(&mut bench),
            Case::Memory => memory::run(&mut bench),
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
