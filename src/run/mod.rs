//! One run, start to finish: check everything, start or check the target, run the Goose attack
//! with the scenarios, and gather what was measured into a [`RunRecord`].
//!
//! Every option and file is checked before any load starts; once the attack has started, a
//! record always comes back — at its end, on Ctrl-C, or when a threshold aborts it — for the
//! caller to conclude (`analysis::conclude`). The callers are the lone run of the command line,
//! the web UI's runs and the gaggle worker; this layer knows none of them.

pub mod console;
mod goose;
pub mod interrupt;
pub mod record;
pub mod target;

pub use record::RunRecord;

use crate::config::options::RunOptions;
use crate::config::plan::{AiMode, RunPlan};
use crate::config::schedule::Schedule;
use crate::config::utterances::{self, Utterance};
use crate::measure::memory::{MemorySampler, MemoryTarget};
use crate::measure::Measurements;
use crate::scenarios::Shared;
use ::goose::config::GooseConfiguration;
use ::goose::GooseError;
use anyhow::{Context, Result};
use console::{Console, Reporter};
use std::sync::Arc;
use std::time::{Duration, Instant};
use target::SimulatorProcess;

/// What the run needs once everything is checked.
pub struct Prepared {
    pub plan: RunPlan,
    pub schedule: Schedule,
    pub goose: GooseConfiguration,
    pub host: String,
    pub simulator: Option<SimulatorProcess>,
    pub memory_target: Option<MemoryTarget>,
    pub utterances: Arc<Vec<Utterance>>,
    /// Where the scenarios measure: read it while the attack runs (the web UI's runs, a gaggle
    /// worker's progress reports) through a clone of the `Arc`.
    pub measurements: Arc<Measurements>,
    /// Our console logger, when it is the process's.
    console: Option<Console>,
}

/// Checks every option and file, then the target; nothing has been sent to the target yet.
pub async fn prepare(options: &RunOptions, goose: GooseConfiguration) -> Result<Prepared> {
    let (goose, console) = check_outputs(options, goose)?;
    let plan = options.plan(goose.users)?;
    prepare_checked(plan, options, goose, console).await
}

/// As [`prepare`], for a plan decided elsewhere (a gaggle worker runs its manager's share):
/// `options` give only where the run writes and what it reads.
pub async fn prepare_plan(
    plan: RunPlan,
    options: &RunOptions,
    goose: GooseConfiguration,
) -> Result<Prepared> {
    let (goose, console) = check_outputs(options, goose)?;
    prepare_checked(plan, options, goose, console).await
}

/// The files the run writes, and the console logger (which takes the Goose log's path out of
/// Goose's configuration, so it goes after that path's check).
fn check_outputs(
    options: &RunOptions,
    mut goose: GooseConfiguration,
) -> Result<(GooseConfiguration, Option<Console>)> {
    crate::config::outputs::check_goose_outputs(&goose, options.output.as_deref())?;
    let console = console::install(&mut goose)?;
    Ok((goose, console))
}

async fn prepare_checked(
    plan: RunPlan,
    options: &RunOptions,
    goose: GooseConfiguration,
    console: Option<Console>,
) -> Result<Prepared> {
    if let Some(path) = &options.output {
        crate::config::outputs::check_output_path(path).context("--output")?;
    }
    let speaks = plan.users.ai_calls > 0 && plan.ai_mode == AiMode::Stream;
    let utterances = match (&options.audio_dir, speaks) {
        (Some(dir), _) => utterances::load_dir(dir).context("--audio-dir")?,
        (None, true) => utterances::builtin(),
        (None, false) => Vec::new(),
    };
    let needs_server = plan.users.api_total() + plan.users.media_streams > 0 || speaks;
    let schedule = Schedule::new(&plan, &goose, options.test_plan_given);
    if let Some(host) = &goose.host {
        target::validate_host(host)?;
    }
    if let Some(MemoryTarget::MetricsUrl(url)) = &options.server_memory {
        target::refuse_credentials_in("--server-metrics-url", url)?;
    }
    if let Some(console) = &console {
        goose::check_goose_options(&goose, &plan, &schedule, &utterances, console).await?;
    }
    let mut memory_target = options.server_memory.clone();
    if let Some(target) = &memory_target {
        target.check().await?;
    }
    let (host, simulator) = match &goose.host {
        Some(host) => {
            let host = target::validate_host(host)?;
            if needs_server {
                target::check_reachable(&host).await?;
            }
            (host, None)
        }
        None if needs_server => {
            let sim = SimulatorProcess::start(&[]).await?;
            println!(
                "Started the built-in Phone Agent simulator at {} (pid {})",
                sim.url, sim.pid
            );
            memory_target.get_or_insert(MemoryTarget::Pid(sim.pid));
            (sim.url.clone(), Some(sim))
        }
        // Mock-mode AI calls alone talk to no server; Goose still wants a host.
        None => ("http://127.0.0.1".to_string(), None),
    };
    Ok(Prepared {
        schedule,
        plan,
        goose,
        host,
        simulator,
        memory_target,
        utterances: Arc::new(utterances),
        measurements: Arc::default(),
        console,
    })
}

/// Runs the Goose attack and gathers what the post-run analysis needs, whatever happens.
pub async fn attack(p: Prepared) -> RunRecord {
    let started = chrono::Utc::now();
    let clock = Instant::now();
    let measurements = p.measurements.clone();
    if let Some(console) = &p.console {
        console.feed(&measurements.failures);
    }
    let reporter = p.console.as_ref().map(|_| Reporter::start(measurements.clone()));
    let shared = Arc::new(Shared {
        plan: p.plan.clone(),
        measurements: measurements.clone(),
        utterances: p.utterances.clone(),
        unknown_events: Default::default(),
    });
    let sampler = MemorySampler::start(p.memory_target.clone(), Duration::from_secs(1));
    let mut interrupt_reason = interrupt::reason();
    let mut goose_metrics = None;
    let mut failure = None;
    // Interrupted already, the attack still runs, so Goose writes its reports; it launches no
    // user (see interrupt::stand_down).
    {
        let ramp = ramp_watch(&p.schedule, &sampler);
        match goose::goose_attack(p.goose.clone(), &p.plan, &p.schedule, &p.host, &shared) {
            Err(e) => failure = Some(goose::describe_goose_error(&e)),
            Ok(attack) => {
                let watcher = interrupt::forward_to_goose();
                let result = attack.execute().await;
                watcher.abort();
                match result {
                    Ok(metrics) => goose_metrics = Some(metrics),
                    Err(GooseError::ThresholdsFailed { failed, metrics }) => {
                        let rules: Vec<String> = failed
                            .iter()
                            .map(|r| format!("{} (observed {})", r.rule, r.observed))
                            .collect();
                        if ::goose::is_killswitch_triggered() && interrupt::reason().is_none() {
                            interrupt_reason = Some(format!("threshold failed: {}", rules.join("; ")));
                        } else {
                            eprintln!("Thresholds failed: {}", rules.join("; "));
                        }
                        goose_metrics = Some(*metrics.0);
                    }
                    Err(e) => failure = Some(goose::describe_goose_error(&e)),
                }
            }
        }
        ramp.abort();
    }
    drop(reporter);
    if let Some(reason) = interrupt::reason() {
        interrupt_reason = Some(reason);
    }
    // Memory first: the last sample must be taken while the simulator still runs.
    let memory = sampler.stop().await;
    let mut simulator_died = false;
    if let Some(mut sim) = p.simulator {
        simulator_died = !sim.is_running();
        sim.stop().await;
    }
    if simulator_died && interrupt_reason.is_none() {
        interrupt_reason = Some("the built-in simulator exited during the run".into());
    }
    if let Some(why) = failure {
        eprintln!("error: the load test could not run: {why}");
        interrupt_reason.get_or_insert(format!("Goose failed: {why}"));
    }
    RunRecord {
        plan: p.plan,
        host: p.host,
        started,
        duration: clock.elapsed(),
        interrupted: interrupt_reason.is_some(),
        interrupt_reason,
        goose: goose_metrics,
        measured: measurements.snapshot(),
        memory,
        failures_by_reason: measurements.failures.take(),
    }
}

/// Tells the memory sampler when every user has started, so "initial" memory excludes the ramp.
fn ramp_watch(schedule: &Schedule, sampler: &MemorySampler) -> tokio::task::JoinHandle<()> {
    let ramp = schedule.ramp;
    let marker = sampler.ramp_marker();
    tokio::spawn(async move {
        tokio::time::sleep(ramp + Duration::from_secs(1)).await;
        marker.ramp_done();
    })
}
