//! Helpers for tests that run the real `phone-agent-load` binary: bounded runs, a `serve`
//! process on a free loopback port, and reading results files.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_phone-agent-load");

/// What a finished run printed and how it exited.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs the binary with `args`, killing it if it outlives `limit` (then the test fails).
pub fn run(args: &[&str], limit: Duration) -> Output {
    run_in(args, limit, None)
}

pub fn run_in(args: &[&str], limit: Duration, dir: Option<&Path>) -> Output {
    let started = Instant::now();
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let child = cmd.spawn().expect("start phone-agent-load");
    let out = wait_bounded(child, limit);
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// Waits for a child's output; kills it and panics if it takes longer than `limit`.
pub fn wait_bounded(child: Child, limit: Duration) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for phone-agent-load"),
        Err(_) => {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            // What it printed before it was killed says where it hung.
            let said = match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Ok(out)) => {
                    let tail = |b: &[u8]| {
                        let t = String::from_utf8_lossy(b);
                        let lines: Vec<&str> = t.lines().collect();
                        lines[lines.len().saturating_sub(40)..].join("\n")
                    };
                    format!(
                        "\n--- stdout (last 40 lines) ---\n{}\n--- stderr (last 40 lines) ---\n{}",
                        tail(&out.stdout),
                        tail(&out.stderr)
                    )
                }
                _ => String::new(),
            };
            panic!("phone-agent-load (pid {pid}) did not finish within {limit:?}{said}");
        }
    }
}

/// A `phone-agent-load serve` process on a free port, killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--port", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(url) = line.trim().strip_prefix("listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("serve printed its address");
        Server { child, url }
    }

    /// What the simulator received, from its stats endpoint.
    pub fn stats(&self) -> serde_json::Value {
        let addr = self.url.trim_start_matches("http://").to_string();
        let mut stream = std::net::TcpStream::connect(&addr).expect("connect to serve");
        use std::io::{Read, Write};
        write!(
            stream,
            "GET /_sim/stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).unwrap();
        let json = body.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str(json).unwrap_or_else(|e| panic!("stats JSON: {e}: {json}"))
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a results file.
pub fn results(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The settings every in-process test attack shares: `users` users on `host`, all started at
/// once, held `secs` seconds, metrics kept from the start, no telnet, nothing printed.
pub fn quiet(attack: goose::GooseAttack, host: &str, users: usize, secs: usize) -> goose::GooseAttack {
    use goose::prelude::{GooseDefault, GooseDefaultType};
    attack
        .set_default(GooseDefault::Host, host)
        .and_then(|a| a.set_default(GooseDefault::Users, users))
        .and_then(|a| a.set_default(GooseDefault::IncreaseRate, "100"))
        .and_then(|a| a.set_default(GooseDefault::RunTime, secs))
        .and_then(|a| a.set_default(GooseDefault::NoResetMetrics, true))
        .and_then(|a| a.set_default(GooseDefault::NoTelnet, true))
        .and_then(|a| a.set_default(GooseDefault::Quiet, 1))
        .and_then(|a| a.set_default(GooseDefault::NoPrintMetrics, true))
        .map(|a| *a)
        .expect("valid test attack settings")
}
