//! The agent's audio as the caller's loudspeaker plays it: when the queue runs dry, and the
//! `mark`s waiting for it.
//!
//! Twilio echoes a mark once the audio queued before it has played, and a `clear` drops the
//! queued audio, echoing every pending mark at once; the call does the same from this model.

use super::failure::ProtocolFailure;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Pending marks a call keeps; more is an agent gone wrong.
const MAX_PENDING_MARKS: usize = 1024;
/// Mu-law bytes played per ms (8 kHz).
const BYTES_PER_MS: u64 = 8;

/// One call's loudspeaker.
#[derive(Debug, Default)]
pub(super) struct Loudspeaker {
    /// When the queued audio has played out (`None`: nothing queued yet).
    ends: Option<Instant>,
    /// (name, when it is due, when it arrived), in arrival order, so due times never decrease.
    marks: VecDeque<(String, Instant, Instant)>,
}

impl Loudspeaker {
    /// Queues `bytes` of mu-law arriving at `now`, played after what is queued.
    pub(super) fn queue(&mut self, now: Instant, bytes: usize) {
        let start = self.ends.map_or(now, |e| e.max(now));
        self.ends = Some(start + Duration::from_micros(bytes as u64 * 1000 / BYTES_PER_MS));
    }

    /// A mark arriving at `now`: due once the audio queued so far has played.
    pub(super) fn mark(&mut self, now: Instant, name: String) -> Result<(), ProtocolFailure> {
        if self.marks.len() >= MAX_PENDING_MARKS {
            return Err(ProtocolFailure::TooManyPendingMarks);
        }
        let due = self.ends.map_or(now, |e| e.max(now));
        self.marks.push_back((name, due, now));
        Ok(())
    }

    /// Drops what is queued: every pending mark is due at once.
    pub(super) fn clear(&mut self, now: Instant) {
        self.ends = Some(now);
        for m in &mut self.marks {
            m.1 = now;
        }
    }

    /// When the next mark is due, if one is pending.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.marks.front().map(|m| m.1)
    }

    /// The next mark due by `now`: its name and when it arrived.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(String, Instant)> {
        if self.next_due()? <= now {
            self.marks.pop_front().map(|(name, _, arrived)| (name, arrived))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_wait_for_queued_audio_and_clear_releases_them() {
        let mut sp = Loudspeaker::default();
        let t = Instant::now();
        sp.queue(t, 1600); // 200 ms
        sp.mark(t, "a".into()).unwrap();
        assert_eq!(sp.next_due(), Some(t + Duration::from_millis(200)));
        assert!(sp.pop_due(t + Duration::from_millis(199)).is_none());
        assert_eq!(sp.pop_due(t + Duration::from_millis(200)).unwrap().0, "a");
        // Audio queued after playback ran dry starts when it arrives.
        let later = t + Duration::from_secs(1);
        sp.queue(later, 800);
        sp.mark(later, "b".into()).unwrap();
        assert_eq!(sp.next_due(), Some(later + Duration::from_millis(100)));
        sp.clear(later);
        assert_eq!(sp.pop_due(later).unwrap().0, "b");
        // A mark with nothing queued is due at once.
        sp.mark(later, "c".into()).unwrap();
        assert!(sp.pop_due(later).is_some());
    }

    #[test]
    fn too_many_pending_marks_is_an_agent_gone_wrong() {
        let mut sp = Loudspeaker::default();
        let t = Instant::now();
        sp.queue(t, 8000);
        for i in 0..MAX_PENDING_MARKS {
            sp.mark(t, i.to_string()).unwrap();
        }
        assert_eq!(
            sp.mark(t, "one more".into()),
            Err(ProtocolFailure::TooManyPendingMarks)
        );
    }
}
