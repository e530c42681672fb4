//! Answer bodies built by hand for the faults: a huge body streamed from one static block, a
//! body cut short of its announced length, and one that fails before a byte is written (which
//! makes hyper close the connection with no answer at all).

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::Response;
use hyper::body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Size of a `huge` garbage answer.
pub(crate) const HUGE_BYTES: u64 = 64 << 20;
pub(super) const HUGE_HEAD: &[u8] = br#"{"detail":"a huge answer (--garbage-kind huge)","padding":""#;
pub(super) const HUGE_TAIL: &[u8] = br#""}"#;
/// The padding of a huge answer is sent in blocks of this one.
pub(super) static PADDING: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// Answers built by hand: a streamed huge body, a body cut short, or one that fails at once.
pub(super) enum FaultyBody {
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

/// Marks an answer that must never be sent: its body fails before a byte is written, so hyper
/// closes the connection with no answer at all.
#[derive(Clone, Copy)]
struct Cut;

/// An answer that closes the connection without sending anything.
pub(super) fn cut() -> Response {
    let mut response = Response::new(Body::new(FaultyBody::Fail));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.extensions_mut().insert(Cut);
    response
}

/// Whether an answer is a cut connection (nothing is sent, so it has no status to count).
pub(crate) fn is_cut(response: &Response) -> bool {
    response.extensions().get::<Cut>().is_some()
}
