//! Running the real `phone-agent-load` binary, bounded in time: a command line to its end, or a
//! load run against a target, watched for its peak memory on the way.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_phone-agent-load");

/// Longest a load run may take past its run time: start-up, the post-run hook, a slow shared
/// machine.
const GRACE: Duration = Duration::from_secs(25);

/// What a finished process printed, how it exited, how long it took, and its peak memory.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// The process's peak RSS (VmHWM) in KiB, as last seen before it exited.
    pub peak_kib: u64,
}

impl Output {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// The console's final "Failed requests by reason" table, reason -> count.
    pub fn failed_by_reason(&self) -> BTreeMap<String, u64> {
        let mut rows = BTreeMap::new();
        let mut lines = self.stdout.lines();
        if !lines.any(|l| l.starts_with("Failed requests by reason")) {
            return rows;
        }
        for line in lines.skip(1) {
            let line = line.trim();
            let Some((count, reason)) = line.split_once("  ") else {
                break;
            };
            let Ok(n) = count.trim().replace(',', "").parse::<u64>() else {
                break;
            };
            rows.insert(reason.trim().to_string(), n);
        }
        rows
    }

    /// The run ended by itself with a verdict's status (0 or 2): no crash, no panic.
    pub fn assert_clean_exit(&self) {
        assert!(
            matches!(self.code, Some(0) | Some(2)),
            "exit {:?}\n{}",
            self.code,
            self.all()
        );
        assert!(!self.all().contains("panicked"), "{}", self.all());
    }
}

/// Runs the binary with `args`, killing it if it outlives `limit` (then the test fails).
pub fn run(args: &[&str], limit: Duration) -> Output {
    run_in(args, limit, None)
}

/// [`run`], in the folder `dir` when one is given.
pub fn run_in(args: &[&str], limit: Duration, dir: Option<&Path>) -> Output {
    let started = Instant::now();
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    watch(spawn(cmd), started, limit, |_| {})
}

/// Runs the load generator against `host` for `run_time` seconds with `args` (and the headless,
/// all-at-once settings every load run shares), writing its results to `out`; kills it and
/// fails if it outlives the run time by more than [`GRACE`]. Calls `at(elapsed)` as it runs
/// (to kill the target mid-run, say).
pub fn run_against(host: &str, run_time: u64, args: &[&str], out: &Path, at: impl FnMut(Duration)) -> Output {
    let run_time_arg = format!("{run_time}s");
    let started = Instant::now();
    let mut cmd = Command::new(BIN);
    cmd.args(["--host", host, "--headless", "--hatch-rate", "100"])
        .args(["--run-time", &run_time_arg, "--output", out.to_str().unwrap()])
        .args(args);
    watch(spawn(cmd), started, Duration::from_secs(run_time) + GRACE, at)
}

/// Waits for a child started with piped output; kills it and panics if it takes longer than
/// `limit` from now.
pub fn wait_bounded(child: Child, limit: Duration) -> Output {
    watch(child, Instant::now(), limit, |_| {})
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start phone-agent-load")
}

/// Collects `child`'s output until it exits, polling its peak memory and calling `at` every
/// 25 ms; kills it and panics, showing the end of what it printed, once `limit` has passed
/// since `started`.
fn watch(mut child: Child, started: Instant, limit: Duration, mut at: impl FnMut(Duration)) -> Output {
    let pid = child.id();
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let mut peak_kib = 0;
    let status = loop {
        if let Some(kib) = vm_hwm_kib(pid) {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().expect("wait for the process") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            // What it printed before it was killed says where it hung.
            let tail = |text: String| {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(40)..].join("\n")
            };
            panic!(
                "process {pid} did not finish within {limit:?}\n--- stdout (last 40 lines) ---\n{}\n\
                 --- stderr (last 40 lines) ---\n{}",
                tail(collected(stdout)),
                tail(collected(stderr))
            );
        }
        at(started.elapsed());
        std::thread::sleep(Duration::from_millis(25));
    };
    Output {
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed: started.elapsed(),
        peak_kib,
    }
}

/// Reads `pipe` to its end on a thread of its own, so a chatty process never blocks on a full
/// pipe.
fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// What a killed process's pipe held, if it closes within 5 s (a process it started may hold it
/// open).
fn collected(reader: JoinHandle<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if reader.is_finished() {
        reader.join().unwrap_or_default()
    } else {
        "(still open)".to_string()
    }
}

/// The peak resident memory of process `pid` so far, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
