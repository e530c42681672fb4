//! The REST API users: Locust's `PhoneAgentAPIUser` ("API user") and `HighLoadUser`
//! ("High-load user"), with their task weights, wait times, request names and success rules.
//!
//! Goose runs a scenario's transactions in a fixed weighted order; Locust picks a task at random
//! by weight each time. So each scenario has a single transaction that draws its task by weight
//! every time it runs, which gives Locust's mix and randomness. The wait time then follows every
//! task, as Locust's does.
//!
//! Success rules: a status in a task's passing set passes; any other status fails the request
//! and the transaction, whose error carries Locust's message ("Rate limited", "Validation
//! error", "Unexpected status N"; Goose shows it as "TransactionError: custom error (Rate
//! limited)" in its transaction errors). How that maps onto Goose 0.19, which judges a request
//! (2xx passes) and counts its error before our code sees the response:
//! - a failing non-2xx keeps Goose's own request error, which names the status ("429 Too Many
//!   Requests: /api/v1/calls [LIST]"): Goose ignores a `set_failure` on a failed request;
//! - a failing 2xx (a list answering 204) is failed with `set_failure`, so its request error is
//!   Locust's message (Goose logs each at info level: `-q` hides them);
//! - a passing non-2xx (404 on a forgotten call, 429 on a rapid list, 403 on a webhook) is
//!   passed with `set_success`: success and failure counts are right, but Goose's errors table
//!   still lists the original "404 Not Found: ..." once per such request.

use super::data::{self, weighted_choice, CALLS_PATH};
use super::Shared;
use goose::goose::GooseResponse;
use goose::metrics::GooseRequestMetric;
use goose::prelude::*;
use rand::Rng;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Request names, as in the original suite (Goose rows read "METHOD name").
pub const LIST: &str = "/api/v1/calls [LIST]";
pub const CREATE: &str = "/api/v1/calls [CREATE]";
pub const UPDATE: &str = "/api/v1/calls/{id} [UPDATE]";
pub const GET: &str = "/api/v1/calls/{id} [GET]";
pub const HEALTH: &str = "/api/v1/health";
pub const RAPID: &str = "/api/v1/calls [RAPID]";

const HEALTH_PATH: &str = "/api/v1/health";
/// How many created calls a user remembers (the most recent).
pub const KEPT_IDS: usize = 50;

/// The API user's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiTask {
    ListCalls,
    CreateCall,
    UpdateCall,
    GetCall,
    Health,
}

/// Locust's `@task` weights of the API user.
pub const API_TASKS: [(ApiTask, u32); 5] = [
    (ApiTask::ListCalls, 10),
    (ApiTask::CreateCall, 5),
    (ApiTask::UpdateCall, 3),
    (ApiTask::GetCall, 2),
    (ApiTask::Health, 1),
];
/// Locust's `wait_time = between(0.5, 2.0)`.
pub const API_WAIT: (Duration, Duration) = (Duration::from_millis(500), Duration::from_millis(2000));

/// The high-load user's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HighLoadTask {
    RapidList,
    RapidHealth,
}

/// Locust's `@task` weights of the high-load user.
pub const HIGH_LOAD_TASKS: [(HighLoadTask, u32); 2] =
    [(HighLoadTask::RapidList, 5), (HighLoadTask::RapidHealth, 1)];
/// Locust's `wait_time = between(0.01, 0.1)`.
pub const HIGH_LOAD_WAIT: (Duration, Duration) = (Duration::from_millis(10), Duration::from_millis(100));

/// Statuses that pass, per kind of request.
const PASS_OK: &[u16] = &[200];
const PASS_CREATED: &[u16] = &[201];
const PASS_KNOWN_OR_NOT: &[u16] = &[200, 404];
const PASS_RAPID: &[u16] = &[200, 429];

/// The API user's own state: paths of the calls it created, the most recent last.
#[derive(Debug, Clone, Default)]
struct CreatedCalls(VecDeque<Arc<str>>);

impl CreatedCalls {
    fn keep(&mut self, id: &str) {
        if self.0.len() == KEPT_IDS {
            self.0.pop_front();
        }
        self.0.push_back(Arc::from(data::call_path(id)));
    }
}

/// Locust's `PhoneAgentAPIUser`.
pub fn api_user(shared: &Arc<Shared>) -> Result<Scenario, GooseError> {
    let transaction = transaction!(api_task).set_name("pick API task");
    with_wait(
        scenario!("API user").register_transaction(transaction),
        API_WAIT,
        shared,
    )
}

/// Locust's `HighLoadUser`.
pub fn high_load_user(shared: &Arc<Shared>) -> Result<Scenario, GooseError> {
    let transaction = transaction!(high_load_task).set_name("pick high-load task");
    with_wait(
        scenario!("High-load user").register_transaction(transaction),
        HIGH_LOAD_WAIT,
        shared,
    )
}

/// Sets a scenario's wait time, unless the run has `--no-wait`.
pub(super) fn with_wait(
    scenario: Scenario,
    (min, max): (Duration, Duration),
    shared: &Shared,
) -> Result<Scenario, GooseError> {
    if shared.plan.no_wait {
        Ok(scenario)
    } else {
        scenario.set_wait_time(min, max)
    }
}

/// What one draw of the API user does, decided before any await (the RNG is not `Send`).
enum ApiStep {
    List(&'static str),
    Create(String),
    Update(Arc<str>, String),
    Get(Arc<str>),
    Health,
    /// A task that needs a known call when none is known does nothing, as in Locust.
    Nothing,
}

fn draw_api_step(user: &GooseUser) -> ApiStep {
    let rng = &mut rand::rng();
    let known = |rng: &mut rand::rngs::ThreadRng| {
        let calls = &user.get_session_data::<CreatedCalls>()?.0;
        (!calls.is_empty()).then(|| calls[rng.random_range(0..calls.len())].clone())
    };
    match weighted_choice(rng, &API_TASKS) {
        ApiTask::ListCalls => ApiStep::List(data::random_list_path(rng)),
        ApiTask::CreateCall => ApiStep::Create(data::create_call_body(rng, user.weighted_users_index)),
        ApiTask::UpdateCall => match known(rng) {
            Some(path) => ApiStep::Update(path, data::update_call_body(rng)),
            None => ApiStep::Nothing,
        },
        ApiTask::GetCall => known(rng).map_or(ApiStep::Nothing, ApiStep::Get),
        ApiTask::Health => ApiStep::Health,
    }
}

async fn api_task(user: &mut GooseUser) -> TransactionResult {
    match draw_api_step(user) {
        ApiStep::List(path) => get(user, path, LIST, PASS_OK).await,
        ApiStep::Create(body) => create_call(user, body).await,
        ApiStep::Update(path, body) => update_call(user, &path, body).await,
        ApiStep::Get(path) => get(user, &path, GET, PASS_KNOWN_OR_NOT).await,
        ApiStep::Health => get(user, HEALTH_PATH, HEALTH, PASS_OK).await,
        ApiStep::Nothing => Ok(()),
    }
}

async fn high_load_task(user: &mut GooseUser) -> TransactionResult {
    let path = {
        let rng = &mut rand::rng();
        match weighted_choice(rng, &HIGH_LOAD_TASKS) {
            HighLoadTask::RapidList => Some(data::random_list_path(rng)),
            HighLoadTask::RapidHealth => None,
        }
    };
    match path {
        Some(path) => get(user, path, RAPID, PASS_RAPID).await,
        None => get(user, HEALTH_PATH, HEALTH, PASS_OK).await,
    }
}

/// `POST /api/v1/calls`; a 201 keeps the new call's id for later updates and reads.
async fn create_call(user: &mut GooseUser, body: String) -> TransactionResult {
    let builder = user
        .get_request_builder(&GooseMethod::Post, CALLS_PATH)?
        .header("content-type", "application/json")
        .body(body);
    let request = GooseRequest::builder()
        .name(CREATE)
        .set_request_builder(builder)
        .build();
    let GooseResponse {
        mut request,
        response,
    } = user.request(request).await?;
    let body = match response {
        Ok(response) => response.bytes().await.ok(),
        Err(e) => return Err(request_failed(request, &e)),
    };
    settle(user, &mut request, PASS_CREATED)?;
    match body.as_deref().and_then(created_id) {
        Some(id) => {
            match user.get_session_data_mut::<CreatedCalls>() {
                Some(calls) => calls.keep(&id),
                None => {
                    let mut calls = CreatedCalls::default();
                    calls.keep(&id);
                    user.set_session_data(calls);
                }
            }
            Ok(())
        }
        None => fail(user, &mut request, "No call id in response".into()),
    }
}

/// `PATCH /api/v1/calls/{id}` of a call this user created (which the server may have forgotten).
async fn update_call(user: &mut GooseUser, path: &str, body: String) -> TransactionResult {
    let builder = user
        .get_request_builder(&GooseMethod::Patch, path)?
        .header("content-type", "application/json")
        .body(body);
    let request = GooseRequest::builder()
        .name(UPDATE)
        .set_request_builder(builder)
        .build();
    let goose = user.request(request).await?;
    judge(user, goose, PASS_KNOWN_OR_NOT).await
}

/// The `id` of a created call (a string, or a number as some servers send it).
fn created_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Created {
        id: serde_json::Value,
    }
    match serde_json::from_slice::<Created>(body).ok()?.id {
        serde_json::Value::String(s) if !s.is_empty() => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A `GET` named `name`, judged against `passes`.
async fn get(user: &mut GooseUser, path: &str, name: &str, passes: &[u16]) -> TransactionResult {
    let request = GooseRequest::builder().path(path).name(name).build();
    let goose = user.request(request).await?;
    judge(user, goose, passes).await
}

/// Reads a response to the end (so its connection is reused) and applies a task's success
/// rule: `passes` are the statuses that pass.
pub(super) async fn judge(user: &mut GooseUser, goose: GooseResponse, passes: &[u16]) -> TransactionResult {
    let GooseResponse {
        mut request,
        response,
    } = goose;
    match response {
        Ok(response) => drop(response.bytes().await),
        Err(e) => return Err(request_failed(request, &e)),
    }
    settle(user, &mut request, passes)
}

/// Passes or fails a request that got an answer, by its status.
fn settle(user: &mut GooseUser, request: &mut GooseRequestMetric, passes: &[u16]) -> TransactionResult {
    let status = request.status_code;
    if !passes.contains(&status) {
        return fail(user, request, failure_reason(status));
    }
    if !request.success {
        // Goose failed a non-2xx status this task accepts. Clear its error so the correction
        // isn't counted as a second error.
        request.error.clear();
        user.set_success(request)?;
    }
    Ok(())
}

/// A request that got no answer: Goose has recorded it; the console counts it by its cause; the
/// transaction fails.
fn request_failed(request: GooseRequestMetric, e: &reqwest::Error) -> Box<TransactionError> {
    crate::console::count_transport(e);
    Box::new(TransactionError::RequestFailed {
        raw_request: Box::new(request),
    })
}

/// Fails a request with Locust's `reason`: the request (unless Goose already failed it, with its
/// own message naming the status) and the transaction.
fn fail(
    user: &mut GooseUser,
    request: &mut GooseRequestMetric,
    reason: Cow<'static, str>,
) -> TransactionResult {
    crate::console::count(&reason);
    if request.success {
        // Always an `Err` (the request's); the transaction's below carries the reason too.
        let _ = user.set_failure(&reason, request, None, None);
    }
    Err(Box::new(TransactionError::Custom(reason.into_owned())))
}

/// Locust's failure message for a status a task does not accept.
pub fn failure_reason(status: u16) -> Cow<'static, str> {
    match status {
        429 => Cow::Borrowed("Rate limited"),
        422 => Cow::Borrowed("Validation error"),
        s => Cow::Owned(format!("Unexpected status {s}")),
    }
}
