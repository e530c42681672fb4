//! Media-stream capacity benchmark: how many concurrent Twilio Media Streams calls one
//! load-generator process sustains on ONE core at 50 frames/s, frames on time.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example bench_streams                      # steps 1000 2500 5000 7500
//! cargo run --release --example bench_streams -- --steps 2000,4000 --hold 10
//! ```
//!
//! The simulator runs as a separate process (`target/release/phone-agent-load serve --port 0`)
//! on the other cores; with `--in-process-sim`, or when that binary is missing, it runs in this
//! process on its own threads pinned off the generator's core. The generator (the real "Media
//! stream call" Goose scenario, one Goose user per call, the shared HTTP client) is pinned to one
//! core. For each step it ramps N calls, lets them settle, holds, and prints the achieved frame
//! rate, frame lateness (p50/p99/max, measured against each frame's absolute 20 ms slot), the
//! share of frames on time and the resident memory per call. The capacity target: at least
//! 5,000 calls per core at 50 frames/s with >= 99 % of frames on time, lateness p99 <= 5 ms,
//! < 64 KiB per call. Every step is bounded in time, and all traffic stays on 127.0.0.1.

#[path = "bench/os.rs"]
mod os;

use anyhow::{bail, Context, Result};
use clap::Parser;
use goose::prelude::*;
use os::{pin, raise_fd_limit};
use phone_agent_load::config::plan::{AiMode, Overrides, RunPlan};
use phone_agent_load::config::profile::Profile;
use phone_agent_load::measure::{Histogram, Measurements, StreamStats, LATE_FRAME_US};
use phone_agent_load::scenarios::{media_stream, Shared};
use phone_agent_load::simulator::{self, ServeOptions};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The capacity target: 5,000 calls per core, frames on time, little memory per call.
const TARGET_ON_TIME_PCT: f64 = 99.0;
const TARGET_P99_US: u64 = 5_000;
const TARGET_KIB_PER_CALL: f64 = 64.0;
const FRAMES_PER_SEC: f64 = 50.0;

#[derive(Parser, Debug)]
#[command(about = "Media-stream capacity of one load-generator core")]
struct Args {
    /// Concurrent calls to try, in order
    #[arg(long, value_delimiter = ',', default_value = "1000,2500,5000,7500")]
    steps: Vec<usize>,
    /// Seconds to hold each step once all calls are up
    #[arg(long, default_value_t = 20)]
    hold: u64,
    /// Calls started per second during the ramp
    #[arg(long, default_value_t = 1000)]
    ramp_rate: usize,
    /// The core the load generator runs on
    #[arg(long, default_value_t = 0)]
    core: usize,
    /// The simulator binary (run as `BIN serve --port 0 --bind 127.0.0.1`)
    #[arg(long, default_value = "target/release/phone-agent-load")]
    sim_bin: String,
    /// Run the simulator inside this process (on the other cores) instead of as a child process
    #[arg(long)]
    in_process_sim: bool,
    /// The generator's Tokio runtime: one thread (`current`), or the multi-threaded scheduler
    /// with one worker (`multi`, as the CLI's runtime is built)
    #[arg(long, value_enum, default_value = "current")]
    runtime: Flavor,
    /// Also write the steps' figures to this JSON file (scripts/bench reads it)
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Flavor {
    Current,
    Multi,
}

/// One step's figures.
#[derive(Debug, serde::Serialize)]
struct Step {
    calls: usize,
    connected: u64,
    frames_per_call_sec: f64,
    on_time_pct: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    skipped: u64,
    kib_per_call: f64,
    failed: u64,
    /// CPU time this process used per frame sent during the hold (all its threads).
    cpu_us_per_frame: f64,
    /// Share of one core this process used during the hold.
    cpu_pct: f64,
    /// Share of that spent in the kernel.
    kernel_pct: f64,
}

impl Step {
    fn meets_target(&self) -> bool {
        self.connected as usize == self.calls
            && self.failed == 0
            && self.frames_per_call_sec >= FRAMES_PER_SEC * 0.99
            && self.on_time_pct >= TARGET_ON_TIME_PCT
            && self.p99_us <= TARGET_P99_US
            && self.kib_per_call < TARGET_KIB_PER_CALL
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.steps.is_empty() || args.steps.contains(&0) {
        bail!("--steps: give call counts above 0, e.g. --steps 1000,5000");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.core >= cores {
        bail!("--core {}: this machine has cores 0..{}", args.core, cores - 1);
    }
    raise_fd_limit();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load1: f64 = load
        .split_whitespace()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0.0);
    if load1 > 0.5 {
        println!(
            "note: load average {load1:.2}: other work shares these cores, so lateness suffers; \
             CPU time per frame still tells what a core affords"
        );
    }
    let others: Vec<usize> = (0..cores).filter(|&c| c != args.core).collect();
    let others = if others.is_empty() {
        vec![args.core]
    } else {
        others
    };

    // The simulator first, so it never inherits the generator's pinning.
    let sim = Simulator::start(&args, &others)?;
    println!("simulator: {} ({}), on cores {others:?}", sim.url, sim.kind());
    if sim.child.is_none() {
        println!("(the simulator shares this process: RSS per call includes its side of each call)");
    }
    pin_current_thread(&[args.core])?;
    println!("load generator: pinned to core {}", args.core);

    let runtime = match args.runtime {
        Flavor::Current => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Flavor::Multi => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?,
    };
    println!("runtime: {:?}", args.runtime);
    let baseline_kib = rss_kib();
    let mut results = Vec::new();
    for &calls in &args.steps {
        let step = runtime.block_on(run_step(&args, &sim.url, calls, baseline_kib))?;
        print_step(&step);
        let all_up = step.connected as usize == calls;
        results.push(step);
        if !all_up {
            println!("(stopping: not every call connected)");
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    println!();
    println!(
        "target: 50 frames/s per call, >= {TARGET_ON_TIME_PCT}% on time, lateness p99 <= {} ms, < {TARGET_KIB_PER_CALL} KiB per call",
        TARGET_P99_US / 1000
    );
    match results.iter().filter(|s| s.meets_target()).map(|s| s.calls).max() {
        Some(n) => println!("largest step meeting the target on one core: {n} concurrent calls"),
        None => println!("no step met the target"),
    }
    if let Some(last) = results.last() {
        println!(
            "CPU-bound estimate (largest step, {:.2} us per frame): one idle core affords ~{:.0} calls",
            last.cpu_us_per_frame,
            1e6 / (last.cpu_us_per_frame * FRAMES_PER_SEC)
        );
    }
    if let Some(path) = &args.json {
        let steps: Vec<serde_json::Value> = results
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                v["meets_target"] = s.meets_target().into();
                v
            })
            .collect();
        let largest = results.iter().filter(|s| s.meets_target()).map(|s| s.calls).max();
        let report = serde_json::json!({
            "steps": steps,
            "largest_meeting_target": largest.unwrap_or(0),
            "runtime": format!("{:?}", args.runtime),
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    drop(sim);
    Ok(())
}

/// Ramps `calls` media-stream calls, holds, and measures the hold.
async fn run_step(args: &Args, host: &str, calls: usize, baseline_kib: u64) -> Result<Step> {
    let ramp = Duration::from_secs_f64(calls as f64 / args.ramp_rate as f64);
    let settle = Duration::from_secs(3);
    let hold = Duration::from_secs(args.hold);
    let mut plan = RunPlan::new(
        Profile::load("quick")?,
        &Overrides::default(),
        AiMode::Stream,
        true,
    )?;
    // Calls outlast the step: none redials, all hang up when the run ends.
    plan.media_stream_duration = Duration::from_secs(3600);
    let shared = Arc::new(Shared {
        plan,
        measurements: Arc::new(Measurements::default()),
        utterances: Default::default(),
        unknown_events: Default::default(),
    });
    // Goose's defaults, not its command line (these are the benchmark's options).
    let attack = GooseAttack::initialize_with_config(goose::config::GooseConfiguration::default())?
        .set_client_builder_without_cookies(goose::client::GooseClientBuilder::new().without_cookies())?
        .register_scenario(media_stream::media_stream_call(&shared)?)
        .set_default(GooseDefault::Host, host)?
        .set_default(GooseDefault::Users, calls)?
        .set_default(GooseDefault::IncreaseRate, args.ramp_rate.to_string().as_str())?
        .set_default(
            GooseDefault::RunTime,
            (settle + hold + Duration::from_secs(2)).as_secs() as usize,
        )?
        .set_default(GooseDefault::NoTelnet, true)?
        .set_default(GooseDefault::NoWebSocket, true)?
        .set_default(GooseDefault::NoResetMetrics, true)?
        .set_default(GooseDefault::NoPrintMetrics, true)?
        .set_default(GooseDefault::Quiet, 1)?;
    let run = tokio::spawn(attack.execute());

    // Every call up (or the ramp's time, generously), then settle, then the measured hold.
    let up_by = Instant::now() + ramp * 2 + Duration::from_secs(10);
    while shared.measurements.snapshot().streams.calls_connected < calls as u64 && Instant::now() < up_by {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(settle).await;
    let before = shared.measurements.snapshot().streams;
    let (started, cpu_before) = (Instant::now(), cpu_time());
    tokio::time::sleep(hold).await;
    let rss = rss_kib();
    let after = shared.measurements.snapshot().streams;
    let (held, cpu) = (started.elapsed(), cpu_time() - cpu_before);

    let limit = ramp + settle + hold + Duration::from_secs(60);
    match tokio::time::timeout(limit, run).await {
        Ok(Ok(Ok(_))) => {}
        Ok(Ok(Err(e))) => bail!("the attack failed: {e:?}"),
        Ok(Err(e)) => bail!("the attack panicked: {e}"),
        Err(_) => bail!("the attack did not end within {limit:?}"),
    }
    let mut step = measure(calls, &before, &after, held, rss.saturating_sub(baseline_kib));
    let sent = after.frames_sent - before.frames_sent;
    step.cpu_us_per_frame = cpu.total().as_secs_f64() * 1e6 / sent.max(1) as f64;
    step.cpu_pct = 100.0 * cpu.total().as_secs_f64() / held.as_secs_f64();
    step.kernel_pct = 100.0 * cpu.system.as_secs_f64() / cpu.total().as_secs_f64().max(1e-9);
    Ok(step)
}

fn measure(calls: usize, before: &StreamStats, after: &StreamStats, held: Duration, kib: u64) -> Step {
    let sent = after.frames_sent - before.frames_sent;
    let scheduled = after.frames_scheduled - before.frames_scheduled;
    let late = after.frames_late - before.frames_late;
    let lateness = histogram_delta(&after.lateness_us, &before.lateness_us);
    Step {
        calls,
        connected: after.calls_connected,
        frames_per_call_sec: sent as f64 / calls as f64 / held.as_secs_f64(),
        on_time_pct: if scheduled == 0 {
            0.0
        } else {
            100.0 * (scheduled - late) as f64 / scheduled as f64
        },
        p50_us: lateness.quantile(0.5),
        p99_us: lateness.quantile(0.99),
        max_us: lateness.max,
        skipped: after.frames_skipped - before.frames_skipped,
        kib_per_call: kib as f64 / calls as f64,
        failed: after.calls_failed,
        cpu_us_per_frame: 0.0,
        cpu_pct: 0.0,
        kernel_pct: 0.0,
    }
}

/// What `after` recorded that `before` had not: bucket by bucket.
fn histogram_delta(after: &Histogram, before: &Histogram) -> Histogram {
    let mut d = Histogram::default();
    for (&floor, &n) in &after.buckets {
        let n = n - before.buckets.get(&floor).copied().unwrap_or(0);
        if n > 0 {
            d.buckets.insert(floor, n);
            d.count += n;
        }
    }
    d.min = d.buckets.keys().next().copied().unwrap_or(0);
    let top = d.buckets.keys().next_back().copied().unwrap_or(0);
    // Exact when the run's maximum fell in the hold, else the top bucket's floor (within 1.6 %).
    d.max = if after.max > before.max { after.max } else { top };
    d.sum = after.sum - before.sum;
    d
}

fn print_step(s: &Step) {
    println!(
        "{:>6} calls ({} up, {} failed): {:.2} frames/s per call, {:.2}% on time (<= {} ms late), \
         lateness p50 {:.2} ms p99 {:.2} ms max {:.1} ms, {} skipped, {:.1} KiB RSS per call{}",
        s.calls,
        s.connected,
        s.failed,
        s.frames_per_call_sec,
        s.on_time_pct,
        LATE_FRAME_US / 1000,
        s.p50_us as f64 / 1000.0,
        s.p99_us as f64 / 1000.0,
        s.max_us as f64 / 1000.0,
        s.skipped,
        s.kib_per_call,
        if s.meets_target() { "  [meets target]" } else { "" }
    );
    // CPU per frame is what the core can afford, whatever else shared it during the step.
    let capacity = 1e6 / (s.cpu_us_per_frame * FRAMES_PER_SEC);
    println!(
        "        CPU {:.0}% of a core ({:.0}% in the kernel), {:.2} us per frame sent: one idle core affords ~{:.0} calls",
        s.cpu_pct, s.kernel_pct, s.cpu_us_per_frame, capacity
    );
}

/// The simulator, as a child process or on threads of this one.
struct Simulator {
    url: String,
    child: Option<Child>,
}

impl Simulator {
    fn start(args: &Args, cores: &[usize]) -> Result<Simulator> {
        if !args.in_process_sim {
            if std::path::Path::new(&args.sim_bin).exists() {
                return Simulator::spawn(&args.sim_bin, cores);
            }
            println!(
                "({} not found: run `cargo build --release` first; using the simulator in process)",
                args.sim_bin
            );
        }
        Simulator::in_process(cores)
    }

    fn kind(&self) -> &'static str {
        if self.child.is_some() {
            "separate process"
        } else {
            "in process, own threads"
        }
    }

    fn spawn(bin: &str, cores: &[usize]) -> Result<Simulator> {
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--port", "0", "--bind", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let cores = cores.to_vec();
        // SAFETY: sched_setaffinity is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || pin(0, &cores).map_err(std::io::Error::other));
        }
        let mut child = cmd.spawn().with_context(|| format!("cannot start {bin}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(url) => Ok(Simulator {
                url,
                child: Some(child),
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{bin} serve did not print `listening on http://...` within 10 s")
            }
        }
    }

    fn in_process(cores: &[usize]) -> Result<Simulator> {
        let (tx, rx) = std::sync::mpsc::channel();
        let cores = cores.to_vec();
        std::thread::spawn(move || {
            let run = || -> Result<()> {
                pin_current_thread(&cores)?;
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(cores.len())
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    let sim = simulator::start(ServeOptions::for_tests()).await?;
                    let _ = tx.send(Ok(sim.url()));
                    // Serves until the process exits.
                    std::future::pending::<()>().await;
                    Ok(())
                })
            };
            if let Err(e) = run() {
                let _ = tx.send(Err(e));
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(10))
            .context("the in-process simulator did not start within 10 s")??;
        Ok(Simulator { url, child: None })
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // SIGTERM lets it shut down gracefully; then make sure it is gone.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn pin_current_thread(cores: &[usize]) -> Result<()> {
    pin(0, cores).map_err(|e| anyhow::anyhow!(e))
}

/// CPU time (user + system) this process has used, all threads.
fn cpu_time() -> Cpu {
    // SAFETY: getrusage fills a valid, zeroed struct.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Cpu {
        user: tv(usage.ru_utime),
        system: tv(usage.ru_stime),
    }
}

/// CPU time, in user space and in the kernel (where loopback TCP does its work).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    user: Duration,
    system: Duration,
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu {
            user: self.user.saturating_sub(o.user),
            system: self.system.saturating_sub(o.system),
        }
    }
}

impl Cpu {
    fn total(&self) -> Duration {
        self.user + self.system
    }
}

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}
