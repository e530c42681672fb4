//! Failed requests and calls by reason: the run's one tally of what went wrong.
//!
//! Scenarios count every failure here under a short reason ("Unexpected status 500",
//! "connection refused", "WS call: refused upgrade: 503"); the console prints the counts of the
//! last few seconds while the run goes, the results file keeps the whole run's, and gaggle
//! workers send theirs to the manager, which adds them up.
//!
//! Goose also logs a line for every request that got no answer. Scenarios give such requests
//! their root cause ([`FailureTally::count_transport`]); lines of requests that failed in code
//! that counts nothing (a user's own scenario) are filed under [`UNATTRIBUTED`] when the tally
//! is read, once the console says how many lines it saw ([`FailureTally::attach_unanswered`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

/// Failed requests by reason.
pub type Tally = BTreeMap<String, u64>;

/// The reason Goose's unanswered-request lines are filed under when no scenario gave one.
pub const UNATTRIBUTED: &str = "error sending request (no reason given)";

/// The run's failures by reason, shared by every user (an `Arc` of it in the measurements).
#[derive(Debug, Default)]
pub struct FailureTally {
    counts: Mutex<Counts>,
    /// Requests without an answer that a scenario gave a reason for.
    attributed: AtomicU64,
    /// The console's count of Goose's unanswered-request lines, when the console is ours.
    unanswered: OnceLock<Arc<AtomicU64>>,
}

#[derive(Debug, Default)]
struct Counts {
    /// Whole run, by reason.
    run: Tally,
    /// Since the last [`FailureTally::take_window`], by reason.
    window: Tally,
}

impl FailureTally {
    /// Counts one failure under `reason`.
    pub fn count(&self, reason: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.window.entry(reason.to_string()).or_default() += 1;
        *counts.run.entry(reason.to_string()).or_default() += 1;
    }

    /// Counts a request that got no answer under its root cause ("connection refused",
    /// "timeout"), and returns that reason.
    pub fn count_transport(&self, e: &reqwest::Error) -> String {
        let reason = transport_reason(e);
        self.attributed.fetch_add(1, Relaxed);
        self.count(&reason);
        reason
    }

    /// Lets the tally file the console's swallowed unanswered-request lines that no scenario
    /// gave a reason for (the first counter attached stays).
    pub fn attach_unanswered(&self, lines: Arc<AtomicU64>) {
        let _ = self.unanswered.set(lines);
    }

    /// The failures since the last call (the console's report every few seconds).
    pub fn take_window(&self) -> Tally {
        self.settle_unattributed();
        std::mem::take(&mut self.counts.lock().unwrap_or_else(|e| e.into_inner()).window)
    }

    /// The whole run's failures, leaving the tally empty for the next run (the web UI runs
    /// several in one process).
    pub fn take(&self) -> Tally {
        self.settle_unattributed();
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.window.clear();
        std::mem::take(&mut counts.run)
    }

    /// The whole run's failures so far, leaving the count running (a gaggle worker's progress).
    pub fn peek(&self) -> Tally {
        self.settle_unattributed();
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).run.clone()
    }

    /// Files the unanswered-request lines no scenario gave a reason for.
    fn settle_unattributed(&self) {
        let Some(lines) = self.unanswered.get() else {
            return;
        };
        let swallowed = lines.swap(0, Relaxed);
        let attributed = self.attributed.swap(0, Relaxed);
        // A scenario may count a failure a moment before Goose's line for it arrives; keep the
        // excess for the next settling rather than losing it.
        if attributed > swallowed {
            self.attributed.fetch_add(attributed - swallowed, Relaxed);
        } else if swallowed > attributed {
            let n = swallowed - attributed;
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            *counts.window.entry(UNATTRIBUTED.into()).or_default() += n;
            *counts.run.entry(UNATTRIBUTED.into()).or_default() += n;
        }
    }
}

/// Adds `from`'s counts by reason to `into`'s.
pub fn merge_counts(into: &mut Tally, from: &Tally) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// The root cause of a request error, as a short reason: reqwest's own text ("error sending
/// request for url (...)") says which request, never why.
pub fn transport_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timeout".into();
    }
    let mut source: &dyn std::error::Error = e;
    let mut has_cause = false;
    while let Some(next) = source.source() {
        source = next;
        has_cause = true;
    }
    let text = source.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let text = text.to_lowercase();
    if text.is_empty() || !has_cause {
        // No source: reqwest's own kind, without the URL.
        return text
            .split(" for url")
            .next()
            .unwrap_or("request failed")
            .to_string();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unanswered_lines_without_a_reason_are_filed_apart() {
        let tally = FailureTally::default();
        let lines = Arc::new(AtomicU64::new(0));
        tally.attach_unanswered(lines.clone());
        tally.count("Unexpected status 500");
        lines.fetch_add(3, Relaxed);
        tally.attributed.fetch_add(1, Relaxed);
        let window = tally.take_window();
        assert_eq!(window.get(UNATTRIBUTED), Some(&2));
        assert_eq!(window.get("Unexpected status 500"), Some(&1));
        assert!(tally.take_window().is_empty());
        // The run keeps what the window handed out, until taken.
        assert_eq!(tally.peek().values().sum::<u64>(), 3);
        assert_eq!(tally.take().values().sum::<u64>(), 3);
        assert!(tally.take().is_empty());
    }

    #[test]
    fn a_reason_counted_before_goose_s_line_is_kept_for_later() {
        let tally = FailureTally::default();
        let lines = Arc::new(AtomicU64::new(0));
        tally.attach_unanswered(lines.clone());
        tally.attributed.fetch_add(2, Relaxed);
        assert!(tally.take_window().is_empty());
        lines.fetch_add(2, Relaxed);
        assert!(tally.take_window().is_empty());
    }

    #[tokio::test]
    async fn transport_reason_is_the_root_cause() {
        // A port nothing listens on: bind one, note it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = reqwest::get(format!("http://127.0.0.1:{port}/x"))
            .await
            .unwrap_err();
        assert_eq!(transport_reason(&e), "connection refused");

        // A listener that never answers, and a client that gives up.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let e = client.get(format!("http://{addr}/x")).send().await.unwrap_err();
        assert_eq!(transport_reason(&e), "timeout");
        drop(listener);
    }
}
