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
//! The cases, each next to its target:
//! 1. `api`: requests per second per generator CPU-second of the crate's API scenarios
//!    (`--no-wait --skip-ws --skip-ai`) next to a plain-Goose test (examples/plain_goose.rs),
//!    each against a simulator of its own, in turns. Target: ours >= 85 % of plain Goose.
//! 2. `sim`: requests per second one core of `serve` answers for the API mixes, driven by `wrk`
//!    on the other core, and a trivial hyper server sending the API user mix's mean body size:
//!    the ceiling of the kernel and HTTP path. Target: >= 60,000 requests per second.
//! 3. `streams`: media-stream calls one generator core sustains at 50 frames/s with >= 99 % of
//!    frames on time (examples/bench_streams.rs), and a raw send loop's CPU per 330-byte send.
//!    Target: 5,000 calls per core.
//! 4. `ai`: concurrent `--ai-mode mock` calls one core runs while the timer error's p99 stays
//!    within 1 ms of an idle runtime's, next to a Python asyncio loop doing the same sleeps (the
//!    original mock's design).
//! 5. `memory`: the generator's RSS per user of each kind (N users, then 2N) and its RSS
//!    Theil–Sen slope over a shortened soak run. Target: <= 0.1 MB per minute.
//!
//! Internal subcommands (run pinned by the orchestrator): `static-server`, `sink`, `raw-loop`,
//! `ai-mock`; and `prepare-mix`, which fills a running simulator and writes a wrk script of a
//! mix, to profile the simulator by hand.
//!
//! This file holds the command line; [`run`] drives the cases (one module each: [`api`],
//! [`sim`], [`streams`], [`ai`], [`memory`]) and writes the [`table`].

mod ai;
mod api;
mod memory;
mod mix;
mod os;
mod process;
mod procfs;
mod rotation;
mod run;
mod sim;
mod simulator;
mod streams;
mod table;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use mix::Mix;
use std::path::PathBuf;

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

/// The cases, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Case {
    Api,
    Sim,
    Streams,
    Ai,
    Memory,
}

/// What the orchestrator runs in processes of their own, pinned.
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
    os::raise_fd_limit();
    match &cli.internal {
        Some(Internal::StaticServer { body }) => sim::static_server(*body),
        Some(Internal::Sink) => streams::sink(),
        Some(Internal::RawLoop { addr, sockets, secs }) => streams::raw_loop(addr, *sockets, *secs),
        Some(Internal::AiMock { calls, secs }) => ai::ai_mock(*calls, *secs),
        Some(Internal::PrepareMix { url, mix, calls, out }) => {
            let filler = simulator::Filler::new(url)?;
            let ids = filler.fill(*calls)?;
            std::fs::write(out, mix.lua(&ids))?;
            Ok(())
        }
        None => run::orchestrate(&cli),
    }
}
