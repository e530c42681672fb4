//! The Twilio webhooks: status callbacks validated and counted, and the voice webhook answering
//! TwiML that connects the call to the media endpoint.

use super::{api, bounded, sid, sim_with, status_form};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn webhooks_validate_and_answer_twiml() {
    bounded(10, async {
        let sim = sim_with(|_| {}).await;
        let api = api(&sim);
        for status in ["ringing", "ringing", "completed", "no-answer"] {
            let r = api.form("/webhooks/twilio/status", &status_form(status)).await;
            assert_eq!(r.status(), StatusCode::OK);
        }
        let mut bad = status_form("ringing");
        bad[0].1 = "CA123".into();
        let r = api.form("/webhooks/twilio/status", &bad).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["detail"], "CallSid must be CA followed by 32 hex digits");
        let r = api
            .form("/webhooks/twilio/status", &status_form("exploded"))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let mut bad = status_form("ringing");
        bad[1].1 = sid("CA", 2);
        assert_eq!(
            api.form("/webhooks/twilio/status", &bad).await.status(),
            StatusCode::BAD_REQUEST
        );

        let voice = [
            ("CallSid", sid("CA", 9)),
            ("AccountSid", sid("AC", 2)),
            ("From", "+4915112345678".into()),
            ("To", "+4915187654321".into()),
            ("Direction", "inbound".into()),
        ];
        let r = api.form("/webhooks/twilio/voice", &voice).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "application/xml");
        let twiml = r.text().await.unwrap();
        let url = format!("ws://{}/webhooks/twilio/media/{}", sim.addr(), sid("CA", 9));
        assert!(
            twiml.contains(&format!(
                r#"<Response><Connect><Stream url="{url}"/></Connect></Response>"#
            )),
            "{twiml}"
        );

        let stats = sim.stats();
        assert_eq!(stats["webhooks"]["status"], 4);
        assert_eq!(stats["webhooks"]["voice"], 1);
        assert_eq!(stats["webhooks"]["call_status"]["ringing"], 2);
        assert_eq!(stats["webhooks"]["call_status"]["no-answer"], 1);
        assert_eq!(
            stats["validation_errors"]["CallStatus is not a Twilio call status"],
            1
        );
        assert_eq!(stats["status_codes"]["400"], 3);
        sim.shutdown().await;
    })
    .await;
}
