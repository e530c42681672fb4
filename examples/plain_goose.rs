//! The baseline for `scripts/bench`: a minimal plain-Goose load test, one GET transaction that
//! reads the body (as the crate's API scenarios do, so connections are reused the same way),
//! no wait time, nothing of this crate.
//!
//! ```text
//! cargo run --release --example plain_goose -- --host http://127.0.0.1:8080 --users 40 \
//!     --increase-rate 1000 --run-time 20s --path /api/v1/health
//! ```
//!
//! Every option is Goose's own, plus `--path P` (repeatable; default `/api/v1/health`): with
//! several, each user walks through them in turn, one per transaction, so a path mix can match
//! the bytes another test reads. Each user has its own HTTP client, Goose's default;
//! `--shared-client` shares one client among all users, as phone-agent-load does. Neither keeps
//! cookies: the crate turns off Goose's `cookies` feature (reqwest's cookie layer parses every
//! request's URL once more), and Cargo builds one Goose for the crate and its examples.

use goose::prelude::*;
use std::sync::OnceLock;

static PATHS: OnceLock<Vec<String>> = OnceLock::new();

/// The next of `--path`s for this user.
#[derive(Clone)]
struct Next(usize);

async fn get(user: &mut GooseUser) -> TransactionResult {
    let paths = PATHS.get().expect("paths are set before the attack");
    let i = match user.get_session_data_mut::<Next>() {
        Some(next) => {
            next.0 = (next.0 + 1) % paths.len();
            next.0
        }
        None => {
            let start = user.weighted_users_index % paths.len();
            user.set_session_data(Next(start));
            start
        }
    };
    let goose = user.get(&paths[i]).await?;
    if let Ok(response) = goose.response {
        drop(response.bytes().await);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), GooseError> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let shared = match args.iter().position(|a| a == "--shared-client") {
        Some(at) => {
            args.remove(at);
            true
        }
        None => false,
    };
    let mut paths = Vec::new();
    while let Some(at) = args
        .iter()
        .position(|a| a == "--path" || a.starts_with("--path="))
    {
        let arg = args.remove(at);
        match arg.strip_prefix("--path=") {
            Some(p) => paths.push(p.to_string()),
            None if at < args.len() => paths.push(args.remove(at)),
            None => {
                eprintln!("error: --path needs a value");
                std::process::exit(2);
            }
        }
    }
    if paths.is_empty() {
        paths.push("/api/v1/health".to_string());
    }
    let _ = PATHS.set(paths);
    let config = match goose::config::GooseConfiguration::parse_args_default(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e:?}");
            std::process::exit(2);
        }
    };
    let mut attack = GooseAttack::initialize_with_config(config)?;
    if shared {
        attack = attack
            .set_client_builder_without_cookies(goose::client::GooseClientBuilder::new().without_cookies())?;
    }
    attack
        .register_scenario(scenario!("Plain GET").register_transaction(transaction!(get)))
        .execute()
        .await?;
    Ok(())
}
