//! Distributed runs, end to end: a manager and workers as separate processes of the built binary
//! on loopback, against a `serve` simulator. Exact merging, refusals, a lost worker, a lost
//! manager, and `merge` of results files agreeing with the manager's merge.

use crate::harness::{free_port, results, Server, BIN};
use goose::goose::GooseMethod;
use goose::metrics::GooseRequestMetricTimingData;
use phone_agent_load::analysis::results::RawData;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

fn raw(r: &Value) -> RawData {
    serde_json::from_value(r["raw"].clone()).expect("raw data in the results file")
}

/// The union of the runs' HTTP histograms, built here independently of the crate's merge.
fn union_of_http_rows(raws: &[RawData]) -> GooseRequestMetricTimingData {
    let rows: Vec<&GooseRequestMetricTimingData> = raws
        .iter()
        .flat_map(|r| r.goose.as_ref().unwrap().requests.values())
        .filter(|row| row.method != GooseMethod::Custom)
        .map(|row| &row.raw_data)
        .filter(|t| t.counter > 0)
        .collect();
    let mut all = GooseRequestMetricTimingData {
        times_us: rows
            .iter()
            .flat_map(|t| t.times_us.iter().map(|(&b, &c)| (b, c)))
            .collect(),
        ..Default::default()
    };
    all.minimum_time_us = rows.iter().map(|t| t.minimum_time_us).min().unwrap();
    all.maximum_time_us = rows.iter().map(|t| t.maximum_time_us).max().unwrap();
    all.total_time_us = rows.iter().map(|t| t.total_time_us).sum();
    all.counter = rows.iter().map(|t| t.counter).sum();
    all
}

/// Nearest-rank quantile, as the results file computes RTF percentiles.
fn nearest_rank(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

const LIMIT: Duration = Duration::from_secs(45);

#[test]
fn manager_and_two_workers_merge_exactly_and_merge_agrees() {
    // A fifth of the API answers fail, so the failures by reason have something to add up (and
    // the merged verdict is critical).
    let server = Server::start(&["--error-rate", "0.2"]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let manager = Proc::start(
        &[
            "--manager",
            "--expect-workers",
            "2",
            "--manager-bind-port",
            &port,
            "--host",
            &server.url,
            "--run-time",
            "3s",
            "--hatch-rate",
            "100",
            "--skip-ws",
            "--ai-mode",
            "mock",
            "--headless",
            "--output",
            "m.json",
        ],
        dir.path(),
        &[],
    );
    let workers: Vec<Proc> = ["w1.json", "w2.json"]
        .iter()
        .map(|out| {
            Proc::start(
                &["--worker", "--manager-port", &port, "--output", out],
                dir.path(),
                &[],
            )
        })
        .collect();
    let (code, out) = manager.finish(LIMIT);
    assert_eq!(
        code,
        Some(2),
        "a fifth of the requests failing is critical\n{out}"
    );
    for w in workers {
        let (code, out) = w.finish(Duration::from_secs(10));
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("Results delivered to the gaggle manager"), "{out}");
    }
    let m = results(&dir.path().join("m.json"));
    let ws: Vec<Value> = ["w1.json", "w2.json"]
        .iter()
        .map(|f| results(&dir.path().join(f)))
        .collect();

    // Counts add up, and each worker carried load.
    let requests: Vec<u64> = ws
        .iter()
        .map(|w| w["api"]["requests"].as_u64().unwrap())
        .collect();
    assert!(requests.iter().all(|&n| n > 0), "{requests:?}");
    assert_eq!(
        m["api"]["requests"].as_u64().unwrap(),
        requests.iter().sum::<u64>()
    );
    let turns: Vec<u64> = ws
        .iter()
        .map(|w| w["ai_pipeline"]["turns"].as_u64().unwrap())
        .collect();
    assert_eq!(
        m["ai_pipeline"]["turns"].as_u64().unwrap(),
        turns.iter().sum::<u64>()
    );
    let users: u64 = m["users"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        users, 13,
        "quick without media streams: 10 API users and 3 AI calls"
    );

    // Failures by reason add up too, and the manager's console table shows them.
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for w in &ws {
        for (reason, n) in w["failures_by_reason"].as_object().unwrap() {
            *by_reason.entry(reason.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    assert_eq!(
        by_reason.keys().collect::<Vec<_>>(),
        ["Unexpected status 500"],
        "{by_reason:?}"
    );
    assert_eq!(m["failures_by_reason"], serde_json::to_value(&by_reason).unwrap());
    let failed: u64 = ws.iter().map(|w| w["api"]["failures"].as_u64().unwrap()).sum();
    assert!(
        failed > 0 && by_reason["Unexpected status 500"] >= failed,
        "{by_reason:?} vs {failed}"
    );
    let table = out.split("Failed requests by reason").nth(1).unwrap_or_default();
    assert!(table.contains("Unexpected status 500"), "{out}");

    // Percentiles are those of the union of the workers' histograms (and samples).
    let raws: Vec<RawData> = ws.iter().map(raw).collect();
    let all = union_of_http_rows(&raws);
    assert_eq!(all.counter as u64, m["api"]["requests"].as_u64().unwrap());
    for (key, q) in [("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)] {
        let want = all.percentile_us(q) as f64 / 1000.0;
        assert_eq!(m["api"][key].as_f64().unwrap(), want, "{key}");
    }
    let rtfs: Vec<f64> = raws
        .iter()
        .flat_map(|r| r.measured.ai.turns.iter().filter(|t| t.ok).map(|t| t.rtf))
        .collect();
    if !rtfs.is_empty() {
        assert_eq!(
            m["ai_pipeline"]["rtf"]["p95"].as_f64().unwrap(),
            nearest_rank(rtfs, 0.95)
        );
    }

    // The workers list names both, with their shares.
    let list = m["workers"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|w| w["status"] == "finished"), "{list:?}");

    // `merge` of the workers' own files gives the manager's results.
    let (code, out) = Proc::start(
        &["merge", "w1.json", "w2.json", "--output", "mm.json"],
        dir.path(),
        &[],
    )
    .finish(Duration::from_secs(20));
    assert_eq!(code, Some(2), "the same critical verdict\n{out}");
    let mm = results(&dir.path().join("mm.json"));
    for key in [
        "api",
        "websocket",
        "ai_pipeline",
        "users",
        "passed",
        "interrupted",
        "timestamp",
        "duration_s",
        "failures_by_reason",
    ] {
        assert_eq!(
            m[key], mm[key],
            "{key} differs between the manager's merge and `merge`"
        );
    }
    assert_eq!(m["raw"]["goose"], mm["raw"]["goose"]);
    assert_eq!(m["raw"]["measured"], mm["raw"]["measured"]);
    assert_eq!(
        m["memory"]["load_generator"]["growth_mb"],
        mm["memory"]["load_generator"]["growth_mb"]
    );
}

#[test]
fn mismatched_workers_are_refused_and_both_sides_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let mut manager = Proc::start(
        &[
            "--manager",
            "--expect-workers",
            "1",
            "--manager-bind-port",
            &port,
            "--host",
            "http://127.0.0.1:9",
            "--skip-api",
            "--skip-ws",
            "--ai-mode",
            "mock",
            "--gaggle-token",
            "right",
            "--gaggle-timeout",
            "6s",
            "--headless",
        ],
        dir.path(),
        &[],
    );
    manager.wait_for("listening on", Duration::from_secs(20));
    let worker = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["--worker", "--manager-port", &port];
        args.extend_from_slice(extra);
        Proc::start(&args, dir.path(), env).finish(Duration::from_secs(20))
    };
    let (code, out) = worker(
        &["--gaggle-token", "right"],
        &[("PHONE_AGENT_LOAD_GAGGLE_CLAIM_VERSION", "9.9.9")],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("refused this worker: crate version mismatch") && out.contains("9.9.9"),
        "{out}"
    );
    let (code, out) = worker(&["--gaggle-token", "wrong"], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("refused this worker: wrong gaggle token"), "{out}");
    let (code, out) = worker(&[], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("needs a token"), "{out}");
    let (code, out) = manager.finish(Duration::from_secs(20));
    assert_eq!(code, Some(1), "{out}");
    for needle in [
        "Refused a worker from 127.0.0.1",
        "crate version mismatch",
        "wrong gaggle token",
        "only 0 of 1 workers joined within 6s",
    ] {
        assert!(out.contains(needle), "{needle:?} missing:\n{out}");
    }
    assert!(!out.contains("right"), "the token must not be printed:\n{out}");

    // Off loopback without a token, and load options on a worker: refused before anything starts.
    let (code, out) = Proc::start(
        &[
            "--manager",
            "--expect-workers",
            "1",
            "--manager-bind-host",
            "0.0.0.0",
        ],
        dir.path(),
        &[],
    )
    .finish(Duration::from_secs(10));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("off loopback") && out.contains("--gaggle-token"),
        "{out}"
    );
    let (code, out) =
        Proc::start(&["--worker", "--users", "5"], dir.path(), &[]).finish(Duration::from_secs(10));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("give --users to the --manager"), "{out}");

    // `merge` names a file without the raw data.
    let old = r#"{"profile": "quick", "timestamp": "2026-01-01T00:00:00Z", "host": "h", "passed": true,
        "interrupted": false, "interrupt_reason": null, "duration_s": 1.0, "api": {"skipped": true},
        "websocket": {"skipped": true}, "ai_pipeline": {"skipped": true}, "memory": {}, "verdicts": []}"#;
    std::fs::write(dir.path().join("old.json"), old).unwrap();
    let (code, out) = Proc::start(&["merge", "old.json"], dir.path(), &[]).finish(Duration::from_secs(10));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("old.json: no raw data to merge"), "{out}");
}

#[test]
fn a_killed_worker_is_reported_and_the_run_completes_non_zero() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let mut manager = Proc::start(
        &[
            "--manager",
            "--expect-workers",
            "2",
            "--manager-bind-port",
            &port,
            "--host",
            &server.url,
            "--run-time",
            "6s",
            "--hatch-rate",
            "100",
            "--skip-ws",
            "--skip-ai",
            "--headless",
            "--output",
            "m.json",
        ],
        dir.path(),
        &[],
    );
    let w1 = Proc::start(&["--worker", "--manager-port", &port], dir.path(), &[]);
    let mut w2 = Proc::start(&["--worker", "--manager-port", &port], dir.path(), &[]);
    manager.wait_for("Started 2 workers", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(2500));
    w2.kill();
    let (code, out) = manager.finish(LIMIT);
    assert_eq!(code, Some(1), "{out}");
    let (w1_code, w1_out) = w1.finish(Duration::from_secs(10));
    assert_eq!(w1_code, Some(0), "{w1_out}");
    let r = results(&dir.path().join("m.json"));
    assert_eq!(r["interrupted"], true);
    let lost_name = r["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["status"] == "lost")
        .unwrap_or_else(|| panic!("no lost worker: {}", r["workers"]))["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        r["interrupt_reason"].as_str().unwrap().contains(&lost_name),
        "{}",
        r["interrupt_reason"]
    );
    assert!(
        out.contains("LOST") && out.contains("going on with the others"),
        "{out}"
    );
    assert!(r["api"]["requests"].as_u64().unwrap() > 0);
}

#[test]
fn a_lost_manager_stops_the_workers_who_keep_their_results() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let mut manager = Proc::start(
        &[
            "--manager",
            "--expect-workers",
            "1",
            "--manager-bind-port",
            &port,
            "--host",
            &server.url,
            "--run-time",
            "60s",
            "--hatch-rate",
            "100",
            "--skip-ai",
            "--headless",
        ],
        dir.path(),
        &[],
    );
    let worker = Proc::start(&["--worker", "--manager-port", &port], dir.path(), &[]);
    manager.wait_for("Started 1 workers", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    manager.kill();
    let killed = Instant::now();
    let (code, out) = worker.finish(Duration::from_secs(20));
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "took {:?}",
        killed.elapsed()
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("lost the gaggle manager"), "{out}");
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap_or_else(|| panic!("no local results file:\n{out}"));
    assert!(out.contains(&format!(
        "Results written to {}",
        file.file_name().unwrap().to_string_lossy()
    )));
    let r = results(&file);
    assert_eq!(r["interrupted"], true);
    assert!(r["interrupt_reason"]
        .as_str()
        .unwrap()
        .contains("lost the gaggle manager"));
    assert!(r["raw"].is_object());
}

/// Network namespaces on one bridge: each worker on a network stack of its own, as on another
/// host, reaching the manager and the simulator at 10.231.0.1. Removed when dropped.
struct Netns {
    bridge: String,
    spaces: Vec<String>,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Netns {
    /// None where namespaces cannot be made (not root, no `ip`, a container without the rights).
    fn create(workers: usize) -> Option<Netns> {
        let tag = std::process::id() % 100_000;
        let mut net = Netns {
            bridge: format!("pgbr{tag}"),
            spaces: Vec::new(),
        };
        let bridge = net.bridge.clone();
        let ok = ip(&["link", "add", &bridge, "type", "bridge"])
            && ip(&["addr", "add", "10.231.0.1/24", "dev", &bridge])
            && ip(&["link", "set", &bridge, "up"]);
        if !ok {
            return None;
        }
        for i in 1..=workers {
            let (ns, outer, inner) = (
                format!("pgns{tag}-{i}"),
                format!("pga{tag}{i}"),
                format!("pgb{tag}{i}"),
            );
            net.spaces.push(ns.clone());
            let addr = format!("10.231.0.{}/24", i + 1);
            let ok = ip(&["netns", "add", &ns])
                && ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner])
                && ip(&["link", "set", &outer, "master", &bridge])
                && ip(&["link", "set", &outer, "up"])
                && ip(&["link", "set", &inner, "netns", &ns])
                && ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner])
                && ip(&["-n", &ns, "link", "set", &inner, "up"])
                && ip(&["-n", &ns, "link", "set", "lo", "up"]);
            if !ok {
                return None;
            }
        }
        Some(net)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, and with it the peer on the bridge.
        for ns in &self.spaces {
            ip(&["netns", "del", ns]);
        }
        ip(&["link", "del", &self.bridge]);
    }
}

#[test]
fn workers_in_their_own_network_namespaces() {
    let Some(net) = Netns::create(2) else {
        eprintln!("skipped: cannot create network namespaces here (needs root and `ip`)");
        return;
    };
    let server = Server::start(&["--bind", "10.231.0.1"]);
    let host = server.url.clone();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let manager = Proc::start(
        &[
            "--manager",
            "--expect-workers",
            "2",
            "--manager-bind-host",
            "10.231.0.1",
            "--manager-bind-port",
            &port,
            "--gaggle-token",
            "ns-secret",
            "--host",
            &host,
            "--run-time",
            "3s",
            "--hatch-rate",
            "100",
            "--skip-ws",
            "--skip-ai",
            "--headless",
            "--output",
            "m.json",
        ],
        dir.path(),
        &[],
    );
    let workers: Vec<Proc> = net
        .spaces
        .iter()
        .map(|ns| {
            let args = [
                "--worker",
                "--manager-host",
                "10.231.0.1",
                "--manager-port",
                &port,
                "--gaggle-token",
                "ns-secret",
            ];
            Proc::start_in(ns, &args, dir.path())
        })
        .collect();
    let (code, out) = manager.finish(LIMIT);
    assert_eq!(code, Some(0), "{out}");
    for w in workers {
        let (code, out) = w.finish(Duration::from_secs(10));
        assert_eq!(code, Some(0), "{out}");
    }
    let r = results(&dir.path().join("m.json"));
    let mut addresses: Vec<String> = r["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            assert!(w["api_requests"].as_u64().unwrap() > 0, "{w}");
            w["address"]
                .as_str()
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    addresses.sort();
    assert_eq!(addresses, ["10.231.0.2", "10.231.0.3"]);
    drop(net);
}
