//! An account's history (`GET /v1/accounts/{id}/events`): newest first, bounded, shaped as the
//! contract says, readable only with the `login` purpose. The Redis history is written here
//! through the store the daemon reads (the flows that write events have their own tests).

use otpgate::store::events::{MAX_EVENTS, RETENTION_MS};
use otpgate::store::{AccountEvent, EventKind, EventStore};

use crate::util::*;

async fn redis_store(d: &TestDaemon) -> otpgate::store::redis::RedisStore {
    otpgate::store::redis::RedisStore::connect(&redis_url(), &[], &d.config.store.key_prefix)
        .await
        .expect("redis store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_is_newest_first_bounded_and_shaped() {
    let d = TestDaemon::start(Backend::Redis).await;
    let store = redis_store(&d).await;
    let now = d.clock.now_ms();
    // One event older than the retention, then 1,005 recent ones.
    store
        .append(
            "acc-1",
            &AccountEvent::new(EventKind::PhoneAdded, "platform", now - RETENTION_MS - 1),
        )
        .await
        .expect("append");
    for i in 0..1005 {
        let e = AccountEvent::new(EventKind::VerificationSent, "platform", now - 10_000 + i)
            .purpose("login")
            .phone_masked("+853****3456".into())
            .ip(Some("203.0.113.7"));
        store.append("acc-1", &e).await.expect("append");
    }
    let (s, body) = d.get(TOKEN_A, "/v1/accounts/acc-1/events?limit=1000").await;
    assert_eq!(s, 200, "{body}");
    let events = body["events"].as_array().expect("events");
    assert_eq!(events.len(), MAX_EVENTS, "at most 1,000 kept");
    let first = &events[0];
    assert_eq!(first["type"], "verification_sent");
    assert_eq!(first["purpose"], "login");
    assert_eq!(first["phone_masked"], "+853****3456");
    assert_eq!(first["ip"], "203.0.113.7");
    assert_eq!(first["client"], "platform");
    assert!(first["at"].as_str().expect("at").ends_with('Z'));
    // Newest first.
    let ats: Vec<&str> = events
        .iter()
        .map(|e| e["at"].as_str().unwrap_or(""))
        .collect();
    let mut sorted = ats.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ats, sorted);
    // Default limit 50; another account is empty.
    let (_, body) = d.get(TOKEN_A, "/v1/accounts/acc-1/events").await;
    assert_eq!(body["events"].as_array().map(Vec::len), Some(50));
    let (s, body) = d.get(TOKEN_A, "/v1/accounts/acc-2/events").await;
    assert_eq!((s, body["events"].as_array().map(Vec::len)), (200, Some(0)));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_events_are_not_shown() {
    let d = TestDaemon::start(Backend::Redis).await;
    let store = redis_store(&d).await;
    let now = d.clock.now_ms();
    store
        .append(
            "acc-old",
            &AccountEvent::new(EventKind::PhoneAdded, "platform", now - RETENTION_MS - 1),
        )
        .await
        .expect("append");
    let (_, body) = d.get(TOKEN_A, "/v1/accounts/acc-old/events").await;
    assert_eq!(body["events"].as_array().map(Vec::len), Some(0));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_history_needs_login_and_a_sane_limit() {
    let d = TestDaemon::start(Backend::Memory).await;
    let (s, body) = d.get(TOKEN_B, "/v1/accounts/acc-1/events").await;
    assert_eq!(
        (s, &body["error"]["code"]),
        (403, &serde_json::json!("forbidden"))
    );
    let (s, _) = d.get("", "/v1/accounts/acc-1/events").await;
    assert_eq!(s, 401);
    for bad in ["0", "1001", "x", "-1"] {
        let (s, body) = d
            .get(TOKEN_A, &format!("/v1/accounts/acc-1/events?limit={bad}"))
            .await;
        assert_eq!(
            (s, &body["error"]["field"]),
            (400, &serde_json::json!("limit")),
            "{bad}"
        );
    }
    let (s, body) = d.get(TOKEN_A, "/v1/accounts/acc-1/events?limit=10").await;
    assert_eq!((s, body["events"].as_array().map(Vec::len)), (200, Some(0)));
    d.stop().await;
}
