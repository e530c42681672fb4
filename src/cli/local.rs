//! A lone run from the command line: prepare it, serve the web UI beside it unless
//! `--headless`, run the attack, and conclude — once for an autostarted run, or once per run
//! started from the page (`--no-autostart`).

use super::LoadOptions;
use crate::analysis::{self, PostRunHook};
use crate::webui::{self, SessionRuns, Watcher};
use goose::config::GooseConfiguration;

/// Runs a load test as the command line describes; returns the exit status.
pub async fn run(load: LoadOptions, goose: GooseConfiguration) -> i32 {
    run_with_hooks(load, goose, Vec::new()).await
}

/// As [`run`], with the user's own post-run hooks after the built-in analysis.
pub async fn run_with_hooks(
    load: LoadOptions,
    mut goose: GooseConfiguration,
    hooks: Vec<Box<dyn PostRunHook>>,
) -> i32 {
    crate::run::interrupt::install();
    let options = load.run_options();
    let ui = match webui::configure(&mut goose, load.headless) {
        Ok(ui) => ui,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 1;
        }
    };
    let prepared = match async {
        if let Some(ui) = &ui {
            ui.check_port()?;
        }
        crate::run::prepare(&options, goose).await
    }
    .await
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 1;
        }
    };
    let watcher = ui.map(|ui| {
        println!("Web UI: {}", ui.url);
        let session = ui.interactive().then(|| {
            println!("Waiting for Start on the web UI (set users, rate and run time there); Ctrl-C quits.");
            SessionRuns {
                plan: prepared.plan.clone(),
                host: prepared.host.clone(),
                measurements: prepared.measurements.clone(),
                memory_target: prepared.memory_target.clone(),
                output: options.output.clone(),
                fail_on: load.fail_on,
            }
        });
        Watcher::start(ui, session)
    });
    let record = crate::run::attack(prepared).await;
    match watcher.map(Watcher::stop) {
        // Runs started from the page were each concluded when they ended.
        Some(Some((0, _))) => {
            println!("No run was started from the web UI.");
            0
        }
        Some(Some((_, worst))) => worst,
        _ => analysis::conclude(&record, options.output.as_deref(), load.fail_on, &hooks),
    }
}
