//! A call's JSON object as the API answers it, and the UUIDs that name calls.
//!
//! The object is serialized once when the call is created and again when it is updated (from
//! its JSON before, with the new status, duration and update time): reads and lists then copy
//! the stored bytes.

use super::{NewCall, DIRECTIONS, INDUSTRIES, STATUSES};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use std::borrow::Cow;

/// A call as the API shows it, in the answer's field order. Borrowed from the stored JSON when
/// an update re-reads it, so only the changed fields are made anew.
#[derive(Serialize, Deserialize)]
struct CallJson<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    direction: Cow<'a, str>,
    #[serde(borrow)]
    caller_id: Cow<'a, str>,
    #[serde(borrow)]
    callee_id: Cow<'a, str>,
    #[serde(borrow)]
    industry: Cow<'a, str>,
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(serialize_with = "whole_as_integer")]
    duration_seconds: Option<f64>,
    metadata: Value,
    #[serde(borrow)]
    created_at: Cow<'a, str>,
    #[serde(borrow)]
    updated_at: Cow<'a, str>,
}

/// A new call's JSON (its status the first, no duration, no metadata shown as `{}`).
pub(super) fn render(id: u128, new: NewCall, now_ms: i64) -> String {
    let now = rfc3339(now_ms);
    let call = CallJson {
        id: format_id(id).into(),
        direction: DIRECTIONS[new.direction as usize].into(),
        caller_id: format!("+{}", new.caller).into(),
        callee_id: format!("+{}", new.callee).into(),
        industry: INDUSTRIES[new.industry as usize].into(),
        status: STATUSES[0].into(),
        duration_seconds: None,
        metadata: new.metadata.unwrap_or_else(|| Value::Object(Default::default())),
        created_at: now.clone().into(),
        updated_at: now.into(),
    };
    to_json(&call)
}

/// An updated call's JSON, from its JSON before: the new status, the new duration (or the old
/// one), the new update time; the rest as it was.
pub(super) fn rerender(old: &str, status: u8, duration: Option<f64>, now_ms: i64) -> String {
    let mut call: CallJson = serde_json::from_str(old).expect("a stored call's JSON is the simulator's own");
    call.status = STATUSES[status as usize].into();
    if duration.is_some() {
        call.duration_seconds = duration;
    }
    call.updated_at = rfc3339(now_ms).into();
    to_json(&call)
}

fn to_json(call: &CallJson) -> String {
    serde_json::to_string(call).expect("a call's JSON has only string keys")
}

/// Largest whole number an `f64` holds exactly.
const MAX_EXACT: f64 = (1u64 << 53) as f64;

/// A duration sent as a whole number is shown as one (`42`, not `42.0`), like the client wrote
/// it.
fn whole_as_integer<S: Serializer>(value: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
    match *value {
        Some(v) if v.fract() == 0.0 && (0.0..=MAX_EXACT).contains(&v) => serializer.serialize_u64(v as u64),
        Some(v) => serializer.serialize_f64(v),
        None => serializer.serialize_none(),
    }
}

/// A Unix time in ms as RFC 3339 UTC with milliseconds (`2025-01-31T12:00:00.000Z`).
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A random UUID v4.
pub(super) fn new_id() -> u128 {
    let r: u128 = rand::random();
    (r & !(0xF << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62)
}

/// An id as a UUID (8-4-4-4-12 lowercase hex).
pub(super) fn format_id(id: u128) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        id >> 96,
        (id >> 80) & 0xFFFF,
        (id >> 64) & 0xFFFF,
        (id >> 48) & 0xFFFF,
        id & 0xFFFF_FFFF_FFFF
    )
}

/// Parses a UUID as formatted by [`format_id`] (either case); anything else is no id of ours.
pub(crate) fn parse_id(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let mut v: u128 = 0;
    for (i, &c) in b.iter().enumerate() {
        if [8, 13, 18, 23].contains(&i) {
            continue;
        }
        v = (v << 4) | (c as char).to_digit(16)? as u128;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_as_uuids() {
        for _ in 0..100 {
            let id = new_id();
            let s = format_id(id);
            assert_eq!(s.len(), 36);
            assert_eq!(&s[14..15], "4", "{s}");
            assert_eq!(parse_id(&s), Some(id));
            assert_eq!(parse_id(&s.to_uppercase()), Some(id));
        }
        assert_eq!(format_id(1 << 127 | 0xAB), "80000000-0000-0000-0000-0000000000ab");
        assert_eq!(parse_id("nope"), None);
        assert_eq!(parse_id("zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"), None);
    }

    #[test]
    fn times_have_milliseconds_and_a_z() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn the_answer_has_its_fields_in_order() {
        let new = NewCall {
            direction: 1,
            caller: 4915112345678,
            callee: 4915187654321,
            industry: 3,
            metadata: Some(serde_json::json!({"b": [1, 2.5], "a": "x\"y"})),
        };
        let created = render(0x1234, new, 1_000);
        assert_eq!(
            created,
            concat!(
                r#"{"id":"00000000-0000-0000-0000-000000001234","direction":"outbound","#,
                r#""caller_id":"+4915112345678","callee_id":"+4915187654321","#,
                r#""industry":"freie_berufe","status":"ringing","duration_seconds":null,"#,
                r#""metadata":{"a":"x\"y","b":[1,2.5]},"created_at":"1970-01-01T00:00:01.000Z","#,
                r#""updated_at":"1970-01-01T00:00:01.000Z"}"#
            )
        );
        let whole = rerender(&created, 2, Some(42.0), 2_000);
        let expected = created
            .replace(
                r#""ringing","duration_seconds":null"#,
                r#""completed","duration_seconds":42"#,
            )
            .replace(
                r#""updated_at":"1970-01-01T00:00:01.000Z"#,
                r#""updated_at":"1970-01-01T00:00:02.000Z"#,
            );
        assert_eq!(whole, expected);
        // No duration given: the one before stays.
        assert_eq!(rerender(&whole, 2, None, 2_000), whole);
        assert!(rerender(&whole, 2, Some(12.5), 2_000).contains(r#""duration_seconds":12.5,"#));
    }
}
