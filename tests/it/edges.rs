//! The HTTP edge as a careless or hostile client meets it: half-sent requests, made-up
//! methods, the bearer scheme in any case, announced times, and a shutdown that one slow
//! client cannot hold.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::both_stores;
use crate::util::*;

/// Reads until the server closes the connection; the bytes read, or None after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read_all).await.ok()?;
    Some(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_head_is_closed_within_the_timeout() {
    let d = TestDaemon::start(Backend::Memory).await;
    let addr = d.base.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).await.expect("connect");
    // A request head without its final empty line: a slowloris client.
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let closed = closed_within(&mut s, Duration::from_secs(20)).await;
    assert!(
        closed.is_some(),
        "the connection is still open after {:?}",
        started.elapsed()
    );
    // Nothing was served to it (at most an error status).
    let text = String::from_utf8_lossy(closed.as_deref().unwrap_or_default()).to_string();
    assert!(!text.contains("200 OK"), "{text}");
    // The daemon itself still serves others (on a new connection: the client's pooled one
    // idled as long and was closed at the same moment).
    let r = reqwest::Client::new()
        .get(format!("{}/healthz", d.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_and_an_http2_preface_are_closed_within_the_timeout() {
    let d = TestDaemon::start(Backend::Memory).await;
    let addr = d.base.trim_start_matches("http://").to_owned();
    let mut silent = TcpStream::connect(&addr).await.expect("connect");
    let mut preface = TcpStream::connect(&addr).await.expect("connect");
    preface
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("write");
    let (a, b) = tokio::join!(
        closed_within(&mut silent, Duration::from_secs(20)),
        closed_within(&mut preface, Duration::from_secs(20))
    );
    assert!(a.is_some(), "a connection that sends nothing is held open");
    assert!(
        b.is_some(),
        "a connection that sends part of an HTTP/2 preface is held open"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_cut_within_the_timeout() {
    let d = TestDaemon::start(Backend::Memory).await;
    let addr = d.base.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).await.expect("connect");
    s.write_all(
        format!(
            "POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    // One byte every 2 s: each gap is under the per-chunk timeout, the whole is not.
    let started = Instant::now();
    let mut answered = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(25) {
        let _ = s.write_all(b" ").await;
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answered.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "a body trickled one byte every 2 s was still being read after 25 s"
    );
    let text = String::from_utf8_lossy(&answered).to_string();
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_do_not_create_metric_series() {
    let d = TestDaemon::start(Backend::Memory).await;
    for m in ["FOO1", "FOO2", "BREW"] {
        let method = reqwest::Method::from_bytes(m.as_bytes()).expect("method");
        let r = d
            .http
            .request(method, format!("{}/healthz", d.base))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 405, "{m}");
    }
    let text = d.metrics().await;
    for m in ["FOO1", "FOO2", "BREW"] {
        assert!(!text.contains(m), "{m} is a label value in /metrics");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("otpgate_http_requests_total")
                && l.contains("method=\"other\"")
                && l.contains("status=\"405\"")),
        "made-up methods count as `other`"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let d = TestDaemon::start(Backend::Memory).await;
    for header in [
        format!("Bearer {TOKEN_A}"),
        format!("bearer {TOKEN_A}"),
        format!("BEARER {TOKEN_A}"),
        format!("bEaReR   {TOKEN_A}"),
    ] {
        let r = d
            .http
            .post(format!("{}/v1/messages", d.base))
            .header("authorization", &header)
            .json(&json!({"to": "+85366100200", "text": "hello"}))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 202, "{header}");
    }
    for header in [
        format!("Basic {TOKEN_A}"),
        format!("Bearer{TOKEN_A}"),
        "Bearer ".to_owned(),
        format!("Bearer {TOKEN_A} extra"),
    ] {
        let r = d
            .http
            .post(format!("{}/v1/messages", d.base))
            .header("authorization", &header)
            .json(&json!({"to": "+85366100200", "text": "hello"}))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 401, "{header}");
    }
    d.stop().await;
}

both_stores! {
    async fn a_resend_at_the_announced_second_is_accepted(b: Backend) {
        let d = TestDaemon::start(b).await;
        for i in 0..3 {
            let (s, v, _) = d
                .post(
                    TOKEN_A,
                    "/v1/verifications",
                    json!({"purpose": "registration", "phone": format!("+8536610030{i}")}),
                )
                .await;
            assert_eq!(s, 201, "{v}");
            let at = time::OffsetDateTime::parse(
                v["resend_available_at"].as_str().expect("resend_available_at"),
                &time::format_description::well_known::Rfc3339,
            )
            .expect("RFC 3339");
            let at_ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
            // Move the daemon's clock to exactly the announced second, no later.
            let wait = at_ms - d.clock.now_ms();
            assert!(wait > 0, "announced in the future");
            d.clock.advance(Duration::from_millis(wait as u64));
            let id = v["id"].as_str().expect("id");
            let (s, body, _) = d
                .post(TOKEN_A, &format!("/v1/verifications/{id}/resend"), json!({}))
                .await;
            assert_eq!(s, 200, "resend at resend_available_at: {body}");
        }
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_cannot_hold_the_shutdown() {
    let sim = start_sim().await;
    let toml = config_toml(Backend::Memory, &sim.addr().to_string(), "");
    let config = otpgate::config::Config::from_toml(&toml, std::path::Path::new("test.toml"))
        .expect("test config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let options = otpgate::RunOptions {
        http: Some(otpgate::api::serve::HttpLimits {
            drain: Duration::from_secs(1),
            ..Default::default()
        }),
        ..Default::default()
    };
    let task = tokio::spawn(otpgate::run(
        config,
        listener,
        async {
            let _ = rx.await;
        },
        options,
    ));
    wait_ready_at(&format!("http://{addr}")).await;
    // A request whose body trickles in: in flight when the daemon is told to stop.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!(
            "POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"to\""
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = tx.send(());
    // The drain cap is 1 s, then the SMS drain (nothing queued) and the unbind.
    let stopped = tokio::time::timeout(Duration::from_secs(5), task).await;
    assert!(
        stopped.is_ok(),
        "the daemon did not stop within 5 s with a 1 s HTTP drain cap"
    );
    stopped
        .expect("stopped")
        .expect("task")
        .expect("run returned Ok");
    // And the slow client's connection was cut.
    assert!(
        closed_within(&mut s, Duration::from_secs(2))
            .await
            .is_some()
    );
}
