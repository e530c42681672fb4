//! The REST API: creating, reading and updating calls with their validation, list filters and
//! limits, and the bound on stored calls.

use super::{api, bounded, new_call, sim_with};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn calls_are_created_read_updated_and_validated() {
    bounded(10, async {
        let sim = sim_with(|_| {}).await;
        let api = api(&sim);
        let (status, health) = api.get("/api/v1/health").await;
        assert_eq!((status, health), (StatusCode::OK, json!({"status": "ok"})));

        let (status, call) = api.post("/api/v1/calls", &new_call()).await;
        assert_eq!(status, StatusCode::CREATED, "{call}");
        let id = call["id"].as_str().unwrap().to_string();
        assert_eq!(id.len(), 36);
        assert_eq!(call["status"], "ringing");
        assert_eq!(call["industry"], "handwerk");
        assert_eq!(call["caller_id"], "+4915112345678");
        assert_eq!(call["metadata"], json!({"test_run": "t1", "user_id": 7}));
        assert!(call["created_at"].as_str().unwrap().ends_with('Z'));

        let (status, got) = api.get(&format!("/api/v1/calls/{id}")).await;
        assert_eq!((status, &got), (StatusCode::OK, &call));
        let (status, updated) = api
            .patch(
                &format!("/api/v1/calls/{id}"),
                &json!({"status": "completed", "duration_seconds": 93}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(updated["status"], "completed");
        assert_eq!(updated["duration_seconds"].as_f64(), Some(93.0));

        // Unknown ids, well-formed or not.
        let unknown = "00000000-0000-4000-8000-000000000000";
        assert_eq!(
            api.get(&format!("/api/v1/calls/{unknown}")).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(api.get("/api/v1/calls/nope").await.0, StatusCode::NOT_FOUND);
        let body = json!({"status": "failed"});
        assert_eq!(
            api.patch(&format!("/api/v1/calls/{unknown}"), &body).await.0,
            StatusCode::NOT_FOUND
        );
        // A bad update is 422 even for a known call.
        let (status, err) = api
            .patch(&format!("/api/v1/calls/{id}"), &json!({"status": "done"}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            err["detail"]
                .as_str()
                .unwrap()
                .starts_with("status must be one of"),
            "{err}"
        );
        let (status, _) = api
            .patch(&format!("/api/v1/calls/{id}"), &json!({"duration_seconds": -3}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

        let invalid = |change: &dyn Fn(&mut Value)| {
            let mut body = new_call();
            change(&mut body);
            body
        };
        let cases: [(Value, &str); 5] = [
            (
                invalid(&|b| b["direction"] = json!("sideways")),
                "direction must be",
            ),
            (
                invalid(&|b| drop(b.as_object_mut().unwrap().remove("caller_id"))),
                "caller_id is required",
            ),
            (
                invalid(&|b| b["callee_id"] = b["caller_id"].clone()),
                "caller_id and callee_id must differ",
            ),
            (
                invalid(&|b| b["industry"] = json!("bakery")),
                "industry must be one of",
            ),
            (
                invalid(&|b| b["caller_id"] = json!("0151 123")),
                "caller_id must be an E.164",
            ),
        ];
        for (body, reason) in &cases {
            let (status, err) = api.post("/api/v1/calls", body).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert!(
                err["detail"].as_str().unwrap().starts_with(reason),
                "{err} vs {reason}"
            );
        }
        let not_json = api
            .client
            .post(format!("{}/api/v1/calls", sim.url()))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(not_json.status(), StatusCode::UNPROCESSABLE_ENTITY);

        let stats = sim.stats();
        assert_eq!(stats["requests"]["POST /api/v1/calls"], 7);
        assert_eq!(stats["requests"]["GET /api/v1/calls/{id}"], 3);
        assert_eq!(stats["requests"]["PATCH /api/v1/calls/{id}"], 4);
        assert_eq!(stats["requests"]["GET /api/v1/health"], 1);
        assert_eq!(stats["status_codes"]["201"], 1);
        assert_eq!(stats["status_codes"]["404"], 3);
        assert_eq!(stats["status_codes"]["422"], 8);
        assert_eq!(
            stats["validation_errors"]["caller_id and callee_id must differ"],
            1
        );
        assert_eq!(stats["validation_errors"]["body must be valid JSON"], 1);
        assert_eq!(stats["calls_stored"], 1);
        // No fault was asked for, so none was injected.
        assert_eq!(
            stats["faults"],
            json!({
                "stalled": 0,
                "stalls_cut_at_once": 0,
                "garbage": {"not-json": 0, "wrong-type": 0, "truncated": 0, "huge": 0},
                "ws_garbage": 0,
                "ws_oversized": 0,
                "ai_muted": 0,
            })
        );
        // The stats endpoint serves the same counters and doesn't count itself.
        let (_, served) = api.get("/_sim/stats").await;
        assert_eq!(served["requests"], stats["requests"]);
        assert_eq!(served["status_codes"], stats["status_codes"]);
        assert_eq!(served["faults"], stats["faults"]);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn list_filters_and_limits() {
    bounded(10, async {
        let sim = sim_with(|_| {}).await;
        let api = api(&sim);
        let industries = ["gesundheit", "handwerk", "gastro", "freie_berufe"];
        let mut ids = Vec::new();
        for i in 0..60 {
            let mut body = new_call();
            body["industry"] = json!(industries[i % 4]);
            ids.push(api.post("/api/v1/calls", &body).await.1["id"].clone());
        }
        for id in &ids[..5] {
            let path = format!("/api/v1/calls/{}", id.as_str().unwrap());
            api.patch(&path, &json!({"status": "failed"})).await;
        }

        let (status, all) = api.get("/api/v1/calls").await;
        assert_eq!(status, StatusCode::OK);
        let all = all.as_array().unwrap();
        assert_eq!(all.len(), 50, "default limit");
        assert_eq!(all[0]["id"], ids[59], "newest first");

        let (_, gastro) = api.get("/api/v1/calls?industry=gastro&limit=100").await;
        let gastro = gastro.as_array().unwrap();
        assert_eq!(gastro.len(), 15);
        assert!(gastro.iter().all(|c| c["industry"] == "gastro"));

        let (_, failed) = api.get("/api/v1/calls?status=failed").await;
        assert_eq!(failed.as_array().unwrap().len(), 5);
        let (_, both) = api.get("/api/v1/calls?status=failed&industry=gesundheit").await;
        assert_eq!(both.as_array().unwrap().len(), 2); // calls 0 and 4
        let (_, ten) = api.get("/api/v1/calls?limit=10").await;
        assert_eq!(ten.as_array().unwrap().len(), 10);

        for bad in [
            "limit=0",
            "limit=101",
            "limit=ten",
            "industry=bakery",
            "status=lost",
        ] {
            let (status, err) = api.get(&format!("/api/v1/calls?{bad}")).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {err}");
        }
        let stats = sim.stats();
        assert_eq!(stats["list_filters"]["industry"], 2);
        assert_eq!(stats["list_filters"]["status"], 2);
        assert_eq!(stats["list_filters"]["limit"], 2);
        assert_eq!(
            stats["validation_errors"]["limit must be an integer from 1 to 100"],
            3
        );
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn old_calls_are_evicted_beyond_the_bound() {
    bounded(10, async {
        let sim = sim_with(|o| o.max_calls = 16).await;
        let api = api(&sim);
        let mut ids = Vec::new();
        for _ in 0..200 {
            ids.push(api.post("/api/v1/calls", &new_call()).await.1["id"].clone());
        }
        assert_eq!(sim.stats()["calls_stored"], 16);
        assert_eq!(sim.stats()["calls_created"], 200);
        let newest = format!("/api/v1/calls/{}", ids[199].as_str().unwrap());
        assert_eq!(api.get(&newest).await.0, StatusCode::OK);
        let mut missing = 0;
        for id in &ids[..100] {
            let path = format!("/api/v1/calls/{}", id.as_str().unwrap());
            missing += (api.get(&path).await.0 == StatusCode::NOT_FOUND) as usize;
        }
        assert!(missing >= 95, "{missing} of the oldest 100 evicted");
        sim.shutdown().await;
    })
    .await;
}
