//! The web UI as a Locust user meets it: the page during a live run, a run driven from the page
//! with `--no-autostart`, a taken port, and the page rendered in a real browser (headless
//! Chromium), which saves a screenshot under `target/webui/` as a CI artifact.

use crate::harness::{self, free_port, results, Server, BIN};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A run with the web UI on `port`, started in `dir` (Goose's report folders land there).
struct Run {
    child: Option<Child>,
    port: u16,
    client: reqwest::blocking::Client,
}

impl Run {
    fn start(dir: &Path, args: &[&str]) -> Run {
        let port = free_port();
        let mut child = Command::new(BIN)
            .args(["--dashboard-port", &port.to_string()])
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The URL is printed first thing.
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert_eq!(first.trim(), format!("Web UI: http://127.0.0.1:{port}"));
        let run = Run {
            child: Some(child),
            port,
            client: reqwest::blocking::Client::new(),
        };
        run.wait_until(Duration::from_secs(30), |r| r.get("/api/v1/health").is_some());
        run
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn get(&self, path: &str) -> Option<String> {
        let resp = self
            .client
            .get(self.url(path))
            .timeout(Duration::from_secs(3))
            .send()
            .ok()?;
        resp.status().is_success().then(|| resp.text().ok()).flatten()
    }

    fn control(&self, command: &str, body: &str) -> serde_json::Value {
        let resp = self
            .client
            .post(self.url(&format!("/api/v1/control/{command}")))
            .header("content-type", "application/json")
            .body(body.to_string())
            .timeout(Duration::from_secs(5))
            .send()
            .unwrap();
        resp.json().unwrap()
    }

    fn snapshot(&self) -> serde_json::Value {
        self.get("/api/v1/snapshot")
            .map(|s| serde_json::from_str(&s).unwrap())
            .unwrap_or_default()
    }

    fn wait_until(&self, limit: Duration, ok: impl Fn(&Run) -> bool) {
        let deadline = Instant::now() + limit;
        while !ok(self) {
            assert!(Instant::now() < deadline, "timed out waiting on the web UI");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for the process to exit on its own.
    fn finish(mut self, limit: Duration) -> (Option<i32>, String) {
        let child = self.child.take().unwrap();
        let out = harness::wait_bounded(child, limit);
        (out.code, out.stdout)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_live_run_serves_the_page_and_ends_on_its_own() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let run = Run::start(
        dir.path(),
        // No AI calls: one short AI turn in a 4 s run could judge it (the page is the point here).
        &[
            "--host",
            &server.url,
            "--skip-ai",
            "--run-time",
            "4s",
            "--output",
            "r.json",
        ],
    );
    let page = run.get("/").expect("the page");
    assert!(page.to_lowercase().contains("<html"), "{page}");
    assert!(run.get("/api/v1/health").unwrap().contains("ok") || run.get("/api/v1/health").is_some());
    // An open event stream (a browser tab) must not keep an autostarted run from ending.
    let events = reqwest::blocking::Client::new()
        .get(run.url("/api/v1/events"))
        .send()
        .unwrap();
    let (code, stdout) = run.finish(Duration::from_secs(60));
    drop(events);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("RESULT: PASSED"), "{stdout}");
    assert_eq!(results(&dir.path().join("r.json"))["interrupted"], false);
}

#[test]
fn no_autostart_is_driven_from_the_page() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let run = Run::start(
        dir.path(),
        &[
            "--host",
            &server.url,
            "--no-autostart",
            "--skip-ws",
            "--skip-ai",
            "--output",
            "r.json",
        ],
    );
    assert_eq!(run.snapshot()["phase"], "idle", "the page opens idle");
    let started = run.control(
        "start",
        r#"{"users": 6, "increase_rate": 6, "run_time_secs": 30}"#,
    );
    assert_eq!(started["ok"], true, "{started}");
    run.wait_until(Duration::from_secs(20), |r| r.snapshot()["active_users"] == 6);
    let users = run.control("users", r#"{"users": 3}"#);
    assert_eq!(users["ok"], true, "{users}");
    run.wait_until(Duration::from_secs(20), |r| r.snapshot()["active_users"] == 3);
    assert_eq!(run.control("stop", "{}")["ok"], true);
    // The run's own results file appears when it ends, while the session goes on.
    let first = dir.path().join("r-1.json");
    run.wait_until(Duration::from_secs(30), |_| first.exists());
    let r = results(&first);
    assert!(r["api"]["requests"].as_u64().unwrap() > 0, "{}", r["api"]);
    // Start again from the page: a second run, a second file.
    run.wait_until(Duration::from_secs(20), |r| r.snapshot()["phase"] == "idle");
    assert_eq!(
        run.control("start", r#"{"users": 3, "run_time_secs": 2}"#)["ok"],
        true
    );
    let second = dir.path().join("r-2.json");
    run.wait_until(Duration::from_secs(40), |_| second.exists());
    assert_eq!(run.control("quit", "{}")["ok"], true);
    let (code, stdout) = run.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stdout}");
}

#[test]
fn a_taken_port_is_one_clear_line() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let out = harness::run(
        &["--dashboard-port", &port, "--run-time", "2s"],
        Duration::from_secs(20),
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    assert!(
        errors[0].contains(&port) && errors[0].contains("--dashboard-port"),
        "{}",
        errors[0]
    );
}

#[test]
fn headless_serves_nothing() {
    let port = free_port();
    let server = Server::start(&[]);
    let mut child = Command::new(BIN)
        .args([
            "--headless",
            "--host",
            &server.url,
            "--skip-ws",
            "--skip-ai",
            "--run-time",
            "3s",
        ])
        .args(["--dashboard-port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something listens on the UI port"
    );
    assert!(child.wait().unwrap().success());
}

/// The page rendered by a real browser shows the API endpoints and the call rows.
#[test]
fn the_page_renders_in_a_real_browser() {
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|c| which(c)) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required under CI (scripts/test installs it)"
        );
        eprintln!("SKIPPED: chromium is not installed (apt-get install chromium); CI runs this test");
        return;
    };
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let run = Run::start(
        dir.path(),
        &["--host", &server.url, "--run-time", "90s", "--no-reset-metrics"],
    );
    // Let every kind of load show up on the page: API rows, media-stream and AI-call rows.
    run.wait_until(Duration::from_secs(40), |r| {
        let s = r.snapshot().to_string();
        s.contains("AI call") && s.contains("media stream") && s.contains("[LIST]")
    });
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../webui");
    std::fs::create_dir_all(&shots).unwrap();
    let browser = Browser::launch(chromium);
    let mut page = browser.page();
    page.call("Page.navigate", serde_json::json!({ "url": run.url("/") }));
    // The page renders from the live event stream: wait until the rows are on it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut text = String::new();
    let rows = [
        "/api/v1/calls [LIST]",
        "/webhooks/twilio/status",
        "media stream: connect",
        "AI call",
    ];
    while Instant::now() < deadline {
        let v = page.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": "document.body.innerText", "returnByValue": true }),
        );
        text = v["result"]["value"].as_str().unwrap_or_default().to_string();
        if rows.iter().all(|r| text.contains(r)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for row in rows {
        assert!(text.contains(row), "the rendered page lacks {row}:\n{text}");
    }
    assert!(
        !text.contains("Goose has exited"),
        "the page was read after the run, not while it was live"
    );
    let shot = page.call(
        "Page.captureScreenshot",
        serde_json::json!({ "format": "png", "captureBeyondViewport": true }),
    );
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    let path = shots.join("dashboard.png");
    std::fs::write(&path, &png).unwrap();
    assert!(png.len() > 10_000, "a blank screenshot?");
    eprintln!("screenshot: {}", path.display());
}

/// Headless Chromium, driven over the DevTools protocol (no driver binary needed).
struct Browser {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch(chromium: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1600,1400",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let active = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&active)
                .ok()
                .and_then(|t| t.lines().next()?.parse().ok())
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        Browser {
            child,
            port,
            _profile: profile,
        }
    }

    fn page(&self) -> Page {
        let list: serde_json::Value =
            reqwest::blocking::get(format!("http://127.0.0.1:{}/json/list", self.port))
                .unwrap()
                .json()
                .unwrap();
        let target = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target");
        let url = target["webSocketDebuggerUrl"].as_str().unwrap();
        let (ws, _) = tokio_tungstenite::tungstenite::connect(url).unwrap();
        Page { ws, next_id: 0 }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Page {
    ws: tokio_tungstenite::tungstenite::WebSocket<
        tokio_tungstenite::tungstenite::stream::MaybeTlsStream<std::net::TcpStream>,
    >,
    next_id: u64,
}

impl Page {
    /// Sends one DevTools command and returns its result (events in between are skipped).
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use tokio_tungstenite::tungstenite::Message;
        self.next_id += 1;
        let id = self.next_id;
        let msg = serde_json::json!({ "id": id, "method": method, "params": params });
        self.ws.send(Message::text(msg.to_string())).unwrap();
        loop {
            if let Message::Text(text) = self.ws.read().unwrap() {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(cmd).is_file()))
        .unwrap_or(false)
}
