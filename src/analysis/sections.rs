//! The `websocket` and `ai_pipeline` sections, from the crate's own measurements.
//!
//! Per-turn figures (RTF, time to first audio, stage latencies) are kept as samples, so their
//! percentiles here are exact (nearest rank), not bucketed. Each section also carries the Python
//! suite's keys (README "Coming from the Python suite"), mapped onto these measurements.

use super::api::pct;
use super::results::{AiResults, AvgP95, Percentiles, RtfStats, WebsocketResults};
use crate::config::plan::AiMode;
use crate::measure::{AiStats, StreamStats, Turn};

/// The `websocket` section; `duration_s` is the run's wall time.
pub fn websocket_section(s: &StreamStats, duration_s: f64) -> WebsocketResults {
    let connect_avg_ms = s.connect_us.mean() / 1000.0;
    let connect_p95_ms = s.connect_us.quantile(0.95) as f64 / 1000.0;
    WebsocketResults {
        success: false,
        connections_attempted: s.calls_attempted,
        connections_successful: s.calls_connected,
        connections_failed: s.calls_attempted.saturating_sub(s.calls_connected),
        success_rate: pct(s.calls_connected, s.calls_attempted),
        messages_sent: s.messages_sent,
        messages_received: s.messages_received,
        bytes_sent: s.bytes_sent,
        bytes_received: s.bytes_received,
        frame_rate_pct: pct(s.frames_sent, s.frames_scheduled),
        // Late frames include those skipped for being too late, so they count among the frames.
        late_frames_pct: pct(s.frames_late, s.frames_sent + s.frames_skipped),
        connect_p95_ms,
        calls_completed: s.calls_completed,
        calls_failed: s.calls_failed,
        frames_scheduled: s.frames_scheduled,
        frames_sent: s.frames_sent,
        frames_skipped: s.frames_skipped,
        connect_avg_ms,
        frame_lateness_p95_ms: s.lateness_us.quantile(0.95) as f64 / 1000.0,
        marks_echoed: s.marks_echoed,
        errors: s.errors.clone(),
        duration: duration_s,
        // The suite's WebSocket latency is the handshake's.
        avg_latency_ms: connect_avg_ms,
        p95_latency_ms: connect_p95_ms,
    }
}

/// What the `ai_pipeline` section needs to know of the run besides its turns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AiRun {
    pub mode: AiMode,
    /// The run's wall time.
    pub duration_s: f64,
    /// AI-call users that ran.
    pub concurrent_calls: u64,
    /// The load generator's peak memory (0 when it was not sampled).
    pub memory_peak_mb: f64,
}

/// The `ai_pipeline` section.
pub fn ai_section(ai: &AiStats, run: &AiRun) -> AiResults {
    let mode = run.mode;
    let ok: Vec<_> = ai.turns.iter().filter(|t| t.ok && t.rtf.is_finite()).collect();
    let turns = ai.turns.len() as u64;
    let rtfs: Vec<f64> = ok.iter().map(|t| t.rtf).collect();
    let capable = rtfs.iter().filter(|&&r| r < 1.0).count() as u64;
    let stage = |f: fn(&Turn) -> Option<f64>| -> Vec<f64> {
        ok.iter().filter_map(|t| f(t)).filter(|v| v.is_finite()).collect()
    };
    let (stream, mock) = (mode == AiMode::Stream, mode == AiMode::Mock);
    let latencies: Vec<f64> = ok.iter().filter_map(|t| latency_ms(t, mode)).collect();
    let mut rtf_series: Vec<[f64; 2]> = ok.iter().map(|t| [t.at_s, t.rtf]).collect();
    rtf_series.sort_by(|a, b| a[0].total_cmp(&b[0]));
    AiResults {
        success: false,
        mode: match mode {
            AiMode::Stream => "stream",
            AiMode::Mock => "mock",
        }
        .to_string(),
        calls: ai.calls,
        turns,
        successful_turns: ok.len() as u64,
        success_rate: pct(ok.len() as u64, turns),
        rtf: RtfStats {
            mean: mean(&rtfs),
            p50: quantile(&rtfs, 0.5),
            p95: quantile(&rtfs, 0.95),
            max: rtfs.iter().copied().fold(0.0, f64::max),
        },
        realtime_capable_pct: pct(capable, turns),
        ttfa_ms: stream.then(|| percentiles(&stage(|t| t.ttfa_ms))),
        turn_ms: stream.then(|| percentiles(&stage(|t| t.turn_ms))),
        stt_ms: mock.then(|| avg_p95(&stage(|t| t.stt_ms))),
        llm_ms: mock.then(|| avg_p95(&stage(|t| t.llm_ms))),
        tts_ms: mock.then(|| avg_p95(&stage(|t| t.tts_ms))),
        errors: ai.errors.clone(),
        rtf_series,
        duration: run.duration_s,
        concurrent_calls: run.concurrent_calls,
        total_requests: turns,
        throughput_rps: if run.duration_s > 0.0 {
            turns as f64 / run.duration_s
        } else {
            0.0
        },
        avg_latency_ms: mean(&latencies),
        p95_latency_ms: quantile(&latencies, 0.95),
        memory_peak_mb: run.memory_peak_mb,
    }
}

/// A turn's latency as the suite's AI mock timed it, the numerator of the turn's RTF: the end of
/// the agent's answer (stream mode) or STT + LLM + TTS (mock mode).
fn latency_ms(t: &Turn, mode: AiMode) -> Option<f64> {
    let latency = match mode {
        AiMode::Stream => t.turn_ms?,
        AiMode::Mock => t.stt_ms? + t.llm_ms? + t.tts_ms?,
    };
    latency.is_finite().then_some(latency)
}

fn percentiles(v: &[f64]) -> Percentiles {
    Percentiles {
        p50: quantile(v, 0.5),
        p95: quantile(v, 0.95),
    }
}

fn avg_p95(v: &[f64]) -> AvgP95 {
    AvgP95 {
        avg: mean(v),
        p95: quantile(v, 0.95),
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Nearest-rank quantile of samples (0 without any): the smallest sample with at least `q` of
/// the samples at or below it.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Turn;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.95), 95.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn ai_section_counts_failed_turns_against_success_and_realtime() {
        let turn = |at_s, rtf, ok| Turn {
            at_s,
            audio_ms: 1000.0,
            ok,
            rtf,
            ttfa_ms: ok.then_some(300.0),
            ..Default::default()
        };
        let ai = AiStats {
            calls: 2,
            turns: vec![
                turn(3.0, 0.5, true),
                turn(1.0, 1.5, true),
                turn(2.0, 0.0, false),
                turn(4.0, 0.7, true),
            ],
            errors: [("no answer".to_string(), 1)].into(),
        };
        let run = AiRun {
            mode: AiMode::Stream,
            duration_s: 10.0,
            concurrent_calls: 2,
            memory_peak_mb: 0.0,
        };
        let s = ai_section(&ai, &run);
        assert_eq!((s.turns, s.successful_turns, s.success_rate), (4, 3, 75.0));
        assert_eq!(s.realtime_capable_pct, 50.0);
        assert!((s.rtf.mean - 0.9).abs() < 1e-9 && s.rtf.max == 1.5 && s.rtf.p50 == 0.7);
        assert_eq!(s.ttfa_ms.unwrap().p95, 300.0);
        assert!(s.stt_ms.is_none());
        assert_eq!(s.rtf_series[0], [1.0, 1.5]);
        // Every turn spoken is a request of the suite's; no turn here timed its answer's end.
        assert_eq!(
            (s.total_requests, s.throughput_rps, s.concurrent_calls),
            (4, 0.4, 2)
        );
        assert_eq!((s.avg_latency_ms, s.p95_latency_ms), (0.0, 0.0));
    }
}
