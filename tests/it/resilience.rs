//! Delivery under faults, 2,000 messages each: the SMSC drops the connection every second,
//! throttles 30% of submits, or stops while a second SMSC of the route takes over. Every message
//! must arrive at an SMSC at least once, and at most once more when it was in flight.
//! Also: routing by the longest prefix, and the throughput cap; a session task that panics is
//! restarted (the SMSC shows `down` until it binds again, queued and in-flight messages still
//! go); a daemon stopped while its SMSC is down returns within `shutdown_grace` + 1 s.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use otpgate::smpp::sim::SimHandle;
use serde_json::json;

use crate::both_stores;
use crate::util::*;

const N: usize = 2000;

/// Posts `n` notifications "m{i}" to distinct numbers, 50 at a time.
async fn send_burst(d: &TestDaemon, n: usize, prefix: &str) {
    let mut i = 0;
    while i < n {
        let mut batch = Vec::new();
        for j in i..(i + 50).min(n) {
            let http = d.http.clone();
            let url = format!("{}/v1/messages", d.base);
            let body = json!({"to": format!("{prefix}{j:04}"), "text": format!("m{j}")});
            batch.push(tokio::spawn(async move {
                let r = http
                    .post(url)
                    .bearer_auth(TOKEN_A)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let headers = format!("{:?}", r.headers());
                (
                    status,
                    format!("{headers} {}", r.text().await.unwrap_or_default()),
                )
            }));
        }
        for t in batch {
            let (status, body) = t.await.unwrap();
            assert_eq!(status, 202, "{body}");
        }
        i += 50;
    }
}

/// Counts, per text, how often the simulators received it, until all `n` arrived (60 s at most).
async fn collect(
    sims: &[&SimHandle],
    n: usize,
    mut during: impl FnMut(),
) -> HashMap<String, usize> {
    let mut rxs: Vec<_> = sims.iter().map(|s| s.subscribe()).collect();
    // Messages that arrived before we subscribed.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for s in sims {
        for m in s.received() {
            *seen.entry(m.text.unwrap_or_default()).or_default() += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_tick = Instant::now();
    let mut called = false;
    while seen.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages arrived",
            seen.len()
        );
        // Every second, and in any case once a tenth has arrived: a fast run must not finish
        // before the fault happened (the fault is what the test is about).
        if last_tick.elapsed() >= Duration::from_secs(1) || (!called && seen.len() >= n / 10) {
            during();
            called = true;
            last_tick = Instant::now();
        }
        for rx in rxs.iter_mut() {
            while let Ok(m) = rx.try_recv() {
                *seen.entry(m.text.unwrap_or_default()).or_default() += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen
}

fn assert_each_once(seen: &HashMap<String, usize>, n: usize, max_dupes: usize) {
    for j in 0..n {
        assert!(seen.contains_key(&format!("m{j}")), "m{j} never arrived");
    }
    let dupes: usize = seen.values().map(|c| c - 1).sum();
    assert!(
        dupes <= max_dupes,
        "{dupes} duplicates (at most {max_dupes} allowed)"
    );
}

both_stores! {
    async fn smsc_dropping_the_connection_every_second_loses_nothing(b: Backend) {
    let sim = start_sim().await;
    let d =
        TestDaemon::start_with(b, sim.clone(), "throughput = 1000\n", |_| {}).await;
    let (sender, seen) = tokio::join!(send_burst(&d, N, "+8536630"), async {
        let drops = sim.clone();
        collect(&[&sim], N, move || drops.drop_connections()).await
    });
    let () = sender;
    // Each drop can re-send at most the window (64) of unanswered submits.
    let drops = sim.binds() as usize;
    assert!(
        drops >= 2,
        "the connection was dropped and re-bound ({drops} binds)"
    );
    assert_each_once(&seen, N, 64 * drops);
    d.stop().await;
}

    async fn throttled_submits_are_retried_until_accepted(b: Backend) {
    let sim = start_sim().await;
    sim.update(|s| s.throttle_percent = 30);
    let d = TestDaemon::start_with(b, sim.clone(), "", |_| {}).await;
    let sims = [&sim];
    let (_, seen) = tokio::join!(send_burst(&d, N, "+8536631"), collect(&sims, N, || {}));
    assert_each_once(&seen, N, 0);
    let metrics = d.metrics().await;
    assert!(
        metrics.contains("otpgate_smpp_throttled_total{smsc=\"sim\"}"),
        "throttling is counted"
    );
    d.stop().await;
}

    async fn a_second_smsc_takes_over_when_the_first_stops(b: Backend) {
    let sim_a = start_sim().await;
    let sim_b = start_sim().await;
    let second = format!(
        "\n[[smpp.smsc]]\nname = \"sim-b\"\naddress = \"{}\"\nwindow = 64\nresponse_timeout = \"2s\"\n",
        sim_b.addr()
    );
    let d = TestDaemon::start_with(b, sim_a.clone(), &second, |_| {}).await;
    let sims = [&sim_a, &sim_b];
    // A stops mid-burst: once 100 messages arrived (a timer could fire after the burst ended,
    // and then nothing would have been tested).
    let stop_a = async {
        for _ in 0..6000 {
            let arrived = sim_a.received().len() + sim_b.received().len();
            if arrived >= 100 {
                sim_a.shutdown();
                return arrived;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("not even 100 messages arrived in 30 s");
    };
    let (_, seen, arrived_at_stop) = tokio::join!(
        send_burst(&d, N, "+8536632"),
        collect(&sims, N, || {}),
        stop_a
    );
    assert!(arrived_at_stop < N, "A stopped before the burst was over");
    assert_each_once(&seen, N, 64);
    let at_b = sim_b.received().len();
    assert!(at_b > 0, "B took over");
    let (s, body) = d.get("", "/readyz").await;
    assert_eq!(s, 200, "ready while one SMSC is bound: {body}");
    assert_eq!(body["smsc"]["sim"], "down");
    assert_eq!(body["smsc"]["sim-b"], "bound");
    d.stop().await;
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_matching_route_wins() {
    let sim_mo = start_sim().await;
    let sim_vn = start_sim().await;
    let sim_rest = start_sim().await;
    let extra = format!(
        "routes = [\"+853\"]\n\n[[smpp.smsc]]\nname = \"vn\"\naddress = \"{}\"\nroutes = [\"+84\", \"+8536699\"]\n\n[[smpp.smsc]]\nname = \"rest\"\naddress = \"{}\"\n",
        sim_vn.addr(),
        sim_rest.addr()
    );
    let d = TestDaemon::start_with(Backend::Memory, sim_mo.clone(), &extra, |_| {}).await;
    for _ in 0..100 {
        if sim_vn.binds() > 0 && sim_rest.binds() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cases = [
        ("+85366123456", &sim_mo),
        ("+84912345678", &sim_vn),
        ("+85366991234", &sim_vn), // "+8536699" is longer than "+853"
        ("+85291234567", &sim_rest),
    ];
    for (i, (to, sim)) in cases.iter().enumerate() {
        let mut rx = sim.subscribe();
        let (s, body, _) = d
            .post(
                TOKEN_A,
                "/v1/messages",
                json!({"to": to, "text": format!("route {i}")}),
            )
            .await;
        assert_eq!(s, 202, "{body}");
        let m = next_message(&mut rx).await;
        assert_eq!(
            m.text.as_deref(),
            Some(format!("route {i}").as_str()),
            "{to}"
        );
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_cap_spreads_submits() {
    let sim = start_sim().await;
    let d = TestDaemon::start_with(Backend::Memory, sim.clone(), "throughput = 20\n", |_| {}).await;
    let started = Instant::now();
    send_burst(&d, 50, "+8536633").await;
    collect(&[&sim], 50, || {}).await;
    // 50 submits at 20/s, no burst: at least 49/20 s. (A lower bound: a slow machine cannot
    // make it fail, only a limiter that lets bursts through.)
    assert!(
        started.elapsed() >= Duration::from_millis(2400),
        "{:?}",
        started.elapsed()
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_timeouts_retry_on_the_other_smsc() {
    let sim_a = start_sim().await;
    let sim_b = start_sim().await;
    // A accepts submits but never answers them.
    sim_a.update(|b| b.ignore_submits = true);
    let second = format!(
        "\n[[smpp.smsc]]\nname = \"sim-b\"\naddress = \"{}\"\nresponse_timeout = \"2s\"\n",
        sim_b.addr()
    );
    let d = TestDaemon::start_with(Backend::Memory, sim_a.clone(), &second, |_| {}).await;
    for _ in 0..100 {
        if sim_b.binds() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send_burst(&d, 100, "+8536634").await;
    let sims = [&sim_b];
    let seen = collect(&sims, 100, || {}).await;
    assert_each_once(&seen, 100, 0);
    assert!(
        sim_a.submits() > 0,
        "some went to A first and timed out there"
    );
    d.stop().await;
}

both_stores! {
    async fn a_panicking_session_is_restarted_and_its_messages_still_go(b: Backend) {
    let sim = start_sim().await;
    let d = TestDaemon::start_with(b, sim.clone(), "", |_| {}).await;
    let sims = [&sim];
    // A burst in flight when the session panics, and more queued while it is down.
    let (_, seen) = tokio::join!(
        async {
            send_burst(&d, 200, "+8536635").await;
            otpgate::smpp::session::panic_next_session_to(&sim.addr().to_string());
            let mut down = None;
            for _ in 0..250 {
                let (s, body) = d.get("", "/readyz").await;
                if body["smsc"]["sim"] == "down" {
                    down = Some(s);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(down, Some(503), "/readyz shows the SMSC down after the panic");
            // Queued while no session runs (numbers 0200..0399 of the same prefix).
            let mut j = 200;
            while j < 400 {
                let (s, body, _) = d
                    .post(TOKEN_A, "/v1/messages", json!({"to": format!("+8536635{j:04}"), "text": format!("m{j}")}))
                    .await;
                assert_eq!(s, 202, "{body}");
                j += 1;
            }
        },
        collect(&sims, 400, || {})
    );
    assert_each_once(&seen, 400, 64);
    d.wait_ready().await;
    assert!(sim.binds() >= 2, "bound again after the panic");
    d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_while_the_smsc_is_down_returns_within_the_grace() {
    // Nothing listens at the SMSC's address: every connect fails and the backoff grows.
    let parked = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = parked.local_addr().unwrap();
    drop(parked);
    let d = TestDaemon::start_unready(Backend::Memory, start_sim().await, &addr.to_string()).await;
    let grace = d.config.server.shutdown_grace;
    assert_eq!(grace, Duration::from_secs(2));
    // A queued message keeps the drain going until the deadline.
    let (s, body, _) = d
        .post(
            TOKEN_A,
            "/v1/messages",
            json!({"to": "+85366360001", "text": "never sent"}),
        )
        .await;
    assert_eq!(s, 202, "{body}");
    // Let the backoff grow past the grace (1 s, 2 s, then a 4 s wait).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let started = Instant::now();
    d.stop().await;
    let took = started.elapsed();
    // A correctness bound (the drain deadline), not a speed measurement.
    assert!(
        took < grace + Duration::from_secs(1),
        "stopped after {took:?}"
    );
}
