//! The Redis outbox's background tasks: a reader that panics is restarted and its consumer keeps
//! delivering; the expiry sweeper expires every kind of job this version reads (an activation
//! SMS waiting in the delay set); entries of a newer version are forgotten once settled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use otpgate::clock::Clock;
use otpgate::outbox::Priority;
use otpgate::outbox::redis::RedisOutbox;
use otpgate::purpose::Purpose;
use otpgate::store::keys::Keys;
use serde_json::json;

use crate::util::*;

async fn redis_conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Waits (10 s at most) until `ok` holds.
async fn eventually(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_panics_is_restarted_and_the_consumer_keeps_delivering() {
    let sim = start_sim().await;
    let d = TestDaemon::start_with(Backend::Redis, sim.clone(), "", |_| {}).await;
    let mut rx = sim.subscribe();
    let send = async |text: &str| {
        let (s, body, _) = d
            .post(
                TOKEN_A,
                "/v1/messages",
                json!({"to": "+85366190001", "text": text}),
            )
            .await;
        assert_eq!(s, 202, "{body}");
    };
    send("before").await;
    assert_eq!(next_message(&mut rx).await.text.as_deref(), Some("before"));

    otpgate::outbox::redis::panic_next_reader_of(&d.config.store.key_prefix);
    eventually(
        "the reader panicked and its restart was counted",
        async || {
            d.metrics().await.lines().any(|l| {
                l.starts_with("otpgate_task_restarts_total{")
                    && l.contains("task=\"outbox_reader\"")
                    && l.contains("smsc=\"sim\"")
            })
        },
    )
    .await;
    // Read by the restarted reader: without it nothing new would leave the stream.
    for i in 0..5 {
        send(&format!("after{i}")).await;
    }
    let mut got: Vec<String> = Vec::new();
    for _ in 0..5 {
        got.push(next_message(&mut rx).await.text.unwrap_or_default());
    }
    got.sort();
    assert_eq!(got, ["after0", "after1", "after2", "after3", "after4"]);
    d.stop().await;
}

/// An activation SMS (its own job kind) refused by the route's only SMSC with a temporary error
/// waits for its retry in the delay set; the SMSC then goes away. Once its validity ended, the
/// sweeper removes it from Redis and its message reads `expired`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_sms_waiting_for_a_retry_expires() {
    let sim = start_sim().await;
    let d = TestDaemon::start_with(Backend::Redis, sim.clone(), "", |c| {
        c.clients[0].purposes.push(Purpose::Activation);
    })
    .await;
    let keys = Keys::new(&d.config.store.key_prefix);
    let delay = keys.outbox_delay();
    let mut c = redis_conn().await;
    sim.set_submit_status(0x08); // ESME_RSYSERR: temporary, retried after a backoff
    let (s, v, _) = d
        .post(
            TOKEN_A,
            "/v1/activations",
            json!({"account_id": "ent-sweep", "application_number": "A2026-000777",
                   "phone": "+85366190002", "activation_url": "https://e.example/a", "locale": "en"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let message_id = v["message_id"].as_str().unwrap().to_owned();
    eventually("the refused SMS waits in the delay set", async || {
        let n: usize = redis::cmd("ZCARD")
            .arg(&delay)
            .query_async(&mut c)
            .await
            .unwrap();
        n == 1
    })
    .await;
    // Gone before the retry is due (1 s): no session takes it again.
    sim.shutdown();
    eventually("the SMSC is down", async || {
        d.get("", "/readyz").await.0 == 503
    })
    .await;
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&delay)
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(members.len(), 1, "still waiting for its retry");
    assert!(
        members[0].contains("\n1\nactivation\n{"),
        "the member names its version and kind"
    );

    d.clock
        .advance(d.config.activation.ttl + Duration::from_secs(60));
    eventually("the message expired", async || {
        let (_, m) = d.get(TOKEN_A, &format!("/v1/messages/{message_id}")).await;
        m["status"] == "expired"
    })
    .await;
    let waiting: usize = redis::cmd("ZCARD")
        .arg(&delay)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(waiting, 0, "removed from the delay set");
    for p in Priority::ALL {
        let n: usize = redis::cmd("XLEN")
            .arg(keys.outbox_stream("", p))
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(n, 0, "nothing left in the {p:?} stream");
    }
    d.stop().await;
}

/// Entries a newer version wrote are reported once and remembered while pending; once a newer
/// instance settled them (acknowledged and deleted) they are forgotten, so the set of reported
/// entries does not grow for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_a_newer_version_are_forgotten_once_settled() {
    require_redis().await;
    let config = otpgate::config::Config::from_toml(
        &config_toml(Backend::Redis, "127.0.0.1:9", ""),
        std::path::Path::new("test.toml"),
    )
    .unwrap();
    let prefix = config.store.key_prefix.clone();
    let outbox =
        RedisOutbox::new(&redis_url(), &prefix, &[String::new()], Clock::system()).unwrap();
    let statuses = vec![otpgate::smpp::SmscStatus::new("sim")];
    let routing = Arc::new(otpgate::outbox::Routing::new(&config.smpp.smsc, &statuses));
    let consumer = outbox.consumer(&[String::new()], "sim", 0, routing, 8);

    let stream = Keys::new(&prefix).outbox_stream("", Priority::Notification);
    let mut c = redis_conn().await;
    let job = r#"{"message_id":"msg_future","destination":"+85366120000","body":{"kind":"text","text":"from the future"},"expires_at_ms":99999999999999,"priority":"notification","route":"","attempts":0,"avoid":null,"not_before_ms":0}"#;
    let mut ids = Vec::new();
    for v in ["2", "3"] {
        let id: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("v")
            .arg(v)
            .arg("k")
            .arg("sms")
            .arg("j")
            .arg(job)
            .query_async(&mut c)
            .await
            .unwrap();
        ids.push(id);
    }
    eventually("both entries reported", async || {
        outbox.foreign_pending() == 2
    })
    .await;
    // A newer instance settles one, then the other: each is forgotten, the pending one kept.
    for (i, id) in ids.iter().enumerate() {
        let _: () = redis::pipe()
            .cmd("XACK")
            .arg(&stream)
            .arg("otpgate")
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(&stream)
            .arg(id)
            .ignore()
            .query_async(&mut c)
            .await
            .unwrap();
        eventually("the settled entry forgotten", async || {
            outbox.foreign_pending() == 1 - i
        })
        .await;
    }
    drop(consumer);
}
