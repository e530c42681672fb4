//! The front door of every request: counting per route and status, and fault injection for the
//! REST API and webhooks (never for media stream upgrades, unknown paths or the simulator's own
//! endpoints). Also the deliberate memory leak of `--leak-kb-per-call`.
//!
//! The faults, in the order a request meets them:
//! - `--rate-limit N`: a per-client token bucket ([`RateLimiter`]); over it, 429 with
//!   `Retry-After`.
//! - `--api-latency-ms`, `--api-jitter-ms`: a delay before anything else is decided.
//! - `--stall-rate F`: the request is accepted and never answered. It is held until the client
//!   gives up (the client closing the connection ends it: hyper notices the end of file and drops
//!   the held request) or the simulator shuts down (which cuts every held request's connection,
//!   so stalls never hold up a graceful shutdown).
//!   At most [`MAX_HELD`] requests are held at once, each for at most [`MAX_HOLD`]: past either,
//!   the connection is cut (closed with no answer), so a client that never gives up cannot grow
//!   the simulator's memory without bound.
//! - `--error-rate F`: 500 `{"detail": "injected error (--error-rate)"}`.
//! - `--garbage-rate F`: the request is served, then its answer is replaced by garbage of
//!   `--garbage-kind`, with a success status (the answer's own when it was one, such as a
//!   create's 201, else 200), so only the body can tell:
//!   - `not-json`: `text/html`, an HTML error page of the kind a proxy serves, where JSON was due;
//!   - `wrong-type`: the answer's JSON body (or a small JSON object, where the answer was not
//!     JSON), labelled `text/plain`;
//!   - `truncated`: the answer's body with its full `Content-Length`, of which only the first half
//!     is sent before the connection is cut;
//!   - `huge`: a valid 64 MiB JSON object ([`HUGE_BYTES`]), streamed from one static 64 KiB
//!     block (nothing is allocated per answer);
//!   - `mixed`: each of the four in turn.
//!
//! A stall has no status to count, and garbage counts under the success status it was sent with,
//! so both are also counted apart, under the stats' `faults`: `stalled` (in [`stall`], as each
//! stall starts, with `stalls_cut_at_once` for those cut at once past [`MAX_HELD`]) and
//! `garbage` by the kind sent (in [`garbage`], a `mixed` answer under the kind it took).

use super::stats::{Route, Stats, GARBAGE_KINDS};
use super::{GarbageKind, Sim};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use hyper::body::{Frame, SizeHint};
use rand::Rng;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::watch;
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
    // A cut connection answered nothing: no status to count.
    if response.extensions().get::<Cut>().is_none() {
        sim.stats.status(response.status().as_u16());
    }
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
    if chance(sim.opts.stall_rate) {
        // Let go of the request (and its body) so hyper goes on reading the connection and sees
        // the client give up.
        drop(req);
        return stall(&sim.stalls, &sim.stats).await;
    }
    if chance(sim.opts.error_rate) {
        sim.stats.injected_errors.fetch_add(1, Relaxed);
        return super::api::detail(StatusCode::INTERNAL_SERVER_ERROR, "injected error (--error-rate)");
    }
    let response = call(router, req).await;
    if chance(sim.opts.garbage_rate) {
        return garbage(sim.opts.garbage_kind, &sim.stats, response).await;
    }
    response
}

/// True with probability `rate` (never drawn for 0).
fn chance(rate: f64) -> bool {
    rate > 0.0 && rand::rng().random_bool(rate)
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

/// Most requests held unanswered at once by one simulator (`--stall-rate`); past it, a stalled
/// request's connection is cut at once.
pub(crate) const MAX_HELD: usize = 10_000;
/// Longest a stalled request is held before its connection is cut.
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(600);
/// Marks an answer that must never be sent: its body fails before a byte is written, so hyper
/// closes the connection with no answer at all.
#[derive(Clone, Copy)]
struct Cut;

/// The stalled requests of one simulator (`--stall-rate`).
pub(crate) struct Stalls {
    held: AtomicUsize,
    /// Turns true when the simulator stops: every held request is cut.
    stopped: watch::Sender<bool>,
}

impl Default for Stalls {
    fn default() -> Self {
        Stalls {
            held: AtomicUsize::new(0),
            stopped: watch::Sender::new(false),
        }
    }
}

impl Stalls {
    /// Cuts every held request, and any stalled from now on (the simulator is stopping).
    pub(crate) fn release_all(&self) {
        self.stopped.send_replace(true);
    }

    /// Requests held now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.load(Relaxed)
    }

    /// Holds one more request, unless [`MAX_HELD`] already are.
    fn hold(&self) -> Option<Held<'_>> {
        let taken = self
            .held
            .fetch_update(Relaxed, Relaxed, |n| (n < MAX_HELD).then_some(n + 1));
        // Lazily: a `Held` made and dropped here would let go of a place never taken.
        taken.is_ok().then(|| Held(self))
    }
}

/// One held request; counted while it lives (hyper drops it when the client gives up).
struct Held<'a>(&'a Stalls);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Relaxed);
    }
}

/// Holds a request unanswered until the client gives up (hyper then drops this future), the
/// simulator stops, or [`MAX_HOLD`] passes; then cuts the connection. Counted in `stats` as it
/// starts (and apart when cut at once, [`MAX_HELD`] being held already).
async fn stall(stalls: &Stalls, stats: &Stats) -> Response {
    stats.faults.stalled.fetch_add(1, Relaxed);
    let Some(_held) = stalls.hold() else {
        stats.faults.stalls_cut_at_once.fetch_add(1, Relaxed);
        return cut();
    };
    let mut stopped = stalls.stopped.subscribe();
    tokio::select! {
        _ = stopped.wait_for(|&stopped| stopped) => {}
        _ = tokio::time::sleep(MAX_HOLD) => {}
    }
    cut()
}

/// An answer that closes the connection without sending anything.
fn cut() -> Response {
    let mut response = Response::new(Body::new(FaultyBody::Fail));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.extensions_mut().insert(Cut);
    response
}

/// Size of a `huge` garbage answer.
pub(crate) const HUGE_BYTES: u64 = 64 << 20;
const HUGE_HEAD: &[u8] = br#"{"detail":"a huge answer (--garbage-kind huge)","padding":""#;
const HUGE_TAIL: &[u8] = br#""}"#;
/// The padding of a huge answer is sent in blocks of this one.
static PADDING: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// How long a truncated answer waits after its first half, so that half is sent before the cut.
const CUT_AFTER: Duration = Duration::from_millis(20);

/// The HTML page of a `not-json` answer.
const HTML_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n\
<body><h1>Bad Gateway</h1><p>The upstream server sent an invalid response \
(--garbage-kind not-json).</p><hr><address>nginx</address></body></html>\n";

/// The body of a `wrong-type` answer where the real answer was not JSON.
const WRONG_TYPE_JSON: &str = r#"{"detail":"JSON labelled text/plain (--garbage-kind wrong-type)"}"#;

/// Answers built by hand: a streamed huge body, a body cut short, or one that fails at once.
enum FaultyBody {
    /// [`HUGE_BYTES`] of JSON: `sent` bytes so far.
    Huge { sent: u64 },
    /// `part` then, after `pause`, an error that cuts the connection; `len` is the length
    /// announced.
    Truncated {
        part: Option<Bytes>,
        pause: Pin<Box<tokio::time::Sleep>>,
        len: u64,
    },
    /// An error before anything is written.
    Fail,
}

impl hyper::body::Body for FaultyBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let cut = || std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "cut on purpose");
        match self.get_mut() {
            FaultyBody::Huge { sent } => {
                let padding_end = HUGE_BYTES - HUGE_TAIL.len() as u64;
                let chunk = if *sent == 0 {
                    Bytes::from_static(HUGE_HEAD)
                } else if *sent < padding_end {
                    let n = (padding_end - *sent).min(PADDING.len() as u64) as usize;
                    Bytes::from_static(&PADDING[..n])
                } else if *sent < HUGE_BYTES {
                    Bytes::from_static(HUGE_TAIL)
                } else {
                    return Poll::Ready(None);
                };
                *sent += chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            FaultyBody::Truncated { part, pause, .. } => match part.take() {
                Some(part) => Poll::Ready(Some(Ok(Frame::data(part)))),
                None => pause.as_mut().poll(cx).map(|()| Some(Err(cut()))),
            },
            FaultyBody::Fail => Poll::Ready(Some(Err(cut()))),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FaultyBody::Huge { .. } => SizeHint::with_exact(HUGE_BYTES),
            FaultyBody::Truncated { len, .. } => SizeHint::with_exact(*len),
            FaultyBody::Fail => SizeHint::default(),
        }
    }
}

/// The kind a `mixed` garbage answer takes next.
static NEXT_KIND: AtomicUsize = AtomicUsize::new(0);

/// Replaces `response` by garbage of `kind`, with its status if a success, else 200; counts it
/// in `stats` under the kind sent.
async fn garbage(kind: GarbageKind, stats: &Stats, response: Response) -> Response {
    let kind = match kind {
        GarbageKind::Mixed => GARBAGE_KINDS[NEXT_KIND.fetch_add(1, Relaxed) % GARBAGE_KINDS.len()],
        kind => kind,
    };
    stats.garbage(kind);
    // A success keeps its status (201 for a create), so the body is what fails.
    let status = match response.status() {
        status if status.is_success() => status,
        _ => StatusCode::OK,
    };
    let json = HeaderValue::from_static("application/json");
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let was_json = content_type
        .as_ref()
        .is_some_and(|t| t.as_bytes().starts_with(json.as_bytes()));
    let (content_type, body) = match kind {
        GarbageKind::NotJson => (
            HeaderValue::from_static("text/html; charset=utf-8"),
            Body::from(HTML_PAGE),
        ),
        GarbageKind::WrongType => {
            let body = match was_json {
                true => body_of(response).await,
                false => None,
            };
            let body = body.unwrap_or_else(|| Bytes::from_static(WRONG_TYPE_JSON.as_bytes()));
            (
                HeaderValue::from_static("text/plain; charset=utf-8"),
                Body::from(body),
            )
        }
        GarbageKind::Truncated => {
            let body = body_of(response).await.filter(|b| b.len() >= 2);
            let (content_type, body) = match body {
                Some(body) => (content_type.unwrap_or(json), body),
                None => (json, Bytes::from_static(WRONG_TYPE_JSON.as_bytes())),
            };
            let len = body.len() as u64;
            let body = FaultyBody::Truncated {
                part: Some(body.slice(..body.len() / 2)),
                pause: Box::pin(tokio::time::sleep(CUT_AFTER)),
                len,
            };
            (content_type, Body::new(body))
        }
        GarbageKind::Huge | GarbageKind::Mixed => (json, Body::new(FaultyBody::Huge { sent: 0 })),
    };
    let mut garbage = Response::new(body);
    *garbage.status_mut() = status;
    garbage.headers_mut().insert(header::CONTENT_TYPE, content_type);
    garbage
}

/// The whole body of one of the simulator's own answers (small, already in memory).
async fn body_of(response: Response) -> Option<Bytes> {
    axum::body::to_bytes(response.into_body(), 1 << 20).await.ok()
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

    /// Every frame of a body, or the error it ends with.
    async fn frames(body: Body) -> (Vec<Bytes>, Option<String>) {
        use hyper::body::Body as _;
        let mut body = std::pin::pin!(body);
        let mut frames = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            match frame {
                Ok(frame) => frames.extend(frame.into_data().ok()),
                Err(e) => return (frames, Some(e.to_string())),
            }
        }
        (frames, None)
    }

    fn json_answer(status: StatusCode, body: &'static str) -> Response {
        super::super::api::json(status, body.to_string())
    }

    fn content_type(response: &Response) -> &str {
        response.headers()[header::CONTENT_TYPE].to_str().unwrap()
    }

    #[tokio::test]
    async fn huge_answers_are_64_mib_of_json_streamed_from_one_block() {
        let stats = Stats::new();
        let response = garbage(GarbageKind::Huge, &stats, json_answer(StatusCode::OK, "[]")).await;
        assert_eq!(stats.to_json(0)["faults"]["garbage"]["huge"], 1);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(content_type(&response), "application/json");
        let body = response.into_body();
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(HUGE_BYTES));
        let (frames, error) = frames(body).await;
        assert_eq!(error, None);
        assert_eq!(frames.iter().map(|f| f.len() as u64).sum::<u64>(), HUGE_BYTES);
        assert_eq!(frames[0], HUGE_HEAD);
        assert_eq!(frames[frames.len() - 1], HUGE_TAIL);
        // No block is allocated per answer: the padding is the one static block.
        assert!(frames[1..frames.len() - 1]
            .iter()
            .all(|f| f.as_ptr() == PADDING.as_ptr() && f.iter().all(|&b| b == b'x')));
    }

    #[tokio::test]
    async fn truncated_answers_announce_the_whole_body_and_send_half() {
        let answer = r#"{"id":"abc","status":"ringing"}"#;
        let stats = Stats::new();
        let response = garbage(
            GarbageKind::Truncated,
            &stats,
            json_answer(StatusCode::CREATED, answer),
        )
        .await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "a success keeps its status"
        );
        assert_eq!(content_type(&response), "application/json");
        let body = response.into_body();
        assert_eq!(
            hyper::body::Body::size_hint(&body).exact(),
            Some(answer.len() as u64)
        );
        let (frames, error) = frames(body).await;
        assert_eq!(frames.concat(), answer.as_bytes()[..answer.len() / 2]);
        assert_eq!(error.as_deref(), Some("cut on purpose"));
    }

    #[tokio::test]
    async fn wrong_type_and_not_json_answers_are_200s_with_the_wrong_label() {
        let stats = Stats::new();
        let wrong = garbage(
            GarbageKind::WrongType,
            &stats,
            json_answer(StatusCode::OK, r#"{"a":1}"#),
        )
        .await;
        assert_eq!(content_type(&wrong), "text/plain; charset=utf-8");
        assert_eq!(
            frames(wrong.into_body()).await,
            (vec![Bytes::from(r#"{"a":1}"#)], None)
        );
        // A refusal turns into a success.
        let html = garbage(
            GarbageKind::NotJson,
            &stats,
            json_answer(StatusCode::NOT_FOUND, "{}"),
        )
        .await;
        assert_eq!(html.status(), StatusCode::OK);
        assert_eq!(content_type(&html), "text/html; charset=utf-8");
        let (body, _) = frames(html.into_body()).await;
        assert!(body.concat().starts_with(b"<!DOCTYPE html>"));
        assert_eq!(
            stats.to_json(0)["faults"]["garbage"],
            serde_json::json!({"not-json": 1, "wrong-type": 1, "truncated": 0, "huge": 0})
        );
    }

    #[tokio::test]
    async fn mixed_garbage_takes_each_kind_in_turn() {
        let stats = Stats::new();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..4 {
            let response = garbage(GarbageKind::Mixed, &stats, json_answer(StatusCode::OK, "[1,2]")).await;
            let kind = match hyper::body::Body::size_hint(response.body()).exact() {
                Some(HUGE_BYTES) => "huge".to_string(),
                _ => content_type(&response).to_string(),
            };
            seen.insert(kind);
        }
        assert_eq!(seen.len(), 4, "{seen:?}");
        // Counted under the kind each took, never as "mixed".
        assert_eq!(
            stats.to_json(0)["faults"]["garbage"],
            serde_json::json!({"not-json": 1, "wrong-type": 1, "truncated": 1, "huge": 1})
        );
    }

    #[tokio::test]
    async fn stalled_requests_end_when_the_client_gives_up_or_the_simulator_stops() {
        let sim = super::super::start(super::super::ServeOptions {
            stall_rate: 1.0,
            ..super::super::ServeOptions::for_tests()
        })
        .await
        .unwrap();
        let url = format!("{}/api/v1/health", sim.url());
        let client = reqwest::Client::new();
        // A client that gives up: a timeout, and the simulator lets go of the request.
        let e = client
            .get(&url)
            .timeout(Duration::from_millis(300))
            .send()
            .await
            .unwrap_err();
        assert!(e.is_timeout(), "{e}");
        let state = sim.sim.clone();
        let held = || state.stalls.held();
        let deadline = Instant::now() + Duration::from_secs(5);
        while held() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(held(), 0, "released when the client gave up");
        let faults = || state.stats_json()["faults"].clone();
        assert_eq!(faults()["stalled"], 1);
        // A client that waits: the shutdown cuts its connection, at once, with no answer.
        let waiting = tokio::spawn(client.get(&url).send());
        while held() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(held(), 1);
        assert_eq!(faults()["stalled"], 2);
        let started = Instant::now();
        sim.shutdown().await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let answer = tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .unwrap()
            .unwrap();
        assert!(answer.is_err(), "no answer: {answer:?}");
        assert_eq!(held(), 0);
        assert_eq!(faults()["stalled"], 2);
        assert_eq!(faults()["stalls_cut_at_once"], 0);
        // A stall, not an answer: no status counted for any of them.
        assert_eq!(state.stats_json()["status_codes"], serde_json::json!({}));
    }

    #[tokio::test]
    async fn stalls_past_the_cap_are_cut_at_once_and_counted() {
        let (stalls, stats) = (Stalls::default(), Stats::new());
        stalls.held.store(MAX_HELD, Relaxed);
        let response = tokio::time::timeout(Duration::from_secs(1), stall(&stalls, &stats))
            .await
            .expect("cut at once, not held");
        assert!(response.extensions().get::<Cut>().is_some());
        assert_eq!(stalls.held(), MAX_HELD, "nothing more held");
        let faults = &stats.to_json(0)["faults"];
        assert_eq!(faults["stalled"], 1);
        assert_eq!(faults["stalls_cut_at_once"], 1);
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let limiter = RateLimiter::new(100.0);
        let ip = IpAddr::from([10, 0, 0, 1]);
        while limiter.check(ip).is_ok() {}
        let drained = Instant::now();
        std::thread::sleep(Duration::from_millis(55));
        let woke = drained.elapsed().as_secs_f64();
        let passed = (0..100).filter(|_| limiter.check(ip).is_ok()).count() as f64;
        let done = drained.elapsed().as_secs_f64();
        // Measured, not assumed: a busy machine may sleep longer than asked. Less than a token
        // was left at the last refused check, just before `drained`.
        assert!(
            passed >= (100.0 * woke).floor() - 1.0 && passed <= (100.0 * done).ceil() + 1.0,
            "{passed} passed {woke:.3}-{done:.3} s after the bucket ran dry"
        );
    }
}
