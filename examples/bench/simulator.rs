//! The simulator under test (`phone-agent-load serve`) in its own process on the target core,
//! and filling one with calls.

use crate::process::{spawn_listening, Proc};
use crate::run::Bench;
use anyhow::{bail, Result};
use phone_agent_load::scenarios::data;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The simulator, in its own process on the target core.
pub struct Sim {
    pub proc: Proc,
    pub url: String,
    http: reqwest::blocking::Client,
}

/// Creates calls in a simulator.
pub struct Filler {
    url: String,
    http: reqwest::blocking::Client,
}

impl Filler {
    pub fn new(url: &str) -> Result<Filler> {
        Ok(Filler {
            url: url.trim_end_matches('/').to_string(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    /// Creates `n` calls (8 connections); returns the ids of the last few thousand.
    pub fn fill(&self, n: usize) -> Result<Vec<String>> {
        let threads = 8;
        let ids = Arc::new(Mutex::new(Vec::new()));
        std::thread::scope(|s| {
            let mut handles = Vec::new();
            for t in 0..threads {
                let (http, url, ids) = (
                    self.http.clone(),
                    format!("{}/api/v1/calls", self.url),
                    ids.clone(),
                );
                handles.push(s.spawn(move || -> Result<()> {
                    let rng = &mut rand::rng();
                    let share = n / threads + usize::from(t < n % threads);
                    for i in 0..share {
                        let body = data::create_call_body(rng, t);
                        let r = http
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()?;
                        if r.status().as_u16() != 201 {
                            bail!("creating a call: status {}", r.status());
                        }
                        if share - i <= 512 {
                            let v: Value = r.json()?;
                            if let Some(id) = v["id"].as_str() {
                                ids.lock().unwrap().push(id.to_string());
                            }
                        }
                    }
                    Ok(())
                }));
            }
            handles
                .into_iter()
                .try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("a fill thread panicked"))?)
        })?;
        let ids = std::mem::take(&mut *ids.lock().unwrap());
        Ok(ids)
    }
}

impl Sim {
    pub fn start(bench: &Bench, extra: &[&str]) -> Result<Sim> {
        let mut cmd = bench.pinned(bench.sim_core(), &bench.tool());
        cmd.args(["serve", "--port", "0", "--bind", "127.0.0.1"])
            .args(extra);
        let (proc, url) = spawn_listening(cmd, "the simulator")?;
        Ok(Sim {
            proc,
            url,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    pub fn stats(&self) -> Result<Value> {
        Ok(self.http.get(format!("{}/_sim/stats", self.url)).send()?.json()?)
    }

    /// Requests it has received (REST and webhooks; its own endpoints are not counted).
    pub fn requests(&self) -> Result<u64> {
        let stats = self.stats()?;
        Ok(stats["requests"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum()))
    }

    /// Creates `n` calls; returns the ids of the last few thousand.
    pub fn fill(&self, n: usize) -> Result<Vec<String>> {
        Filler::new(&self.url)?.fill(n)
    }
}
