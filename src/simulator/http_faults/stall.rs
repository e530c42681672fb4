//! `--stall-rate`: requests accepted and never answered.
//!
//! A stalled request is held until the client gives up (the client closing the connection ends
//! it: hyper notices the end of file and drops the held request) or the simulator shuts down
//! (which cuts every held request's connection, so stalls never hold up a graceful shutdown).
//! At most [`MAX_HELD`] requests are held at once, each for at most [`MAX_HOLD`]: past either,
//! the connection is cut (closed with no answer), so a client that never gives up cannot grow
//! the simulator's memory without bound.

use super::body::cut;
use crate::simulator::stats::Stats;
use axum::response::Response;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::watch;

/// Most requests held unanswered at once by one simulator; past it, a stalled request's
/// connection is cut at once.
pub(crate) const MAX_HELD: usize = 10_000;
/// Longest a stalled request is held before its connection is cut.
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(600);

/// The stalled requests of one simulator.
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
pub(super) async fn stall(stalls: &Stalls, stats: &Stats) -> Response {
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

#[cfg(test)]
mod tests {
    use super::super::is_cut;
    use super::*;
    use crate::simulator::{start, ServeOptions};
    use std::time::Instant;

    #[tokio::test]
    async fn stalled_requests_end_when_the_client_gives_up_or_the_simulator_stops() {
        let sim = start(ServeOptions {
            stall_rate: 1.0,
            ..ServeOptions::for_tests()
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
        assert!(is_cut(&response));
        assert_eq!(stalls.held(), MAX_HELD, "nothing more held");
        let faults = &stats.to_json(0)["faults"];
        assert_eq!(faults["stalled"], 1);
        assert_eq!(faults["stalls_cut_at_once"], 1);
    }
}
