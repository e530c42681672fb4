//! The Goose scenarios: REST API and webhook users, media-stream calls and AI audio calls.
//!
//! Each kind lives in its own module and exposes a function building its [`Scenario`]; this
//! module gives each the run's [`Shared`] state and registers them with the profile's counts as
//! weights, so Goose's round-robin allocation gives every kind exactly its number of users.

pub mod ai_call;
pub mod api;
pub mod call;
pub mod data;
pub mod media_stream;
pub mod rules;
pub mod webhooks;

use crate::config::plan::RunPlan;
use crate::config::utterances::Utterance;
use crate::measure::Measurements;
use goose::prelude::*;
use std::sync::Arc;

/// What every scenario of a run can see.
#[derive(Debug)]
pub struct Shared {
    pub plan: RunPlan,
    pub measurements: Arc<Measurements>,
    /// The caller's utterances (built in, or `--audio-dir`).
    pub utterances: Arc<Vec<Utterance>>,
    /// The unknown event names this run's calls have reported by name.
    pub unknown_events: call::UnknownEvents,
}

/// A Goose transaction from an async function of the user and the run's shared state (Goose
/// hands a transaction only its user; the plan, the measurements and the failure tally come
/// with the closure).
pub fn transaction<F>(shared: &Arc<Shared>, name: &str, f: F) -> Transaction
where
    F: for<'r> Fn(&'r mut GooseUser, Arc<Shared>) -> TransactionFuture<'r> + Send + Sync + 'static,
{
    let shared = shared.clone();
    let function: TransactionFunction = Arc::new(move |user| f(user, shared.clone()));
    Transaction::new(function).set_name(name)
}

/// What a transaction's function returns, as Goose wants it.
pub type TransactionFuture<'r> =
    std::pin::Pin<Box<dyn std::future::Future<Output = TransactionResult> + Send + 'r>>;

/// Whether the built-in scenarios' success rules accept `status` for the request named `name`
/// (without its method): a 404 on an update, a 429 on a rapid list, a 403 on a webhook. Goose
/// lists such answers among its errors before the scenario passes them; the results leave them
/// out.
pub fn accepts(name: &str, status: u16) -> bool {
    let rule = match name {
        webhooks::STATUS | webhooks::VOICE => Some(webhooks::PASS_WEBHOOK),
        _ => api::rule_of(name),
    };
    rule.is_some_and(|r| r.passes.contains(&status))
}

/// Builds one kind's scenario.
type BuildScenario = fn(&Arc<Shared>) -> Result<Scenario, GooseError>;

/// Registers every kind of load the plan has users for, each weighted by its user count: with
/// Goose's round-robin scheduler and `users` = the plan's total, each kind gets exactly its count.
pub fn register(mut attack: GooseAttack, shared: &Arc<Shared>) -> Result<GooseAttack, GooseError> {
    let u = shared.plan.users;
    let kinds: [(usize, BuildScenario); 5] = [
        (u.api, api::api_user),
        (u.webhook, webhooks::webhook_user),
        (u.high_load, api::high_load_user),
        (u.media_streams, media_stream::media_stream_call),
        (u.ai_calls, ai_call::ai_call),
    ];
    for (count, build) in kinds {
        if count > 0 {
            attack = attack.register_scenario(build(shared)?.set_weight(count)?);
        }
    }
    Ok(attack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_answers_are_the_locust_users_rules() {
        assert!(accepts(api::UPDATE, 404) && accepts(api::GET, 404));
        assert!(accepts(api::RAPID, 429) && accepts(api::RAPID_HEALTH, 429));
        assert!(accepts(webhooks::STATUS, 403) && accepts(webhooks::VOICE, 400));
        assert!(!accepts(api::LIST, 429) && !accepts(api::HEALTH, 429));
        assert!(!accepts(api::CREATE, 422) && !accepts(api::RAPID, 500));
        assert!(!accepts("/api/v1/something else", 200));
    }
}
