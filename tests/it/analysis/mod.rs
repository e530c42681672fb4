//! The post-run analysis: verdict edges, the slope fit, the results file's contract, the api
//! section from a real Goose run on loopback, the memory sampler, hooks, the HTML report and the
//! Python suite's keys.
//! What the modules share is here: a run plan and a small HTTP server on loopback.

mod api_section;
mod hooks;
mod memory;
mod python_suite;
mod report;
mod results_file;
mod slope;
mod synthetic;
mod verdicts;

use phone_agent_load::config::plan::{AiMode, Overrides, RunPlan, Skips};
use phone_agent_load::config::profile::Profile;

fn plan(mode: AiMode, skips: Skips) -> RunPlan {
    let o = Overrides {
        skips,
        ..Default::default()
    };
    RunPlan::new(Profile::load("quick").unwrap(), &o, mode, false).unwrap()
}

async fn serve(router: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (url, task)
}
