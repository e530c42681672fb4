//! The web UI: Goose's dashboard at http://127.0.0.1:5116, set up for Locust's workflow.
//!
//! Unless `--headless`, every run serves the dashboard (Goose's telnet Controller, whose default
//! port is 5116, is off in every run), with control on so `--no-autostart` can be driven from the
//! page. A [`Watcher`] follows the dashboard's phase: after an autostarted run it tells Goose to
//! quit (Goose would otherwise stay up for an open browser tab), and each run started from the
//! page gets the post-run hook — its summary, verdicts and its own results file — when it ends.

use crate::analysis::verdicts::Status;
use crate::config::plan::RunPlan;
use crate::measure::memory::{MemorySampler, MemoryTarget};
use crate::measure::Measurements;
use crate::run::RunRecord;
use anyhow::{bail, Context, Result};
use goose::config::GooseConfiguration;
use goose::metrics::GooseMetrics;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where the web UI listens unless `--dashboard-port` says otherwise (Locust's page is at 8089;
/// this tool's users know 5116).
pub const DEFAULT_PORT: u16 = 5116;

/// The dashboard of one run, as configured.
#[derive(Debug, Clone)]
pub struct WebUi {
    /// The page's address, as printed.
    pub url: String,
    addr: SocketAddr,
    token: Option<String>,
    autostart: bool,
    /// Goose's run folders (`--output-dir`, default `goose-runs`), where each run's report lands.
    reports_dir: PathBuf,
}

/// Sets up the dashboard in Goose's configuration; `None` when `--headless`.
pub fn configure(cfg: &mut GooseConfiguration, headless: bool) -> Result<Option<WebUi>> {
    if headless {
        if cfg.no_autostart {
            bail!(
                "--no-autostart waits for Start on the web UI, which --headless turns off: give one or the other"
            );
        }
        cfg.dashboard = false;
        cfg.no_telnet = true;
        return Ok(None);
    }
    cfg.dashboard = true;
    cfg.dashboard_control = true;
    let port = *cfg.dashboard_port.get_or_insert(DEFAULT_PORT);
    let host = cfg
        .dashboard_host
        .get_or_insert_with(|| "127.0.0.1".to_string())
        .clone();
    let ip: IpAddr = match host.as_str() {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        h => h
            .parse()
            .with_context(|| format!("--dashboard-host {h}: expected an IP address"))?,
    };
    let token = cfg.dashboard_auth_token.clone().filter(|t| !t.is_empty());
    if ip.is_loopback() && token.is_none() {
        // On loopback nobody else can reach the page: control needs no token (Goose still
        // refuses cross-site requests).
        cfg.dashboard_no_auth = true;
    } else if token.is_none() {
        bail!(
            "the web UI on {host} is reachable from other machines: give --dashboard-auth-token TOKEN \
             (then open http://{host}:{port}/?token=TOKEN), bind it to 127.0.0.1, or use --headless"
        );
    }
    let shown = if ip.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        host
    };
    Ok(Some(WebUi {
        url: format!("http://{shown}:{port}"),
        addr: SocketAddr::new(ip, port),
        token,
        autostart: !cfg.no_autostart,
        reports_dir: PathBuf::from(cfg.output_dir.clone().unwrap_or_else(|| "goose-runs".into())),
    }))
}

impl WebUi {
    /// Refuses a taken port before anything starts, naming the way out.
    pub fn check_port(&self) -> Result<()> {
        match TcpListener::bind(self.addr) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
                "the web UI's port {} is already in use (another run?): choose another with --dashboard-port N, or use --headless",
                self.addr.port()
            ),
            Err(e) => bail!("cannot serve the web UI on {}: {e} (use --dashboard-host/--dashboard-port, or --headless)", self.addr),
        }
    }

    pub fn interactive(&self) -> bool {
        !self.autostart
    }

    fn api(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            SocketAddr::new(loopback_for(self.addr.ip()), self.addr.port())
        )
    }

    fn request(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }
}

/// The address this process reaches its own dashboard on.
fn loopback_for(ip: IpAddr) -> IpAddr {
    if ip.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        ip
    }
}

/// What a run started from the page needs for its post-run hook.
pub struct SessionRuns {
    pub plan: RunPlan,
    pub host: String,
    pub measurements: Arc<Measurements>,
    pub memory_target: Option<MemoryTarget>,
    pub output: Option<PathBuf>,
    pub fail_on: Status,
}

/// Follows the dashboard while the attack runs.
pub struct Watcher {
    task: tokio::task::JoinHandle<()>,
    /// Whether runs started from the page are concluded here (`--no-autostart`).
    concludes: bool,
    /// The worst exit status of the runs concluded from the page.
    worst: Arc<AtomicI32>,
    runs: Arc<AtomicI32>,
}

impl Watcher {
    pub fn start(ui: WebUi, session: Option<SessionRuns>) -> Watcher {
        let worst = Arc::new(AtomicI32::new(0));
        let runs = Arc::new(AtomicI32::new(0));
        let concludes = session.is_some();
        let task = tokio::spawn(watch(ui, session, worst.clone(), runs.clone()));
        Watcher {
            task,
            concludes,
            worst,
            runs,
        }
    }

    /// Stops watching; returns the runs concluded from the page and their worst exit status
    /// (None when the page's runs are not concluded here: an autostarted run).
    pub fn stop(self) -> Option<(i32, i32)> {
        self.task.abort();
        self.concludes.then(|| {
            (
                self.runs.load(Ordering::SeqCst),
                self.worst.load(Ordering::SeqCst),
            )
        })
    }
}

fn is_running(phase: &str) -> bool {
    matches!(phase, "increase" | "maintain" | "decrease")
}

async fn watch(ui: WebUi, session: Option<SessionRuns>, worst: Arc<AtomicI32>, runs: Arc<AtomicI32>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("a plain HTTP client");
    let mut was_running = false;
    // An autostarted run has happened: seen running, or the page's figures say so (a short run
    // on a loaded machine can begin and end between two polls).
    let mut autostart_ran = false;
    let mut current: Option<(MemorySampler, chrono::DateTime<chrono::Utc>, SystemTime)> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(Snapshot { phase, users_seen }) = snapshot(&ui, &client).await else {
            continue;
        };
        let running = is_running(&phase);
        if running && !was_running {
            if let Some(s) = &session {
                s.measurements.take();
                s.measurements.failures.take();
                let sampler = MemorySampler::start(s.memory_target.clone(), Duration::from_secs(1));
                current = Some((sampler, chrono::Utc::now(), SystemTime::now()));
            }
        }
        if !running && was_running {
            if let (Some(s), Some((sampler, started, since))) = (&session, current.take()) {
                let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                let code = conclude_page_run(&ui, s, sampler, started, since, n).await;
                worst.fetch_max(code, Ordering::SeqCst);
            }
        }
        if ui.autostart {
            autostart_ran |= running || users_seen;
            if autostart_ran && phase == "idle" {
                // Goose stays up for an open tab after an autostarted run; we have our own
                // summary and results to write, so end the session as a headless run would.
                // Asked again at every poll until it goes: one request can be lost to a timeout.
                let _ = ui
                    .request(client.post(ui.api("/api/v1/control/quit")))
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await;
            }
        }
        was_running = running;
    }
}

/// What the watcher reads of the dashboard's snapshot.
struct Snapshot {
    /// idle, increase, maintain, decrease or shutdown.
    phase: String,
    /// Whether any user has run (the run's maximum so far is above zero).
    users_seen: bool,
}

/// The dashboard's phase and whether a run has had users.
async fn snapshot(ui: &WebUi, client: &reqwest::Client) -> Option<Snapshot> {
    let resp = ui
        .request(client.get(ui.api("/api/v1/snapshot")))
        .send()
        .await
        .ok()?;
    let json: serde_json::Value = resp.json().await.ok()?;
    Some(Snapshot {
        phase: json.get("phase")?.as_str()?.to_string(),
        users_seen: json
            .get("maximum_users")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
            > 0,
    })
}

/// One run started from the page: its Goose metrics come from the report Goose saved for it.
async fn conclude_page_run(
    ui: &WebUi,
    s: &SessionRuns,
    sampler: MemorySampler,
    started: chrono::DateTime<chrono::Utc>,
    since: SystemTime,
    n: i32,
) -> i32 {
    let goose = wait_for_report(&ui.reports_dir, since).await;
    if goose.is_none() {
        eprintln!(
            "warning: no Goose report found in {} for run {n}; its API figures are missing",
            ui.reports_dir.display()
        );
    }
    let mut record = RunRecord::new(s.plan.clone(), &s.host);
    record.started = started;
    record.duration = (chrono::Utc::now() - started).to_std().unwrap_or_default();
    record.goose = goose;
    record.measured = s.measurements.take();
    record.failures_by_reason = s.measurements.failures.take();
    record.memory = sampler.stop().await;
    let output = s.output.as_deref().map(|p| numbered(p, n));
    println!("\n=== Run {n} started from the web UI has ended ===");
    crate::analysis::conclude(&record, output.as_deref(), s.fail_on, &[])
}

/// `r.json` -> `r-2.json` for the second run of a session.
fn numbered(path: &Path, n: i32) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    path.with_file_name(format!("{stem}-{n}{ext}"))
}

/// The newest `report.json` written since `since`, waiting a little for Goose to finish it.
async fn wait_for_report(dir: &Path, since: SystemTime) -> Option<GooseMetrics> {
    for _ in 0..40 {
        if let Some(m) = newest_report(dir, since) {
            return Some(m);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

fn newest_report(dir: &Path, since: SystemTime) -> Option<GooseMetrics> {
    let newest = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("report.json"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .filter(|(modified, _)| *modified >= since)
        .max_by_key(|(modified, _)| *modified)?;
    let text = std::fs::read_to_string(&newest.1).ok()?;
    let mut json: serde_json::Value = serde_json::from_str(&text).ok()?;
    serde_json::from_value(json.get_mut("raw_metrics")?.take()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headless_serves_nothing() {
        let mut cfg = GooseConfiguration::default();
        assert!(configure(&mut cfg, true).unwrap().is_none());
        assert!(!cfg.dashboard && cfg.no_telnet);
    }

    #[test]
    fn dashboard_takes_5116() {
        let mut cfg = GooseConfiguration::default();
        let ui = configure(&mut cfg, false).unwrap().unwrap();
        assert_eq!(ui.url, "http://127.0.0.1:5116");
        assert_eq!(cfg.dashboard_port, Some(5116));
        assert!(cfg.dashboard_control && cfg.dashboard_no_auth);
    }

    #[test]
    fn off_loopback_needs_a_token() {
        let mut cfg = GooseConfiguration::default();
        cfg.dashboard_host = Some("0.0.0.0".into());
        assert!(configure(&mut cfg, false)
            .unwrap_err()
            .to_string()
            .contains("--dashboard-auth-token"));
        let mut cfg = GooseConfiguration::default();
        cfg.dashboard_host = Some("0.0.0.0".into());
        cfg.dashboard_auth_token = Some("s3cret".into());
        assert!(configure(&mut cfg, false).unwrap().is_some());
        assert!(!cfg.dashboard_no_auth);
    }

    #[test]
    fn taken_port_names_the_port_and_the_way_out() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let mut cfg = GooseConfiguration::default();
        cfg.dashboard_port = Some(port);
        let err = configure(&mut cfg, false)
            .unwrap()
            .unwrap()
            .check_port()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&port.to_string()) && err.contains("--dashboard-port"),
            "{err}"
        );
    }

    #[test]
    fn runs_of_a_session_get_numbered_files() {
        assert_eq!(
            numbered(Path::new("out/r.json"), 2),
            PathBuf::from("out/r-2.json")
        );
    }
}
