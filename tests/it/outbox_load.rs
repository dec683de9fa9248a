//! The Redis outbox under load: a session that takes work slowly (a `throughput` cap, SMSC
//! throttling) with several consumers reading the same streams — two binds, two daemons —
//! sends every message exactly once (checked at the simulator and through
//! `GET /v1/messages/{id}`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::*;

/// Posts `texts` as notifications through `d`, the i-th to `to(i)`; returns (text, message
/// id) of each.
async fn post_all(
    d: &TestDaemon,
    texts: &[String],
    to: impl Fn(usize) -> String,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (n, chunk) in texts.chunks(50).enumerate() {
        let mut batch = Vec::new();
        for (i, text) in chunk.iter().enumerate() {
            let http = d.http.clone();
            let url = format!("{}/v1/messages", d.base);
            let body = json!({"to": to(n * 50 + i), "text": text});
            let text = text.clone();
            batch.push(tokio::spawn(async move {
                let r = http
                    .post(url)
                    .bearer_auth(TOKEN_A)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 202);
                let v: serde_json::Value = r.json().await.unwrap();
                (text, v["id"].as_str().unwrap().to_owned())
            }));
        }
        for t in batch {
            out.push(t.await.unwrap());
        }
    }
    out
}

/// Waits (up to `limit`) until every text arrived at the simulator, then a little longer for
/// late duplicates; returns how often each text arrived.
async fn arrivals(
    sim: &otpgate::smpp::sim::SimHandle,
    texts: &[String],
    limit: Duration,
) -> HashMap<String, usize> {
    let deadline = Instant::now() + limit;
    loop {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for m in sim.received() {
            *seen.entry(m.text.unwrap_or_default()).or_default() += 1;
        }
        let missing = texts.iter().filter(|t| !seen.contains_key(*t)).count();
        if missing == 0 {
            // A duplicate would come from an entry taken over after CLAIM_IDLE (10 s).
            tokio::time::sleep(Duration::from_secs(12)).await;
            let mut seen: HashMap<String, usize> = HashMap::new();
            for m in sim.received() {
                *seen.entry(m.text.unwrap_or_default()).or_default() += 1;
            }
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} messages never arrived",
            texts.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn assert_exactly_once(seen: &HashMap<String, usize>, texts: &[String]) {
    let twice: Vec<(&String, &usize)> = texts
        .iter()
        .filter_map(|t| seen.get_key_value(t).filter(|(_, n)| **n != 1))
        .collect();
    assert!(
        twice.is_empty(),
        "{} messages not sent exactly once, e.g. {:?}",
        twice.len(),
        twice.iter().take(5).collect::<Vec<_>>()
    );
}

/// Every message reads `submitted` or `delivered` through the API.
async fn assert_all_sent(ds: &[&TestDaemon], ids: &[(String, String)]) {
    for (k, chunk) in ids.chunks(50).enumerate() {
        let d = ds[k % ds.len()];
        let mut batch = Vec::new();
        for (_, id) in chunk {
            let http = d.http.clone();
            let url = format!("{}/v1/messages/{id}", d.base);
            batch.push(tokio::spawn(async move {
                let r = http.get(url).bearer_auth(TOKEN_A).send().await.unwrap();
                let v: serde_json::Value = r.json().await.unwrap();
                v["status"].as_str().unwrap_or_default().to_owned()
            }));
        }
        for (t, (_, id)) in batch.into_iter().zip(chunk) {
            let status = t.await.unwrap();
            assert!(
                status == "submitted" || status == "delivered",
                "{id}: {status}"
            );
        }
    }
}

/// Two binds capped at 10 SMS/s each, the SMSC serving four routes (four streams per
/// priority, read by one `XREADGROUP` whose COUNT is per stream): each bind's session takes
/// work far slower than its reader could read it, for longer than CLAIM_IDLE. 500 messages
/// (25 s at 20/s; fewer than the 1,000 of the other tests to keep the suite's time sane).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_slow_binds_send_every_message_exactly_once() {
    require_redis().await;
    let sim = start_sim().await;
    let d = TestDaemon::start_with(
        Backend::Redis,
        sim.clone(),
        "binds = 2\nthroughput = 10\nroutes = [\"+8536650\", \"+8536651\", \"+8536652\", \"+8536653\"]\n",
        |_| {},
    )
    .await;
    let texts: Vec<String> = (0..500).map(|i| format!("slow{i}")).collect();
    let ids = post_all(&d, &texts, |i| format!("+853665{}{:04}", i % 4, i / 4)).await;
    let seen = arrivals(&sim, &texts, Duration::from_secs(120)).await;
    assert_exactly_once(&seen, &texts);
    assert_all_sent(&[&d], &ids).await;
    d.stop().await;
}

/// Two daemons on one Redis, the SMSC answering 30% of submits with ESME_RTHROTTLED: 1,000
/// messages, each sent exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_with_a_throttling_smsc_send_every_message_exactly_once() {
    require_redis().await;
    let sim = start_sim().await;
    sim.update(|b| b.throttle_percent = 30);
    let prefix = test_prefix();
    let p1 = prefix.clone();
    let a = TestDaemon::start_with(Backend::Redis, sim.clone(), "", move |c| {
        c.store.key_prefix = p1
    })
    .await;
    let p2 = prefix.clone();
    let b = TestDaemon::start_with(Backend::Redis, sim.clone(), "", move |c| {
        c.store.key_prefix = p2
    })
    .await;
    let texts: Vec<String> = (0..1000).map(|i| format!("thr{i}")).collect();
    let (ia, ib) = tokio::join!(
        post_all(&a, &texts[..500], |i| format!("+8536651{i:04}")),
        post_all(&b, &texts[500..], |i| format!("+8536652{i:04}")),
    );
    let seen = arrivals(&sim, &texts, Duration::from_secs(120)).await;
    assert_exactly_once(&seen, &texts);
    let ids: Vec<(String, String)> = ia.into_iter().chain(ib).collect();
    assert_all_sent(&[&a, &b], &ids).await;
    a.stop().await;
    b.stop().await;
}
