//! Fault injection on the HTTP side: rate limiting, injected 500s, garbage answers, added latency
//! and jitter, and a memory leak per call.

use super::{api, bounded, http, new_call, sim_with, status_form};
use phone_agent_load::simulator::{self, RunningSimulator};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

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
