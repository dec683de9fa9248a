//! Activations over real HTTP, real SMPP to the simulator, against both stores: every status and
//! error of contract §3.4, the exact activation texts of §4 as the SMSC receives them, the
//! identical 422 bodies, the lock, re-issue, input normalisation, concurrency, events, message
//! visibility, and no code or number in Redis.

use std::time::Duration;

use otpgate::purpose::Purpose;
use serde_json::{Value, json};

use crate::both_stores;
use crate::util::{Backend, TOKEN_A, TOKEN_B, TestDaemon, next_message, start_sim};

const URL: &str = "https://entity-account.example/activate";

/// A daemon whose client A may use `activation` (and `totp`); 3 attempts per activation.
async fn daemon(b: Backend) -> TestDaemon {
    TestDaemon::start_with(b, start_sim().await, "", |c| {
        c.clients[0]
            .purposes
            .extend([Purpose::Activation, Purpose::Totp]);
        c.activation.max_attempts = 3;
    })
    .await
}

/// Issues an activation; returns the 201 body and the SMS text the SMSC received.
async fn issue(d: &TestDaemon, body: Value) -> (Value, String) {
    let mut rx = d.sim.subscribe();
    let (status, v, _) = d.post(TOKEN_A, "/v1/activations", body).await;
    assert_eq!(status, 201, "issue: {v}");
    let msg = next_message(&mut rx).await;
    assert_eq!(msg.destination_addr, "85366123456");
    (v, msg.text.expect("decoded text"))
}

fn request(account: &str, application: &str, entity: Option<&str>, locale: &str) -> Value {
    let mut v = json!({
        "account_id": account, "application_number": application,
        "phone": "+85366123456", "activation_url": URL, "locale": locale,
    });
    if let Some(e) = entity {
        v["entity_number"] = json!(e);
    }
    v
}

/// The code in an activation SMS: the second line, after its label.
fn code_of(text: &str) -> String {
    let line = text.lines().nth(1).expect("a code line");
    line.rsplit([' ', '：']).next().unwrap().to_owned()
}

/// POST returning the status and the raw body bytes.
async fn post_raw(d: &TestDaemon, path: &str, body: Value) -> (u16, Vec<u8>) {
    let r = d
        .http
        .post(format!("{}{path}", d.base))
        .bearer_auth(TOKEN_A)
        .json(&body)
        .send()
        .await
        .expect("request");
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

async fn redeem(
    d: &TestDaemon,
    application: &str,
    entity: Option<&str>,
    code: &str,
) -> (u16, Value) {
    let mut body = json!({"application_number": application, "code": code});
    if let Some(e) = entity {
        body["entity_number"] = json!(e);
    }
    let (s, v, _) = d.post(TOKEN_A, "/v1/activations/redeem", body).await;
    (s, v)
}

const TEXTS: [(&str, &str); 5] = [
    (
        "en",
        "One Account account activation\nActivation code: {code}\nEntity number: 600123\nActivate at: https://entity-account.example/activate",
    ),
    (
        "zh-Hant",
        "One Account帳戶啟動\n啟動碼：{code}\n實體編號：600123\n啟動網址：https://entity-account.example/activate",
    ),
    (
        "zh-Hans",
        "One Account账户激活\n激活码：{code}\n实体编号：600123\n激活网址：https://entity-account.example/activate",
    ),
    (
        "pt",
        "Ativação da conta One Account\nCódigo de ativação: {code}\nNúmero da entidade: 600123\nAtivar em: https://entity-account.example/activate",
    ),
    (
        "vi",
        "Kích hoạt tài khoản One Account\nMã kích hoạt: {code}\nMã số tổ chức: 600123\nKích hoạt tại: https://entity-account.example/activate",
    ),
];

both_stores! {
    async fn activation_texts_in_five_locales(b: Backend) {
        let d = daemon(b).await;
        for (i, (locale, with)) in TEXTS.iter().enumerate() {
            let (_, text) = issue(&d, request(&format!("ent-{i}"), &format!("A-{i}"), Some("600123"), locale)).await;
            let code = code_of(&text);
            assert_eq!(code.len(), 10, "{text}");
            assert!(code.bytes().all(|c| b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ".contains(&c)), "{code}");
            assert_eq!(text, with.replace("{code}", &code), "{locale} with entity number");
            // Without an entity number the entity line is left out.
            let (_, text) = issue(&d, request(&format!("ent-n{i}"), &format!("B-{i}"), None, locale)).await;
            let code = code_of(&text);
            let without: Vec<&str> = with.lines().enumerate().filter(|(n, _)| *n != 2).map(|(_, l)| l).collect();
            assert_eq!(text, without.join("\n").replace("{code}", &code), "{locale} without");
        }
        d.stop().await;
    }

    async fn redeems_once_and_reads_back(b: Backend) {
        let d = daemon(b).await;
        let mut req = request("ent-778", "A2026-000123", Some("600123"), "en");
        req["context"] = json!({"ip": "203.0.113.7"});
        let (v, text) = issue(&d, req).await;
        assert_eq!(v["status"], "pending");
        assert_eq!(v["phone_masked"], "+853****3456");
        let id = v["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("act_"), "{v}");
        assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
        let message_id = v["message_id"].as_str().unwrap().to_owned();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 5, "{v}");
        let code = code_of(&text);

        let (s, r) = redeem(&d, "A2026-000123", Some("600123"), &code).await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r, json!({"id": id, "account_id": "ent-778", "status": "redeemed"}));
        let (s, r) = redeem(&d, "A2026-000123", Some("600123"), &code).await;
        assert_eq!((s, &r["error"]["code"]), (409, &json!("already_used")), "{r}");

        let (s, g) = d.get(TOKEN_A, &format!("/v1/activations/{id}")).await;
        assert_eq!(s, 200, "{g}");
        assert_eq!(g["status"], "redeemed");
        assert_eq!(g["account_id"], "ent-778");
        assert!(g["delivery"].is_string(), "{g}");
        // The SMS's delivery: visible to the client that issued it, to no one else.
        let (s, m) = d.get(TOKEN_A, &format!("/v1/messages/{message_id}")).await;
        assert_eq!(s, 200, "{m}");
        assert_eq!(m["id"], message_id.as_str());
        assert_eq!(d.get(TOKEN_B, &format!("/v1/messages/{message_id}")).await.0, 404);
        // Another client, without the purpose: 403; unknown id: 404.
        assert_eq!(d.get(TOKEN_B, &format!("/v1/activations/{id}")).await.0, 403);
        assert_eq!(d.get(TOKEN_A, "/v1/activations/act_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").await.0, 404);
        let (s, _, _) = d.post(TOKEN_B, "/v1/activations/redeem", json!({"application_number": "A2026-000123", "code": code})).await;
        assert_eq!(s, 403);

        // Events in the account's history.
        let (s, ev) = d.get(TOKEN_A, "/v1/accounts/ent-778/events").await;
        assert_eq!(s, 200, "{ev}");
        let types: Vec<&str> = ev["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["activation_redeemed", "activation_issued"], "{ev}");
        assert_eq!(ev["events"][0]["purpose"], "activation");
        assert_eq!(ev["events"][1]["ip"], "203.0.113.7");
        assert_eq!(ev["events"][1]["phone_masked"], "+853****3456");
        d.stop().await;
    }

    async fn the_code_is_typed_as_people_type_it(b: Backend) {
        let d = daemon(b).await;
        let forms: [fn(&str) -> String; 4] = [
            |c| c.to_lowercase(),
            |c| format!(" {} {} ", &c[..5], &c[5..]),
            |c| format!("{}-{}", &c[..5], &c[5..]),
            // Full-width letters and digits, as CJK input methods type them.
            |c| c.chars().map(|ch| char::from_u32(ch as u32 - 0x21 + 0xFF01).unwrap()).collect(),
        ];
        for (i, form) in forms.iter().enumerate() {
            let app = format!("a-{i}");
            let (_, text) = issue(&d, request(&format!("ent-{i}"), &app, Some("600-123"), "en")).await;
            let typed = form(&code_of(&text));
            // The application number's case and surrounding spaces, the entity number's dashes
            // and spaces do not matter either.
            let (s, r) = redeem(&d, &format!("  {} ", app.to_uppercase()), Some(" 600 123"), &typed).await;
            assert_eq!(s, 200, "{typed:?}: {r}");
        }
        d.stop().await;
    }

    async fn every_mismatch_answers_the_same_bytes(b: Backend) {
        let d = daemon(b).await;
        let (_, text) = issue(&d, request("ent-1", "A-1", Some("600123"), "en")).await;
        let code = code_of(&text);
        let (_, text2) = issue(&d, request("ent-2", "A-2", None, "en")).await;
        let code2 = code_of(&text2);
        // Another one for the wrong code (3 attempts each: A-1 takes two of these tries).
        let (_, text3) = issue(&d, request("ent-3", "A-3", Some("600123"), "en")).await;
        let code3 = code_of(&text3);
        let first = if code3.starts_with('2') { '3' } else { '2' };
        let wrong = format!("{first}{}", &code3[1..]);
        let tries = [
            ("wrong application number", json!({"application_number": "A-9", "entity_number": "600123", "code": code})),
            ("wrong entity number", json!({"application_number": "A-1", "entity_number": "600124", "code": code})),
            ("no entity number", json!({"application_number": "A-1", "code": code})),
            ("wrong code", json!({"application_number": "A-3", "entity_number": "600123", "code": wrong})),
            ("entity number for one issued without", json!({"application_number": "A-2", "entity_number": "600123", "code": code2})),
        ];
        let mut first: Option<Vec<u8>> = None;
        for (what, body) in tries {
            let (s, bytes) = post_raw(&d, "/v1/activations/redeem", body).await;
            assert_eq!(s, 422, "{what}");
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["error"]["code"], "code_incorrect", "{what}");
            assert!(v["error"].get("attempts_remaining").is_none(), "{what}: {v}");
            match &first {
                None => first = Some(bytes),
                Some(f) => assert_eq!(f, &bytes, "{what}"),
            }
        }
        // The right code still redeems for the activation issued without an entity number.
        assert_eq!(redeem(&d, "A-2", None, &code2).await.0, 200);
        d.stop().await;
    }

    async fn wrong_tries_lock_and_unknown_numbers_never_do(b: Backend) {
        let d = daemon(b).await;
        let (v, text) = issue(&d, request("ent-1", "A-1", Some("600123"), "en")).await;
        let code = code_of(&text);
        // max_attempts = 3: two 422s (a wrong code, a wrong entity number), the third locks.
        assert_eq!(redeem(&d, "A-1", Some("600123"), "2222222222").await.0, 422);
        assert_eq!(redeem(&d, "A-1", Some("999"), &code).await.0, 422);
        let (s, r) = redeem(&d, "A-1", Some("600123"), "2222222222").await;
        assert_eq!((s, &r["error"]["code"]), (423, &json!("too_many_attempts")), "{r}");
        // Locked for good: the right code too.
        assert_eq!(redeem(&d, "A-1", Some("600123"), &code).await.0, 423);
        let (_, g) = d.get(TOKEN_A, &format!("/v1/activations/{}", v["id"].as_str().unwrap())).await;
        assert_eq!(g["status"], "locked");
        // An unknown application number answers 422 however often.
        for _ in 0..10 {
            assert_eq!(redeem(&d, "NO-SUCH", Some("600123"), "2222222222").await.0, 422);
        }
        d.stop().await;
    }

    async fn expired_codes_answer_410_only_to_the_right_code(b: Backend) {
        let d = daemon(b).await;
        let (v, text) = issue(&d, request("ent-1", "A-1", None, "en")).await;
        let code = code_of(&text);
        d.clock.advance(Duration::from_secs(7 * 86400));
        let (s, r) = redeem(&d, "A-1", None, &code).await;
        assert_eq!((s, &r["error"]["code"]), (410, &json!("expired")), "{r}");
        assert_eq!(redeem(&d, "A-1", None, "2222222222").await.0, 422);
        let (_, g) = d.get(TOKEN_A, &format!("/v1/activations/{}", v["id"].as_str().unwrap())).await;
        assert_eq!(g["status"], "expired");
        d.stop().await;
    }

    async fn issuing_again_cancels_the_older_code(b: Backend) {
        let d = daemon(b).await;
        let (old, text) = issue(&d, request("ent-1", "A-1", Some("600123"), "en")).await;
        let old_code = code_of(&text);
        let (_, text) = issue(&d, request("ent-1", "A-1", Some("600123"), "en")).await;
        let new_code = code_of(&text);
        assert_ne!(old_code, new_code);
        assert_eq!(redeem(&d, "A-1", Some("600123"), &old_code).await.0, 422);
        let (_, g) = d.get(TOKEN_A, &format!("/v1/activations/{}", old["id"].as_str().unwrap())).await;
        assert_eq!(g["status"], "canceled");
        assert_eq!(redeem(&d, "A-1", Some("600123"), &new_code).await.0, 200);
        d.stop().await;
    }

    async fn fifty_concurrent_redeems_redeem_once(b: Backend) {
        let d = std::sync::Arc::new(daemon(b).await);
        let (_, text) = issue(&d, request("ent-1", "A-1", Some("600123"), "en")).await;
        let code = code_of(&text);
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let d = d.clone();
            let code = code.clone();
            tasks.push(tokio::spawn(async move { redeem(&d, "A-1", Some("600123"), &code).await.0 }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 49, "{statuses:?}");
    }

    async fn bad_requests_are_400(b: Backend) {
        let d = daemon(b).await;
        for (field, body) in [
            ("activation_url", json!({"account_id": "e", "application_number": "A", "phone": "+85366123456", "activation_url": "javascript:x"})),
            ("application_number", json!({"account_id": "e", "application_number": " ", "phone": "+85366123456", "activation_url": URL})),
            ("locale", json!({"account_id": "e", "application_number": "A", "phone": "+85366123456", "activation_url": URL, "locale": "fr"})),
        ] {
            let (s, v, _) = d.post(TOKEN_A, "/v1/activations", body).await;
            assert_eq!((s, &v["error"]["field"]), (400, &json!(field)), "{v}");
        }
        let (s, v, _) = d.post(TOKEN_A, "/v1/activations", json!({"account_id": "e", "application_number": "A", "phone": "12", "activation_url": URL})).await;
        assert_eq!((s, &v["error"]["code"]), (400, &json!("invalid_phone")), "{v}");
        // Unknown fields are 400; without a valid token, 401.
        let (s, _, _) = d.post(TOKEN_A, "/v1/activations/redeem", json!({"application_number": "A", "code": "X", "pin": 1})).await;
        assert_eq!(s, 400);
        for path in ["/v1/activations", "/v1/activations/redeem", "/v1/accounts/a/totp", "/v1/accounts/a/totp/check"] {
            let (s, v, _) = d.post("not-a-token", path, json!({})).await;
            assert_eq!((s, &v["error"]["code"]), (401, &json!("unauthorized")), "{path}");
        }
        d.stop().await;
    }
}

/// Nothing in Redis names the code, the application number or the entity number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_no_code_and_no_numbers() {
    let d = daemon(Backend::Redis).await;
    let (_, text) = issue(&d, request("ent-1", "APPNO-55501", Some("ENT-77123"), "en")).await;
    let code = code_of(&text);
    let client = redis::Client::open(crate::util::redis_url().as_str()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let prefix = d.config.store.key_prefix.clone();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut c)
        .await
        .unwrap();
    let act: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with(&format!("{prefix}a:")))
        .collect();
    assert_eq!(act.len(), 1, "{keys:?}");
    let mut dump = keys.join("\n");
    for k in &keys {
        let t: String = redis::cmd("TYPE").arg(k).query_async(&mut c).await.unwrap();
        let vals: Vec<String> = match t.as_str() {
            "hash" => redis::cmd("HGETALL")
                .arg(k)
                .query_async(&mut c)
                .await
                .unwrap(),
            "string" => vec![redis::cmd("GET").arg(k).query_async(&mut c).await.unwrap()],
            "list" => redis::cmd("LRANGE")
                .arg(k)
                .arg(0)
                .arg(-1)
                .query_async(&mut c)
                .await
                .unwrap(),
            _ => vec![],
        };
        dump.push_str(&vals.join("\n"));
    }
    assert!(dump.contains("ent-1"), "the dump has the records");
    for secret in [code.as_str(), "APPNO", "55501", "77123"] {
        assert!(!dump.contains(secret), "{secret} in Redis");
    }
    d.stop().await;
}

/// `/openapi.json` describes the activation and TOTP routes; `/metrics` counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_and_metrics_cover_activations_and_totp() {
    let d = daemon(Backend::Memory).await;
    let (_, text) = issue(&d, request("ent-1", "A-1", None, "en")).await;
    assert_eq!(redeem(&d, "A-1", None, &code_of(&text)).await.0, 200);
    let (s, _, _) = d.post(TOKEN_A, "/v1/accounts/acc-1/totp", json!({})).await;
    assert_eq!(s, 201);
    assert_eq!(
        d.post(
            TOKEN_A,
            "/v1/accounts/acc-1/totp/confirm",
            json!({"code": "000000"})
        )
        .await
        .0,
        422
    );
    let v: Value = d
        .http
        .get(format!("{}/openapi.json", d.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = v["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/v1/activations", "post"),
        ("/v1/activations/redeem", "post"),
        ("/v1/activations/{id}", "get"),
        ("/v1/accounts/{account_id}/totp", "post"),
        ("/v1/accounts/{account_id}/totp", "delete"),
        ("/v1/accounts/{account_id}/totp/confirm", "post"),
        ("/v1/accounts/{account_id}/totp/check", "post"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    let m = d.metrics().await;
    for line in [
        "otpgate_activations_total{outcome=\"issued\"}",
        "otpgate_activations_total{outcome=\"redeemed\"}",
        "otpgate_totp_total{op=\"enrol\",outcome=\"enrolled\"}",
        "otpgate_totp_total{op=\"confirm\",outcome=\"code_incorrect\"}",
    ] {
        assert!(m.contains(line), "{line} not in /metrics");
    }
    d.stop().await;
}
