//! Ownership of durable outbox entries, checked in Redis itself (issue 9 item 1):
//! - a consumer whose entry was taken over by another releases nothing (the new owner sends it);
//! - a settled entry stays pending, touched by its consumer's heartbeat, until the delivery
//!   tracker recorded the outcome; only then is it acknowledged;
//! - an entry taken over from a silent consumer whose message was already submitted (recorded,
//!   the acknowledgement lost) is not sent again.
//!
//! Real Redis; the outbox API as the sessions and the tracker use it.

use std::sync::Arc;
use std::time::Duration;

use otpgate::clock::Clock;
use otpgate::config::Config;
use otpgate::outbox::redis::RedisOutbox;
use otpgate::outbox::{Body, Consumer, Job, Outbox, Priority, Routing};
use otpgate::phone::Phone;
use otpgate::store::keys::Keys;

use crate::util::*;

struct Fixture {
    outbox: Outbox,
    routing: Arc<Routing>,
    keys: Keys,
    stream: String,
    conn: redis::aio::MultiplexedConnection,
}

async fn fixture() -> Fixture {
    let prefix = test_prefix();
    let config = Config::from_toml(
        &config_toml(Backend::Redis, "127.0.0.1:9", ""),
        std::path::Path::new("t.toml"),
    )
    .unwrap();
    let status = otpgate::smpp::SmscStatus::new("sim");
    let routing = Arc::new(Routing::new(&config.smpp.smsc, &[status]));
    let outbox = Outbox::Redis(
        RedisOutbox::new(&redis_url(), &prefix, &[String::new()], Clock::system()).unwrap(),
    );
    let keys = Keys::new(&prefix);
    let stream = keys.outbox_stream("", Priority::Notification);
    let conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    Fixture {
        outbox,
        routing,
        keys,
        stream,
        conn,
    }
}

impl Fixture {
    /// The consumer of bind `bind` of SMSC "sim", on the default route.
    fn consumer(&self, bind: u32) -> Consumer {
        self.outbox
            .consumer(&[String::new()], "sim", bind, self.routing.clone(), 4)
    }
}

/// The next job of `c`; fails (saying `what`) when none comes within 5 s.
async fn next_job(c: &mut Consumer, what: &str) -> Job {
    tokio::time::timeout(Duration::from_secs(5), c.next())
        .await
        .expect(what)
}

fn job(text: &str) -> Job {
    let tag = otpgate::ids::random_tag();
    Job::new(
        otpgate::ids::new_id("msg", &tag),
        Phone::from_e164_unchecked("+85366120071".into()),
        Body::Text { text: text.into() },
        Clock::system().now_ms() + 600_000,
        Priority::Notification,
        String::new(),
    )
}

/// (entry id, owning consumer, idle ms) of every pending entry of `stream`.
async fn pending(f: &mut Fixture) -> Vec<(String, String, u64)> {
    let v: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(&f.stream)
        .arg("otpgate")
        .arg("-")
        .arg("+")
        .arg(100)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    v.into_iter()
        .map(|(id, c, idle, _)| (id, c, idle))
        .collect()
}

async fn xlen(f: &mut Fixture) -> usize {
    redis::cmd("XLEN")
        .arg(&f.stream)
        .query_async(&mut f.conn)
        .await
        .unwrap()
}

/// Makes `id` pending to `consumer`, idle for `idle_ms`.
async fn make_idle(f: &mut Fixture, consumer: &str, id: &str, idle_ms: u64) {
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&f.stream)
        .arg("otpgate")
        .arg(consumer)
        .arg(0)
        .arg(id)
        .arg("IDLE")
        .arg(idle_ms)
        .arg("JUSTID")
        .query_async(&mut f.conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_of_an_entry_taken_over_queues_nothing() {
    let mut f = fixture().await;
    f.outbox.push(job("taken over")).await.unwrap();
    let mut a = f.consumer(0);
    let got = next_job(&mut a, "a job").await;
    let p = pending(&mut f).await;
    assert_eq!(p.len(), 1, "read, pending to the consumer: {p:?}");
    let id = p[0].0.clone();
    // Another consumer takes it over (as after CLAIM_IDLE of silence); fresh, so that no claim
    // takes it back meanwhile.
    make_idle(&mut f, "intruder", &id, 0).await;
    a.release(got);
    f.outbox.flush(Duration::from_secs(5)).await;
    assert_eq!(xlen(&mut f).await, 1, "no second entry was queued");
    let p = pending(&mut f).await;
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        (p[0].0.as_str(), p[0].1.as_str()),
        (id.as_str(), "intruder"),
        "the new owner still holds it"
    );
    // A release by the owner does go back (control).
    f.outbox.push(job("released")).await.unwrap();
    let got = next_job(&mut a, "a job").await;
    a.release(got);
    f.outbox.flush(Duration::from_secs(5)).await;
    let again = next_job(&mut a, "the released job comes back").await;
    assert_eq!(
        again.body,
        Body::Text {
            text: "released".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_entry_stays_pending_and_touched_until_its_outcome_is_recorded() {
    let mut f = fixture().await;
    f.outbox.push(job("settled")).await.unwrap();
    let mut a = f.consumer(0);
    let got = next_job(&mut a, "a job").await;
    a.handed(&got);
    f.outbox.flush(Duration::from_secs(5)).await;
    let p = pending(&mut f).await;
    assert_eq!(
        p.len(),
        1,
        "not acknowledged before the tracker recorded it: {p:?}"
    );
    let (id, owner) = (p[0].0.clone(), p[0].1.clone());
    // Still the consumer's: touched (every 3 s, once idle 1.5 s) before anyone may claim it.
    // Idle 5 s (under CLAIM_IDLE, so no claim resets it): the touch brings it back under 4 s.
    // (Idle for 1.5 s first, so the next beat, within 3 s, touches it; the wait ends before the
    // idle time could reach CLAIM_IDLE, when a claim would reset it too.)
    tokio::time::sleep(Duration::from_millis(1600)).await;
    make_idle(&mut f, &owner, &id, 5_000).await;
    let deadline = std::time::Instant::now() + Duration::from_millis(4_500);
    loop {
        let p = pending(&mut f).await;
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].1, owner, "still its consumer's");
        if p[0].2 < 4_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the handed entry was never touched: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Recorded: acknowledged and deleted.
    f.outbox.settled(got.receipt.as_deref().expect("an entry"));
    f.outbox.flush(Duration::from_secs(5)).await;
    assert!(pending(&mut f).await.is_empty());
    assert_eq!(xlen(&mut f).await, 0);
}

/// A silent consumer's entry, its message record set to `status`: does another consumer send it?
async fn taken_over_with_status(status: &str) -> Option<Job> {
    let mut f = fixture().await;
    let j = job(&format!("status {status}"));
    let msg_key = f.keys.message(&j.message_id).unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&msg_key)
        .arg("s")
        .arg(status)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    f.outbox.push(j).await.unwrap();
    let mut a = f.consumer(0);
    let _got = next_job(&mut a, "a job").await;
    let p = pending(&mut f).await;
    let (id, owner) = (p[0].0.clone(), p[0].1.clone());
    // The consumer goes silent (its process stalled) holding the message.
    drop(a);
    make_idle(&mut f, &owner, &id, 60_000).await;
    let mut b = f.consumer(1);
    // B's heartbeat (every 3 s) claims it; within two beats it was handed out or settled.
    let got = tokio::time::timeout(Duration::from_secs(8), b.next())
        .await
        .ok();
    if got.is_none() {
        f.outbox.flush(Duration::from_secs(5)).await;
        assert_eq!(xlen(&mut f).await, 0, "not sent, and gone from the stream");
    }
    let _: () = redis::cmd("DEL")
        .arg(&msg_key)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_taken_over_is_not_sent_again_when_its_message_was_submitted() {
    assert!(
        taken_over_with_status("submitted").await.is_none(),
        "a submitted message must not be sent again"
    );
    assert!(
        taken_over_with_status("queued").await.is_some(),
        "a message never submitted is sent by the new owner"
    );
}
