//! A caller's message as a session acts on it. `media`, the hot path, is parsed borrowed from
//! the frame; other events (and media frames the fast parse refuses) take the protocol layer's
//! full parser, whose refusals a lenient stream gives a second chance ([`super::lenient`]).

use crate::protocol::twilio::MediaFormat;
use crate::protocol::{mulaw, Event, ProtocolError};
use crate::simulator::conformance::Fault;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::borrow::Cow;

/// What a session needs of a caller's message; the rest is not the agent's business. A
/// `streamSid` is missing only where a lenient read let it be.
#[derive(Debug, PartialEq)]
pub(super) enum CallerEvent<'a> {
    Connected,
    /// `stream_sid` is the one the agent answers on: the event's, or a new one if it had none.
    Start {
        sequence_number: Option<u64>,
        stream_sid: String,
        media_format: MediaFormat,
    },
    Media {
        sequence_number: Option<u64>,
        stream_sid: Option<Cow<'a, str>>,
        payload: Cow<'a, str>,
    },
    Mark {
        sequence_number: Option<u64>,
        stream_sid: Option<String>,
        name: String,
    },
    Stop {
        sequence_number: Option<u64>,
        stream_sid: Option<String>,
    },
    Clear,
}

/// Reads a text frame as the protocol has it.
pub(super) fn read(text: &str) -> Result<CallerEvent<'_>, Fault> {
    if let Ok(m) = serde_json::from_str::<Incoming>(text) {
        if m.event == "media" {
            return Ok(CallerEvent::Media {
                sequence_number: m.sequence_number,
                stream_sid: Some(m.stream_sid),
                payload: m.media.payload,
            });
        }
    }
    let event = match Event::parse(text) {
        Ok(event) => event,
        Err(ProtocolError::UnknownEvent(_)) => return Err(Fault::UnknownEvent),
        Err(_) => return Err(Fault::Malformed),
    };
    Ok(match event {
        Event::Connected { .. } => CallerEvent::Connected,
        Event::Start {
            sequence_number,
            start,
            stream_sid,
        } => CallerEvent::Start {
            sequence_number: Some(sequence_number),
            stream_sid,
            media_format: start.media_format,
        },
        Event::Media {
            sequence_number,
            media,
            stream_sid,
        } => CallerEvent::Media {
            sequence_number,
            stream_sid: Some(stream_sid.into()),
            payload: media.payload.into(),
        },
        Event::Mark {
            sequence_number,
            mark,
            stream_sid,
        } => CallerEvent::Mark {
            sequence_number,
            stream_sid: Some(stream_sid),
            name: mark.name,
        },
        Event::Stop {
            sequence_number,
            stream_sid,
            ..
        } => CallerEvent::Stop {
            sequence_number: Some(sequence_number),
            stream_sid: Some(stream_sid),
        },
        Event::Clear { .. } => CallerEvent::Clear,
    })
}

/// Whether audio comes as the agent hears it: 8 kHz mono mu-law.
pub(super) fn is_phone_audio(format: &MediaFormat) -> bool {
    format.encoding.eq_ignore_ascii_case("audio/x-mulaw")
        && format.sample_rate == mulaw::SAMPLE_RATE
        && format.channels == 1
}

/// The fields of an inbound `media` message, borrowed from the frame.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow)]
    pub(super) event: Cow<'a, str>,
    #[serde(rename = "sequenceNumber", default, deserialize_with = "sequence_number")]
    pub(super) sequence_number: Option<u64>,
    #[serde(rename = "streamSid", borrow)]
    pub(super) stream_sid: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) media: IncomingMedia<'a>,
}

/// The `media` object of an inbound `media` message.
#[derive(Deserialize)]
pub(super) struct IncomingMedia<'a> {
    #[serde(borrow)]
    pub(super) payload: Cow<'a, str>,
}

/// Twilio writes numbers as strings; accept both without allocating.
pub(super) fn sequence_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct NumOrStr;
    impl Visitor<'_> for NumOrStr {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a sequence number")
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.parse()
                .map(Some)
                .map_err(|_| E::custom("sequenceNumber is not a number"))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(NumOrStr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_frames_parse_on_the_fast_path() {
        let text = r#"{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"2","timestamp":"20","payload":"/////w=="},"streamSid":"MZ1"}"#;
        let m: Incoming = serde_json::from_str(text).unwrap();
        assert_eq!(m.event, "media");
        assert_eq!(m.sequence_number, Some(3));
        assert!(matches!(m.stream_sid, Cow::Borrowed("MZ1")));
        assert!(matches!(m.media.payload, Cow::Borrowed("/////w==")));
        let rest = r#","streamSid":"MZ1","media":{"payload":""}}"#;
        let numeric = format!(r#"{{"event":"media","sequenceNumber":4{rest}"#);
        let numeric: Incoming = serde_json::from_str(&numeric).unwrap();
        assert_eq!(numeric.sequence_number, Some(4));
        let bad = format!(r#"{{"event":"media","sequenceNumber":"x"{rest}"#);
        assert!(serde_json::from_str::<Incoming>(&bad).is_err());
        // Other events take the full parser.
        assert!(serde_json::from_str::<Incoming>(r#"{"event":"connected","protocol":"Call"}"#).is_err());
    }

    #[test]
    fn events_are_read_as_the_protocol_has_them() {
        let start = |format: &str| {
            format!(
                r#"{{"event":"start","sequenceNumber":"1","streamSid":"MZ1","start":{{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"mediaFormat":{format}}}}}"#
            )
        };
        let mulaw = r#"{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}"#;
        assert_eq!(
            read(&start(mulaw)),
            Ok(CallerEvent::Start {
                sequence_number: Some(1),
                stream_sid: "MZ1".into(),
                media_format: MediaFormat::default(),
            })
        );
        let pcm = r#"{"encoding":"audio/l16","sampleRate":8000,"channels":1}"#;
        let Ok(CallerEvent::Start { media_format, .. }) = read(&start(pcm)) else {
            panic!("a start event");
        };
        assert!(is_phone_audio(&MediaFormat::default()) && !is_phone_audio(&media_format));
        let stop = r#"{"event":"stop","sequenceNumber":"9","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA1"}}"#;
        assert_eq!(
            read(stop),
            Ok(CallerEvent::Stop {
                sequence_number: Some(9),
                stream_sid: Some("MZ1".into())
            })
        );
        assert_eq!(
            read(r#"{"event":"stop","streamSid":"MZ1"}"#),
            Err(Fault::Malformed)
        );
        assert_eq!(read(r#"{"event":"dtmf"}"#), Err(Fault::UnknownEvent));
        assert_eq!(
            read(r#"{"event":"clear","streamSid":"MZ1"}"#),
            Ok(CallerEvent::Clear)
        );
    }
}
