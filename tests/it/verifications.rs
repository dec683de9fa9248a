//! Verifications over real HTTP, real SMPP to the simulator, against both stores: every status
//! and error code of contract §3.1, the texts as the SMSC receives them, concurrency.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_stores;
use crate::util::*;

/// A second token of `client-a` (added by a test's config tweak).
const TOKEN_C: &str = "test-token-client-a-transactions-only";

fn reg(phone: &str) -> Value {
    json!({"purpose": "registration", "phone": phone})
}

both_stores! {
    async fn right_code_approves_once(b: Backend) {
        let d = TestDaemon::start(b).await;
        let (id, code, msg) = d.create_and_receive(reg("+85366123456")).await;
        assert_eq!(msg.destination_addr, "85366123456");
        assert_eq!((msg.dest_addr_ton, msg.dest_addr_npi), (1, 1));
        assert_eq!(msg.registered_delivery, 1);
        assert!(msg.validity_period.ends_with('R'), "relative validity: {}", msg.validity_period);

        let (s, body) = d.get(TOKEN_A, &format!("/v1/verifications/{id}")).await;
        assert_eq!(s, 200);
        assert_eq!(body["status"], "pending");
        assert_eq!(body["phone_masked"], "+853****3456");

        let (s, body, _) = d.post(TOKEN_A, &format!("/v1/verifications/{id}/check"), json!({"code": code})).await;
        assert_eq!((s, &body["status"]), (200, &json!("approved")), "{body}");
        let (s, body, _) = d.post(TOKEN_A, &format!("/v1/verifications/{id}/check"), json!({"code": code})).await;
        assert_eq!((s, &body["error"]["code"]), (409, &json!("already_used")));
        let (_, body) = d.get(TOKEN_A, &format!("/v1/verifications/{id}")).await;
        assert_eq!(body["status"], "approved");
        d.stop().await;
    }

    async fn wrong_codes_count_down_then_lock(b: Backend) {
        let d = TestDaemon::start(b).await;
        let (id, code, _) = d.create_and_receive(reg("+85366123457")).await;
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let path = format!("/v1/verifications/{id}/check");
        for remaining in (1..=4).rev() {
            let (s, body, _) = d.post(TOKEN_A, &path, json!({"code": wrong})).await;
            assert_eq!(s, 422, "{body}");
            assert_eq!(body["error"]["code"], "code_incorrect");
            assert_eq!(body["error"]["attempts_remaining"], remaining);
        }
        let (s, body, _) = d.post(TOKEN_A, &path, json!({"code": wrong})).await;
        assert_eq!((s, &body["error"]["code"]), (423, &json!("too_many_attempts")));
        // Locked for good: even the right code is refused.
        let (s, _, _) = d.post(TOKEN_A, &path, json!({"code": code})).await;
        assert_eq!(s, 423);
        let (_, body) = d.get(TOKEN_A, &format!("/v1/verifications/{id}")).await;
        assert_eq!(body["status"], "locked");
        assert_eq!(body["attempts_remaining"], 0);
        d.stop().await;
    }

    async fn expired_codes_answer_410(b: Backend) {
        let d = TestDaemon::start(b).await;
        let (id, code, _) = d.create_and_receive(reg("+85366123458")).await;
        d.clock.advance(Duration::from_secs(301));
        let (s, body, _) = d.post(TOKEN_A, &format!("/v1/verifications/{id}/check"), json!({"code": code})).await;
        assert_eq!((s, &body["error"]["code"]), (410, &json!("expired")));
        let (s, _, _) = d.post(TOKEN_A, &format!("/v1/verifications/{id}/resend"), json!({})).await;
        assert_eq!(s, 410);
        let (_, body) = d.get(TOKEN_A, &format!("/v1/verifications/{id}")).await;
        assert_eq!(body["status"], "expired");
        d.stop().await;
    }

    async fn resend_sends_the_same_code_within_limits(b: Backend) {
        let d = TestDaemon::start(b).await;
        let (id, code, _) = d.create_and_receive(reg("+85366123459")).await;
        let path = format!("/v1/verifications/{id}/resend");

        let (s, body, headers) = d.post(TOKEN_A, &path, json!({})).await;
        assert_eq!(s, 429, "{body}");
        assert_eq!(body["error"]["code"], "rate_limited");
        assert_eq!(body["error"]["limit"], "resend_cooldown");
        let retry = body["error"]["retry_after_s"].as_u64().expect("retry_after_s");
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(headers["retry-after"].to_str().unwrap(), retry.to_string());

        let (_, before) = d.get(TOKEN_A, &format!("/v1/verifications/{id}")).await;
        for left in [1, 0] {
            d.clock.advance(Duration::from_secs(61));
            let mut rx = d.sim.subscribe();
            let (s, body, _) = d.post(TOKEN_A, &path, json!({})).await;
            assert_eq!(s, 200, "{body}");
            assert_eq!(body["sends_remaining"], left);
            assert_eq!(body["expires_at"], before["expires_at"], "resend must not move the expiry");
            assert_ne!(body["message_id"], before["message_id"]);
            let again = next_message(&mut rx).await;
            assert_eq!(extract_code(again.text.as_deref().unwrap()), code, "same code on resend");
        }
        d.clock.advance(Duration::from_secs(61));
        let (s, body, headers) = d.post(TOKEN_A, &path, json!({})).await;
        assert_eq!(s, 429);
        assert_eq!(body["error"]["limit"], "max_sends");
        assert!(headers.contains_key("retry-after"));
        // The code still works.
        let (s, _, _) = d.post(TOKEN_A, &format!("/v1/verifications/{id}/check"), json!({"code": code})).await;
        assert_eq!(s, 200);
        d.stop().await;
    }

    async fn a_new_verification_cancels_the_pending_one(b: Backend) {
        let d = TestDaemon::start(b).await;
        let (old, old_code, _) = d.create_and_receive(json!({"purpose": "password_reset", "phone": "+85366120001", "account_id": "acc-1"})).await;
        let (new, new_code, _) = d.create_and_receive(json!({"purpose": "password_reset", "phone": "+85366120001", "account_id": "acc-1"})).await;
        assert_ne!(old, new);
        let (s, _, _) = d.post(TOKEN_A, &format!("/v1/verifications/{old}/check"), json!({"code": old_code})).await;
        assert_eq!(s, 404, "a canceled verification is gone");
        let (_, body) = d.get(TOKEN_A, &format!("/v1/verifications/{old}")).await;
        assert_eq!(body["status"], "canceled");
        // Another purpose of the same account is independent.
        let (other, other_code, _) = d.create_and_receive(json!({"purpose": "transaction", "phone": "+85366120001", "account_id": "acc-1"})).await;
        let (s, _, _) = d.post(TOKEN_A, &format!("/v1/verifications/{new}/check"), json!({"code": new_code})).await;
        assert_eq!(s, 200);
        let (s, _, _) = d.post(TOKEN_A, &format!("/v1/verifications/{other}/check"), json!({"code": other_code})).await;
        assert_eq!(s, 200);
        d.stop().await;
    }

    async fn authentication_and_client_isolation(b: Backend) {
        let d = TestDaemon::start(b).await;
        let r = d.http.post(format!("{}/v1/verifications", d.base)).json(&reg("+85366123456")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        let (s, _, _) = d.post("not-a-token", "/v1/verifications", reg("+85366123456")).await;
        assert_eq!(s, 401);
        // client-b may only use `transaction`.
        let (s, body, _) = d.post(TOKEN_B, "/v1/verifications", reg("+85366123456")).await;
        assert_eq!((s, &body["error"]["code"]), (403, &json!("forbidden")));
        let (id, code, _) = d.create_and_receive(json!({"purpose": "transaction", "phone": "+85366123456"})).await;
        // client-b cannot see or check client-a's verification.
        let (s, body) = d.get(TOKEN_B, &format!("/v1/verifications/{id}")).await;
        assert_eq!((s, &body["error"]["code"]), (404, &json!("not_found")));
        let (s, _, _) = d.post(TOKEN_B, &format!("/v1/verifications/{id}/check"), json!({"code": code})).await;
        assert_eq!(s, 404);
        let (s, _, _) = d.post(TOKEN_B, &format!("/v1/verifications/{id}/resend"), json!({})).await;
        assert_eq!(s, 404);
        let (s, _) = d.get(TOKEN_A, "/v1/verifications/ver_doesnotexist").await;
        assert_eq!(s, 404);
        d.stop().await;
    }

    async fn bad_input_gets_the_contract_error(b: Backend) {
        let d = TestDaemon::start(b).await;
        let cases = [
            (json!({"purpose": "registration", "phone": "+85366123456", "colour": "red"}), 400, "invalid_request", Some("colour")),
            (json!({"purpose": "registration"}), 400, "invalid_request", Some("phone")),
            (json!({"phone": "+85366123456"}), 400, "invalid_request", Some("purpose")),
            (json!({"purpose": "selfie", "phone": "+85366123456"}), 400, "invalid_request", Some("purpose")),
            (json!({"purpose": "registration", "phone": "+85366123456", "locale": "fr"}), 400, "invalid_request", Some("locale")),
            (json!({"purpose": "registration", "phone": "12"}), 400, "invalid_phone", None),
            (json!({"purpose": "registration", "phone": "+14155550123"}), 422, "country_not_allowed", None),
            (json!({"purpose": "login", "account_id": "acc-9"}), 422, "phone_not_registered", None),
            (json!({"purpose": "login", "phone": "+85366123456"}), 400, "invalid_request", Some("account_id")),
            (json!({"purpose": "registration", "phone": "+85366123456", "context": {"ip": "203.0.113.7", "x": 1}}), 400, "invalid_request", Some("context.x")),
        ];
        for (body, status, code, field) in cases {
            let (s, resp, _) = d.post(TOKEN_A, "/v1/verifications", body.clone()).await;
            assert_eq!(s, status, "{body} → {resp}");
            assert_eq!(resp["error"]["code"], code, "{body} → {resp}");
            if let Some(f) = field {
                assert_eq!(resp["error"]["field"], f, "{body} → {resp}");
            }
        }
        // Not JSON at all.
        let r = d.http.post(format!("{}/v1/verifications", d.base)).bearer_auth(TOKEN_A)
            .header("content-type", "application/json").body("{nope").send().await.unwrap();
        assert_eq!(r.status(), 400);
        // Over max_body_bytes (2048 in tests).
        let big = json!({"purpose": "registration", "phone": "+85366123456", "account_id": "x".repeat(4000)});
        let (s, resp, _) = d.post(TOKEN_A, "/v1/verifications", big).await;
        assert_eq!((s, &resp["error"]["code"]), (413, &json!("payload_too_large")));
        // National form with the default region MO.
        let (s, resp, _) = d.post(TOKEN_A, "/v1/verifications", reg("66123456")).await;
        assert_eq!((s, &resp["phone_masked"]), (201, &json!("+853****3456")));
        d.stop().await;
    }

    async fn fifty_concurrent_right_checks_approve_exactly_once(b: Backend) {
        let d = TestDaemon::start(b).await;
        let (id, code, _) = d.create_and_receive(reg("+85366123450")).await;
        let path = format!("{}/v1/verifications/{id}/check", d.base);
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let http = d.http.clone();
            let path = path.clone();
            let code = code.clone();
            tasks.push(tokio::spawn(async move {
                http.post(path).bearer_auth(TOKEN_A).json(&json!({"code": code})).send().await.unwrap().status().as_u16()
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 49, "{statuses:?}");
        d.stop().await;
    }

    async fn login_naming_a_phone_is_refused_and_sends_nothing(b: Backend) {
        // No phone is registered to any account yet (account phones come later), so a login
        // code may go to no number: naming one is 422, and nothing is queued for it.
        let d = TestDaemon::start(b).await;
        let mut rx = d.sim.subscribe();
        let (s, body, _) = d.post(TOKEN_A, "/v1/verifications", json!({"purpose": "login", "account_id": "acc-1", "phone": "+85366123001"})).await;
        assert_eq!((s, &body["error"]["code"]), (422, &json!("phone_not_registered")), "{body}");
        let (s, _, _) = d.post(TOKEN_A, "/v1/verifications", reg("+85366123002")).await;
        assert_eq!(s, 201);
        let first = next_message(&mut rx).await;
        assert_eq!(first.destination_addr, "85366123002", "the refused login queued nothing");
        d.stop().await;
    }

    async fn check_requires_the_purpose_and_counts_nothing_without_it(b: Backend) {
        // Same client name, a second token that lost `registration` (as after a config change).
        let d = TestDaemon::start_with(b, start_sim().await, "", |c| {
            c.clients.push(otpgate::config::ClientConfig {
                name: "client-a".into(),
                key_sha256: sha256_hex(TOKEN_C),
                purposes: vec![otpgate::purpose::Purpose::Transaction],
            });
        })
        .await;
        let (id, code, _) = d.create_and_receive(reg("+85366123003")).await;
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let path = format!("/v1/verifications/{id}/check");
        for c in [wrong, code.as_str()] {
            let (s, body, _) = d.post(TOKEN_C, &path, json!({"code": c})).await;
            assert_eq!((s, &body["error"]["code"]), (403, &json!("forbidden")), "{body}");
        }
        let (_, v) = d.get(TOKEN_A, &format!("/v1/verifications/{id}")).await;
        assert_eq!((&v["status"], &v["attempts_remaining"]), (&json!("pending"), &json!(5)), "{v}");
        let (s, _, _) = d.post(TOKEN_A, &path, json!({"code": code})).await;
        assert_eq!(s, 200);
        d.stop().await;
    }

    async fn full_width_digits_are_the_digits_they_show(b: Backend) {
        let d = TestDaemon::start(b).await;
        let (id, code, _) = d.create_and_receive(reg("+85366123004")).await;
        let full_width: String = code
            .chars()
            .map(|c| char::from_u32(0xFF10 + c.to_digit(10).unwrap()).unwrap())
            .collect();
        assert_ne!(full_width, code);
        let (s, body, _) = d.post(TOKEN_A, &format!("/v1/verifications/{id}/check"), json!({"code": full_width})).await;
        assert_eq!((s, &body["status"]), (200, &json!("approved")), "{body}");
        d.stop().await;
    }

    async fn unroutable_numbers_are_refused_before_anything_is_queued(b: Backend) {
        // The one SMSC takes +853 only: a Hong Kong number (an allowed country) has no route.
        let d = TestDaemon::start_with(b, start_sim().await, "routes = [\"+853\"]\n", |_| {}).await;
        let mut rx = d.sim.subscribe();
        let (s, body, _) = d.post(TOKEN_A, "/v1/verifications", reg("+85261234567")).await;
        assert_eq!((s, &body["error"]["code"]), (422, &json!("country_not_allowed")), "{body}");
        let (s, body, _) = d.post(TOKEN_A, "/v1/messages", json!({"to": "+85261234567", "text": "hi"})).await;
        assert_eq!((s, &body["error"]["code"]), (422, &json!("country_not_allowed")), "{body}");
        if b == Backend::Redis {
            // Before the fix these waited in the default route's streams, which no SMSC reads.
            let keys = otpgate::store::keys::Keys::new(&d.config.store.key_prefix);
            let client = redis::Client::open(redis_url()).unwrap();
            let mut c = client.get_multiplexed_async_connection().await.unwrap();
            for p in otpgate::outbox::Priority::ALL {
                let n: usize = redis::cmd("XLEN").arg(keys.outbox_stream("", p)).query_async(&mut c).await.unwrap();
                assert_eq!(n, 0, "nothing queued on the default route ({p:?})");
            }
        }
        let (s, _, _) = d.post(TOKEN_A, "/v1/verifications", reg("+85366123005")).await;
        assert_eq!(s, 201);
        assert_eq!(next_message(&mut rx).await.destination_addr, "85366123005");
        d.stop().await;
    }

    async fn code_texts_in_five_locales(b: Backend) {
        let d = TestDaemon::start(b).await;
 // (locale, data_coding, parts, text): pt and vi need UCS-2 (ó, ç, ã, ự…) and are
        // longer than 70 characters, so they take two parts.
        let expected = [
            ("en", 0u8, 1usize, "{code} is your One Account verification code. It expires in 5 minutes. Do not share it with anyone."),
            ("zh-Hant", 8, 1, "【One Account】您的驗證碼為 {code}，5 分鐘內有效。請勿向任何人透露。"),
            ("zh-Hans", 8, 1, "【One Account】您的验证码为 {code}，5 分钟内有效。请勿向任何人泄露。"),
            ("pt", 8, 2, "One Account: o seu código de verificação é {code}. Válido por 5 minutos. Não o partilhe com ninguém."),
            ("vi", 8, 2, "One Account: Mã xác thực của bạn là {code}, có hiệu lực trong 5 phút. Không chia sẻ mã này cho bất kỳ ai."),
        ];
        for (i, (locale, dc, parts, text)) in expected.iter().enumerate() {
            let phone = format!("+8536612300{i}");
            let (_, code, msg) = d.create_and_receive(json!({"purpose": "registration", "phone": phone, "locale": locale})).await;
            assert_eq!(msg.text.as_deref(), Some(text.replace("{code}", &code).as_str()), "{locale}");
            assert_eq!(msg.data_coding, *dc, "{locale}");
            assert_eq!(msg.parts, *parts, "{locale}");
            assert_eq!((msg.source_addr.as_str(), msg.source_addr_ton, msg.source_addr_npi), ("OneAccount", 5, 0));
        }
        d.stop().await;
    }
}

/// A per-purpose override of `ttl` changes `{minutes}` (rounded up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_purpose_ttl_override_changes_minutes() {
    let sim = start_sim().await;
    let d = TestDaemon::start_with(Backend::Memory, sim, "", |c| {
        c.otp.purposes.insert(
            otpgate::purpose::Purpose::Transaction,
            otpgate::config::OtpOverride {
                ttl: Some(Duration::from_secs(601)),
                ..Default::default()
            },
        );
    })
    .await;
    let (_, code, msg) = d
        .create_and_receive(json!({"purpose": "transaction", "phone": "+85366123456"}))
        .await;
    assert_eq!(
        msg.text.as_deref(),
        Some(format!("{code} is your One Account verification code. It expires in 11 minutes. Do not share it with anyone.").as_str())
    );
    d.stop().await;
}
