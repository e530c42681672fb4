//! The wait before a user dials again after a failed call, so a broken agent is never hammered.

use std::time::Duration;
use tokio::time::Instant;

/// The first wait after a failure.
pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest wait, however many calls failed in a row.
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(8);

/// Doubling from [`BACKOFF_MIN`] to [`BACKOFF_MAX`] with each failure in a row, with jitter so a
/// crowd of users does not redial in step; a completed call starts afresh.
#[derive(Debug, Default)]
pub(super) struct Backoff {
    /// No dialling before this.
    pub(super) until: Option<Instant>,
    next: Duration,
}

impl Backoff {
    /// A call failed at `now`.
    pub(super) fn failed(&mut self, now: Instant) {
        self.next = (self.next * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        let jitter = rand::random_range(0.75..=1.25);
        self.until = Some(now + self.next.mul_f64(jitter));
    }

    /// A call completed.
    pub(super) fn succeeded(&mut self) {
        *self = Backoff::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_to_a_limit_and_reset_on_success() {
        let mut b = Backoff::default();
        let t = Instant::now();
        let wait = |b: &Backoff| b.until.unwrap() - t;
        for nominal in [0.5, 1.0, 2.0, 4.0, 8.0, 8.0] {
            b.failed(t);
            let w = wait(&b).as_secs_f64();
            assert!(
                (nominal * 0.75..=nominal * 1.25).contains(&w),
                "{w} for {nominal}"
            );
        }
        b.succeeded();
        assert_eq!(b.until, None);
        b.failed(t);
        assert!(wait(&b) <= BACKOFF_MIN.mul_f64(1.25));
    }
}
