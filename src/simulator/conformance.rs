//! How a caller's Media Streams messages depart from the protocol, as the stats count it: a
//! [`Fault`] closes the stream with its reason; a [`Deviation`] is something a real Twilio or a
//! test client sends that the protocol does not allow (a `start` with no `connected` before it,
//! a `stop` with no `sequenceNumber`), which the simulator lets pass unless `--strict-protocol`
//! asks it to close the stream for it instead.

/// Why a media stream was closed as broken (the close frame's reason and the stats key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    BadUpgrade,
    Malformed,
    UnknownEvent,
    Binary,
    TooLarge,
    NotUtf8,
    UnexpectedConnected,
    StartBeforeConnected,
    DuplicateStart,
    MediaBeforeStart,
    MarkBeforeStart,
    StopBeforeStart,
    UnexpectedClear,
    StreamSidMismatch,
    BadMediaFormat,
    BadPayload,
    NoStart,
    Idle,
}

impl Fault {
    pub(crate) const ALL: [Fault; 18] = [
        Fault::BadUpgrade,
        Fault::Malformed,
        Fault::UnknownEvent,
        Fault::Binary,
        Fault::TooLarge,
        Fault::NotUtf8,
        Fault::UnexpectedConnected,
        Fault::StartBeforeConnected,
        Fault::DuplicateStart,
        Fault::MediaBeforeStart,
        Fault::MarkBeforeStart,
        Fault::StopBeforeStart,
        Fault::UnexpectedClear,
        Fault::StreamSidMismatch,
        Fault::BadMediaFormat,
        Fault::BadPayload,
        Fault::NoStart,
        Fault::Idle,
    ];

    pub(crate) fn reason(self) -> &'static str {
        match self {
            Fault::BadUpgrade => "not a WebSocket upgrade request",
            Fault::Malformed => "malformed event",
            Fault::UnknownEvent => "unknown event",
            Fault::Binary => "binary frame",
            Fault::TooLarge => "message too large",
            Fault::NotUtf8 => "invalid UTF-8",
            Fault::UnexpectedConnected => "connected sent twice or late",
            Fault::StartBeforeConnected => "start before connected",
            Fault::DuplicateStart => "start sent twice",
            Fault::MediaBeforeStart => "media before start",
            Fault::MarkBeforeStart => "mark before start",
            Fault::StopBeforeStart => "stop before start",
            Fault::UnexpectedClear => "clear is sent by the agent, not by Twilio",
            Fault::StreamSidMismatch => "streamSid differs from the start event's",
            Fault::BadMediaFormat => "mediaFormat must be audio/x-mulaw, 8000 Hz, mono",
            Fault::BadPayload => "media payload is not base64",
            Fault::NoStart => "no start event within 10 s",
            Fault::Idle => "nothing received for 60 s",
        }
    }
}

/// What a lenient stream let pass where `--strict-protocol` closes it (the stats key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deviation {
    /// `start` as the first message (Twilio sends `connected` first; test clients often don't).
    StartWithoutConnected,
    /// `start` lacking a field the agent can do without (`sequenceNumber`, `streamSid`, parts
    /// of the `start` object; a missing `mediaFormat` is taken as Twilio's).
    IncompleteStart,
    /// `media` lacking its `streamSid`, or with unreadable `track`/`chunk`/`timestamp`.
    IncompleteMedia,
    /// `mark` lacking its `streamSid`.
    IncompleteMark,
    /// `stop` without `sequenceNumber`, `streamSid` or the `stop` object.
    BareStop,
}

impl Deviation {
    pub(crate) const ALL: [Deviation; 5] = [
        Deviation::StartWithoutConnected,
        Deviation::IncompleteStart,
        Deviation::IncompleteMedia,
        Deviation::IncompleteMark,
        Deviation::BareStop,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Deviation::StartWithoutConnected => "start without connected",
            Deviation::IncompleteStart => "incomplete start",
            Deviation::IncompleteMedia => "incomplete media",
            Deviation::IncompleteMark => "incomplete mark",
            Deviation::BareStop => "bare stop",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_line_up_with_their_enums() {
        for (i, f) in Fault::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i);
        }
        for (i, d) in Deviation::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i);
        }
    }
}
