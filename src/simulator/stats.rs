//! What the simulator received and answered, as lock-free counters, rendered as the stats JSON.
//!
//! Every label is known at compile time (routes, validation reasons, protocol faults and
//! deviations, garbage kinds), so each counter is a plain atomic in a fixed array: counting never takes a lock or
//! allocates.

use super::conformance::{Deviation, Fault};
use super::GarbageKind;
use clap::ValueEnum;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A REST/webhook/media route, as labelled in the stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    ListCalls,
    CreateCall,
    GetCall,
    UpdateCall,
    Health,
    StatusWebhook,
    VoiceWebhook,
    MediaStream,
    /// Unknown paths and wrong methods (answered 404/405 by the router).
    Other,
}

impl Route {
    const ALL: [Route; 9] = [
        Route::ListCalls,
        Route::CreateCall,
        Route::GetCall,
        Route::UpdateCall,
        Route::Health,
        Route::StatusWebhook,
        Route::VoiceWebhook,
        Route::MediaStream,
        Route::Other,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Route::ListCalls => "GET /api/v1/calls",
            Route::CreateCall => "POST /api/v1/calls",
            Route::GetCall => "GET /api/v1/calls/{id}",
            Route::UpdateCall => "PATCH /api/v1/calls/{id}",
            Route::Health => "GET /api/v1/health",
            Route::StatusWebhook => "POST /webhooks/twilio/status",
            Route::VoiceWebhook => "POST /webhooks/twilio/voice",
            Route::MediaStream => "GET /webhooks/twilio/media/{call_sid}",
            Route::Other => "other",
        }
    }
}

/// Why a request body, query or form was refused (422 for the API, 400 for webhooks).
/// The detail text is both the answer's `detail` and the stats key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalid {
    NotJson,
    NotObject,
    Direction,
    CallerMissing,
    CallerMalformed,
    CalleeMissing,
    CalleeMalformed,
    SameNumber,
    IndustryMissing,
    Industry,
    Metadata,
    Status,
    Duration,
    Limit,
    CallSid,
    AccountSid,
    CallStatus,
    WebhookDirection,
    CallDuration,
}

impl Invalid {
    const ALL: [Invalid; 19] = [
        Invalid::NotJson,
        Invalid::NotObject,
        Invalid::Direction,
        Invalid::CallerMissing,
        Invalid::CallerMalformed,
        Invalid::CalleeMissing,
        Invalid::CalleeMalformed,
        Invalid::SameNumber,
        Invalid::IndustryMissing,
        Invalid::Industry,
        Invalid::Metadata,
        Invalid::Status,
        Invalid::Duration,
        Invalid::Limit,
        Invalid::CallSid,
        Invalid::AccountSid,
        Invalid::CallStatus,
        Invalid::WebhookDirection,
        Invalid::CallDuration,
    ];

    pub(crate) fn detail(self) -> &'static str {
        match self {
            Invalid::NotJson => "body must be valid JSON",
            Invalid::NotObject => "body must be a JSON object",
            Invalid::Direction => "direction must be 'inbound' or 'outbound'",
            Invalid::CallerMissing => "caller_id is required",
            Invalid::CallerMalformed => "caller_id must be an E.164 phone number ('+' and 8 to 15 digits)",
            Invalid::CalleeMissing => "callee_id is required",
            Invalid::CalleeMalformed => "callee_id must be an E.164 phone number ('+' and 8 to 15 digits)",
            Invalid::SameNumber => "caller_id and callee_id must differ",
            Invalid::IndustryMissing => "industry is required",
            Invalid::Industry => "industry must be one of gesundheit, handwerk, gastro, freie_berufe",
            Invalid::Metadata => "metadata must be an object",
            Invalid::Status => "status must be one of ringing, in_progress, completed, failed",
            Invalid::Duration => "duration_seconds must be a number >= 0",
            Invalid::Limit => "limit must be an integer from 1 to 100",
            Invalid::CallSid => "CallSid must be CA followed by 32 hex digits",
            Invalid::AccountSid => "AccountSid must be AC followed by 32 hex digits",
            Invalid::CallStatus => "CallStatus is not a Twilio call status",
            Invalid::WebhookDirection => "Direction must be inbound, outbound-api or outbound-dial",
            Invalid::CallDuration => "CallDuration must be a whole number of seconds",
        }
    }
}

/// Twilio's call statuses, as counted for the status webhook.
pub(crate) const CALL_STATUSES: [&str; 10] = [
    "queued",
    "initiated",
    "ringing",
    "answered",
    "in-progress",
    "completed",
    "busy",
    "no-answer",
    "failed",
    "canceled",
];

/// The kinds a garbage answer is sent as (`--garbage-kind`; `mixed` takes each in turn), in
/// stats order.
pub(crate) const GARBAGE_KINDS: [GarbageKind; 4] = [
    GarbageKind::NotJson,
    GarbageKind::WrongType,
    GarbageKind::Truncated,
    GarbageKind::Huge,
];

/// A fixed array of counters indexed by a label enum's position.
struct Counters<const N: usize>([AtomicU64; N]);

impl<const N: usize> Counters<N> {
    fn new() -> Self {
        Counters([const { AtomicU64::new(0) }; N])
    }

    fn add(&self, i: usize) {
        self.0[i].fetch_add(1, Relaxed);
    }

    fn get(&self, i: usize) -> u64 {
        self.0[i].load(Relaxed)
    }
}

/// Media stream counters.
pub(crate) struct StreamCounters {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub active: AtomicU64,
    pub completed: AtomicU64,
    pub dropped: AtomicU64,
    /// Ended by the client without a `stop` (closed, reset or gone).
    pub closed_without_stop: AtomicU64,
    pub media_frames: AtomicU64,
    pub media_bytes: AtomicU64,
    pub marks_echoed: AtomicU64,
    pub unknown_marks: AtomicU64,
    pub utterances: AtomicU64,
    pub answers: AtomicU64,
    pub answer_frames: AtomicU64,
    /// Answers not sent because the caller spoke again while the pipeline ran.
    pub answers_cancelled: AtomicU64,
    /// Utterances left unanswered because the agent was still answering the one before (sound
    /// that went on through the answer, cut at `--max-utterance-ms`).
    pub answers_skipped: AtomicU64,
    pub clears_sent: AtomicU64,
    pub bad_sequence: AtomicU64,
    protocol_errors: Counters<{ Fault::ALL.len() }>,
    protocol_deviations: Counters<{ Deviation::ALL.len() }>,
}

/// Injected faults (the stats' `faults`), each counted where it is decided: stalls and garbage
/// answers in `http_faults`, the media stream faults in `media`.
pub(crate) struct FaultCounters {
    /// Requests held unanswered (`--stall-rate`), counted as the stall starts.
    pub stalled: AtomicU64,
    /// Of those, the ones cut at once because `http_faults::stall::MAX_HELD` were already
    /// held.
    pub stalls_cut_at_once: AtomicU64,
    /// Answers replaced by garbage (`--garbage-rate`), by the kind sent ([`GARBAGE_KINDS`]).
    garbage: Counters<{ GARBAGE_KINDS.len() }>,
    /// Garbage messages sent on media streams (`--ws-garbage-rate`).
    pub ws_garbage: AtomicU64,
    /// Oversized messages sent on media streams (`--ws-oversized-rate`).
    pub ws_oversized: AtomicU64,
    /// Utterances the agent left unanswered on purpose (`--ai-mute-rate`).
    pub ai_muted: AtomicU64,
}

/// Every counter of the simulator.
pub(crate) struct Stats {
    requests: Counters<{ Route::ALL.len() }>,
    status_codes: Counters<600>,
    validation_errors: Counters<{ Invalid::ALL.len() }>,
    pub webhook_status: AtomicU64,
    pub webhook_voice: AtomicU64,
    call_status: Counters<{ CALL_STATUSES.len() }>,
    pub filter_industry: AtomicU64,
    pub filter_status: AtomicU64,
    pub filter_limit: AtomicU64,
    pub rate_limited: AtomicU64,
    pub injected_errors: AtomicU64,
    pub calls_created: AtomicU64,
    pub leaked_bytes: AtomicU64,
    pub streams: StreamCounters,
    pub faults: FaultCounters,
}

impl Stats {
    pub(crate) fn new() -> Stats {
        let z = || AtomicU64::new(0);
        Stats {
            requests: Counters::new(),
            status_codes: Counters::new(),
            validation_errors: Counters::new(),
            webhook_status: z(),
            webhook_voice: z(),
            call_status: Counters::new(),
            filter_industry: z(),
            filter_status: z(),
            filter_limit: z(),
            rate_limited: z(),
            injected_errors: z(),
            calls_created: z(),
            leaked_bytes: z(),
            streams: StreamCounters {
                accepted: z(),
                refused: z(),
                active: z(),
                completed: z(),
                dropped: z(),
                closed_without_stop: z(),
                media_frames: z(),
                media_bytes: z(),
                marks_echoed: z(),
                unknown_marks: z(),
                utterances: z(),
                answers: z(),
                answer_frames: z(),
                answers_cancelled: z(),
                answers_skipped: z(),
                clears_sent: z(),
                bad_sequence: z(),
                protocol_errors: Counters::new(),
                protocol_deviations: Counters::new(),
            },
            faults: FaultCounters {
                stalled: z(),
                stalls_cut_at_once: z(),
                garbage: Counters::new(),
                ws_garbage: z(),
                ws_oversized: z(),
                ai_muted: z(),
            },
        }
    }

    pub(crate) fn request(&self, route: Route) {
        self.requests.add(route as usize);
    }

    pub(crate) fn status(&self, code: u16) {
        self.status_codes.add((code as usize).min(599));
    }

    pub(crate) fn invalid(&self, why: Invalid) {
        self.validation_errors.add(why as usize);
    }

    /// Counts a status webhook's CallStatus (index into [`CALL_STATUSES`]).
    pub(crate) fn call_status(&self, index: usize) {
        self.call_status.add(index);
    }

    pub(crate) fn fault(&self, fault: Fault) {
        self.streams.protocol_errors.add(fault as usize);
    }

    pub(crate) fn deviation(&self, deviation: Deviation) {
        self.streams.protocol_deviations.add(deviation as usize);
    }

    /// Counts an answer replaced by garbage of `kind` (the kind sent: `mixed` is none).
    pub(crate) fn garbage(&self, kind: GarbageKind) {
        if let Some(i) = GARBAGE_KINDS.iter().position(|&k| k == kind) {
            self.faults.garbage.add(i);
        }
    }

    /// The stats JSON (`GET /_sim/stats` and `RunningSimulator::stats`).
    pub(crate) fn to_json(&self, calls_stored: usize) -> Value {
        let get = |a: &AtomicU64| a.load(Relaxed);
        let requests: Map<String, Value> = Route::ALL
            .iter()
            .map(|r| (r.label().to_string(), json!(self.requests.get(*r as usize))))
            .collect();
        let status_codes: Map<String, Value> = (0..600)
            .filter(|&c| self.status_codes.get(c) > 0)
            .map(|c| (c.to_string(), json!(self.status_codes.get(c))))
            .collect();
        let validation_errors = nonzero(
            &Invalid::ALL,
            |i| self.validation_errors.get(*i as usize),
            |i| i.detail(),
        );
        let call_status: Map<String, Value> = CALL_STATUSES
            .iter()
            .enumerate()
            .map(|(i, s)| (s.to_string(), json!(self.call_status.get(i))))
            .collect();
        let s = &self.streams;
        let protocol_errors = nonzero(
            &Fault::ALL,
            |f| s.protocol_errors.get(*f as usize),
            |f| f.reason(),
        );
        let protocol_deviations = nonzero(
            &Deviation::ALL,
            |d| s.protocol_deviations.get(*d as usize),
            |d| d.label(),
        );
        let f = &self.faults;
        // Keyed by their `--garbage-kind` names.
        let garbage: Map<String, Value> = GARBAGE_KINDS
            .iter()
            .enumerate()
            .filter_map(|(i, k)| {
                Some((
                    k.to_possible_value()?.get_name().to_string(),
                    json!(f.garbage.get(i)),
                ))
            })
            .collect();
        json!({
            "requests": requests,
            "status_codes": status_codes,
            "validation_errors": validation_errors,
            "webhooks": {
                "status": get(&self.webhook_status),
                "voice": get(&self.webhook_voice),
                "call_status": call_status,
            },
            "list_filters": {
                "industry": get(&self.filter_industry),
                "status": get(&self.filter_status),
                "limit": get(&self.filter_limit),
            },
            "rate_limited": get(&self.rate_limited),
            "injected_errors": get(&self.injected_errors),
            "calls_created": get(&self.calls_created),
            "calls_stored": calls_stored,
            "streams": {
                "accepted": get(&s.accepted),
                "refused": get(&s.refused),
                "active": get(&s.active),
                "completed": get(&s.completed),
                "dropped": get(&s.dropped),
                "closed_without_stop": get(&s.closed_without_stop),
                "media_frames": get(&s.media_frames),
                "media_bytes": get(&s.media_bytes),
                "marks_echoed": get(&s.marks_echoed),
                "unknown_marks": get(&s.unknown_marks),
                "utterances": get(&s.utterances),
                "answers": get(&s.answers),
                "answer_frames": get(&s.answer_frames),
                "answers_cancelled": get(&s.answers_cancelled),
                "answers_skipped": get(&s.answers_skipped),
                "clears_sent": get(&s.clears_sent),
                "protocol_errors": protocol_errors,
                "protocol_deviations": protocol_deviations,
                "bad_sequence": get(&s.bad_sequence),
            },
            "faults": {
                "stalled": get(&f.stalled),
                "stalls_cut_at_once": get(&f.stalls_cut_at_once),
                "garbage": garbage,
                "ws_garbage": get(&f.ws_garbage),
                "ws_oversized": get(&f.ws_oversized),
                "ai_muted": get(&f.ai_muted),
            },
            "process": {
                "rss_bytes": rss_bytes(),
                "leaked_bytes": get(&self.leaked_bytes),
            },
        })
    }
}

impl Stats {
    /// A few gauges in Prometheus' text format (`GET /metrics`), so `--server-metrics-url`
    /// can read the simulator's memory like a real server's.
    pub(crate) fn prometheus(&self, calls_stored: usize) -> String {
        let get = |a: &AtomicU64| a.load(Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        };
        if let Some(rss) = rss_bytes() {
            metric(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                rss,
            );
        }
        metric(
            "sim_calls_stored",
            "gauge",
            "Calls in the in-memory store.",
            calls_stored as u64,
        );
        metric(
            "sim_streams_active",
            "gauge",
            "Media streams open now.",
            get(&self.streams.active),
        );
        metric(
            "sim_media_frames_total",
            "counter",
            "Media frames received.",
            get(&self.streams.media_frames),
        );
        metric(
            "sim_leaked_bytes",
            "gauge",
            "Memory retained by --leak-kb-per-call.",
            get(&self.leaked_bytes),
        );
        out
    }
}

/// A JSON object of the labels whose count is above zero.
fn nonzero<T>(
    all: &[T],
    count: impl Fn(&T) -> u64,
    label: impl Fn(&T) -> &'static str,
) -> Map<String, Value> {
    all.iter()
        .filter(|t| count(t) > 0)
        .map(|t| (label(t).to_string(), json!(count(t))))
        .collect()
}

/// This process's resident memory, where the OS tells it (Linux), so tests can see the leak.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_line_up_with_their_enums() {
        for (i, r) in Route::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        for (i, v) in Invalid::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
    }

    #[test]
    fn json_shows_what_was_counted() {
        let stats = Stats::new();
        stats.request(Route::CreateCall);
        stats.status(201);
        stats.status(201);
        stats.invalid(Invalid::SameNumber);
        stats.fault(Fault::Binary);
        stats.deviation(Deviation::BareStop);
        stats.garbage(GarbageKind::Truncated);
        stats.faults.ai_muted.fetch_add(1, Relaxed);
        let j = stats.to_json(7);
        assert_eq!(j["requests"]["POST /api/v1/calls"], 1);
        assert_eq!(j["requests"]["GET /api/v1/health"], 0);
        assert_eq!(j["status_codes"]["201"], 2);
        assert_eq!(j["validation_errors"]["caller_id and callee_id must differ"], 1);
        assert_eq!(j["streams"]["protocol_errors"]["binary frame"], 1);
        assert_eq!(j["streams"]["protocol_deviations"], json!({"bare stop": 1}));
        assert_eq!(j["calls_stored"], 7);
        assert_eq!(j["webhooks"]["call_status"]["ringing"], 0);
        assert_eq!(
            j["faults"],
            json!({
                "stalled": 0,
                "stalls_cut_at_once": 0,
                "garbage": {"not-json": 0, "wrong-type": 0, "truncated": 1, "huge": 0},
                "ws_garbage": 0,
                "ws_oversized": 0,
                "ai_muted": 1,
            })
        );
    }
}
