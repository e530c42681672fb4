//! The API, high-load and webhook scenarios under real Goose attacks on loopback: against the
//! built-in simulator (names, task mix, payload shapes, waits, 429 and 500 handling) and against
//! a stub answering each route with a status the test picks (the success rules for statuses the
//! simulator never sends).

use crate::harness;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use goose::config::GooseConfiguration;
use goose::metrics::GooseMetrics;
use goose::prelude::*;
use phone_agent_load::config::plan::{AiMode, Overrides, RunPlan};
use phone_agent_load::config::profile::Profile;
use phone_agent_load::scenarios::{api, webhooks, Shared};
use phone_agent_load::simulator::{self, RunningSimulator, ServeOptions};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::timeout;

/// Goose rows, "METHOD name".
const LIST: &str = "GET /api/v1/calls [LIST]";
const CREATE: &str = "POST /api/v1/calls [CREATE]";
const UPDATE: &str = "PATCH /api/v1/calls/{id} [UPDATE]";
const GET: &str = "GET /api/v1/calls/{id} [GET]";
const HEALTH: &str = "GET /api/v1/health";
const RAPID: &str = "GET /api/v1/calls [RAPID]";
const RAPID_HEALTH: &str = "GET /api/v1/health [RAPID]";
const STATUS: &str = "POST /webhooks/twilio/status";
const VOICE: &str = "POST /webhooks/twilio/voice";

/// Longest an attack may take, run time included.
const ATTACK_LIMIT: Duration = Duration::from_secs(15);

fn shared(no_wait: bool) -> Arc<Shared> {
    let profile = Profile::load("quick").expect("built-in profile");
    let plan = RunPlan::new(profile, &Overrides::default(), AiMode::Stream, no_wait).expect("plan");
    Arc::new(Shared {
        plan,
        measurements: Default::default(),
        utterances: Default::default(),
        unknown_events: Default::default(),
    })
}

/// Users of each class as Locust's weights share them out: one API, two webhook, one high-load.
const LOCUST_USERS: Users = Users {
    api: 1,
    webhook: 2,
    high_load: 1,
};

#[derive(Clone, Copy)]
struct Users {
    api: usize,
    webhook: usize,
    high_load: usize,
}

/// Runs `users` of the three classes against `host` for `secs`.
async fn attack(host: &str, users: Users, no_wait: bool, secs: usize) -> GooseMetrics {
    let shared = shared(no_wait);
    let attack = harness::quiet(
        GooseAttack::initialize_with_config(GooseConfiguration::default())
            .unwrap()
            .register_scenario(api::api_user(&shared).unwrap().set_weight(users.api).unwrap())
            .register_scenario(
                webhooks::webhook_user(&shared)
                    .unwrap()
                    .set_weight(users.webhook)
                    .unwrap(),
            )
            .register_scenario(
                api::high_load_user(&shared)
                    .unwrap()
                    .set_weight(users.high_load)
                    .unwrap(),
            ),
        host,
        users.api + users.webhook + users.high_load,
        secs,
    );
    timeout(ATTACK_LIMIT, attack.execute())
        .await
        .expect("the attack ends in time")
        .expect("the attack runs")
}

/// Draws (transaction runs) of the scenario registered at `index` (0 API, 1 webhook, 2 high-load).
fn draws(m: &GooseMetrics, index: usize) -> usize {
    m.transactions[index]
        .iter()
        .map(|t| t.success_count + t.fail_count)
        .sum()
}

/// Requests made under a row (0 when it never appeared).
fn made(m: &GooseMetrics, row: &str) -> usize {
    m.requests.get(row).map_or(0, |r| r.success_count + r.fail_count)
}

fn failed(m: &GooseMetrics, row: &str) -> usize {
    m.requests.get(row).map_or(0, |r| r.fail_count)
}

fn status_count(m: &GooseMetrics, row: &str, status: u16) -> usize {
    m.requests
        .get(row)
        .and_then(|r| r.status_code_counts.get(&status).copied())
        .unwrap_or(0)
}

/// How often a scenario's transaction failed with Locust's `reason`.
fn transaction_errors(m: &GooseMetrics, scenario: &str, reason: &str) -> usize {
    // Goose records a transaction error as its `Display`.
    let error = TransactionError::Custom(reason.to_string()).to_string();
    m.transaction_errors
        .values()
        .filter(|e| e.scenario_name == scenario && e.error == error)
        .map(|e| e.occurrences)
        .sum()
}

/// How often requests under `row` failed with the request error `error`.
fn request_errors(m: &GooseMetrics, row: &str, error: &str) -> usize {
    m.errors
        .values()
        .filter(|e| format!("{} {}", e.method, e.name) == row && e.error == error)
        .map(|e| e.occurrences)
        .sum()
}

/// `part` of `whole` is the share `p` a random draw gives, give or take four standard
/// deviations (a false alarm about once in 15,000 checks), with enough draws to tell.
fn assert_share(what: &str, part: usize, whole: usize, p: f64) {
    assert!(whole >= 50, "{what}: too few draws to judge ({whole})");
    let share = part as f64 / whole as f64;
    let sigma = (p * (1.0 - p) / whole as f64).sqrt();
    assert!(
        (share - p).abs() <= 4.0 * sigma,
        "{what}: {part} of {whole} = {share:.3}, expected {p:.3} ± {:.3}",
        4.0 * sigma
    );
}

// ---------------------------------------------------------------------------------------------
// Against the built-in simulator.

async fn simulator(opts: ServeOptions) -> RunningSimulator {
    timeout(Duration::from_secs(5), simulator::start(opts))
        .await
        .expect("simulator starts in time")
        .expect("simulator starts")
}

/// Runs the three scenarios against a simulator started with `opts`; returns Goose's metrics
/// and the simulator's stats.
async fn attack_simulator(
    opts: ServeOptions,
    users: Users,
    no_wait: bool,
    secs: usize,
) -> (GooseMetrics, Value) {
    let sim = simulator(opts).await;
    let metrics = attack(&sim.url(), users, no_wait, secs).await;
    let stats = sim.stats();
    timeout(Duration::from_secs(10), sim.shutdown())
        .await
        .expect("simulator stops");
    (metrics, stats)
}

fn counted(stats: &Value, pointer: &str) -> usize {
    stats.pointer(pointer).and_then(Value::as_u64).unwrap_or(0) as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_sees_every_request_well_formed_in_locust_mix() {
    // Most users are API users, so that its less frequent tasks get enough draws to judge even
    // on a busy machine.
    let users = Users {
        api: 4,
        webhook: 1,
        high_load: 1,
    };
    let (m, stats) = attack_simulator(ServeOptions::for_tests(), users, true, 4).await;

    // Every request name, and nothing failed.
    for row in [
        LIST,
        CREATE,
        UPDATE,
        GET,
        HEALTH,
        RAPID,
        RAPID_HEALTH,
        STATUS,
        VOICE,
    ] {
        assert!(made(&m, row) > 0, "{row} missing from {:?}", m.requests.keys());
        assert_eq!(failed(&m, row), 0, "{row} failed: {:?}", m.errors);
    }
    assert_eq!(m.requests.len(), 9, "{:?}", m.requests.keys());
    assert!(m.transaction_errors.is_empty(), "{:?}", m.transaction_errors);

    // The simulator received exactly these, all valid.
    assert_eq!(stats["validation_errors"], serde_json::json!({}), "{stats:#}");
    let received = |route: &str| counted(&stats, &format!("/requests/{}", route.replace('/', "~1")));
    assert_eq!(received("GET /api/v1/calls"), made(&m, LIST) + made(&m, RAPID));
    assert_eq!(received("POST /api/v1/calls"), made(&m, CREATE));
    assert_eq!(received("PATCH /api/v1/calls/{id}"), made(&m, UPDATE));
    assert_eq!(received("GET /api/v1/calls/{id}"), made(&m, GET));
    assert_eq!(
        received("GET /api/v1/health"),
        made(&m, HEALTH) + made(&m, RAPID_HEALTH)
    );
    assert_eq!(received("other"), 0);
    assert_eq!(counted(&stats, "/calls_created"), made(&m, CREATE));
    // Webhooks arrived as forms the simulator parsed, with valid SIDs and Twilio's statuses.
    assert_eq!(counted(&stats, "/webhooks/status"), made(&m, STATUS));
    assert_eq!(counted(&stats, "/webhooks/voice"), made(&m, VOICE));
    let statuses = stats["webhooks"]["call_status"].as_object().unwrap();
    for (status, n) in statuses {
        let ours = phone_agent_load::scenarios::data::TWILIO_CALL_STATUSES.contains(&status.as_str());
        assert!(ours || n == 0, "{status} sent {n} times");
    }

    // Locust's random choice by weight, per user class.
    let (list, create, update, get) = (made(&m, LIST), made(&m, CREATE), made(&m, UPDATE), made(&m, GET));
    assert_share("list among list+create", list, list + create, 10.0 / 15.0);
    assert_share("update among update+get", update, update + get, 3.0 / 5.0);
    assert_share(
        "create among create+update+get",
        create,
        create + update + get,
        5.0 / 10.0,
    );
    assert_share(
        "status among webhooks",
        made(&m, STATUS),
        made(&m, STATUS) + made(&m, VOICE),
        10.0 / 15.0,
    );
    // Every high-load draw makes one request: rapid lists, and the rest rapid health checks.
    let rapid = made(&m, RAPID);
    assert_share("rapid among high-load draws", rapid, draws(&m, 2), 5.0 / 6.0);
    assert_eq!(rapid + made(&m, RAPID_HEALTH), draws(&m, 2));
    let api_health = made(&m, HEALTH);
    assert_share(
        "health among API requests",
        api_health,
        list + create + update + get + api_health,
        1.0 / 21.0,
    );

    // The API user's list filters, each drawn independently; the rapid list is a plain
    // `GET /api/v1/calls`, so it adds none.
    let lists = list;
    assert_share(
        "industry filter",
        counted(&stats, "/list_filters/industry"),
        lists,
        0.5,
    );
    assert_share(
        "status filter",
        counted(&stats, "/list_filters/status"),
        lists,
        0.3,
    );
    assert_share("limit filter", counted(&stats, "/list_filters/limit"), lists, 0.2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_times_pace_each_user_class() {
    let (m, _) = attack_simulator(ServeOptions::for_tests(), LOCUST_USERS, false, 3).await;
    // 3 s at 0.5-2.0 s (mean 1.25 s), 0.1-0.5 s (mean 0.3 s, two users), 0.01-0.1 s (mean 55 ms).
    let (api, webhook, high_load) = (draws(&m, 0), draws(&m, 1), draws(&m, 2));
    assert!((1..=8).contains(&api), "API user drew {api} tasks");
    assert!((10..=32).contains(&webhook), "webhook users drew {webhook} tasks");
    assert!(
        (30..=75).contains(&high_load),
        "high-load user drew {high_load} tasks"
    );
    assert_eq!(m.requests.values().map(|r| r.fail_count).sum::<usize>(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_fail_api_requests_but_not_rapid_ones() {
    let opts = ServeOptions {
        rate_limit: Some(1.0),
        ..ServeOptions::for_tests()
    };
    let (m, stats) = attack_simulator(opts, LOCUST_USERS, true, 2).await;
    assert!(counted(&stats, "/status_codes/429") > 0, "{stats:#}");

    // The API user's 429s fail: Goose names the status, the transaction Locust's reason.
    for row in [LIST, CREATE] {
        assert!(status_count(&m, row, 429) > 0, "{row} was rate-limited");
        assert_eq!(
            failed(&m, row),
            status_count(&m, row, 429),
            "{row}: only the 429s fail"
        );
    }
    assert_eq!(
        request_errors(&m, LIST, "429 Too Many Requests: /api/v1/calls [LIST]"),
        status_count(&m, LIST, 429)
    );
    let api_429s: usize = [LIST, CREATE, UPDATE, GET]
        .iter()
        .map(|r| status_count(&m, r, 429))
        .sum();
    let rate_limited = transaction_errors(&m, "API user", "Rate limited");
    assert!(
        (api_429s..=api_429s + status_count(&m, HEALTH, 429)).contains(&rate_limited),
        "{rate_limited} 'Rate limited' for {api_429s} API 429s"
    );
    assert_eq!(failed(&m, HEALTH), status_count(&m, HEALTH, 429));
    assert!(transaction_errors(&m, "Webhook user", "Rate limited") > 0);
    assert_eq!(
        failed(&m, STATUS) + failed(&m, VOICE),
        status_count(&m, STATUS, 429) + status_count(&m, VOICE, 429)
    );

    // The high-load user's rapid lists and health checks pass either way.
    assert!(status_count(&m, RAPID, 429) > 0);
    assert_eq!(failed(&m, RAPID), 0);
    assert_eq!(failed(&m, RAPID_HEALTH), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_fail_every_request_naming_the_status() {
    let opts = ServeOptions {
        error_rate: 1.0,
        ..ServeOptions::for_tests()
    };
    let (m, stats) = attack_simulator(opts, LOCUST_USERS, true, 2).await;
    for row in [LIST, CREATE, HEALTH, RAPID, RAPID_HEALTH, STATUS, VOICE] {
        assert!(made(&m, row) > 0, "{row}");
        assert_eq!(failed(&m, row), made(&m, row), "{row}");
        assert_eq!(status_count(&m, row, 500), made(&m, row), "{row}");
    }
    assert!(request_errors(&m, CREATE, "500 Internal Server Error: /api/v1/calls [CREATE]") > 0);
    for (scenario, reason) in [
        ("API user", "Unexpected status 500"),
        ("Webhook user", "Unexpected status 500"),
        ("High-load user", "Unexpected status: 500"),
    ] {
        assert!(transaction_errors(&m, scenario, reason) > 0, "{scenario}");
    }
    // No call was ever created, so no update or read was tried.
    assert_eq!(made(&m, UPDATE) + made(&m, GET), 0);
    let total: usize = m.requests.values().map(|r| r.fail_count).sum();
    assert_eq!(counted(&stats, "/injected_errors"), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_updates_of_forgotten_calls_pass_as_404() {
    // A store of (about) one call per shard forgets most of the 50 ids a user keeps.
    let opts = ServeOptions {
        max_calls: 1,
        ..ServeOptions::for_tests()
    };
    let (m, _) = attack_simulator(opts, LOCUST_USERS, true, 2).await;
    for row in [UPDATE, GET] {
        assert!(status_count(&m, row, 404) > 0, "{row} saw 404s");
        assert_eq!(failed(&m, row), 0, "{row}: 404 passes");
    }
    assert!(m.transaction_errors.is_empty(), "{:?}", m.transaction_errors);
}

// ---------------------------------------------------------------------------------------------
// A stub Phone Agent answering each route with the status the test picks, and noting what the
// users sent that the simulator does not report.

#[derive(Clone, Copy)]
struct Answers {
    create: (u16, &'static str),
    item: u16,
    list: u16,
    health: u16,
    webhook: u16,
}

#[derive(Default)]
struct Seen {
    user_ids: HashSet<u64>,
    call_sids: HashSet<String>,
    account_sids: HashSet<String>,
}

struct Stub {
    answers: Answers,
    seen: Mutex<Seen>,
}

/// A body of the wrong type is refused with 415, which no task accepts.
async fn answer(State(stub): State<Arc<Stub>>, request: Request) -> Response {
    let a = stub.answers;
    let method = request.method().as_str().to_string();
    let path = request.uri().path().to_string();
    let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
    let is = |wanted: &str| content_type.as_ref().is_some_and(|c| c == wanted);
    let body = axum::body::to_bytes(request.into_body(), 1 << 16)
        .await
        .unwrap_or_default();
    let (status, text) = match (method.as_str(), path.as_str()) {
        ("POST", "/api/v1/calls") if is("application/json") => {
            let call: Value = serde_json::from_slice(&body).unwrap_or_default();
            if let Some(id) = call.pointer("/metadata/user_id").and_then(Value::as_u64) {
                stub.seen.lock().unwrap().user_ids.insert(id);
            }
            a.create
        }
        ("PATCH", p) if p.starts_with("/api/v1/calls/") && is("application/json") => (a.item, "{}"),
        ("GET", p) if p.starts_with("/api/v1/calls/") => (a.item, "{}"),
        ("GET", "/api/v1/calls") => (a.list, "[]"),
        ("GET", "/api/v1/health") => (a.health, r#"{"status":"ok"}"#),
        ("POST", "/webhooks/twilio/status" | "/webhooks/twilio/voice")
            if is("application/x-www-form-urlencoded") =>
        {
            let mut seen = stub.seen.lock().unwrap();
            for (k, v) in url::form_urlencoded::parse(&body) {
                match &*k {
                    "CallSid" => seen.call_sids.insert(v.into_owned()),
                    "AccountSid" => seen.account_sids.insert(v.into_owned()),
                    _ => false,
                };
            }
            (a.webhook, "")
        }
        _ => (415, ""),
    };
    // JSON endpoints must say so: the scenarios fail a 2xx labelled otherwise.
    (
        StatusCode::from_u16(status).unwrap(),
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response()
}

/// Attacks a stub answering `answers` on a free loopback port; returns Goose's metrics and what
/// the stub saw.
async fn attack_stub(answers: Answers) -> (GooseMetrics, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stub = Arc::new(Stub {
        answers,
        seen: Mutex::default(),
    });
    let app = axum::Router::new().fallback(answer).with_state(stub.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    let metrics = attack(&url, LOCUST_USERS, true, 2).await;
    let _ = stop.send(());
    timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let seen = std::mem::take(&mut *stub.seen.lock().unwrap());
    (metrics, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_passes_for_known_ids_and_refusals_pass_for_webhooks() {
    let (m, seen) = attack_stub(Answers {
        create: (201, r#"{"id":"c-1","status":"ringing"}"#),
        item: 404,
        list: 200,
        health: 200,
        webhook: 403,
    })
    .await;
    for row in [UPDATE, GET] {
        assert!(status_count(&m, row, 404) > 0, "{row} got 404s");
        assert_eq!(failed(&m, row), 0, "404 passes for {row}");
    }
    for row in [STATUS, VOICE] {
        assert!(status_count(&m, row, 403) > 0, "{row} got 403s");
        assert_eq!(failed(&m, row), 0, "403 passes for {row}");
    }
    assert!(m.transaction_errors.is_empty(), "{:?}", m.transaction_errors);
    for row in [LIST, CREATE, HEALTH, RAPID, RAPID_HEALTH] {
        assert!(made(&m, row) > 0 && failed(&m, row) == 0, "{row}");
    }
    // One API user (one of Goose's users 0-3) made every call; two webhook users, 20 calls each.
    assert_eq!(seen.user_ids.len(), 1, "{:?}", seen.user_ids);
    assert!(seen.user_ids.iter().all(|&id| id < 4), "{:?}", seen.user_ids);
    assert_eq!(seen.account_sids.len(), 2, "{:?}", seen.account_sids);
    assert_eq!(seen.call_sids.len(), 2 * webhooks::CALLS_PER_USER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_outside_a_task_rules_fail_with_locust_messages() {
    let (m, _) = attack_stub(Answers {
        create: (422, r#"{"detail":"caller_id and callee_id must differ"}"#),
        item: 200,
        list: 204,
        health: 429,
        webhook: 500,
    })
    .await;
    // A 422 create: Goose's request error names the status; the transaction says why.
    assert_eq!(failed(&m, CREATE), made(&m, CREATE));
    assert!(request_errors(&m, CREATE, "422 Unprocessable Entity: /api/v1/calls [CREATE]") > 0);
    assert!(transaction_errors(&m, "API user", "Validation error") > 0);
    // No call was created, so no update or read was tried.
    assert_eq!(made(&m, UPDATE) + made(&m, GET), 0);
    // A 204 list is a 2xx Goose passed: set_failure fails it with the reason.
    assert!(failed(&m, LIST) > 0 && failed(&m, LIST) == made(&m, LIST));
    assert_eq!(
        request_errors(&m, LIST, "Unexpected status 204"),
        failed(&m, LIST)
    );
    assert!(failed(&m, RAPID) > 0 && failed(&m, RAPID) == made(&m, RAPID));
    assert!(transaction_errors(&m, "High-load user", "Unexpected status: 204") > 0);
    // A rate-limited health check fails the API user; the high-load user's rapid one passes.
    assert_eq!(failed(&m, HEALTH), made(&m, HEALTH));
    assert!(transaction_errors(&m, "API user", "Rate limited") > 0);
    assert!(made(&m, RAPID_HEALTH) > 0 && failed(&m, RAPID_HEALTH) == 0);
    assert_eq!(failed(&m, STATUS), made(&m, STATUS));
    assert!(transaction_errors(&m, "Webhook user", "Unexpected status 500") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_without_an_id_fails_and_keeps_nothing() {
    let (m, _) = attack_stub(Answers {
        create: (201, r#"{"status":"ringing"}"#),
        item: 200,
        list: 200,
        health: 200,
        webhook: 200,
    })
    .await;
    assert!(made(&m, CREATE) > 0);
    assert_eq!(
        request_errors(&m, CREATE, "No call id in response"),
        made(&m, CREATE)
    );
    assert_eq!(made(&m, UPDATE) + made(&m, GET), 0, "no id, no update or read");
    assert_eq!(failed(&m, LIST) + failed(&m, STATUS) + failed(&m, VOICE), 0);
}
