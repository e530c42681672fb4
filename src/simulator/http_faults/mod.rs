//! Fault injection for the REST API and webhooks (the front door decides which requests meet
//! it).
//!
//! The faults, in the order a request meets them:
//! - `--rate-limit N`: a per-client token bucket ([`RateLimiter`]); over it, 429 with
//!   `Retry-After`.
//! - `--api-latency-ms`, `--api-jitter-ms`: a delay before anything else is decided.
//! - `--stall-rate F`: the request is accepted and never answered ([`stall`]).
//! - `--error-rate F`: 500 `{"detail": "injected error (--error-rate)"}`.
//! - `--garbage-rate F`: the request is served, then its answer is replaced by garbage of
//!   `--garbage-kind` ([`garbage`]), with a success status, so only the body can tell.
//!
//! A stall has no status to count, and garbage counts under the success status it was sent with,
//! so both are also counted apart, under the stats' `faults`: `stalled` (as each stall starts,
//! with `stalls_cut_at_once` for those cut at once) and `garbage` by the kind sent (a `mixed`
//! answer under the kind it took).

mod body;
mod garbage;
mod rate_limit;
mod stall;

pub(crate) use body::is_cut;
pub(crate) use garbage::GarbageAnswers;
pub(crate) use rate_limit::RateLimiter;
pub(crate) use stall::Stalls;

use super::{dispatch, Sim};
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::Router;
use rand::Rng;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Serves a REST or webhook request through the faults.
pub(crate) async fn with_faults(sim: &Sim, router: &mut Router, req: Request) -> Response {
    let limited = match &sim.limiter {
        Some(limiter) => limiter.check(peer_ip(&req)).err(),
        None => None,
    };
    let delay = added_latency(sim.opts.api_latency_ms, sim.opts.api_jitter_ms);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(retry_after) = limited {
        sim.stats.rate_limited.fetch_add(1, Relaxed);
        return rate_limited(retry_after);
    }
    if happens(sim.opts.stall_rate) {
        // Let go of the request (and its body) so hyper goes on reading the connection and sees
        // the client give up.
        drop(req);
        return stall::stall(&sim.stalls, &sim.stats).await;
    }
    if happens(sim.opts.error_rate) {
        sim.stats.injected_errors.fetch_add(1, Relaxed);
        return super::api::detail(StatusCode::INTERNAL_SERVER_ERROR, "injected error (--error-rate)");
    }
    let response = dispatch(router, req).await;
    if happens(sim.opts.garbage_rate) {
        return sim.garbage.replace(&sim.stats, response).await;
    }
    response
}

/// True with probability `share`; nothing drawn for 0, the common case.
fn happens(share: f64) -> bool {
    share > 0.0 && super::chance(&mut rand::rng(), share)
}

fn peer_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

fn rate_limited(retry_after: Duration) -> Response {
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = super::api::detail(StatusCode::TOO_MANY_REQUESTS, "rate limited (--rate-limit)");
    response.headers_mut().insert(header::RETRY_AFTER, secs.into());
    response
}

/// `--api-latency-ms` plus uniform `--api-jitter-ms`.
fn added_latency(latency_ms: u64, jitter_ms: u64) -> Duration {
    let fixed = Duration::from_millis(latency_ms);
    if jitter_ms == 0 {
        return fixed;
    }
    let jitter_us = rand::rng().random_range(0..=jitter_ms * 1000);
    fixed + Duration::from_micros(jitter_us)
}
