//! Twilio's webhooks, form-encoded: call status callbacks and the voice webhook answering TwiML
//! that connects the call to the media stream endpoint. Invalid fields are 400 with a reason.

use super::api::refuse;
use super::stats::{Invalid, CALL_STATUSES};
use super::Sim;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// The form fields the simulator looks at.
#[derive(Default)]
struct Form<'a> {
    call_sid: Option<Cow<'a, str>>,
    account_sid: Option<Cow<'a, str>>,
    call_status: Option<Cow<'a, str>>,
    direction: Option<Cow<'a, str>>,
    call_duration: Option<Cow<'a, str>>,
}

impl<'a> Form<'a> {
    fn parse(body: &'a [u8]) -> Form<'a> {
        let mut form = Form::default();
        for (key, value) in url::form_urlencoded::parse(body) {
            let slot = match key.as_ref() {
                "CallSid" => &mut form.call_sid,
                "AccountSid" => &mut form.account_sid,
                "CallStatus" => &mut form.call_status,
                "Direction" => &mut form.direction,
                "CallDuration" => &mut form.call_duration,
                _ => continue,
            };
            *slot = Some(value);
        }
        form
    }

    /// The checks both webhooks share.
    fn check_sids(&self) -> Result<(), Invalid> {
        if !is_sid(self.call_sid.as_deref(), "CA") {
            return Err(Invalid::CallSid);
        }
        if !is_sid(self.account_sid.as_deref(), "AC") {
            return Err(Invalid::AccountSid);
        }
        match self.direction.as_deref() {
            None | Some("inbound" | "outbound-api" | "outbound-dial") => Ok(()),
            Some(_) => Err(Invalid::WebhookDirection),
        }
    }
}

/// A Twilio SID: two letters, then 32 hex digits.
fn is_sid(value: Option<&str>, prefix: &str) -> bool {
    value
        .and_then(|v| v.strip_prefix(prefix))
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub(crate) async fn status(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let form = Form::parse(&body);
    if let Err(why) = form.check_sids() {
        return refuse(&sim, StatusCode::BAD_REQUEST, why);
    }
    let Some(status) = form
        .call_status
        .as_deref()
        .and_then(|s| CALL_STATUSES.iter().position(|c| *c == s))
    else {
        return refuse(&sim, StatusCode::BAD_REQUEST, Invalid::CallStatus);
    };
    if form
        .call_duration
        .as_deref()
        .is_some_and(|d| d.parse::<u64>().is_err())
    {
        return refuse(&sim, StatusCode::BAD_REQUEST, Invalid::CallDuration);
    }
    sim.stats.webhook_status.fetch_add(1, Relaxed);
    sim.stats.call_status(status);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/xml")],
        EMPTY_TWIML,
    )
        .into_response()
}

const EMPTY_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#;

pub(crate) async fn voice(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = Form::parse(&body);
    if let Err(why) = form.check_sids() {
        return refuse(&sim, StatusCode::BAD_REQUEST, why);
    }
    sim.stats.webhook_voice.fetch_add(1, Relaxed);
    let call_sid = form.call_sid.as_deref().unwrap_or_default();
    let url = stream_url(&sim, &headers, call_sid);
    let twiml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{}"/></Connect></Response>"#,
        xml_escape(&url)
    );
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/xml")], twiml).into_response()
}

/// Where Twilio should open the media stream: this server as the client reached it
/// (`Host`), `wss` when a proxy says the client came over https.
fn stream_url(sim: &Sim, headers: &HeaderMap, call_sid: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| sim.addr.to_string());
    let https = headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let scheme = if https { "wss" } else { "ws" };
    format!("{scheme}://{host}/webhooks/twilio/media/{call_sid}")
}

fn xml_escape(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_are_two_letters_and_32_hex_digits() {
        let hex = "0123456789abcdef0123456789ABCDEF";
        assert!(is_sid(Some(&format!("CA{hex}")), "CA"));
        assert!(!is_sid(Some(&format!("AC{hex}")), "CA"));
        assert!(!is_sid(Some(&format!("CA{}", &hex[1..])), "CA"));
        assert!(!is_sid(Some("CA0123456789abcdef0123456789abcdeg"), "CA"));
        assert!(!is_sid(None, "CA"));
    }

    #[test]
    fn form_fields_are_decoded() {
        let form = Form::parse(b"CallSid=CA1&CallStatus=no-answer&Direction=outbound-api&From=%2B49151");
        assert_eq!(form.call_sid.as_deref(), Some("CA1"));
        assert_eq!(form.call_status.as_deref(), Some("no-answer"));
        assert_eq!(form.direction.as_deref(), Some("outbound-api"));
        assert_eq!(xml_escape("a&b\"c"), "a&amp;b&quot;c");
    }
}
