//! Twilio Media Streams messages, both directions, as JSON text frames.
//!
//! Twilio (here: the load generator) sends `connected`, `start`, `media`, `mark` and `stop`; the
//! agent (the server under test) sends `media`, `mark` and `clear`. Twilio writes
//! `sequenceNumber`, `chunk` and `timestamp` as decimal strings; the parser accepts numbers too.
//! Parsing never panics: anything malformed is a [`ProtocolError`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// One Media Streams message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    Connected {
        protocol: String,
        version: String,
    },
    Start {
        #[serde(rename = "sequenceNumber", with = "num_str")]
        sequence_number: u64,
        start: Start,
        #[serde(rename = "streamSid")]
        stream_sid: String,
    },
    Media {
        /// Twilio numbers its messages; the agent's own media messages carry none.
        #[serde(
            rename = "sequenceNumber",
            default,
            with = "opt_num_str",
            skip_serializing_if = "Option::is_none"
        )]
        sequence_number: Option<u64>,
        media: Media,
        #[serde(rename = "streamSid")]
        stream_sid: String,
    },
    Mark {
        #[serde(
            rename = "sequenceNumber",
            default,
            with = "opt_num_str",
            skip_serializing_if = "Option::is_none"
        )]
        sequence_number: Option<u64>,
        mark: Mark,
        #[serde(rename = "streamSid")]
        stream_sid: String,
    },
    Clear {
        #[serde(rename = "streamSid")]
        stream_sid: String,
    },
    Stop {
        #[serde(rename = "sequenceNumber", with = "num_str")]
        sequence_number: u64,
        stop: Stop,
        #[serde(rename = "streamSid")]
        stream_sid: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Start {
    pub account_sid: String,
    pub stream_sid: String,
    pub call_sid: String,
    pub tracks: Vec<String>,
    #[serde(default)]
    pub custom_parameters: serde_json::Map<String, serde_json::Value>,
    pub media_format: MediaFormat,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    pub encoding: String,
    pub sample_rate: u32,
    pub channels: u32,
}

impl Default for MediaFormat {
    /// What Twilio sends: 8 kHz mono mu-law.
    fn default() -> Self {
        MediaFormat {
            encoding: "audio/x-mulaw".into(),
            sample_rate: 8000,
            channels: 1,
        }
    }
}

/// A media payload: base64 of mu-law bytes. Twilio's own frames carry track, chunk and
/// timestamp (ms since the stream started); the agent's carry only the payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Media {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    #[serde(default, with = "opt_num_str", skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u64>,
    #[serde(default, with = "opt_num_str", skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stop {
    pub account_sid: String,
    pub call_sid: String,
}

/// Why a frame is not a Media Streams message we understand.
#[derive(Debug, Clone, PartialEq)]
pub enum ProtocolError {
    /// Not JSON, not an object, no `event` name, or a known event with a missing or mistyped
    /// field. The text is one of a few fixed phrases ("not JSON", "not a JSON object", "no
    /// 'event' name", "bad 'media' event"): never the frame's content or a position in it, so
    /// reports can count malformed frames by kind.
    Malformed(String),
    /// Valid JSON with an `event` this protocol does not have.
    UnknownEvent(String),
    /// A binary frame, where Media Streams uses text only.
    Binary,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Malformed(why) => write!(f, "malformed event: {why}"),
            ProtocolError::UnknownEvent(name) => write!(f, "unknown event '{name}'"),
            ProtocolError::Binary => write!(f, "unexpected binary frame"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// A new Twilio id: the two-letter `prefix` ("CA" call, "MZ" stream, "AC" account) and 32
/// random hex digits.
pub fn sid(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}

const EVENTS: [&str; 6] = ["connected", "start", "media", "mark", "clear", "stop"];

impl Event {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<Event, ProtocolError> {
        serde_json::from_str::<Event>(text).map_err(|_| Event::why_not(text))
    }

    /// Why a frame that is not an event is not one (the slow path: bad frames only).
    fn why_not(text: &str) -> ProtocolError {
        use serde_json::Value;
        let malformed = |why: &str| ProtocolError::Malformed(why.to_string());
        let value = match serde_json::from_str::<Value>(text) {
            Ok(v) => v,
            Err(_) => return malformed("not JSON"),
        };
        let Value::Object(fields) = value else {
            return malformed("not a JSON object");
        };
        match fields.get("event") {
            Some(Value::String(event)) => match EVENTS.iter().find(|&&e| e == event.as_str()) {
                Some(known) => malformed(&format!("bad '{known}' event")),
                None => ProtocolError::UnknownEvent(event.chars().take(40).collect()),
            },
            _ => malformed("no 'event' name"),
        }
    }

    /// The event's name, as on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Connected { .. } => "connected",
            Event::Start { .. } => "start",
            Event::Media { .. } => "media",
            Event::Mark { .. } => "mark",
            Event::Clear { .. } => "clear",
            Event::Stop { .. } => "stop",
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events always serialize")
    }
}

/// Twilio's numbers-as-strings, read leniently.
mod num_str {
    use super::*;

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum N {
            Num(u64),
            Str(String),
        }
        match N::deserialize(d)? {
            N::Num(n) => Ok(n),
            N::Str(s) => s
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("'{s}' is not a number"))),
        }
    }
}

mod opt_num_str {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.collect_str(n),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        super::num_str::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_twilio_documented_messages() {
        let media = r#"{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"1","timestamp":"5","payload":"no+JhoaJjpzSHxAKBgYJDh0="},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}"#;
        match Event::parse(media).unwrap() {
            Event::Media {
                sequence_number,
                media,
                ..
            } => {
                assert_eq!(sequence_number, Some(3));
                assert_eq!((media.chunk, media.timestamp), (Some(1), Some(5)));
            }
            other => panic!("{other:?}"),
        }
        let clear = r#"{"event":"clear","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}"#;
        assert_eq!(Event::parse(clear).unwrap().name(), "clear");
        let agent_media = r#"{"event":"media","streamSid":"MZ1","media":{"payload":"AAAA"}}"#;
        assert_eq!(Event::parse(agent_media).unwrap().name(), "media");
    }

    #[test]
    fn round_trips_with_numbers_as_strings() {
        let e = Event::Stop {
            sequence_number: 9,
            stop: Stop {
                account_sid: "AC1".into(),
                call_sid: "CA1".into(),
            },
            stream_sid: "MZ1".into(),
        };
        let json = e.to_json();
        assert!(json.contains(r#""sequenceNumber":"9""#), "{json}");
        assert_eq!(Event::parse(&json).unwrap(), e);
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        assert!(matches!(Event::parse("{"), Err(ProtocolError::Malformed(_))));
        assert!(matches!(
            Event::parse(r#"{"event":"dtmf"}"#),
            Err(ProtocolError::UnknownEvent(_))
        ));
        assert!(matches!(
            Event::parse(r#"{"event":"media","streamSid":"x"}"#),
            Err(ProtocolError::Malformed(_))
        ));
        // Malformed frames are told apart by kind, in a few fixed words.
        for (frame, why) in [
            ("", "not JSON"),
            ("hello, caller", "not JSON"),
            (r#"{"event":"media""#, "not JSON"),
            ("[1,2]", "not a JSON object"),
            (r#"{"streamSid":"MZ1"}"#, "no 'event' name"),
            (r#"{"event":7}"#, "no 'event' name"),
            (r#"{"event":"media","streamSid":"x"}"#, "bad 'media' event"),
            (
                r#"{"event":"mark","streamSid":"x","mark":{"name":1}}"#,
                "bad 'mark' event",
            ),
        ] {
            assert_eq!(
                Event::parse(frame),
                Err(ProtocolError::Malformed(why.into())),
                "{frame}"
            );
        }
        let long = format!(r#"{{"event":"{}"}}"#, "x".repeat(100));
        assert_eq!(
            Event::parse(&long),
            Err(ProtocolError::UnknownEvent("x".repeat(40)))
        );
        assert!(matches!(
            Event::parse(
                r#"{"event":"stop","sequenceNumber":"x1","stop":{"accountSid":"a","callSid":"c"},"streamSid":"s"}"#
            ),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn sids_look_like_twilio_ones() {
        let s = sid("MZ");
        assert_eq!(s.len(), 34);
        assert!(s.starts_with("MZ") && s[2..].chars().all(|c| c.is_ascii_hexdigit()));
    }
}
