//! `[limits]` applied to requests, over HTTP against both stores (contract §2, §6, issue 12):
//! every rule, windows rolling over with the injected clock, `Retry-After` accuracy, refusals
//! consuming nothing, resends and notifications counted, the pumping guard, a brute force, and
//! two daemons sharing one Redis.

use std::time::Duration;

use serde_json::{Value, json};

use otpgate::config::Config;
use otpgate::limits::RateSpec;

use crate::both_stores;
use crate::util::*;

fn rate(s: &str) -> RateSpec {
    s.parse().expect("rate")
}

/// Limits that stay out of the way, for a test that tightens one.
fn loose(c: &mut Config) {
    c.limits.per_phone = vec![rate("1000/1h")];
    c.limits.per_account = vec![rate("1000/1h")];
    c.limits.per_ip = vec![rate("1000/1h")];
    c.limits.account_failures = Some(rate("1000/1h"));
}

async fn daemon(b: Backend, tweak: impl FnOnce(&mut Config)) -> TestDaemon {
    TestDaemon::start_with(b, start_sim().await, "", |c| {
        loose(c);
        tweak(c);
    })
    .await
}

fn reg(phone: &str) -> Value {
    json!({"purpose": "registration", "phone": phone})
}

/// Asserts a 429 naming `limit` whose `Retry-After` header equals `retry_after_s`; returns it.
fn limited(s: u16, body: &Value, headers: &reqwest::header::HeaderMap, limit: &str) -> u64 {
    assert_eq!(s, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(body["error"]["limit"], limit, "{body}");
    let wait = body["error"]["retry_after_s"]
        .as_u64()
        .expect("retry_after_s");
    let header = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("Retry-After header");
    assert_eq!(header, wait, "header and body agree");
    wait
}

/// Moves the clock forward to `at_ms` (by the daemon's clock).
fn advance_to(d: &TestDaemon, at_ms: i64) {
    let now = d.clock.now_ms();
    assert!(at_ms > now, "the clock only moves forward");
    d.clock.advance(Duration::from_millis((at_ms - now) as u64));
}

/// SMS the simulator received within a short while (none more expected after).
async fn drain(rx: &mut tokio::sync::broadcast::Receiver<otpgate::smpp::sim::Received>) -> usize {
    let mut n = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(700), rx.recv()).await {
        n += 1;
    }
    n
}

both_stores! {
    async fn per_phone_counts_sends_and_resends_and_announces_the_right_wait(b: Backend) {
        let d = daemon(b, |c| c.limits.per_phone = vec![rate("3/1h")]).await;
        let phone = "+85366120001";
        let mut rx = d.sim.subscribe();
        let t0 = d.clock.now_ms();
        let (s, v, _) = d.post(TOKEN_A, "/v1/verifications", reg(phone)).await;
        assert_eq!(s, 201, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        next_message(&mut rx).await;
        // A resend is a code SMS: it counts.
        d.clock.advance(Duration::from_secs(61));
        let (s, body, _) = d.post(TOKEN_A, &format!("/v1/verifications/{id}/resend"), json!({})).await;
        assert_eq!(s, 200, "{body}");
        // Received before the next verification cancels this one (a canceled code's SMS still
        // in the queue is not sent: contract §6 "Stale code SMS").
        next_message(&mut rx).await;
        let (s, v, _) = d.post(TOKEN_A, "/v1/verifications", reg(phone)).await;
        assert_eq!(s, 201, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        next_message(&mut rx).await;
        // Reached: a resend is refused too, and so is a new verification.
        d.clock.advance(Duration::from_secs(61));
        let (s, body, h) = d.post(TOKEN_A, &format!("/v1/verifications/{id}/resend"), json!({})).await;
        limited(s, &body, &h, "per_phone");
        let (s, body, h) = d.post(TOKEN_A, "/v1/verifications", reg(phone)).await;
        let wait = limited(s, &body, &h, "per_phone");
        assert!((3400..=3600).contains(&wait), "about an hour after the first send: {wait}");
        // Another number is not affected.
        let (s, _, _) = d.post(TOKEN_A, "/v1/verifications", reg("+85366120002")).await;
        assert_eq!(s, 201);
        assert_eq!(drain(&mut rx).await, 1, "three code SMS to the number (above), one to the other");

        // The first send leaves the window at t0 + 1 h (t0 known to within the request's time).
        // 1.5 s before that, the wait announced is 2 s; a retry 1 s later (1 s before the
        // announced time) is refused, one at the announced time passes.
        let free = t0 + 3_600_000;
        advance_to(&d, free - 1_500);
        let (s, body, h) = d.post(TOKEN_A, "/v1/verifications", reg(phone)).await;
        assert_eq!(limited(s, &body, &h, "per_phone"), 2);
        d.clock.advance(Duration::from_secs(1));
        let (s, body, h) = d.post(TOKEN_A, "/v1/verifications", reg(phone)).await;
        assert_eq!(limited(s, &body, &h, "per_phone"), 1, "one second before: refused");
        d.clock.advance(Duration::from_secs(1));
        let (s, body, _) = d.post(TOKEN_A, "/v1/verifications", reg(phone)).await;
        assert_eq!(s, 201, "at the announced time: {body}");
        // The window rolls on: the resend sent at t0 + 61 s is still in it.
        let (s, body, h) = d.post(TOKEN_A, "/v1/verifications", reg(phone)).await;
        let wait = limited(s, &body, &h, "per_phone");
        assert!((55..=62).contains(&wait), "until the resend leaves the window: {wait}");
        let metrics = d.metrics().await;
        assert!(
            metrics.lines().any(|l| l.starts_with("otpgate_rate_limited_total{limit=\"per_phone\"}")),
            "refusals counted by limit: {metrics}"
        );
        d.stop().await;
    }

    async fn a_request_refused_by_one_rule_consumes_none(b: Backend) {
        let d = daemon(b, |c| {
            c.limits.per_ip = vec![rate("1/1h")];
            c.limits.per_phone = vec![rate("2/1h")];
            c.limits.per_account = vec![rate("2/1h")];
        })
        .await;
        let mut rx = d.sim.subscribe();
        let create = |phone: &str, ip: &str, account: &str| {
            json!({"purpose": "registration", "phone": phone, "account_id": account, "context": {"ip": ip}})
        };
        let (s, _, _) = d.post(TOKEN_A, "/v1/verifications", create("+85366120011", "203.0.113.1", "acc-x")).await;
        assert_eq!(s, 201);
        next_message(&mut rx).await;
        // The IP is spent: refused, and neither the phone nor the account is charged.
        for _ in 0..3 {
            let (s, body, h) = d.post(TOKEN_A, "/v1/verifications", create("+85366120012", "203.0.113.1", "acc-y")).await;
            limited(s, &body, &h, "per_ip");
        }
        let (s, body, _) = d.post(TOKEN_A, "/v1/verifications", create("+85366120012", "203.0.113.2", "acc-y")).await;
        assert_eq!(s, 201, "{body}");
        // Received before the next one cancels it (a canceled code's queued SMS is not sent).
        next_message(&mut rx).await;
        let (s, body, _) = d.post(TOKEN_A, "/v1/verifications", create("+85366120012", "203.0.113.3", "acc-y")).await;
        assert_eq!(s, 201, "the phone's and account's second, not their fifth: {body}");
        next_message(&mut rx).await;
        let (s, body, h) = d.post(TOKEN_A, "/v1/verifications", create("+85366120013", "203.0.113.4", "acc-y")).await;
        limited(s, &body, &h, "per_account");
        let (s, body, h) = d.post(TOKEN_A, "/v1/verifications", create("+85366120012", "203.0.113.5", "acc-z")).await;
        limited(s, &body, &h, "per_phone");
        assert_eq!(drain(&mut rx).await, 0, "refused requests send nothing");
        // The refusals are in the accounts' histories.
        let (s, body) = d.get(TOKEN_A, "/v1/accounts/acc-y/events").await;
        assert_eq!(s, 200);
        let kinds: Vec<(String, String)> = body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["type"].as_str().unwrap_or("").to_owned(), e["limit"].as_str().unwrap_or("").to_owned()))
            .collect();
        assert_eq!(kinds[0], ("rate_limited".to_owned(), "per_account".to_owned()), "{body}");
        assert_eq!(
            kinds.iter().filter(|(k, l)| k == "rate_limited" && l == "per_ip").count(),
            3,
            "{body}"
        );
        d.stop().await;
    }

    async fn notifications_count_toward_per_country(b: Backend) {
        let d = daemon(b, |c| {
            c.limits.per_country = [("MO".to_owned(), rate("3/1h"))].into_iter().collect();
        })
        .await;
        let mut rx = d.sim.subscribe();
        let note = |to: &str| json!({"to": to, "text": "hello"});
        let (s, _, _) = d.post(TOKEN_A, "/v1/messages", note("+85366120021")).await;
        assert_eq!(s, 202);
        let (s, _, _) = d.post(TOKEN_A, "/v1/verifications", reg("+85366120022")).await;
        assert_eq!(s, 201);
        let (s, _, _) = d.post(TOKEN_A, "/v1/messages", note("+85366120023")).await;
        assert_eq!(s, 202);
        // Three SMS to Macao: both kinds are refused now.
        let (s, body, h) = d.post(TOKEN_A, "/v1/messages", note("+85366120024")).await;
        limited(s, &body, &h, "per_country");
        let (s, body, h) = d.post(TOKEN_A, "/v1/verifications", reg("+85366120025")).await;
        limited(s, &body, &h, "per_country");
        // Another country is not limited.
        let (s, _, _) = d.post(TOKEN_A, "/v1/messages", note("+85291234567")).await;
        assert_eq!(s, 202);
        assert_eq!(drain(&mut rx).await, 4);
        // An hour later the window has rolled over.
        d.clock.advance(Duration::from_secs(3601));
        let (s, _, _) = d.post(TOKEN_A, "/v1/messages", note("+85366120024")).await;
        assert_eq!(s, 202);
        d.stop().await;
    }

    async fn a_brute_force_gets_no_approval(b: Backend) {
        let d = daemon(b, |c| {
            c.limits.account_failures = Some(rate("10/1h"));
        })
        .await;
        let mut rx = d.sim.subscribe();
        let account = "acc-brute";
        let (mut approvals, mut wrong, mut locks, mut refusals, mut created) = (0, 0, 0, 0, 0);
        let mut current: Option<(String, String)> = None;
        let mut guess = 0u32;
        let mut guesses = 0;
        while guesses < 10_000 {
            if current.is_none() || guesses % 500 == 0 {
                // A new verification, from yet another IP.
                let ip = format!("198.51.{}.{}", guesses / 250 % 256, guesses % 250 + 1);
                let body = json!({"purpose": "transaction", "phone": "+85366120031", "account_id": account, "context": {"ip": ip}});
                let (s, v, h) = d.post(TOKEN_A, "/v1/verifications", body).await;
                if s == 201 {
                    created += 1;
                    let msg = next_message(&mut rx).await;
                    let code = extract_code(msg.text.as_deref().unwrap());
                    current = Some((v["id"].as_str().unwrap().to_owned(), code));
                } else {
                    limited(s, &v, &h, "account_failures");
                    refusals += 1;
                }
            }
            let (id, code) = current.clone().expect("a first verification");
            let mut attempt = format!("{:06}", guess % 1_000_000);
            guess += 1;
            if attempt == code {
                attempt = format!("{:06}", guess % 1_000_000);
                guess += 1;
            }
            let (s, body, _) = d.post(TOKEN_A, &format!("/v1/verifications/{id}/check"), json!({"code": attempt})).await;
            guesses += 1;
            match s {
                200 => approvals += 1,
                422 => wrong += 1,
                423 => locks += 1,
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(approvals, 0);
        assert_eq!(created, 2, "two verifications of 5 attempts, then account_failures");
        assert_eq!(wrong, 8, "4 wrong answers per verification, the 5th locks");
        assert!(locks > 9_000, "{locks}");
        assert!(refusals >= 1, "creation refused by account_failures");
        // The window rolls over: an hour later the account may start again.
        d.clock.advance(Duration::from_secs(3601));
        let (s, body, _) = d.post(TOKEN_A, "/v1/verifications", json!({"purpose": "transaction", "phone": "+85366120031", "account_id": account})).await;
        assert_eq!(s, 201, "{body}");
        d.stop().await;
    }

    async fn the_pumping_guard_closes_an_unused_range_only(b: Backend) {
        let d = daemon(b, |c| {
            let g = &mut c.limits.pumping_guard;
            g.enabled = true;
            g.prefix_digits = 6;
            g.window = Duration::from_secs(3600);
            g.min_sent = 5;
            g.min_approval_ratio = 0.5;
            g.cool_off = Duration::from_secs(600);
        })
        .await;
        // A range whose codes get used stays open.
        for i in 0..6 {
            let (id, code, _) = d.create_and_receive(reg(&format!("+8536813{i:04}"))).await;
            let (s, _, _) = d.post(TOKEN_A, &format!("/v1/verifications/{id}/check"), json!({"code": code})).await;
            assert_eq!(s, 200);
        }
        let mut rx = d.sim.subscribe();
        // A burst to one range, no code used.
        for i in 0..5 {
            let (s, body, _) = d.post(TOKEN_A, "/v1/verifications", reg(&format!("+8536612{i:04}"))).await;
            assert_eq!(s, 201, "{body}");
        }
        let (s, body, h) = d.post(TOKEN_A, "/v1/verifications", reg("+85366129999")).await;
        assert_eq!(limited(s, &body, &h, "pumping_guard"), 600);
        let (s, body, h) = d.post(TOKEN_A, "/v1/verifications", reg("+85366125555")).await;
        limited(s, &body, &h, "pumping_guard");
        // The other range keeps working.
        let (s, _, _) = d.post(TOKEN_A, "/v1/verifications", reg("+85368139999")).await;
        assert_eq!(s, 201);
        assert_eq!(drain(&mut rx).await, 6, "nothing sent to the closed range");
        // After the cool-off the range is open again.
        d.clock.advance(Duration::from_secs(601));
        let (s, body, _) = d.post(TOKEN_A, "/v1/verifications", reg("+85366129999")).await;
        assert_eq!(s, 201, "{body}");
        let metrics = d.metrics().await;
        assert!(metrics.contains("otpgate_rate_limited_total{limit=\"pumping_guard\"}"), "{metrics}");
        d.stop().await;
    }

    async fn verification_events_are_written_with_the_change(b: Backend) {
        // The pumping guard on (never closing here), so its range key sits beside the events'.
        let d = daemon(b, |c| {
            c.limits.pumping_guard.enabled = true;
            c.limits.pumping_guard.min_sent = 1000;
        })
        .await;
        let account = "acc-events";
        let body = json!({"purpose": "transaction", "phone": "+85366120041", "account_id": account, "context": {"ip": "203.0.113.9"}});
        let (id, code, _) = d.create_and_receive(body.clone()).await;
        let check = |id: &str, code: &str| (format!("/v1/verifications/{id}/check"), json!({"code": code}));
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let (p, c) = check(&id, wrong);
        assert_eq!(d.post(TOKEN_A, &p, c).await.0, 422);
        d.clock.advance(Duration::from_secs(61));
        let (s, _, _) = d.post(TOKEN_A, &format!("/v1/verifications/{id}/resend"), json!({})).await;
        assert_eq!(s, 200);
        let (p, c) = check(&id, &code);
        assert_eq!(d.post(TOKEN_A, &p, c).await.0, 200);
        // A second verification, locked by wrong codes.
        let (id2, code2, _) = d.create_and_receive(body).await;
        let wrong = if code2 == "000000" { "111111" } else { "000000" };
        for _ in 0..5 {
            let (p, c) = check(&id2, wrong);
            d.post(TOKEN_A, &p, c).await;
        }
        // Without an account: no history anywhere.
        d.create_and_receive(reg("+85366120042")).await;

        let (s, body) = d.get(TOKEN_A, &format!("/v1/accounts/{account}/events?limit=100")).await;
        assert_eq!(s, 200, "{body}");
        let events = body["events"].as_array().unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "verification_locked",
                "verification_failed",
                "verification_failed",
                "verification_failed",
                "verification_failed",
                "verification_sent",
                "verification_approved",
                "verification_sent",
                "verification_failed",
                "verification_sent",
            ],
            "newest first: {body}"
        );
        for e in events {
            assert_eq!(e["purpose"], "transaction", "{e}");
            assert_eq!(e["phone_masked"], "+853****0041", "{e}");
            assert_eq!(e["ip"], "203.0.113.9", "{e}");
            assert_eq!(e["client"], "client-a", "{e}");
        }
        d.stop().await;
    }
}

/// Two daemons on one Redis (one key prefix) hold `per_phone` together under concurrent load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_hold_per_phone_together() {
    let prefix = test_prefix();
    let shared = |c: &mut Config| {
        loose(c);
        c.limits.per_phone = vec![rate("5/1h")];
        c.store.key_prefix = prefix.clone();
    };
    let a = TestDaemon::start_with(Backend::Redis, start_sim().await, "", shared).await;
    let b = TestDaemon::start_with(Backend::Redis, start_sim().await, "", shared).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (base, http) = if i % 2 == 0 {
            (a.base.clone(), a.http.clone())
        } else {
            (b.base.clone(), b.http.clone())
        };
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(format!("{base}/v1/verifications"))
                .bearer_auth(TOKEN_A)
                .json(&json!({"purpose": "registration", "phone": "+85366120051", "context": {"ip": format!("203.0.113.{i}")}}))
                .send()
                .await
                .expect("request");
            r.status().as_u16()
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            201 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        (ok, limited),
        (5, 35),
        "no more than the limit across both instances"
    );
    a.stop().await;
    b.stop().await;
}

both_stores! {
    async fn phone_changes_and_activations_are_code_sms_under_the_limits(b: Backend) {
        use otpgate::purpose::Purpose;
        let d = daemon(b, |c| {
            c.limits.per_phone = vec![rate("1/1h")];
            c.clients[0]
                .purposes
                .extend([Purpose::Activation, Purpose::PhoneChange]);
        })
        .await;
        let mut rx = d.sim.subscribe();
        let identity = json!({"id_document": "079090001234", "name": "NGUYỄN VĂN A",
                              "birthdate": "1990-01-31"});
        let change = |account: &str| {
            json!({"account_id": account, "new_phone": "+84912345678", "locale": "vi",
                   "identity": identity.clone()})
        };
        let (s, body, _) = d.post(TOKEN_A, "/v1/phone-changes", change("acc-1")).await;
        assert_eq!(s, 201, "{body}");
        // The new number had its code SMS: another change to it is refused, and says why.
        let (s, body, h) = d.post(TOKEN_A, "/v1/phone-changes", change("acc-2")).await;
        limited(s, &body, &h, "per_phone");
        let activation = |account: &str, app: &str| {
            json!({"account_id": account, "application_number": app,
                   "phone": "+85366120077", "activation_url": "https://e.example/a"})
        };
        let (s, body, _) = d.post(TOKEN_A, "/v1/activations", activation("ent-1", "A-1")).await;
        assert_eq!(s, 201, "{body}");
        let (s, body, h) = d.post(TOKEN_A, "/v1/activations", activation("ent-2", "A-2")).await;
        limited(s, &body, &h, "per_phone");
        // Refusals sent nothing: one SMS to each number (both awaited, then a quiet second).
        let mut seen = Vec::new();
        while seen.len() < 2 {
            seen.push(next_message(&mut rx).await.destination_addr);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        while let Ok(m) = rx.try_recv() {
            seen.push(m.destination_addr);
        }
        seen.sort();
        assert_eq!(seen, vec!["84912345678", "85366120077"]);
        d.stop().await;
    }
}
