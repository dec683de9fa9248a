//! Lost-phone number changes (contract §3.3) on both stores: the code to the new number, the
//! carrier check against the test carrier (every request validated against the CAMARA specs,
//! each test ending with `assert_clean()`) or the static provider, completion (level 2, old
//! primary removed, the §4 notice to the old number in the request's locale), refusals,
//! carrier faults and `/retry`, expiry.

use std::time::Duration;

use otpgate::config::Config;
use otpgate::purpose::Purpose;
use otpgate::subscriber::SubscriberProvider;
use serde_json::{Value, json};

use crate::both_stores;
use crate::carrier::{Carrier, Kyc};
use crate::phones::{HK, MO, VN, bind, phones};
use crate::util::*;

fn identity() -> Value {
    json!({"id_document": "079090001234", "name": "NGUYỄN VĂN A", "given_name": "A",
           "family_name": "NGUYỄN", "birthdate": "1990-01-31"})
}

fn all_true() -> Value {
    json!({"idDocumentMatch": "true", "nameMatch": "true", "givenNameMatch": "true",
           "familyNameMatch": "true", "birthdateMatch": "true"})
}

fn allow_changes(c: &mut Config) {
    c.clients[0].purposes.push(Purpose::PhoneChange);
}

/// A daemon whose subscriber provider is the test carrier.
async fn with_carrier(b: Backend) -> (TestDaemon, Carrier) {
    let carrier = Carrier::start(3600).await;
    let cfg = carrier.config();
    let d = TestDaemon::start_with(b, start_sim().await, "", move |c| {
        allow_changes(c);
        c.subscriber.provider = SubscriberProvider::Camara;
        c.subscriber.camara = Some(cfg);
    })
    .await;
    (d, carrier)
}

/// The next SMS the simulator receives for `to` (international digits).
async fn next_to(
    rx: &mut tokio::sync::broadcast::Receiver<otpgate::smpp::sim::Received>,
    to: &str,
) -> otpgate::smpp::sim::Received {
    loop {
        let m = next_message(rx).await;
        if m.destination_addr == to {
            return m;
        }
    }
}

/// Starts a change of `account` to `new_phone`; (id, the code received there, the 201 body).
async fn start(
    d: &TestDaemon,
    account: &str,
    new_phone: &str,
    identity: Value,
) -> (String, String, Value) {
    let mut rx = d.sim.subscribe();
    let (s, body, _) = d
        .post(TOKEN_A, "/v1/phone-changes",
              json!({"account_id": account, "new_phone": new_phone, "locale": "vi", "identity": identity,
                     "context": {"ip": "198.51.100.4"}}))
        .await;
    assert_eq!(s, 201, "{body}");
    let m = next_to(&mut rx, new_phone.trim_start_matches('+')).await;
    let code = extract_code(m.text.as_deref().expect("text"));
    (body["id"].as_str().expect("id").to_owned(), code, body)
}

async fn check(d: &TestDaemon, id: &str, code: &str) -> (u16, Value) {
    let (s, b, _) = d
        .post(
            TOKEN_A,
            &format!("/v1/phone-changes/{id}/check"),
            json!({"code": code}),
        )
        .await;
    (s, b)
}

async fn status(d: &TestDaemon, id: &str) -> Value {
    let (s, b) = d.get(TOKEN_A, &format!("/v1/phone-changes/{id}")).await;
    assert_eq!(s, 200, "{b}");
    b["status"].clone()
}

/// A completed change: the new number is the level-2 primary, the old primary is gone, the
/// other phones stay, the old number got the notice in Vietnamese.
async fn assert_completed(d: &TestDaemon, account: &str, id: &str, code: &str) {
    let mut rx = d.sim.subscribe();
    let (s, b) = check(d, id, code).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (&b["status"], &b["phone_masked"]),
        (&json!("completed"), &json!("+84*****5678"))
    );
    let notice = next_to(&mut rx, "85366123456").await;
    assert_eq!(
        notice.text.as_deref(),
        Some(
            "One Account: Số điện thoại nhận mã của bạn đã được đổi thành +84*****5678. Nếu không phải bạn, hãy liên hệ One Account ngay."
        )
    );
    let list = phones(d, account).await;
    let view: Vec<(&str, bool, i64)> = list
        .iter()
        .map(|p| {
            (
                p["phone_masked"].as_str().unwrap(),
                p["primary"] == true,
                p["level"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        view,
        [("+852****4567", false, 1), ("+84*****5678", true, 2)]
    );
    assert_eq!(status(d, id).await, "completed");
    let (_, ev) = d
        .get(TOKEN_A, &format!("/v1/accounts/{account}/events"))
        .await;
    assert_eq!(ev["events"][0]["type"], "phone_changed");
    assert_eq!(ev["events"][0]["purpose"], "phone_change");
    assert_eq!(ev["events"][0]["phone_masked"], "+84*****5678");
    assert_eq!(ev["events"][0]["ip"], "198.51.100.4");
}

both_stores! {
    async fn a_matching_carrier_record_completes_the_change(b: Backend) {
        let (d, carrier) = with_carrier(b).await;
        carrier.set_kyc(VN, Kyc::Answer(all_true()));
        bind(&d, "acc-ok", MO, false).await;
        bind(&d, "acc-ok", HK, false).await;
        let (id, code, body) = start(&d, "acc-ok", VN, identity()).await;
        assert!(id.starts_with("pc_"));
        assert_eq!(body["status"], "code_sent");
        assert_eq!(body["phone_masked"], "+84*****5678");
        assert_eq!((&body["attempts_remaining"], &body["sends_remaining"]), (&json!(5), &json!(2)));
        assert!(body["message_id"].as_str().unwrap().starts_with("msg_"));
        assert!(body["expires_at"].is_string() && body["resend_available_at"].is_string());
        // A wrong code first: counted as for verifications.
        let (s, e) = check(&d, &id, "000000").await;
        let wrong = if code == "000000" { 200 } else { 422 };
        assert_eq!(s, wrong, "{e}");
        assert_completed(&d, "acc-ok", &id, &code).await;
        // The code is spent.
        let (s, _) = check(&d, &id, &code).await;
        assert_eq!(s, 409);
        carrier.seen(|s| assert_eq!(s.last_max_age, Some(72)));
        carrier.assert_clean();
        d.stop().await;
    }

    async fn mismatches_and_sim_swaps_refuse(b: Backend) {
        let (d, carrier) = with_carrier(b).await;
        let cases: Vec<(&str, Kyc, Option<Value>)> = vec![
            ("id_document", Kyc::Answer(json!({"idDocumentMatch": "false", "nameMatch": "true", "givenNameMatch": "true", "familyNameMatch": "true", "birthdateMatch": "true"})),
             Some(json!({"id_document": "mismatch", "name": "match", "given_name": "match", "family_name": "match", "birthdate": "match"}))),
            ("name", Kyc::Answer(json!({"idDocumentMatch": "true", "nameMatch": "false", "givenNameMatch": "true", "familyNameMatch": "true", "birthdateMatch": "true"})),
             Some(json!({"id_document": "match", "name": "mismatch", "given_name": "match", "family_name": "match", "birthdate": "match"}))),
            ("birthdate", Kyc::Answer(json!({"idDocumentMatch": "true", "nameMatch": "true", "givenNameMatch": "true", "familyNameMatch": "true", "birthdateMatch": "false"})),
             Some(json!({"id_document": "match", "name": "match", "given_name": "match", "family_name": "match", "birthdate": "mismatch"}))),
            ("404", Kyc::Error(404, "IDENTIFIER_NOT_FOUND"),
             Some(json!({"id_document": "not_available", "name": "not_available", "given_name": "not_available", "family_name": "not_available", "birthdate": "not_available"}))),
            ("403 document", Kyc::Error(403, "KNOW_YOUR_CUSTOMER.ID_DOCUMENT_MISMATCH"),
             Some(json!({"id_document": "mismatch", "name": "not_available", "given_name": "not_available", "family_name": "not_available", "birthdate": "not_available"}))),
            ("sim swap", Kyc::Answer(all_true()), None),
        ];
        for (i, (what, kyc, fields)) in cases.into_iter().enumerate() {
            let account = format!("acc-r{i}");
            bind(&d, &account, MO, false).await;
            carrier.set_kyc(VN, kyc);
            carrier.set_swapped(VN, fields.is_none());
            let (id, code, _) = start(&d, &account, VN, identity()).await;
            let (s, e) = check(&d, &id, &code).await;
            assert_eq!(s, 409, "{what}: {e}");
            match &fields {
                Some(f) => {
                    assert_eq!(e["error"]["code"], "subscriber_mismatch", "{what}");
                    assert_eq!(&e["error"]["fields"], f, "{what}");
                }
                None => assert_eq!(e["error"]["code"], "sim_swap_detected", "{what}"),
            }
            assert_eq!(status(&d, &id).await, "refused", "{what}");
            // A retry answers the same; the account keeps its phone.
            let (s, again, _) = d.post(TOKEN_A, &format!("/v1/phone-changes/{id}/retry"), json!({})).await;
            assert_eq!((s, &again["error"]["code"]), (409, &e["error"]["code"]), "{what}");
            let list = phones(&d, &account).await;
            assert_eq!(list.len(), 1);
            assert_eq!(list[0]["phone_masked"], "+853****3456");
            let (_, ev) = d.get(TOKEN_A, &format!("/v1/accounts/{account}/events")).await;
            assert_eq!(ev["events"][0]["type"], "phone_change_refused", "{what}");
        }
        // A field outside `require` that mismatches is reported only: the change completes.
        carrier.set_swapped(VN, false);
        carrier.set_kyc(VN, Kyc::Answer(json!({"idDocumentMatch": "true", "nameMatch": "true", "givenNameMatch": "false", "familyNameMatch": "true", "birthdateMatch": "true"})));
        bind(&d, "acc-given", MO, false).await;
        bind(&d, "acc-given", HK, false).await;
        let (id, code, _) = start(&d, "acc-given", VN, identity()).await;
        assert_completed(&d, "acc-given", &id, &code).await;
        carrier.assert_clean();
        d.stop().await;
    }

    async fn a_missing_required_field_is_refused_at_create(b: Backend) {
        let (d, carrier) = with_carrier(b).await;
        let mut id = identity();
        id.as_object_mut().unwrap().remove("birthdate");
        let (s, e, _) = d.post(TOKEN_A, "/v1/phone-changes",
            json!({"account_id": "acc-m", "new_phone": VN, "identity": id})).await;
        assert_eq!(s, 400, "{e}");
        assert_eq!(e["error"]["code"], "invalid_request");
        assert_eq!(e["error"]["field"], "identity.birthdate");
        carrier.seen(|s| assert_eq!(s.kyc_calls, 0));
        carrier.assert_clean();
        d.stop().await;
    }

    async fn carrier_faults_leave_the_change_for_retry(b: Backend) {
        let (d, carrier) = with_carrier(b).await;
        carrier.set_kyc(VN, Kyc::Answer(all_true()));
        bind(&d, "acc-f", MO, false).await;
        bind(&d, "acc-f", HK, false).await;
        // Configuration faults (403 PERMISSION_DENIED, ID_DOCUMENT_REQUIRED): 503, nothing
        // refused.
        carrier.set_kyc(VN, Kyc::Error(403, "PERMISSION_DENIED"));
        let (id, code, _) = start(&d, "acc-f", VN, identity()).await;
        let (s, e) = check(&d, &id, &code).await;
        assert_eq!((s, &e["error"]["code"]), (503, &json!("subscriber_check_unavailable")), "{e}");
        assert_eq!(status(&d, &id).await, "code_verified");
        carrier.set_kyc(VN, Kyc::Error(400, "KNOW_YOUR_CUSTOMER.ID_DOCUMENT_REQUIRED"));
        let (s, _, _) = d.post(TOKEN_A, &format!("/v1/phone-changes/{id}/retry"), json!({})).await;
        assert_eq!(s, 503);
        assert_eq!(status(&d, &id).await, "code_verified");
        // The carrier down (503): still 503, still code_verified.
        carrier.set_kyc(VN, Kyc::Answer(all_true()));
        carrier.set_down(Some(503));
        let (s, _, _) = d.post(TOKEN_A, &format!("/v1/phone-changes/{id}/retry"), json!({})).await;
        assert_eq!(s, 503);
        assert_eq!(status(&d, &id).await, "code_verified");
        // Back: the retry completes, the notice goes out.
        carrier.set_down(None);
        let mut rx = d.sim.subscribe();
        let (s, r, _) = d.post(TOKEN_A, &format!("/v1/phone-changes/{id}/retry"), json!({})).await;
        assert_eq!((s, &r["status"]), (200, &json!("completed")), "{r}");
        let notice = next_to(&mut rx, "85366123456").await;
        assert!(notice.text.as_deref().unwrap().contains("+84*****5678"));
        let list = phones(&d, "acc-f").await;
        assert_eq!(list.iter().filter(|p| p["primary"] == true && p["level"] == 2).count(), 1);
        // Retrying a completed change answers completed again, with no second notice.
        let (s, r, _) = d.post(TOKEN_A, &format!("/v1/phone-changes/{id}/retry"), json!({})).await;
        assert_eq!((s, &r["status"]), (200, &json!("completed")));
        carrier.assert_clean();
        d.stop().await;
    }

    async fn an_expired_change_is_gone(b: Backend) {
        let (d, carrier) = with_carrier(b).await;
        carrier.set_kyc(VN, Kyc::Answer(all_true()));
        bind(&d, "acc-x", MO, false).await;
        let (id, code, body) = start(&d, "acc-x", VN, identity()).await;
        // The code SMS is the change's: its creator may read its delivery.
        let (s, m) = d.get(TOKEN_A, &format!("/v1/messages/{}", body["message_id"].as_str().unwrap())).await;
        assert_eq!(s, 200, "{m}");
        // Resend: the cooldown first, then the same code again; the expiry does not move.
        let resend = format!("/v1/phone-changes/{id}/resend");
        let (s, e, _) = d.post(TOKEN_A, &resend, json!({})).await;
        assert_eq!((s, &e["error"]["limit"]), (429, &json!("resend_cooldown")), "{e}");
        d.clock.advance(Duration::from_secs(60));
        let mut rx = d.sim.subscribe();
        let (s, r, _) = d.post(TOKEN_A, &resend, json!({})).await;
        assert_eq!((s, &r["sends_remaining"], &r["expires_at"]), (200, &json!(1), &body["expires_at"]), "{r}");
        assert_ne!(r["message_id"], body["message_id"]);
        let again = next_to(&mut rx, "84912345678").await;
        assert_eq!(extract_code(again.text.as_deref().unwrap()), code);
        d.clock.advance(Duration::from_secs(241));
        let (s, _, _) = d.post(TOKEN_A, &resend, json!({})).await;
        assert_eq!(s, 410);
        let (s, e) = check(&d, &id, &code).await;
        assert_eq!((s, &e["error"]["code"]), (410, &json!("expired")), "{e}");
        let (s, _, _) = d.post(TOKEN_A, &format!("/v1/phone-changes/{id}/retry"), json!({})).await;
        assert_eq!(s, 410);
        assert_eq!(status(&d, &id).await, "expired");
        assert_eq!(phones(&d, "acc-x").await.len(), 1);
        carrier.seen(|s| assert_eq!(s.kyc_calls, 0));
        carrier.assert_clean();
        d.stop().await;
    }

    async fn the_static_provider_passes_the_same_flow(b: Backend) {
        // The shipped config/subscribers.toml: +84912345678 is NGUYỄN VĂN A (SIM changed long ago).
        let d = TestDaemon::start_with(b, start_sim().await, "", allow_changes).await;
        bind(&d, "acc-s", MO, false).await;
        bind(&d, "acc-s", HK, false).await;
        let mut wrong = identity();
        wrong["birthdate"] = json!("1990-02-01");
        let (id, code, _) = start(&d, "acc-s", VN, wrong).await;
        let (s, e) = check(&d, &id, &code).await;
        assert_eq!((s, &e["error"]["fields"]["birthdate"]), (409, &json!("mismatch")), "{e}");
        let mut nfd = identity();
        nfd["name"] = json!("nguye\u{0302}\u{0303}n  va\u{0306}n a");
        let (id, code, _) = start(&d, "acc-s", VN, nfd).await;
        assert_completed(&d, "acc-s", &id, &code).await;
        d.stop().await;
    }

    async fn without_a_provider_changes_are_refused(b: Backend) {
        let d = TestDaemon::start_with(b, start_sim().await, "", |c| {
            allow_changes(c);
            c.subscriber.provider = SubscriberProvider::None;
        }).await;
        let (s, e, _) = d.post(TOKEN_A, "/v1/phone-changes",
            json!({"account_id": "acc-n", "new_phone": VN, "identity": identity()})).await;
        assert_eq!((s, &e["error"]["code"]), (503, &json!("subscriber_check_unavailable")), "{e}");
        assert!(e["error"]["message"].as_str().unwrap().contains("none"));
        // Binding stays possible, at level 1 even with an identity.
        let vid = crate::phones::approved_registration(&d, MO).await;
        let (s, p, _) = d.post(TOKEN_A, "/v1/accounts/acc-n/phones",
            json!({"verification_id": vid, "identity": identity()})).await;
        assert_eq!((s, &p["level"]), (201, &json!(1)), "{p}");
        d.stop().await;
    }
}

both_stores! {
    async fn binding_with_an_identity_runs_the_carrier_check(b: Backend) {
        let (d, carrier) = with_carrier(b).await;
        let path = "/v1/accounts/acc-i/phones";
        carrier.set_kyc(VN, Kyc::Answer(all_true()));
        let vid = crate::phones::approved_registration(&d, VN).await;
        let (s, p, _) = d.post(TOKEN_A, path,
            json!({"verification_id": vid, "identity": identity(), "context": {"ip": "203.0.113.7"}})).await;
        assert_eq!((s, &p["level"], &p["primary"]), (201, &json!(2), &json!(true)), "{p}");
        let (_, ev) = d.get(TOKEN_A, "/v1/accounts/acc-i/events").await;
        assert_eq!((&ev["events"][0]["type"], &ev["events"][0]["ip"]),
                   (&json!("phone_added"), &json!("203.0.113.7")));
        // A mismatch: 409 with the fields; nothing bound.
        carrier.set_kyc(VN, Kyc::Answer(json!({"idDocumentMatch": "true", "nameMatch": "false",
            "givenNameMatch": "true", "familyNameMatch": "true", "birthdateMatch": "true"})));
        let vid = crate::phones::approved_registration(&d, VN).await;
        let (s, e, _) = d.post(TOKEN_A, "/v1/accounts/acc-i2/phones",
            json!({"verification_id": vid, "identity": identity()})).await;
        assert_eq!((s, &e["error"]["code"], &e["error"]["fields"]["name"]),
                   (409, &json!("subscriber_mismatch"), &json!("mismatch")), "{e}");
        // A required field missing: 400 naming it; the carrier down: 503.
        let mut partial = identity();
        partial.as_object_mut().unwrap().remove("id_document");
        let (s, e, _) = d.post(TOKEN_A, "/v1/accounts/acc-i2/phones",
            json!({"verification_id": vid, "identity": partial})).await;
        assert_eq!((s, &e["error"]["field"]), (400, &json!("identity.id_document")), "{e}");
        carrier.set_down(Some(503));
        let (s, e, _) = d.post(TOKEN_A, "/v1/accounts/acc-i2/phones",
            json!({"verification_id": vid, "identity": identity()})).await;
        assert_eq!((s, &e["error"]["code"]), (503, &json!("subscriber_check_unavailable")), "{e}");
        assert!(phones(&d, "acc-i2").await.is_empty());
        // Back up and matching: the same verification binds (it was never spent).
        carrier.set_down(None);
        carrier.set_kyc(VN, Kyc::Answer(all_true()));
        let (s, p, _) = d.post(TOKEN_A, "/v1/accounts/acc-i2/phones",
            json!({"verification_id": vid, "identity": identity()})).await;
        assert_eq!((s, &p["level"]), (201, &json!(2)), "{p}");
        carrier.assert_clean();
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_the_phone_routes() {
    let d = TestDaemon::start(Backend::Memory).await;
    let (_, v) = d.get(TOKEN_A, "/openapi.json").await;
    let paths = v["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/v1/accounts/{account_id}/phones", "post"),
        ("/v1/accounts/{account_id}/phones", "get"),
        ("/v1/accounts/{account_id}/phones/{phone_id}", "delete"),
        ("/v1/phone-changes", "post"),
        ("/v1/phone-changes/{id}", "get"),
        ("/v1/phone-changes/{id}/resend", "post"),
        ("/v1/phone-changes/{id}/check", "post"),
        ("/v1/phone-changes/{id}/retry", "post"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    d.stop().await;
}
