//! Admission of media streams: at most `--max-streams` at once (a semaphore's permits), none
//! once the simulator is shutting down, and the signal that tells every live stream to close
//! with a close frame (a cancellation token). Each stream waits on a child token of its own:
//! a token's state sits behind a lock, so one token polled by every stream on every frame
//! would have them all meet on that lock; a child is made and dropped once per stream.

use crate::simulator::api::detail;
use crate::simulator::Sim;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Which media streams may open, and the shutdown signal of those that did.
pub(crate) struct StreamGate {
    /// One permit per concurrent stream allowed; `None` when there is no limit.
    places: Option<Arc<Semaphore>>,
    /// Cancelled when the simulator stops: no stream is admitted any more, and each live one
    /// closes.
    shutdown: CancellationToken,
}

impl StreamGate {
    /// A gate admitting at most `max_streams` at once (any number when `None`).
    pub(crate) fn new(max_streams: Option<usize>) -> StreamGate {
        StreamGate {
            places: max_streams.map(|max| Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS)))),
            shutdown: CancellationToken::new(),
        }
    }

    /// Refuses new streams and tells every live one to close.
    pub(crate) fn close_all(&self) {
        self.shutdown.cancel();
    }
}

/// Why a stream was not admitted (answered 503).
#[derive(Debug, PartialEq)]
pub(super) enum Refusal {
    ShuttingDown,
    Full,
}

impl Refusal {
    pub(super) fn response(&self) -> Response {
        let why = match self {
            Refusal::ShuttingDown => "the server is shutting down",
            Refusal::Full => "too many concurrent media streams",
        };
        let mut refusal = detail(StatusCode::SERVICE_UNAVAILABLE, why);
        refusal
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        refusal
    }
}

/// An admitted stream's place among the concurrent ones, given back when dropped; the stream
/// counts in the stats' `active` while it is held.
pub(super) struct StreamPermit {
    sim: Arc<Sim>,
    _place: Option<OwnedSemaphorePermit>,
    /// This stream's child of the gate's shutdown token.
    shutdown: CancellationToken,
}

impl StreamPermit {
    /// Admits one more stream, unless the simulator is shutting down or `--max-streams` are
    /// open.
    pub(super) fn admit(sim: &Arc<Sim>) -> Result<StreamPermit, Refusal> {
        let gate = &sim.stream_gate;
        if gate.shutdown.is_cancelled() {
            return Err(Refusal::ShuttingDown);
        }
        let place = match &gate.places {
            Some(places) => Some(places.clone().try_acquire_owned().map_err(|_| Refusal::Full)?),
            None => None,
        };
        sim.stats.streams.active.fetch_add(1, Relaxed);
        Ok(StreamPermit {
            sim: sim.clone(),
            _place: place,
            shutdown: gate.shutdown.child_token(),
        })
    }

    pub(super) fn sim(&self) -> &Arc<Sim> {
        &self.sim
    }

    /// Cancelled when the stream must close because the simulator is stopping.
    pub(super) fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.sim.stats.streams.active.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::ServeOptions;

    fn sim(max_streams: Option<usize>) -> Arc<Sim> {
        let opts = ServeOptions {
            max_streams,
            ..ServeOptions::for_tests()
        };
        Arc::new(Sim::new(opts, "127.0.0.1:1".parse().unwrap()))
    }

    #[test]
    fn streams_past_the_limit_are_refused_until_one_ends() {
        let sim = sim(Some(2));
        let active = || sim.stats.streams.active.load(Relaxed);
        let first = StreamPermit::admit(&sim).unwrap();
        let _second = StreamPermit::admit(&sim).unwrap();
        assert_eq!(StreamPermit::admit(&sim).err(), Some(Refusal::Full));
        assert_eq!(active(), 2);
        drop(first);
        assert_eq!(active(), 1);
        assert!(StreamPermit::admit(&sim).is_ok());
        assert_eq!(active(), 1, "a permit dropped at once gives its place back");
    }

    #[test]
    fn a_shutdown_refuses_new_streams_and_closes_the_live_ones() {
        let sim = sim(None);
        let live = StreamPermit::admit(&sim).unwrap();
        assert!(!live.shutdown().is_cancelled());
        sim.stream_gate.close_all();
        assert!(live.shutdown().is_cancelled());
        assert_eq!(StreamPermit::admit(&sim).err(), Some(Refusal::ShuttingDown));
    }
}
