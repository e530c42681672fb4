//! The api section from a real Goose run on loopback: the rows' histograms merged for the
//! percentiles, and a media call's custom row kept out of the API figures.

use super::{plan, serve};
use axum::routing::get;
use goose::config::GooseConfiguration;
use goose::prelude::*;
use phone_agent_load::analysis::verdicts::Status;
use phone_agent_load::analysis::{analyse, RunRecord};
use phone_agent_load::config::plan::{AiMode, Skips};
use std::time::Duration;

async fn calls(user: &mut GooseUser) -> TransactionResult {
    for _ in 0..8 {
        user.get("/fast").await?;
    }
    user.get("/slow").await?;
    user.get("/missing").await?;
    // A whole media call, as the stream scenarios record it: must stay out of the API figures.
    user.record_custom_request_duration("WS", "media stream", Duration::from_secs(30), true, None, None)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_section_from_a_real_goose_run_merges_histograms_and_drops_custom_rows() {
    let router = axum::Router::new().route("/fast", get(|| async { "ok" })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            "ok"
        }),
    );
    let (url, server) = serve(router).await;
    let config = GooseConfiguration::parse_args_default(&[
        "--host",
        &url,
        "--users",
        "2",
        "--increase-rate",
        "100",
        "--iterations",
        "5",
        "--quiet",
        "--no-telnet",
        "--no-print-metrics",
    ])
    .unwrap();
    let attack = GooseAttack::initialize_with_config(config)
        .unwrap()
        .register_scenario(scenario!("Api").register_transaction(transaction!(calls)));
    let metrics = tokio::time::timeout(Duration::from_secs(60), attack.execute())
        .await
        .expect("goose run finished in time")
        .unwrap();
    server.abort();

    let mut run = RunRecord::new(plan(AiMode::Stream, Skips::default()), &url);
    run.duration = Duration::from_secs(2);
    run.goose = Some(metrics);
    let r = analyse(&run, &[]);
    let api = r.api.ran().unwrap();
    // 2 users x 5 iterations x 10 HTTP requests; the custom WS rows are not among them.
    assert_eq!(api.requests, 100, "{api:#?}");
    assert_eq!(api.failures, 10, "the 404s");
    assert_eq!(api.success_rate, 90.0);
    assert_eq!(api.endpoints.len(), 3);
    let missing = api.endpoints.iter().find(|e| e.name == "/missing").unwrap();
    assert_eq!(missing.status_codes.get("404"), Some(&10));
    let fast = api.endpoints.iter().find(|e| e.name == "/fast").unwrap();
    assert_eq!(fast.status_codes.get("200"), Some(&80));
    assert!(
        api.max_ms < 10_000.0,
        "no 30 s custom times in the API figures: {}",
        api.max_ms
    );
    // 10 % of requests are slow: the merged p95 is theirs; the mean of the rows' p95s would not be.
    let slow = api.endpoints.iter().find(|e| e.name == "/slow").unwrap();
    assert!(api.p95_ms >= 145.0, "merged p95 {}", api.p95_ms);
    let mean_of_p95s = api.endpoints.iter().map(|e| e.p95_ms).sum::<f64>() / 3.0;
    assert!(mean_of_p95s < 100.0 && slow.p95_ms >= 145.0);
    assert!(api.p50_ms < 100.0, "p50 {}", api.p50_ms);
    let seconds = match run.goose.as_ref().unwrap().duration {
        0 => 2.0, // Goose counted under a second: the run's own duration is used
        s => s as f64,
    };
    assert_eq!(api.rps, 100.0 / seconds);
    let p95 = r.verdicts.iter().find(|v| v.metric == "API p95 latency").unwrap();
    assert_eq!(p95.status, Status::Target, "150 ms is under 200 ms");
    assert_eq!(
        r.verdicts
            .iter()
            .find(|v| v.metric == "API success rate")
            .unwrap()
            .status,
        Status::Critical
    );
}
