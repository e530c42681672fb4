//! Load profiles: the named shapes of a run (quick, standard, stress, soak) and users' own files.
//!
//! A profile is a TOML file. The built-in ones live in `scenarios/` and are compiled in, so the
//! binary works from any directory; `--profile path/to/file.toml` reads a user's own.

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// The built-in profiles, by name, with their files' text.
pub const BUILT_IN: [(&str, &str); 4] = [
    ("quick", include_str!("../../scenarios/quick.toml")),
    ("standard", include_str!("../../scenarios/standard.toml")),
    ("stress", include_str!("../../scenarios/stress.toml")),
    ("soak", include_str!("../../scenarios/soak.toml")),
];

/// More users of one kind than this in one process is a typo, not a load test.
pub const MAX_USERS: usize = 1_000_000;

/// One load profile, as read from its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// `quick`, `standard`, ... or the file's path for a user's own profile.
    pub name: String,
    pub description: String,
    /// How long the load holds once every user has started.
    pub run_time: Duration,
    /// Users started per second.
    pub spawn_rate: f64,
    /// REST API + webhook users (split 1:2:1 between API, webhook and high-load users).
    pub api_users: usize,
    pub media_streams: usize,
    pub media_stream_duration: Duration,
    pub ai_calls: usize,
    pub ai_call_duration: Duration,
    pub thresholds: Thresholds,
}

/// A verdict band: where `warning` and `critical` start. Whether higher or lower is worse is
/// the metric's, not the band's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    pub warning: f64,
    pub critical: f64,
}

/// The verdict thresholds (README "Verdicts"), which a profile may override one by one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// API p95 latency in ms; higher is worse.
    pub api_p95_ms: Band,
    /// API success rate in %; lower is worse.
    pub api_success_pct: Band,
    /// Media-stream connection success in %; lower is worse.
    pub ws_success_pct: Band,
    /// Media-stream calls that ran to their end, in % of calls dialled; lower is worse.
    pub ws_call_completion_pct: Band,
    /// AI turns answered in full, in %; lower is worse.
    pub ai_turn_success_pct: Band,
    /// Mean real-time factor of AI turns; higher is worse.
    pub ai_rtf: Band,
    /// Memory growth in MB (server and load generator); higher is worse.
    pub memory_growth_mb: Band,
}

impl Default for Thresholds {
    fn default() -> Self {
        let band = |warning, critical| Band { warning, critical };
        Thresholds {
            api_p95_ms: band(200.0, 500.0),
            api_success_pct: band(99.0, 95.0),
            ws_success_pct: band(95.0, 80.0),
            ws_call_completion_pct: band(95.0, 80.0),
            ai_turn_success_pct: band(95.0, 80.0),
            ai_rtf: band(0.8, 1.0),
            memory_growth_mb: band(50.0, 100.0),
        }
    }
}

/// The file's shape; durations are Goose time spans ("30s", "5m", "1h30m", "90").
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    #[serde(default)]
    description: String,
    run_time: String,
    spawn_rate: f64,
    api: ApiSection,
    media_streams: CallSection,
    ai_calls: CallSection,
    #[serde(default)]
    thresholds: Thresholds,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    users: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallSection {
    count: usize,
    duration: String,
}

/// A TOML error on one line: where (line, field) and what, without TOML's multi-line snippet.
fn toml_error(text: &str, e: &toml::de::Error) -> anyhow::Error {
    let what = e.message().trim().replace('\n', "; ");
    let Some(span) = e.span().filter(|s| s.start <= text.len()) else {
        return anyhow!("{what}");
    };
    if what.starts_with("missing field") {
        // TOML points at the table that lacks it (the file's start for a top-level field).
        let header = text[span.start..].lines().next().unwrap_or_default().trim();
        return match header.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(table) => anyhow!("[{}]: {what}", table.trim()),
            None => anyhow!("{what} (a top-level field or table)"),
        };
    }
    let before = &text[..span.start];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default().trim();
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find_map(|l| l.strip_prefix('[').and_then(|l| l.strip_suffix(']')))
        .map(str::trim);
    let field = match (line.split_once('='), table) {
        (Some((key, _)), Some(table)) if !line.starts_with('[') => format!(", field {table}.{}", key.trim()),
        (Some((key, _)), None) if !line.starts_with('[') => format!(", field {}", key.trim()),
        _ => String::new(),
    };
    anyhow!("line {line_no}{field}: {what} (the line reads `{line}`)")
}

/// The line (1-based) where a field such as `spawn_rate`, `api.users` or
/// `thresholds.ai_rtf` is set, if the text sets it.
fn line_of(text: &str, field: &str) -> Option<usize> {
    let (table, key) = match field.split_once('.') {
        Some((table, key)) => (Some(table), key),
        None => (None, field),
    };
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let mut current: Option<&str> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(header.trim());
            continue;
        }
        let sets_key = line
            .split_once('=')
            .is_some_and(|(k, _)| k.trim() == key && !line.starts_with('#'));
        if sets_key && current == table {
            return Some(i + 1);
        }
    }
    None
}

/// The names `--profile` accepts without a path.
pub fn built_in_names() -> Vec<&'static str> {
    BUILT_IN.iter().map(|(name, _)| *name).collect()
}

impl Profile {
    /// `--profile NAME|FILE`: a built-in name, or a path to a TOML file.
    pub fn load(name_or_path: &str) -> Result<Profile> {
        if let Some((name, text)) = BUILT_IN.iter().find(|(name, _)| *name == name_or_path) {
            return Profile::parse(name, text).with_context(|| format!("built-in profile {name}"));
        }
        let path = Path::new(name_or_path);
        let looks_like_file = name_or_path.ends_with(".toml") || name_or_path.contains('/');
        if !looks_like_file && !path.exists() {
            bail!(
                "unknown profile '{name_or_path}': use one of {} or a path to a .toml file",
                built_in_names().join(", ")
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read profile file {}", path.display()))?;
        Profile::parse(name_or_path, &text)
            .with_context(|| format!("invalid profile file {}", path.display()))
    }

    /// Parses a profile file's text; errors name the line and field.
    pub fn parse(name: &str, text: &str) -> Result<Profile> {
        let file: ProfileFile = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        Profile::from_file(name, file).map_err(|e| {
            // Every check's message starts with the field it judges: point at its line.
            let msg = e.to_string();
            let field = msg.split([' ', ':', ',']).next().unwrap_or_default();
            match line_of(text, field) {
                Some(n) => anyhow!("line {n}: {msg}"),
                None => e,
            }
        })
    }

    fn from_file(name: &str, file: ProfileFile) -> Result<Profile> {
        let span = |field: &str, value: &str| -> Result<Duration> {
            goose::util::parse_timespan(value)
                .map(|s| Duration::from_secs(s as u64))
                .ok_or_else(|| {
                    anyhow!("{field} = \"{value}\" is not a time span (use e.g. \"30s\", \"5m\", \"1h30m\")")
                })
        };
        let profile = Profile {
            name: name.to_string(),
            description: file.description,
            run_time: span("run_time", &file.run_time)?,
            spawn_rate: file.spawn_rate,
            api_users: file.api.users,
            media_streams: file.media_streams.count,
            media_stream_duration: span("media_streams.duration", &file.media_streams.duration)?,
            ai_calls: file.ai_calls.count,
            ai_call_duration: span("ai_calls.duration", &file.ai_calls.duration)?,
            thresholds: file.thresholds,
        };
        profile.validate()?;
        Ok(profile)
    }

    fn validate(&self) -> Result<()> {
        if !(self.spawn_rate.is_finite() && self.spawn_rate > 0.0) {
            bail!(
                "spawn_rate = {} must be a positive number of users per second",
                self.spawn_rate
            );
        }
        if self.run_time.is_zero() {
            bail!("run_time must be at least one second");
        }
        for (field, count) in [
            ("api.users", self.api_users),
            ("media_streams.count", self.media_streams),
            ("ai_calls.count", self.ai_calls),
        ] {
            if count > MAX_USERS {
                bail!("{field} = {count} is more than one run can start (at most {MAX_USERS}; spread larger loads over a gaggle)");
            }
        }
        if self.api_users + self.media_streams + self.ai_calls == 0 {
            bail!("api.users, media_streams.count and ai_calls.count are all 0: nothing to run");
        }
        if self.media_streams > 0 && self.media_stream_duration.is_zero() {
            bail!("media_streams.duration must be at least one second");
        }
        if self.ai_calls > 0 && self.ai_call_duration.is_zero() {
            bail!("ai_calls.duration must be at least one second");
        }
        let t = &self.thresholds;
        for (field, band, higher_is_worse) in [
            ("api_p95_ms", t.api_p95_ms, true),
            ("api_success_pct", t.api_success_pct, false),
            ("ws_success_pct", t.ws_success_pct, false),
            ("ai_rtf", t.ai_rtf, true),
            ("memory_growth_mb", t.memory_growth_mb, true),
        ] {
            let ordered = if higher_is_worse {
                band.warning <= band.critical
            } else {
                band.warning >= band.critical
            };
            if !ordered {
                bail!(
                    "thresholds.{field}: warning = {} must come before critical = {} ({} is worse)",
                    band.warning,
                    band.critical,
                    if higher_is_worse { "higher" } else { "lower" }
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_profiles_hold_the_spec_numbers() {
        let quick = Profile::load("quick").unwrap();
        assert_eq!(quick.run_time, Duration::from_secs(60));
        assert_eq!((quick.api_users, quick.media_streams, quick.ai_calls), (10, 5, 3));
        assert_eq!(quick.spawn_rate, 5.0);
        assert_eq!(quick.media_stream_duration, Duration::from_secs(30));
        assert_eq!(quick.ai_call_duration, Duration::from_secs(20));
        let soak = Profile::load("soak").unwrap();
        assert_eq!(soak.run_time, Duration::from_secs(3600));
        assert_eq!((soak.api_users, soak.media_streams, soak.ai_calls), (25, 10, 5));
        let stress = Profile::load("stress").unwrap();
        assert_eq!(
            (stress.api_users, stress.media_streams, stress.ai_calls),
            (200, 50, 30)
        );
        assert_eq!(
            Profile::load("standard").unwrap().thresholds,
            Thresholds::default()
        );
    }

    #[test]
    fn unknown_name_lists_the_valid_ones() {
        let err = Profile::load("quik").unwrap_err().to_string();
        assert!(err.contains("quick, standard, stress, soak"), "{err}");
    }

    #[test]
    fn malformed_file_names_line_and_field() {
        let text = BUILT_IN[0].1.replace("users = 10", "users = \"ten\"");
        let err = format!("{:#}", Profile::parse("x.toml", &text).unwrap_err());
        assert!(err.contains("users") && err.contains("line"), "{err}");
        let text = BUILT_IN[0]
            .1
            .replace("run_time = \"1m\"", "run_time = \"1 minute\"");
        let err = format!("{:#}", Profile::parse("x.toml", &text).unwrap_err());
        assert!(err.contains("run_time"), "{err}");
    }

    #[test]
    fn thresholds_can_be_overridden_and_are_checked() {
        let text = BUILT_IN[0].1.replace(
            "# ai_rtf = { warning = 0.8, critical = 1.0 }",
            "ai_rtf = { warning = 0.5, critical = 0.9 }",
        );
        let p = Profile::parse("x", &text).unwrap();
        assert_eq!(
            p.thresholds.ai_rtf,
            Band {
                warning: 0.5,
                critical: 0.9
            }
        );
        assert_eq!(p.thresholds.api_p95_ms, Thresholds::default().api_p95_ms);
        let text = BUILT_IN[0].1.replace(
            "# api_success_pct = { warning = 99, critical = 95 }",
            "api_success_pct = { warning = 90, critical = 95 }",
        );
        assert!(Profile::parse("x", &text).is_err());
    }
}
