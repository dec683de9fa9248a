//! Shared test helpers: a real daemon in-process on port 0, a real SMSC simulator on port 0,
//! a real HTTP client, and a real Redis (`REDIS_URL`, default `redis://127.0.0.1:6379`) with a
//! key prefix per test. Redis-backed tests fail when Redis does not answer; they never skip.

use std::time::Duration;

use otpgate::clock::Clock;
use otpgate::config::Config;
use otpgate::smpp::sim::{self, Received, SimConfig, SimHandle};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const TOKEN_A: &str = "test-token-client-a";
pub const TOKEN_B: &str = "test-token-client-b";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Fails the test loudly when Redis is not there.
pub async fn require_redis() {
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).expect("REDIS_URL is a redis:// URL");
    let mut conn = tokio::time::timeout(
        Duration::from_secs(3),
        client.get_multiplexed_async_connection(),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "Redis at {url} did not answer in 3 s: start it or set REDIS_URL (scripts/test does)"
        )
    })
    .unwrap_or_else(|e| {
        panic!(
            "Redis at {url} is not reachable ({e}): start it or set REDIS_URL (scripts/test does)"
        )
    });
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .expect("Redis PING");
    assert_eq!(pong, "PONG");
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

pub async fn start_sim() -> SimHandle {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind sim");
    sim::start(l, SimConfig::default()).expect("start sim")
}

/// A Redis key prefix no other test has used: 150 random bits. Tests share one Redis server
/// with each other, with other runs at the same time and with what earlier runs left there
/// (outbox entries have no TTL: a test that ends with messages queued or in flight leaves them
/// pending). A prefix that met another's would read its entries and send them to this test's
/// simulator: with a 4-character tag (2^20 prefixes) this is the likely cause of the one run
/// where `limits_api::per_phone_counts…::redis` saw 65 SMS instead of 1 (one heartbeat takes
/// over 64 abandoned entries, its budget; reproduced with entries left under the test's prefix).
pub fn test_prefix() -> String {
    format!(
        "otpgate-test:{}:",
        otpgate::ids::new_id("t", &otpgate::ids::random_tag())
    )
}

/// The TOML of a test daemon talking to the simulator at `smsc_addr`.
pub fn config_toml(backend: Backend, smsc_addr: &str, extra_smsc: &str) -> String {
    let prefix = test_prefix();
    let store = match backend {
        Backend::Memory => "backend = \"memory\"".to_string(),
        Backend::Redis => format!(
            "backend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"{prefix}\"",
            redis_url()
        ),
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 2048
shutdown_grace = "2s"

[security]
secret_key = "{key}"

[store]
{store}

[[clients]]
name = "client-a"
key_sha256 = "{a}"
purposes = ["registration", "login", "password_reset", "transaction", "notification"]

[[clients]]
name = "client-b"
key_sha256 = "{b}"
purposes = ["transaction"]

[phone]
default_region = "MO"
allowed_countries = ["MO", "HK", "VN", "CN", "PT"]

# Room for the feature tests; the limits have their own tests (limits_api.rs).
[limits]
per_phone = ["1000/1h"]
per_account = ["1000/1h"]
per_ip = ["1000/1h"]
account_failures = "1000/1h"

[otp]
ttl = "5m"
max_attempts = 5
max_sends = 3
resend_cooldown = "60s"

[[smpp.smsc]]
name = "sim"
address = "{smsc_addr}"
window = 64
enquire_link_interval = "30s"
response_timeout = "2s"
{extra_smsc}
"#,
        key = hex::encode([42u8; 32]),
        a = sha256_hex(TOKEN_A),
        b = sha256_hex(TOKEN_B),
    )
}

pub struct TestDaemon {
    pub base: String,
    pub http: reqwest::Client,
    pub sim: SimHandle,
    pub clock: Clock,
    #[allow(dead_code)]
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestDaemon {
    pub async fn start(backend: Backend) -> TestDaemon {
        Self::start_with(backend, start_sim().await, "", |_| {}).await
    }

    /// A daemon bound to nothing yet: its SMSC is at `smsc_addr`, where nothing listens.
    pub async fn start_unready(backend: Backend, sim: SimHandle, smsc_addr: &str) -> TestDaemon {
        Self::launch(backend, sim, smsc_addr, "", |_| {}, false).await
    }

    /// Like `start_unready`, with extra SMSC lines and a config tweak.
    pub async fn launch_with(
        backend: Backend,
        sim: SimHandle,
        smsc_addr: &str,
        extra_smsc: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> TestDaemon {
        Self::launch(backend, sim, smsc_addr, extra_smsc, tweak, false).await
    }

    pub async fn start_with(
        backend: Backend,
        sim: SimHandle,
        extra_smsc: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> TestDaemon {
        let addr = sim.addr().to_string();
        Self::launch(backend, sim, &addr, extra_smsc, tweak, true).await
    }

    /// Like `start_with`, with the run's options (not configuration) changed too.
    pub async fn start_with_options(
        backend: Backend,
        sim: SimHandle,
        extra_smsc: &str,
        tweak: impl FnOnce(&mut Config),
        options: impl FnOnce(&mut otpgate::RunOptions),
    ) -> TestDaemon {
        let addr = sim.addr().to_string();
        Self::launch_opts(backend, sim, &addr, extra_smsc, tweak, options, true).await
    }

    async fn launch(
        backend: Backend,
        sim: SimHandle,
        smsc_addr: &str,
        extra_smsc: &str,
        tweak: impl FnOnce(&mut Config),
        wait_ready: bool,
    ) -> TestDaemon {
        Self::launch_opts(
            backend,
            sim,
            smsc_addr,
            extra_smsc,
            tweak,
            |_| {},
            wait_ready,
        )
        .await
    }

    async fn launch_opts(
        backend: Backend,
        sim: SimHandle,
        smsc_addr: &str,
        extra_smsc: &str,
        tweak: impl FnOnce(&mut Config),
        options_tweak: impl FnOnce(&mut otpgate::RunOptions),
        wait_ready: bool,
    ) -> TestDaemon {
        if backend == Backend::Redis {
            require_redis().await;
        }
        let toml = config_toml(backend, smsc_addr, extra_smsc);
        let mut config =
            Config::from_toml(&toml, std::path::Path::new("test.toml")).expect("test config");
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let clock = Clock::system();
        let (tx, rx) = oneshot::channel::<()>();
        let mut options = otpgate::RunOptions {
            clock: clock.clone(),
            ..Default::default()
        };
        options_tweak(&mut options);
        let cfg = config.clone();
        let task = tokio::spawn(async move {
            otpgate::run(
                cfg,
                listener,
                async {
                    let _ = rx.await;
                },
                options,
            )
            .await
            .expect("daemon run");
        });
        let d = TestDaemon {
            base,
            // Under the daemon's 10 s idle close, so a pooled connection is never reused as it closes.
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .expect("client"),
            sim,
            clock,
            config,
            stop: Some(tx),
            task: Some(task),
        };
        if wait_ready {
            d.wait_ready().await;
        } else {
            d.wait_listening().await;
        }
        d
    }

    /// Waits until the HTTP API answers at all.
    pub async fn wait_listening(&self) {
        for _ in 0..200 {
            if self
                .http
                .get(format!("{}/healthz", self.base))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("daemon not listening within 5 s");
    }

    /// Waits until `/readyz` is 200 (store up, SMSC bound).
    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("daemon not ready within 5 s");
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("daemon stops within 10 s")
                .expect("daemon task");
        }
    }

    pub async fn post(
        &self,
        token: &str,
        path: &str,
        body: Value,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.json::<Value>().await.unwrap_or(Value::Null);
        (status, body, headers)
    }

    pub async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap_or(Value::Null))
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let r = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics");
        r.text().await.expect("metrics text")
    }

    /// Creates a verification and returns (id, code as received by the SMSC, the SMS).
    pub async fn create_and_receive(&self, body: Value) -> (String, String, Received) {
        let mut rx = self.sim.subscribe();
        let (status, v, _) = self.post(TOKEN_A, "/v1/verifications", body).await;
        assert_eq!(status, 201, "create: {v}");
        let id = v["id"].as_str().expect("id").to_owned();
        let msg = next_message(&mut rx).await;
        let code = extract_code(msg.text.as_deref().expect("decoded text"));
        (id, code, msg)
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The next message the simulator receives (5 s at most).
pub async fn next_message(rx: &mut tokio::sync::broadcast::Receiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an SMS within 5 s")
        .expect("simulator channel")
}

/// The first run of 6 digits in a text.
pub fn extract_code(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut run = String::new();
    for c in chars {
        if c.is_ascii_digit() {
            run.push(c);
            if run.len() == 6 {
                return run;
            }
        } else {
            run.clear();
        }
    }
    panic!("no 6-digit code in {text:?}");
}

/// Declares an async test once per store backend.
#[macro_export]
macro_rules! both_stores {
    ($(async fn $name:ident($b:ident: Backend) $body:block)*) => {
        $(
            mod $name {
                use super::*;
                async fn run($b: Backend) $body
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() { run(Backend::Memory).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() { run(Backend::Redis).await }
            }
        )*
    };
}

/// One SMPP bind driven directly (no HTTP): jobs go into its outbox, events come out.
pub struct Bind {
    pub outbox: otpgate::outbox::Outbox,
    pub events: tokio::sync::mpsc::Receiver<otpgate::smpp::DeliveryEvent>,
    pub status: std::sync::Arc<otpgate::smpp::SmscStatus>,
    pub stop: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts one bind to `addr` with this SMSC config; waits up to 2 s for it to be bound when
/// `wait_bound`.
pub async fn start_bind(addr: &str, smsc: otpgate::config::SmscConfig, wait_bound: bool) -> Bind {
    use otpgate::outbox::{Composer, Outbox, Routing, memory::MemoryOutbox};
    use otpgate::smpp::SmscStatus;
    use otpgate::smpp::session::{BindContext, run_bind, throughput_limiter};
    use std::sync::Arc;
    let outbox = Outbox::Memory(Arc::new(MemoryOutbox::new(100_000)));
    // Room for every event of a test that reads them only at its end.
    let (ev_tx, ev_rx) = otpgate::smpp::EventSink::channel(100_000);
    let status = SmscStatus::new(&smsc.name);
    let routing = Arc::new(Routing::new(
        std::slice::from_ref(&smsc),
        std::slice::from_ref(&status),
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    let composer = Arc::new(Composer {
        codes: otpgate::otp::codes::CodeDeriver::new([9; 32]),
        templates: otpgate::sms::Templates::load("One Account", "", None).unwrap(),
        activation: None,
    });
    let ctx = BindContext {
        address: addr.to_owned(),
        status: status.clone(),
        outbox: outbox.clone(),
        routes: routing.smscs[0].routes.clone(),
        routing,
        composer,
        limiter: throughput_limiter(smsc.throughput),
        events: ev_tx,
        clock: otpgate::clock::Clock::system(),
        shutdown: stop.clone(),
        shutdown_grace: Duration::from_secs(2),
        config: Arc::new(smsc),
    };
    let task = tokio::spawn(run_bind(ctx, 0));
    if wait_bound {
        for _ in 0..200 {
            if status.is_bound() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(status.is_bound(), "bound within 2 s");
    }
    Bind {
        outbox,
        events: ev_rx,
        status,
        stop,
        task,
    }
}

/// A plain-text job to `to` (E.164) on the default route.
pub fn text_job(id: usize, to: &str, text: String) -> otpgate::outbox::Job {
    let phones = otpgate::phone::PhonePolicy::new("MO", &[]).unwrap();
    otpgate::outbox::Job::new(
        format!("msg_{id}"),
        phones.parse(to).unwrap(),
        otpgate::outbox::Body::Text { text },
        otpgate::clock::system_now_ms() + 300_000,
        otpgate::outbox::Priority::Notification,
        String::new(),
    )
}

/// A TCP proxy on loopback in front of `upstream` that the test can cut: while down it drops
/// every connection and refuses new ones (a network outage of the server behind it).
#[derive(Clone)]
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: std::sync::Arc<tokio::sync::Notify>,
}

impl Proxy {
    pub async fn start(upstream: std::net::SocketAddr) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = Proxy {
            addr: listener.local_addr().unwrap(),
            up: Default::default(),
            cut: Default::default(),
        };
        p.up.store(true, Ordering::SeqCst);
        let (up, cut) = (p.up.clone(), p.cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if !up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let cut = cut.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        p
    }

    pub fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    pub fn up(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The socket address of `REDIS_URL`.
pub fn redis_addr() -> std::net::SocketAddr {
    use std::net::ToSocketAddrs;
    let url = redis_url();
    let rest = url.trim_start_matches("redis://");
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:6379")
    };
    hostport.to_socket_addrs().unwrap().next().unwrap()
}

/// Waits until `GET {base}/readyz` answers 200 (15 s at most): a daemon run as a process.
pub async fn wait_ready_at(base: &str) {
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{base} ready within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
