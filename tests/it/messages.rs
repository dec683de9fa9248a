//! Notification SMS (§3.6) and message visibility, against both stores: what the SMSC receives,
//! status and timestamps, who may read a message, code SMS before notifications.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_stores;
use crate::util::*;

async fn wait_status(d: &TestDaemon, token: &str, id: &str, want: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..250 {
        let (s, body) = d.get(token, &format!("/v1/messages/{id}")).await;
        assert_eq!(s, 200, "{body}");
        if body["status"] == want {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("message {id} never {want}: {last}");
}

both_stores! {
    async fn notification_is_delivered_and_reported(b: Backend) {
        let d = TestDaemon::start(b).await;
        let mut rx = d.sim.subscribe();
        let text = "Your appointment is confirmed: 2026-12-01 10:30, counter {3}.";
        let (s, body, _) = d.post(TOKEN_A, "/v1/messages", json!({"to": "+85366123456", "text": text})).await;
        assert_eq!(s, 202, "{body}");
        assert_eq!(body["status"], "queued");
        assert_eq!(body["encoding"], "gsm7");
        assert_eq!(body["parts"], 1);
        let id = body["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("msg_"));
        let m = next_message(&mut rx).await;
        assert_eq!(m.text.as_deref(), Some(text));
        assert_eq!(m.data_coding, 0);
        assert_eq!(m.destination_addr, "85366123456");
        let v = wait_status(&d, TOKEN_A, &id, "delivered").await;
        assert!(v["submitted_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
        assert!(v["delivered_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
        assert_eq!(v["error"], Value::Null);
        d.stop().await;
    }

    async fn long_unicode_notification_counts_its_parts(b: Backend) {
        let d = TestDaemon::start(b).await;
        let mut rx = d.sim.subscribe();
        let text = "您的申請（編號 A2026-000123）已獲批准。請於十四日內登入一戶通完成帳戶啟動，逾期申請將被取消。\n如有疑問，請於辦公時間致電熱線查詢，或親臨各服務中心辦理。多謝您的耐心與合作，祝您生活愉快！🙂";
        let (s, body, _) = d.post(TOKEN_A, "/v1/messages", json!({"to": "+85366123456", "text": text})).await;
        assert_eq!(s, 202, "{body}");
        assert_eq!(body["encoding"], "ucs2");
        let expected_parts = otpgate::sms::split(text).parts.len();
        assert!(expected_parts >= 2);
        assert_eq!(body["parts"], expected_parts);
        let m = next_message(&mut rx).await;
        assert_eq!(m.text.as_deref(), Some(text));
        assert_eq!(m.parts, expected_parts);
        d.stop().await;
    }

    async fn message_visibility_and_validation(b: Backend) {
        let d = TestDaemon::start(b).await;
        // client-b lacks `notification`.
        let (s, body, _) = d.post(TOKEN_B, "/v1/messages", json!({"to": "+85366123456", "text": "hi"})).await;
        assert_eq!((s, &body["error"]["code"]), (403, &json!("forbidden")));
        let (s, body, _) = d.post(TOKEN_A, "/v1/messages", json!({"to": "+85366123456", "text": "hi"})).await;
        assert_eq!(s, 202);
        let id = body["id"].as_str().unwrap();
        let (s, _) = d.get(TOKEN_B, &format!("/v1/messages/{id}")).await;
        assert_eq!(s, 404, "another client's message");
        let (s, _) = d.get(TOKEN_A, "/v1/messages/msg_nope").await;
        assert_eq!(s, 404);
        // A code SMS is visible to the client that created the verification, without `notification`.
        let (s, v, _) = d.post(TOKEN_B, "/v1/verifications", json!({"purpose": "transaction", "phone": "+85366123457"})).await;
        assert_eq!(s, 201);
        let msg = v["message_id"].as_str().unwrap();
        let (s, m) = d.get(TOKEN_B, &format!("/v1/messages/{msg}")).await;
        assert_eq!(s, 200, "{m}");
        assert_eq!(m["parts"], 1);
        let (s, _) = d.get(TOKEN_A, &format!("/v1/messages/{msg}")).await;
        assert_eq!(s, 404);

        let cases = [
            (json!({"text": "hi"}), 400, "invalid_request", Some("to")),
            (json!({"to": "+85366123456", "account_id": "a", "text": "hi"}), 400, "invalid_request", Some("to")),
            (json!({"to": "+85366123456", "text": ""}), 400, "invalid_request", Some("text")),
            (json!({"to": "+85366123456", "text": "x".repeat(1001)}), 400, "invalid_request", Some("text")),
            (json!({"to": "+85366123456"}), 400, "invalid_request", Some("text")),
            (json!({"to": "+85366123456", "text": "hi", "priority": 1}), 400, "invalid_request", Some("priority")),
            (json!({"to": "+1 415 555 0123", "text": "hi"}), 422, "country_not_allowed", None),
            (json!({"to": "abc", "text": "hi"}), 400, "invalid_phone", None),
            (json!({"account_id": "acc-1", "text": "hi"}), 422, "phone_not_registered", None),
        ];
        for (body, status, code, field) in cases {
            let (s, resp, _) = d.post(TOKEN_A, "/v1/messages", body.clone()).await;
            assert_eq!((s, resp["error"]["code"].as_str()), (status, Some(code)), "{body} → {resp}");
            if let Some(f) = field {
                assert_eq!(resp["error"]["field"], f, "{body} → {resp}");
            }
        }
        d.stop().await;
    }

    async fn code_sms_go_before_notifications(b: Backend) {
        // The SMSC is down while 30 notifications and then one code are queued.
        let parked = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = parked.local_addr().unwrap();
        drop(parked);
        let placeholder = start_sim().await;
        let sim_addr = addr.to_string();
        let d = TestDaemon::start_unready(b, placeholder, &sim_addr).await;
        for i in 0..30 {
            let (s, _, _) = d.post(TOKEN_A, "/v1/messages", json!({"to": format!("+853661000{i:02}"), "text": format!("notice {i}")})).await;
            assert_eq!(s, 202);
        }
        let (s, _, _) = d.post(TOKEN_A, "/v1/verifications", json!({"purpose": "password_reset", "account_id": "acc-p", "phone": "+85366199999"})).await;
        assert_eq!(s, 201);
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let sim = otpgate::smpp::sim::start(listener, Default::default()).unwrap();
        let mut rx = sim.subscribe();
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("delivery after the SMSC is up").unwrap();
        assert_eq!(first.destination_addr, "85366199999", "the code SMS goes first");
        let mut seen = 1;
        while seen < 31 {
            tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("all delivered").unwrap();
            seen += 1;
        }
        d.stop().await;
    }
}
