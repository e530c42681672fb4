//! The `api` section from Goose's metrics: the HTTP request rows only.
//!
//! The media-stream and AI rows are custom requests (method `Custom`) whose times are whole
//! calls; they would swamp the API's percentiles, so they are left out. Overall percentiles come
//! from the rows' histograms merged bucket by bucket (never from averaged percentiles).
//!
//! Goose judges a request before the scenario does, so its error table also lists answers the
//! scenarios' success rules then accepted ("404 Not Found: /api/v1/calls/{id} [UPDATE]"); those
//! are no errors, and the section's `errors` leaves them out.

use super::results::{ApiResults, Endpoint, LocustStats};
use goose::goose::GooseMethod;
use goose::metrics::{GooseMetrics, GooseRequestMetricAggregate, GooseRequestMetricTimingData};
use std::collections::BTreeMap;

/// Builds the `api` section. `duration_s`, the run's wall time, is the section's `duration`, and
/// the rate's window when Goose measured none.
pub fn api_section(metrics: Option<&GooseMetrics>, duration_s: f64) -> ApiResults {
    let Some(metrics) = metrics else {
        return with_suite_keys(ApiResults::default(), duration_s);
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
    let api = ApiResults {
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
        ..Default::default()
    };
    with_suite_keys(api, duration_s)
}

/// Adds the Python suite's keys: the run's duration, the figures in the names of Locust's
/// aggregated row, and the section's text where the suite kept Locust's console output.
fn with_suite_keys(mut api: ApiResults, duration_s: f64) -> ApiResults {
    api.duration = duration_s;
    api.stats = LocustStats {
        requests: api.requests,
        failures: api.failures,
        avg_response_time: api.avg_ms,
        p50: api.p50_ms,
        p95: api.p95_ms,
        p99: api.p99_ms,
        rps: api.rps,
    };
    api.stdout = super::summary::api_text(&api);
    api
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

/// Goose's error table, HTTP rows only and without the answers the success rules accepted:
/// "METHOD name: error" -> occurrences.
fn http_errors(metrics: &GooseMetrics) -> BTreeMap<String, u64> {
    let mut errors = BTreeMap::new();
    for e in metrics
        .errors
        .values()
        .filter(|e| e.method != GooseMethod::Custom && !accepted_answer(&e.error))
    {
        *errors
            .entry(format!("{} {}: {}", e.method, e.name, e.error))
            .or_default() += e.occurrences as u64;
    }
    errors
}

/// Whether Goose's error text is a status the request's success rule accepts: Goose names a
/// non-2xx answer "<status>: <request name>" ("429 Too Many Requests: /api/v1/calls [RAPID]").
fn accepted_answer(error: &str) -> bool {
    let Some((status, name)) = error.split_once(": ") else {
        return false;
    };
    let code = status
        .split_whitespace()
        .next()
        .and_then(|c| c.parse::<u16>().ok());
    code.is_some_and(|code| crate::scenarios::accepts(name, code))
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

#[cfg(test)]
mod tests {
    use super::*;
    use goose::metrics::GooseErrorMetricAggregate;

    #[test]
    fn errors_leave_out_the_answers_the_success_rules_accepted() {
        use GooseMethod::{Get, Patch, Post};
        let mut metrics = GooseMetrics::default();
        let errors = [
            // Accepted by the rules: Goose lists them, the section does not.
            (Get, "/api/v1/calls [RAPID]", "429 Too Many Requests"),
            (Get, "/api/v1/health [RAPID]", "429 Too Many Requests"),
            (Patch, "/api/v1/calls/{id} [UPDATE]", "404 Not Found"),
            (Get, "/api/v1/calls/{id} [GET]", "404 Not Found"),
            (Post, "/webhooks/twilio/status", "403 Forbidden"),
            // Failures: kept.
            (Get, "/api/v1/calls [LIST]", "429 Too Many Requests"),
            (Get, "/api/v1/calls [RAPID]", "500 Internal Server Error"),
            (Post, "/api/v1/calls [CREATE]", "422 Unprocessable Entity"),
        ];
        for (method, name, status) in errors {
            let error = format!("{status}: {name}");
            let row = GooseErrorMetricAggregate {
                method,
                name: name.to_string(),
                error: error.clone(),
                occurrences: 3,
                custom_method: String::new(),
            };
            metrics.errors.insert(format!("{error}.{method}.{name}"), row);
        }
        let others = [
            (
                Get,
                "/api/v1/calls [LIST]",
                "wrong content type: text/html".to_string(),
            ),
            (
                Get,
                "/api/v1/health",
                "error sending request /api/v1/health: connection refused".to_string(),
            ),
        ];
        for (method, name, error) in others {
            let row = GooseErrorMetricAggregate {
                method,
                name: name.to_string(),
                error: error.clone(),
                occurrences: 2,
                custom_method: String::new(),
            };
            metrics.errors.insert(format!("{error}.{method}.{name}"), row);
        }
        let kept: Vec<String> = api_section(Some(&metrics), 1.0).errors.into_keys().collect();
        assert_eq!(
            kept,
            [
                "GET /api/v1/calls [LIST]: 429 Too Many Requests: /api/v1/calls [LIST]",
                "GET /api/v1/calls [LIST]: wrong content type: text/html",
                "GET /api/v1/calls [RAPID]: 500 Internal Server Error: /api/v1/calls [RAPID]",
                "GET /api/v1/health: error sending request /api/v1/health: connection refused",
                "POST /api/v1/calls [CREATE]: 422 Unprocessable Entity: /api/v1/calls [CREATE]",
            ]
        );
    }
}
