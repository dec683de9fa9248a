//! Operations endpoints: readiness with a store outage, Prometheus metrics after traffic,
//! the OpenAPI description of every route.

use serde_json::{Value, json};

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_verifications_and_sms() {
    let d = TestDaemon::start(Backend::Memory).await;
    let (id, code, _) = d
        .create_and_receive(
            json!({"purpose": "password_reset", "account_id": "acc-m", "phone": "+85366123456"}),
        )
        .await;
    let (s, _, _) = d
        .post(
            TOKEN_A,
            &format!("/v1/verifications/{id}/check"),
            json!({"code": code}),
        )
        .await;
    assert_eq!(s, 200);
    // The receipt arrives right after the submit; wait for it to be applied.
    for _ in 0..100 {
        let (_, v) = d.get(TOKEN_A, &format!("/v1/verifications/{id}")).await;
        if v["delivery"] == "delivered" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let text = d.metrics().await;
    for needle in [
        r#"otpgate_http_requests_total{route="/v1/verifications",method="POST",status="201"}"#,
        r#"otpgate_verifications_total{purpose="password_reset",outcome="approved"}"#,
        r#"otpgate_sms_total{smsc="sim",status="delivered"}"#,
        r#"otpgate_smpp_binds_up{smsc="sim"} 1"#,
        "otpgate_smpp_submit_seconds",
        "otpgate_sms_queue_depth",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route() {
    let d = TestDaemon::start(Backend::Memory).await;
    let v: Value = d
        .http
        .get(format!("{}/openapi.json", d.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["openapi"].as_str().unwrap().starts_with("3."));
    let paths = v["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/v1/verifications", "post"),
        ("/v1/verifications/{id}", "get"),
        ("/v1/verifications/{id}/resend", "post"),
        ("/v1/verifications/{id}/check", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    let (s, _) = d.get("", "/healthz").await;
    assert_eq!(s, 200);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_answers_503_and_readyz_names_the_store() {
    // A Redis that is not there: nothing listens on this port.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", dead.local_addr().unwrap());
    drop(dead);
    let sim = start_sim().await;
    let toml = config_toml(Backend::Memory, &sim.addr().to_string(), "").replace(
        "backend = \"memory\"",
        &format!("backend = \"redis\"\nredis_url = \"{url}\""),
    );
    let config = otpgate::config::Config::from_toml(&toml, std::path::Path::new("t.toml")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(otpgate::run(
        config,
        listener,
        async {
            let _ = rx.await;
        },
        Default::default(),
    ));
    let http = reqwest::Client::new();
    let mut ready = None;
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            ready = Some((r.status().as_u16(), r.json::<Value>().await.unwrap()));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, body) = ready.expect("daemon answers while Redis is down");
    assert_eq!(status, 503);
    assert_eq!(body["store"], "down");
    let r = http
        .post(format!("{base}/v1/verifications"))
        .bearer_auth(TOKEN_A)
        .json(&json!({"purpose": "registration", "phone": "+85366123456"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        sim.received().is_empty(),
        "nothing sent when nothing was stored"
    );
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}
