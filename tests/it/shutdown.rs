//! Stopping the daemon (the shutdown `run` is given; SIGTERM in `main`): with Redis a session
//! stops taking work at once, finishes its window and unbinds, and the queue stays in Redis for
//! the next instance; with the memory store the queue is submitted within `shutdown_grace`; a
//! stopped daemon leaves no task of its own running.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use otpgate::outbox::Priority;
use otpgate::store::keys::Keys;
use serde_json::json;

use crate::util::*;

/// Posts a notification per text through `d`, the i-th to `+8536618{i:04}`.
async fn post_texts(d: &TestDaemon, texts: &[String]) {
    for (n, chunk) in texts.chunks(50).enumerate() {
        let mut batch = Vec::new();
        for (i, text) in chunk.iter().enumerate() {
            let http = d.http.clone();
            let url = format!("{}/v1/messages", d.base);
            let body = json!({"to": format!("+8536618{:04}", n * 50 + i), "text": text});
            batch.push(tokio::spawn(async move {
                let r = http
                    .post(url)
                    .bearer_auth(TOKEN_A)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            }));
        }
        for t in batch {
            assert_eq!(t.await.unwrap(), 202);
        }
    }
}

/// How often each text reached the simulator so far.
fn seen(sim: &otpgate::smpp::sim::SimHandle) -> HashMap<String, usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in sim.received() {
        *seen.entry(m.text.unwrap_or_default()).or_default() += 1;
    }
    seen
}

fn sent_twice(seen: &HashMap<String, usize>) -> Vec<(&String, &usize)> {
    seen.iter().filter(|(_, n)| **n > 1).collect()
}

/// A slow SMSC (50 submits/s, a window of 8) and 300 messages queued in Redis: stopping takes
/// nothing new from the streams — at most the window goes out after the stop — and returns
/// within the grace; every message not submitted is still in Redis, and a second daemon on the
/// same prefix sends exactly those: each message reaches the SMSC once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stop_takes_nothing_new_and_leaves_the_queue_for_the_next_instance() {
    require_redis().await;
    let sim = start_sim().await;
    let prefix = test_prefix();
    let p1 = prefix.clone();
    let a = TestDaemon::start_with(Backend::Redis, sim.clone(), "throughput = 50\n", move |c| {
        c.store.key_prefix = p1;
        c.smpp.smsc[0].window = 8;
    })
    .await;
    let grace = a.config.server.shutdown_grace;
    assert_eq!(grace, Duration::from_secs(2));
    let texts: Vec<String> = (0..300).map(|i| format!("stop{i}")).collect();
    post_texts(&a, &texts).await;
    // Under way: the session takes work.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sim.submits() < 20 {
        assert!(Instant::now() < deadline, "sending started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let before = sim.submits();
    let started = Instant::now();
    a.stop().await;
    let took = started.elapsed();
    // A correctness bound (the drain deadline), not a speed measurement.
    assert!(
        took < grace + Duration::from_secs(1),
        "stopped after {took:?}"
    );
    // The window (8) goes out, plus what the rate let through while the stop reached the
    // session; taking on from the streams for the whole grace would be ~100 more.
    let after_stop = sim.submits() - before;
    assert!(
        after_stop <= 8 + 12,
        "{after_stop} submitted after the stop"
    );

    let first = seen(&sim);
    assert!(sent_twice(&first).is_empty(), "{:?}", sent_twice(&first));
    let keys = Keys::new(&prefix);
    let mut c = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let queued: usize = redis::cmd("XLEN")
        .arg(keys.outbox_stream("", Priority::Notification))
        .query_async(&mut c)
        .await
        .unwrap();
    let delayed: usize = redis::cmd("ZCARD")
        .arg(keys.outbox_delay())
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(queued > 0, "most messages were still queued at the stop");
    assert_eq!(
        queued + delayed,
        texts.len() - first.len(),
        "every message not submitted is still in Redis (submitted: {})",
        first.len()
    );

    let p2 = prefix.clone();
    let b = TestDaemon::start_with(Backend::Redis, sim.clone(), "", move |c| {
        c.store.key_prefix = p2
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = texts
            .iter()
            .filter(|t| !seen(&sim).contains_key(*t))
            .count();
        if missing == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{missing} messages never sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A late duplicate would come with a takeover: an entry idle for CLAIM_IDLE, then a
    // heartbeat.
    tokio::time::sleep(
        otpgate::outbox::redis::CLAIM_IDLE
            + otpgate::outbox::redis::HEARTBEAT
            + Duration::from_secs(1),
    )
    .await;
    let all = seen(&sim);
    assert!(sent_twice(&all).is_empty(), "{:?}", sent_twice(&all));
    b.stop().await;
}

/// With the memory store the queue dies with the process: the sessions keep taking it during
/// the grace, so 40 messages at 50/s (under a second) all go out before the daemon returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stop_submits_the_queue_within_the_grace() {
    let sim = start_sim().await;
    let d = TestDaemon::start_with(Backend::Memory, sim.clone(), "throughput = 50\n", |c| {
        c.smpp.smsc[0].window = 8;
    })
    .await;
    let texts: Vec<String> = (0..40).map(|i| format!("drain{i}")).collect();
    post_texts(&d, &texts).await;
    d.stop().await;
    let got = seen(&sim);
    let missing: Vec<&String> = texts.iter().filter(|t| !got.contains_key(*t)).collect();
    assert!(missing.is_empty(), "not sent before the stop: {missing:?}");
    assert!(sent_twice(&got).is_empty(), "{:?}", sent_twice(&got));
}

/// Tests run many daemons in one process: once `run` returned, nothing it started may still
/// run (the memory store's sweeper looped for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_daemon_leaves_no_task_behind() {
    for backend in [Backend::Memory, Backend::Redis] {
        let sim = start_sim().await;
        let runtime = tokio::runtime::Handle::current().metrics();
        let before = runtime.num_alive_tasks();
        let d = TestDaemon::start_with(backend, sim.clone(), "", |_| {}).await;
        let mut rx = sim.subscribe();
        let (s, body, _) = d
            .post(
                TOKEN_A,
                "/v1/messages",
                json!({"to": "+85366189999", "text": "one"}),
            )
            .await;
        assert_eq!(s, 202, "{body}");
        next_message(&mut rx).await;
        d.stop().await;
        // Connections wind down after the stop.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let alive = runtime.num_alive_tasks();
            if alive <= before {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{backend:?}: {alive} tasks alive after the daemon stopped, {before} before it started"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sim.shutdown();
        sim.stopped().await;
    }
}
