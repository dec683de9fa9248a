//! The real `otpgate` binary as an operator runs it: `check-config`, `gen-api-key`, and
//! `serve` with systemd notification, JSON logs that never hold a full number or a code,
//! and a clean exit 0 on SIGTERM.

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

#[test]
fn check_config_accepts_the_shipped_configs_and_names_bad_keys() {
    for path in ["config/otpgate.toml", "config/otpgate.example.toml"] {
        let out = Command::new(BIN)
            .args(["check-config", "--config", path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "config OK");
    }
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
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &notify_path)
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

    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 within 10 s");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));

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
