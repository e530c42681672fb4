//! The Goose side of a run: the attack built from the plan and the scenarios, Goose's option
//! checks run dry before anything starts, and Goose's errors in the user's words.

use super::console::Console;
use super::interrupt;
use crate::config::plan::RunPlan;
use crate::config::schedule::Schedule;
use crate::config::utterances::Utterance;
use crate::scenarios::{self, Shared};
use anyhow::Result;
use goose::config::GooseConfiguration;
use goose::prelude::*;
use std::sync::Arc;

/// Runs Goose's own checks of its options — time spans, rates, their conflicts, `--test-plan`,
/// `--scenarios`, the logs' options — before anything starts: Goose makes them inside
/// `execute()`, which would be after the simulator started and Goose printed its configuration.
/// The dry attack has no host, so Goose stops at its host check, before any user, controller,
/// dashboard or report exists; it runs quiet (its INFO lines and warnings come with the real attack).
pub(super) async fn check_goose_options(
    goose: &GooseConfiguration,
    plan: &RunPlan,
    schedule: &Schedule,
    utterances: &[Utterance],
    console: &Console,
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
        unknown_events: Default::default(),
    });
    // Its warnings too: the real attack gives them again. (Goose resets the log level as it
    // starts, so the console drops them.)
    let level = log::max_level();
    console.hush(true);
    let checked = match goose_attack(cfg, plan, schedule, "", &shared) {
        Ok(attack) => attack.execute().await.map(drop),
        Err(e) => Err(e),
    };
    console.hush(false);
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
pub(super) fn goose_attack(
    mut cfg: GooseConfiguration,
    plan: &RunPlan,
    schedule: &Schedule,
    host: &str,
    shared: &Arc<Shared>,
) -> Result<GooseAttack, GooseError> {
    cfg.host = Some(host.to_string());
    schedule.apply(plan, &mut cfg);
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
pub(super) fn describe_goose_error(e: &GooseError) -> String {
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
