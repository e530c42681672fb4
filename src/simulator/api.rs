//! The Phone Agent's REST API: create, list, get and update calls, and health.
//!
//! Validation mirrors a FastAPI server: a bad body is 422 `{"detail": reason}`, an unknown id
//! is 404; the reason texts are also the keys of the stats' `validation_errors`.

use super::stats::Invalid;
use super::store::{self, Filter, NewCall, DIRECTIONS, INDUSTRIES, STATUSES};
use super::Sim;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// `limit` when a list names none, and the most it may ask for.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 100;

/// A JSON answer from an already-serialized body (the body is moved, not copied).
pub(crate) fn json(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `{"detail": text}` with `status`.
pub(crate) fn detail(status: StatusCode, text: &str) -> Response {
    json(status, serde_json::json!({ "detail": text }).to_string())
}

/// Counts a validation failure and answers it with `status` (422 for the API, 400 for webhooks).
pub(crate) fn refuse(sim: &Sim, status: StatusCode, why: Invalid) -> Response {
    sim.stats.invalid(why);
    detail(status, why.detail())
}

fn not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "call not found")
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) async fn health() -> Response {
    json(StatusCode::OK, r#"{"status":"ok"}"#)
}

pub(crate) async fn create_call(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let new = match parse_new_call(&body) {
        Ok(new) => new,
        Err(why) => return refuse(&sim, StatusCode::UNPROCESSABLE_ENTITY, why),
    };
    let (_, body) = sim.store.create(new, now_ms());
    sim.stats.calls_created.fetch_add(1, Relaxed);
    sim.leak.leak(&sim.stats);
    json(StatusCode::CREATED, body)
}

pub(crate) async fn get_call(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> Response {
    match store::parse_id(&id).and_then(|id| sim.store.get(id)) {
        Some(body) => json(StatusCode::OK, body),
        None => not_found(),
    }
}

pub(crate) async fn update_call(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (status, duration) = match parse_update(&body) {
        Ok(update) => update,
        Err(why) => return refuse(&sim, StatusCode::UNPROCESSABLE_ENTITY, why),
    };
    match store::parse_id(&id).and_then(|id| sim.store.update(id, status, duration, now_ms())) {
        Some(body) => json(StatusCode::OK, body),
        None => not_found(),
    }
}

pub(crate) async fn list_calls(State(sim): State<Arc<Sim>>, RawQuery(query): RawQuery) -> Response {
    let (filter, limit) = match parse_list_query(&sim, query.as_deref().unwrap_or("")) {
        Ok(q) => q,
        Err(why) => return refuse(&sim, StatusCode::UNPROCESSABLE_ENTITY, why),
    };
    json(StatusCode::OK, sim.store.list_json(filter, limit))
}

/// Validates a create body in the order a reader of the error would fix it.
fn parse_new_call(body: &[u8]) -> Result<NewCall, Invalid> {
    let mut obj = parse_object(body)?;
    let direction = match obj.get("direction") {
        Some(Value::String(d)) => index_of(&DIRECTIONS, d).ok_or(Invalid::Direction)?,
        _ => return Err(Invalid::Direction),
    };
    let caller = phone(
        obj.get("caller_id"),
        Invalid::CallerMissing,
        Invalid::CallerMalformed,
    )?;
    let callee = phone(
        obj.get("callee_id"),
        Invalid::CalleeMissing,
        Invalid::CalleeMalformed,
    )?;
    if caller == callee {
        return Err(Invalid::SameNumber);
    }
    let industry = match obj.get("industry") {
        None | Some(Value::Null) => return Err(Invalid::IndustryMissing),
        Some(Value::String(i)) => index_of(&INDUSTRIES, i).ok_or(Invalid::Industry)?,
        Some(_) => return Err(Invalid::Industry),
    };
    let metadata = match obj.remove("metadata") {
        None | Some(Value::Null) => None,
        Some(m @ Value::Object(_)) => Some(m),
        Some(_) => return Err(Invalid::Metadata),
    };
    Ok(NewCall {
        direction,
        caller,
        callee,
        industry,
        metadata,
    })
}

/// Validates an update body: `status` and `duration_seconds`, each optional.
fn parse_update(body: &[u8]) -> Result<(Option<u8>, Option<f64>), Invalid> {
    let obj = parse_object(body)?;
    let status = match obj.get("status") {
        None => None,
        Some(Value::String(s)) => Some(index_of(&STATUSES, s).ok_or(Invalid::Status)?),
        Some(_) => return Err(Invalid::Status),
    };
    let duration = match obj.get("duration_seconds") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_f64().filter(|d| *d >= 0.0).ok_or(Invalid::Duration)?),
        Some(_) => return Err(Invalid::Duration),
    };
    Ok((status, duration))
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Invalid> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(Invalid::NotObject),
        Err(_) => Err(Invalid::NotJson),
    }
}

/// An E.164 number: '+', then 8 to 15 digits, the first not 0. Returned without the '+'.
fn phone(value: Option<&Value>, missing: Invalid, malformed: Invalid) -> Result<u64, Invalid> {
    let s = match value {
        None | Some(Value::Null) => return Err(missing),
        Some(Value::String(s)) => s,
        Some(_) => return Err(malformed),
    };
    let digits = s.strip_prefix('+').ok_or(malformed)?;
    let ok = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !ok {
        return Err(malformed);
    }
    digits.parse().map_err(|_| malformed)
}

fn index_of(table: &[&str], value: &str) -> Option<u8> {
    table.iter().position(|t| *t == value).map(|i| i as u8)
}

/// `industry`, `status` and `limit`; unknown parameters are ignored, as FastAPI does.
fn parse_list_query(sim: &Sim, query: &str) -> Result<(Filter, usize), Invalid> {
    let mut filter = Filter::default();
    let mut limit = DEFAULT_LIMIT;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "industry" => {
                filter.industry = Some(index_of(&INDUSTRIES, &value).ok_or(Invalid::Industry)?);
                sim.stats.filter_industry.fetch_add(1, Relaxed);
            }
            "status" => {
                filter.status = Some(index_of(&STATUSES, &value).ok_or(Invalid::Status)?);
                sim.stats.filter_status.fetch_add(1, Relaxed);
            }
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or(Invalid::Limit)?;
                sim.stats.filter_limit.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }
    Ok((filter, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(body: &str) -> Result<NewCall, Invalid> {
        parse_new_call(body.as_bytes())
    }

    const GOOD: &str = r#"{"direction":"inbound","caller_id":"+4915112345678","callee_id":"+4915187654321","industry":"gastro","metadata":{"test_run":"t","user_id":3}}"#;

    #[test]
    fn a_good_call_parses() {
        let c = create(GOOD).unwrap();
        assert_eq!((c.direction, c.industry), (0, 2));
        assert_eq!(c.caller, 4915112345678);
        assert_eq!(c.metadata.unwrap()["user_id"], 3);
    }

    #[test]
    fn each_bad_field_names_its_reason() {
        let with = |k: &str, v: &str| {
            let mut obj: Map<String, Value> = serde_json::from_str(GOOD).unwrap();
            match serde_json::from_str::<Value>(v) {
                Ok(v) => obj.insert(k.into(), v),
                Err(_) => obj.remove(k),
            };
            create(&Value::Object(obj).to_string()).err()
        };
        assert_eq!(create("nope").err(), Some(Invalid::NotJson));
        assert_eq!(create("[1]").err(), Some(Invalid::NotObject));
        assert_eq!(with("direction", r#""sideways""#), Some(Invalid::Direction));
        assert_eq!(with("caller_id", "-"), Some(Invalid::CallerMissing));
        assert_eq!(
            with("caller_id", r#""4915112345678""#),
            Some(Invalid::CallerMalformed)
        );
        assert_eq!(with("caller_id", r#""+49 151""#), Some(Invalid::CallerMalformed));
        assert_eq!(with("caller_id", "4915112345678"), Some(Invalid::CallerMalformed));
        assert_eq!(
            with("callee_id", r#""+4915112345678""#),
            Some(Invalid::SameNumber)
        );
        assert_eq!(
            with("callee_id", r#""+0123456789""#),
            Some(Invalid::CalleeMalformed)
        );
        assert_eq!(with("industry", r#""bakery""#), Some(Invalid::Industry));
        assert_eq!(with("industry", "-"), Some(Invalid::IndustryMissing));
        assert_eq!(with("metadata", "[]"), Some(Invalid::Metadata));
        assert_eq!(with("metadata", "null"), None);
    }

    #[test]
    fn updates_validate_status_and_duration() {
        let up = |b: &str| parse_update(b.as_bytes());
        assert_eq!(
            up(r#"{"status":"completed","duration_seconds":42}"#),
            Ok((Some(2), Some(42.0)))
        );
        assert_eq!(up("{}"), Ok((None, None)));
        assert_eq!(up(r#"{"status":"done"}"#), Err(Invalid::Status));
        assert_eq!(up(r#"{"duration_seconds":-1}"#), Err(Invalid::Duration));
        assert_eq!(up(r#"{"duration_seconds":"5"}"#), Err(Invalid::Duration));
    }
}
