//! What the media-stream and AI-call scenarios measure beyond Goose's own request metrics.
//!
//! Goose keeps latencies per request row; a call also has frames, lateness, marks and the
//! real-time factor of each AI turn. Scenarios fill a shared [`Measurements`] (cheaply: a call
//! keeps local tallies and merges them in about once a second), the post-run analysis reads a
//! [`Snapshot`] of it, and distributed runs merge snapshots exactly: counts add, histograms add
//! bucket by bucket, per-turn samples concatenate.

pub mod failures;
pub mod memory;
pub mod slope;

pub use failures::merge_counts;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Sub-buckets per power of two: at most 1/64 (1.6 %) wide, as in Goose's own histograms.
const SUB_BITS: u32 = 6;

/// A log-linear histogram of non-negative integers (microseconds, usually), mergeable exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Bucket floor -> count.
    pub buckets: BTreeMap<u64, u64>,
    pub count: u64,
    pub sum: u64,
    pub min: u64,
    pub max: u64,
}

fn bucket_floor(v: u64) -> u64 {
    if v < (2 << SUB_BITS) {
        return v;
    }
    let shift = 63 - v.leading_zeros() - SUB_BITS;
    (v >> shift) << shift
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        self.record_n(v, 1);
    }

    /// Records `n` occurrences of `v` at once.
    pub fn record_n(&mut self, v: u64, n: u64) {
        if n == 0 {
            return;
        }
        *self.buckets.entry(bucket_floor(v)).or_default() += n;
        if self.count == 0 || v < self.min {
            self.min = v;
        }
        self.max = self.max.max(v);
        self.count += n;
        self.sum = self.sum.saturating_add(v.saturating_mul(n));
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        for (b, c) in &other.buckets {
            *self.buckets.entry(*b).or_default() += c;
        }
        self.min = if self.count == 0 {
            other.min
        } else {
            self.min.min(other.min)
        };
        self.max = self.max.max(other.max);
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The value at quantile `q` (0.0..=1.0): the middle of its bucket, clamped to min..=max.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (&floor, &c) in &self.buckets {
            seen += c;
            if seen >= rank {
                let width = if floor < (2 << SUB_BITS) {
                    1
                } else {
                    1u64 << (63 - floor.leading_zeros() - SUB_BITS)
                };
                // A histogram read from a file may hold min > max: never panic on it.
                return (floor + width / 2).min(self.max).max(self.min.min(self.max));
            }
        }
        self.max
    }

    /// Count of values strictly above `v` (by bucket: exact below 128).
    pub fn count_above(&self, v: u64) -> u64 {
        self.buckets.range(bucket_floor(v) + 1..).map(|(_, c)| c).sum()
    }
}

/// Media-stream calls (and the media side of AI calls in stream mode).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamStats {
    /// Calls whose WebSocket handshake was attempted.
    pub calls_attempted: u64,
    /// Calls whose handshake succeeded.
    pub calls_connected: u64,
    /// Calls that ended well: connected, streamed to the end (or to the run's end), stopped.
    pub calls_completed: u64,
    /// Calls that failed, to connect or mid-call (the reason is in `errors`).
    pub calls_failed: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Media frames due by the 20 ms schedule while calls were up.
    pub frames_scheduled: u64,
    pub frames_sent: u64,
    /// Frames sent more than [`LATE_FRAME_US`] after their slot (skipped ones included).
    pub frames_late: u64,
    /// Frames never sent: so far behind schedule that their audio was dropped, not bunched.
    #[serde(default)]
    pub frames_skipped: u64,
    /// How late each frame went out after its slot, in µs.
    pub lateness_us: Histogram,
    /// WebSocket handshake time, in µs.
    pub connect_us: Histogram,
    /// `mark` round trips: from sending the audio before a mark to echoing it, in µs.
    pub marks_echoed: u64,
    pub clears_received: u64,
    /// Failure reason -> count ("refused upgrade: 503", "closed by server mid-call", ...).
    pub errors: BTreeMap<String, u64>,
}

/// A frame later than this after its slot is "late" (a quarter of a frame).
pub const LATE_FRAME_US: u64 = 5_000;

impl StreamStats {
    pub fn merge(&mut self, o: &StreamStats) {
        self.calls_attempted += o.calls_attempted;
        self.calls_connected += o.calls_connected;
        self.calls_completed += o.calls_completed;
        self.calls_failed += o.calls_failed;
        self.messages_sent += o.messages_sent;
        self.messages_received += o.messages_received;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.frames_scheduled += o.frames_scheduled;
        self.frames_sent += o.frames_sent;
        self.frames_late += o.frames_late;
        self.frames_skipped += o.frames_skipped;
        self.lateness_us.merge(&o.lateness_us);
        self.connect_us.merge(&o.connect_us);
        self.marks_echoed += o.marks_echoed;
        self.clears_received += o.clears_received;
        merge_counts(&mut self.errors, &o.errors);
    }

    pub fn error(&mut self, reason: impl Into<String>) {
        *self.errors.entry(reason.into()).or_default() += 1;
    }
}

/// One AI turn: the caller spoke, the agent answered (or did not).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// Seconds since the run started, when the turn ended.
    pub at_s: f64,
    pub audio_ms: f64,
    pub ok: bool,
    /// Turn time / utterance duration (0 when the turn failed).
    pub rtf: f64,
    /// Stream mode: end of utterance to the agent's first audio frame.
    pub ttfa_ms: Option<f64>,
    /// Stream mode: end of utterance to the last frame of the answer.
    pub turn_ms: Option<f64>,
    /// Mock mode: the three stages.
    pub stt_ms: Option<f64>,
    pub llm_ms: Option<f64>,
    pub tts_ms: Option<f64>,
}

/// AI audio calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AiStats {
    pub calls: u64,
    pub turns: Vec<Turn>,
    /// Failure reason -> count ("no answer within 10s", ...).
    pub errors: BTreeMap<String, u64>,
}

impl AiStats {
    pub fn merge(&mut self, o: &AiStats) {
        self.calls += o.calls;
        self.turns.extend(o.turns.iter().cloned());
        merge_counts(&mut self.errors, &o.errors);
    }

    pub fn error(&mut self, reason: impl Into<String>) {
        *self.errors.entry(reason.into()).or_default() += 1;
    }
}

/// Everything measured, at one moment; what the analysis reads and gaggle workers send.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub streams: StreamStats,
    pub ai: AiStats,
}

impl Snapshot {
    pub fn merge(&mut self, o: &Snapshot) {
        self.streams.merge(&o.streams);
        self.ai.merge(&o.ai);
    }
}

/// The run's shared measurements; scenarios hold an `Arc` of it.
#[derive(Debug)]
pub struct Measurements {
    started: std::time::Instant,
    /// Every failed request and call of the run, by reason.
    pub failures: failures::FailureTally,
    streams: Mutex<StreamStats>,
    ai: Mutex<AiStats>,
}

impl Default for Measurements {
    fn default() -> Self {
        Measurements {
            started: std::time::Instant::now(),
            failures: Default::default(),
            streams: Mutex::new(StreamStats::default()),
            ai: Mutex::new(AiStats::default()),
        }
    }
}

impl Measurements {
    /// Seconds since these measurements began (stamps AI turns).
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Adds a call's local tallies (then reset them: `std::mem::take`).
    pub fn add_streams(&self, s: &StreamStats) {
        self.streams.lock().unwrap_or_else(|e| e.into_inner()).merge(s);
    }

    pub fn add_ai(&self, a: &AiStats) {
        self.ai.lock().unwrap_or_else(|e| e.into_inner()).merge(a);
    }

    /// Everything measured so far, leaving the tallies empty (a new run started from the web UI).
    pub fn take(&self) -> Snapshot {
        Snapshot {
            streams: std::mem::take(&mut *self.streams.lock().unwrap_or_else(|e| e.into_inner())),
            ai: std::mem::take(&mut *self.ai.lock().unwrap_or_else(|e| e.into_inner())),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            streams: self.streams.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            ai: self.ai.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_a_bucket() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        for (q, want) in [(0.5, 5_000.0), (0.95, 9_500.0), (0.99, 9_900.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.016, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(0.0), 1);
        assert_eq!(h.quantile(1.0), 10_000);
        assert_eq!(h.count_above(100), 9_900);
    }

    #[test]
    fn merged_histograms_equal_one_histogram_of_the_union() {
        let (mut a, mut b, mut all) = (Histogram::default(), Histogram::default(), Histogram::default());
        for v in (0..5_000u64).map(|i| i * 37 % 20_011) {
            if v % 3 == 0 {
                a.record(v)
            } else {
                b.record(v)
            }
            all.record(v);
        }
        a.merge(&b);
        assert_eq!(a, all);
    }
}
