//! Server key rotation (`security.retired_secret_keys`), against both stores: a code made under
//! the old key still checks (and is sent again with that key) after the daemon moved to a new
//! `secret_key`; new verifications use the new key.

use std::sync::Arc;
use std::time::Duration;

use otpgate::config::Config;
use otpgate::otp::codes::{CodeDeriver, key_id};
use otpgate::otp::{NewVerification, Verifications};
use otpgate::outbox::{Body, Composer, Outbox, Routing, memory::MemoryOutbox};
use otpgate::purpose::Purpose;
use otpgate::store::Stores;
use serde_json::json;

use crate::both_stores;
use crate::util::*;

const K1: [u8; 32] = [0x11; 32];
const K2: [u8; 32] = [0x22; 32];

/// The verification service of a daemon holding `codes`, on `stores`.
fn service(config: &Config, stores: &Stores, outbox: &Outbox, codes: CodeDeriver) -> Verifications {
    let status = otpgate::smpp::SmscStatus::new("sim");
    Verifications {
        stores: stores.clone(),
        composer: Arc::new(Composer {
            codes,
            templates: otpgate::sms::Templates::load("One Account", "", None).unwrap(),
            activation: None,
        }),
        otp: config.otp.clone(),
        default_locale: otpgate::sms::Locale::En,
        outbox: outbox.clone(),
        routing: Arc::new(Routing::new(&config.smpp.smsc, &[status])),
        limits: Arc::new(otpgate::limits::Limiter::none()),
    }
}

/// The code of the next job in the outbox, rendered as a session of `svc` would.
async fn next_code(outbox: &Outbox, svc: &Verifications) -> (String, String) {
    let mut consumer = outbox.consumer(&[String::new()], "sim", 0, svc.routing.clone(), 8);
    let job = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("a job");
    let Body::Code { key_id, .. } = &job.body else {
        panic!("a code SMS");
    };
    (
        extract_code(&svc.composer.render(&job.body).expect("renders")),
        key_id.clone(),
    )
}

both_stores! {
    async fn a_pending_code_survives_a_key_rotation(b: Backend) {
        let config = Config::from_toml(&config_toml(b, "127.0.0.1:9", ""), std::path::Path::new("t.toml")).unwrap();
        let stores = match b {
            Backend::Memory => Stores::memory(Arc::new(otpgate::store::memory::MemoryStore::new())),
            Backend::Redis => {
                require_redis().await;
                Stores::redis(otpgate::store::redis::RedisStore::connect(&redis_url(), &[], &config.store.key_prefix).await.unwrap())
            }
        };
        let outbox = Outbox::Memory(Arc::new(MemoryOutbox::new(100)));
        let phones = otpgate::phone::PhonePolicy::new("MO", &[]).unwrap();
        let req = |phone: &str| NewVerification {
            purpose: Purpose::Registration,
            account_id: None,
            phone: Some(phones.parse(phone).unwrap()),
            locale: None,
            ip: None,
        };
        let now = otpgate::clock::system_now_ms();

        let before = service(&config, &stores, &outbox, CodeDeriver::new(K1));
        let old = before.create("client-a", req("+85366123010"), now).await.unwrap();
        assert_eq!(old.key_id, key_id(&K1));
        let (code, _) = next_code(&outbox, &before).await;

        // Restarted with secret_key = K2, retired = [K1].
        let after = service(&config, &stores, &outbox, CodeDeriver::with_retired(K2, &[K1]));
        let resent = after.resend("client-a", &Purpose::ALL, &old.id, now + 61_000).await.unwrap();
        assert_eq!(resent.key_id, key_id(&K1));
        let (again, job_key) = next_code(&outbox, &after).await;
        assert_eq!((again.as_str(), job_key.as_str()), (code.as_str(), key_id(&K1).as_str()), "sent again with its own key");
        after.check("client-a", &Purpose::ALL, &old.id, &code, now + 62_000).await.expect("the old code approves");

        let new = after.create("client-a", req("+85366123011"), now).await.unwrap();
        assert_eq!(new.key_id, key_id(&K2));
        let (new_code, _) = next_code(&outbox, &after).await;
        assert_eq!(new_code, CodeDeriver::new(K2).numeric("otp", &new.id, 6), "new codes use the new key");
        // Without the retired key, the old code is wrong.
        let forgot = service(&config, &stores, &outbox, CodeDeriver::new(K2));
        let other = forgot.create("client-a", req("+85366123012"), now).await.unwrap();
        let (_, _) = next_code(&outbox, &forgot).await;
        let k1_code = CodeDeriver::new(K1).numeric("otp", &other.id, 6);
        assert!(forgot.check("client-a", &Purpose::ALL, &other.id, &k1_code, now).await.is_err());
    }
}

/// The same through the real daemon: HTTP, SMPP to the simulator, Redis, and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_with_a_rotated_key_checks_the_code_sent_before() {
    let sim = start_sim().await;
    let prefix = test_prefix();
    let (p1, p2) = (prefix.clone(), prefix.clone());
    let first = TestDaemon::start_with(Backend::Redis, sim.clone(), "", move |c| {
        c.store.key_prefix = p1;
        c.security.secret_key = Some(otpgate::config::Secret::new(hex::encode(K1)));
    })
    .await;
    let (id, code, _) = first
        .create_and_receive(json!({"purpose": "registration", "phone": "+85366123020"}))
        .await;
    first.stop().await;

    let second = TestDaemon::start_with(Backend::Redis, sim.clone(), "", move |c| {
        c.store.key_prefix = p2;
        c.security.secret_key = Some(otpgate::config::Secret::new(hex::encode(K2)));
        c.security.retired_secret_keys = vec![otpgate::config::Secret::new(hex::encode(K1))];
    })
    .await;
    let (s, body, _) = second
        .post(
            TOKEN_A,
            &format!("/v1/verifications/{id}/check"),
            json!({"code": code}),
        )
        .await;
    assert_eq!((s, &body["status"]), (200, &json!("approved")), "{body}");
    let (new_id, new_code, _) = second
        .create_and_receive(json!({"purpose": "registration", "phone": "+85366123021"}))
        .await;
    assert_eq!(new_code, CodeDeriver::new(K2).numeric("otp", &new_id, 6));
    second.stop().await;
}

#[test]
fn retired_keys_are_validated_and_read_from_their_file() {
    let base = config_toml(Backend::Memory, "127.0.0.1:9", "");
    let bad = base.replace(
        "[security]\n",
        "[security]\nretired_secret_keys = [\"abc\"]\n",
    );
    let err = Config::from_toml(&bad, std::path::Path::new("t.toml")).unwrap_err();
    assert!(
        err.to_string().contains("security.retired_secret_keys[0]"),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("otpgate-keys-{}", otpgate::ids::random_tag()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("retired");
    std::fs::write(&file, format!("# rotated 2026-11\n{}\n\n", hex::encode(K1))).unwrap();
    let good = base.replace(
        "[security]\n",
        &format!(
            "[security]\nretired_secret_keys = [\"{}\"]\nretired_secret_keys_file = \"{}\"\n",
            hex::encode(K2),
            file.display()
        ),
    );
    let config = Config::from_toml(&good, std::path::Path::new("t.toml")).unwrap();
    assert_eq!(config.security.retired_key_bytes().unwrap(), vec![K2, K1]);
    std::fs::write(&file, "not a key\n").unwrap();
    let err = config.security.retired_key_bytes().unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
}
