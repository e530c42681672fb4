//! A synthetic run for the analysis tests: Goose rows with real histogram buckets, stream and AI
//! figures, and memory series, which together make a healthy run.

use super::plan;
use goose::metrics::{GooseMetrics, GooseRequestMetricAggregate, GooseRequestMetricTimingData, TimeBuckets};
use goose::prelude::*;
use phone_agent_load::analysis::RunRecord;
use phone_agent_load::config::plan::{AiMode, Skips};
use phone_agent_load::measure::memory::MemoryReport;
use phone_agent_load::measure::{AiStats, Snapshot, StreamStats, Turn};
use std::collections::HashMap;
use std::time::Duration;

/// A bucket key as Goose makes it (64 sub-buckets per power of two).
fn floor(us: u64) -> u64 {
    if us < 128 {
        return us;
    }
    let bits = 63 - us.leading_zeros() - 6;
    (us >> bits) << bits
}

fn timing(times_us: &[u64]) -> GooseRequestMetricTimingData {
    let mut t = GooseRequestMetricTimingData {
        times_us: times_us.iter().map(|&us| (floor(us), 1)).collect::<TimeBuckets>(),
        ..Default::default()
    };
    t.minimum_time_us = times_us.iter().copied().min().unwrap_or(0);
    t.maximum_time_us = times_us.iter().copied().max().unwrap_or(0);
    t.total_time_us = times_us.iter().sum();
    t.counter = times_us.len();
    t
}

fn row(
    path: &str,
    method: GooseMethod,
    times_us: &[u64],
    codes: &[(u16, usize)],
    fails: usize,
) -> GooseRequestMetricAggregate {
    GooseRequestMetricAggregate {
        path: path.to_string(),
        method,
        raw_data: timing(times_us),
        coordinated_omission_data: None,
        status_code_counts: codes.iter().copied().collect(),
        status_code_timings: HashMap::new(),
        success_count: times_us.len() - fails,
        fail_count: fails,
        load_test_hash: 0,
        custom_method: if method == GooseMethod::Custom {
            "WS".into()
        } else {
            String::new()
        },
    }
}

fn synthetic_metrics() -> GooseMetrics {
    let mut m = GooseMetrics::default();
    m.duration = 10;
    let fast: Vec<u64> = (0..90).map(|i| 10_000 + i * 100).collect();
    let slow: Vec<u64> = (0..10).map(|i| 300_000 + i * 1000).collect();
    m.requests.insert(
        "GET /api/v1/health".into(),
        row("/api/v1/health", GooseMethod::Get, &fast, &[(200, 90)], 0),
    );
    m.requests.insert(
        "POST /api/v1/calls [CREATE]".into(),
        row(
            "/api/v1/calls [CREATE]",
            GooseMethod::Post,
            &slow,
            &[(201, 9), (429, 1)],
            1,
        ),
    );
    m.requests.insert(
        "WS media stream".into(),
        row(
            "media stream",
            GooseMethod::Custom,
            &[30_000_000; 5],
            &[(0, 5)],
            0,
        ),
    );
    m
}

fn synthetic_snapshot() -> Snapshot {
    let mut streams = StreamStats {
        calls_attempted: 10,
        calls_connected: 10,
        calls_completed: 9,
        calls_failed: 1,
        messages_sent: 15_000,
        messages_received: 300,
        bytes_sent: 4_000_000,
        bytes_received: 90_000,
        frames_scheduled: 15_000,
        frames_sent: 14_850,
        frames_late: 30,
        ..Default::default()
    };
    for us in [2_000, 3_000, 4_000, 50_000] {
        streams.connect_us.record(us);
    }
    streams.error("closed by server mid-call");
    let turns = (0..20)
        .map(|i| Turn {
            at_s: 5.0 + i as f64,
            audio_ms: 2000.0,
            ok: true,
            rtf: 0.3 + 0.01 * i as f64,
            ttfa_ms: Some(400.0 + i as f64),
            turn_ms: Some(600.0 + i as f64),
            stt_ms: Some(100.0),
            llm_ms: Some(200.0),
            tts_ms: Some(80.0),
        })
        .collect();
    Snapshot {
        streams,
        ai: AiStats {
            calls: 3,
            turns,
            errors: Default::default(),
        },
    }
}

pub(super) fn synthetic_memory(server_growth_per_s: f64) -> MemoryReport {
    let lg: Vec<[f64; 2]> = (0..60).map(|s| [s as f64, 40.0 + (s % 3) as f64]).collect();
    let server: Vec<[f64; 2]> = (0..60)
        .map(|s| [s as f64, 80.0 + server_growth_per_s * s as f64])
        .collect();
    MemoryReport::from_samples(
        Some(("load generator".into(), lg)),
        Some(("pid 1".into(), server)),
        Some(5.0),
    )
}

pub(super) fn healthy_record(mode: AiMode) -> RunRecord {
    let mut run = RunRecord::new(plan(mode, Skips::default()), "http://127.0.0.1:1");
    run.duration = Duration::from_secs(60);
    run.goose = Some(synthetic_metrics());
    run.measured = synthetic_snapshot();
    run.memory = synthetic_memory(0.1);
    run
}
