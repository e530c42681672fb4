//! The handshake: the manager's checks of a worker's hello (the token, then the protocol and
//! crate version, then the scenario set), and the scenario set this build registers, which a
//! worker sends in its hello and the manager compares with its own.

use super::{Hello, PROTOCOL};
use crate::config::plan::RunPlan;
use anyhow::{anyhow, Result};
use std::sync::Arc;

/// The manager's checks of a worker's first message, `{"hello": {...}}`, in order: the token (before anything is said about
/// this side), then the protocol and crate version, then the scenario set. `Err` is the reason
/// both sides print.
pub fn check_hello(
    first: &serde_json::Value,
    token: Option<&str>,
    scenarios: &[String],
) -> Result<Hello, String> {
    let Some(hello) = first.get("hello") else {
        return Err("the first message was not a worker's hello".into());
    };
    let given = hello.get("token").and_then(|t| t.as_str());
    match (token, given) {
        (None, None) => {}
        (Some(_), None) => {
            return Err(
                "this gaggle needs a token: give the worker the manager's --gaggle-token \
                        (or PHONE_AGENT_LOAD_GAGGLE_TOKEN)"
                    .into(),
            )
        }
        (Some(want), Some(got)) if !same_secret(want, got) => return Err("wrong gaggle token".into()),
        (None, Some(_)) => {
            return Err(
                "the worker sent a gaggle token but the manager has none: give both the same \
                        --gaggle-token"
                    .into(),
            )
        }
        _ => {}
    }
    let ours = env!("CARGO_PKG_VERSION");
    let theirs = hello
        .get("version")
        .and_then(|v| v.as_str())
        .unwrap_or("an unknown version");
    let protocol = hello.get("protocol").and_then(|p| p.as_u64());
    if theirs != ours || protocol != Some(PROTOCOL as u64) {
        return Err(format!(
            "crate version mismatch: the worker runs phone-agent-load {theirs}, the manager {ours}; \
             run the same version everywhere"
        ));
    }
    let hello: Hello = serde_json::from_value(hello.clone())
        .map_err(|e| format!("not a phone-agent-load worker's hello: {e}"))?;
    if hello.scenarios != scenarios {
        let missing: Vec<&String> = scenarios
            .iter()
            .filter(|s| !hello.scenarios.contains(s))
            .collect();
        let extra: Vec<&String> = hello
            .scenarios
            .iter()
            .filter(|s| !scenarios.contains(s))
            .collect();
        return Err(format!(
            "scenario set mismatch: the worker lacks {missing:?} and has {extra:?} beyond the manager's; \
             build both from the same source"
        ));
    }
    Ok(hello)
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The scenarios this build registers (in both AI modes), each with its transactions:
/// "name: t1, t2, ...".
pub fn scenario_set() -> Result<Vec<String>> {
    use crate::config::plan::AiMode;
    use crate::scenarios::{ai_call, api, media_stream, webhooks, Shared};
    let builders = [
        api::api_user,
        webhooks::webhook_user,
        api::high_load_user,
        media_stream::media_stream_call,
        ai_call::ai_call,
    ];
    // Something to say, so the stream-mode AI call builds.
    let utterance = crate::config::utterances::Utterance {
        text: "Ja.".into(),
        mulaw: vec![0xff; 160],
    };
    let mut set = Vec::new();
    for mode in [AiMode::Stream, AiMode::Mock] {
        let profile = crate::config::profile::Profile::load("quick")?;
        let shared = Arc::new(Shared {
            plan: RunPlan::new(profile, &Default::default(), mode, false)?,
            measurements: Default::default(),
            utterances: Arc::new(vec![utterance.clone()]),
            unknown_events: Default::default(),
        });
        for build in builders {
            let s = build(&shared).map_err(|e| anyhow!("cannot build the scenarios: {e:?}"))?;
            let names: Vec<String> = s
                .transactions
                .iter()
                .map(|t| match &t.name {
                    goose::goose::TransactionName::InheritNameByRequests(n)
                    | goose::goose::TransactionName::TransactionOnly(n) => n.to_string(),
                })
                .collect();
            let entry = format!("{}: {}", s.name, names.join(", "));
            if !set.contains(&entry) {
                set.push(entry);
            }
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gaggle::protocol::ToManager;

    #[test]
    fn hello_checks_token_then_version_then_scenarios() {
        let set = scenario_set().unwrap();
        assert!(set.len() >= 5, "{set:?}");
        let hello = Hello::new(Some("t".into())).unwrap();
        let value = serde_json::to_value(ToManager::Hello(hello.clone())).unwrap();
        assert_eq!(check_hello(&value, Some("t"), &set), Ok(hello.clone()));
        assert_eq!(
            check_hello(&value, Some("u"), &set).unwrap_err(),
            "wrong gaggle token"
        );
        assert!(check_hello(&value, None, &set)
            .unwrap_err()
            .contains("manager has none"));
        let mut other = value.clone();
        other["hello"]["token"] = serde_json::Value::Null;
        assert!(check_hello(&other, Some("t"), &set)
            .unwrap_err()
            .contains("needs a token"));
        let mut other = value.clone();
        other["hello"]["version"] = "9.9.9".into();
        let err = check_hello(&other, Some("t"), &set).unwrap_err();
        assert!(
            err.contains("9.9.9") && err.contains(env!("CARGO_PKG_VERSION")),
            "{err}"
        );
        let err = check_hello(&value, Some("t"), &set[1..]).unwrap_err();
        assert!(err.contains("scenario set mismatch"), "{err}");
        let err = check_hello(&serde_json::json!({"ready": null}), None, &set).unwrap_err();
        assert!(err.contains("not a worker's hello"), "{err}");
    }
}
