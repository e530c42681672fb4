//! One run, start to finish: validate everything, start or check the target, run the Goose
//! attack with the scenarios, then hand what was measured to the post-run hook.
//!
//! Every option and file is checked before any load starts; once the attack has started, the
//! results are always written — at its end, on Ctrl-C, or when a threshold aborts it.

pub mod console;
pub mod interrupt;
pub mod target;

use crate::analysis::verdicts::Status;
use crate::analysis::{self, PostRunHook, RunRecord};
use crate::cli::LoadOptions;

use crate::config::plan::{AiMode, RunPlan};
use crate::measure::memory::{MemorySampler, MemoryTarget};
use crate::measure::Measurements;
use crate::scenarios::{self, Shared};
use crate::webui::{self, WebUi};
use anyhow::{Context, Result};
use goose::config::GooseConfiguration;
use goose::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use target::SimulatorProcess;

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
    // A run started from the web UI leaves its failures in the console's tally.
    let mut failures = record.failures_by_reason.clone();
    crate::measure::merge_counts(&mut failures, &crate::run::console::take_tally());
    crate::run::console::print_table(&failures);
    let mut results = analysis::analyse(record, hooks);
    results.failures_by_reason = failures;
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
    pub utterances: Arc<Vec<crate::config::utterances::Utterance>>,
    /// The web UI, unless `--headless`.
    pub webui: Option<WebUi>,
    /// Where the scenarios measure, if the caller wants to read it while the attack runs (gaggle
    /// workers report progress from it); a fresh one otherwise.
    pub measurements: Option<Arc<Measurements>>,
}

/// Checks every option and file, then the target; nothing has been sent to the target yet.
pub async fn prepare(load: &LoadOptions, goose: GooseConfiguration) -> Result<Prepared> {
    let mut goose = goose;
    // Before the console takes the Goose log's path out of the configuration.
    crate::cli::check_goose_outputs(&goose, load.output.as_deref())?;
    let console_ours = crate::run::console::install(&mut goose)?;
    let webui = webui::configure(&mut goose, load.headless)?;
    if let Some(ui) = &webui {
        ui.check_port()?;
    }
    let plan = RunPlan::from_options(load, goose.users)?;
    if let Some(path) = &load.output {
        analysis::results::check_output_path(path).context("--output")?;
    }
    let speaks = plan.users.ai_calls > 0 && plan.ai_mode == AiMode::Stream;
    let utterances = match (&load.audio_dir, speaks) {
        (Some(dir), _) => crate::config::utterances::load_dir(dir).context("--audio-dir")?,
        (None, true) => crate::config::utterances::builtin(),
        (None, false) => Vec::new(),
    };
    let needs_server = plan.users.api_total() + plan.users.media_streams > 0 || speaks;
    if let Some(host) = &goose.host {
        target::validate_host(host)?;
    }
    if let Some(url) = &load.server_metrics_url {
        target::refuse_credentials_in("--server-metrics-url", url)?;
    }
    if console_ours {
        check_goose_options(&goose, &plan, load.test_plan_given, &utterances).await?;
    }
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
    if let Some(ui) = &webui {
        println!("Web UI: {}", ui.url);
        if ui.interactive() {
            println!("Waiting for Start on the web UI (set users, rate and run time there); Ctrl-C quits.");
        }
    }
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
    // Interrupted already, the attack still runs, so Goose writes its reports; it launches no
    // user (see interrupt::stand_down).
    {
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
        failures_by_reason: crate::run::console::take_tally(),
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
    goose_attack(p.goose.clone(), &p.plan, &p.host, p.test_plan_given, shared)
}

/// Runs Goose's own checks of its options — time spans, rates, their conflicts, `--test-plan`,
/// `--scenarios`, the logs' options — before anything starts: Goose makes them inside
/// `execute()`, which would be after the simulator started and Goose printed its configuration.
/// The dry attack has no host, so Goose stops at its host check, before any user, controller,
/// dashboard or report exists; it runs quiet (its INFO lines and warnings come with the real attack).
async fn check_goose_options(
    goose: &GooseConfiguration,
    plan: &RunPlan,
    test_plan_given: bool,
    utterances: &[crate::config::utterances::Utterance],
) -> Result<()> {
    if goose.verbose > 0 && goose.quiet > 0 {
        anyhow::bail!("--verbose and --quiet contradict each other: give one or the other");
    }
    let mut cfg = goose.clone();
    // With no autostart Goose would go on to wait for a Start (checked in webui::configure).
    cfg.no_autostart = false;
    (cfg.verbose, cfg.quiet) = (0, 1);
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        measurements: Arc::default(),
        utterances: Arc::new(utterances.to_vec()),
    });
    // Its warnings too: the real attack gives them again. (Goose resets the log level as it
    // starts, so the console drops them.)
    let level = log::max_level();
    crate::run::console::hush(true);
    let checked = match goose_attack(cfg, plan, "", test_plan_given, &shared) {
        Ok(attack) => attack.execute().await.map(drop),
        Err(e) => Err(e),
    };
    crate::run::console::hush(false);
    log::set_max_level(level);
    match checked {
        // Reached the host check: every option before it passed.
        Err(GooseError::InvalidOption { option, value, .. }) if option == "--host" && value.is_empty() => {
            Ok(())
        }
        Ok(()) => Ok(()),
        Err(e) => Err(anyhow::anyhow!(describe_goose_error(&e))),
    }
}

/// The Goose attack on `host` (empty: none) with the plan's numbers unless `--test-plan` rules.
fn goose_attack(
    mut cfg: GooseConfiguration,
    plan: &RunPlan,
    host: &str,
    test_plan_given: bool,
    shared: &Arc<Shared>,
) -> Result<GooseAttack, GooseError> {
    cfg.host = Some(host.to_string());
    if !test_plan_given {
        cfg.users = Some(plan.users.total());
        if cfg.increase_rate.is_none() && cfg.increase_time.is_none() {
            cfg.increase_rate = Some(plan.profile.spawn_rate.to_string());
        }
        if cfg.run_time.is_none() && cfg.iterations.is_none() {
            cfg.run_time = Some(plan.profile.run_time.as_secs().to_string());
        }
    }
    let attack = GooseAttack::initialize_with_config(cfg)?
        .set_scheduler(GooseScheduler::RoundRobin)
        .set_client_builder_without_cookies(goose::client::GooseClientBuilder::new().without_cookies())?
        .set_default(GooseDefault::NoTelnet, true)?
        .test_start(Transaction::new(Arc::new(|user| {
            Box::pin(interrupt::stand_down(user))
        })));
    scenarios::register(attack, shared)
}

/// Goose's `Display` hides the detail that says what to fix.
fn describe_goose_error(e: &GooseError) -> String {
    match e {
        GooseError::InvalidOption {
            option,
            value,
            detail,
        } => goose_option_names(&format!("{option} {value}: {detail}")),
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

/// Goose names its options `configuration.run_time` in errors; the user typed `--run-time`.
fn goose_option_names(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("configuration.") {
        let before = &rest[..at];
        let after = &rest[at + "configuration.".len()..];
        let len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        if len == 0 {
            out.push_str(&rest[..at + "configuration.".len()]);
            rest = after;
            continue;
        }
        out.push_str(before.strip_suffix('`').unwrap_or(before));
        out.push_str("--");
        out.push_str(&after[..len].replace('_', "-"));
        rest = after[len..].strip_prefix('`').unwrap_or(&after[len..]);
    }
    out.push_str(rest);
    out
}
