//! Random but well-formed payloads for the API and webhook scenarios, as the original Locust
//! suite sent them: German mobile numbers, Twilio SIDs, call bodies and webhook forms.
//!
//! Everything here is cheap on purpose (this path is benchmarked against plain Goose): numbers
//! and SIDs live in fixed-size arrays, each body is one pre-sized `String`, and the list
//! queries come from a table built once.

use rand::Rng;
use std::fmt::Write;
use std::sync::LazyLock;

/// The Phone Agent's industries.
pub const INDUSTRIES: [&str; 4] = ["gesundheit", "handwerk", "gastro", "freie_berufe"];
/// The Phone Agent's call statuses (list filter, PATCH body).
pub const CALL_STATUSES: [&str; 4] = ["ringing", "in_progress", "completed", "failed"];
/// `direction` of a created call.
pub const DIRECTIONS: [&str; 2] = ["inbound", "outbound"];
/// `limit` values of a list query.
pub const LIST_LIMITS: [u32; 3] = [10, 25, 50];
/// Twilio's `CallStatus` values the status webhook sends.
pub const TWILIO_CALL_STATUSES: [&str; 6] = [
    "initiated",
    "ringing",
    "answered",
    "completed",
    "busy",
    "no-answer",
];
/// Twilio's `Direction` values the status webhook sends.
pub const TWILIO_DIRECTIONS: [&str; 2] = ["inbound", "outbound-api"];

/// Mobile numbers are this prefix and eight digits.
pub const PHONE_PREFIX: &str = "+49151";
/// The base path of the calls resource.
pub const CALLS_PATH: &str = "/api/v1/calls";
/// Upper bound (inclusive) of a PATCH's `duration_seconds` and a webhook's `CallDuration`.
pub const MAX_DURATION_S: u32 = 600;

/// How often the list query carries each filter (each drawn independently, as in Locust).
const P_INDUSTRY: f64 = 0.5;
const P_STATUS: f64 = 0.3;
const P_LIMIT: f64 = 0.2;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Picks an item by weight, as Locust picks a task: `items` pairs each item with its weight.
pub fn weighted_choice<T: Copy>(rng: &mut impl Rng, items: &[(T, u32)]) -> T {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut ticket = rng.random_range(0..total.max(1));
    for &(item, weight) in items {
        if ticket < weight {
            return item;
        }
        ticket -= weight;
    }
    items[items.len() - 1].0
}

/// Picks one of `items` uniformly.
pub fn choose<'a>(rng: &mut impl Rng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// A German mobile number, `+49151` and eight digits, held inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PhoneNumber([u8; 14]);

impl PhoneNumber {
    pub fn random(rng: &mut impl Rng) -> PhoneNumber {
        let mut bytes = [0u8; 14];
        bytes[..6].copy_from_slice(PHONE_PREFIX.as_bytes());
        let mut n: u32 = rng.random_range(0..100_000_000);
        for b in bytes[6..].iter_mut().rev() {
            *b = b'0' + (n % 10) as u8;
            n /= 10;
        }
        PhoneNumber(bytes)
    }

    pub fn as_str(&self) -> &str {
        // Built only from ASCII digits and the ASCII prefix.
        std::str::from_utf8(&self.0).expect("ASCII phone number")
    }

    /// The digits after the leading `+`, for form encoding (`+` is `%2B` there).
    fn digits(&self) -> &str {
        &self.as_str()[1..]
    }
}

impl std::fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Two different numbers: the caller and the callee of a call.
pub fn caller_and_callee(rng: &mut impl Rng) -> (PhoneNumber, PhoneNumber) {
    let caller = PhoneNumber::random(rng);
    loop {
        let callee = PhoneNumber::random(rng);
        if callee != caller {
            return (caller, callee);
        }
    }
}

/// A Twilio SID: a two-letter prefix (`CA` call, `AC` account, `MZ` stream) and 32 lowercase
/// hex digits, held inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sid([u8; 34]);

impl Sid {
    pub fn random(prefix: [u8; 2], rng: &mut impl Rng) -> Sid {
        let mut bytes = [0u8; 34];
        bytes[..2].copy_from_slice(&prefix);
        let mut n: u128 = rng.random();
        for b in bytes[2..].iter_mut().rev() {
            *b = HEX[(n & 0xf) as usize];
            n >>= 4;
        }
        Sid(bytes)
    }

    /// A call SID, `CA…`.
    pub fn call(rng: &mut impl Rng) -> Sid {
        Sid::random(*b"CA", rng)
    }

    /// An account SID, `AC…`.
    pub fn account(rng: &mut impl Rng) -> Sid {
        Sid::random(*b"AC", rng)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII SID")
    }
}

impl std::fmt::Debug for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of `POST /api/v1/calls`: a random direction, two different numbers, an
/// industry, and metadata naming the Goose user that made it.
pub fn create_call_body(rng: &mut impl Rng, user_id: usize) -> String {
    let (caller, callee) = caller_and_callee(rng);
    let mut body = String::with_capacity(160);
    body.push_str(r#"{"direction":""#);
    body.push_str(choose(rng, &DIRECTIONS));
    body.push_str(r#"","caller_id":""#);
    body.push_str(caller.as_str());
    body.push_str(r#"","callee_id":""#);
    body.push_str(callee.as_str());
    body.push_str(r#"","industry":""#);
    body.push_str(choose(rng, &INDUSTRIES));
    body.push_str(r#"","metadata":{"test_run":true,"user_id":"#);
    let _ = write!(body, "{user_id}}}}}");
    body
}

/// The JSON body of `PATCH /api/v1/calls/{id}`: a status and a duration.
pub fn update_call_body(rng: &mut impl Rng) -> String {
    let mut body = String::with_capacity(56);
    body.push_str(r#"{"status":""#);
    body.push_str(choose(rng, &CALL_STATUSES));
    let _ = write!(
        body,
        r#"","duration_seconds":{}}}"#,
        rng.random_range(0..=MAX_DURATION_S)
    );
    body
}

/// Every list query: each filter absent or one of its values, in `industry`, `status`,
/// `limit` order. Index: `(industry * 5 + status) * 4 + limit`, 0 meaning "absent".
static LIST_PATHS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut paths = Vec::with_capacity(5 * 5 * 4);
    for industry in std::iter::once(None).chain(INDUSTRIES.iter().map(Some)) {
        for status in std::iter::once(None).chain(CALL_STATUSES.iter().map(Some)) {
            for limit in std::iter::once(None).chain(LIST_LIMITS.iter().map(Some)) {
                paths.push(list_path(industry.copied(), status.copied(), limit.copied()));
            }
        }
    }
    paths
});

fn list_path(industry: Option<&str>, status: Option<&str>, limit: Option<u32>) -> String {
    let mut path = String::from(CALLS_PATH);
    let mut sep = '?';
    let mut param = |path: &mut String, key: &str, value: &dyn std::fmt::Display| {
        let _ = write!(path, "{sep}{key}={value}");
        sep = '&';
    };
    if let Some(v) = industry {
        param(&mut path, "industry", &v);
    }
    if let Some(v) = status {
        param(&mut path, "status", &v);
    }
    if let Some(v) = limit {
        param(&mut path, "limit", &v);
    }
    path
}

/// A random `GET /api/v1/calls` path with query: industry 50 %, status 30 %, limit 20 %, each
/// drawn independently.
pub fn random_list_path(rng: &mut impl Rng) -> &'static str {
    let industry = if rng.random_bool(P_INDUSTRY) {
        1 + rng.random_range(0..INDUSTRIES.len())
    } else {
        0
    };
    let status = if rng.random_bool(P_STATUS) {
        1 + rng.random_range(0..CALL_STATUSES.len())
    } else {
        0
    };
    let limit = if rng.random_bool(P_LIMIT) {
        1 + rng.random_range(0..LIST_LIMITS.len())
    } else {
        0
    };
    &LIST_PATHS[(industry * 5 + status) * 4 + limit]
}

/// The path of one call, its id percent-encoded where it has to be (ids from the server are
/// normally plain, so this is usually a plain concatenation).
pub fn call_path(id: &str) -> String {
    let mut path = String::with_capacity(CALLS_PATH.len() + 1 + id.len());
    path.push_str(CALLS_PATH);
    path.push('/');
    for &b in id.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            path.push(b as char);
        } else {
            let _ = write!(path, "%{b:02X}");
        }
    }
    path
}

/// A Twilio call's identity as the webhooks name it.
#[derive(Debug, Clone, Copy)]
pub struct TwilioCall<'a> {
    pub call_sid: &'a Sid,
    pub account_sid: &'a Sid,
}

/// Starts a webhook form with `CallSid`, `AccountSid`, `From` and `To`.
fn webhook_form(rng: &mut impl Rng, call: TwilioCall<'_>, capacity: usize) -> String {
    let (from, to) = caller_and_callee(rng);
    let mut form = String::with_capacity(capacity);
    form.push_str("CallSid=");
    form.push_str(call.call_sid.as_str());
    form.push_str("&AccountSid=");
    form.push_str(call.account_sid.as_str());
    form.push_str("&From=%2B");
    form.push_str(from.digits());
    form.push_str("&To=%2B");
    form.push_str(to.digits());
    form
}

/// The form body of `POST /webhooks/twilio/status`: a random status, direction and duration.
pub fn status_webhook_form(rng: &mut impl Rng, call: TwilioCall<'_>) -> String {
    let mut form = webhook_form(rng, call, 200);
    form.push_str("&CallStatus=");
    form.push_str(choose(rng, &TWILIO_CALL_STATUSES));
    form.push_str("&Direction=");
    form.push_str(choose(rng, &TWILIO_DIRECTIONS));
    let _ = write!(form, "&CallDuration={}", rng.random_range(0..=MAX_DURATION_S));
    form
}

/// The form body of `POST /webhooks/twilio/voice`: an inbound call arriving.
pub fn voice_webhook_form(rng: &mut impl Rng, call: TwilioCall<'_>) -> String {
    let mut form = webhook_form(rng, call, 160);
    form.push_str("&Direction=inbound");
    form
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn is_phone(s: &str) -> bool {
        s.len() == 14 && s.starts_with(PHONE_PREFIX) && s[6..].bytes().all(|b| b.is_ascii_digit())
    }

    fn is_sid(s: &str, prefix: &str) -> bool {
        s.len() == 34
            && s.starts_with(prefix)
            && s[2..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    /// Splits a form body; values are decoded only for `%2B`, the one escape the bodies use.
    fn form(body: &str) -> HashMap<String, String> {
        body.split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("key=value");
                (k.to_string(), v.replace("%2B", "+"))
            })
            .collect()
    }

    #[test]
    fn phone_numbers_are_german_mobiles_and_cover_all_digits() {
        let mut rng = rand::rng();
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let n = PhoneNumber::random(&mut rng);
            assert!(is_phone(n.as_str()), "{n:?}");
            for b in n.as_str()[6..].bytes() {
                seen[(b - b'0') as usize] = true;
            }
        }
        assert!(seen.iter().all(|&s| s), "every digit appears somewhere");
        for _ in 0..1000 {
            let (a, b) = caller_and_callee(&mut rng);
            assert_ne!(a, b);
        }
    }

    #[test]
    fn sids_have_prefix_and_32_lowercase_hex_digits() {
        let mut rng = rand::rng();
        let call = Sid::call(&mut rng);
        let account = Sid::account(&mut rng);
        assert!(is_sid(call.as_str(), "CA"), "{call:?}");
        assert!(is_sid(account.as_str(), "AC"), "{account:?}");
        assert_ne!(Sid::call(&mut rng), call, "SIDs are random");
    }

    #[test]
    fn create_body_is_valid_json_with_the_original_fields() {
        let mut rng = rand::rng();
        for user in [0, 7, 12345] {
            let body = create_call_body(&mut rng, user);
            let v: serde_json::Value = serde_json::from_str(&body).expect(&body);
            assert!(DIRECTIONS.contains(&v["direction"].as_str().unwrap()));
            assert!(INDUSTRIES.contains(&v["industry"].as_str().unwrap()));
            let (caller, callee) = (v["caller_id"].as_str().unwrap(), v["callee_id"].as_str().unwrap());
            assert!(is_phone(caller) && is_phone(callee) && caller != callee, "{body}");
            assert_eq!(
                v["metadata"],
                serde_json::json!({"test_run": true, "user_id": user})
            );
            assert_eq!(v.as_object().unwrap().len(), 5, "{body}");
        }
    }

    #[test]
    fn update_body_has_status_and_duration() {
        let mut rng = rand::rng();
        for _ in 0..100 {
            let body = update_call_body(&mut rng);
            let v: serde_json::Value = serde_json::from_str(&body).expect(&body);
            assert!(CALL_STATUSES.contains(&v["status"].as_str().unwrap()));
            assert!(v["duration_seconds"].as_u64().unwrap() <= MAX_DURATION_S as u64);
        }
    }

    #[test]
    fn list_paths_carry_each_filter_at_its_rate() {
        let mut rng = rand::rng();
        let n = 20_000;
        let (mut industry, mut status, mut limit) = (0, 0, 0);
        for _ in 0..n {
            let path = random_list_path(&mut rng);
            let url = url::Url::parse(&format!("http://h{path}")).unwrap();
            assert_eq!(url.path(), CALLS_PATH);
            for (k, v) in url.query_pairs() {
                match &*k {
                    "industry" => industry += INDUSTRIES.contains(&&*v) as u32,
                    "status" => status += CALL_STATUSES.contains(&&*v) as u32,
                    "limit" => limit += LIST_LIMITS.contains(&v.parse().unwrap()) as u32,
                    other => panic!("unexpected parameter {other} in {path}"),
                }
            }
        }
        let share = |c: u32| c as f64 / n as f64;
        assert!(
            (share(industry) - 0.5).abs() < 0.03,
            "industry {}",
            share(industry)
        );
        assert!((share(status) - 0.3).abs() < 0.03, "status {}", share(status));
        assert!((share(limit) - 0.2).abs() < 0.03, "limit {}", share(limit));
        assert_eq!(LIST_PATHS[0], CALLS_PATH);
        assert_eq!(LIST_PATHS.len(), 100);
    }

    #[test]
    fn call_paths_escape_what_a_path_segment_cannot_hold() {
        assert_eq!(call_path("3f2a-9b_c.d~e"), "/api/v1/calls/3f2a-9b_c.d~e");
        assert_eq!(call_path("a/b c?"), "/api/v1/calls/a%2Fb%20c%3F");
    }

    #[test]
    fn webhook_forms_have_the_twilio_fields() {
        let mut rng = rand::rng();
        let (call_sid, account_sid) = (Sid::call(&mut rng), Sid::account(&mut rng));
        let call = TwilioCall {
            call_sid: &call_sid,
            account_sid: &account_sid,
        };
        let status = form(&status_webhook_form(&mut rng, call));
        assert_eq!(status["CallSid"], call_sid.as_str());
        assert_eq!(status["AccountSid"], account_sid.as_str());
        assert!(TWILIO_CALL_STATUSES.contains(&status["CallStatus"].as_str()));
        assert!(TWILIO_DIRECTIONS.contains(&status["Direction"].as_str()));
        assert!(is_phone(&status["From"]) && is_phone(&status["To"]));
        assert!(status["CallDuration"].parse::<u32>().unwrap() <= MAX_DURATION_S);
        assert_eq!(status.len(), 7);

        let voice = form(&voice_webhook_form(&mut rng, call));
        assert_eq!(voice["Direction"], "inbound");
        assert!(is_phone(&voice["From"]) && is_phone(&voice["To"]));
        assert_eq!(voice.len(), 5);
    }

    #[test]
    fn weighted_choice_follows_the_weights() {
        let mut rng = rand::rng();
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            counts[weighted_choice(&mut rng, &[(0, 10), (1, 5), (2, 0)])] += 1;
        }
        assert_eq!(counts[2], 0, "weight 0 is never picked");
        let ratio = counts[0] as f64 / counts[1] as f64;
        assert!((ratio - 2.0).abs() < 0.15, "{counts:?}");
    }
}
