//! What one run will do: the profile's numbers after the command line's overrides.
//!
//! The scenarios are built from a [`RunPlan`], and the post-run analysis reads it back, so the
//! numbers a run reports are the numbers it ran with.

use super::profile::Profile;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How AI calls are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AiMode {
    /// Speak into a media-stream call and time the agent's spoken answers.
    Stream,
    /// The original suite's in-process mock pipeline: no server needed.
    Mock,
}

/// Users per kind of load, in Goose's terms (one Goose user per API user, per concurrent
/// media-stream call and per concurrent AI call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UserCounts {
    /// Locust's `PhoneAgentAPIUser` (weight 1 of the API users).
    pub api: usize,
    /// Locust's `WebhookUser` (weight 2).
    pub webhook: usize,
    /// Locust's `HighLoadUser` (weight 1).
    pub high_load: usize,
    pub media_streams: usize,
    pub ai_calls: usize,
}

impl UserCounts {
    pub fn total(&self) -> usize {
        self.api + self.webhook + self.high_load + self.media_streams + self.ai_calls
    }

    pub fn api_total(&self) -> usize {
        self.api + self.webhook + self.high_load
    }
}

/// Which kinds of load the user left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skips {
    pub api: bool,
    pub ws: bool,
    pub ai: bool,
}

/// Overrides of the profile from the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--users N`: scale the profile's total to N in the same proportions.
    pub users: Option<usize>,
    pub ws_connections: Option<usize>,
    pub ai_calls: Option<usize>,
    pub skips: Skips,
}

/// Everything a run's scenarios and analysis need to know about its shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    pub profile: Profile,
    pub users: UserCounts,
    pub skips: Skips,
    pub ai_mode: AiMode,
    /// `--no-wait`: scenario wait times switched off.
    pub no_wait: bool,
    pub media_stream_duration: Duration,
    pub ai_call_duration: Duration,
    /// `--turn-timeout`: how long after the caller stops speaking an AI turn may take to be
    /// answered (to the agent's `mark`) before it fails.
    #[serde(default = "default_turn_timeout")]
    pub turn_timeout: Duration,
}

/// The turn timeout unless `--turn-timeout` says otherwise.
pub const DEFAULT_TURN_TIMEOUT: Duration = Duration::from_secs(15);

fn default_turn_timeout() -> Duration {
    DEFAULT_TURN_TIMEOUT
}

impl RunPlan {
    pub fn new(profile: Profile, o: &Overrides, ai_mode: AiMode, no_wait: bool) -> Result<RunPlan> {
        if o.skips.api && o.skips.ws && o.skips.ai {
            bail!("--skip-api, --skip-ws and --skip-ai together leave nothing to run: keep at least one kind of load");
        }
        for (option, count, skip, skip_option) in [
            ("--ws-connections", o.ws_connections, o.skips.ws, "--skip-ws"),
            ("--ai-calls", o.ai_calls, o.skips.ai, "--skip-ai"),
        ] {
            match count {
                Some(n) if skip => {
                    bail!("{option} {n} and {skip_option} contradict each other: give one or the other")
                }
                Some(n) if n > crate::config::profile::MAX_USERS => bail!(
                    "{option} {n} is more than one run can start (at most {}; use a gaggle)",
                    crate::config::profile::MAX_USERS
                ),
                _ => {}
            }
        }
        let api = if o.skips.api { 0 } else { profile.api_users };
        let ws = if o.skips.ws {
            0
        } else {
            o.ws_connections.unwrap_or(profile.media_streams)
        };
        let ai = if o.skips.ai {
            0
        } else {
            o.ai_calls.unwrap_or(profile.ai_calls)
        };
        let (api, ws, ai) = match o.users {
            None => (api, ws, ai),
            Some(0) => bail!("--users must be at least 1"),
            Some(n) if n > crate::config::profile::MAX_USERS => {
                bail!(
                    "--users {n} is more than one run can start (at most {}; use a gaggle)",
                    crate::config::profile::MAX_USERS
                )
            }
            Some(n) => {
                let shares = split(n, &[api, ws, ai]);
                (shares[0], shares[1], shares[2])
            }
        };
        let [a, w, h]: [usize; 3] = split(api, &[1, 2, 1]).try_into().expect("three shares");
        let users = UserCounts {
            api: a,
            webhook: w,
            high_load: h,
            media_streams: ws,
            ai_calls: ai,
        };
        if users.total() == 0 {
            bail!(
                "profile '{}' with these options has no users to run (API {api}, media streams {ws}, AI calls {ai})",
                profile.name
            );
        }
        Ok(RunPlan {
            media_stream_duration: profile.media_stream_duration,
            ai_call_duration: profile.ai_call_duration,
            turn_timeout: DEFAULT_TURN_TIMEOUT,
            profile,
            users,
            skips: o.skips,
            ai_mode,
            no_wait,
        })
    }
}

/// Splits `total` in proportion to `weights` by largest remainder: the shares add up to `total`,
/// and ties go to the earlier weight.
pub fn split(total: usize, weights: &[usize]) -> Vec<usize> {
    let sum: usize = weights.iter().fold(0usize, |a, &w| a.saturating_add(w));
    if sum == 0 {
        return vec![0; weights.len()];
    }
    // u128: `total * weight` must not overflow, whatever a profile file says.
    let (t, s) = (total as u128, sum as u128);
    let mut shares: Vec<usize> = weights.iter().map(|&w| (t * w as u128 / s) as usize).collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    // Largest remainder first; stable sort keeps ties in weight order.
    order.sort_by_key(|&i| std::cmp::Reverse(t * weights[i] as u128 % s));
    let mut left = total - shares.iter().sum::<usize>();
    for i in order {
        if left == 0 {
            break;
        }
        shares[i] += 1;
        left -= 1;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> Profile {
        Profile::load("quick").unwrap()
    }

    #[test]
    fn split_adds_up_and_keeps_proportions() {
        assert_eq!(split(10, &[1, 2, 1]), vec![3, 5, 2]);
        assert_eq!(split(100, &[10, 5, 3]), vec![55, 28, 17]);
        assert_eq!(split(7, &[0, 1, 0]), vec![0, 7, 0]);
        for n in 0..50 {
            assert_eq!(split(n, &[3, 5, 7]).iter().sum::<usize>(), n);
        }
    }

    #[test]
    fn profile_numbers_are_kept_exactly() {
        let plan = RunPlan::new(quick(), &Overrides::default(), AiMode::Stream, false).unwrap();
        assert_eq!(plan.users.api_total(), 10);
        assert_eq!((plan.users.media_streams, plan.users.ai_calls), (5, 3));
    }

    #[test]
    fn users_scale_the_total_and_skips_drop_a_kind() {
        let o = Overrides {
            users: Some(100),
            ..Default::default()
        };
        let plan = RunPlan::new(quick(), &o, AiMode::Stream, false).unwrap();
        assert_eq!(plan.users.total(), 100);
        assert_eq!(
            (
                plan.users.api_total(),
                plan.users.media_streams,
                plan.users.ai_calls
            ),
            (55, 28, 17)
        );
        let o = Overrides {
            skips: Skips {
                ws: true,
                ai: true,
                api: false,
            },
            ..Default::default()
        };
        let plan = RunPlan::new(quick(), &o, AiMode::Stream, false).unwrap();
        assert_eq!(plan.users.total(), 10);
        let o = Overrides {
            skips: Skips {
                ws: true,
                ai: true,
                api: true,
            },
            ..Default::default()
        };
        assert!(RunPlan::new(quick(), &o, AiMode::Stream, false).is_err());
    }

    #[test]
    fn a_count_for_a_skipped_kind_is_a_contradiction() {
        let o = Overrides {
            ws_connections: Some(3),
            skips: Skips {
                ws: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let err = RunPlan::new(quick(), &o, AiMode::Stream, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--ws-connections 3") && err.contains("--skip-ws"),
            "{err}"
        );
        let o = Overrides {
            ai_calls: Some(usize::MAX),
            ..Default::default()
        };
        assert!(RunPlan::new(quick(), &o, AiMode::Stream, false).is_err());
    }
}
