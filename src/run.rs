//! One run, start to finish: validate everything, start or check the target, run the Goose
//! attack with the scenarios, then hand what was measured to the post-run hook.
//!
//! Every option and file is checked before any load starts; once the attack has started, the
//! results are always written — at its end, on Ctrl-C, or when a threshold aborts it.

use crate::analysis::verdicts::Status;
use crate::analysis::{self, memory::MemorySampler, memory::MemoryTarget, PostRunHook, RunRecord};
use crate::cli::LoadOptions;
use crate::interrupt;
use crate::measure::Measurements;
use crate::plan::{AiMode, Overrides, RunPlan, Skips};
use crate::profile::Profile;
use crate::scenarios::{self, Shared};
use crate::target::{self, SimulatorProcess};
use crate::webui::{self, WebUi};
use anyhow::{Context, Result};
use goose::config::GooseConfiguration;
use goose::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs a load test as the command line describes; returns the exit status.
pub async fn run(load: LoadOptions, goose: GooseConfiguration) -> i32 {
    run_with_hooks(load, goose, Vec::new()).await
}

/// As [`run`], with the user's own post-run hooks after the built-in analysis.
pub async fn run_with_hooks(
    load: LoadOptions,
    goose: GooseConfiguration,
    hooks: Vec<Box<dyn PostRunHook>>,
) -> i32 {
    interrupt::install();
    let prepared = match prepare(&load, goose).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 1;
        }
    };
    let session = prepared
        .webui
        .as_ref()
        .filter(|ui| ui.interactive())
        .map(|_| (load.output.clone(), load.fail_on));
    let (record, page_runs) = attack_session(prepared, session).await;
    match page_runs {
        // Runs started from the page were each concluded when they ended.
        Some((0, _)) => {
            println!("No run was started from the web UI.");
            0
        }
        Some((_, worst)) => worst,
        None => conclude(&record, load.output.as_deref(), load.fail_on, &hooks),
    }
}

/// The post-run hook and its outputs: analysis, summary, results file and HTML report; returns
/// the exit status the verdicts call for.
pub fn conclude(
    record: &RunRecord,
    output: Option<&Path>,
    fail_on: Status,
    hooks: &[Box<dyn PostRunHook>],
) -> i32 {
    crate::console::print_table(&crate::console::take_tally());
    let mut results = analysis::analyse(record, hooks);
    results.set_fail_on(fail_on);
    analysis::summary::print_summary(&results);
    let mut code = results.exit_code(fail_on);
    if let Some(path) = output {
        match results.write_json(path) {
            Ok(()) => println!("Results written to {}", path.display()),
            Err(e) => {
                eprintln!("error: cannot write the results file {}: {e:#}", path.display());
                code = code.max(1);
            }
        }
        let html = path.with_extension("html");
        match analysis::report::write_html(&results, &html) {
            Ok(()) => println!("Report written to {}", html.display()),
            Err(e) => eprintln!("warning: cannot write the report {}: {e:#}", html.display()),
        }
    }
    code
}

/// What the run needs once everything is checked.
pub struct Prepared {
    pub plan: RunPlan,
    pub test_plan_given: bool,
    pub goose: GooseConfiguration,
    pub host: String,
    pub simulator: Option<SimulatorProcess>,
    pub memory_target: Option<MemoryTarget>,
    pub utterances: Arc<Vec<crate::audio::Utterance>>,
    /// The web UI, unless `--headless`.
    pub webui: Option<WebUi>,
    /// Where the scenarios measure, if the caller wants to read it while the attack runs (gaggle
    /// workers report progress from it); a fresh one otherwise.
    pub measurements: Option<Arc<Measurements>>,
}

/// Checks every option and file, then the target; nothing has been sent to the target yet.
pub async fn prepare(load: &LoadOptions, goose: GooseConfiguration) -> Result<Prepared> {
    let mut goose = goose;
    crate::console::install(&mut goose)?;
    let webui = webui::configure(&mut goose, load.headless)?;
    if let Some(ui) = &webui {
        ui.check_port()?;
        println!("Web UI: {}", ui.url);
        if ui.interactive() {
            println!("Waiting for Start on the web UI (set users, rate and run time there); Ctrl-C quits.");
        }
    }
    let profile = Profile::load(&load.profile)?;
    let overrides = Overrides {
        users: goose.users,
        ws_connections: load.ws_connections,
        ai_calls: load.ai_calls,
        skips: Skips {
            api: load.skip_api,
            ws: load.skip_ws,
            ai: load.skip_ai,
        },
    };
    let plan = RunPlan::new(profile, &overrides, load.ai_mode, load.no_wait)?;
    if let Some(path) = &load.output {
        analysis::results::check_output_path(path).context("--output")?;
    }
    for report in &goose.report_file {
        analysis::results::check_output_path(Path::new(report)).context("--report-file")?;
    }
    let speaks = plan.users.ai_calls > 0 && plan.ai_mode == AiMode::Stream;
    let utterances = match (&load.audio_dir, speaks) {
        (Some(dir), _) => crate::audio::load_dir(dir).context("--audio-dir")?,
        (None, true) => crate::audio::builtin(),
        (None, false) => Vec::new(),
    };
    let needs_server = plan.users.api_total() + plan.users.media_streams > 0 || speaks;
    let mut memory_target = match (&load.server_pid, &load.server_process, &load.server_metrics_url) {
        (Some(pid), _, _) => Some(MemoryTarget::Pid(*pid)),
        (_, Some(name), _) => Some(MemoryTarget::ProcessName(name.clone())),
        (_, _, Some(url)) => Some(MemoryTarget::MetricsUrl(url.clone())),
        _ => None,
    };
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
        plan,
        test_plan_given: load.test_plan_given,
        goose,
        host,
        simulator,
        memory_target,
        utterances: Arc::new(utterances),
        webui,
        measurements: None,
    })
}

/// Runs the Goose attack and gathers what the post-run hook needs, whatever happens.
pub async fn attack(p: Prepared) -> RunRecord {
    attack_session(p, None).await.0
}

/// As [`attack`]; with `session` (`--no-autostart`: the results file and fail-on of runs started
/// from the web UI) each run started from the page is concluded when it ends, and the number of
/// such runs and their worst exit status come back too.
async fn attack_session(
    p: Prepared,
    session: Option<(Option<PathBuf>, Status)>,
) -> (RunRecord, Option<(i32, i32)>) {
    let started = chrono::Utc::now();
    let clock = Instant::now();
    let measurements = p.measurements.clone().unwrap_or_default();
    let shared = Arc::new(Shared {
        plan: p.plan.clone(),
        measurements: measurements.clone(),
        utterances: p.utterances.clone(),
    });
    let sampler = MemorySampler::start(p.memory_target.clone(), Duration::from_secs(1));
    let mut interrupt_reason = interrupt::reason();
    let mut page_runs = None;
    let mut goose_metrics = None;
    let mut failure = None;
    if interrupt_reason.is_none() {
        let ramp = ramp_watch(&p.plan, &p.goose, &sampler);
        match build_attack(&p, &shared) {
            Err(e) => failure = Some(describe_goose_error(&e)),
            Ok(attack) => {
                let watcher = interrupt::forward_to_goose();
                let page = p.webui.clone().map(|ui| {
                    let runs = session.clone().map(|(output, fail_on)| webui::SessionRuns {
                        plan: p.plan.clone(),
                        host: p.host.clone(),
                        measurements: measurements.clone(),
                        memory_target: p.memory_target.clone(),
                        output,
                        fail_on,
                    });
                    webui::Watcher::start(ui, runs)
                });
                let result = attack.execute().await;
                watcher.abort();
                page_runs = page.map(|w| w.stop()).filter(|_| session.is_some());
                match result {
                    Ok(metrics) => goose_metrics = Some(metrics),
                    Err(GooseError::ThresholdsFailed { failed, metrics }) => {
                        let rules: Vec<String> = failed
                            .iter()
                            .map(|r| format!("{} (observed {})", r.rule, r.observed))
                            .collect();
                        if goose::is_killswitch_triggered() && interrupt::reason().is_none() {
                            interrupt_reason = Some(format!("threshold failed: {}", rules.join("; ")));
                        } else {
                            eprintln!("Thresholds failed: {}", rules.join("; "));
                        }
                        goose_metrics = Some(*metrics.0);
                    }
                    Err(e) => failure = Some(describe_goose_error(&e)),
                }
            }
        }
        ramp.abort();
    }
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
    let record = RunRecord {
        plan: p.plan,
        host: p.host,
        started,
        duration: clock.elapsed(),
        interrupted: interrupt_reason.is_some(),
        interrupt_reason,
        goose: goose_metrics,
        measured: measurements.snapshot(),
        memory,
    };
    (record, page_runs)
}

/// Tells the memory sampler when every user has started, so "initial" memory excludes the ramp.
fn ramp_watch(
    plan: &RunPlan,
    goose: &GooseConfiguration,
    sampler: &MemorySampler,
) -> tokio::task::JoinHandle<()> {
    let users = plan.users.total() as f64;
    let rate = goose
        .increase_rate
        .as_deref()
        .and_then(|r| r.parse::<f64>().ok())
        .unwrap_or(plan.profile.spawn_rate)
        .max(0.001);
    let ramp = goose
        .increase_time
        .as_deref()
        .and_then(goose::util::parse_timespan)
        .map(|s| s as f64)
        .unwrap_or(users / rate);
    let marker = sampler.ramp_marker();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs_f64(ramp + 1.0)).await;
        marker.ramp_done();
    })
}

/// The Goose attack: the run's configuration with the profile's numbers, and the scenarios.
fn build_attack(p: &Prepared, shared: &Arc<Shared>) -> Result<GooseAttack, GooseError> {
    let mut cfg = p.goose.clone();
    cfg.host = Some(p.host.clone());
    if !p.test_plan_given {
        cfg.users = Some(p.plan.users.total());
        if cfg.increase_rate.is_none() && cfg.increase_time.is_none() {
            cfg.increase_rate = Some(p.plan.profile.spawn_rate.to_string());
        }
        if cfg.run_time.is_none() && cfg.iterations.is_none() {
            cfg.run_time = Some(p.plan.profile.run_time.as_secs().to_string());
        }
    }
    let attack = GooseAttack::initialize_with_config(cfg)?
        .set_scheduler(GooseScheduler::RoundRobin)
        .set_client_builder_without_cookies(goose::client::GooseClientBuilder::new().without_cookies())?
        .set_default(GooseDefault::NoTelnet, true)?;
    scenarios::register(*attack, shared)
}

/// Goose's `Display` hides the detail that says what to fix.
fn describe_goose_error(e: &GooseError) -> String {
    match e {
        GooseError::InvalidOption {
            option,
            value,
            detail,
        } => format!("{option} {value}: {detail}"),
        GooseError::InvalidHost { host, detail, .. } => format!("--host {host}: {detail}"),
        GooseError::InvalidWaitTime { detail, .. }
        | GooseError::InvalidWeight { detail, .. }
        | GooseError::NoScenarios { detail }
        | GooseError::FeatureNotEnabled { detail, .. } => detail.clone(),
        GooseError::Io(io) if io.kind() == std::io::ErrorKind::AddrInUse => {
            format!("{io}: a port Goose needs is taken")
        }
        other => other.to_string(),
    }
}
