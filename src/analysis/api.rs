//! The `api` section from Goose's metrics: the HTTP request rows only.
//!
//! The media-stream and AI rows are custom requests (method `Custom`) whose times are whole
//! calls; they would swamp the API's percentiles, so they are left out. Overall percentiles come
//! from the rows' histograms merged bucket by bucket (never from averaged percentiles).

use super::results::{ApiResults, Endpoint};
use goose::goose::GooseMethod;
use goose::metrics::{GooseMetrics, GooseRequestMetricAggregate, GooseRequestMetricTimingData};
use std::collections::BTreeMap;

/// Builds the `api` section. `duration_s` is used for the rate when Goose measured no duration.
pub fn api_section(metrics: Option<&GooseMetrics>, duration_s: f64) -> ApiResults {
    let Some(metrics) = metrics else {
        return ApiResults::default();
    };
    let rows: Vec<&GooseRequestMetricAggregate> = metrics
        .requests
        .values()
        .filter(|r| r.method != GooseMethod::Custom)
        .collect();
    let all = merge_timings(rows.iter().map(|r| &r.raw_data));
    let successes: u64 = rows.iter().map(|r| r.success_count as u64).sum();
    let failures: u64 = rows.iter().map(|r| r.fail_count as u64).sum();
    let requests = successes + failures;
    // Goose counts from its metrics reset (after the ramp by default): the rate uses the same window.
    let seconds = if metrics.duration > 0 {
        metrics.duration as f64
    } else {
        duration_s
    };
    let mut endpoints: Vec<Endpoint> = rows.iter().map(|r| endpoint(r)).collect();
    endpoints.sort_by(|a, b| (&a.name, &a.method).cmp(&(&b.name, &b.method)));
    ApiResults {
        success: false,
        requests,
        failures,
        success_rate: pct(successes, requests),
        avg_ms: avg_ms(&all),
        p50_ms: pct_ms(&all, 0.5),
        p95_ms: pct_ms(&all, 0.95),
        p99_ms: pct_ms(&all, 0.99),
        max_ms: all.maximum_time_us as f64 / 1000.0,
        rps: if seconds > 0.0 {
            requests as f64 / seconds
        } else {
            0.0
        },
        endpoints,
        errors: http_errors(metrics),
    }
}

/// Merges timing data exactly: bucket counts add (Goose's `FromIterator` adds duplicate keys),
/// extremes and totals combine.
pub fn merge_timings<'a>(
    parts: impl IntoIterator<Item = &'a GooseRequestMetricTimingData>,
) -> GooseRequestMetricTimingData {
    let parts: Vec<&GooseRequestMetricTimingData> = parts.into_iter().filter(|p| p.counter > 0).collect();
    let mut merged = GooseRequestMetricTimingData {
        times_us: parts
            .iter()
            .flat_map(|p| p.times_us.iter().map(|(&b, &c)| (b, c)))
            .collect(),
        ..Default::default()
    };
    merged.minimum_time_us = parts.iter().map(|p| p.minimum_time_us).min().unwrap_or(0);
    merged.maximum_time_us = parts.iter().map(|p| p.maximum_time_us).max().unwrap_or(0);
    merged.total_time_us = parts.iter().map(|p| p.total_time_us).sum();
    merged.counter = parts.iter().map(|p| p.counter).sum();
    merged
}

fn endpoint(r: &GooseRequestMetricAggregate) -> Endpoint {
    let status_codes = r
        .status_code_counts
        .iter()
        .map(|(code, n)| (code.to_string(), *n as u64))
        .collect();
    Endpoint {
        name: r.path.clone(),
        method: r.method_label().to_string(),
        requests: (r.success_count + r.fail_count) as u64,
        failures: r.fail_count as u64,
        avg_ms: avg_ms(&r.raw_data),
        p50_ms: pct_ms(&r.raw_data, 0.5),
        p95_ms: pct_ms(&r.raw_data, 0.95),
        p99_ms: pct_ms(&r.raw_data, 0.99),
        status_codes,
    }
}

/// Goose's error table, HTTP rows only: "METHOD name: error" -> occurrences.
fn http_errors(metrics: &GooseMetrics) -> BTreeMap<String, u64> {
    let mut errors = BTreeMap::new();
    for e in metrics
        .errors
        .values()
        .filter(|e| e.method != GooseMethod::Custom)
    {
        *errors
            .entry(format!("{} {}: {}", e.method, e.name, e.error))
            .or_default() += e.occurrences as u64;
    }
    errors
}

fn pct_ms(t: &GooseRequestMetricTimingData, q: f32) -> f64 {
    t.percentile_us(q) as f64 / 1000.0
}

fn avg_ms(t: &GooseRequestMetricTimingData) -> f64 {
    if t.counter == 0 {
        0.0
    } else {
        t.average_ms()
    }
}

/// `part / whole x 100`, 0 for nothing.
pub(crate) fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64 * 100.0
    }
}
