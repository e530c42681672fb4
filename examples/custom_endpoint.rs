//! Adding your own endpoint: a Goose transaction of your own, in a scenario of your own, run
//! next to phone-agent-load's built-in API and webhook scenarios.
//!
//! ```text
//! cargo run --release -- serve --port 8080        # in another terminal (or your own server)
//! cargo run --example custom_endpoint -- --host http://127.0.0.1:8080 --users 10 --run-time 30s
//! ```
//!
//! Goose's own command-line options all work here (`--users`, `--run-time`, `--report-file`, …).

use goose::prelude::*;
use phone_agent_load::config::plan::{AiMode, Overrides, RunPlan};
use phone_agent_load::config::profile::Profile;
use phone_agent_load::scenarios::{api, webhooks, Shared};
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let plan = RunPlan::new(
        Profile::load("quick")?,
        &Overrides::default(),
        AiMode::Stream,
        false,
    )?;
    let shared = Arc::new(Shared {
        plan,
        measurements: Default::default(),
        utterances: Default::default(),
        unknown_events: Default::default(),
    });

    // Weights share the users out: here 1 API, 2 webhook, 1 high-load and 1 of ours in 5.
    let metrics = GooseAttack::initialize()?
        .register_scenario(api::api_user(&shared)?.set_weight(1)?)
        .register_scenario(webhooks::webhook_user(&shared)?.set_weight(2)?)
        .register_scenario(api::high_load_user(&shared)?.set_weight(1)?)
        .register_scenario(
            scenario!("Supervisor user")
                .register_transaction(transaction!(active_calls).set_name("active calls"))
                .set_wait_time(Duration::from_secs(1), Duration::from_secs(3))?
                .set_weight(1)?,
        )
        .execute()
        .await?;
    let failures: usize = metrics.requests.values().map(|r| r.fail_count).sum();
    println!("{failures} failed requests");
    Ok(())
}

/// The new endpoint: a supervisor's view of the calls in progress. The name is the row in
/// Goose's reports ("GET /api/v1/calls [ACTIVE]"); point the path at your own endpoint.
async fn active_calls(user: &mut GooseUser) -> TransactionResult {
    let request = GooseRequest::builder()
        .path("/api/v1/calls?status=in_progress&limit=50")
        .name("/api/v1/calls [ACTIVE]")
        .build();
    let mut goose = user.request(request).await?;
    // Goose judges the status (2xx passes); check the body too, and fail the request if wrong.
    if let Ok(response) = goose.response {
        let is_list = response
            .json::<serde_json::Value>()
            .await
            .is_ok_and(|v| v.is_array());
        if goose.request.success && !is_list {
            return user.set_failure("not a JSON list", &mut goose.request, None, None);
        }
    }
    Ok(())
}
