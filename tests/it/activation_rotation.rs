//! Server key rotation for activation codes and TOTP secrets (contract §6 "Key rotation"), over
//! real HTTP with the Redis store: what was made under a key keeps working after a restart with
//! that key in `security.retired_secret_keys`, and fails once the key is gone.

use otpgate::config::Secret;
use otpgate::purpose::Purpose;
use serde_json::json;

use super::totp::oathtool;
use crate::util::{Backend, TOKEN_A, TestDaemon, next_message, start_sim, test_prefix};

const K1: [u8; 32] = [0x11; 32];
const K2: [u8; 32] = [0x22; 32];

/// A Redis daemon on `prefix` with `current` and `retired` keys.
async fn daemon(prefix: &str, current: [u8; 32], retired: &[[u8; 32]]) -> TestDaemon {
    let prefix = prefix.to_owned();
    let retired: Vec<Secret> = retired
        .iter()
        .map(|k| Secret::new(hex::encode(k)))
        .collect();
    TestDaemon::start_with(Backend::Redis, start_sim().await, "", move |c| {
        c.clients[0]
            .purposes
            .extend([Purpose::Activation, Purpose::Totp]);
        c.store.key_prefix = prefix;
        c.security.secret_key = Some(Secret::new(hex::encode(current)));
        c.security.retired_secret_keys = retired;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activations_and_totp_survive_a_rotation_while_the_old_key_is_retired() {
    let prefix = test_prefix();
    let d = daemon(&prefix, K1, &[]).await;
    let mut rx = d.sim.subscribe();
    let (s, v, _) = d
        .post(
            TOKEN_A,
            "/v1/activations",
            json!({"account_id": "ent-1", "application_number": "A-1", "entity_number": "600123",
                   "phone": "+85366123456", "activation_url": "https://e.example/a"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let text = next_message(&mut rx).await.text.unwrap();
    let code = text
        .lines()
        .nth(1)
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    let (s, e, _) = d.post(TOKEN_A, "/v1/accounts/acc-1/totp", json!({})).await;
    assert_eq!(s, 201);
    let secret = e["secret"].as_str().unwrap().to_owned();
    let totp = |d: &TestDaemon, off: i64| oathtool(&secret, d.clock.now_ms() / 1000 + off * 30);
    let confirm = totp(&d, 0);
    let (s, r, _) = d
        .post(
            TOKEN_A,
            "/v1/accounts/acc-1/totp/confirm",
            json!({"code": confirm}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    d.stop().await;

    // Restarted with a new key, the old one retired: both still work.
    let d = daemon(&prefix, K2, &[K1]).await;
    d.clock.advance(std::time::Duration::from_secs(60));
    let (s, r, _) = d
        .post(
            TOKEN_A,
            "/v1/activations/redeem",
            json!({"application_number": "A-1", "entity_number": "600123", "code": code}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let (s, r, _) = d
        .post(
            TOKEN_A,
            "/v1/accounts/acc-1/totp/check",
            json!({"code": totp(&d, 0)}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    d.stop().await;

    // Without the old key: the sealed secret no longer opens (503, never a wrong approval).
    let d = daemon(&prefix, K2, &[]).await;
    d.clock.advance(std::time::Duration::from_secs(120));
    let (s, r, _) = d
        .post(
            TOKEN_A,
            "/v1/accounts/acc-1/totp/check",
            json!({"code": totp(&d, 0)}),
        )
        .await;
    assert_eq!(
        (s, &r["error"]["code"]),
        (503, &json!("unavailable")),
        "{r}"
    );
    d.stop().await;
}
