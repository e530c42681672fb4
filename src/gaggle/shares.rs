//! How a run's load is split over the workers: users per kind, the hatch rate and the request
//! throttle, so that every worker carries about the same load and all finish their ramp together.

use crate::config::plan::UserCounts;
use anyhow::{bail, Result};

/// Splits each kind's users over `n` workers: an equal share each, and the remainders handed out
/// in turn, continuing across the kinds, so the extra users land on different workers and the
/// workers' totals differ by at most one.
pub fn split_users(total: UserCounts, n: usize) -> Result<Vec<UserCounts>> {
    if n == 0 {
        bail!("no workers to split the users over");
    }
    if total.total() < n {
        bail!(
            "{n} workers but only {} users: every worker needs at least one user (raise --users or lower --expect-workers)",
            total.total()
        );
    }
    let mut shares = vec![UserCounts::default(); n];
    let mut next = 0;
    let kinds: [fn(&mut UserCounts) -> &mut usize; 5] = [
        |u| &mut u.api,
        |u| &mut u.webhook,
        |u| &mut u.high_load,
        |u| &mut u.media_streams,
        |u| &mut u.ai_calls,
    ];
    let mut total = total;
    for kind in kinds {
        let count = *kind(&mut total);
        for (i, share) in shares.iter_mut().enumerate() {
            let extra = (i + n - next) % n < count % n;
            *kind(share) = count / n + usize::from(extra);
        }
        next = (next + count % n) % n;
    }
    Ok(shares)
}

/// A worker's share of a rate (users per second, requests per second), in proportion to its
/// users, so every worker's ramp takes as long as the whole run's would.
pub fn share_of_rate(rate: f64, users: usize, total_users: usize) -> f64 {
    if total_users == 0 {
        0.0
    } else {
        rate * users as f64 / total_users as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(api: usize, webhook: usize, high_load: usize, ws: usize, ai: usize) -> UserCounts {
        UserCounts {
            api,
            webhook,
            high_load,
            media_streams: ws,
            ai_calls: ai,
        }
    }

    #[test]
    fn shares_add_up_and_nobody_idles() {
        let total = counts(1, 2, 1, 1, 1);
        let shares = split_users(total, 3).unwrap();
        assert_eq!(
            shares,
            vec![
                counts(1, 0, 1, 0, 0),
                counts(0, 1, 0, 1, 0),
                counts(0, 1, 0, 0, 1)
            ]
        );
        for n in 1..=7 {
            for t in [
                counts(3, 5, 2, 5, 3),
                counts(50, 100, 50, 20, 10),
                counts(0, 7, 0, 0, 1),
            ] {
                let Ok(shares) = split_users(t, n) else {
                    assert!(t.total() < n);
                    continue;
                };
                let sum = shares.iter().fold(UserCounts::default(), |a, s| {
                    counts(
                        a.api + s.api,
                        a.webhook + s.webhook,
                        a.high_load + s.high_load,
                        a.media_streams + s.media_streams,
                        a.ai_calls + s.ai_calls,
                    )
                });
                assert_eq!(sum, t);
                let (lo, hi) = shares.iter().fold((usize::MAX, 0), |(lo, hi), s| {
                    (lo.min(s.total()), hi.max(s.total()))
                });
                assert!(lo >= 1 && hi - lo <= 1, "{n} workers: {shares:?}");
            }
        }
        assert!(split_users(counts(1, 0, 0, 0, 0), 2).is_err());
    }

    #[test]
    fn rates_follow_users() {
        assert_eq!(share_of_rate(10.0, 3, 12), 2.5);
        assert_eq!(share_of_rate(10.0, 0, 0), 0.0);
    }
}
