//! Stale code SMS (contract §6): a backlog builds while the SMSC is down; verifications that
//! stopped being pending meanwhile (canceled by a newer one, locked by wrong codes) do not
//! get their SMS once the SMSC is back — their messages read `failed` / `not_pending` — while
//! the still pending one is sent.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::both_stores;
use crate::util::*;

async fn create(d: &TestDaemon, account: &str, phone: &str) -> Value {
    let (s, v, _) = d
        .post(
            TOKEN_A,
            "/v1/verifications",
            json!({"purpose": "password_reset", "account_id": account, "phone": phone}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v
}

both_stores! {
    async fn code_sms_of_verifications_no_longer_pending_are_not_sent(b: Backend) {
        let parked = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = parked.local_addr().unwrap();
        drop(parked);
        let d = TestDaemon::start_unready(b, start_sim().await, &addr.to_string()).await;
        // Canceled: a newer verification for the same account replaces it.
        let canceled = create(&d, "acc-stale-1", "+85366180001").await;
        let pending = create(&d, "acc-stale-1", "+85366180002").await;
        // Locked: every attempt used with wrong codes.
        let locked = create(&d, "acc-stale-2", "+85366180003").await;
        let id = locked["id"].as_str().unwrap();
        for _ in 0..5 {
            let (s, body, _) = d
                .post(TOKEN_A, &format!("/v1/verifications/{id}/check"), json!({"code": "000000"}))
                .await;
            assert!(s == 422 || s == 423, "{s} {body}");
        }
        let (_, v) = d.get(TOKEN_A, &format!("/v1/verifications/{id}")).await;
        assert_eq!(v["status"], "locked", "{v}");
        let (_, v) = d
            .get(TOKEN_A, &format!("/v1/verifications/{}", canceled["id"].as_str().unwrap()))
            .await;
        assert_eq!(v["status"], "canceled", "{v}");

        // The SMSC comes back.
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let sim = otpgate::smpp::sim::start(listener, Default::default()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let stale_ids = [&canceled, &locked].map(|v| v["message_id"].as_str().unwrap().to_owned());
        loop {
            let mut done = sim
                .received()
                .iter()
                .any(|m| m.destination_addr == "85366180002");
            for mid in &stale_ids {
                let (_, m) = d.get(TOKEN_A, &format!("/v1/messages/{mid}")).await;
                done &= m["status"] == "failed" && m["error"] == "not_pending";
            }
            if done {
                break;
            }
            assert!(Instant::now() < deadline, "stale SMS not settled as not_pending");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // A little longer: nothing of the stale ones goes out.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let to: Vec<String> = sim.received().iter().map(|m| m.destination_addr.clone()).collect();
        assert_eq!(to, vec!["85366180002".to_owned()], "only the pending one is sent");
        let (_, m) = d
            .get(TOKEN_A, &format!("/v1/messages/{}", pending["message_id"].as_str().unwrap()))
            .await;
        assert!(m["status"] == "submitted" || m["status"] == "delivered", "{m}");
        d.stop().await;
    }
}
