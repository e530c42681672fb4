//! The webhook user: Locust's `WebhookUser`, playing Twilio's part by posting form-encoded
//! call-status and incoming-call webhooks for a handful of calls of its own.
//!
//! As in the API scenarios, one transaction draws the task by weight each time it runs. 200
//! passes, and so do 400 and 403: a server checking Twilio's signature may refuse load-test
//! traffic, which is no failure of the load test. Any content type passes (Twilio takes TwiML
//! under several), but the body must arrive whole and within the API's size cap.

use super::api::{judge, request_to, with_wait, Expect};
use super::data::{self, weighted_choice, Sid, TwilioCall};
use super::rules::{failure_reason, Rule};
use super::{transaction, Shared};
use goose::prelude::*;
use rand::Rng;
use reqwest::Method;
use std::sync::Arc;
use std::time::Duration;

/// Request names (the paths themselves, as in the original suite).
pub const STATUS: &str = "/webhooks/twilio/status";
pub const VOICE: &str = "/webhooks/twilio/voice";

/// How many calls a webhook user reports on.
pub const CALLS_PER_USER: usize = 20;

/// The webhook user's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookTask {
    CallStatus,
    Voice,
}

/// Locust's `@task` weights of the webhook user.
pub const WEBHOOK_TASKS: [(WebhookTask, u32); 2] = [(WebhookTask::CallStatus, 10), (WebhookTask::Voice, 5)];
/// Locust's `wait_time = between(0.1, 0.5)`.
pub const WEBHOOK_WAIT: (Duration, Duration) = (Duration::from_millis(100), Duration::from_millis(500));

pub(super) const PASS_WEBHOOK: Rule = Rule {
    passes: &[200, 400, 403],
    names_failure: failure_reason,
};

/// The user's Twilio account and its calls, made on its first task (Locust's `on_start`).
#[derive(Debug, Clone)]
struct TwilioAccount {
    account_sid: Sid,
    call_sids: Vec<Sid>,
}

impl TwilioAccount {
    fn random(rng: &mut impl Rng) -> TwilioAccount {
        TwilioAccount {
            account_sid: Sid::account(rng),
            call_sids: (0..CALLS_PER_USER).map(|_| Sid::call(rng)).collect(),
        }
    }
}

/// Locust's `WebhookUser`.
pub fn webhook_user(shared: &Arc<Shared>) -> Result<Scenario, GooseError> {
    let transaction = transaction(shared, "pick webhook task", |user, shared| {
        Box::pin(webhook_task(user, shared))
    });
    with_wait(
        scenario!("Webhook user").register_transaction(transaction),
        WEBHOOK_WAIT,
        shared,
    )
}

/// Draws the task and its form body (before any await: the RNG is not `Send`).
fn draw_webhook(user: &mut GooseUser) -> (&'static str, String) {
    let rng = &mut rand::rng();
    if user.get_session_data::<TwilioAccount>().is_none() {
        user.set_session_data(TwilioAccount::random(rng));
    }
    let account = user.get_session_data_unchecked::<TwilioAccount>();
    let call = TwilioCall {
        call_sid: &account.call_sids[rng.random_range(0..account.call_sids.len())],
        account_sid: &account.account_sid,
    };
    match weighted_choice(rng, &WEBHOOK_TASKS) {
        WebhookTask::CallStatus => (STATUS, data::status_webhook_form(rng, call)),
        WebhookTask::Voice => (VOICE, data::voice_webhook_form(rng, call)),
    }
}

async fn webhook_task(user: &mut GooseUser, shared: Arc<Shared>) -> TransactionResult {
    let (path, form) = draw_webhook(user);
    let builder = request_to(user, Method::POST, path)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form);
    let request = GooseRequest::builder()
        .name(path)
        .set_request_builder(builder)
        .build();
    let goose = user.request(request).await?;
    judge(
        user,
        &shared.measurements.failures,
        goose,
        PASS_WEBHOOK,
        Expect::Anything,
    )
    .await
}
