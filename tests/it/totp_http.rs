//! TOTP over real HTTP against both stores (contract §3.5, §6): enrolment, confirm and check
//! with codes from Debian's `oathtool` at the daemon's (injected) time, ±1 step accepted and
//! ±2 refused, replay, the lock and its lifting, delete, events, and the secret never in Redis
//! in plaintext.

use std::time::Duration;

use otpgate::purpose::Purpose;
use serde_json::{Value, json};

use super::totp::oathtool;
use crate::both_stores;
use crate::util::{Backend, TOKEN_A, TOKEN_B, TestDaemon, start_sim};

async fn daemon(b: Backend) -> TestDaemon {
    let d = TestDaemon::start_with(b, start_sim().await, "", |c| {
        c.clients[0].purposes.push(Purpose::Totp);
    })
    .await;
    // One second into a time step, so that a test's steps are the ones it means.
    let now = d.clock.now_ms();
    d.clock.advance(Duration::from_millis(
        (30_000 - now.rem_euclid(30_000) + 1_000) as u64,
    ));
    d
}

/// `oathtool`'s code at the daemon's time plus `steps` time steps.
fn code_at(d: &TestDaemon, secret: &str, steps: i64) -> String {
    oathtool(secret, d.clock.now_ms() / 1000 + steps * 30)
}

async fn enrol(d: &TestDaemon, account: &str) -> String {
    let (s, v, _) = d
        .post(TOKEN_A, &format!("/v1/accounts/{account}/totp"), json!({}))
        .await;
    assert_eq!(s, 201, "{v}");
    v["secret"].as_str().unwrap().to_owned()
}

async fn send(d: &TestDaemon, account: &str, op: &str, code: &str) -> (u16, Value) {
    let (s, v, _) = d
        .post(
            TOKEN_A,
            &format!("/v1/accounts/{account}/totp/{op}"),
            json!({"code": code}),
        )
        .await;
    (s, v)
}

fn wrong(code: &str) -> String {
    let d = (code.as_bytes()[0] - b'0' + 1) % 10;
    format!("{d}{}", &code[1..])
}

both_stores! {
    async fn enrol_confirm_check_replay_and_delete(b: Backend) {
        let d = daemon(b).await;
        let r = d.http.post(format!("{}/v1/accounts/acc-1/totp", d.base)).bearer_auth(TOKEN_A).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        let secret = v["secret"].as_str().unwrap().to_owned();
        assert_eq!(secret.len(), 32, "{v}");
        let uri = v["otpauth_uri"].as_str().unwrap();
        assert!(uri.starts_with("otpauth://totp/One%20Account:acc-1?"), "{uri}");
        assert!(uri.contains(&format!("secret={secret}")), "{uri}");
        assert!(uri.contains("issuer=One%20Account"), "{uri}");
        assert!(v["qr_svg"].as_str().unwrap().starts_with("<svg"), "{v}");

        // Not confirmed yet: check is 404.
        assert_eq!(send(&d, "acc-1", "check", &code_at(&d, &secret, 0)).await.0, 404);
        let (s, r) = send(&d, "acc-1", "confirm", &wrong(&code_at(&d, &secret, 0))).await;
        assert_eq!((s, &r["error"]["attempts_remaining"]), (422, &json!(4)), "{r}");
        let c0 = code_at(&d, &secret, 0);
        let (s, r) = send(&d, "acc-1", "confirm", &c0).await;
        assert_eq!((s, &r), (200, &json!({"status": "active"})), "{r}");
        // Confirm used up its step: the same code is a replay.
        let (s, r) = send(&d, "acc-1", "check", &c0).await;
        assert_eq!((s, &r["error"]["code"]), (422, &json!("code_incorrect")), "{r}");
        assert_eq!(send(&d, "acc-1", "confirm", &c0).await.0, 409);

        d.clock.advance(Duration::from_secs(30));
        let c1 = code_at(&d, &secret, 0);
        let (s, r) = send(&d, "acc-1", "check", &c1).await;
        assert_eq!((s, &r), (200, &json!({"status": "approved"})), "{r}");
        assert_eq!(send(&d, "acc-1", "check", &c1).await.0, 422, "replay");

        let (s, ev) = d.get(TOKEN_A, "/v1/accounts/acc-1/events").await;
        assert_eq!(s, 200);
        let types: Vec<&str> = ev["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["totp_approved", "totp_failed", "totp_enrolled"], "{ev}");

        // Another client without the purpose: 403.
        assert_eq!(d.post(TOKEN_B, "/v1/accounts/acc-1/totp/check", json!({"code": c1})).await.0, 403);
        let del = |tok: &'static str| d.http.delete(format!("{}/v1/accounts/acc-1/totp", d.base)).bearer_auth(tok).send();
        assert_eq!(del(TOKEN_A).await.unwrap().status(), 204);
        let (s, r) = send(&d, "acc-1", "check", &code_at(&d, &secret, 1)).await;
        assert_eq!((s, &r["error"]["code"]), (404, &json!("not_found")), "{r}");
        assert_eq!(del(TOKEN_A).await.unwrap().status(), 404);
        d.stop().await;
    }

    async fn one_step_off_is_accepted_two_are_not(b: Backend) {
        let d = daemon(b).await;
        let secret = enrol(&d, "acc-2").await;
        assert_eq!(send(&d, "acc-2", "confirm", &code_at(&d, &secret, 0)).await.0, 200);
        d.clock.advance(Duration::from_secs(5 * 30));
        // Two steps either way: refused (and counted as wrong).
        for off in [-2, 2] {
            let (s, r) = send(&d, "acc-2", "check", &code_at(&d, &secret, off)).await;
            assert_eq!(s, 422, "{off}: {r}");
            assert!(r["error"]["attempts_remaining"].is_number(), "{r}");
        }
        // One step behind, then one ahead: both accepted.
        assert_eq!(send(&d, "acc-2", "check", &code_at(&d, &secret, -1)).await.0, 200);
        assert_eq!(send(&d, "acc-2", "check", &code_at(&d, &secret, 1)).await.0, 200);
        // The current step is now earlier than the last used: a replay.
        assert_eq!(send(&d, "acc-2", "check", &code_at(&d, &secret, 0)).await.0, 422);
        d.stop().await;
    }

    async fn wrong_codes_lock_until_a_right_code_after_the_ttl(b: Backend) {
        let d = daemon(b).await;
        let secret = enrol(&d, "acc-3").await;
        assert_eq!(send(&d, "acc-3", "confirm", &code_at(&d, &secret, 0)).await.0, 200);
        d.clock.advance(Duration::from_secs(30));
        let bad = wrong(&code_at(&d, &secret, 0));
        // otp.max_attempts = 5: four 422s, the fifth locks.
        for remaining in [4, 3, 2, 1] {
            let (s, r) = send(&d, "acc-3", "check", &bad).await;
            assert_eq!((s, &r["error"]["attempts_remaining"]), (422, &json!(remaining)), "{r}");
        }
        let (s, r) = send(&d, "acc-3", "check", &bad).await;
        assert_eq!((s, &r["error"]["code"]), (423, &json!("too_many_attempts")), "{r}");
        // During the lock even the right code is 423.
        assert_eq!(send(&d, "acc-3", "check", &code_at(&d, &secret, 0)).await.0, 423);
        d.clock.advance(Duration::from_secs(4 * 60));
        assert_eq!(send(&d, "acc-3", "check", &code_at(&d, &secret, 0)).await.0, 423);
        // After otp.ttl (5 min) a right code approves and lifts the lock.
        d.clock.advance(Duration::from_secs(60));
        assert_eq!(send(&d, "acc-3", "check", &code_at(&d, &secret, 0)).await.0, 200);
        let (s, r) = send(&d, "acc-3", "check", &wrong(&code_at(&d, &secret, 1))).await;
        assert_eq!((s, &r["error"]["attempts_remaining"]), (422, &json!(4)), "{r}");
        d.stop().await;
    }

    async fn confirm_answers_423_on_its_last_attempt(b: Backend) {
        let d = daemon(b).await;
        let secret = enrol(&d, "acc-4").await;
        let bad = wrong(&code_at(&d, &secret, 0));
        for _ in 0..4 {
            assert_eq!(send(&d, "acc-4", "confirm", &bad).await.0, 422);
        }
        assert_eq!(send(&d, "acc-4", "confirm", &bad).await.0, 423);
        assert_eq!(send(&d, "acc-4", "confirm", &code_at(&d, &secret, 0)).await.0, 423);
        d.stop().await;
    }
}

/// The Redis record holds the secret only sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_the_secret_only_sealed() {
    let d = daemon(Backend::Redis).await;
    let secret = enrol(&d, "acc-5").await;
    let raw = data_encoding_base32(&secret);
    let client = redis::Client::open(crate::util::redis_url().as_str()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let prefix = d.config.store.key_prefix.clone();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}t:*"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let fields: Vec<Vec<u8>> = redis::cmd("HGETALL")
        .arg(&keys[0])
        .query_async(&mut c)
        .await
        .unwrap();
    let all: Vec<u8> = fields.concat();
    assert!(
        String::from_utf8_lossy(&all).contains("v1."),
        "a sealed secret is there"
    );
    assert!(
        !String::from_utf8_lossy(&all)
            .to_uppercase()
            .contains(&secret),
        "base32 secret in Redis"
    );
    assert!(
        !all.windows(raw.len()).any(|w| w == raw.as_slice()),
        "raw secret in Redis"
    );
    // And it still works.
    assert_eq!(
        send(&d, "acc-5", "confirm", &code_at(&d, &secret, 0))
            .await
            .0,
        200
    );
    d.stop().await;
}

/// RFC 4648 base32 (no padding) decoded, for the raw-bytes check.
fn data_encoding_base32(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits: u64 = 0;
    let mut n = 0;
    let mut out = Vec::new();
    for ch in s.bytes() {
        let v = A.iter().position(|&x| x == ch).unwrap() as u64;
        bits = (bits << 5) | v;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}
