//! Jobs expire wherever they wait: a code SMS and a notification queued for a route whose SMSC
//! is away become `expired` once their validity ends, instead of showing `queued` for ever.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::both_stores;
use crate::util::*;

both_stores! {
    async fn queued_jobs_of_a_route_that_is_down_expire(b: Backend) {
        // The SMSC is down for the whole test: nothing listens at its address.
        let parked = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = parked.local_addr().unwrap().to_string();
        drop(parked);
        let d = TestDaemon::start_unready(b, start_sim().await, &addr).await;
        let (s, msg, _) = d
            .post(TOKEN_A, "/v1/messages", json!({"to": "+85366170001", "text": "notice"}))
            .await;
        assert_eq!(s, 202, "{msg}");
        let msg_id = msg["id"].as_str().unwrap().to_owned();
        let (s, ver, _) = d
            .post(
                TOKEN_A,
                "/v1/verifications",
                json!({"purpose": "password_reset", "account_id": "acc-exp", "phone": "+85366170002"}),
            )
            .await;
        assert_eq!(s, 201, "{ver}");
        let ver_id = ver["id"].as_str().unwrap().to_owned();
        // Still queued a few sweeps later: nothing expired yet.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let (_, m) = d.get(TOKEN_A, &format!("/v1/messages/{msg_id}")).await;
        assert_eq!(m["status"], "queued", "{m}");
        let (_, v) = d.get(TOKEN_A, &format!("/v1/verifications/{ver_id}")).await;
        assert_eq!(v["delivery"], "queued", "{v}");
        // Past the notification's validity (24 h) and the code's (5 min).
        d.clock.advance(Duration::from_secs(25 * 3600));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, m) = d.get(TOKEN_A, &format!("/v1/messages/{msg_id}")).await;
            let (_, v) = d.get(TOKEN_A, &format!("/v1/verifications/{ver_id}")).await;
            if m["status"] == "expired" && v["delivery"] == "expired" {
                break;
            }
            assert!(Instant::now() < deadline, "not expired: {m} / {v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        d.stop().await;
    }
}
