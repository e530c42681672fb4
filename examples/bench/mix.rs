//! The request mixes the simulator is measured with, drawn as the scenarios draw them and
//! written as wrk scripts.

use clap::ValueEnum;
use phone_agent_load::scenarios::data;
use std::fmt::Write as _;

/// A request mix of the API user classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mix {
    /// Locust's API user: list 10, create 5, update 3, get 2, health 1.
    ApiUser,
    /// All three API user classes at their 1 : 2 : 1 weights: the API user, the webhook user
    /// (status 10, voice 5) and the high-load user (list 5, health 1).
    AllApi,
    /// List pages only (the high-load user's rapid list).
    Lists,
}

impl Mix {
    /// Its name in file names.
    pub fn name(self) -> &'static str {
        match self {
            Mix::ApiUser => "api-user",
            Mix::AllApi => "all-api",
            Mix::Lists => "lists",
        }
    }

    /// Its name in the table.
    pub fn label(self) -> &'static str {
        match self {
            Mix::ApiUser => "API user mix (48 % lists)",
            Mix::AllApi => "all API users' mix (33 % lists, 50 % webhooks)",
            Mix::Lists => "list pages only",
        }
    }

    /// A wrk script cycling through 4,096 requests drawn like the scenarios draw them.
    pub fn lua(self, ids: &[String]) -> String {
        use rand::Rng;
        let rng = &mut rand::rng();
        let mut lua = String::from("local reqs = {\n");
        let sids: Vec<(data::Sid, data::Sid)> = (0..64)
            .map(|_| (data::Sid::call(rng), data::Sid::account(rng)))
            .collect();
        for _ in 0..4096 {
            let pick = rng.random_range(0..1000u32);
            let kind = match self {
                Mix::Lists => "list",
                Mix::ApiUser => api_user_pick(pick),
                Mix::AllApi => match pick {
                    0..250 => api_user_pick(rng.random_range(0..1000)),
                    250..750 => {
                        if rng.random_range(0..15) < 10 {
                            "status"
                        } else {
                            "voice"
                        }
                    }
                    _ => {
                        if rng.random_range(0..6) < 5 {
                            "list"
                        } else {
                            "health"
                        }
                    }
                },
            };
            let id = ids
                .get(rng.random_range(0..ids.len().max(1)))
                .cloned()
                .unwrap_or_default();
            let (method, path, ctype, body) = match kind {
                "list" => ("GET", data::random_list_path(rng).to_string(), "", String::new()),
                "create" => (
                    "POST",
                    data::CALLS_PATH.to_string(),
                    "application/json",
                    data::create_call_body(rng, 1),
                ),
                "update" => (
                    "PATCH",
                    data::call_path(&id),
                    "application/json",
                    data::update_call_body(rng),
                ),
                "get" => ("GET", data::call_path(&id), "", String::new()),
                "health" => ("GET", "/api/v1/health".to_string(), "", String::new()),
                "status" | "voice" => {
                    let (call_sid, account_sid) = &sids[rng.random_range(0..sids.len())];
                    let call = data::TwilioCall {
                        call_sid,
                        account_sid,
                    };
                    let form = if kind == "status" {
                        data::status_webhook_form(rng, call)
                    } else {
                        data::voice_webhook_form(rng, call)
                    };
                    let path = format!("/webhooks/twilio/{kind}");
                    ("POST", path, "application/x-www-form-urlencoded", form)
                }
                _ => unreachable!(),
            };
            if ctype.is_empty() {
                let _ = writeln!(lua, "  wrk.format(\"{method}\", [==[{path}]==]),");
            } else {
                let _ = writeln!(
                    lua,
                    "  wrk.format(\"{method}\", [==[{path}]==], {{[\"Content-Type\"] = \"{ctype}\"}}, [==[{body}]==]),"
                );
            }
        }
        lua.push_str(
            "}\nlocal i = 0\nfunction setup(thread) end\nfunction init(args) i = math.random(#reqs) end\n\
             function request()\n  i = i % #reqs + 1\n  return reqs[i]\nend\n",
        );
        lua
    }
}

/// The API user's task for a draw in 0..1000: list 10, create 5, update 3, get 2, health 1.
fn api_user_pick(pick: u32) -> &'static str {
    match pick * 21 / 1000 {
        0..10 => "list",
        10..15 => "create",
        15..18 => "update",
        18..20 => "get",
        _ => "health",
    }
}
