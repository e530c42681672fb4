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
//! error", "Unexpected status N"; the high-load user's "Unexpected status: N"; Goose shows it as "TransactionError: custom error (Rate
//! limited)" in its transaction errors). How that maps onto Goose 0.19, which judges a request
//! (2xx passes) and counts its error before our code sees the response:
//! - a failing non-2xx keeps Goose's own request error, which names the status ("429 Too Many
//!   Requests: /api/v1/calls [LIST]"): Goose ignores a `set_failure` on a failed request;
//! - a failing 2xx (a list answering 204) is failed with `set_failure`, so its request error is
//!   Locust's message (Goose logs each at info level: `-q` hides them);
//! - a passing non-2xx (404 on a forgotten call, 429 on a rapid list, 403 on a webhook) is
//!   passed with `set_success`: success and failure counts are right, but Goose's errors table
//!   still lists the original "404 Not Found: ..." once per such request.
//!
//! An answer whose status passes must also be whole and of the right kind, or the request fails
//! (with `set_failure`, or keeping Goose's error for a non-2xx) with the reason named:
//! - every body is read chunk by chunk and at most [`MAX_BODY`] of it (the largest answer the
//!   API gives, a full list, is about 12.5 KB): a longer one fails as "body too large (over 1
//!   MiB)" as soon as its `Content-Length` or its bytes say so, and the rest is never read;
//! - a body the connection cuts short fails as `"truncated body: <cause>"` ("end of file before
//!   message length reached"), one the request timeout (Goose's `--timeout`) cuts as "timeout";
//! - a 2xx from a JSON endpoint (everything but the webhooks, whose TwiML Twilio accepts under
//!   several types) must say it is JSON (`application/json` or `+json`), or it fails as "wrong
//!   content type: text/html" (or "none");
//! - a create's body must be JSON ("body is not JSON") with an `id` ("No call id in response").
//!
//! A request that gets no answer (refused, reset, timed out) keeps Goose's error ("error sending
//! request ...: operation timed out"). Every failure is counted in the run's failure tally under its
//! reason ([`crate::measure::failures`]).

use super::data::{self, weighted_choice, CALLS_PATH};
use super::rules::{Rule, PASS_CREATED, PASS_KNOWN_OR_NOT, PASS_OK, PASS_RAPID};
use super::{transaction, Shared};
use crate::measure::failures::{transport_reason, FailureTally};
use goose::goose::GooseResponse;
use goose::metrics::GooseRequestMetric;
use goose::prelude::*;
use rand::Rng;
use reqwest::Method;
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
pub const RAPID_HEALTH: &str = "/api/v1/health [RAPID]";

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

/// The most of an answer's body that is read; a longer body fails the request.
pub const MAX_BODY: usize = 1 << 20;
/// The failure of a body over [`MAX_BODY`].
pub const TOO_LARGE: &str = "body too large (over 1 MiB)";

/// What a passing 2xx answer's body must be, besides whole and at most [`MAX_BODY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    /// JSON, by its content type.
    Json,
    /// Anything (the webhooks' TwiML).
    Anything,
}

/// The rule each API request name is judged by.
pub(super) fn rule_of(name: &str) -> Option<Rule> {
    Some(match name {
        LIST | HEALTH => PASS_OK,
        CREATE => PASS_CREATED,
        UPDATE | GET => PASS_KNOWN_OR_NOT,
        RAPID | RAPID_HEALTH => PASS_RAPID,
        _ => return None,
    })
}

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
    let transaction = transaction(shared, "pick API task", |user, shared| {
        Box::pin(api_task(user, shared))
    });
    with_wait(
        scenario!("API user").register_transaction(transaction),
        API_WAIT,
        shared,
    )
}

/// Locust's `HighLoadUser`.
pub fn high_load_user(shared: &Arc<Shared>) -> Result<Scenario, GooseError> {
    let transaction = transaction(shared, "pick high-load task", |user, shared| {
        Box::pin(high_load_task(user, shared))
    });
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

async fn api_task(user: &mut GooseUser, shared: Arc<Shared>) -> TransactionResult {
    let f = &shared.measurements.failures;
    match draw_api_step(user) {
        ApiStep::List(path) => get(user, f, path, LIST, PASS_OK).await,
        ApiStep::Create(body) => create_call(user, f, body).await,
        ApiStep::Update(path, body) => update_call(user, f, &path, body).await,
        ApiStep::Get(path) => get(user, f, &path, GET, PASS_KNOWN_OR_NOT).await,
        ApiStep::Health => get(user, f, HEALTH_PATH, HEALTH, PASS_OK).await,
        ApiStep::Nothing => Ok(()),
    }
}

async fn high_load_task(user: &mut GooseUser, shared: Arc<Shared>) -> TransactionResult {
    let f = &shared.measurements.failures;
    let path = {
        let rng = &mut rand::rng();
        match weighted_choice(rng, &HIGH_LOAD_TASKS) {
            HighLoadTask::RapidList => (CALLS_PATH, RAPID),
            HighLoadTask::RapidHealth => (HEALTH_PATH, RAPID_HEALTH),
        }
    };
    get(user, f, path.0, path.1, PASS_RAPID).await
}

/// `POST /api/v1/calls`; a 201 keeps the new call's id for later updates and reads.
async fn create_call(user: &mut GooseUser, f: &FailureTally, body: String) -> TransactionResult {
    let builder = request_to(user, Method::POST, CALLS_PATH)
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
    let answer = match response {
        Ok(response) => read_answer(response, Expect::Json, true).await,
        Err(e) => return Err(request_failed(f, request, &e)),
    };
    let body = settle(user, f, &mut request, PASS_CREATED, answer)?;
    match created_id(&body) {
        Ok(id) => {
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
        Err(reason) => Err(fail(user, f, &mut request, reason.into())),
    }
}

/// `PATCH /api/v1/calls/{id}` of a call this user created (which the server may have forgotten).
async fn update_call(user: &mut GooseUser, f: &FailureTally, path: &str, body: String) -> TransactionResult {
    let builder = request_to(user, Method::PATCH, path)
        .header("content-type", "application/json")
        .body(body);
    let request = GooseRequest::builder()
        .name(UPDATE)
        .set_request_builder(builder)
        .build();
    let goose = user.request(request).await?;
    judge(user, f, goose, PASS_KNOWN_OR_NOT, Expect::Json).await
}

/// The `id` of a created call (a string, or a number as some servers send it), or why there is
/// none.
fn created_id(body: &[u8]) -> Result<String, &'static str> {
    #[derive(serde::Deserialize)]
    struct Created {
        id: serde_json::Value,
    }
    let no_id = "No call id in response";
    match serde_json::from_slice::<Created>(body) {
        Ok(created) => match created.id {
            serde_json::Value::String(s) if !s.is_empty() => Ok(s),
            serde_json::Value::Number(n) => Ok(n.to_string()),
            _ => Err(no_id),
        },
        // Well-formed JSON of another shape (no `id`, not an object).
        Err(e) if e.is_data() => Err(no_id),
        Err(_) => Err("body is not JSON"),
    }
}

/// A `GET` of a JSON endpoint named `name`, judged by `rule`.
async fn get(
    user: &mut GooseUser,
    f: &FailureTally,
    path: &str,
    name: &str,
    rule: Rule,
) -> TransactionResult {
    let request = GooseRequest::builder()
        .name(name)
        .set_request_builder(request_to(user, Method::GET, path))
        .build();
    let goose = user.request(request).await?;
    judge(user, f, goose, rule, Expect::Json).await
}

/// A request to `path` (absolute, with any query) on the user's host. Goose's own builder joins
/// the path to the host as text and reqwest parses that text again: two whole-URL parses per
/// request, a ninth of the generator's instructions in the API case (README "Performance").
/// Setting the path and query of the parsed host costs a fraction of one.
pub(super) fn request_to(user: &GooseUser, method: Method, path: &str) -> reqwest::RequestBuilder {
    let mut url = user.base_url.clone();
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    url.set_path(path);
    url.set_query(query);
    user.client.request(method, url)
}

/// Reads a response to the end (at most [`MAX_BODY`] of it; a whole body lets its connection
/// be reused) and applies a task's success rule: its statuses pass, and a
/// passing answer's body must be whole and as `expect`ed.
pub(super) async fn judge(
    user: &mut GooseUser,
    f: &FailureTally,
    goose: GooseResponse,
    rule: Rule,
    expect: Expect,
) -> TransactionResult {
    let GooseResponse {
        mut request,
        response,
    } = goose;
    let answer = match response {
        Ok(response) => read_answer(response, expect, false).await,
        Err(e) => return Err(request_failed(f, request, &e)),
    };
    settle(user, f, &mut request, rule, answer).map(drop)
}

/// Reads an answer's body, keeping it when `keep` (else only counting it), and checks its
/// content type as `expect`ed when its status is 2xx. `Err` is the reason the answer fails,
/// if its status passes.
async fn read_answer(
    response: reqwest::Response,
    expect: Expect,
    keep: bool,
) -> Result<Vec<u8>, Cow<'static, str>> {
    let kind = match (expect, response.status().is_success()) {
        (Expect::Json, true) => json_content_type(response.headers()),
        _ => Ok(()),
    };
    // A body that failed to arrive says more than its label.
    let body = read_body(response, keep).await?;
    kind.map(|()| body)
}

/// Reads a body chunk by chunk, at most [`MAX_BODY`] of it, so a huge or endless answer costs
/// no memory; returns it when `keep`, else nothing. Stopping early drops the connection.
async fn read_body(mut response: reqwest::Response, keep: bool) -> Result<Vec<u8>, Cow<'static, str>> {
    if response.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(Cow::Borrowed(TOO_LARGE));
    }
    let mut body = Vec::new();
    let mut read = 0;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                if read > MAX_BODY {
                    return Err(Cow::Borrowed(TOO_LARGE));
                }
                if keep {
                    body.extend_from_slice(&chunk);
                }
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(body_failure(&e)),
        }
    }
}

/// Why reading a body failed: the request timeout ("timeout"), or the body cut short, named by
/// its root cause ("truncated body: end of file before message length reached"). (Goose's
/// client decodes gzip, so reqwest calls every body error a decode error: the cause tells.)
fn body_failure(e: &reqwest::Error) -> Cow<'static, str> {
    let cause = transport_reason(e);
    if e.is_timeout() {
        Cow::Owned(cause)
    } else {
        Cow::Owned(format!("truncated body: {cause}"))
    }
}

/// `Ok` when the answer says it is JSON (`application/json`, or a `+json` type such as
/// `application/problem+json`), else the reason naming the type it has.
fn json_content_type(headers: &reqwest::header::HeaderMap) -> Result<(), Cow<'static, str>> {
    let Some(value) = headers.get(reqwest::header::CONTENT_TYPE) else {
        return Err(Cow::Borrowed("wrong content type: none"));
    };
    let essence = value
        .to_str()
        .unwrap_or("(not text)")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        return Ok(());
    }
    // The reason is a counter's key: keep a nonsense header from making a long one.
    let essence: String = essence.chars().take(60).collect();
    Err(Cow::Owned(format!("wrong content type: {essence}")))
}

/// Passes or fails a request that got an answer: by its status, then by its body (`answer`,
/// `Err` naming what is wrong with it). Returns the body of a passing answer.
fn settle<T>(
    user: &mut GooseUser,
    f: &FailureTally,
    request: &mut GooseRequestMetric,
    rule: Rule,
    answer: Result<T, Cow<'static, str>>,
) -> Result<T, Box<TransactionError>> {
    let status = request.status_code;
    if !rule.passes.contains(&status) {
        return Err(fail(user, f, request, (rule.names_failure)(status)));
    }
    let body = answer.map_err(|reason| fail(user, f, request, reason))?;
    if !request.success {
        // Goose failed a non-2xx status this task accepts. Clear its error so the correction
        // isn't counted as a second error.
        request.error.clear();
        user.set_success(request)?;
    }
    Ok(body)
}

/// A request that got no answer: Goose has recorded it; the console counts it by its cause; the
/// transaction fails.
fn request_failed(
    f: &FailureTally,
    request: GooseRequestMetric,
    e: &reqwest::Error,
) -> Box<TransactionError> {
    f.count_transport(e);
    Box::new(TransactionError::RequestFailed {
        raw_request: Box::new(request),
    })
}

/// Fails a request with Locust's `reason` (or ours, for a broken body): the request (unless
/// Goose already failed it, with its own message naming the status) and the transaction, whose
/// error this returns.
fn fail(
    user: &mut GooseUser,
    f: &FailureTally,
    request: &mut GooseRequestMetric,
    reason: Cow<'static, str>,
) -> Box<TransactionError> {
    f.count(&reason);
    if request.success {
        // Always an `Err` (the request's); the transaction's below carries the reason too.
        let _ = user.set_failure(&reason, request, None, None);
    }
    Box::new(TransactionError::Custom(reason.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
    use std::sync::LazyLock;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn labelled(value: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(v) = value {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(v));
        }
        headers
    }

    #[test]
    fn json_is_told_by_its_content_type() {
        let check = |v| json_content_type(&labelled(v)).map_err(|e| e.into_owned());
        assert_eq!(check(Some("application/json")), Ok(()));
        assert_eq!(check(Some("Application/JSON; charset=utf-8")), Ok(()));
        assert_eq!(check(Some("application/problem+json")), Ok(()));
        assert_eq!(
            check(Some("text/html; charset=utf-8")),
            Err("wrong content type: text/html".into())
        );
        assert_eq!(
            check(Some("text/plain")),
            Err("wrong content type: text/plain".into())
        );
        assert_eq!(check(None), Err("wrong content type: none".into()));
    }

    #[test]
    fn a_created_call_has_an_id_in_json() {
        assert_eq!(
            created_id(br#"{"id":"c-1","status":"ringing"}"#),
            Ok("c-1".into())
        );
        assert_eq!(created_id(br#"{"id":42}"#), Ok("42".into()));
        for no_id in [
            &br#"{"status":"ringing"}"#[..],
            br#"{"id":""}"#,
            b"[]",
            b"{\"id\":null}",
        ] {
            assert_eq!(created_id(no_id), Err("No call id in response"));
        }
        for not_json in [&b"<html></html>"[..], br#"{"id":"c-"#, b""] {
            assert_eq!(created_id(not_json), Err("body is not JSON"));
        }
    }

    /// Serves one connection: reads a request, writes `head`, then `body` until `endless` or
    /// once; then closes.
    async fn serve_once(head: &'static str, body: &'static [u8], endless: bool) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await;
            socket.write_all(head.as_bytes()).await.unwrap();
            while socket.write_all(body).await.is_ok() && endless {}
        });
        url
    }

    #[tokio::test]
    async fn an_endless_body_fails_at_the_cap_without_being_kept() {
        // Chunked, so only the bytes can tell: 64 KiB chunks, forever.
        static CHUNK: LazyLock<Vec<u8>> = LazyLock::new(|| {
            let mut chunk = format!("{:x}\r\n", 64 * 1024).into_bytes();
            chunk.extend(std::iter::repeat_n(b' ', 64 * 1024));
            chunk.extend_from_slice(b"\r\n");
            chunk
        });
        let url = serve_once(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            &CHUNK,
            true,
        )
        .await;
        let response = reqwest::get(url).await.unwrap();
        let e = read_body(response, true).await.unwrap_err();
        assert_eq!(e, TOO_LARGE);
    }

    #[tokio::test]
    async fn a_body_cut_short_is_named_truncated() {
        let url = serve_once(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n",
            br#"{"calls":["#,
            false,
        )
        .await;
        let response = reqwest::get(url).await.unwrap();
        let e = read_body(response, false).await.unwrap_err();
        assert_eq!(e, "truncated body: end of file before message length reached");
    }

    #[tokio::test]
    async fn an_announced_huge_body_fails_before_it_is_read() {
        let url = serve_once(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 67108864\r\n\r\n",
            b"{",
            false,
        )
        .await;
        let response = reqwest::get(url).await.unwrap();
        assert_eq!(read_body(response, true).await.unwrap_err(), TOO_LARGE);
    }
}
