//! The second read a lenient stream gives a frame the protocol layer's parser refused: what a
//! test client (or a real Twilio) may leave out of an event is let pass and named as a
//! [`Deviation`]: a `stop` with no `sequenceNumber` or `stop` object, a `start` with parts
//! missing, an event with no `streamSid` (taken as the call's). What the agent cannot do without
//! (a media payload, a mark's name, an event name) still makes the frame malformed.

use super::inbound::{sequence_number, CallerEvent};
use crate::protocol::twilio::{sid, Mark, MediaFormat};
use crate::simulator::conformance::{Deviation, Fault};
use serde::Deserialize;

/// The events a caller sends, with every field the agent can do without optional (and fields
/// it never reads, such as `stop`'s object or `media`'s `track`, not read at all).
#[derive(Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum LooseEvent {
    Start {
        #[serde(rename = "sequenceNumber", default, deserialize_with = "sequence_number")]
        sequence_number: Option<u64>,
        #[serde(rename = "streamSid", default)]
        stream_sid: Option<String>,
        #[serde(default)]
        start: LooseStart,
    },
    Media {
        #[serde(rename = "sequenceNumber", default, deserialize_with = "sequence_number")]
        sequence_number: Option<u64>,
        #[serde(rename = "streamSid", default)]
        stream_sid: Option<String>,
        media: LooseMedia,
    },
    Mark {
        #[serde(rename = "sequenceNumber", default, deserialize_with = "sequence_number")]
        sequence_number: Option<u64>,
        #[serde(rename = "streamSid", default)]
        stream_sid: Option<String>,
        mark: Mark,
    },
    Stop {
        #[serde(rename = "sequenceNumber", default, deserialize_with = "sequence_number")]
        sequence_number: Option<u64>,
        #[serde(rename = "streamSid", default)]
        stream_sid: Option<String>,
    },
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LooseStart {
    #[serde(default)]
    stream_sid: Option<String>,
    /// Absent: Twilio's (8 kHz mono mu-law).
    #[serde(default)]
    media_format: Option<MediaFormat>,
}

#[derive(Deserialize)]
struct LooseMedia {
    payload: String,
}

/// Reads a frame the strict parser refused, and what it departs from the protocol in.
pub(super) fn read(text: &str) -> Result<(CallerEvent<'static>, Deviation), Fault> {
    let event = serde_json::from_str::<LooseEvent>(text).map_err(|_| Fault::Malformed)?;
    Ok(match event {
        LooseEvent::Start {
            sequence_number,
            stream_sid,
            start,
        } => {
            let stream_sid = stream_sid.or(start.stream_sid).unwrap_or_else(|| sid("MZ"));
            let start = CallerEvent::Start {
                sequence_number,
                stream_sid,
                media_format: start.media_format.unwrap_or_default(),
            };
            (start, Deviation::IncompleteStart)
        }
        LooseEvent::Media {
            sequence_number,
            stream_sid,
            media,
        } => {
            let media = CallerEvent::Media {
                sequence_number,
                stream_sid: stream_sid.map(Into::into),
                payload: media.payload.into(),
            };
            (media, Deviation::IncompleteMedia)
        }
        LooseEvent::Mark {
            sequence_number,
            stream_sid,
            mark,
        } => {
            let mark = CallerEvent::Mark {
                sequence_number,
                stream_sid,
                name: mark.name,
            };
            (mark, Deviation::IncompleteMark)
        }
        LooseEvent::Stop {
            sequence_number,
            stream_sid,
        } => {
            let stop = CallerEvent::Stop {
                sequence_number,
                stream_sid,
            };
            (stop, Deviation::BareStop)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_test_client_leaves_out_is_let_pass_and_named() {
        assert_eq!(
            read(r#"{"event":"stop","streamSid":"MZ1"}"#),
            Ok((
                CallerEvent::Stop {
                    sequence_number: None,
                    stream_sid: Some("MZ1".into())
                },
                Deviation::BareStop
            ))
        );
        assert_eq!(
            read(r#"{"event":"stop","sequenceNumber":"7"}"#).map(|(e, _)| e),
            Ok(CallerEvent::Stop {
                sequence_number: Some(7),
                stream_sid: None
            })
        );
        let media = r#"{"event":"media","media":{"payload":"/////w=="}}"#;
        assert_eq!(
            read(media),
            Ok((
                CallerEvent::Media {
                    sequence_number: None,
                    stream_sid: None,
                    payload: "/////w==".into()
                },
                Deviation::IncompleteMedia
            ))
        );
        let mark = r#"{"event":"mark","mark":{"name":"answer-1"}}"#;
        assert!(matches!(
            read(mark),
            Ok((CallerEvent::Mark { .. }, Deviation::IncompleteMark))
        ));
        // A start's streamSid is the event's, else its start object's, else a new one.
        let start = |json: &str| match read(json) {
            Ok((
                CallerEvent::Start {
                    stream_sid,
                    media_format,
                    ..
                },
                Deviation::IncompleteStart,
            )) => {
                assert_eq!(media_format, MediaFormat::default(), "Twilio's, when not given");
                stream_sid
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(start(r#"{"event":"start","streamSid":"MZ1"}"#), "MZ1");
        assert_eq!(start(r#"{"event":"start","start":{"streamSid":"MZ2"}}"#), "MZ2");
        assert!(start(r#"{"event":"start","start":{"callSid":"CA1"}}"#).starts_with("MZ"));
    }

    #[test]
    fn what_the_agent_needs_is_still_required() {
        for frame in [
            "{",
            r#"{"streamSid":"MZ1"}"#,
            r#"{"event":"media","streamSid":"MZ1"}"#,
            r#"{"event":"mark","streamSid":"MZ1","mark":{}}"#,
            r#"{"event":"stop","sequenceNumber":"x"}"#,
            r#"{"event":"connected"}"#,
        ] {
            assert_eq!(read(frame), Err(Fault::Malformed), "{frame}");
        }
        // A format given is kept, for the session to refuse.
        let pcm = r#"{"event":"start","start":{"mediaFormat":{"encoding":"audio/l16","sampleRate":16000,"channels":1}}}"#;
        let Ok((CallerEvent::Start { media_format, .. }, _)) = read(pcm) else {
            panic!("a start event");
        };
        assert_eq!(media_format.sample_rate, 16000);
    }
}
