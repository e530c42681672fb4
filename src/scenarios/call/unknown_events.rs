//! The unknown event names a run's calls have named in their failures. One registry per run
//! (in the run's `Shared`), so each run names its own first few and a run never inherits
//! another's.

use super::MAX_UNKNOWN_EVENTS;
use std::sync::Mutex;

/// The unknown event names a run has reported by name: the first [`MAX_UNKNOWN_EVENTS`] kinds,
/// so an agent inventing names cannot grow the reports without bound.
#[derive(Debug, Default)]
pub struct UnknownEvents {
    named: Mutex<Vec<String>>,
}

impl UnknownEvents {
    /// The name an unknown event `name` is reported under (control characters and quotes made
    /// `?`), if it was seen before or there is room for it; None once the run has named as many
    /// kinds as it may.
    pub fn name(&self, name: &str) -> Option<String> {
        let name: String = name
            .chars()
            .map(|c| if c.is_control() || c == '\'' { '?' } else { c })
            .collect();
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        if !named.contains(&name) {
            if named.len() >= MAX_UNKNOWN_EVENTS {
                return None;
            }
            named.push(name.clone());
        }
        Some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_event_names_are_bounded_per_run() {
        let unknown = UnknownEvents::default();
        let name = |i: usize| format!("ev{i}\u{7}'x");
        assert_eq!(unknown.name(&name(0)).as_deref(), Some("ev0??x"));
        for i in 0..100 {
            let _ = unknown.name(&name(i));
        }
        assert_eq!(unknown.name("brand-new"), None);
        // Names seen before the limit keep their own row.
        assert_eq!(unknown.name(&name(0)).as_deref(), Some("ev0??x"));
        // Another run starts afresh.
        assert_eq!(
            UnknownEvents::default().name("brand-new").as_deref(),
            Some("brand-new")
        );
    }
}
