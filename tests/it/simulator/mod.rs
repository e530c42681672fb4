//! The built-in Phone Agent simulator, driven over real HTTP and WebSocket traffic on loopback:
//! REST status codes and validation, list filters, webhooks, fault injection, stats, the `serve`
//! command, Media Streams calls (answers, marks, barge-in, slowdown, caps, drops, protocol
//! errors), and the original suite's WebSocket script as a client. What the modules share is
//! here: a time bound, a simulator started in this process, and an HTTP client aimed at it.

mod api;
mod caller;
mod faults;
mod media;
mod serve;
mod suite_script;
mod webhooks;

use phone_agent_load::simulator::{self, RunningSimulator, ServeOptions};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::future::Future;
use std::time::Duration;

/// Every test runs inside a time bound, so a bug is a failure, not a hang.
async fn bounded<T>(secs: u64, test: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), test)
        .await
        .expect("test took too long")
}

async fn sim_with(change: impl FnOnce(&mut ServeOptions)) -> RunningSimulator {
    let mut opts = ServeOptions::for_tests();
    change(&mut opts);
    simulator::start(opts).await.expect("simulator starts")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn new_call() -> Value {
    json!({
        "direction": "inbound",
        "caller_id": "+4915112345678",
        "callee_id": "+4915187654321",
        "industry": "handwerk",
        "metadata": {"test_run": "t1", "user_id": 7},
    })
}

/// One HTTP client (building one is slow) aimed at one simulator.
struct Api {
    client: reqwest::Client,
    base: String,
}

fn api(sim: &RunningSimulator) -> Api {
    Api {
        client: http(),
        base: sim.url(),
    }
}

async fn answer(r: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let r = r.send().await.expect("the simulator answers");
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

impl Api {
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        answer(self.client.get(format!("{}{path}", self.base))).await
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        answer(self.client.post(format!("{}{path}", self.base)).json(body)).await
    }

    async fn patch(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        answer(self.client.patch(format!("{}{path}", self.base)).json(body)).await
    }

    async fn form(&self, path: &str, form: &[(&str, String)]) -> reqwest::Response {
        let r = self.client.post(format!("{}{path}", self.base)).form(form);
        r.send().await.expect("the simulator answers")
    }
}

fn sid(prefix: &str, n: u32) -> String {
    format!("{prefix}{n:032x}")
}

fn status_form(call_status: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CallSid", sid("CA", 1)),
        ("AccountSid", sid("AC", 2)),
        ("CallStatus", call_status.to_string()),
        ("Direction", "inbound".to_string()),
        ("From", "+4915112345678".to_string()),
        ("To", "+4915187654321".to_string()),
        ("CallDuration", "12".to_string()),
    ]
}
