//! Benchmark harness (not a test): prints figures, asserts nothing.
//!
//! `cargo bench --bench delivery [-- smpp|latency|api|all]`
//!
//! - smpp: messages per second through ONE bind (window 64) to the built-in simulator on
//!   loopback, first submit_sm to last delivery receipt.
//! - latency: API accept (202) → submit_sm at the SMSC, p50/p99, at a fixed request rate.
//! - api: codes issued per second (HTTP → store → outbox) and codes checked per second over
//!   HTTP, memory store (and Redis when REDIS_URL answers), 64 connections.
//! - memory (only when asked for): RSS of 1,000,000 pending verifications in the memory store.
//!
//! Everything runs in one process on this machine: the load generator, the daemon and the
//! SMSC simulator share its cores, so the figures are a floor for the daemon alone.

#![allow(clippy::unwrap_used)] // a measurement program: a failed setup should stop it loudly

use std::sync::Arc;
use std::time::{Duration, Instant};

use otpgate::config::{Config, SmscConfig};
use otpgate::outbox::{Body, Composer, Job, Outbox, Priority, Routing, memory::MemoryOutbox};
use otpgate::smpp::session::{BindContext, run_bind};
use otpgate::smpp::{DeliveryEvent, SmscStatus, sim};
use serde_json::{Value, json};
use sha2::Digest;
use tokio::net::TcpListener;

const TOKEN: &str = "bench-token";

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.1} GiB", kb as f64 / 1048576.0))
        .unwrap_or_default();
    format!(
        "{} cores ({cpu}), {mem} RAM",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn smpp(n: usize) {
    let sim = sim::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Default::default(),
    )
    .unwrap();
    let smsc = SmscConfig {
        name: "sim".into(),
        window: 64,
        ..Default::default()
    };
    let status = SmscStatus::new("sim");
    let routing = Arc::new(Routing::new(
        std::slice::from_ref(&smsc),
        std::slice::from_ref(&status),
    ));
    let outbox = Outbox::Memory(Arc::new(MemoryOutbox::new(n + 10)));
    let (ev_tx, mut ev_rx) = otpgate::smpp::EventSink::channel(n + 10);
    let stop = tokio_util::sync::CancellationToken::new();
    let ctx = BindContext {
        config: Arc::new(smsc),
        address: sim.addr().to_string(),
        status: status.clone(),
        outbox: outbox.clone(),
        routes: vec![String::new()],
        routing,
        composer: Arc::new(Composer {
            codes: otpgate::otp::codes::CodeDeriver::new([1; 32]),
            templates: otpgate::sms::Templates::load("One Account", "", None).unwrap(),
            activation: None,
        }),
        limiter: None,
        events: ev_tx,
        clock: otpgate::clock::Clock::system(),
        shutdown: stop.clone(),
        shutdown_grace: Duration::from_secs(1),
    };
    let task = tokio::spawn(run_bind(ctx, 0));
    while !status.is_bound() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let phones = otpgate::phone::PhonePolicy::new("MO", &[]).unwrap();
    let dest = phones.parse("+85366123456").unwrap();
    let started = Instant::now();
    for i in 0..n {
        let job = Job::new(
            format!("msg_{i}"),
            dest.clone(),
            Body::Code {
                verification_id: format!("ver_{i}"),
                digits: 6,
                locale: otpgate::sms::Locale::En,
                ttl_secs: 300,
                key_id: String::new(),
            },
            otpgate::clock::system_now_ms() + 300_000,
            Priority::Code,
            String::new(),
        );
        outbox.push(job).await.unwrap();
    }
    let (mut submitted, mut receipts) = (0, 0);
    // Answered the way the delivery tracker answers: gathered while more events wait.
    let mut acks = otpgate::smpp::AckBatch::default();
    let mut all_submitted = Duration::ZERO;
    while receipts < n {
        match ev_rx.recv().await {
            Some(DeliveryEvent::Submitted { .. }) => {
                submitted += 1;
                if submitted == n {
                    all_submitted = started.elapsed();
                }
            }
            Some(DeliveryEvent::Receipt { ack, .. }) => {
                ack.answer_into(0, &mut acks);
                receipts += 1;
            }
            Some(_) => {}
            None => break,
        }
        if ev_rx.is_empty() || acks.len() >= 256 {
            acks.flush();
        }
    }
    let elapsed = started.elapsed();
    println!(
        "smpp: 1 bind, window 64, {n} code SMS (GSM, 1 part) to the built-in simulator, receipts requested"
    );
    println!(
        "smpp:   all submit_sm_resp after {:.3} s → {:.0} submits/s",
        all_submitted.as_secs_f64(),
        n as f64 / all_submitted.as_secs_f64()
    );
    println!(
        "smpp:   first submit → last receipt {:.3} s → {:.0} messages/s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    stop.cancel();
    let _ = task.await;
}

fn daemon_toml(sim_addr: &str, redis: Option<&str>) -> String {
    let store = match redis {
        None => "backend = \"memory\"".to_owned(),
        Some(url) => format!(
            "backend = \"redis\"\nredis_url = \"{url}\"\nkey_prefix = \"otpgate-bench:{}:\"",
            otpgate::ids::new_id("b", &otpgate::ids::random_tag())
        ),
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[security]
secret_key = "{key}"
[store]
{store}
[[clients]]
name = "bench"
key_sha256 = "{hash}"
purposes = ["registration", "notification"]
[otp]
max_sends = 3
[[smpp.smsc]]
name = "sim"
address = "{sim_addr}"
window = 64
"#,
        key = hex::encode([7u8; 32]),
        hash = hex::encode(sha2::Sha256::digest(TOKEN.as_bytes())),
    )
}

struct Running {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _sim: sim::SimHandle,
}

async fn start_daemon(redis: Option<&str>) -> (Running, sim::SimHandle) {
    let sim = sim::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Default::default(),
    )
    .unwrap();
    let config = Config::from_toml(
        &daemon_toml(&sim.addr().to_string(), redis),
        std::path::Path::new("bench.toml"),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        otpgate::run(
            config,
            listener,
            async {
                let _ = rx.await;
            },
            Default::default(),
        )
        .await
        .unwrap();
    });
    let http = reqwest::Client::new();
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (
        Running {
            base,
            stop: Some(tx),
            task,
            _sim: sim.clone(),
        },
        sim,
    )
}

impl Running {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
    }
}

async fn latency(rate: u64, secs: u64) {
    let (d, sim) = start_daemon(None).await;
    let mut rx = sim.subscribe();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let n = (rate * secs) as usize;
    let accepted: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; n]));
    let arrived: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; n]));
    let arr = arrived.clone();
    let collector = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            match rx.recv().await {
                Ok(m) => {
                    let at = Instant::now();
                    if let Some(i) = m
                        .text
                        .as_deref()
                        .and_then(|t| t.strip_prefix("lat "))
                        .and_then(|t| t.parse::<usize>().ok())
                    {
                        arr.lock().unwrap()[i] = Some(at);
                        got += 1;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
    });
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut sends = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        ticker.tick().await;
        let http = http.clone();
        let url = format!("{}/v1/messages", d.base);
        let acc = accepted.clone();
        sends.push(tokio::spawn(async move {
            let body = json!({"to": "+85366123456", "text": format!("lat {i}")});
            let r = http
                .post(url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            if r.status() == 202 {
                acc.lock().unwrap()[i] = Some(Instant::now());
            }
        }));
    }
    for s in sends {
        let _ = s.await;
    }
    let sent_in = started.elapsed();
    let _ = tokio::time::timeout(Duration::from_secs(30), collector).await;
    let acc: Vec<Option<Instant>> = accepted.lock().unwrap().clone();
    let arr: Vec<Option<Instant>> = arrived.lock().unwrap().clone();
    let mut lat: Vec<Duration> = acc
        .iter()
        .zip(arr.iter())
        .filter_map(|(a, b)| match (a, b) {
            // The 202 and the submit race: a submit before the client saw its 202 counts as 0.
            (Some(a), Some(b)) => Some(b.saturating_duration_since(*a)),
            _ => None,
        })
        .collect();
    lat.sort();
    println!(
        "latency: {n} notifications at {rate}/s over {:.1} s (memory store, 1 bind, window 64)",
        sent_in.as_secs_f64()
    );
    println!(
        "latency:   API 202 → submit_sm at the SMSC: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} measured)",
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        lat.len()
    );
    d.stop().await;
}

/// Runs `total` requests with `conc` concurrent workers; returns (elapsed, per-request latencies, statuses ok).
async fn load(
    base: &str,
    total: usize,
    conc: usize,
    make: Arc<dyn Fn(usize) -> (String, Value) + Send + Sync>,
    ok: u16,
) -> (Duration, Vec<Duration>, usize, Vec<Value>) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(conc * 2)
        .build()
        .unwrap();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..conc {
        let (http, next, make, base) = (http.clone(), next.clone(), make.clone(), base.to_owned());
        workers.push(tokio::spawn(async move {
            let mut lats = Vec::new();
            let mut good = 0;
            let mut bodies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let (path, body) = make(i);
                let t = Instant::now();
                let r = http
                    .post(format!("{base}{path}"))
                    .bearer_auth(TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                lats.push(t.elapsed());
                if status == ok {
                    good += 1;
                }
                bodies.push(json!({"i": i, "v": v}));
            }
            (lats, good, bodies)
        }));
    }
    let mut lats = Vec::new();
    let mut good = 0;
    let mut bodies = Vec::new();
    for w in workers {
        let (l, g, b) = w.await.unwrap();
        lats.extend(l);
        good += g;
        bodies.extend(b);
    }
    let elapsed = started.elapsed();
    lats.sort();
    (elapsed, lats, good, bodies)
}

async fn api(store: &str, redis: Option<&str>, total: usize) {
    let (d, _sim) = start_daemon(redis).await;
    let make: Arc<dyn Fn(usize) -> (String, Value) + Send + Sync> = Arc::new(|i| {
        (
            "/v1/verifications".to_owned(),
            json!({"purpose": "registration", "phone": format!("+8536{:07}", 6_000_000 + (i % 1_000_000))}),
        )
    });
    let (el, lats, good, bodies) = load(&d.base, total, 64, make, 201).await;
    println!(
        "api[{store}]: issue {total} codes, 64 connections: {:.0}/s ({good} × 201), latency p50 {:.2} ms p99 {:.2} ms",
        good as f64 / el.as_secs_f64(),
        percentile(&lats, 0.5).as_secs_f64() * 1e3,
        percentile(&lats, 0.99).as_secs_f64() * 1e3
    );
    // Check every code issued (the harness derives them with the configured key).
    let codes = otpgate::otp::codes::CodeDeriver::new([7u8; 32]);
    let ids: Vec<(String, String)> = bodies
        .iter()
        .filter_map(|b| b["v"]["id"].as_str().map(|s| s.to_owned()))
        .map(|id| {
            let code = codes.numeric("otp", &id, 6);
            (id, code)
        })
        .collect();
    let ids = Arc::new(ids);
    let n = ids.len();
    let ids2 = ids.clone();
    let make: Arc<dyn Fn(usize) -> (String, Value) + Send + Sync> = Arc::new(move |i| {
        let (id, code) = &ids2[i];
        (
            format!("/v1/verifications/{id}/check"),
            json!({"code": code}),
        )
    });
    let (el, lats, good, _) = load(&d.base, n, 64, make, 200).await;
    println!(
        "api[{store}]: check {n} codes, 64 connections: {:.0}/s ({good} × 200), latency p50 {:.2} ms p99 {:.2} ms",
        good as f64 / el.as_secs_f64(),
        percentile(&lats, 0.5).as_secs_f64() * 1e3,
        percentile(&lats, 0.99).as_secs_f64() * 1e3
    );
    d.stop().await;
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// RSS of `n` pending verifications (each with its message record) in the memory store.
async fn memory(n: usize) {
    use otpgate::store::{
        DeliveryStatus, MessageRecord, Status, Verification, VerificationStore, memory::MemoryStore,
    };
    let store = MemoryStore::new();
    let before = rss_kib();
    let now = otpgate::clock::system_now_ms();
    for i in 0..n {
        let tag = otpgate::ids::random_tag();
        let id = otpgate::ids::new_id("ver", &tag);
        let msg = otpgate::ids::new_id("msg", &tag);
        let v = Verification {
            id: id.clone(),
            client: "account-platform".into(),
            purpose: otpgate::purpose::Purpose::Login,
            account_id: Some(format!("acc-{i}")),
            // The number only has to look like one: its digits do not change the footprint.
            phone: otpgate::phone::Phone::from_e164_unchecked(format!(
                "+8536{:07}",
                6_000_000 + i % 1_000_000
            )),
            locale: otpgate::sms::Locale::ZhHant,
            status: Status::Pending,
            digits: 6,
            created_at_ms: now,
            expires_at_ms: now + 300_000,
            attempts_used: 0,
            max_attempts: 5,
            sends: 1,
            max_sends: 3,
            last_sent_ms: now,
            cooldown_ms: 60_000,
            message_id: msg.clone(),
            subject: format!("{:032x}", i),
            key_id: String::new(),
            guard: Default::default(),
        };
        let m = MessageRecord {
            id: msg,
            client: "account-platform".into(),
            owner: id,
            status: DeliveryStatus::Submitted,
            encoding: "ucs2".into(),
            parts: 1,
            created_at_ms: now,
            submitted_at_ms: Some(now),
            delivered_at_ms: None,
            error: None,
        };
        let plan = otpgate::limits::Plan::default();
        let guards = otpgate::store::SendGuards {
            plan: &plan,
            account: None,
            event: None,
            job: None,
        };
        VerificationStore::create(&store, &v, &m, guards)
            .await
            .unwrap()
            .unwrap();
    }
    let after = rss_kib();
    println!(
        "memory: {n} pending verifications (+ message records) in the memory store: RSS +{:.1} MiB ({:.0} bytes each)",
        (after - before) as f64 / 1024.0,
        (after - before) as f64 * 1024.0 / n as f64
    );
    assert_eq!(store.verification_count(), n);
}

fn main() {
    let what = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "all".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("machine: {}", machine());
    println!(
        "build: otpgate {} ({} profile)",
        env!("CARGO_PKG_VERSION"),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    rt.block_on(async {
        if what == "memory" {
            memory(1_000_000).await;
        }
        if what == "all" || what == "smpp" {
            smpp(50_000).await;
        }
        if what == "all" || what == "latency" {
            latency(2000, 5).await;
        }
        if what == "all" || what == "api" {
            api("memory", None, 60_000).await;
            let url =
                std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            match redis::Client::open(url.as_str()) {
                Ok(c) if c.get_multiplexed_async_connection().await.is_ok() => {
                    api("redis", Some(&url), 30_000).await;
                }
                _ => println!("api[redis]: no Redis at {url}; not measured"),
            }
        }
    });
}
