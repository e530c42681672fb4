//! The front door of every request: the routes, a count of each request by route and of each
//! answer by status, and the choice of which requests meet the faults of [`super::http_faults`]
//! (the REST API and webhooks; never media stream upgrades, unknown paths or the simulator's
//! own endpoints).

use super::stats::Route;
use super::{api, dispatch, http_faults, media, webhooks, Sim};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// Largest request body accepted (larger ones are refused with 413).
const MAX_BODY: usize = 64 * 1024;

fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/api/v1/health", get(api::health))
        .route("/api/v1/calls", get(api::list_calls).post(api::create_call))
        .route("/api/v1/calls/{id}", get(api::get_call).patch(api::update_call))
        .route("/webhooks/twilio/status", post(webhooks::status))
        .route("/webhooks/twilio/voice", post(webhooks::voice))
        .route("/webhooks/twilio/media/{call_sid}", get(media::media_stream))
        .route("/_sim/stats", get(stats_handler))
        .route("/metrics", get(metrics_handler))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(sim)
}

async fn stats_handler(State(sim): State<Arc<Sim>>) -> Response {
    axum::Json(sim.stats_json()).into_response()
}

async fn metrics_handler(State(sim): State<Arc<Sim>>) -> Response {
    let text = sim.stats.prometheus(sim.store.len());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn not_found() -> Response {
    api::detail(StatusCode::NOT_FOUND, "Not Found")
}

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
/// status (404, 405 and 413 from the router included), and sends the REST API's and webhooks'
/// requests through the faults. A plain service rather than `from_fn` middleware: one
/// allocation per request instead of several.
#[derive(Clone)]
pub(crate) struct FrontDoor {
    sim: Arc<Sim>,
    router: Router,
}

impl FrontDoor {
    pub(crate) fn new(sim: Arc<Sim>) -> FrontDoor {
        FrontDoor {
            router: router(sim.clone()),
            sim,
        }
    }
}

impl Service<Request> for FrontDoor {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A Router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let (sim, router) = (self.sim.clone(), self.router.clone());
        Box::pin(async move { Ok(enter(sim, router, req).await) })
    }
}

async fn enter(sim: Arc<Sim>, mut router: Router, req: Request) -> Response {
    let Some(route) = classify(req.method(), req.uri().path()) else {
        return dispatch(&mut router, req).await;
    };
    sim.stats.request(route);
    let response = if faulty(route) {
        http_faults::with_faults(&sim, &mut router, req).await
    } else {
        dispatch(&mut router, req).await
    };
    // A cut connection answered nothing: no status to count.
    if !http_faults::is_cut(&response) {
        sim.stats.status(response.status().as_u16());
    }
    response
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
}
