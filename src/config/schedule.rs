//! When a run's users start and how long it lasts, decided once from the plan and Goose's
//! options: the lone run hands it to Goose and times its memory window by it, and the gaggle
//! manager splits its rate over the workers and supervises them by it.

use super::plan::RunPlan;
use goose::config::GooseConfiguration;
use std::time::Duration;

/// The longest ramp a schedule counts on (a day): a rate near zero must not mean forever.
const MAX_RAMP: Duration = Duration::from_secs(86_400);

/// How a run starts its users and how long it lasts.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Users started in all (every kind of load, every worker).
    pub users: usize,
    /// Users started per second: Goose's `--increase-rate` (`--hatch-rate`) or the profile's.
    pub spawn_rate: f64,
    /// How long starting every user takes: Goose's `--increase-time`, or users / rate.
    pub ramp: Duration,
    /// How long the run holds its users: Goose's `--run-time` or the profile's; None when it
    /// counts `--iterations` instead.
    pub run_time: Option<Duration>,
    /// Goose's `--test-plan` rules users, rates and times: Goose is given none of ours.
    test_plan: bool,
}

impl Schedule {
    pub fn new(plan: &RunPlan, goose: &GooseConfiguration, test_plan_given: bool) -> Schedule {
        let spawn_rate = goose
            .increase_rate
            .as_deref()
            .and_then(|r| r.parse::<f64>().ok())
            .filter(|r| *r > 0.0)
            .unwrap_or(plan.profile.spawn_rate)
            .max(0.001);
        let users = plan.users.total();
        let ramp_s = goose
            .increase_time
            .as_deref()
            .and_then(goose::util::parse_timespan)
            .map(|s| s as f64)
            .unwrap_or(users as f64 / spawn_rate);
        let run_time = match (&goose.iterations, goose.run_time.as_deref()) {
            (Some(_), _) => None,
            (None, Some(t)) => goose::util::parse_timespan(t).map(|s| Duration::from_secs(s as u64)),
            (None, None) => Some(plan.profile.run_time),
        };
        Schedule {
            users,
            spawn_rate,
            ramp: Duration::from_secs_f64(ramp_s.clamp(0.0, MAX_RAMP.as_secs_f64())),
            run_time,
            test_plan: test_plan_given,
        }
    }

    /// Gives Goose the plan's numbers where its own options leave them open (all of them,
    /// unless `--test-plan` rules): the user count, the profile's rate and run time.
    pub fn apply(&self, plan: &RunPlan, cfg: &mut GooseConfiguration) {
        if self.test_plan {
            return;
        }
        cfg.users = Some(self.users);
        if cfg.increase_rate.is_none() && cfg.increase_time.is_none() {
            cfg.increase_rate = Some(plan.profile.spawn_rate.to_string());
        }
        if cfg.run_time.is_none() && cfg.iterations.is_none() {
            cfg.run_time = Some(plan.profile.run_time.as_secs().to_string());
        }
    }

    /// When the run should be over: ramp plus run time (None: it counts iterations).
    pub fn expected_duration(&self) -> Option<Duration> {
        self.run_time.map(|t| self.ramp + t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::plan::{AiMode, Overrides};
    use crate::config::profile::Profile;

    fn quick() -> RunPlan {
        RunPlan::new(
            Profile::load("quick").unwrap(),
            &Overrides::default(),
            AiMode::Stream,
            false,
        )
        .unwrap()
    }

    #[test]
    fn the_profile_fills_what_goose_leaves_open() {
        let plan = quick();
        let goose = GooseConfiguration::default();
        let s = Schedule::new(&plan, &goose, false);
        assert_eq!(s.users, plan.users.total());
        assert_eq!(s.spawn_rate, plan.profile.spawn_rate);
        assert_eq!(s.run_time, Some(plan.profile.run_time));
        let mut cfg = goose.clone();
        s.apply(&plan, &mut cfg);
        assert_eq!(cfg.users, Some(plan.users.total()));
        assert_eq!(cfg.run_time, Some(plan.profile.run_time.as_secs().to_string()));
        assert_eq!(s.expected_duration(), Some(s.ramp + plan.profile.run_time));
    }

    #[test]
    fn goose_s_options_win_and_a_test_plan_rules_alone() {
        let plan = quick();
        let mut goose = GooseConfiguration::default();
        goose.increase_rate = Some("4".into());
        goose.run_time = Some("1m".into());
        let s = Schedule::new(&plan, &goose, false);
        assert_eq!(s.spawn_rate, 4.0);
        assert_eq!(s.ramp, Duration::from_secs_f64(plan.users.total() as f64 / 4.0));
        assert_eq!(s.run_time, Some(Duration::from_secs(60)));
        let mut iterations = GooseConfiguration::default();
        iterations.iterations = Some(3);
        assert_eq!(Schedule::new(&plan, &iterations, false).expected_duration(), None);
        let mut cfg = GooseConfiguration::default();
        Schedule::new(&plan, &cfg, true).apply(&plan, &mut cfg);
        assert_eq!((cfg.users, cfg.run_time), (None, None));
    }
}
