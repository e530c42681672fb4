//! The built-in Phone Agent simulator, driven over real HTTP and WebSocket traffic on loopback:
//! REST status codes and validation, list filters, webhooks, fault injection, stats, and
//! Media Streams calls (answers, marks, barge-in, slowdown, caps, drops, protocol errors).

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use phone_agent_load::protocol::mulaw;
use phone_agent_load::protocol::twilio::{Event, Mark, MediaFormat, Start, Stop};
use phone_agent_load::simulator::{self, RunningSimulator, ServeOptions};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

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

#[tokio::test]
async fn calls_are_created_read_updated_and_validated() {
    bounded(10, async {
        let sim = sim_with(|_| {}).await;
        let api = api(&sim);
        let (status, health) = api.get("/api/v1/health").await;
        assert_eq!((status, health), (StatusCode::OK, json!({"status": "ok"})));

        let (status, call) = api.post("/api/v1/calls", &new_call()).await;
        assert_eq!(status, StatusCode::CREATED, "{call}");
        let id = call["id"].as_str().unwrap().to_string();
        assert_eq!(id.len(), 36);
        assert_eq!(call["status"], "ringing");
        assert_eq!(call["industry"], "handwerk");
        assert_eq!(call["caller_id"], "+4915112345678");
        assert_eq!(call["metadata"], json!({"test_run": "t1", "user_id": 7}));
        assert!(call["created_at"].as_str().unwrap().ends_with('Z'));

        let (status, got) = api.get(&format!("/api/v1/calls/{id}")).await;
        assert_eq!((status, &got), (StatusCode::OK, &call));
        let (status, updated) = api
            .patch(
                &format!("/api/v1/calls/{id}"),
                &json!({"status": "completed", "duration_seconds": 93}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(updated["status"], "completed");
        assert_eq!(updated["duration_seconds"].as_f64(), Some(93.0));

        // Unknown ids, well-formed or not.
        let unknown = "00000000-0000-4000-8000-000000000000";
        assert_eq!(
            api.get(&format!("/api/v1/calls/{unknown}")).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(api.get("/api/v1/calls/nope").await.0, StatusCode::NOT_FOUND);
        let body = json!({"status": "failed"});
        assert_eq!(
            api.patch(&format!("/api/v1/calls/{unknown}"), &body).await.0,
            StatusCode::NOT_FOUND
        );
        // A bad update is 422 even for a known call.
        let (status, err) = api
            .patch(&format!("/api/v1/calls/{id}"), &json!({"status": "done"}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            err["detail"]
                .as_str()
                .unwrap()
                .starts_with("status must be one of"),
            "{err}"
        );
        let (status, _) = api
            .patch(&format!("/api/v1/calls/{id}"), &json!({"duration_seconds": -3}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

        let invalid = |change: &dyn Fn(&mut Value)| {
            let mut body = new_call();
            change(&mut body);
            body
        };
        let cases: [(Value, &str); 5] = [
            (
                invalid(&|b| b["direction"] = json!("sideways")),
                "direction must be",
            ),
            (
                invalid(&|b| drop(b.as_object_mut().unwrap().remove("caller_id"))),
                "caller_id is required",
            ),
            (
                invalid(&|b| b["callee_id"] = b["caller_id"].clone()),
                "caller_id and callee_id must differ",
            ),
            (
                invalid(&|b| b["industry"] = json!("bakery")),
                "industry must be one of",
            ),
            (
                invalid(&|b| b["caller_id"] = json!("0151 123")),
                "caller_id must be an E.164",
            ),
        ];
        for (body, reason) in &cases {
            let (status, err) = api.post("/api/v1/calls", body).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert!(
                err["detail"].as_str().unwrap().starts_with(reason),
                "{err} vs {reason}"
            );
        }
        let not_json = api
            .client
            .post(format!("{}/api/v1/calls", sim.url()))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(not_json.status(), StatusCode::UNPROCESSABLE_ENTITY);

        let stats = sim.stats();
        assert_eq!(stats["requests"]["POST /api/v1/calls"], 7);
        assert_eq!(stats["requests"]["GET /api/v1/calls/{id}"], 3);
        assert_eq!(stats["requests"]["PATCH /api/v1/calls/{id}"], 4);
        assert_eq!(stats["requests"]["GET /api/v1/health"], 1);
        assert_eq!(stats["status_codes"]["201"], 1);
        assert_eq!(stats["status_codes"]["404"], 3);
        assert_eq!(stats["status_codes"]["422"], 8);
        assert_eq!(
            stats["validation_errors"]["caller_id and callee_id must differ"],
            1
        );
        assert_eq!(stats["validation_errors"]["body must be valid JSON"], 1);
        assert_eq!(stats["calls_stored"], 1);
        // No fault was asked for, so none was injected.
        assert_eq!(
            stats["faults"],
            json!({
                "stalled": 0,
                "stalls_cut_at_once": 0,
                "garbage": {"not-json": 0, "wrong-type": 0, "truncated": 0, "huge": 0},
                "ws_garbage": 0,
                "ws_oversized": 0,
                "ai_muted": 0,
            })
        );
        // The stats endpoint serves the same counters and doesn't count itself.
        let (_, served) = api.get("/_sim/stats").await;
        assert_eq!(served["requests"], stats["requests"]);
        assert_eq!(served["status_codes"], stats["status_codes"]);
        assert_eq!(served["faults"], stats["faults"]);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn list_filters_and_limits() {
    bounded(10, async {
        let sim = sim_with(|_| {}).await;
        let api = api(&sim);
        let industries = ["gesundheit", "handwerk", "gastro", "freie_berufe"];
        let mut ids = Vec::new();
        for i in 0..60 {
            let mut body = new_call();
            body["industry"] = json!(industries[i % 4]);
            ids.push(api.post("/api/v1/calls", &body).await.1["id"].clone());
        }
        for id in &ids[..5] {
            let path = format!("/api/v1/calls/{}", id.as_str().unwrap());
            api.patch(&path, &json!({"status": "failed"})).await;
        }

        let (status, all) = api.get("/api/v1/calls").await;
        assert_eq!(status, StatusCode::OK);
        let all = all.as_array().unwrap();
        assert_eq!(all.len(), 50, "default limit");
        assert_eq!(all[0]["id"], ids[59], "newest first");

        let (_, gastro) = api.get("/api/v1/calls?industry=gastro&limit=100").await;
        let gastro = gastro.as_array().unwrap();
        assert_eq!(gastro.len(), 15);
        assert!(gastro.iter().all(|c| c["industry"] == "gastro"));

        let (_, failed) = api.get("/api/v1/calls?status=failed").await;
        assert_eq!(failed.as_array().unwrap().len(), 5);
        let (_, both) = api.get("/api/v1/calls?status=failed&industry=gesundheit").await;
        assert_eq!(both.as_array().unwrap().len(), 2); // calls 0 and 4
        let (_, ten) = api.get("/api/v1/calls?limit=10").await;
        assert_eq!(ten.as_array().unwrap().len(), 10);

        for bad in [
            "limit=0",
            "limit=101",
            "limit=ten",
            "industry=bakery",
            "status=lost",
        ] {
            let (status, err) = api.get(&format!("/api/v1/calls?{bad}")).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {err}");
        }
        let stats = sim.stats();
        assert_eq!(stats["list_filters"]["industry"], 2);
        assert_eq!(stats["list_filters"]["status"], 2);
        assert_eq!(stats["list_filters"]["limit"], 2);
        assert_eq!(
            stats["validation_errors"]["limit must be an integer from 1 to 100"],
            3
        );
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn old_calls_are_evicted_beyond_the_bound() {
    bounded(10, async {
        let sim = sim_with(|o| o.max_calls = 16).await;
        let api = api(&sim);
        let mut ids = Vec::new();
        for _ in 0..200 {
            ids.push(api.post("/api/v1/calls", &new_call()).await.1["id"].clone());
        }
        assert_eq!(sim.stats()["calls_stored"], 16);
        assert_eq!(sim.stats()["calls_created"], 200);
        let newest = format!("/api/v1/calls/{}", ids[199].as_str().unwrap());
        assert_eq!(api.get(&newest).await.0, StatusCode::OK);
        let mut missing = 0;
        for id in &ids[..100] {
            let path = format!("/api/v1/calls/{}", id.as_str().unwrap());
            missing += (api.get(&path).await.0 == StatusCode::NOT_FOUND) as usize;
        }
        assert!(missing >= 95, "{missing} of the oldest 100 evicted");
        sim.shutdown().await;
    })
    .await;
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

#[tokio::test]
async fn webhooks_validate_and_answer_twiml() {
    bounded(10, async {
        let sim = sim_with(|_| {}).await;
        let api = api(&sim);
        for status in ["ringing", "ringing", "completed", "no-answer"] {
            let r = api.form("/webhooks/twilio/status", &status_form(status)).await;
            assert_eq!(r.status(), StatusCode::OK);
        }
        let mut bad = status_form("ringing");
        bad[0].1 = "CA123".into();
        let r = api.form("/webhooks/twilio/status", &bad).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["detail"], "CallSid must be CA followed by 32 hex digits");
        let r = api
            .form("/webhooks/twilio/status", &status_form("exploded"))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let mut bad = status_form("ringing");
        bad[1].1 = sid("CA", 2);
        assert_eq!(
            api.form("/webhooks/twilio/status", &bad).await.status(),
            StatusCode::BAD_REQUEST
        );

        let voice = [
            ("CallSid", sid("CA", 9)),
            ("AccountSid", sid("AC", 2)),
            ("From", "+4915112345678".into()),
            ("To", "+4915187654321".into()),
            ("Direction", "inbound".into()),
        ];
        let r = api.form("/webhooks/twilio/voice", &voice).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "application/xml");
        let twiml = r.text().await.unwrap();
        let url = format!("ws://{}/webhooks/twilio/media/{}", sim.addr(), sid("CA", 9));
        assert!(
            twiml.contains(&format!(
                r#"<Response><Connect><Stream url="{url}"/></Connect></Response>"#
            )),
            "{twiml}"
        );

        let stats = sim.stats();
        assert_eq!(stats["webhooks"]["status"], 4);
        assert_eq!(stats["webhooks"]["voice"], 1);
        assert_eq!(stats["webhooks"]["call_status"]["ringing"], 2);
        assert_eq!(stats["webhooks"]["call_status"]["no-answer"], 1);
        assert_eq!(
            stats["validation_errors"]["CallStatus is not a Twilio call status"],
            1
        );
        assert_eq!(stats["status_codes"]["400"], 3);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn rate_limit_answers_429_past_the_limit() {
    bounded(10, async {
        let sim = sim_with(|o| o.rate_limit = Some(10.0)).await;
        let api = api(&sim);
        let mut codes = Vec::new();
        let mut retry_after = None;
        for _ in 0..30 {
            let r = api
                .client
                .get(format!("{}/api/v1/health", sim.url()))
                .send()
                .await
                .unwrap();
            if r.status() == StatusCode::TOO_MANY_REQUESTS {
                retry_after = r.headers().get("retry-after").cloned();
            }
            codes.push(r.status());
        }
        let passed = codes.iter().filter(|c| **c == StatusCode::OK).count();
        let limited = codes
            .iter()
            .filter(|c| **c == StatusCode::TOO_MANY_REQUESTS)
            .count();
        assert_eq!(passed + limited, 30);
        // A burst of 10, plus whatever refilled while the 30 requests ran.
        assert!((10..=14).contains(&passed), "{passed} passed");
        assert_eq!(retry_after.unwrap(), "1");
        assert_eq!(sim.stats()["rate_limited"], limited);
        // The stats endpoint is never limited.
        assert_eq!(api.get("/_sim/stats").await.0, StatusCode::OK);
        // The bucket refills.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(api.get("/api/v1/health").await.0, StatusCode::OK);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn error_rate_injects_that_share_of_500s() {
    bounded(20, async {
        let sim = sim_with(|o| o.error_rate = 0.3).await;
        let client = http();
        let mut errors = 0;
        for _ in 0..400 {
            let r = client
                .get(format!("{}/api/v1/health", sim.url()))
                .send()
                .await
                .unwrap();
            if r.status() == StatusCode::INTERNAL_SERVER_ERROR {
                let body: Value = r.json().await.unwrap();
                assert!(body["detail"].as_str().unwrap().contains("injected"));
                errors += 1;
            } else {
                assert_eq!(r.status(), StatusCode::OK);
            }
        }
        // 400 draws of p = 0.3: mean 120, sd 9.2; 80..=160 is over 4 sd each way.
        assert!((80..=160).contains(&errors), "{errors} errors");
        assert_eq!(sim.stats()["injected_errors"], errors);
        // An injected error happens before the handler: no call is created.
        let sim_all = sim_with(|o| o.error_rate = 1.0).await;
        let api_all = api(&sim_all);
        assert_eq!(
            api_all.post("/api/v1/calls", &new_call()).await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(sim_all.stats()["calls_stored"], 0);
        sim.shutdown().await;
        sim_all.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn garbage_answers_are_counted_by_the_kind_sent() {
    bounded(20, async {
        let sim = sim_with(|o| {
            o.garbage_rate = 0.5;
            o.garbage_kind = simulator::GarbageKind::WrongType;
        })
        .await;
        let client = http();
        let mut garbage = 0;
        for _ in 0..40 {
            let r = client
                .get(format!("{}/api/v1/health", sim.url()))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
            if content_type.starts_with("text/plain") {
                garbage += 1;
            } else {
                assert_eq!(content_type, "application/json");
            }
        }
        // 40 draws of p = 0.5: both kinds of answer, all but surely.
        assert!((5..=35).contains(&garbage), "{garbage} garbage answers");
        let stats = sim.stats();
        // Only the answers really replaced count, under the kind sent; a 200 all the same.
        assert_eq!(
            stats["faults"]["garbage"],
            json!({"not-json": 0, "wrong-type": garbage, "truncated": 0, "huge": 0})
        );
        assert_eq!(stats["status_codes"]["200"], 40);
        assert_eq!(stats["faults"]["stalled"], 0);
        sim.shutdown().await;
    })
    .await;
}

async fn time_health(sim: &RunningSimulator, client: &reqwest::Client) -> Duration {
    let t = Instant::now();
    let r = client
        .get(format!("{}/api/v1/health", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    t.elapsed()
}

#[tokio::test]
async fn added_latency_and_jitter_are_measurable() {
    bounded(15, async {
        let fast = sim_with(|_| {}).await;
        let slow = sim_with(|o| o.api_latency_ms = 150).await;
        let jittery = sim_with(|o| o.api_jitter_ms = 200).await;
        let client = http();
        // Connect first. Upper bounds leave a busy machine 150-200 ms of slack; the lower ones
        // are exact.
        time_health(&fast, &client).await;
        assert!(time_health(&fast, &client).await < Duration::from_millis(150));
        for _ in 0..3 {
            let t = time_health(&slow, &client).await;
            assert!(
                t >= Duration::from_millis(150) && t < Duration::from_millis(400),
                "{t:?}"
            );
        }
        let mut times = Vec::new();
        for _ in 0..12 {
            times.push(time_health(&jittery, &client).await);
        }
        let (min, max) = (times.iter().min().unwrap(), times.iter().max().unwrap());
        assert!(*max <= Duration::from_millis(400), "{max:?}");
        assert!(
            *max - *min > Duration::from_millis(50),
            "jitter spreads answers: {times:?}"
        );
        // Latency applies to webhooks too.
        let t = Instant::now();
        api(&slow)
            .form("/webhooks/twilio/status", &status_form("ringing"))
            .await;
        assert!(t.elapsed() >= Duration::from_millis(150));
        fast.shutdown().await;
        slow.shutdown().await;
        jittery.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn leak_retains_memory_per_call() {
    bounded(10, async {
        let sim = sim_with(|o| o.leak_kb_per_call = 1024).await;
        let api = api(&sim);
        let before = sim.stats()["process"]["rss_bytes"].as_u64();
        for _ in 0..32 {
            api.post("/api/v1/calls", &new_call()).await;
        }
        let stats = sim.stats();
        assert_eq!(stats["process"]["leaked_bytes"], 32 * 1024 * 1024);
        // The Prometheus endpoint (for --server-metrics-url) says the same.
        let metrics = api
            .client
            .get(format!("{}/metrics", api.base))
            .send()
            .await
            .unwrap();
        let metrics = metrics.text().await.unwrap();
        assert!(metrics.contains("\nsim_leaked_bytes 33554432\n"), "{metrics}");
        assert!(metrics.contains("\nprocess_resident_memory_bytes "), "{metrics}");
        if let (Some(before), Some(after)) = (before, stats["process"]["rss_bytes"].as_u64()) {
            assert!(after >= before + 16 * 1024 * 1024, "RSS {before} -> {after}");
        }
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn serve_on_a_port_in_use_says_so() {
    bounded(5, async {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let opts = ServeOptions {
            port,
            ..ServeOptions::for_tests()
        };
        let err = simulator::serve(opts).await.unwrap_err().to_string();
        assert!(
            err.contains(&format!("127.0.0.1:{port} is already in use")),
            "{err}"
        );
        let bad = ServeOptions {
            error_rate: 2.0,
            ..ServeOptions::for_tests()
        };
        assert!(simulator::start(bad)
            .await
            .err()
            .unwrap()
            .to_string()
            .contains("--error-rate"));
    })
    .await;
}

// ---- Media Streams ----

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn open(addr: SocketAddr) -> Result<Ws, tungstenite::Error> {
    let url = format!("ws://{addr}/webhooks/twilio/media/{}", sid("CA", 5));
    tokio_tungstenite::connect_async(url).await.map(|(ws, _)| ws)
}

/// A 440 Hz tone, loud enough to be speech, in 20 ms mu-law frames.
fn tone(frames: usize) -> Vec<Vec<u8>> {
    let samples: Vec<i16> = (0..frames * 160)
        .map(|i| (10_000.0 * (std::f64::consts::TAU * 440.0 * i as f64 / 8000.0).sin()) as i16)
        .collect();
    mulaw::encode_all(&samples)
        .chunks(160)
        .map(<[u8]>::to_vec)
        .collect()
}

/// Twilio's side of one call.
struct Caller {
    ws: Ws,
    seq: u64,
    chunk: u64,
    stream_sid: String,
}

/// How a connection ended, seen from the caller.
#[derive(Debug, PartialEq)]
enum Closed {
    /// With a close frame (code, reason).
    Frame(Option<(CloseCode, String)>),
    /// The TCP connection just ended.
    Abruptly,
}

/// What the agent sent back while the caller talked.
#[derive(Debug, Default)]
struct Heard {
    media: usize,
    marks: Vec<String>,
    clears: usize,
    first_media: Option<Instant>,
    mark_at: Option<Instant>,
    clear_at: Option<Instant>,
    speech_end: Option<Instant>,
    closed: Option<Closed>,
}

impl Caller {
    /// Connects and sends `connected` and `start`.
    async fn connect(addr: SocketAddr) -> Caller {
        let mut caller = Caller {
            ws: open(addr).await.expect("upgrade accepted"),
            seq: 0,
            chunk: 0,
            stream_sid: sid("MZ", 3),
        };
        caller
            .text(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.into())
            .await;
        caller.seq += 1;
        let start = Event::Start {
            sequence_number: caller.seq,
            start: Start {
                account_sid: sid("AC", 2),
                stream_sid: caller.stream_sid.clone(),
                call_sid: sid("CA", 5),
                tracks: vec!["inbound".into()],
                custom_parameters: Default::default(),
                media_format: MediaFormat::default(),
            },
            stream_sid: caller.stream_sid.clone(),
        };
        caller.text(start.to_json()).await;
        caller
    }

    async fn text(&mut self, text: String) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    async fn frame(&mut self, mulaw: &[u8]) {
        self.seq += 1;
        self.chunk += 1;
        let payload = base64::engine::general_purpose::STANDARD.encode(mulaw);
        let text = json!({
            "event": "media",
            "sequenceNumber": self.seq.to_string(),
            "media": {"track": "inbound", "chunk": self.chunk.to_string(),
                      "timestamp": ((self.chunk - 1) * 20).to_string(), "payload": payload},
            "streamSid": self.stream_sid,
        });
        self.text(text.to_string()).await;
    }

    async fn mark(&mut self, name: &str) {
        self.seq += 1;
        let mark = Event::Mark {
            sequence_number: Some(self.seq),
            mark: Mark { name: name.into() },
            stream_sid: self.stream_sid.clone(),
        };
        self.text(mark.to_json()).await;
    }

    async fn stop(&mut self) {
        self.seq += 1;
        let stop = Event::Stop {
            sequence_number: self.seq,
            stop: Stop {
                account_sid: sid("AC", 2),
                call_sid: sid("CA", 5),
            },
            stream_sid: self.stream_sid.clone(),
        };
        self.text(stop.to_json()).await;
    }

    /// Sends `speech`, then silence, a frame every 20 ms, noting what comes back, until
    /// `done` says so, the connection closes, or `limit` passes.
    async fn talk(&mut self, speech: &[Vec<u8>], limit: Duration, done: impl Fn(&Heard) -> bool) -> Heard {
        let mut heard = Heard::default();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let (mut sent, end) = (0, Instant::now() + limit);
        while !done(&heard) && heard.closed.is_none() && Instant::now() < end {
            tokio::select! {
                _ = tick.tick() => {
                    match speech.get(sent) {
                        Some(f) => self.frame(f).await,
                        None => self.frame(&[mulaw::SILENCE; 160]).await,
                    }
                    sent += 1;
                    if sent == speech.len() {
                        heard.speech_end = Some(Instant::now());
                    }
                }
                msg = self.ws.next() => hear(&mut heard, msg),
            }
        }
        heard
    }
}

fn hear(heard: &mut Heard, msg: Option<Result<Message, tungstenite::Error>>) {
    let text = match msg {
        Some(Ok(Message::Text(t))) => t,
        Some(Ok(Message::Close(frame))) => {
            heard.closed = Some(Closed::Frame(frame.map(|f| (f.code, f.reason.to_string()))));
            return;
        }
        Some(Ok(_)) => return,
        Some(Err(_)) | None => return heard.closed = Some(Closed::Abruptly),
    };
    match Event::parse(&text).expect("the agent speaks the protocol") {
        Event::Media { media, .. } => {
            let audio = base64::engine::general_purpose::STANDARD
                .decode(media.payload)
                .unwrap();
            assert_eq!(audio.len(), 160);
            heard.media += 1;
            heard.first_media.get_or_insert_with(Instant::now);
        }
        Event::Mark { mark, .. } => {
            heard.marks.push(mark.name);
            heard.mark_at = Some(Instant::now());
        }
        Event::Clear { .. } => {
            heard.clears += 1;
            heard.clear_at = Some(Instant::now());
        }
        other => panic!("the agent sent {other:?}"),
    }
}

/// Reads until the connection ends.
async fn closed(ws: &mut Ws) -> Closed {
    let mut heard = Heard::default();
    while heard.closed.is_none() {
        hear(&mut heard, ws.next().await);
    }
    heard.closed.unwrap()
}

#[tokio::test]
async fn a_scripted_call_gets_an_answer_and_a_mark() {
    bounded(10, async {
        let sim = sim_with(|_| {}).await;
        let mut caller = Caller::connect(sim.addr()).await;
        let heard = caller
            .talk(&tone(50), Duration::from_secs(5), |h| !h.marks.is_empty())
            .await;
        assert_eq!(heard.marks, ["answer-1"]);
        assert_eq!(heard.clears, 0);
        // One second of speech -> about 3 words -> a 6-word answer of about 35 characters, 60 ms each.
        assert!((60..=160).contains(&heard.media), "{} answer frames", heard.media);
        // max(hangover 0.5 s, pipeline 0.44-0.67 s) after the end of speech.
        let wait = heard.first_media.unwrap() - heard.speech_end.unwrap();
        assert!(
            wait >= Duration::from_millis(480) && wait < Duration::from_millis(1100),
            "{wait:?}"
        );
        // One burst: the mark comes right after the frames.
        assert!(heard.mark_at.unwrap() - heard.first_media.unwrap() < Duration::from_millis(250));

        caller.mark("answer-1").await;
        caller.mark("someone-elses-mark").await;
        caller.stop().await;
        assert_eq!(
            closed(&mut caller.ws).await,
            Closed::Frame(Some((CloseCode::Normal, "stop received".into())))
        );
        let frames_sent = caller.seq - 4; // all but start, the two marks and stop
        let stats = sim.stats();
        let s = &stats["streams"];
        assert_eq!(s["accepted"], 1);
        assert_eq!(s["completed"], 1);
        assert_eq!(s["media_frames"], frames_sent);
        assert_eq!(s["media_bytes"], frames_sent * 160);
        assert_eq!(s["utterances"], 1);
        assert_eq!(s["answers"], 1);
        assert_eq!(s["answer_frames"], heard.media);
        assert_eq!(s["marks_echoed"], 1);
        assert_eq!(s["unknown_marks"], 1);
        assert_eq!(s["bad_sequence"], 0);
        assert_eq!(s["protocol_errors"], json!({}));
        assert_eq!(stats["requests"]["GET /webhooks/twilio/media/{call_sid}"], 1);
        assert_eq!(stats["status_codes"]["101"], 1);
        sim.shutdown().await;
    })
    .await;
}

/// Seconds from the end of one second of speech to the first answer frame.
async fn answer_wait(addr: SocketAddr) -> Duration {
    let mut caller = Caller::connect(addr).await;
    let heard = caller
        .talk(&tone(50), Duration::from_secs(6), |h| h.first_media.is_some())
        .await;
    heard.first_media.expect("an answer") - heard.speech_end.unwrap()
}

#[tokio::test]
async fn a_slower_pipeline_answers_later() {
    bounded(10, async {
        let normal = sim_with(|_| {}).await;
        let slow = sim_with(|o| o.ai_slowdown = 3.0).await;
        let (w1, w3) = tokio::join!(answer_wait(normal.addr()), answer_wait(slow.addr()));
        // x1: max(0.5 s, 0.44-0.67 s); x3: 1.31-2.0 s.
        assert!(w3 > Duration::from_millis(1250), "{w3:?}");
        assert!(w3.as_secs_f64() > 1.7 * w1.as_secs_f64(), "{w1:?} vs {w3:?}");
        normal.shutdown().await;
        slow.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn speaking_over_the_answer_gets_a_clear() {
    bounded(10, async {
        let sim = sim_with(|_| {}).await;
        let mut caller = Caller::connect(sim.addr()).await;
        let answer = caller
            .talk(&tone(50), Duration::from_secs(5), |h| !h.marks.is_empty())
            .await;
        assert_eq!(answer.marks, ["answer-1"]);
        // The answer plays for over a second; interrupt it at once, without echoing the mark.
        let barge = caller
            .talk(&tone(25), Duration::from_secs(5), |h| h.marks.len() == 1)
            .await;
        assert_eq!(barge.clears, 1);
        let clear_wait = barge.clear_at.unwrap() - answer.mark_at.unwrap();
        assert!(clear_wait < Duration::from_millis(300), "{clear_wait:?}");
        // The interruption is an utterance too, and gets its own answer.
        assert_eq!(barge.marks, ["answer-2"]);
        // Once an answer has been heard out (mark echoed), speaking is no barge-in.
        caller.mark("answer-2").await;
        let calm = caller
            .talk(&tone(10), Duration::from_millis(400), |_| false)
            .await;
        assert_eq!(calm.clears, 0);
        let s = &sim.stats()["streams"];
        assert_eq!(s["clears_sent"], 1);
        assert_eq!(s["answers"], 2);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn the_stream_cap_refuses_with_503() {
    bounded(10, async {
        let sim = sim_with(|o| o.max_streams = Some(2)).await;
        let mut first = Caller::connect(sim.addr()).await;
        let _second = Caller::connect(sim.addr()).await;
        match open(sim.addr()).await {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
            other => panic!("expected a 503 refusal, got {:?}", other.map(|_| "a connection")),
        }
        let s = &sim.stats()["streams"];
        assert_eq!(
            (
                s["accepted"].as_u64(),
                s["refused"].as_u64(),
                s["active"].as_u64()
            ),
            (Some(2), Some(1), Some(2))
        );
        // A call that ends frees its place.
        first.stop().await;
        closed(&mut first.ws).await;
        while sim.stats()["streams"]["active"] != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(open(sim.addr()).await.is_ok());
        sim.shutdown().await;
    })
    .await;
}

/// Sends `messages` on a fresh connection and returns how the server closed it.
async fn broken_call(addr: SocketAddr, messages: Vec<Message>) -> Closed {
    let mut ws = open(addr).await.expect("upgrade accepted");
    for m in messages {
        if ws.send(m).await.is_err() {
            break;
        }
    }
    closed(&mut ws).await
}

#[tokio::test]
async fn protocol_errors_close_with_a_reason_and_are_counted() {
    bounded(10, async {
        let sim = sim_with(|_| {}).await;
        let api = api(&sim);
        let connected = || Message::text(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#);
        let media = |seq: u64| {
            Message::text(format!(
                r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"payload":"/////w=="}},"streamSid":"{}"}}"#,
                sid("MZ", 3)
            ))
        };
        let cases: Vec<(Vec<Message>, CloseCode, &str)> = vec![
            (vec![connected(), media(2)], CloseCode::Protocol, "media before start"),
            (vec![Message::text("{")], CloseCode::Protocol, "malformed event"),
            (vec![Message::text(r#"{"event":"dtmf","dtmf":{"digit":"1"}}"#)], CloseCode::Protocol, "unknown event"),
            (vec![Message::binary(vec![1u8, 2, 3])], CloseCode::Unsupported, "binary frame"),
            (vec![Message::text("x".repeat(100_000))], CloseCode::Size, "message too large"),
            (vec![connected(), connected()], CloseCode::Protocol, "connected sent twice or late"),
            (vec![Message::text(r#"{"event":"media","streamSid":"MZ1"}"#)], CloseCode::Protocol, "malformed event"),
        ];
        for (messages, code, reason) in cases {
            let got = broken_call(sim.addr(), messages).await;
            assert_eq!(got, Closed::Frame(Some((code, reason.into()))), "{reason}");
        }
        // A sequence number going backwards is counted, not fatal.
        let mut caller = Caller::connect(sim.addr()).await;
        caller.frame(&[mulaw::SILENCE; 160]).await;
        caller.seq = 1;
        caller.frame(&[mulaw::SILENCE; 160]).await;
        // Media on another stream is fatal.
        caller.stream_sid = sid("MZ", 4);
        caller.frame(&[mulaw::SILENCE; 160]).await;
        assert_eq!(
            closed(&mut caller.ws).await,
            Closed::Frame(Some((CloseCode::Protocol, "streamSid differs from the start event's".into())))
        );

        let stats = sim.stats();
        let errors = &stats["streams"]["protocol_errors"];
        assert_eq!(errors["malformed event"], 2);
        assert_eq!(errors["binary frame"], 1);
        assert_eq!(errors["media before start"], 1);
        assert_eq!(errors["message too large"], 1);
        assert_eq!(stats["streams"]["bad_sequence"], 1);
        assert_eq!(stats["streams"]["media_frames"], 2);
        // A plain HTTP GET on the media endpoint is refused, not upgraded.
        assert_eq!(api.get("/webhooks/twilio/media/CA1").await.0, StatusCode::BAD_REQUEST);
        // And the server is fine.
        assert_eq!(api.get("/api/v1/health").await.0, StatusCode::OK);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn dropped_streams_end_without_a_close_frame() {
    bounded(10, async {
        let sim = sim_with(|o| o.drop_rate = 1.0).await;
        let mut caller = Caller::connect(sim.addr()).await;
        let t = Instant::now();
        let heard = caller.talk(&[], Duration::from_secs(7), |_| false).await;
        assert_eq!(heard.closed, Some(Closed::Abruptly));
        let after = t.elapsed();
        assert!(
            after >= Duration::from_millis(950) && after <= Duration::from_millis(5200),
            "{after:?}"
        );
        assert_eq!(sim.stats()["streams"]["dropped"], 1);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_live_streams_as_going_away() {
    bounded(10, async {
        let sim = sim_with(|_| {}).await;
        let mut caller = Caller::connect(sim.addr()).await;
        caller.frame(&[mulaw::SILENCE; 160]).await;
        let t = Instant::now();
        let ((), close) = tokio::join!(sim.shutdown(), closed(&mut caller.ws));
        assert_eq!(
            close,
            Closed::Frame(Some((CloseCode::Away, "server shutting down".into())))
        );
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    })
    .await;
}

#[tokio::test]
async fn many_silent_streams_are_all_counted() {
    bounded(20, async {
        let sim = sim_with(|_| {}).await;
        let addr = sim.addr();
        let calls: Vec<_> = (0..100)
            .map(|_| {
                tokio::spawn(async move {
                    let mut caller = Caller::connect(addr).await;
                    for _ in 0..25 {
                        caller.frame(&[mulaw::SILENCE; 160]).await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    caller.stop().await;
                    closed(&mut caller.ws).await
                })
            })
            .collect();
        for call in calls {
            assert_eq!(
                call.await.unwrap(),
                Closed::Frame(Some((CloseCode::Normal, "stop received".into())))
            );
        }
        let s = &sim.stats()["streams"];
        assert_eq!(s["completed"], 100);
        assert_eq!(s["media_frames"], 2500);
        assert_eq!(s["utterances"], 0);
        sim.shutdown().await;
    })
    .await;
}

// ---- The `serve` command ----

/// Starts the real binary's `serve` and returns it with the URL it announced.
async fn spawn_serve(args: &[&str]) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_phone-agent-load"))
        .arg("serve")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, url)
}

#[tokio::test]
async fn serve_announces_its_port_and_stops_on_sigterm() {
    bounded(20, async {
        let (mut child, url) = spawn_serve(&["--port", "0", "--error-rate", "0"]).await;
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let r = http().get(format!("{url}/api/v1/health")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let stats: Value = http()
            .get(format!("{url}/_sim/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats["requests"]["GET /api/v1/health"], 1);
        let pid = child.id().unwrap() as i32;
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{status:?}");
    })
    .await;
}

#[tokio::test]
async fn serve_on_a_taken_port_exits_1_naming_it() {
    bounded(20, async {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port().to_string();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_phone-agent-load"))
            .args(["serve", "--port", &port])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("127.0.0.1:{port} is already in use")),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    })
    .await;
}

// ---- Real-time factor over the twelve utterances (a measurement, about 12 s) ----

/// RTF of each of the built-in utterances, spoken at once on separate calls.
async fn rtf_per_utterance(addr: SocketAddr) -> Vec<(f64, f64)> {
    let calls = phone_agent_load::config::utterances::builtin()
        .into_iter()
        .map(|u| async move {
            let seconds = phone_agent_load::config::utterances::duration(&u).as_secs_f64();
            let speech: Vec<Vec<u8>> = u.mulaw.chunks(160).map(<[u8]>::to_vec).collect();
            let mut caller = Caller::connect(addr).await;
            let heard = caller
                .talk(&speech, Duration::from_secs(20), |h| !h.marks.is_empty())
                .await;
            let turn = heard.mark_at.expect("an answer") - heard.speech_end.unwrap();
            (seconds, turn.as_secs_f64() / seconds)
        });
    futures_util::future::join_all(calls).await
}

#[tokio::test]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn the_twelve_utterances_answer_in_real_time() {
    bounded(40, async {
        let normal = sim_with(|_| {}).await;
        let slow = sim_with(|o| o.ai_slowdown = 3.0).await;
        let (x1, x3) = tokio::join!(rtf_per_utterance(normal.addr()), rtf_per_utterance(slow.addr()));
        for ((seconds, r1), (_, r3)) in x1.iter().zip(&x3) {
            println!("{seconds:5.2} s of speech: RTF {r1:.2} (x3: {r3:.2})");
        }
        let mean = |v: &[(f64, f64)]| v.iter().map(|(_, r)| r).sum::<f64>() / v.len() as f64;
        let (m1, m3) = (mean(&x1), mean(&x3));
        println!("mean RTF {m1:.2}, with --ai-slowdown 3 {m3:.2} ({:.1}x)", m3 / m1);
        assert!(m1 < 0.7, "mean RTF {m1}");
        assert!(m3 > 1.0 && m3 / m1 > 2.3, "{m1} vs {m3}");
        normal.shutdown().await;
        slow.shutdown().await;
    })
    .await;
}
