//! Why a call (or one of its AI turns) failed: a small fixed set of reasons, each with the text
//! the reports show, the close code the caller answers with and the HTTP status it carries.
//!
//! The texts are the rows of Goose's reports and the keys of the run's failure tally, so they
//! never hold ids or message content, and unknown event names are named only for the first
//! [`MAX_UNKNOWN_EVENTS`](super::MAX_UNKNOWN_EVENTS) kinds of a run ([`UnknownEvents`]).

use super::unknown_events::UnknownEvents;
use super::MAX_AGENT_MESSAGE;
use crate::protocol::twilio::ProtocolError;
use std::fmt;
use std::io::ErrorKind;
use std::time::Duration;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Why a call, or one AI turn of it, failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFailure {
    /// The host's scheme is not one a media-stream URL can be made from.
    BadScheme { scheme: String },
    /// The host cannot carry a WebSocket scheme.
    NotWebSocketUrl,
    /// The WebSocket handshake failed before the server answered it.
    Connect(ConnectFailure),
    /// The server answered the upgrade with this HTTP status.
    RefusedUpgrade { status: u16 },
    /// The handshake or a send did not complete in time (the agent stopped reading).
    Timeout,
    /// The agent ended the call before we hung up: a reset, end of stream, or its close frame.
    ClosedByServer,
    /// Another I/O error on an established call.
    Connection(ErrorKind),
    /// The agent sent something Twilio would not accept; the call answers with a close frame.
    Protocol(ProtocolFailure),
    /// An AI turn got no audio within the turn timeout.
    NoAnswer { within: Duration },
    /// An AI turn's answer began but had no closing `mark` within the turn timeout.
    AnswerNotFinished { within: Duration },
}

/// How a WebSocket handshake failed before any HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    Tls,
    Io(ErrorKind),
    BadUrl,
    BadHttp,
    Handshake,
}

/// What the agent sent that it may not: as Twilio sees it (error 31924), only `media`, `mark`
/// and `clear` go from the agent to Twilio, as well-formed JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolFailure {
    /// One of the parser's few fixed phrases ("not JSON", "bad 'media' event", ...).
    Malformed(String),
    /// An event name this protocol does not have, control characters and quotes replaced.
    UnknownEvent(String),
    /// An unknown event name past the run's first [`MAX_UNKNOWN_EVENTS`](super::MAX_UNKNOWN_EVENTS) kinds.
    TooManyUnknownEvents,
    /// A known event only Twilio sends (`connected`, `start`, `stop`).
    UnexpectedEvent(&'static str),
    NotBase64,
    WrongStreamSid,
    TooManyPendingMarks,
    /// A message over [`MAX_AGENT_MESSAGE`].
    MessageTooLarge,
    BinaryFrame,
    InvalidUtf8,
    /// Anything else tungstenite refuses.
    WebSocketViolation,
}

impl CallFailure {
    /// The close code a failed call answers with; `None` where there is nothing to close (a
    /// dead or stalled line is just dropped).
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            CallFailure::Protocol(p) => Some(p.close_code()),
            _ => None,
        }
    }

    /// The HTTP status of a refused upgrade.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallFailure::RefusedUpgrade { status } => Some(*status),
            _ => None,
        }
    }

    /// A failed WebSocket handshake; `tls` for a `wss` URL.
    pub fn from_handshake(e: tungstenite::Error, tls: bool) -> CallFailure {
        use tungstenite::Error as E;
        let connect = CallFailure::Connect;
        match e {
            // rustls reports a broken TLS handshake as an I/O error.
            E::Io(io) if tls && io.kind() == ErrorKind::InvalidData => connect(ConnectFailure::Tls),
            E::Http(response) => CallFailure::RefusedUpgrade {
                status: response.status().as_u16(),
            },
            E::Io(io) => connect(ConnectFailure::Io(io.kind())),
            E::Tls(_) => connect(ConnectFailure::Tls),
            E::Url(_) => connect(ConnectFailure::BadUrl),
            E::HttpFormat(_) => connect(ConnectFailure::BadHttp),
            _ => connect(ConnectFailure::Handshake),
        }
    }

    /// A failed read or write on an established call.
    pub fn from_stream(e: tungstenite::Error) -> CallFailure {
        use tungstenite::error::ProtocolError as P;
        use tungstenite::Error as E;
        match e {
            E::ConnectionClosed | E::AlreadyClosed | E::Protocol(P::ResetWithoutClosingHandshake) => {
                CallFailure::ClosedByServer
            }
            E::Io(io)
                if matches!(
                    io.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::BrokenPipe
                        | ErrorKind::UnexpectedEof
                        | ErrorKind::ConnectionAborted
                ) =>
            {
                CallFailure::ClosedByServer
            }
            E::Io(io) => CallFailure::Connection(io.kind()),
            E::Capacity(_) => ProtocolFailure::MessageTooLarge.into(),
            E::Utf8(_) => ProtocolFailure::InvalidUtf8.into(),
            _ => ProtocolFailure::WebSocketViolation.into(),
        }
    }

    /// A text frame that is not an event the agent may send; unknown names are named as
    /// `unknown_events` allows.
    pub fn from_parse(e: ProtocolError, unknown_events: &UnknownEvents) -> CallFailure {
        match e {
            ProtocolError::Malformed(why) => ProtocolFailure::Malformed(why).into(),
            ProtocolError::UnknownEvent(name) => match unknown_events.name(&name) {
                Some(name) => ProtocolFailure::UnknownEvent(name).into(),
                None => ProtocolFailure::TooManyUnknownEvents.into(),
            },
            ProtocolError::Binary => ProtocolFailure::BinaryFrame.into(),
        }
    }
}

impl ProtocolFailure {
    /// The close code naming this kind of violation (RFC 6455, section 7.4.1).
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolFailure::MessageTooLarge => CloseCode::Size,
            ProtocolFailure::BinaryFrame => CloseCode::Unsupported,
            ProtocolFailure::InvalidUtf8 => CloseCode::Invalid,
            _ => CloseCode::Protocol,
        }
    }
}

impl From<ProtocolFailure> for CallFailure {
    fn from(p: ProtocolFailure) -> CallFailure {
        CallFailure::Protocol(p)
    }
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallFailure::BadScheme { scheme } => write!(f, "bad host: scheme '{scheme}' is not http(s)"),
            CallFailure::NotWebSocketUrl => f.write_str("bad host: cannot be a WebSocket URL"),
            CallFailure::Connect(why) => write!(f, "connect failed: {why}"),
            CallFailure::RefusedUpgrade { status } => write!(f, "refused upgrade: {status}"),
            CallFailure::Timeout => f.write_str("timeout"),
            CallFailure::ClosedByServer => f.write_str("closed by server mid-call"),
            CallFailure::Connection(kind) => write!(f, "connection error: {kind}"),
            CallFailure::Protocol(p) => write!(f, "protocol error: {p}"),
            CallFailure::NoAnswer { within } => write!(f, "no answer within {}s", within.as_secs()),
            CallFailure::AnswerNotFinished { within } => {
                write!(f, "answer not finished within {}s", within.as_secs())
            }
        }
    }
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFailure::Tls => f.write_str("TLS error"),
            ConnectFailure::Io(kind) => write!(f, "{kind}"),
            ConnectFailure::BadUrl => f.write_str("bad URL"),
            ConnectFailure::BadHttp => f.write_str("bad HTTP"),
            ConnectFailure::Handshake => f.write_str("WebSocket handshake"),
        }
    }
}

impl fmt::Display for ProtocolFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolFailure::Malformed(why) => f.write_str(why),
            ProtocolFailure::UnknownEvent(name) => write!(f, "unknown event '{name}'"),
            ProtocolFailure::TooManyUnknownEvents => f.write_str("unknown event (too many kinds to name)"),
            ProtocolFailure::UnexpectedEvent(name) => write!(f, "unexpected '{name}' event"),
            ProtocolFailure::NotBase64 => f.write_str("media payload is not base64"),
            ProtocolFailure::WrongStreamSid => f.write_str("wrong streamSid"),
            ProtocolFailure::TooManyPendingMarks => f.write_str("too many pending marks"),
            ProtocolFailure::MessageTooLarge => {
                write!(f, "message too large (over {} MiB)", MAX_AGENT_MESSAGE >> 20)
            }
            ProtocolFailure::BinaryFrame => f.write_str("unexpected binary frame"),
            ProtocolFailure::InvalidUtf8 => f.write_str("invalid UTF-8"),
            ProtocolFailure::WebSocketViolation => f.write_str("WebSocket protocol violation"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::twilio::Event;

    #[test]
    fn agent_garbage_is_named_in_a_few_words() {
        let unknown = UnknownEvents::default();
        let reason = |text: &str| {
            Event::parse(text)
                .map_err(|e| CallFailure::from_parse(e, &unknown))
                .unwrap_err()
        };
        for (text, want, code) in [
            (
                "{'event': 'media'}",
                "protocol error: not JSON",
                CloseCode::Protocol,
            ),
            ("[]", "protocol error: not a JSON object", CloseCode::Protocol),
            (
                r#"{"streamSid":"MZ1"}"#,
                "protocol error: no 'event' name",
                CloseCode::Protocol,
            ),
            (
                r#"{"event":"mark","streamSid":"MZ1"}"#,
                "protocol error: bad 'mark' event",
                CloseCode::Protocol,
            ),
            (
                r#"{"event":"transcript"}"#,
                "protocol error: unknown event 'transcript'",
                CloseCode::Protocol,
            ),
        ] {
            let f = reason(text);
            assert_eq!(
                (f.to_string().as_str(), f.close_code()),
                (want, Some(code)),
                "{text}"
            );
        }
        let too_large = CallFailure::from(ProtocolFailure::MessageTooLarge);
        assert_eq!(
            too_large.to_string(),
            "protocol error: message too large (over 1 MiB)"
        );
        assert_eq!(too_large.close_code(), Some(CloseCode::Size));
        let binary = CallFailure::from(ProtocolFailure::BinaryFrame);
        assert_eq!(binary.to_string(), "protocol error: unexpected binary frame");
        assert_eq!(binary.close_code(), Some(CloseCode::Unsupported));
        assert_eq!(
            CallFailure::ClosedByServer.close_code(),
            None,
            "nothing to close on a dropped line"
        );
    }

    #[test]
    fn every_reason_reads_as_the_reports_show_it() {
        let within = Duration::from_secs(15);
        for (failure, text) in [
            (
                CallFailure::BadScheme { scheme: "ftp".into() },
                "bad host: scheme 'ftp' is not http(s)",
            ),
            (
                CallFailure::NotWebSocketUrl,
                "bad host: cannot be a WebSocket URL",
            ),
            (
                CallFailure::Connect(ConnectFailure::Tls),
                "connect failed: TLS error",
            ),
            (
                CallFailure::Connect(ConnectFailure::Io(ErrorKind::ConnectionRefused)),
                "connect failed: connection refused",
            ),
            (
                CallFailure::Connect(ConnectFailure::BadUrl),
                "connect failed: bad URL",
            ),
            (
                CallFailure::Connect(ConnectFailure::BadHttp),
                "connect failed: bad HTTP",
            ),
            (
                CallFailure::Connect(ConnectFailure::Handshake),
                "connect failed: WebSocket handshake",
            ),
            (
                CallFailure::RefusedUpgrade { status: 503 },
                "refused upgrade: 503",
            ),
            (CallFailure::Timeout, "timeout"),
            (CallFailure::ClosedByServer, "closed by server mid-call"),
            (
                CallFailure::Connection(ErrorKind::TimedOut),
                "connection error: timed out",
            ),
            (CallFailure::NoAnswer { within }, "no answer within 15s"),
            (
                CallFailure::AnswerNotFinished { within },
                "answer not finished within 15s",
            ),
        ] {
            assert_eq!(failure.to_string(), text);
            assert_eq!(failure.close_code(), None, "{text}");
        }
        assert_eq!(CallFailure::RefusedUpgrade { status: 503 }.status(), Some(503));
        assert_eq!(CallFailure::Timeout.status(), None);
        for (failure, text, code) in [
            (
                ProtocolFailure::UnexpectedEvent("stop"),
                "protocol error: unexpected 'stop' event",
                CloseCode::Protocol,
            ),
            (
                ProtocolFailure::NotBase64,
                "protocol error: media payload is not base64",
                CloseCode::Protocol,
            ),
            (
                ProtocolFailure::WrongStreamSid,
                "protocol error: wrong streamSid",
                CloseCode::Protocol,
            ),
            (
                ProtocolFailure::TooManyPendingMarks,
                "protocol error: too many pending marks",
                CloseCode::Protocol,
            ),
            (
                ProtocolFailure::InvalidUtf8,
                "protocol error: invalid UTF-8",
                CloseCode::Invalid,
            ),
            (
                ProtocolFailure::WebSocketViolation,
                "protocol error: WebSocket protocol violation",
                CloseCode::Protocol,
            ),
        ] {
            let failure = CallFailure::from(failure);
            assert_eq!(
                (failure.to_string().as_str(), failure.close_code()),
                (text, Some(code))
            );
        }
    }
}
