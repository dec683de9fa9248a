//! The real `otpgate` binary as an operator runs it: `check-config` (every bad key named),
//! `gen-api-key`, and `serve` with systemd notification and watchdog, refusal of published
//! secrets off loopback, no "unenforced limits" line, JSON logs that never hold a full
//! number or a code, and a clean exit 0 on SIGTERM.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::util::*;

const BIN: &str = env!("CARGO_BIN_EXE_otpgate");

fn temp_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("otpgate-it-{}", otpgate::ids::random_tag()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `otpgate check-config` on `path`: (exit code, stdout, stderr).
fn check_config(path: &std::path::Path) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_example_config_fails_only_on_its_placeholder_key() {
    let example = std::path::Path::new("config/otpgate.example.toml");
    let (code, _, err) = check_config(example);
    assert_eq!(code, Some(2), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("config/otpgate.example.toml: security.secret_key: must be 64 hex"),
        "{err}"
    );
    assert!(lines[0].contains("openssl rand -hex 32"), "{err}");
    // With a key of its own (here in a secret_key_file), the rest of the example is valid.
    let dir = temp_dir();
    let key_file = dir.join("secret.key");
    std::fs::write(&key_file, format!("{}\n", hex::encode([7u8; 32]))).unwrap();
    let text = std::fs::read_to_string(example).unwrap().replace(
        "secret_key = \"REPLACE-ME-with-the-output-of-openssl-rand-hex-32\"",
        &format!("secret_key_file = \"{}\"", key_file.display()),
    );
    let cfg = dir.join("otpgate.toml");
    std::fs::write(&cfg, &text).unwrap();
    let (code, out, err) = check_config(&cfg);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "config OK");
    // check-config reads the key file: a bad one is named, a missing one too.
    std::fs::write(&key_file, "not hex\n").unwrap();
    let (code, _, err) = check_config(&cfg);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("security.secret_key_file: ") && err.contains("must hold 64 hex characters"),
        "{err}"
    );
    std::fs::remove_file(&key_file).unwrap();
    let (code, _, err) = check_config(&cfg);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("security.secret_key_file: "), "{err}");
}

#[test]
fn check_config_names_every_bad_key_in_one_run() {
    let dir = temp_dir();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[server]
listen = "127.0.0.1:8080"
max_body_bytes = "big"

[otp]
ttl = "five minutes"
digits = 3

[sms]
default_locale = "klingon"
service_name = "A Service Name Far Too Long To Put In Every Single SMS"

[[smpp.smsc]]
name = "a"
window = 0
system_id = "sixteen-chars-id"
password = "ninechars"
system_type = "thirteen-char"
colour = "blue"

[[smpp.smsc]]
name = "b"
window = "wide"
routes = ["+853", "853"]
"#,
    )
    .unwrap();
    let (code, out, err) = check_config(&bad);
    assert_eq!(code, Some(2), "{out}{err}");
    let f = bad.display();
    let want = [
        // type errors, each named by its own key
        format!("{f}: server.max_body_bytes: invalid type: string \"big\""),
        format!("{f}: otp.ttl: invalid duration \"five minutes\""),
        format!("{f}: sms.default_locale: `klingon` is not one of"),
        format!("{f}: smpp.smsc[1].window: invalid type: string \"wide\""),
        // an unknown key
        format!("{f}: smpp.smsc[0].colour: unknown key"),
        // semantic errors
        format!("{f}: otp.digits: must be 4..=10"),
        format!("{f}: sms.service_name: must be at most 40 characters"),
        format!("{f}: smpp.smsc[0].window: must be 1..=1024"),
        format!("{f}: smpp.smsc[0].system_id: must be 1..=15 characters"),
        format!("{f}: smpp.smsc[0].password: must be at most 8 characters"),
        format!("{f}: smpp.smsc[0].system_type: must be at most 12 characters"),
        format!("{f}: smpp.smsc[1].routes[1]: must be an E.164 prefix"),
    ];
    let lines: Vec<&str> = err.lines().collect();
    for w in &want {
        assert!(
            lines.iter().any(|l| l.starts_with(w.as_str())),
            "missing {w:?} in:\n{err}"
        );
    }
    assert_eq!(lines.len(), want.len(), "one line per bad key:\n{err}");

    // A file that is not TOML: the line and column of the mistake.
    std::fs::write(&bad, "[otp]\nttl = \"5m\"\ndigits = = 6\n").unwrap();
    let (code, _, err) = check_config(&bad);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.starts_with(&format!("{f}: line 3, column ")), "{err}");

    // Allowed, but said: short lifetimes, and numbers no SMSC takes.
    let warned = [
        "[otp]",
        "ttl = \"1s\"",
        "resend_cooldown = \"0s\"",
        "[activation]",
        "ttl = \"1s\"",
        "[[smpp.smsc]]",
        "name = \"a\"",
        "routes = [\"+853\"]",
        "[[smpp.smsc]]",
        "name = \"b\"",
        "routes = [\"+852\"]",
    ];
    std::fs::write(&bad, warned.join("\n")).unwrap();
    let (code, out, err) = check_config(&bad);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "config OK");
    assert!(err.contains(&format!("{f}: warning: otp.ttl: ")), "{err}");
    assert!(
        err.contains(&format!(
            "{f}: warning: smpp.smsc: every SMSC has `routes` (no default SMSC): numbers outside +852, +853 will be refused"
        )),
        "{err}"
    );
}

#[test]
fn check_config_accepts_the_shipped_configs_and_names_bad_keys() {
    let (code, out, err) = check_config(std::path::Path::new("config/otpgate.toml"));
    assert_eq!(code, Some(0), "config/otpgate.toml: {err}");
    assert_eq!(out.trim(), "config OK");
    let dir = temp_dir();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[otp]\ndigits = 3\n[[smpp.smsc]]\nname = \"a\"\nwindow = 0\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("smpp.smsc[0].window: must be 1..=1024"),
        "{err}"
    );
    assert!(err.contains("otp.digits: must be 4..=10"), "{err}");
    std::fs::write(&bad, "[[smpp.smsc]]\nname = \"a\"\nbogus = 1\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("smpp.smsc[0].bogus"));
    // The path also comes from $OTPGATE_CONFIG.
    let out = Command::new(BIN)
        .arg("check-config")
        .env("OTPGATE_CONFIG", &bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn gen_api_key_prints_a_token_and_its_hash_line() {
    let out = Command::new(BIN).arg("gen-api-key").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].len() >= 32);
    assert_eq!(
        lines[1],
        format!(
            "key_sha256 = \"{}\"",
            hex::encode(Sha256::digest(lines[0].as_bytes()))
        )
    );
    let again = Command::new(BIN).arg("gen-api-key").output().unwrap();
    assert_ne!(
        String::from_utf8(again.stdout).unwrap(),
        text,
        "fresh every time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_notifies_systemd_logs_no_secrets_and_drains_on_sigterm() {
    let sim = start_sim().await;
    let dir = temp_dir();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let toml = config_toml(Backend::Memory, &sim.addr().to_string(), "").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let cfg = dir.join("otpgate.toml");
    std::fs::write(&cfg, toml).unwrap();
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    // Every datagram the daemon sends to "systemd", in order.
    let (notes_tx, notes) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = notify.recv(&mut buf) {
            if notes_tx
                .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                .is_err()
            {
                break;
            }
        }
    });

    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &notify_path)
        // A 1 s watchdog: the daemon pings every 0.5 s while its store answers.
        .env("WATCHDOG_USEC", "1000000")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stdout = child.stdout.take().unwrap();
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });

    let first = notes
        .recv_timeout(Duration::from_secs(10))
        .expect("READY=1 within 10 s");
    assert!(first.contains("READY=1"), "READY=1 comes first: {first}");
    for i in 0..2 {
        let note = notes
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("WATCHDOG=1 number {} within 10 s", i + 1));
        assert_eq!(note.trim(), "WATCHDOG=1");
    }

    let d = Client {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    };
    wait_ready_at(&d.base).await;

    // Traffic that puts numbers and codes through every path: create, wrong, right, resend.
    let mut rx = sim.subscribe();
    let mut codes = Vec::new();
    let phones = ["+85366123456", "+84912345678", "+8613812345678"];
    for phone in phones {
        let (s, v) = d
            .post(
                "/v1/verifications",
                json!({"purpose": "registration", "phone": phone, "account_id": "acc-log"}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        let code = extract_code(next_message(&mut rx).await.text.as_deref().unwrap());
        let (s, _) = d
            .post(
                &format!("/v1/verifications/{id}/check"),
                json!({"code": "999999"}),
            )
            .await;
        assert!(s == 422 || s == 200);
        let (s, _) = d
            .post(&format!("/v1/verifications/{id}/resend"), json!({}))
            .await;
        assert_eq!(s, 429);
        let (s, _) = d
            .post(
                &format!("/v1/verifications/{id}/check"),
                json!({"code": code}),
            )
            .await;
        assert!(s == 200 || s == 404, "{s}");
        codes.push(code);
    }
    let (s, _) = d
        .post(
            "/v1/verifications",
            json!({"purpose": "registration", "phone": "+85366999999", "nope": 1}),
        )
        .await;
    assert_eq!(s, 400);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "exits within 15 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.code(), Some(0), "exit 0 after SIGTERM");
    reader.join().unwrap();

    let lines = lines.lock().unwrap();
    assert!(
        lines.iter().any(|l| l.contains("\"unbound\"")),
        "unbinds on shutdown"
    );
    // The test config keeps [limits] at its defaults, now enforced: no "unenforced" lines.
    assert!(
        !lines.iter().any(|l| l.contains("NOT enforced")),
        "no limit is reported unenforced"
    );
    for line in lines.iter() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
        assert!(v.get("level").is_some(), "{line}");
        for phone in phones.iter().chain(["+85366999999"].iter()) {
            let digits = phone.trim_start_matches('+');
            assert!(!line.contains(digits), "full number in a log line: {line}");
            assert!(
                !line.contains(&digits[digits.len() - 8..]),
                "national number in a log line: {line}"
            );
        }
        for code in &codes {
            assert!(!line.contains(code.as_str()), "code in a log line: {line}");
        }
    }
    assert!(lines.len() >= 3, "it did log: {lines:?}");
}

/// Runs `otpgate serve` on `toml` and expects it to refuse to start: (exit code, stderr).
fn serve_refused(toml: &str) -> (Option<i32>, String) {
    let dir = temp_dir();
    let cfg = dir.join("otpgate.toml");
    std::fs::write(&cfg, toml).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve started with a published secret on a public address");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serve_refuses_published_secrets_on_a_public_address() {
    let base = config_toml(Backend::Memory, "127.0.0.1:9", "");
    let public = base.replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"");
    assert_ne!(base, public);

    // The development token of config/otpgate.toml.
    let dev = public.replace(&sha256_hex(TOKEN_A), &sha256_hex("dev-token-change-me"));
    let (code, err) = serve_refused(&dev);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(
            "clients[0].key_sha256: is the development token `dev-token-change-me`, refused because server.listen 0.0.0.0:0 is not a loopback address"
        ),
        "{err}"
    );

    // A secret key written in the repository (the first releases' example key).
    let published_key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let key = public.replace(&hex::encode([42u8; 32]), published_key);
    let (code, err) = serve_refused(&key);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("security.secret_key: is published in the otpgate repository, refused because server.listen 0.0.0.0:0"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // The same files pass on loopback (the daemon may start); check-config agrees with serve.
    let dir = temp_dir();
    for (toml, ok) in [
        (dev.replace("0.0.0.0:0", "127.0.0.1:0"), true),
        (key.replace("0.0.0.0:0", "[::1]:0"), true),
        (dev, false),
    ] {
        let cfg = dir.join("c.toml");
        std::fs::write(&cfg, toml).unwrap();
        let (code, _, err) = check_config(&cfg);
        assert_eq!(code == Some(0), ok, "{err}");
    }
}

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN_A)
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smsc_sim_command_prints_what_it_receives_and_checks_credentials() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(BIN)
        .args([
            "smsc-sim",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--system-id",
            "otpgate",
            "--password",
            "pw",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let sim_addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(&sim_addr).is_err() {
        assert!(Instant::now() < deadline, "smsc-sim listens");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !probe_bind(&sim_addr, "nope").await,
        "a wrong password is refused"
    );
    assert!(
        probe_bind(&sim_addr, "pw").await,
        "the right password binds"
    );

    let extra = "password = \"pw\"\n";
    let toml = config_toml(Backend::Memory, &sim_addr, extra);
    let config = otpgate::config::Config::from_toml(&toml, std::path::Path::new("t.toml")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(otpgate::run(
        config,
        listener,
        async {
            let _ = stop_rx.await;
        },
        Default::default(),
    ));
    let d = Client {
        base,
        http: reqwest::Client::new(),
    };
    wait_ready_at(&d.base).await;
    let (s, _) = d
        .post(
            "/v1/verifications",
            json!({"purpose": "registration", "phone": "+85366123456", "locale": "vi"}),
        )
        .await;
    assert_eq!(s, 201);
    let line = loop {
        let l = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("smsc-sim prints the message");
        if l.contains("\"smsc_sim\"") {
            break l;
        }
    };
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["message"]["destination_addr"], "85366123456");
    assert_eq!(v["message"]["data_coding"], 8);
    assert!(
        v["message"]["text"]
            .as_str()
            .unwrap()
            .starts_with("One Account: Mã xác thực của bạn là ")
    );
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
}

/// A bare bind attempt: whether the SMSC at `addr` accepts system_id "otpgate" with `password`.
async fn probe_bind(addr: &str, password: &str) -> bool {
    let smsc = otpgate::config::SmscConfig {
        name: "probe".into(),
        password: otpgate::config::Secret::new(password),
        ..Default::default()
    };
    let bind = start_bind(addr, smsc, false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bound = bind.status.is_bound();
    bind.stop.cancel();
    let _ = bind.task.await;
    bound
}

/// The watchdog hook of `run`: pings while Redis answers, none while it does not, again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_go_on_while_the_store_is_down() {
    require_redis().await;
    let proxy = Proxy::start(redis_addr()).await;
    let sim = start_sim().await;
    let toml = config_toml(Backend::Redis, &sim.addr().to_string(), "");
    let mut config =
        otpgate::config::Config::from_toml(&toml, std::path::Path::new("t.toml")).unwrap();
    config.store.redis_url = format!("redis://{}", proxy.addr);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (pings_tx, mut pings) = tokio::sync::mpsc::unbounded_channel::<()>();
    let options = otpgate::RunOptions {
        watchdog: Some(otpgate::Watchdog {
            interval: Duration::from_millis(200),
            ping: Arc::new(move || {
                let _ = pings_tx.send(());
            }),
        }),
        ..Default::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(otpgate::run(
        config,
        listener,
        async {
            let _ = stop_rx.await;
        },
        options,
    ));
    next_ping(&mut pings).await;
    next_ping(&mut pings).await;

    proxy.down();
    let http = reqwest::Client::new();
    loop {
        let body: Value = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["store"] == "down" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while pings.try_recv().is_ok() {}
    // The daemon rides out a store outage (503, receipts refused for a resend, the outbox in
    // Redis): a restart by systemd would not help, so the pings go on.
    next_ping(&mut pings).await;
    next_ping(&mut pings).await;
    let (s, _) = {
        let r = http
            .post(format!("{base}/v1/messages"))
            .bearer_auth(TOKEN_A)
            .json(&serde_json::json!({"to": "+85366100999", "text": "x"}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(s, 503, "the store is really down");
    proxy.up();
    next_ping(&mut pings).await;
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
}

async fn next_ping(pings: &mut tokio::sync::mpsc::UnboundedReceiver<()>) {
    tokio::time::timeout(Duration::from_secs(10), pings.recv())
        .await
        .expect("a watchdog ping within 10 s")
        .expect("the daemon runs");
}
