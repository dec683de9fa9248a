//! The re-send of an undeliverable code (contract §6; issue 9): a code SMS whose receipt says
//! UNDELIV while its code is alive goes once more through the other SMSC of its route, and that
//! re-send is queued in the step that records it or not at all — with Redis its outbox entry is
//! written by the store's script, with memory room in the queue is reserved first. A store that
//! cannot take it (Redis cut, or the entry refused inside the script) or a full memory queue
//! records nothing: the receipt is held and the step retried, so every such message is sent
//! exactly once more, via the other SMSC, none lost. Checked at both simulators and through
//! `GET /v1/messages`. And a re-send that the route's only other SMSC refuses once is tried
//! there again (it cannot go back to the SMSC that failed it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use otpgate::smpp::sim::SimHandle;
use serde_json::{Value, json};

use crate::util::*;

/// Two SMSCs on the default route, A (`sim`) and B (`sim-b`), both capped at `throughput` per
/// second when given; every receipt says UNDELIV after `delay`, so each code goes through both:
/// first through one, once more through the other.
async fn two_smscs(
    b: Backend,
    throughput: Option<u32>,
    delay: Duration,
    tweak: impl FnOnce(&mut otpgate::config::Config),
    options: impl FnOnce(&mut otpgate::RunOptions),
) -> (TestDaemon, SimHandle, SimHandle) {
    let sim_a = start_sim().await;
    let sim_b = start_sim().await;
    // Hex ids starting with a letter: no id reads as another's decimal spelling.
    sim_a.set_next_message_id(0xA000_0000);
    sim_b.set_next_message_id(0xB000_0000);
    for sim in [&sim_a, &sim_b] {
        sim.update(|b| {
            b.receipt_delay = delay;
        });
    }
    let cap = throughput
        .map(|t| format!("throughput = {t}\n"))
        .unwrap_or_default();
    let extra = format!(
        "{cap}\n[[smpp.smsc]]\nname = \"sim-b\"\naddress = \"{}\"\nwindow = 64\nresponse_timeout = \"2s\"\n{cap}",
        sim_b.addr()
    );
    let d = TestDaemon::start_with_options(b, sim_a.clone(), &extra, tweak, options).await;
    // Both bound before anything is sent.
    for _ in 0..250 {
        if sim_b.connections() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sim_b.connections(), 1, "SMSC B bound");
    (d, sim_a, sim_b)
}

/// The numbers of a run: `n` distinct Macao mobiles, each given UNDELIV at both SMSCs.
fn phones(n: usize, prefix: &str, sims: [&SimHandle; 2]) -> Vec<String> {
    let phones: Vec<String> = (0..n).map(|i| format!("{prefix}{i:04}")).collect();
    for sim in sims {
        sim.update(|b| {
            for p in &phones {
                b.stat_for.insert(p[1..].to_owned(), "UNDELIV".into());
            }
        });
    }
    phones
}

/// Creates one code per number, 50 at a time, asking again while the memory queue is full
/// (503); returns the message ids in order.
async fn create_codes(d: &TestDaemon, phones: &[String]) -> Vec<String> {
    let mut ids = Vec::with_capacity(phones.len());
    for chunk in phones.chunks(50) {
        let mut batch = Vec::new();
        for phone in chunk {
            let (http, base) = (d.http.clone(), d.base.clone());
            let body = json!({"purpose": "registration", "phone": phone});
            batch.push(tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let r = http
                        .post(format!("{base}/v1/verifications"))
                        .bearer_auth(TOKEN_A)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    let status = r.status().as_u16();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    match status {
                        201 => return v["message_id"].as_str().unwrap().to_owned(),
                        503 if Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        _ => panic!("create: {status} {v}"),
                    }
                }
            }));
        }
        for t in batch {
            ids.push(t.await.unwrap());
        }
    }
    ids
}

/// The texts each simulator received, by destination (without the `+`).
fn received_by_number(sim: &SimHandle) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for m in sim.received() {
        out.entry(m.destination_addr)
            .or_default()
            .push(m.text.unwrap_or_default());
    }
    out
}

/// The status of each message, 50 requests at a time (`null` when the store did not answer).
async fn statuses(d: &TestDaemon, ids: &[String]) -> Vec<Value> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(50) {
        let mut batch = Vec::new();
        for id in chunk {
            let (http, url) = (d.http.clone(), format!("{}/v1/messages/{id}", d.base));
            batch.push(tokio::spawn(async move {
                match http.get(url).bearer_auth(TOKEN_A).send().await {
                    Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null)["status"].clone(),
                    Err(_) => Value::Null,
                }
            }));
        }
        for t in batch {
            out.push(t.await.unwrap());
        }
    }
    out
}

/// Waits (120 s at most) until every number got its code exactly once at each SMSC — the
/// first send at one, the re-send at the other, with the same text — and every message is
/// `undeliverable` (the re-send's receipt says UNDELIV too); then checks that nothing more
/// comes in a quiet second.
async fn each_sent_once_at_each_smsc(
    d: &TestDaemon,
    sims: [&SimHandle; 2],
    phones: &[String],
    ids: &[String],
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut open: Vec<usize> = (0..phones.len()).collect();
    loop {
        let [a, b] = sims.map(received_by_number);
        let mut still = Vec::new();
        let mut first_open = String::new();
        let st = statuses(d, &open.iter().map(|&i| ids[i].clone()).collect::<Vec<_>>()).await;
        for (&i, status) in open.iter().zip(st) {
            let number = &phones[i][1..];
            let (at_a, at_b) = (
                a.get(number).map_or(0, Vec::len),
                b.get(number).map_or(0, Vec::len),
            );
            assert!(
                at_a <= 1 && at_b <= 1,
                "{number}: sent {at_a} times via A and {at_b} via B"
            );
            assert!(
                status == "queued"
                    || status == "submitted"
                    || status == "undeliverable"
                    || status.is_null(),
                "{number}: {status}"
            );
            if at_a + at_b < 2 || status != "undeliverable" {
                if still.is_empty() {
                    first_open = format!(
                        "{number} ({}): {status}, {at_a} via A, {at_b} via B",
                        ids[i]
                    );
                }
                still.push(i);
            }
        }
        if still.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} codes never went through both SMSCs (first: {first_open})",
            still.len(),
            phones.len(),
        );
        open = still;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let [a, b] = sims.map(received_by_number);
    for p in phones {
        let n = &p[1..];
        let (ta, tb) = (
            a.get(n).cloned().unwrap_or_default(),
            b.get(n).cloned().unwrap_or_default(),
        );
        assert_eq!((ta.len(), tb.len()), (1, 1), "{n}: once via each SMSC");
        assert_eq!(ta, tb, "{n}: the same code both times");
    }
}

/// Waits until the simulators took `n` submits in all (30 s at most).
async fn submitted(sims: [&SimHandle; 2], n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while sims.iter().map(|s| s.submits()).sum::<u64>() < n {
        assert!(Instant::now() < deadline, "first sends not submitted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const N: usize = 1000;

/// Redis: the store (and the outbox with it) cut for 4 s while the UNDELIV receipts flow: they
/// come 5 s after their submits, the cut begins once every first send is submitted (and, when
/// that comes within 3 s, acknowledged in the outbox: the cut is about the receipts and their
/// re-sends, not about first sends in flight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_undeliverable_codes_are_each_resent_once_across_a_store_cut() {
    require_redis().await;
    let proxy = Proxy::start(redis_addr()).await;
    let url = format!("redis://{}", proxy.addr);
    let (d, a, b) = two_smscs(
        Backend::Redis,
        Some(200),
        Duration::from_secs(5),
        move |c| c.store.redis_url = url,
        |_| {},
    )
    .await;
    let phones = phones(N, "+8536638", [&a, &b]);
    let ids = create_codes(&d, &phones).await;
    submitted([&a, &b], N as u64).await;
    let stream = otpgate::store::keys::Keys::new(&d.config.store.key_prefix)
        .outbox_stream("", otpgate::outbox::Priority::Code);
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let acked_by = Instant::now() + Duration::from_secs(3);
    while Instant::now() < acked_by {
        let len: usize = redis::cmd("XLEN")
            .arg(&stream)
            .query_async(&mut conn)
            .await
            .unwrap();
        if len == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.down();
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.up();
    each_sent_once_at_each_smsc(&d, [&a, &b], &phones, &ids).await;
    assert!(
        a.receipts_refused() + b.receipts_refused() > 0,
        "receipts came while the store was cut (answered ESME_RX_T_APPN)"
    );
    d.stop().await;
}

/// Memory: the store cannot be cut; what can refuse the re-send is the queue, full (16 jobs)
/// while codes are created faster than the two SMSCs (200/s each) take them. 200 codes: the
/// re-sends held meanwhile are retried with the tracker's backoff (up to 5 s), each time
/// only until the 16 places are taken again, so more would only make the test long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_undeliverable_codes_are_each_resent_once_through_a_full_queue() {
    let (d, a, b) = two_smscs(
        Backend::Memory,
        Some(200),
        Duration::from_millis(200),
        |_| {},
        |o| o.memory_outbox_capacity = Some(16),
    )
    .await;
    let phones = phones(200, "+8536639", [&a, &b]);
    let ids = create_codes(&d, &phones).await;
    each_sent_once_at_each_smsc(&d, [&a, &b], &phones, &ids).await;
    d.stop().await;
}

/// Redis: the re-send's entry is refused inside the script (the stream key holds a string:
/// `XADD` answers WRONGTYPE). Nothing is recorded — the messages stay `submitted`, never
/// `queued` with nothing queued — and once the stream takes writes again every code goes once
/// more, via the other SMSC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_resend_the_stream_refuses_is_not_recorded_and_goes_later() {
    const M: usize = 20;
    require_redis().await;
    // Receipts 6 s after their submits: the stream is replaced well before any re-send is
    // decided (the first sends' acknowledgements come after the tracker recorded them, which
    // takes longer on a loaded machine).
    let receipt_delay = Duration::from_secs(6);
    let (d, a, b) = two_smscs(Backend::Redis, None, receipt_delay, |_| {}, |_| {}).await;
    let phones = phones(M, "+8536637", [&a, &b]);
    let ids = create_codes(&d, &phones).await;
    submitted([&a, &b], M as u64).await;
    let stream = otpgate::store::keys::Keys::new(&d.config.store.key_prefix)
        .outbox_stream("", otpgate::outbox::Priority::Code);
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Once the first sends' entries are gone, the stream becomes a string, in one step (an
    // entry written in between would be destroyed with the stream).
    let replace = redis::Script::new(
        "if redis.call('XLEN', KEYS[1]) > 0 then return 0 end \
         redis.call('DEL', KEYS[1]) redis.call('SET', KEYS[1], 'not a stream') return 1",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let done: i64 = replace.key(&stream).invoke_async(&mut conn).await.unwrap();
        if done == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "first sends acknowledged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, s) in statuses(&d, &ids).await.into_iter().enumerate() {
        assert_eq!(s, "submitted", "{}: no re-send decided yet", phones[i]);
    }
    // The receipts come; a second more for the tracker to try them.
    tokio::time::sleep(receipt_delay + Duration::from_secs(1)).await;
    for (i, s) in statuses(&d, &ids).await.into_iter().enumerate() {
        assert_eq!(
            s, "submitted",
            "{}: nothing recorded while the re-send cannot be queued",
            phones[i]
        );
    }
    let sent_before: usize = [&a, &b].iter().map(|s| s.received().len()).sum();
    assert_eq!(
        sent_before, M,
        "no re-send went while the stream refused it"
    );
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    each_sent_once_at_each_smsc(&d, [&a, &b], &phones, &ids).await;
    d.stop().await;
}

/// The re-send never goes through the SMSC that failed it (`exclude`); a try it fails at the
/// route's only other SMSC must not make that one avoid it too (`avoid`), or no SMSC takes it.
async fn resend_refused_once_by_the_only_other_smsc(b: Backend) {
    let (d, a, b_sim) = two_smscs(b, None, Duration::from_secs(1), |_| {}, |_| {}).await;
    let phones = phones(1, "+8536636", [&a, &b_sim]);
    let (mut rx_a, mut rx_b) = (a.subscribe(), b_sim.subscribe());
    let ids = create_codes(&d, &phones).await;
    let (first, other) = tokio::select! {
        m = rx_a.recv() => (m.unwrap(), &b_sim),
        m = rx_b.recv() => (m.unwrap(), &a),
    };
    // The other SMSC refuses its first try (ESME_RSYSERR: temporary), then takes submits.
    other.set_submit_status(0x08);
    let deadline = Instant::now() + Duration::from_secs(10);
    while other.submits() == 0 {
        assert!(
            Instant::now() < deadline,
            "the re-send was tried at the other SMSC"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    other.set_submit_status(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let again = loop {
        if let Some(m) = other.received().into_iter().next() {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "the re-send never went again through the other SMSC"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(again.text, first.text, "the same code");
    let deadline = Instant::now() + Duration::from_secs(10);
    while statuses(&d, &ids).await[0] != "undeliverable" {
        assert!(Instant::now() < deadline, "the re-send's receipt recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.stop().await;
}

/// Memory only here: with Redis the re-send's entry is read by the readers of both SMSCs, and
/// the excluded one puts it back through the delay set at its heartbeat, which can keep it
/// winning the entry every 3 s (the reader's concern, not this one's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_resend_refused_once_by_the_only_other_smsc_is_tried_there_again() {
    resend_refused_once_by_the_only_other_smsc(Backend::Memory).await;
}
