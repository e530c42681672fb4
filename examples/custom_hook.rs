//! A post-run hook of your own: the webhooks' p99 latency as a figure and a verdict.
//!
//! A real run hands every hook the run's Goose metrics and the crate's own measurements; here a
//! `RunRecord` is built by hand (two webhook rows) so the example runs on its own:
//!
//! ```text
//! cargo run --example custom_hook
//! ```

use goose::goose::GooseMethod;
use goose::metrics::{GooseMetrics, GooseRequestMetricAggregate, GooseRequestMetricTimingData};
use phone_agent_load::analysis::api::merge_timings;
use phone_agent_load::analysis::results::Results;
use phone_agent_load::analysis::verdicts::Verdict;
use phone_agent_load::analysis::{analyse, summary, PostRunHook, RunRecord};
use phone_agent_load::config::plan::{AiMode, Overrides, RunPlan};
use phone_agent_load::config::profile::{Band, Profile};

/// Judges the p99 of every `/webhooks/twilio/...` request together: Twilio gives up on a
/// webhook after 15 s, but callers notice far sooner.
struct WebhookP99 {
    band: Band,
}

impl PostRunHook for WebhookP99 {
    fn name(&self) -> &str {
        "webhook p99"
    }

    fn after_run(&self, run: &RunRecord, results: &mut Results) -> anyhow::Result<()> {
        let Some(goose) = &run.goose else {
            return Ok(()); // Goose produced no metrics: nothing to judge
        };
        let webhooks = goose
            .requests
            .values()
            .filter(|r| r.method != GooseMethod::Custom && r.path.starts_with("/webhooks/"));
        // Merge the rows' histograms, then take the percentile: never average percentiles.
        let merged = merge_timings(webhooks.map(|r| &r.raw_data));
        if merged.counter == 0 {
            return Ok(());
        }
        let p99_ms = merged.percentile_us(0.99) as f64 / 1000.0;
        results.add_figure("webhook p99", p99_ms, "ms");
        results.add_verdict(
            Verdict::judged("webhook p99 latency", p99_ms, "ms", self.band, true, Some("api")).recommend(
                "webhooks slowing down: check the voice webhook's TwiML generation",
                "webhooks too slow: Twilio callers hear silence; profile the webhook handlers",
            ),
        );
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let plan = RunPlan::new(
        Profile::load("quick")?,
        &Overrides::default(),
        AiMode::Stream,
        false,
    )?;
    let mut run = RunRecord::new(plan, "http://127.0.0.1:8080");
    run.duration = std::time::Duration::from_secs(60);
    let mut goose = GooseMetrics::default();
    goose.duration = 60;
    for (path, times_ms) in [
        (
            "/webhooks/twilio/status",
            vec![12, 15, 18, 22, 25, 30, 35, 40, 260, 900],
        ),
        ("/webhooks/twilio/voice", vec![20, 24, 28, 33, 38, 44, 50, 310]),
    ] {
        goose
            .requests
            .insert(format!("POST {path}"), webhook_row(path, &times_ms));
    }
    run.goose = Some(goose);

    let hooks: Vec<Box<dyn PostRunHook>> = vec![Box::new(WebhookP99 {
        band: Band {
            warning: 500.0,
            critical: 1000.0,
        },
    })];
    let results = analyse(&run, &hooks);
    summary::print_summary(&results);
    std::process::exit(results.exit_code(results.fail_on));
}

/// A Goose request row as a run would leave it (normally Goose fills these in).
fn webhook_row(path: &str, times_ms: &[u64]) -> GooseRequestMetricAggregate {
    let times_us: Vec<u64> = times_ms.iter().map(|ms| ms * 1000).collect();
    let mut raw = GooseRequestMetricTimingData {
        // Goose keys its buckets by their floor: 64 per power of two.
        times_us: times_us.iter().map(|&us| (bucket_floor(us), 1)).collect(),
        ..Default::default()
    };
    raw.minimum_time_us = *times_us.iter().min().unwrap_or(&0);
    raw.maximum_time_us = *times_us.iter().max().unwrap_or(&0);
    raw.total_time_us = times_us.iter().sum();
    raw.counter = times_us.len();
    GooseRequestMetricAggregate {
        path: path.to_string(),
        method: GooseMethod::Post,
        raw_data: raw,
        coordinated_omission_data: None,
        status_code_counts: [(200, times_ms.len())].into(),
        status_code_timings: Default::default(),
        success_count: times_ms.len(),
        fail_count: 0,
        load_test_hash: 0,
        custom_method: String::new(),
    }
}

fn bucket_floor(us: u64) -> u64 {
    if us < 128 {
        return us;
    }
    let bits = 63 - us.leading_zeros() - 6;
    (us >> bits) << bits
}
