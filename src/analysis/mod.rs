//! The post-run hook: real-time factor, memory growth, verdicts, the results file and the report.
//!
//! After every run (finished, interrupted or aborted) the run's facts are gathered into a
//! [`RunRecord`]; [`analyse`] turns it into [`results::Results`] with the built-in
//! [`StandardAnalysis`], then hands the results to each user [`PostRunHook`], which may add its
//! own figures and verdicts. [`summary::print_summary`], [`results::Results::write_json`] and
//! [`report::write_html`] then show and keep them.

pub mod api;

pub mod report;
pub mod results;
pub mod sections;
pub mod standard;
pub mod summary;
pub mod verdicts;

pub mod conclude;

pub use crate::run::RunRecord;
pub use conclude::conclude;
use results::{MemoryResults, Results, Section};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use verdicts::{Status, Verdict};

/// Something to do with a run's results before they are printed and written.
pub trait PostRunHook: Send + Sync {
    fn name(&self) -> &str;
    /// Adds figures or verdicts (`results.add_figure`, `results.add_verdict`). An error is
    /// reported and the run's results are still produced.
    fn after_run(&self, run: &RunRecord, results: &mut Results) -> anyhow::Result<()>;
}

/// The built-in analysis: every section of the results file and the standard verdicts, plus one verdict
/// per Goose `--threshold` rule (critical when it failed).
pub struct StandardAnalysis;

impl PostRunHook for StandardAnalysis {
    fn name(&self) -> &str {
        "standard analysis"
    }

    fn after_run(&self, run: &RunRecord, r: &mut Results) -> anyhow::Result<()> {
        let plan = &run.plan;
        let duration_s = run.duration.as_secs_f64();
        r.api = section(plan.skips.api || plan.users.api_total() == 0, || {
            api::api_section(run.goose.as_ref(), duration_s)
        });
        r.websocket = section(plan.skips.ws || plan.users.media_streams == 0, || {
            sections::websocket_section(&run.measured.streams, duration_s)
        });
        r.ai_pipeline = section(plan.skips.ai || plan.users.ai_calls == 0, || {
            let ai_run = sections::AiRun {
                mode: plan.ai_mode,
                duration_s,
                concurrent_calls: users_that_ran(run).get(AI_CALLS).copied().unwrap_or(0),
                memory_peak_mb: run.memory.load_generator.as_ref().map_or(0.0, |m| m.peak_mb),
            };
            sections::ai_section(&run.measured.ai, &ai_run)
        });
        r.memory.report = run.memory.clone();
        for v in standard::standard_verdicts(r, &plan.profile.thresholds) {
            r.add_verdict(v);
        }
        for t in run.goose.iter().flat_map(|g| &g.thresholds) {
            r.add_verdict(goose_threshold_verdict(t));
        }
        Ok(())
    }
}

fn section<T>(skipped: bool, build: impl FnOnce() -> T) -> Section<T> {
    if skipped {
        Section::Skipped
    } else {
        Section::Ran(build())
    }
}

/// A Goose `--threshold` rule as a verdict, so `--threshold` gates the exit status too.
fn goose_threshold_verdict(t: &goose::threshold::ThresholdResult) -> Verdict {
    let status = if t.passed {
        Status::Target
    } else {
        Status::Critical
    };
    Verdict {
        metric: format!("threshold {}", t.rule),
        value: t.value.filter(|v| v.is_finite()).unwrap_or(0.0),
        unit: String::new(),
        status,
        target: t.rule.clone(),
        warning: "-".to_string(),
        critical: "rule fails".to_string(),
        recommendation: (!t.passed).then(|| {
            let stopped = if t.aborted { " and stopped the run" } else { "" };
            format!("Goose threshold failed{stopped}")
        }),
        section: None,
        detail: Some(t.observed.clone()),
        warning_at: None,
        critical_at: None,
        higher_is_worse: None,
    }
}

/// The results before any analysis: what the run was, nothing judged.
fn skeleton(run: &RunRecord) -> Results {
    let users = users_that_ran(run);
    Results {
        profile: run.plan.profile.name.clone(),
        timestamp: run.started.to_rfc3339(),
        host: run.host.clone(),
        passed: true,
        interrupted: run.interrupted,
        interrupt_reason: run.interrupt_reason.clone(),
        duration_s: run.duration.as_secs_f64(),
        fail_on: Status::Critical,
        users,
        api: Section::Skipped,
        websocket: Section::Skipped,
        ai_pipeline: Section::Skipped,
        memory: MemoryResults::default(),
        verdicts: Vec::new(),
        figures: Vec::new(),
        hook_errors: Vec::new(),
        failures_by_reason: Default::default(),
        workers: Vec::new(),
        raw: Some(results::RawData::of(run)),
    }
}

/// The `users` key of the AI-call users.
const AI_CALLS: &str = "ai_calls";

/// Goose users per kind of load (api, webhook, high_load, media_streams, ai_calls): those Goose's
/// scenario metrics saw run, since `--scenarios` may give every user to one kind; the plan's
/// split when the metrics saw no scenario run (a merged gaggle run carries no scenarios;
/// `--no-scenario-metrics` keeps none). Goose counts a user once it has run its scenario through
/// after the metrics reset, which the built-in scenarios do within a second or two.
fn users_that_ran(run: &RunRecord) -> BTreeMap<String, u64> {
    let u = &run.plan.users;
    let mut users = BTreeMap::from(
        [
            ("api", u.api),
            ("webhook", u.webhook),
            ("high_load", u.high_load),
            ("media_streams", u.media_streams),
            (AI_CALLS, u.ai_calls),
        ]
        .map(|(k, v)| (k.to_string(), v as u64)),
    );
    let scenarios = run.goose.as_ref().map_or(&[][..], |g| &g.scenarios[..]);
    if scenarios.iter().all(|s| s.users.is_empty()) {
        return users;
    }
    users.values_mut().for_each(|n| *n = 0);
    for s in scenarios {
        *users.entry(user_kind(&s.name).to_string()).or_default() += s.users.len() as u64;
    }
    users
}

/// The `users` key of a Goose scenario: the built-in scenarios by kind, any other under its own
/// name.
pub fn user_kind(scenario: &str) -> &str {
    match scenario {
        "API user" => "api",
        "Webhook user" => "webhook",
        "High-load user" => "high_load",
        crate::scenarios::media_stream::SCENARIO => "media_streams",
        crate::scenarios::ai_call::SCENARIO => AI_CALLS,
        other => other,
    }
}

/// Builds every section and verdict, then lets each hook add its own. A hook that fails (or
/// panics) is reported on stderr and in `hook_errors`; the results are produced regardless.
pub fn analyse(run: &RunRecord, hooks: &[Box<dyn PostRunHook>]) -> Results {
    let mut results = skeleton(run);
    let standard: &dyn PostRunHook = &StandardAnalysis;
    for hook in std::iter::once(standard).chain(hooks.iter().map(|h| h.as_ref())) {
        let outcome = catch_unwind(AssertUnwindSafe(|| hook.after_run(run, &mut results)));
        let error = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => format!("{e:#}"),
            Err(panic) => panic_text(panic.as_ref()),
        };
        let line = format!("post-run hook '{}' failed: {error}", hook.name());
        eprintln!("{line}");
        results.hook_errors.push(line);
    }
    results.settle();
    results
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    format!("panicked: {text}")
}
