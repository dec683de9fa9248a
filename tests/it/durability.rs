//! The promise of the delivery engine with the Redis store, 2,000 messages each: an accepted
//! SMS is never lost — a daemon killed with SIGKILL mid-burst and a fresh one finishing the
//! work, two daemons sharing one Redis without duplicates, Redis unreachable for 10 s.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use otpgate::smpp::sim::SimHandle;
use serde_json::json;

use crate::util::*;

const N: usize = 2000;

async fn post_burst(
    http: &reqwest::Client,
    base: &str,
    range: std::ops::Range<usize>,
    prefix: &str,
) -> usize {
    let mut accepted = 0;
    let ids: Vec<usize> = range.collect();
    for chunk in ids.chunks(50) {
        let mut batch = Vec::new();
        for &j in chunk {
            let http = http.clone();
            let url = format!("{base}/v1/messages");
            let body = json!({"to": format!("{prefix}{j:04}"), "text": format!("m{j}")});
            batch.push(tokio::spawn(async move {
                match http.post(url).bearer_auth(TOKEN_A).json(&body).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                }
            }));
        }
        for t in batch {
            if t.await.unwrap() == 202 {
                accepted += 1;
            }
        }
    }
    accepted
}

/// Waits until every "m{j}" for j in `expect` arrived (90 s at most); returns counts per text.
async fn arrivals(sim: &SimHandle, expect: impl Iterator<Item = usize>) -> HashMap<String, usize> {
    let want: Vec<String> = expect.map(|j| format!("m{j}")).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for m in sim.received() {
            *seen.entry(m.text.unwrap_or_default()).or_default() += 1;
        }
        let missing = want.iter().filter(|w| !seen.contains_key(*w)).count();
        if missing == 0 {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} messages never arrived",
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn duplicates(seen: &HashMap<String, usize>) -> usize {
    seen.values().map(|c| c.saturating_sub(1)).sum()
}

fn spawn_daemon(cfg: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_otpgate"))
        .args(["serve", "--config"])
        .arg(cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_and_a_fresh_daemon_finishes_the_work() {
    require_redis().await;
    let sim = start_sim().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let toml = config_toml(
        Backend::Redis,
        &sim.addr().to_string(),
        "throughput = 400\n",
    )
    .replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let dir = std::env::temp_dir().join(format!("otpgate-kill-{}", otpgate::ids::random_tag()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("otpgate.toml");
    std::fs::write(&cfg, toml).unwrap();

    let mut first = spawn_daemon(&cfg);
    let out = first.stdout.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(out).lines() {});
    wait_ready_at(&base).await;
    let http = reqwest::Client::new();
    let accepted = post_burst(&http, &base, 0..N, "+8536640").await;
    assert_eq!(accepted, N, "all accepted before the kill");
    // Kill while most are still queued (throughput 400/s: 2,000 take 5 s).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = sim.received().len();
    assert!(before < N, "killed mid-burst ({before} already sent)");
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();

    let mut second = spawn_daemon(&cfg);
    let out = second.stdout.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(out).lines() {});
    wait_ready_at(&base).await;
    let seen = arrivals(&sim, 0..N).await;
    // Only what was in flight at the kill may go twice: the window (64) and acks not yet written.
    let dupes = duplicates(&seen);
    assert!(dupes <= 128, "{dupes} duplicates");
    Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(second.wait().unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_share_one_redis_without_duplicates() {
    let sim = start_sim().await;
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
    let (na, nb) = tokio::join!(
        post_burst(&a.http, &a.base, 0..N / 2, "+8536641"),
        post_burst(&b.http, &b.base, N / 2..N, "+8536641"),
    );
    assert_eq!(na + nb, N);
    let seen = arrivals(&sim, 0..N).await;
    assert_eq!(duplicates(&seen), 0, "no message sent twice");
    // A late duplicate would come from a takeover, which needs an entry idle for CLAIM_IDLE,
    // then a heartbeat: watch that long.
    tokio::time::sleep(
        otpgate::outbox::redis::CLAIM_IDLE
            + otpgate::outbox::redis::HEARTBEAT
            + Duration::from_secs(1),
    )
    .await;
    let seen = arrivals(&sim, 0..N).await;
    assert_eq!(duplicates(&seen), 0, "no message sent twice, also late");
    // Both took part in sending.
    for d in [&a, &b] {
        let m = d.metrics().await;
        assert!(
            m.contains("otpgate_sms_total{smsc=\"sim\",status=\"submitted\"}"),
            "{m}"
        );
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_for_ten_seconds_loses_nothing() {
    require_redis().await;
    let proxy = Proxy::start(redis_addr()).await;
    let sim = start_sim().await;
    let url = format!("redis://{}", proxy.addr);
    let d = TestDaemon::start_with(
        Backend::Redis,
        sim.clone(),
        "throughput = 300\n",
        move |c| c.store.redis_url = url,
    )
    .await;
    let accepted = post_burst(&d.http, &d.base, 0..N, "+8536642").await;
    assert_eq!(accepted, N);
    // Mid-burst, Redis goes away for 10 s.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.down();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, _, _) = d
        .post(
            TOKEN_A,
            "/v1/messages",
            json!({"to": "+85366429999", "text": "during"}),
        )
        .await;
    assert_eq!(s, 503, "nothing is accepted while the store is down");
    let (s, body) = d.get("", "/readyz").await;
    assert_eq!((s, &body["store"]), (503, &json!("down")));
    tokio::time::sleep(Duration::from_millis(9500)).await;
    proxy.up();
    let seen = arrivals(&sim, 0..N).await;
    // Messages in flight when Redis went away (the window) may go twice; nothing else.
    assert!(duplicates(&seen) <= 64, "{} duplicates", duplicates(&seen));
    assert!(!seen.contains_key("during"));
    d.stop().await;
}

/// A rolling upgrade: a newer instance wrote entries this version cannot read (a newer job
/// version, a job kind added later). They stay pending in the stream — never acknowledged,
/// never deleted — while this daemon keeps delivering the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_a_newer_version_stay_pending_while_others_are_delivered() {
    let sim = start_sim().await;
    let d = TestDaemon::start_with(Backend::Redis, sim.clone(), "", |_| {}).await;
    let keys = otpgate::store::keys::Keys::new(&d.config.store.key_prefix);
    let stream = keys.outbox_stream("", otpgate::outbox::Priority::Notification);
    let client = redis::Client::open(redis_url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let job = r#"{"message_id":"msg_future","destination":"+85366120000","body":{"kind":"text","text":"from the future"},"expires_at_ms":99999999999999,"priority":"notification","route":"","attempts":0,"avoid":null,"not_before_ms":0}"#;
    let mut unknown = Vec::new();
    for (v, k) in [("2", "sms"), ("1", "activation_sms")] {
        let id: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("v")
            .arg(v)
            .arg("k")
            .arg(k)
            .arg("j")
            .arg(job)
            .query_async(&mut c)
            .await
            .unwrap();
        unknown.push(id);
    }
    // Queued after the unknown entries, in the same stream: read after them.
    for i in 0..3 {
        let (s, _, _) = d
            .post(
                TOKEN_A,
                "/v1/messages",
                json!({"to": format!("+8536612000{i}"), "text": format!("m{i}")}),
            )
            .await;
        assert_eq!(s, 202);
    }
    let seen = arrivals(&sim, 0..3).await;
    assert!(!seen.contains_key("from the future"), "not sent");
    // Read by the daemon (pending in the group), not acknowledged, not deleted.
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(&stream)
        .arg("otpgate")
        .arg("-")
        .arg("+")
        .arg(100)
        .query_async(&mut c)
        .await
        .unwrap();
    let pending_ids: Vec<&str> = pending.iter().map(|p| p.0.as_str()).collect();
    for id in &unknown {
        assert!(
            pending_ids.contains(&id.as_str()),
            "{id} pending: {pending_ids:?}"
        );
        let still: Vec<redis::Value> = redis::cmd("XRANGE")
            .arg(&stream)
            .arg(id)
            .arg(id)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(still.len(), 1, "{id} still in the stream");
    }
    d.stop().await;
}
