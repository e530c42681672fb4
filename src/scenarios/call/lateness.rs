//! Frame lateness counted inline: one small array per call instead of a histogram update per
//! frame, folded into the call's [`StreamStats`] when the call's tallies are taken.

use crate::measure::StreamStats;

/// Resolution of recorded frame lateness.
const LATENESS_STEP_US: u64 = 100;
/// Lateness steps a call counts inline (0 to 6.3 ms); later frames go straight to the histogram.
const LATENESS_SLOTS: usize = 64;

/// A call's frame lateness since its tallies were last taken, by 0.1 ms step.
#[derive(Debug)]
pub(super) struct Lateness {
    counts: [u32; LATENESS_SLOTS],
}

impl Default for Lateness {
    fn default() -> Self {
        Lateness {
            counts: [0; LATENESS_SLOTS],
        }
    }
}

impl Lateness {
    /// Counts one frame `late_us` late, to the nearest [`LATENESS_STEP_US`].
    pub(super) fn record(&mut self, late_us: u64, stats: &mut StreamStats) {
        let step = (late_us + LATENESS_STEP_US / 2) / LATENESS_STEP_US;
        match self.counts.get_mut(step as usize) {
            Some(c) => *c += 1,
            None => stats.lateness_us.record(step * LATENESS_STEP_US),
        }
    }

    /// Moves the counts into `stats`' lateness histogram, leaving none here.
    pub(super) fn fold_into(&mut self, stats: &mut StreamStats) {
        for (step, c) in self.counts.iter_mut().enumerate() {
            if *c > 0 {
                stats
                    .lateness_us
                    .record_n(step as u64 * LATENESS_STEP_US, u64::from(*c));
                *c = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_is_counted_to_a_tenth_of_a_millisecond() {
        let (mut l, mut stats) = (Lateness::default(), StreamStats::default());
        for late_us in [0, 49, 50, 149, 6_300, 6_349, 6_350, 20_000] {
            l.record(late_us, &mut stats);
        }
        l.fold_into(&mut stats);
        let h = &stats.lateness_us;
        assert_eq!(h.count, 8);
        assert_eq!((h.min, h.max), (0, 20_000));
        assert_eq!(h.count_above(6_300), 2, "{h:?}");
        assert_eq!(h.sum, 100 + 100 + 6_300 + 6_300 + 6_400 + 20_000);
        assert!(l.counts.iter().all(|&c| c == 0));
    }
}
