//! The hot path of a media stream: an inbound `media` message's few fields, parsed borrowed from
//! the frame (other events take the protocol layer's full parser).

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::borrow::Cow;

/// The fields of an inbound `media` message, borrowed from the frame.
#[derive(Deserialize)]
pub(super) struct Incoming<'a> {
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
fn sequence_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
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
}
