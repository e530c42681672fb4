//! Distributed runs, end to end: a manager and workers as separate processes of the built binary
//! on loopback, against a `serve` simulator. Exact merging, refusals, a lost worker, a lost
//! manager, `merge` of results files agreeing with the manager's merge, and workers in network
//! namespaces of their own. What the modules share is here: a process of the binary whose output
//! is read line by line.

mod failures;
mod merging;
mod namespaces;

use crate::harness::BIN;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(45);

/// A running process of the binary whose output is collected line by line.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn start(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        Proc::spawn(cmd, dir, env)
    }

    /// The binary inside network namespace `ns` (`ip netns exec` execs it: same pid).
    fn start_in(ns: &str, args: &[&str], dir: &Path) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, BIN]).args(args);
        Proc::spawn(cmd, dir, &[])
    }

    fn spawn(mut cmd: Command, dir: &Path, env: &[(&str, &str)]) -> Proc {
        let mut child = cmd
            .current_dir(dir)
            .envs(env.iter().copied())
            .env_remove("PHONE_AGENT_LOAD_GAGGLE_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a process");
        let (tx, lines) = mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`; panics with the output so far after `limit`.
    fn wait_for(&mut self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        if self.seen.iter().any(|l| l.contains(needle)) {
            return;
        }
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            let found = line.contains(needle);
            self.seen.push(line);
            if found {
                return;
            }
        }
        panic!(
            "no line with {needle:?} within {limit:?}:\n{}",
            self.seen.join("\n")
        );
    }

    /// Waits for the exit (killing the process after `limit`); the exit code and all output.
    fn finish(mut self, limit: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("did not finish within {limit:?}:\n{}", self.drain().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = self.drain().join("\n");
        (status.code(), out)
    }

    fn drain(&mut self) -> Vec<String> {
        // The reader threads end at EOF, shortly after the exit.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(300)) {
            self.seen.push(line);
        }
        self.seen.clone()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
