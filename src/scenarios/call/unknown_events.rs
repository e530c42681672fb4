//! The unknown event names a run's calls have named in their failures. One registry per run
//! (in the run's `Shared`), so each run names its own first few and a run never inherits
//! another's.

use super::failure::ProtocolFailure;
use super::MAX_UNKNOWN_EVENTS;
use std::sync::Mutex;

/// The unknown event names a run has reported by name: the first [`MAX_UNKNOWN_EVENTS`] kinds,
/// so an agent inventing names cannot grow the reports without bound.
#[derive(Debug, Default)]
pub struct UnknownEvents {
    named: Mutex<Vec<String>>,
}

impl UnknownEvents {
    /// The failure for an unknown event `name`: named if seen before or while there is room,
    /// else the one shared reason.
    pub fn failure(&self, name: &str) -> ProtocolFailure {
        let name: String = name
            .chars()
            .map(|c| if c.is_control() || c == '\'' { '?' } else { c })
            .collect();
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        if !named.contains(&name) {
            if named.len() >= MAX_UNKNOWN_EVENTS {
                return ProtocolFailure::TooManyUnknownEvents;
            }
            named.push(name.clone());
        }
        ProtocolFailure::UnknownEvent(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::call::CallFailure;

    #[test]
    fn unknown_event_names_are_bounded_per_run() {
        let unknown = UnknownEvents::default();
        let reason = |name: &str| CallFailure::from(unknown.failure(name)).to_string();
        let name = |i: usize| format!("ev{i}\u{7}'x");
        let first = reason(&name(0));
        assert_eq!(first, "protocol error: unknown event 'ev0??x'");
        for i in 0..100 {
            let _ = reason(&name(i));
        }
        assert_eq!(
            reason("brand-new"),
            "protocol error: unknown event (too many kinds to name)"
        );
        // Names seen before the limit keep their own row.
        assert_eq!(reason(&name(0)), first);
        // Another run starts afresh.
        assert_eq!(
            CallFailure::from(UnknownEvents::default().failure("brand-new")).to_string(),
            "protocol error: unknown event 'brand-new'"
        );
    }
}
