//! The memory sampler: this process's own growth, a Prometheus endpoint as the server's memory,
//! targets checked before a run, and a server that goes away mid-run.

use super::serve;
use crate::harness;
use axum::routing::get;
use phone_agent_load::measure::memory::{MemorySampler, MemoryTarget};
use std::time::Duration;

/// Samples this process's own memory, which the tests running beside it would blur: alone in a
/// process of its own.
#[test]
fn sampler_sees_a_50_mb_allocation_as_growth() {
    harness::alone_in_a_process(
        "analysis::memory::sampler_sees_a_50_mb_allocation_as_growth",
        Duration::from_secs(60),
        || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(a_50_mb_allocation_is_growth())
        },
    );
}

async fn a_50_mb_allocation_is_growth() {
    let sampler = MemorySampler::start(
        Some(MemoryTarget::Pid(std::process::id())),
        Duration::from_millis(50),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    sampler.ramp_done();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let block = vec![1u8; 50 * 1024 * 1024]; // written, so resident
    tokio::time::sleep(Duration::from_millis(400)).await;
    let report = tokio::time::timeout(Duration::from_secs(10), sampler.stop())
        .await
        .unwrap();
    std::hint::black_box(&block);
    drop(block);
    let lg = report.load_generator.expect("load generator sampled");
    assert!(lg.samples.len() >= 10, "{} samples", lg.samples.len());
    assert!(
        lg.growth_mb > 45.0 && lg.growth_mb < 80.0,
        "growth {} MB",
        lg.growth_mb
    );
    assert!(lg.peak_mb >= lg.final_mb);
    // Growth is seen at once; a slope needs MIN_FIT_SPAN_S of samples, which 0.6 s is not.
    assert_eq!((lg.slope_mb_per_min, lg.r2), (0.0, 0.0));
    assert!(report.ramp_done_s.unwrap() >= 0.25);
    assert!(lg.window_start_s >= report.ramp_done_s.unwrap());
    let server = report.server.expect("server (this process, by pid) sampled");
    assert!(server.growth_mb > 45.0, "{}", server.growth_mb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampler_reads_a_prometheus_endpoint_and_checks_targets() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let rss = Arc::new(AtomicU64::new(100 * 1024 * 1024));
    let served = rss.clone();
    let router = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let bytes = served.fetch_add(1024 * 1024, Ordering::SeqCst);
                async move {
                    format!(
                        "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {bytes}\n"
                    )
                }
            }),
        )
        .route("/empty", get(|| async { "up 1\n" }));
    let (url, server) = serve(router).await;
    let target = MemoryTarget::MetricsUrl(format!("{url}/metrics"));
    target.check().await.unwrap();
    let sampler = MemorySampler::start(Some(target), Duration::from_millis(30));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = tokio::time::timeout(Duration::from_secs(10), sampler.stop())
        .await
        .unwrap();
    let s = report.server.expect("server series from the endpoint");
    assert!(s.initial_mb >= 100.0 && s.growth_mb >= 3.0, "{s:?}");
    assert!(report.server_error.is_none(), "{:?}", report.server_error);

    let err = MemoryTarget::MetricsUrl(format!("{url}/empty"))
        .check()
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("no process_resident_memory_bytes"),
        "{err:#}"
    );
    server.abort();
    let err = MemoryTarget::MetricsUrl("ftp://127.0.0.1/x".into())
        .check()
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("only http"), "{err:#}");
    let err = MemoryTarget::Pid(u32::MAX - 1).check().await.unwrap_err();
    assert!(format!("{err:#}").contains("no such process"), "{err:#}");
    let err = MemoryTarget::ProcessName("no-such-process-xyz".into())
        .check()
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("no running process"), "{err:#}");

    // A server that goes away mid-run: samples stop, the error is kept, the report still comes.
    let sampler = MemorySampler::start(
        Some(MemoryTarget::MetricsUrl(format!("{url}/metrics"))),
        Duration::from_millis(30),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = tokio::time::timeout(Duration::from_secs(15), sampler.stop())
        .await
        .unwrap();
    assert!(report.server.is_none() && report.server_error.is_some());
    assert!(report.load_generator.is_some());
}
