//! The front door of every request: counting per route and status, and fault injection
//! (per-client rate limit, added latency, injected 500s) for the REST API and webhooks.
//! Also the deliberate memory leak of `--leak-kb-per-call`.

use super::stats::Route;
use super::Sim;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use rand::Rng;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower_service::Service;

/// Which route a request is for; `None` for the simulator's own endpoints (`/_sim/`, `/metrics`).
fn classify(method: &Method, path: &str) -> Option<Route> {
    if path.starts_with("/_sim/") || path == "/metrics" {
        return None;
    }
    let route = if let Some(rest) = path.strip_prefix("/api/v1/") {
        match (method, rest) {
            (&Method::GET, "calls") => Route::ListCalls,
            (&Method::POST, "calls") => Route::CreateCall,
            (&Method::GET, "health") => Route::Health,
            (m, r) if one_segment(r, "calls/") => match *m {
                Method::GET => Route::GetCall,
                Method::PATCH => Route::UpdateCall,
                _ => Route::Other,
            },
            _ => Route::Other,
        }
    } else if let Some(rest) = path.strip_prefix("/webhooks/twilio/") {
        match (method, rest) {
            (&Method::POST, "status") => Route::StatusWebhook,
            (&Method::POST, "voice") => Route::VoiceWebhook,
            (&Method::GET, r) if one_segment(r, "media/") => Route::MediaStream,
            _ => Route::Other,
        }
    } else {
        Route::Other
    };
    Some(route)
}

/// `prefix` followed by one non-empty path segment.
fn one_segment(rest: &str, prefix: &str) -> bool {
    rest.strip_prefix(prefix)
        .is_some_and(|s| !s.is_empty() && !s.contains('/'))
}

/// Faults apply to the REST API and webhooks, not to media stream upgrades or unknown paths.
fn faulty(route: Route) -> bool {
    !matches!(route, Route::MediaStream | Route::Other)
}

/// The service in front of the router: counts every request by route and every answer by
/// status (404, 405 and 413 from the router included), and injects faults. A plain service
/// rather than `from_fn` middleware: one allocation per request instead of several.
#[derive(Clone)]
pub(crate) struct Front {
    pub(crate) sim: Arc<Sim>,
    pub(crate) router: Router,
}

impl Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A Router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let (sim, router) = (self.sim.clone(), self.router.clone());
        Box::pin(async move { Ok(front(sim, router, req).await) })
    }
}

async fn front(sim: Arc<Sim>, mut router: Router, req: Request) -> Response {
    let Some(route) = classify(req.method(), req.uri().path()) else {
        return call(&mut router, req).await;
    };
    sim.stats.request(route);
    let response = if faulty(route) {
        with_faults(&sim, &mut router, req).await
    } else {
        call(&mut router, req).await
    };
    sim.stats.status(response.status().as_u16());
    response
}

async fn call(router: &mut Router, req: Request) -> Response {
    match router.call(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

async fn with_faults(sim: &Sim, router: &mut Router, req: Request) -> Response {
    let limited = match &sim.limiter {
        Some(limiter) => limiter.check(peer_ip(&req)).err(),
        None => None,
    };
    let delay = sim.added_latency();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(retry_after) = limited {
        sim.stats.rate_limited.fetch_add(1, Relaxed);
        return rate_limited(retry_after);
    }
    if sim.opts.error_rate > 0.0 && rand::rng().random_bool(sim.opts.error_rate) {
        sim.stats.injected_errors.fetch_add(1, Relaxed);
        return super::api::detail(StatusCode::INTERNAL_SERVER_ERROR, "injected error (--error-rate)");
    }
    call(router, req).await
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

impl Sim {
    /// `--api-latency-ms` plus uniform `--api-jitter-ms`.
    fn added_latency(&self) -> Duration {
        let fixed = Duration::from_millis(self.opts.api_latency_ms);
        if self.opts.api_jitter_ms == 0 {
            return fixed;
        }
        let jitter_us = rand::rng().random_range(0..=self.opts.api_jitter_ms * 1000);
        fixed + Duration::from_micros(jitter_us)
    }
}

/// A per-client token bucket, kept as GCRA ("theoretical arrival time") in one atomic per
/// client so a check is a map read and a compare-and-swap, never a held lock.
pub(crate) struct RateLimiter {
    /// Time one token takes to refill.
    interval_ns: u64,
    /// How far ahead of now a client's arrival time may run: a burst of `rate` requests.
    tolerance_ns: u64,
    epoch: Instant,
    clients: RwLock<HashMap<IpAddr, Arc<AtomicU64>>>,
}

/// Forget all clients past this many (only a flood of distinct addresses gets here).
const MAX_CLIENTS: usize = 65_536;

impl RateLimiter {
    /// `rate` requests per second per client, with a burst of one second's worth.
    pub(crate) fn new(rate: f64) -> RateLimiter {
        let interval_ns = (1e9 / rate).max(1.0) as u64;
        let burst = rate.ceil().max(1.0) as u64;
        RateLimiter {
            interval_ns,
            tolerance_ns: interval_ns * (burst - 1),
            epoch: Instant::now(),
            clients: RwLock::default(),
        }
    }

    /// `Ok` when the request may pass, else how long until it would.
    pub(crate) fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let cell = self.cell(client);
        let now = self.epoch.elapsed().as_nanos() as u64;
        let mut tat = cell.load(Relaxed);
        loop {
            let start = tat.max(now);
            if start - now > self.tolerance_ns {
                return Err(Duration::from_nanos(start - now - self.tolerance_ns));
            }
            match cell.compare_exchange_weak(tat, start + self.interval_ns, Relaxed, Relaxed) {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }

    fn cell(&self, client: IpAddr) -> Arc<AtomicU64> {
        if let Some(cell) = self
            .clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&client)
        {
            return cell.clone();
        }
        let mut clients = self.clients.write().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.entry(client).or_default().clone()
    }
}

/// Memory retained on purpose and never freed (`--leak-kb-per-call`).
pub(crate) struct Leak {
    kb: u64,
    shards: Vec<Mutex<Vec<Box<[u8]>>>>,
}

impl Leak {
    pub(crate) fn new(kb: u64) -> Leak {
        Leak {
            kb,
            shards: (0..16).map(|_| Mutex::default()).collect(),
        }
    }

    /// Retains `kb` KB, written to so the pages count in the resident set.
    pub(crate) fn leak(&self, stats: &super::stats::Stats) {
        if self.kb == 0 {
            return;
        }
        let bytes = (self.kb * 1024) as usize;
        let block = vec![0xA5u8; bytes].into_boxed_slice();
        let shard = rand::rng().random_range(0..self.shards.len());
        self.shards[shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(block);
        stats.leaked_bytes.fetch_add(bytes as u64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_classified_like_the_router() {
        let c = |m: Method, p: &str| classify(&m, p);
        assert_eq!(c(Method::GET, "/api/v1/calls"), Some(Route::ListCalls));
        assert_eq!(c(Method::POST, "/api/v1/calls"), Some(Route::CreateCall));
        assert_eq!(c(Method::GET, "/api/v1/calls/abc"), Some(Route::GetCall));
        assert_eq!(c(Method::PATCH, "/api/v1/calls/abc"), Some(Route::UpdateCall));
        assert_eq!(c(Method::DELETE, "/api/v1/calls/abc"), Some(Route::Other));
        assert_eq!(c(Method::GET, "/api/v1/calls/a/b"), Some(Route::Other));
        assert_eq!(c(Method::GET, "/api/v1/health"), Some(Route::Health));
        assert_eq!(
            c(Method::POST, "/webhooks/twilio/voice"),
            Some(Route::VoiceWebhook)
        );
        assert_eq!(
            c(Method::GET, "/webhooks/twilio/media/CA1"),
            Some(Route::MediaStream)
        );
        assert_eq!(c(Method::GET, "/nope"), Some(Route::Other));
        assert_eq!(c(Method::GET, "/_sim/stats"), None);
        assert_eq!(c(Method::GET, "/metrics"), None);
    }

    #[test]
    fn bucket_allows_a_burst_then_refuses() {
        let limiter = RateLimiter::new(5.0);
        let ip = IpAddr::from([10, 0, 0, 1]);
        let passed = (0..20).filter(|_| limiter.check(ip).is_ok()).count();
        assert_eq!(passed, 5);
        let wait = limiter.check(ip).unwrap_err();
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        // Another client has its own bucket.
        assert!(limiter.check(IpAddr::from([10, 0, 0, 2])).is_ok());
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let limiter = RateLimiter::new(100.0);
        let ip = IpAddr::from([10, 0, 0, 1]);
        while limiter.check(ip).is_ok() {}
        std::thread::sleep(Duration::from_millis(55));
        let passed = (0..100).filter(|_| limiter.check(ip).is_ok()).count();
        assert!((4..=7).contains(&passed), "{passed}");
    }
}
