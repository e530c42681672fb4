//! Serving: a port already in use and bad options refused in this process, and the real binary's
//! `serve` command announcing its port, stopping on SIGTERM, and exiting 1 on a taken port.

use super::{bounded, http};
use phone_agent_load::simulator::{self, ServeOptions};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

#[tokio::test]
async fn serve_on_a_port_in_use_says_so() {
    bounded(5, async {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let opts = ServeOptions {
            port,
            ..ServeOptions::for_tests()
        };
        let err = simulator::serve(opts).await.unwrap_err().to_string();
        assert!(
            err.contains(&format!("127.0.0.1:{port} is already in use")),
            "{err}"
        );
        let bad = ServeOptions {
            error_rate: 2.0,
            ..ServeOptions::for_tests()
        };
        assert!(simulator::start(bad)
            .await
            .err()
            .unwrap()
            .to_string()
            .contains("--error-rate"));
    })
    .await;
}

/// Starts the real binary's `serve` and returns it with the URL it announced.
async fn spawn_serve(args: &[&str]) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_phone-agent-load"))
        .arg("serve")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, url)
}

#[tokio::test]
async fn serve_announces_its_port_and_stops_on_sigterm() {
    bounded(20, async {
        let (mut child, url) = spawn_serve(&["--port", "0", "--error-rate", "0"]).await;
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let r = http().get(format!("{url}/api/v1/health")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let stats: Value = http()
            .get(format!("{url}/_sim/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats["requests"]["GET /api/v1/health"], 1);
        let pid = child.id().unwrap() as i32;
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{status:?}");
    })
    .await;
}

#[tokio::test]
async fn serve_on_a_taken_port_exits_1_naming_it() {
    bounded(20, async {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port().to_string();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_phone-agent-load"))
            .args(["serve", "--port", &port])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("127.0.0.1:{port} is already in use")),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    })
    .await;
}
