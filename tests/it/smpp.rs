//! The SMPP session against the simulator over real TCP: texts reassemble exactly in every
//! `long_messages` mode (property test over random GSM, extension, CJK and emoji texts),
//! a malformed PDU is answered with generic_nack while the session lives on, and the session
//! reconnects after the SMSC restarts. SMPP corners: alert_notification gets no response;
//! receipts as data_sm are applied and answered; ESME_RINVBNDSTS makes the session bind again;
//! an SMSC giving every part the same id, or an empty id, leaves no message waiting for ever;
//! a peer that stops reading ends the session, its writer and its socket.

use std::collections::HashMap;
use std::time::Duration;

use otpgate::config::{LongMessages, SmscConfig};
use otpgate::smpp::DeliveryEvent;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use serde_json::json;

use crate::util::*;

async fn bind_to(addr: &str, mode: LongMessages) -> Bind {
    let smsc = SmscConfig {
        name: "sim".into(),
        window: 64,
        long_messages: mode,
        response_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    start_bind(addr, smsc, true).await
}

fn sms(id: usize, to: &str, text: String) -> otpgate::outbox::Job {
    text_job(id, to, text)
}

/// Random texts mixing GSM letters, extension characters, CJK, Vietnamese and emoji, long
/// enough to need several parts.
fn texts(n: usize) -> Vec<String> {
    let pieces = proptest::sample::select(vec![
        "a", "Z", "0", " ", "@", "£", "é", "Ä", "\n", "{", "}", "[", "]", "~", "^", "|", "\\", "€",
        "驗", "证", "ự", "ã", "😀", "👍🏽", "𝄞",
    ]);
    let strategy = proptest::collection::vec(pieces, 1..400).prop_map(|v| v.concat());
    let mut runner = TestRunner::deterministic();
    let mut out: Vec<String> = (0..n)
        .map(|_| strategy.new_tree(&mut runner).expect("value").current())
        .collect();
    // Texts that are GSM-only exercise the 153-septet parts with escapes at the boundary.
    let gsm = proptest::collection::vec(
        proptest::sample::select(vec!["a", "b", " ", "€", "{", "}", "^"]),
        150..500,
    )
    .prop_map(|v| v.concat());
    out.extend((0..n / 2).map(|_| gsm.new_tree(&mut runner).expect("value").current()));
    out
}

async fn reassembles_exactly(mode: LongMessages) {
    let sim = start_sim().await;
    let mut rx = sim.subscribe();
    let mut bind = bind_to(&sim.addr().to_string(), mode).await;
    let texts = texts(60);
    for (i, t) in texts.iter().enumerate() {
        bind.outbox
            .push(sms(i, &format!("+8536610{i:04}"), t.clone()))
            .await
            .unwrap();
    }
    let mut got: HashMap<String, otpgate::smpp::sim::Received> = HashMap::new();
    while got.len() < texts.len() {
        let m = next_message(&mut rx).await;
        got.insert(m.destination_addr.clone(), m);
    }
    for (i, t) in texts.iter().enumerate() {
        let m = &got[&format!("8536610{i:04}")];
        assert_eq!(m.text.as_deref(), Some(t.as_str()), "text {i} in {mode:?}");
        let gsm = t.chars().all(|c| !"驗证ựã😀👍🏽𝄞".contains(c));
        assert_eq!(
            m.data_coding,
            if gsm { 0 } else { 8 },
            "data_coding of text {i}"
        );
        let expected_parts = otpgate::sms::split(t).parts.len();
        let want = match (expected_parts > 1, mode) {
            (false, _) => "single",
            (true, LongMessages::Udh) => "udh",
            (true, LongMessages::Sar) => "sar",
            (true, LongMessages::Payload) => "payload",
        };
        assert_eq!(m.concatenation, want, "text {i}");
        let want_parts = if mode == LongMessages::Payload {
            1
        } else {
            expected_parts
        };
        assert_eq!(m.parts, want_parts, "text {i}");
        if mode == LongMessages::Udh && m.parts > 1 {
            assert_eq!(m.esm_class & 0x40, 0x40, "UDHI set");
        }
    }
    // Every message reported submitted.
    let mut submitted = 0;
    while submitted < texts.len() {
        match tokio::time::timeout(Duration::from_secs(5), bind.events.recv())
            .await
            .expect("event")
            .expect("open")
        {
            DeliveryEvent::Submitted { .. } => submitted += 1,
            DeliveryEvent::Receipt { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    bind.stop.cancel();
    bind.task.await.unwrap();
    assert!(!bind.status.is_bound());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_texts_reassemble_exactly_with_udh() {
    reassembles_exactly(LongMessages::Udh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_texts_reassemble_exactly_with_sar() {
    reassembles_exactly(LongMessages::Sar).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_texts_reassemble_exactly_with_payload() {
    reassembles_exactly(LongMessages::Payload).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_sizes_are_153_gsm_and_67_ucs2() {
    let sim = start_sim().await;
    let mut rx = sim.subscribe();
    let bind = bind_to(&sim.addr().to_string(), LongMessages::Udh).await;
    bind.outbox
        .push(sms(1, "+85366100001", "x".repeat(160)))
        .await
        .unwrap();
    bind.outbox
        .push(sms(2, "+85366100002", "x".repeat(161)))
        .await
        .unwrap();
    bind.outbox
        .push(sms(3, "+85366100003", "驗".repeat(70)))
        .await
        .unwrap();
    bind.outbox
        .push(sms(4, "+85366100004", "驗".repeat(135)))
        .await
        .unwrap();
    let mut parts = HashMap::new();
    for _ in 0..4 {
        let m = next_message(&mut rx).await;
        parts.insert(m.destination_addr.clone(), m.parts);
    }
    assert_eq!(parts["85366100001"], 1);
    assert_eq!(parts["85366100002"], 2);
    assert_eq!(parts["85366100003"], 1);
    assert_eq!(parts["85366100004"], 3, "135 = 67 + 67 + 1");
    bind.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_pdu_gets_generic_nack_and_the_session_lives_on() {
    let sim = start_sim().await;
    let mut rx = sim.subscribe();
    let bind = bind_to(&sim.addr().to_string(), LongMessages::Udh).await;
    // A deliver_sm (0x00000005) whose body is cut short, then an unknown command id.
    sim.inject_raw(&[
        0, 0, 0, 19, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0x30, 0x39, 0x41, 0x42, 0x43,
    ])
    .await;
    sim.inject_raw(&[0, 0, 0, 16, 0, 0, 0x0F, 0x0F, 0, 0, 0, 0, 0, 0, 0x30, 0x3A])
        .await;
    for _ in 0..100 {
        if sim.generic_nacks_received() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        sim.generic_nacks_received(),
        2,
        "both answered with generic_nack"
    );
    bind.outbox
        .push(sms(1, "+85366100009", "still alive".into()))
        .await
        .unwrap();
    let m = next_message(&mut rx).await;
    assert_eq!(m.text.as_deref(), Some("still alive"));
    assert_eq!(sim.binds(), 1, "the same session, no rebind");
    assert!(bind.status.is_bound());
    bind.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_smsc_restarts() {
    let sim = start_sim().await;
    let addr = sim.addr();
    let d = TestDaemon::start_with(Backend::Memory, sim.clone(), "", |_| {}).await;
    sim.shutdown();
    sim.stopped().await;
    // The daemon notices and says so.
    for _ in 0..100 {
        let (s, body) = d.get("", "/readyz").await;
        if s == 503 {
            assert_eq!(body["smsc"]["sim"], "down");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, _) = d.get("", "/readyz").await;
    assert_eq!(s, 503, "not ready while the SMSC is down");
    // A code requested while the SMSC is down waits in the queue.
    let (s, _, _) = d
        .post(
            TOKEN_A,
            "/v1/verifications",
            json!({"purpose": "registration", "phone": "+85366100010"}),
        )
        .await;
    assert_eq!(s, 201);
    // The SMSC comes back on the same address.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("rebind the same port");
    let sim2 = otpgate::smpp::sim::start(listener, Default::default()).unwrap();
    let mut rx = sim2.subscribe();
    let m = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("delivered after reconnect")
        .unwrap();
    assert_eq!(m.destination_addr, "85366100010");
    d.wait_ready().await;
    assert_eq!(sim2.binds(), 1);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_fail_the_message_with_the_smpp_status() {
    let sim = start_sim().await;
    sim.set_submit_status(0x0B); // ESME_RINVDSTADR
    let d = TestDaemon::start_with(Backend::Memory, sim.clone(), "", |_| {}).await;
    let (s, v, _) = d
        .post(
            TOKEN_A,
            "/v1/verifications",
            json!({"purpose": "registration", "phone": "+85366100011"}),
        )
        .await;
    assert_eq!(s, 201);
    let id = v["id"].as_str().unwrap();
    let mut delivery = json!(null);
    for _ in 0..100 {
        let (_, body) = d.get(TOKEN_A, &format!("/v1/verifications/{id}")).await;
        delivery = body["delivery"].clone();
        if delivery == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(delivery, "failed");
    d.stop().await;
}

/// Sends a bind_transceiver on `s`; true when the simulator answered it.
async fn bind_answered(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bind = rusmpp::Command::new(
        rusmpp::CommandStatus::EsmeRok,
        1,
        rusmpp::Pdu::BindTransceiver(Default::default()),
    );
    if s.write_all(&otpgate::smpp::pdu::encode(&bind))
        .await
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut head)).await,
        Ok(Ok(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_simulator_serves_no_connection() {
    // Connections the kernel completed just before shutdown() (some accepted, some still in
    // the backlog) must not be served afterwards, and the port is free once stopped() returns.
    for round in 0..10 {
        let sim = start_sim().await;
        let addr = sim.addr();
        let mut conns = Vec::new();
        for _ in 0..64 {
            conns.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        }
        sim.shutdown();
        let mut answered = 0;
        for c in &mut conns {
            if bind_answered(c).await {
                answered += 1;
            }
        }
        assert_eq!(
            answered, 0,
            "round {round}: binds answered after shutdown()"
        );
        sim.stopped().await;
        tokio::net::TcpListener::bind(addr)
            .await
            .expect("the port is free once stopped() returns");
    }
}

/// The status of message `id` once it is `want` (5 s at most).
async fn message_becomes(d: &TestDaemon, id: &str, want: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
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

async fn post_text(d: &TestDaemon, to: &str, text: &str) -> String {
    let (s, v, _) = d
        .post(TOKEN_A, "/v1/messages", json!({"to": to, "text": text}))
        .await;
    assert_eq!(s, 202, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_notification_gets_no_response() {
    let sim = start_sim().await;
    let bind = bind_to(&sim.addr().to_string(), LongMessages::Udh).await;
    // alert_notification (0x00000102), then an unknown command id as a marker: responses go
    // in order, so once the marker's generic_nack is in, the alert was handled.
    sim.inject_raw(&[
        0, 0, 0, 24, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 77, 1, 1, b'1', 0, 1, 1, b'2', 0,
    ])
    .await;
    sim.inject_raw(&[0, 0, 0, 16, 0, 0, 0x0F, 0x0F, 0, 0, 0, 0, 0, 0, 0x30, 0x3A])
        .await;
    for _ in 0..100 {
        if sim.generic_nacks_received() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        sim.generic_nacks_received(),
        1,
        "only the marker was nacked"
    );
    assert!(bind.status.is_bound());
    bind.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_sent_as_data_sm_are_applied_and_answered() {
    let sim = start_sim().await;
    sim.update(|b| b.receipt_as_data_sm = true);
    let d = TestDaemon::start_with(Backend::Memory, sim.clone(), "", |_| {}).await;
    let id = post_text(&d, "+85366100021", "data_sm receipt").await;
    message_becomes(&d, &id, "delivered").await;
    assert_eq!(
        sim.generic_nacks_received(),
        0,
        "data_sm answered, not nacked"
    );
    assert_eq!(sim.receipts_refused(), 0, "answered data_sm_resp OK");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_bound_status_makes_the_session_bind_again() {
    let sim = start_sim().await;
    sim.set_submit_status(0x04); // ESME_RINVBNDSTS
    let d = TestDaemon::start_with(Backend::Memory, sim.clone(), "", |_| {}).await;
    let mut rx = sim.subscribe();
    post_text(&d, "+85366100022", "after a rebind").await;
    for _ in 0..250 {
        if sim.binds() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sim.binds() >= 2, "bound again after ESME_RINVBNDSTS");
    sim.set_submit_status(0);
    let m = tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .expect("sent after the rebind")
        .unwrap();
    assert_eq!(m.text.as_deref(), Some("after a rebind"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_for_every_part_settles_the_message() {
    let sim = start_sim().await;
    sim.update(|b| b.fixed_message_id = Some("5A5A".into()));
    let d = TestDaemon::start_with(Backend::Memory, sim.clone(), "", |_| {}).await;
    let id = post_text(&d, "+85366100023", &"a".repeat(400)).await;
    let v = message_becomes(&d, &id, "delivered").await;
    assert_eq!(v["parts"], 3, "{v}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_id_is_submitted_with_no_receipt_expected() {
    let sim = start_sim().await;
    sim.update(|b| b.fixed_message_id = Some(String::new()));
    let d = TestDaemon::start_with(Backend::Memory, sim.clone(), "", |_| {}).await;
    let id = post_text(&d, "+85366100024", "no id").await;
    let mut last = serde_json::Value::Null;
    for _ in 0..250 {
        let (_, v) = d.get(TOKEN_A, &format!("/v1/messages/{id}")).await;
        if v["error"]
            .as_str()
            .is_some_and(|e| e.contains("no message id"))
        {
            last = v;
            break;
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last["status"], "submitted", "{last}");
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("no receipt")),
        "says why no receipt will come: {last}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_ends_the_session_and_its_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let smsc = SmscConfig {
        name: "sim".into(),
        window: 64,
        response_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let bind = start_bind(&addr, smsc, false).await;
    let (first, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("a bind")
        .unwrap();
    let (mut r, mut w) = first.into_split();
    let mut head = [0u8; 16];
    r.read_exact(&mut head).await.unwrap();
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let mut body = vec![0u8; len - 16];
    r.read_exact(&mut body).await.unwrap();
    let resp = rusmpp::Command::new(
        rusmpp::CommandStatus::EsmeRok,
        1,
        rusmpp::Pdu::BindTransceiverResp(Default::default()),
    );
    w.write_all(&otpgate::smpp::pdu::encode(&resp))
        .await
        .unwrap();
    // From now on the peer sends enquire_links and reads nothing: our answers pile up.
    let flood = tokio::spawn(async move {
        let mut chunk = Vec::new();
        for seq in 0..1000u32 {
            let e = rusmpp::Command::new(
                rusmpp::CommandStatus::EsmeRok,
                seq + 2,
                rusmpp::Pdu::EnquireLink,
            );
            chunk.extend_from_slice(&otpgate::smpp::pdu::encode(&e));
        }
        while w.write_all(&chunk).await.is_ok() {}
    });
    // The session gives up on the stalled writes and binds again...
    let (_second, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .expect("a new bind after the stalled session")
        .unwrap();
    // ...and the stalled connection is gone: the peer's writes fail.
    tokio::time::timeout(Duration::from_secs(10), flood)
        .await
        .expect("the old socket is closed by the daemon")
        .unwrap();
    drop(r);
    bind.stop.cancel();
}
