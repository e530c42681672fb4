//! Media-stream calls and AI calls under real Goose attacks on loopback: against stub agents that
//! script the Twilio conversation exactly (message shapes, mark echo timing, clear, protocol
//! errors, dropped calls) and against the built-in simulator (counts both sides agree on, stream
//! caps, the real-time factor following the simulated pipeline's speed). Plus the mock AI mode
//! with no server, and a property test of the Media Streams parser. What the modules share is
//! here: a run's shared state, a bounded attack, and reading its Goose rows.

mod against_simulator;
mod against_stubs;
mod mock;
mod parser;

use crate::harness;
use goose::config::GooseConfiguration;
use goose::metrics::GooseMetrics;
use goose::prelude::*;
use phone_agent_load::config::plan::{AiMode, Overrides, RunPlan};
use phone_agent_load::config::profile::Profile;
use phone_agent_load::config::utterances::Utterance;
use phone_agent_load::scenarios::Shared;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// Longest any attack here may take, run time included.
const ATTACK_LIMIT: Duration = Duration::from_secs(20);

const CONNECT: &str = "WS media stream: connect";
const CALL: &str = "WS media stream: call";

fn shared(
    mode: AiMode,
    no_wait: bool,
    stream_secs: f64,
    ai_secs: f64,
    utterances: Vec<Utterance>,
) -> Arc<Shared> {
    let profile = Profile::load("quick").expect("built-in profile");
    let mut plan = RunPlan::new(profile, &Overrides::default(), mode, no_wait).expect("plan");
    plan.media_stream_duration = Duration::from_secs_f64(stream_secs);
    plan.ai_call_duration = Duration::from_secs_f64(ai_secs);
    Arc::new(Shared {
        plan,
        measurements: Default::default(),
        utterances: Arc::new(utterances),
        unknown_events: Default::default(),
    })
}

/// Runs `scenario` with `users` users against `host` for `secs` after they all started;
/// returns Goose's metrics and how long the attack took.
async fn attack(scenario: Scenario, host: &str, users: usize, secs: usize) -> (GooseMetrics, Duration) {
    let attack = harness::quiet(
        GooseAttack::initialize_with_config(GooseConfiguration::default())
            .unwrap()
            .set_client_builder_without_cookies(goose::client::GooseClientBuilder::new().without_cookies())
            .unwrap()
            .register_scenario(scenario),
        host,
        users,
        secs,
    );
    let started = Instant::now();
    let metrics = timeout(ATTACK_LIMIT, attack.execute())
        .await
        .expect("the attack ends in time")
        .expect("the attack runs");
    (metrics, started.elapsed())
}

/// (successes, failures) under a Goose row.
fn row(m: &GooseMetrics, name: &str) -> (usize, usize) {
    m.requests
        .get(name)
        .map_or((0, 0), |r| (r.success_count, r.fail_count))
}

/// How often requests under `row` failed with `error`.
fn errors(m: &GooseMetrics, row: &str, error: &str) -> usize {
    m.errors
        .values()
        .filter(|e| format!("{} {}", e.custom_method, e.name) == row && e.error == error)
        .map(|e| e.occurrences)
        .sum()
}
