//! Delivery receipts against both stores: ids in hex or decimal, with or without leading zeros,
//! receipts before the submit_sm_resp, on another bind, without TLVs; multi-part messages;
//! an UNDELIV code re-sent once through the other SMSC; a code never submitted after expiry;
//! receipts that flow while the Redis store is cut are kept (the SMSC sends again what was
//! answered ESME_RX_T_APPN) and every message ends with its own receipt's status.

use std::time::Duration;

use otpgate::smpp::sim::IdFormat;
use serde_json::{Value, json};

use crate::both_stores;
use crate::util::*;

async fn delivery_of(d: &TestDaemon, id: &str, want: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..250 {
        let (_, v) = d.get(TOKEN_A, &format!("/v1/verifications/{id}")).await;
        if v["delivery"] == want {
            return v;
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("delivery never {want}: {last}");
}

async fn message_status(d: &TestDaemon, id: &str, want: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..250 {
        let (_, v) = d.get(TOKEN_A, &format!("/v1/messages/{id}")).await;
        if v["status"] == want {
            return v;
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("message never {want}: {last}");
}

/// Creates a code for a fresh number and waits until the receipt marked it delivered.
async fn code_is_delivered(d: &TestDaemon, phone: &str) {
    let (s, v, _) = d
        .post(
            TOKEN_A,
            "/v1/verifications",
            json!({"purpose": "registration", "phone": phone}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    delivery_of(d, v["id"].as_str().unwrap(), "delivered").await;
}

both_stores! {
    async fn receipt_ids_match_in_any_number_format(b: Backend) {
        // Each SMSC has one rule (§6 "Receipt ids"): learned (auto) or configured.
        let formats = [
            (IdFormat::Hex, IdFormat::Decimal, "decimal_in_receipt"),
            (IdFormat::Decimal, IdFormat::Hex, "hex_in_receipt"),
            (IdFormat::PaddedHex, IdFormat::Hex, "same"),
            (IdFormat::Hex, IdFormat::PaddedHex, "same"),
            (IdFormat::PaddedDecimal, IdFormat::Hex, "hex_in_receipt"),
            (IdFormat::Decimal, IdFormat::PaddedDecimal, "same"),
        ];
        for (k, (resp, receipt, rule)) in formats.into_iter().enumerate() {
            for setting in ["auto", rule] {
                let sim = start_sim().await;
                // Past the first few ids, hex and decimal spellings differ.
                sim.set_next_message_id(4000);
                sim.update(|b| {
                    b.id_format = resp;
                    b.receipt_id_format = receipt;
                });
                let line = format!("receipt_ids = \"{setting}\"\n");
                let d = TestDaemon::start_with(b, sim, &line, |_| {}).await;
                for i in 0..6 {
                    code_is_delivered(&d, &format!("+8536620{k}{i:03}")).await;
                }
                d.stop().await;
            }
        }
    }

    async fn auto_learns_the_rule_when_receipts_come_first(b: Backend) {
        // Receipts before their submit_sm_resp: kept until the correlation (the only kept
        // receipt that fits is taken and votes), then kept under the canonical id once learned.
        let sim = start_sim().await;
        sim.set_next_message_id(4000);
        sim.update(|b| {
            b.id_format = IdFormat::Decimal;
            b.receipt_id_format = IdFormat::Hex;
            b.receipt_before_resp = true;
        });
        let d = TestDaemon::start_with(b, sim, "", |_| {}).await;
        for i in 0..8 {
            code_is_delivered(&d, &format!("+8536628000{i}")).await;
        }
        d.stop().await;
    }

    async fn ambiguous_ids_under_load_settle_each_message_by_its_own_receipt(b: Backend) {
        for setting in ["auto", "hex_in_receipt"] {
            ambiguous_ids(b, setting).await;
        }
    }

    async fn receipt_before_the_response_and_text_only(b: Backend) {
        let d = TestDaemon::start(b).await;
        d.sim.update(|b| b.receipt_before_resp = true);
        for i in 0..5 {
            code_is_delivered(&d, &format!("+8536621000{i}")).await;
        }
        d.sim.update(|b| {
            b.receipt_before_resp = false;
            b.receipt_text_only = true;
        });
        for i in 0..5 {
            code_is_delivered(&d, &format!("+8536622000{i}")).await;
        }
        d.stop().await;
    }

    async fn receipt_on_another_bind(b: Backend) {
        let sim = start_sim().await;
        let d = TestDaemon::start_with(b, sim, "binds = 2\n", |_| {}).await;
        for _ in 0..100 {
            if d.sim.connections() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(d.sim.connections(), 2, "two binds");
        d.sim.update(|b| b.receipt_on_other_bind = true);
        for i in 0..10 {
            code_is_delivered(&d, &format!("+8536623000{i}")).await;
        }
        d.stop().await;
    }

    async fn multipart_message_is_delivered_when_every_part_is(b: Backend) {
        let d = TestDaemon::start(b).await;
        let text = "x".repeat(400); // 3 parts
        let (s, body, _) = d.post(TOKEN_A, "/v1/messages", json!({"to": "+85366240001", "text": text})).await;
        assert_eq!((s, &body["parts"]), (202, &json!(3)));
        message_status(&d, body["id"].as_str().unwrap(), "delivered").await;
        // One undelivered part makes the whole message undeliverable.
        d.sim.update(|b| { b.stat_for.insert("85366240002".into(), "UNDELIV".into()); });
        let (_, body, _) = d.post(TOKEN_A, "/v1/messages", json!({"to": "+85366240002", "text": text})).await;
        let v = message_status(&d, body["id"].as_str().unwrap(), "undeliverable").await;
        assert!(v["error"].as_str().unwrap().contains("UNDELIV"), "{v}");
        assert_eq!(v["delivered_at"], Value::Null);
        d.stop().await;
    }

    async fn undeliverable_code_goes_once_more_through_the_other_smsc(b: Backend) {
        let sim_a = start_sim().await;
        // SMSC B is configured but not up yet.
        let parked = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr_b = parked.local_addr().unwrap();
        drop(parked);
        let second = format!("\n[[smpp.smsc]]\nname = \"sim-b\"\naddress = \"{addr_b}\"\nresponse_timeout = \"2s\"\n");
        let d = TestDaemon::start_with(b, sim_a.clone(), &second, |_| {}).await;
        sim_a.update(|b| { b.stat_for.insert("85366250001".into(), "UNDELIV".into()); });
        let mut rx_a = sim_a.subscribe();
        let (s, v, _) = d.post(TOKEN_A, "/v1/verifications", json!({"purpose": "registration", "phone": "+85366250001"})).await;
        assert_eq!(s, 201);
        let id = v["id"].as_str().unwrap().to_owned();
        let first = next_message(&mut rx_a).await;
        // Undeliverable at A; the re-send waits for B, never A again.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, v) = d.get(TOKEN_A, &format!("/v1/verifications/{id}")).await;
        assert_eq!(v["delivery"], "queued", "{v}");
        assert!(rx_a.try_recv().is_err(), "not sent to A again");
        let sim_b = otpgate::smpp::sim::start(tokio::net::TcpListener::bind(addr_b).await.unwrap(), Default::default()).unwrap();
        let mut rx_b = sim_b.subscribe();
        // B binds at its next reconnect attempt: up to 30 s of backoff (± 20%) after it started.
        let again = tokio::time::timeout(Duration::from_secs(40), rx_b.recv()).await.expect("re-sent via B").unwrap();
        assert_eq!(again.text, first.text, "the same code");
        delivery_of(&d, &id, "delivered").await;
        // Once only: undeliverable at B too stays undeliverable.
        sim_b.update(|b| { b.stat_for.insert("85366250002".into(), "UNDELIV".into()); });
        sim_a.update(|b| { b.stat_for.insert("85366250002".into(), "UNDELIV".into()); });
        let (_, v, _) = d.post(TOKEN_A, "/v1/verifications", json!({"purpose": "registration", "phone": "+85366250002"})).await;
        let id2 = v["id"].as_str().unwrap().to_owned();
        delivery_of(&d, &id2, "undeliverable").await;
        let sent: usize = [&sim_a, &sim_b].iter().map(|s| s.received().iter().filter(|m| m.destination_addr == "85366250002").count()).sum();
        assert_eq!(sent, 2, "first send and one re-send");
        d.stop().await;
    }

    async fn a_code_is_never_submitted_after_it_expired(b: Backend) {
        let parked = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = parked.local_addr().unwrap();
        drop(parked);
        let placeholder = start_sim().await;
        let d = TestDaemon::launch_with(b, placeholder, &addr.to_string(), "", |c| {
            // Shorter than validation allows, to expire while the SMSC is down.
            c.otp.defaults.ttl = Duration::from_secs(1);
        }).await;
        let (s, v, _) = d.post(TOKEN_A, "/v1/verifications", json!({"purpose": "registration", "phone": "+85366260001"})).await;
        assert_eq!(s, 201);
        let id = v["id"].as_str().unwrap().to_owned();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let sim = otpgate::smpp::sim::start(tokio::net::TcpListener::bind(addr).await.unwrap(), Default::default()).unwrap();
        d.wait_ready().await;
        delivery_of(&d, &id, "expired").await;
        assert_eq!(sim.submits(), 0, "nothing submitted");
        d.stop().await;
    }
}

/// The status the simulator's receipt gives message `i` of the outage test, and the message
/// status it must lead to.
/// Posts one text message per destination, 50 at a time; returns their ids in order.
async fn post_messages(d: &TestDaemon, to: &[String]) -> Vec<String> {
    let mut ids = Vec::with_capacity(to.len());
    for chunk in to.chunks(50) {
        let mut batch = Vec::new();
        for phone in chunk {
            let http = d.http.clone();
            let url = format!("{}/v1/messages", d.base);
            let body = json!({"to": phone, "text": "r"});
            batch.push(tokio::spawn(async move {
                let r = http
                    .post(url)
                    .bearer_auth(TOKEN_A)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                let v: Value = r.json().await.unwrap();
                v["id"].as_str().unwrap().to_owned()
            }));
        }
        for t in batch {
            ids.push(t.await.unwrap());
        }
    }
    ids
}

/// Waits (90 s at most) until every message has the status `want` gives it; any other final
/// status fails at once.
async fn all_settle(d: &TestDaemon, ids: &[String], want: impl Fn(usize) -> &'static str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut open: Vec<usize> = (0..ids.len()).collect();
    while !open.is_empty() {
        let mut still = Vec::new();
        for chunk in open.chunks(50) {
            let mut batch = Vec::new();
            for &i in chunk {
                let (http, base, id) = (d.http.clone(), d.base.clone(), ids[i].clone());
                batch.push(tokio::spawn(async move {
                    let r = http
                        .get(format!("{base}/v1/messages/{id}"))
                        .bearer_auth(TOKEN_A)
                        .send()
                        .await;
                    let v: Value = match r {
                        Ok(r) => r.json().await.unwrap_or(Value::Null),
                        Err(_) => Value::Null,
                    };
                    (i, v)
                }));
            }
            for t in batch {
                let (i, v) = t.await.unwrap();
                if v["status"] != want(i) {
                    assert!(
                        v["status"] == "submitted" || v["status"] == "queued" || v.is_null(),
                        "message {i} ended {v}, not {}",
                        want(i)
                    );
                    still.push(i);
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline || still.is_empty(),
            "{} of {} messages never got their receipt's status",
            still.len(),
            ids.len()
        );
        open = still;
        if !open.is_empty() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// Decimal ids in responses, hex in receipts, two batches in flight together: 1000.. and
/// 4096.., whose receipts "1000", "1001", … spell the first batch's ids and come first (the
/// first batch's receipts are delayed longer). The batches' receipts say different things, so
/// a receipt that settled another's message shows.
async fn ambiguous_ids(b: Backend, setting: &str) {
    const N: usize = 300;
    let sim = start_sim().await;
    sim.update(|b| {
        b.id_format = IdFormat::Decimal;
        b.receipt_id_format = IdFormat::Hex;
        b.receipt_delay = Duration::from_secs(4);
    });
    let stat = |i: usize| -> (&'static str, &'static str) {
        match (i < N, i % 5) {
            (true, 0) => ("EXPIRED", "expired"),
            (true, _) => ("DELIVRD", "delivered"),
            (false, 0) => ("DELETED", "failed"),
            (false, _) => ("UNDELIV", "undeliverable"),
        }
    };
    let phones: Vec<String> = (0..2 * N).map(|i| format!("+8536629{i:04}")).collect();
    sim.update(|b| {
        for (i, p) in phones.iter().enumerate() {
            b.stat_for.insert(p[1..].to_owned(), stat(i).0.to_owned());
        }
    });
    let line = format!("receipt_ids = \"{setting}\"\n");
    let d = TestDaemon::start_with(b, sim.clone(), &line, |_| {}).await;
    sim.set_next_message_id(1000);
    let mut ids = post_messages(&d, &phones[..N]).await;
    for _ in 0..500 {
        if sim.submits() >= N as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sim.submits(), N as u64, "first batch submitted");
    sim.set_next_message_id(4096);
    sim.update(|b| b.receipt_delay = Duration::from_millis(300));
    ids.extend(post_messages(&d, &phones[N..]).await);
    all_settle(&d, &ids, |i| stat(i).1).await;
    d.stop().await;
}

fn outage_stat(i: usize) -> (&'static str, &'static str) {
    match i % 10 {
        3 => ("UNDELIV", "undeliverable"),
        7 => ("EXPIRED", "expired"),
        _ => ("DELIVRD", "delivered"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_flowing_while_the_store_is_cut_are_all_kept() {
    const N: usize = 1000;
    require_redis().await;
    let proxy = Proxy::start(redis_addr()).await;
    let sim = start_sim().await;
    let url = format!("redis://{}", proxy.addr);
    let d = TestDaemon::start_with(Backend::Redis, sim.clone(), "", move |c| {
        c.store.redis_url = url
    })
    .await;
    // Hex ids that all start with a letter: no id can be read as another's decimal spelling
    // (crossed receipts are issue 9 item 3, tested on their own; this test is about keeping).
    sim.set_next_message_id(0xA000_0000);
    // Receipts come 2 s after each submit: most of them while the store is away.
    sim.update(|b| {
        b.receipt_delay = Duration::from_secs(2);
        for i in 0..N {
            let (stat, _) = outage_stat(i);
            if stat != "DELIVRD" {
                b.stat_for.insert(format!("8536627{i:04}"), stat.to_owned());
            }
        }
    });
    let mut ids = vec![String::new(); N];
    for chunk in (0..N).collect::<Vec<_>>().chunks(50) {
        let mut batch = Vec::new();
        for &i in chunk {
            let http = d.http.clone();
            let url = format!("{}/v1/messages", d.base);
            let body = json!({"to": format!("+8536627{i:04}"), "text": format!("r{i}")});
            batch.push(tokio::spawn(async move {
                let r = http
                    .post(url)
                    .bearer_auth(TOKEN_A)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                let v: Value = r.json().await.unwrap();
                (i, v["id"].as_str().unwrap().to_owned())
            }));
        }
        for t in batch {
            let (i, id) = t.await.unwrap();
            ids[i] = id;
        }
    }
    proxy.down();
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.up();

    // Every message ends with the status of its own receipt (90 s at most).
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut open: Vec<usize> = (0..N).collect();
    while !open.is_empty() {
        let mut still = Vec::new();
        for chunk in open.chunks(50) {
            let mut batch = Vec::new();
            for &i in chunk {
                let (http, base, id) = (d.http.clone(), d.base.clone(), ids[i].clone());
                batch.push(tokio::spawn(async move {
                    let r = http
                        .get(format!("{base}/v1/messages/{id}"))
                        .bearer_auth(TOKEN_A)
                        .send()
                        .await;
                    let v: Value = match r {
                        Ok(r) => r.json().await.unwrap_or(Value::Null),
                        Err(_) => Value::Null,
                    };
                    (i, v)
                }));
            }
            for t in batch {
                let (i, v) = t.await.unwrap();
                let (_, want) = outage_stat(i);
                if v["status"] != want {
                    assert!(
                        v["status"] == "submitted" || v["status"] == "queued" || v.is_null(),
                        "message {i} ended {v}, not {want}"
                    );
                    still.push(i);
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline || still.is_empty(),
            "{} of {N} messages never got their receipt's status",
            still.len()
        );
        open = still;
        if !open.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert!(
        sim.receipts_refused() > 0,
        "the store was cut while receipts flowed: some were answered ESME_RX_T_APPN"
    );
    assert!(sim.receipts_resent() > 0, "and the SMSC sent them again");
    d.stop().await;
}
