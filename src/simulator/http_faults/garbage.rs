//! `--garbage-rate`: answers replaced by garbage of `--garbage-kind`, with a success status
//! (the answer's own when it was one, such as a create's 201, else 200), so only the body can
//! tell:
//! - `not-json`: `text/html`, an HTML error page of the kind a proxy serves, where JSON was due;
//! - `wrong-type`: the answer's JSON body (or a small JSON object, where the answer was not
//!   JSON), labelled `text/plain`;
//! - `truncated`: the answer's body with its full `Content-Length`, of which only the first half
//!   is sent before the connection is cut;
//! - `huge`: a valid 64 MiB JSON object ([`super::body::HUGE_BYTES`]), streamed from one
//!   static 64 KiB block (nothing is allocated per answer);
//! - `mixed`: each of the four in turn.

use super::body::FaultyBody;
use crate::simulator::stats::{Stats, GARBAGE_KINDS};
use crate::simulator::GarbageKind;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// How long a truncated answer waits after its first half, so that half is sent before the cut.
const CUT_AFTER: Duration = Duration::from_millis(20);

/// The HTML page of a `not-json` answer.
const HTML_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n\
<body><h1>Bad Gateway</h1><p>The upstream server sent an invalid response \
(--garbage-kind not-json).</p><hr><address>nginx</address></body></html>\n";

/// The body of a `wrong-type` answer where the real answer was not JSON.
const WRONG_TYPE_JSON: &str = r#"{"detail":"JSON labelled text/plain (--garbage-kind wrong-type)"}"#;

/// One simulator's garbage answers: their kind, and for `mixed` the kind the next one takes.
pub(crate) struct GarbageAnswers {
    kind: GarbageKind,
    next_mixed: AtomicUsize,
}

impl GarbageAnswers {
    pub(crate) fn new(kind: GarbageKind) -> GarbageAnswers {
        GarbageAnswers {
            kind,
            next_mixed: AtomicUsize::new(0),
        }
    }

    /// The kind the next answer is sent as (`mixed` is none: it takes each in turn).
    fn next_kind(&self) -> GarbageKind {
        match self.kind {
            GarbageKind::Mixed => GARBAGE_KINDS[self.next_mixed.fetch_add(1, Relaxed) % GARBAGE_KINDS.len()],
            kind => kind,
        }
    }

    /// Replaces `response` by garbage, with its status if a success, else 200; counts it in
    /// `stats` under the kind sent.
    pub(crate) async fn replace(&self, stats: &Stats, response: Response) -> Response {
        let kind = self.next_kind();
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
}

/// The whole body of one of the simulator's own answers (small, already in memory).
async fn body_of(response: Response) -> Option<Bytes> {
    axum::body::to_bytes(response.into_body(), 1 << 20).await.ok()
}

#[cfg(test)]
mod tests {
    use super::super::body::{HUGE_BYTES, HUGE_HEAD, HUGE_TAIL, PADDING};
    use super::*;

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
        crate::simulator::api::json(status, body.to_string())
    }

    fn content_type(response: &Response) -> &str {
        response.headers()[header::CONTENT_TYPE].to_str().unwrap()
    }

    async fn garbage(kind: GarbageKind, stats: &Stats, response: Response) -> Response {
        GarbageAnswers::new(kind).replace(stats, response).await
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
        let (answers, stats) = (GarbageAnswers::new(GarbageKind::Mixed), Stats::new());
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..4 {
            let response = answers
                .replace(&stats, json_answer(StatusCode::OK, "[1,2]"))
                .await;
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
}
