//! The standard verdicts: each key metric the results hold, judged against the profile's
//! thresholds. A metric whose section was skipped or has no data gets none.

use super::results::Results;
use super::verdicts::{fmt_value, Verdict};
use crate::config::profile::Thresholds;

/// The standard verdicts for what the results hold; a metric whose section was skipped or
/// has no data gets none.
pub fn standard_verdicts(r: &Results, t: &Thresholds) -> Vec<Verdict> {
    let mut out = Vec::new();
    if let Some(api) = r.api.ran().filter(|a| a.requests > 0) {
        out.push(
            Verdict::judged("API p95 latency", api.p95_ms, "ms", t.api_p95_ms, true, Some("api")).recommend(
                "API latency is rising: check slow endpoints in the table, database queries and pool sizes",
                "API too slow under this load: profile the slowest endpoints, or lower --spawn-rate / --users \
                 to find where latency breaks",
            ),
        );
        out.push(
            Verdict::judged(
                "API success rate",
                api.success_rate,
                "%",
                t.api_success_pct,
                false,
                Some("api"),
            )
            .recommend(
                "some API requests fail: see the errors table (429: reduce --spawn-rate or raise the \
                     server's rate limits)",
                "API failing under load: see the errors table; if it is 429, reduce --spawn-rate or \
                     adjust the server's rate limits; check the server is up and its logs",
            ),
        );
    }
    if let Some(ws) = r.websocket.ran().filter(|w| w.connections_attempted > 0) {
        out.push(
            Verdict::judged(
                "media stream success",
                ws.success_rate,
                "%",
                t.ws_success_pct,
                false,
                Some("websocket"),
            )
            .recommend(
                "some media streams fail to connect: check the server's connection limits and errors",
                "media streams failing: check the server's WebSocket connection limit, file descriptors \
                     and the errors table",
            ),
        );
    }
    if let Some(ws) = r.websocket.ran() {
        let dialled = ws.calls_completed + ws.calls_failed;
        if dialled > 0 {
            out.push(
                Verdict::judged(
                    "media stream calls completed",
                    100.0 * ws.calls_completed as f64 / dialled as f64,
                    "%",
                    t.ws_call_completion_pct,
                    false,
                    Some("websocket"),
                )
                .with_detail(format!("{} of {dialled} calls", ws.calls_completed))
                .recommend(
                    "some calls end early: see the websocket errors (dropped, protocol errors)",
                    "calls failing mid-call: see the websocket errors; the server drops streams or \
                     sends what Twilio would reject",
                ),
            );
        }
    }
    if let Some(ai) = r.ai_pipeline.ran().filter(|a| a.turns > 0) {
        out.push(
            Verdict::judged(
                "AI turn success",
                100.0 * ai.successful_turns as f64 / ai.turns as f64,
                "%",
                t.ai_turn_success_pct,
                false,
                Some("ai_pipeline"),
            )
            .with_detail(format!("{} of {} turns answered", ai.successful_turns, ai.turns))
            .recommend(
                "some turns go unanswered: see the AI errors",
                "the agent does not answer: see the AI errors (no answer within the turn timeout)",
            ),
        );
    }
    if let Some(ai) = r.ai_pipeline.ran().filter(|a| a.successful_turns > 0) {
        out.push(
            Verdict::judged(
                "AI real-time factor",
                ai.rtf.mean,
                "x",
                t.ai_rtf,
                true,
                Some("ai_pipeline"),
            )
            .with_detail(format!("mean; p95 {}x", fmt_value(ai.rtf.p95)))
            .recommend(
                "pipeline near real-time limit, optimise STT/TTS",
                "pipeline slower than real time: callers will hear delays; optimise STT/LLM/TTS or add \
                     capacity",
            ),
        );
    }
    let memory = [
        ("server memory growth", &r.memory.report.server),
        ("load generator memory growth", &r.memory.report.load_generator),
    ];
    for (metric, series) in memory {
        if let Some(m) = series {
            out.push(
                Verdict::judged(
                    metric,
                    m.growth_mb,
                    "MB",
                    t.memory_growth_mb,
                    true,
                    Some("memory"),
                )
                .with_detail(format!(
                    "slope {} MB/min (R² {:.2}), {}",
                    fmt_value(m.slope_mb_per_min),
                    m.r2,
                    m.projection()
                ))
                .recommend(
                    "memory grows: run the soak profile to see the slope; check for leaking connections",
                    "memory leak suspected: check for leaking connections and caches; use --skip-api to \
                         isolate the AI pipeline",
                ),
            );
        }
    }
    out
}
