//! Child processes: started with their output to a log or waited on for their address,
//! signalled, and stopped when dropped.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to end by itself, at most `limit`; kills it past that.
    pub fn wait(mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} did not end within {limit:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether it has ended (and been reaped).
    pub fn ended(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill with a pid we own.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `cmd`, its output to `log`.
pub fn spawn(mut cmd: Command, name: &str, log: std::fs::File) -> Result<Proc> {
    let err = log.try_clone()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    Ok(Proc {
        child,
        name: name.to_string(),
    })
}

/// Starts `cmd` and waits for its `listening on ...` line; returns what follows it.
pub fn spawn_listening(mut cmd: Command, name: &str) -> Result<(Proc, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let proc = Proc {
        child,
        name: name.to_string(),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .with_context(|| format!("{name} did not say where it listens within 10 s"))?;
    Ok((proc, addr))
}

/// Sends `sig` to the process.
pub fn signal(proc: &Proc, sig: libc::c_int) {
    // SAFETY: kill with a pid we own.
    unsafe { libc::kill(proc.pid() as libc::pid_t, sig) };
}
