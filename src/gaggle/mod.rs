//! Distributed runs (gaggle): a manager splits the users over workers, starts them together and
//! merges their results exactly. Goose 0.17-0.19 ship no Gaggle (it returns in 0.20); this thin
//! layer keeps Goose 0.16's vocabulary so it can give way to Goose's own when that returns.
//!
//! Each worker runs an ordinary Goose attack ([`crate::run::attack`]) on its share of the users;
//! nothing in the scenarios knows about the gaggle. The modules:
//! - [`protocol`]: the messages, their framing and limits, and the handshake checks.
//! - [`shares`]: how users and the hatch rate are split over the workers.
//! - [`merge`]: exact merging of runs (the manager's and `phone-agent-load merge`'s).
//! - [`manager`], [`worker`]: the two roles.

pub mod manager;
pub mod merge;
pub mod protocol;
pub mod shares;
pub mod worker;

use anyhow::{bail, Result};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use merge::merge_files;

/// The port both sides use unless told otherwise (Goose 0.16's).
pub const DEFAULT_PORT: u16 = 5115;
/// How long the manager waits for its workers, and a worker for its manager, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The environment variable holding the gaggle token.
pub const TOKEN_ENV: &str = "PHONE_AGENT_LOAD_GAGGLE_TOKEN";

/// The gaggle options, with Goose 0.16's names.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Distributed runs (gaggle)")]
pub struct GaggleOptions {
    /// Run as the gaggle manager: split the load over --expect-workers workers
    #[arg(long, conflicts_with = "worker")]
    pub manager: bool,
    /// Run as a gaggle worker of the manager at --manager-host (the load comes from the manager)
    #[arg(long)]
    pub worker: bool,
    /// Manager: how many workers to wait for before starting
    #[arg(long, value_name = "N", requires = "manager")]
    pub expect_workers: Option<usize>,
    /// Manager: the address to listen on [default: 127.0.0.1]; off loopback needs --gaggle-token
    #[arg(long, value_name = "HOST", requires = "manager")]
    pub manager_bind_host: Option<String>,
    /// Manager: the port to listen on [default: 5115]
    #[arg(long, value_name = "PORT", requires = "manager")]
    pub manager_bind_port: Option<u16>,
    /// Worker: the manager's host name or address [default: 127.0.0.1]
    #[arg(long, value_name = "HOST", requires = "worker")]
    pub manager_host: Option<String>,
    /// Worker: the manager's port [default: 5115]
    #[arg(long, value_name = "PORT", requires = "worker")]
    pub manager_port: Option<u16>,
    /// Shared secret of the manager and its workers (required when the manager listens off loopback)
    #[arg(long, value_name = "TOKEN", env = TOKEN_ENV, hide_env_values = true)]
    pub gaggle_token: Option<String>,
    /// How long the manager waits for its workers, and a worker for its manager [default: 60s]
    #[arg(long, value_name = "TIME")]
    pub gaggle_timeout: Option<String>,
}

/// `phone-agent-load merge a.json b.json ... --output merged.json`
#[derive(clap::Args, Debug, Clone)]
pub struct MergeArgs {
    /// Results files of independent runs
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Where to write the merged results
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// The manager's options, checked.
#[derive(Debug, Clone)]
pub struct ManagerSettings {
    pub expect: usize,
    pub bind_host: String,
    pub bind_port: u16,
    pub token: Option<String>,
    pub timeout: Duration,
}

impl ManagerSettings {
    pub fn from_options(g: &GaggleOptions) -> Result<ManagerSettings> {
        if g.manager_host.is_some() || g.manager_port.is_some() {
            bail!("--manager-host and --manager-port are worker options; the manager listens on --manager-bind-host and --manager-bind-port");
        }
        let expect = match g.expect_workers {
            None => bail!("--manager needs --expect-workers N (how many workers to wait for)"),
            Some(0) => bail!("--expect-workers must be at least 1"),
            Some(n) => n,
        };
        let bind_host = g
            .manager_bind_host
            .clone()
            .unwrap_or_else(|| "127.0.0.1".to_string());
        if bind_host.trim().is_empty() {
            bail!("--manager-bind-host is empty: expected an address to listen on, such as 127.0.0.1 or 0.0.0.0");
        }
        let token = token(g)?;
        if token.is_none() && !is_loopback(&bind_host) {
            bail!(
                "--manager-bind-host {bind_host} is off loopback: give a --gaggle-token (or {TOKEN_ENV}) \
                 shared with the workers, so only they can join"
            );
        }
        Ok(ManagerSettings {
            expect,
            bind_host,
            bind_port: g.manager_bind_port.unwrap_or(DEFAULT_PORT),
            token,
            timeout: timeout(g)?,
        })
    }
}

/// A worker's options, checked.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub manager_host: String,
    pub manager_port: u16,
    pub token: Option<String>,
    pub timeout: Duration,
}

impl WorkerSettings {
    pub fn from_options(g: &GaggleOptions) -> Result<WorkerSettings> {
        if g.expect_workers.is_some() || g.manager_bind_host.is_some() || g.manager_bind_port.is_some() {
            bail!("--expect-workers, --manager-bind-host and --manager-bind-port are manager options; a worker connects to --manager-host and --manager-port");
        }
        let manager_host = g.manager_host.clone().unwrap_or_else(|| "127.0.0.1".to_string());
        if manager_host.trim().is_empty() {
            bail!("--manager-host is empty: expected the manager's host name or address");
        }
        let manager_port = g.manager_port.unwrap_or(DEFAULT_PORT);
        if manager_port == 0 {
            bail!("--manager-port 0: expected the port the manager listens on, 1 to 65535 (it prints it)");
        }
        Ok(WorkerSettings {
            manager_host,
            manager_port,
            token: token(g)?,
            timeout: timeout(g)?,
        })
    }
}

fn token(g: &GaggleOptions) -> Result<Option<String>> {
    match g.gaggle_token.as_deref().map(str::trim) {
        None => Ok(None),
        Some("") => bail!("--gaggle-token (or {TOKEN_ENV}) is empty"),
        Some(t) => Ok(Some(t.to_string())),
    }
}

fn timeout(g: &GaggleOptions) -> Result<Duration> {
    match &g.gaggle_timeout {
        None => Ok(DEFAULT_TIMEOUT),
        Some(t) => match goose::util::parse_timespan(t) {
            Some(s) if s > 0 => Ok(Duration::from_secs(s as u64)),
            _ => bail!("--gaggle-timeout {t}: expected a time span such as 30s, 2m or 90"),
        },
    }
}

/// Loopback by its literal address or the name `localhost`; any other name counts as off loopback.
pub fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Seconds as the console shows them.
fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64().round())
}

/// A command line of the gaggle's and Goose's options alone, as the real one flattens them.
#[cfg(test)]
#[derive(clap::Parser, Debug)]
pub(crate) struct TestLine {
    #[command(flatten)]
    pub gaggle: GaggleOptions,
    #[command(flatten)]
    pub goose: goose::config::GooseConfiguration,
}

#[cfg(test)]
impl TestLine {
    pub fn parse(args: &[&str]) -> Result<TestLine, clap::Error> {
        use clap::Parser;
        TestLine::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> GaggleOptions {
        TestLine::parse(args).unwrap().gaggle
    }

    #[test]
    fn manager_needs_expect_workers_and_a_token_off_loopback() {
        let err = ManagerSettings::from_options(&opts(&["--manager"])).unwrap_err();
        assert!(err.to_string().contains("--expect-workers"), "{err}");
        let g = opts(&["--manager", "--expect-workers", "2"]);
        let s = ManagerSettings::from_options(&g).unwrap();
        assert_eq!(
            (s.expect, s.bind_host.as_str(), s.bind_port),
            (2, "127.0.0.1", 5115)
        );
        let g = opts(&[
            "--manager",
            "--expect-workers",
            "2",
            "--manager-bind-host",
            "0.0.0.0",
        ]);
        let err = ManagerSettings::from_options(&g).unwrap_err().to_string();
        assert!(
            err.contains("--gaggle-token") && err.contains("off loopback"),
            "{err}"
        );
        let g = opts(&[
            "--manager",
            "--expect-workers",
            "2",
            "--manager-bind-host",
            "0.0.0.0",
            "--gaggle-token",
            "s3cret",
        ]);
        assert!(ManagerSettings::from_options(&g).is_ok());
    }

    #[test]
    fn role_options_stay_with_their_role() {
        assert!(TestLine::parse(&["--expect-workers", "2"]).is_err());
        assert!(TestLine::parse(&["--manager-host", "h"]).is_err());
        assert!(TestLine::parse(&["--manager", "--worker"]).is_err());
        let g = opts(&["--worker", "--manager-host", "10.0.0.5", "--gaggle-timeout", "2m"]);
        let s = WorkerSettings::from_options(&g).unwrap();
        assert_eq!((s.manager_host.as_str(), s.manager_port), ("10.0.0.5", 5115));
        assert_eq!(s.timeout, Duration::from_secs(120));
        let g = opts(&["--worker", "--gaggle-timeout", "soon"]);
        assert!(WorkerSettings::from_options(&g).is_err());
    }

    #[test]
    fn loopback_names() {
        for h in ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["0.0.0.0", "10.0.0.5", "manager.local", "::"] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
