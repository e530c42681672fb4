//! Workers in network namespaces of their own, on one bridge, as on other hosts: skipped where
//! namespaces cannot be made.

use super::{Proc, LIMIT};
use crate::harness::{free_port, results, Server};
use std::process::{Command, Stdio};
use std::time::Duration;

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
