//! The system under test: the user's `--host`, checked before any load starts, or the built-in
//! simulator started as a child process on a free loopback port and stopped after the run.

use anyhow::{anyhow, bail, Context, Result};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use url::Url;

/// How long a host has to accept a TCP connection before the run is refused.
const REACH_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the simulator child has to say where it listens.
const SIMULATOR_START_TIMEOUT: Duration = Duration::from_secs(15);

/// Checks `--host` is a base URL (scheme, host, optional port, no path) and returns it normalised
/// without a trailing slash.
pub fn validate_host(host: &str) -> Result<String> {
    let url = Url::parse(host)
        .map_err(|e| anyhow!("--host {host}: {e}; expected a base URL such as http://localhost:8080"))?;
    refuse_credentials("--host", &url)?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("--host {host}: the scheme must be http or https (media streams use ws/wss on the same host)");
    }
    if url.host_str().is_none_or(str::is_empty) {
        bail!("--host {host}: no host name; expected a base URL such as http://localhost:8080");
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        bail!(
            "--host {host}: give the server's base URL without a path (the scenarios add /api/v1/... themselves)"
        );
    }
    Ok(host.trim_end_matches('/').to_string())
}

/// Refuses a URL carrying a user name or password: it would be printed on the console and
/// written to Goose's logs and reports and to the results file. The error shows the URL with
/// its credentials starred out.
pub fn refuse_credentials(option: &str, url: &Url) -> Result<()> {
    if url.username().is_empty() && url.password().is_none() {
        return Ok(());
    }
    let mut shown = url.clone();
    let _ = shown.set_username("***");
    let _ = shown.set_password(None);
    bail!(
        "{option} {shown}: a user name or password in the URL would be written to the console, logs, \
         reports and results file; give the URL without them"
    )
}

/// As [`refuse_credentials`], for a URL option given as text (unparseable text is left to the
/// option's own check).
pub fn refuse_credentials_in(option: &str, url: &str) -> Result<()> {
    match Url::parse(url) {
        Ok(url) => refuse_credentials(option, &url),
        Err(_) => Ok(()),
    }
}

/// Fails fast, with one line naming the host and the cause, when nothing accepts connections.
pub async fn check_reachable(host: &str) -> Result<()> {
    let url = Url::parse(host)?;
    let name = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    match tokio::time::timeout(
        REACH_TIMEOUT,
        tokio::net::TcpStream::connect((name.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            let cause = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                _ => e.to_string(),
            };
            bail!("cannot reach {host}: {cause} (is the server running? check --host)")
        }
        Err(_) => bail!(
            "cannot reach {host}: no answer within {}s (is the server running? check --host)",
            REACH_TIMEOUT.as_secs()
        ),
    }
}

/// The built-in simulator, running as a child process of this run.
pub struct SimulatorProcess {
    child: Child,
    pub url: String,
    pub pid: u32,
}

impl SimulatorProcess {
    /// Starts `phone-agent-load serve --port 0` with the given extra options and waits for its
    /// `listening on http://...` line.
    pub async fn start(extra_args: &[String]) -> Result<SimulatorProcess> {
        let exe = std::env::current_exe().context("cannot find this program to start the simulator")?;
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--port", "0", "--bind", "127.0.0.1"])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().context("cannot start the built-in simulator")?;
        let pid = child.id().unwrap_or_default();
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(SIMULATOR_START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.trim().strip_prefix("listening on ") {
                    return Ok(url.to_string());
                }
            }
            Err(anyhow!("the built-in simulator exited before it listened"))
        })
        .await
        .map_err(|_| {
            anyhow!(
                "the built-in simulator did not start within {}s",
                SIMULATOR_START_TIMEOUT.as_secs()
            )
        })??;
        // Keep draining its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(SimulatorProcess { child, url, pid })
    }

    /// True while the simulator is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the simulator: SIGTERM, then SIGKILL if it lingers.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(3), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The simulator must not outlive a run killed with SIGKILL.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_validated() {
        assert_eq!(
            validate_host("http://localhost:8080/").unwrap(),
            "http://localhost:8080"
        );
        assert!(validate_host("https://agent.example.com").is_ok());
        let err = validate_host("localhost:8080").unwrap_err().to_string();
        assert!(err.contains("scheme") || err.contains("base URL"), "{err}");
        assert!(validate_host("http://localhost:8080/api")
            .unwrap_err()
            .to_string()
            .contains("without a path"));
        assert!(validate_host("ftp://x").is_err());
        let err = validate_host("http://agent:hunter2@localhost:8080")
            .unwrap_err()
            .to_string();
        assert!(err.contains("password") && !err.contains("hunter2"), "{err}");
        assert!(validate_host("").is_err());
    }

    #[tokio::test]
    async fn unreachable_host_names_host_and_cause() {
        // A port we just bound and released: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("http://127.0.0.1:{port}");
        let err = check_reachable(&host).await.unwrap_err().to_string();
        assert!(err.contains(&host) && err.contains("connection refused"), "{err}");
    }
}
