//! The carrier subscriber check against a test carrier that serves the OAuth2 token, CAMARA
//! KYC Match and SIM Swap endpoints and validates every request against the official specs:
//! how each carrier answer maps to the contract's verdicts and errors, token caching and
//! renewal, time-outs; and the static provider.

use std::sync::Arc;
use std::time::Duration;

use otpgate::clock::Clock;
use otpgate::phone::Phone;
use otpgate::subscriber::camara::Camara;
use otpgate::subscriber::static_file::StaticProvider;
use otpgate::subscriber::{Checker, Error, Field, FieldResult, Identity, Verdict};
use serde_json::json;

use crate::carrier::{Carrier, Kyc};

const PHONE: &str = "+84912345678";

fn identity() -> Identity {
    Identity {
        id_document: Some("079090001234".into()),
        id_document_type: Some("national_id_card".into()),
        name: Some("NGUYỄN VĂN A".into()),
        given_name: Some("A".into()),
        family_name: Some("NGUYỄN".into()),
        birthdate: Some("1990-01-31".into()),
        address: None,
    }
}

fn all_true() -> serde_json::Value {
    json!({
        "idDocumentMatch": "true", "idDocumentTypeMatch": "true", "nameMatch": "true",
        "givenNameMatch": "true", "familyNameMatch": "true", "birthdateMatch": "true"
    })
}

fn require() -> Vec<Field> {
    vec![Field::IdDocument, Field::Name, Field::Birthdate]
}

struct Setup {
    carrier: Carrier,
    checker: Checker,
    clock: Clock,
}

async fn setup(expires_in: u64, call_timeout: Duration) -> Setup {
    let carrier = Carrier::start(expires_in).await;
    let clock = Clock::system();
    let camara =
        Camara::with_timeout(&carrier.config(), 90, clock.clone(), call_timeout).expect("client");
    let checker = Checker::new(
        Some(Arc::new(camara)),
        require(),
        Duration::from_secs(72 * 3600),
    );
    Setup {
        carrier,
        checker,
        clock,
    }
}

fn phone() -> Phone {
    Phone::from_e164_unchecked(PHONE.into())
}

async fn check(s: &Setup) -> Result<Verdict, Error> {
    s.checker
        .check(&phone(), &identity(), s.clock.now_ms())
        .await
}

fn fields(v: &Verdict) -> Vec<(&'static str, &'static str)> {
    match v {
        Verdict::Match { fields } | Verdict::Mismatch { fields } => fields
            .iter()
            .map(|(f, r)| (f.as_str(), r.as_str()))
            .collect(),
        Verdict::SimSwapped => vec![],
    }
}

#[tokio::test]
async fn a_match_with_no_recent_swap_passes_and_the_token_is_reused() {
    let s = setup(3600, Duration::from_secs(5)).await;
    s.carrier.set_kyc(PHONE, Kyc::Answer(all_true()));
    for _ in 0..3 {
        let v = check(&s).await.expect("answer");
        assert!(matches!(v, Verdict::Match { .. }), "{v:?}");
    }
    s.carrier.seen(|seen| {
        assert_eq!(seen.tokens_issued, 1, "one token for every call");
        assert_eq!(seen.kyc_calls, 3);
        assert_eq!(seen.swap_calls, 3);
        assert_eq!(seen.last_max_age, Some(72));
        let req = seen.last_match_request.clone().expect("request");
        assert_eq!(req["phoneNumber"], PHONE);
        assert_eq!(req["idDocumentType"], "national_id_card");
        assert_eq!(req["familyName"], "NGUYỄN");
        assert!(
            req.get("address").is_none(),
            "only the fields given are sent"
        );
    });
    s.carrier.assert_clean();
}

#[tokio::test]
async fn each_single_field_mismatch_is_reported() {
    let s = setup(3600, Duration::from_secs(5)).await;
    for (camel, field) in [
        ("idDocumentMatch", "id_document"),
        ("nameMatch", "name"),
        ("birthdateMatch", "birthdate"),
        ("givenNameMatch", "given_name"),
    ] {
        let mut a = all_true();
        a[camel] = json!("false");
        s.carrier.set_kyc(PHONE, Kyc::Answer(a));
        let v = check(&s).await.expect("answer");
        let f = fields(&v);
        assert!(f.contains(&(field, "mismatch")), "{field}: {f:?}");
        assert_eq!(f.iter().filter(|(_, r)| *r == "mismatch").count(), 1);
        // given_name is not required: reported, but it does not refuse.
        if field == "given_name" {
            assert!(matches!(v, Verdict::Match { .. }), "{v:?}");
        } else {
            assert!(matches!(v, Verdict::Mismatch { .. }), "{field}: {v:?}");
        }
    }
    // A required field the carrier cannot check refuses.
    let mut a = all_true();
    a["birthdateMatch"] = json!("not_available");
    s.carrier.set_kyc(PHONE, Kyc::Answer(a));
    let v = check(&s).await.expect("answer");
    assert!(matches!(v, Verdict::Mismatch { .. }));
    assert!(fields(&v).contains(&("birthdate", "not_available")));
    s.carrier.assert_clean();
}

#[tokio::test]
async fn names_match_at_the_score_threshold_and_not_below() {
    let s = setup(3600, Duration::from_secs(5)).await;
    for (score, matches) in [(90, true), (99, true), (89, false)] {
        let mut a = all_true();
        a["nameMatch"] = json!("false");
        a["nameMatchScore"] = json!(score);
        s.carrier.set_kyc(PHONE, Kyc::Answer(a));
        let v = check(&s).await.expect("answer");
        assert_eq!(
            matches!(v, Verdict::Match { .. }),
            matches,
            "score {score}: {v:?}"
        );
    }
    s.carrier.assert_clean();
}

#[tokio::test]
async fn a_recent_sim_swap_refuses() {
    let s = setup(3600, Duration::from_secs(5)).await;
    s.carrier.set_kyc(PHONE, Kyc::Answer(all_true()));
    s.carrier.set_swapped(PHONE, true);
    assert_eq!(check(&s).await.expect("answer"), Verdict::SimSwapped);
    s.carrier.assert_clean();
}

#[tokio::test]
async fn carrier_refusals_are_mismatches() {
    let s = setup(3600, Duration::from_secs(5)).await;
    // No subscriber for the number: every field not_available, refused.
    s.carrier
        .set_kyc(PHONE, Kyc::Error(404, "IDENTIFIER_NOT_FOUND"));
    let v = check(&s).await.expect("answer");
    assert!(matches!(v, Verdict::Mismatch { .. }));
    assert!(fields(&v).iter().all(|(_, r)| *r == "not_available"));
    assert_eq!(fields(&v).len(), 6, "one entry per field sent");
    // The ID document does not match: id_document mismatch, the rest not_available.
    s.carrier.set_kyc(
        PHONE,
        Kyc::Error(403, "KNOW_YOUR_CUSTOMER.ID_DOCUMENT_MISMATCH"),
    );
    let v = check(&s).await.expect("answer");
    assert!(matches!(v, Verdict::Mismatch { .. }));
    for (f, r) in fields(&v) {
        let want = if f == "id_document" {
            "mismatch"
        } else {
            "not_available"
        };
        assert_eq!(r, want, "{f}");
    }
    s.carrier
        .seen(|seen| assert_eq!(seen.swap_calls, 0, "no SIM check for a mismatch"));
    s.carrier.assert_clean();
}

#[tokio::test]
async fn configuration_faults_are_errors_not_mismatches() {
    let s = setup(3600, Duration::from_secs(5)).await;
    for code in [
        "PERMISSION_DENIED",
        "KNOW_YOUR_CUSTOMER.ID_DOCUMENT_REQUIRED",
    ] {
        s.carrier.set_kyc(PHONE, Kyc::Error(403, code));
        let e = check(&s).await.expect_err("a fault");
        assert!(matches!(e, Error::Misconfigured { .. }), "{code}: {e:?}");
    }
    // A token the carrier keeps refusing: renewed once, then a fault.
    s.carrier.set_kyc(PHONE, Kyc::Answer(all_true()));
    s.carrier.unauthorized_next(2);
    let before = s.carrier.seen(|seen| seen.tokens_issued);
    let e = check(&s).await.expect_err("a fault");
    assert!(matches!(e, Error::Misconfigured { .. }), "{e:?}");
    assert_eq!(s.carrier.seen(|seen| seen.tokens_issued), before + 1);
    s.carrier.assert_clean();
}

#[tokio::test]
async fn outages_and_timeouts_are_unavailable_then_recover() {
    let s = setup(3600, Duration::from_millis(500)).await;
    s.carrier.set_kyc(PHONE, Kyc::Answer(all_true()));
    s.carrier.set_down(Some(503));
    assert!(matches!(check(&s).await, Err(Error::Unavailable { .. })));
    s.carrier.set_down(Some(429));
    assert!(matches!(check(&s).await, Err(Error::Unavailable { .. })));
    s.carrier.set_down(None);
    s.carrier
        .set_kyc(PHONE, Kyc::Slow(Duration::from_secs(2), all_true()));
    assert!(matches!(check(&s).await, Err(Error::Unavailable { .. })));
    // A success whose body is cut off says nothing: unavailable, not a mismatch.
    s.carrier.set_kyc(PHONE, Kyc::Garbled);
    assert!(matches!(check(&s).await, Err(Error::Unavailable { .. })));
    // The carrier recovers: the same check passes.
    s.carrier.set_kyc(PHONE, Kyc::Answer(all_true()));
    assert!(matches!(check(&s).await, Ok(Verdict::Match { .. })));
    s.carrier.assert_clean();
}

#[tokio::test]
async fn tokens_are_renewed_before_they_expire_and_after_a_401() {
    let s = setup(600, Duration::from_secs(5)).await;
    s.carrier.set_kyc(PHONE, Kyc::Answer(all_true()));
    check(&s).await.expect("first");
    assert_eq!(s.carrier.seen(|seen| seen.tokens_issued), 1);
    // 10 minutes later the token is due: a new one is fetched before the call.
    s.clock.advance(Duration::from_secs(600));
    check(&s).await.expect("second");
    assert_eq!(s.carrier.seen(|seen| seen.tokens_issued), 2);
    // The carrier revokes it early: one 401, one renewal, the call goes through.
    s.carrier.revoke_tokens();
    check(&s).await.expect("third");
    assert_eq!(s.carrier.seen(|seen| seen.tokens_issued), 3);
    s.carrier.assert_clean();
}

#[tokio::test]
async fn the_static_provider_follows_the_same_rules() {
    let file = format!("{}/config/subscribers.toml", env!("CARGO_MANIFEST_DIR"));
    let p = StaticProvider::load(std::path::Path::new(&file)).expect("shipped file");
    assert!(!p.is_empty());
    let checker = Checker::new(Some(Arc::new(p)), require(), Duration::from_secs(72 * 3600));
    let macau = Phone::from_e164_unchecked("+85366123456".into());
    let id = Identity {
        id_document: Some("1234567(8)".into()),
        name: Some("chan  tai man".into()),
        birthdate: Some("1985-04-12".into()),
        ..Default::default()
    };
    let now = otpgate::clock::system_now_ms();
    assert!(matches!(
        checker.check(&macau, &id, now).await,
        Ok(Verdict::Match { .. })
    ));
    let wrong = Identity {
        birthdate: Some("1985-04-13".into()),
        ..id.clone()
    };
    let v = checker.check(&macau, &wrong, now).await.expect("answer");
    assert_eq!(
        v,
        Verdict::Mismatch {
            fields: vec![
                (Field::IdDocument, FieldResult::Match),
                (Field::Name, FieldResult::Match),
                (Field::Birthdate, FieldResult::Mismatch),
            ]
        }
    );
    // The Vietnamese record's SIM changed on 2026-01-05: within 72 h of then it is refused.
    let vn = Phone::from_e164_unchecked(PHONE.into());
    let vn_id = Identity {
        id_document: Some("079090001234".into()),
        name: Some("Nguyễn Văn A".into()),
        birthdate: Some("1990-01-31".into()),
        ..Default::default()
    };
    let changed = 1_767_600_000_000;
    assert_eq!(
        checker
            .check(&vn, &vn_id, changed + 3_600_000)
            .await
            .expect("answer"),
        Verdict::SimSwapped
    );
    assert!(matches!(
        checker.check(&vn, &vn_id, changed + 73 * 3_600_000).await,
        Ok(Verdict::Match { .. })
    ));
    // provider = "none": checks are off.
    let none = Checker::new(None, require(), Duration::ZERO);
    assert!(matches!(
        none.check(&macau, &id, now).await,
        Err(Error::Disabled)
    ));
}

#[tokio::test]
async fn the_test_carrier_catches_requests_that_break_the_specs() {
    // The validator behind every test above must be able to fail.
    let carrier = Carrier::start(3600).await;
    carrier.set_kyc(PHONE, Kyc::Answer(all_true()));
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(carrier.token_url())
        .basic_auth("otpgate-test", Some("carrier-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let token = token["access_token"].as_str().expect("token").to_owned();
    let bad = [
        (
            "kyc-match/v0.4/match",
            json!({"phoneNumber": PHONE, "id_document": "x"}),
            "ok",
        ),
        (
            "kyc-match/v0.4/match",
            json!({"phoneNumber": PHONE, "birthdate": "31/01/1990"}),
            "ok",
        ),
        (
            "kyc-match/v0.4/match",
            json!({"phoneNumber": "0912345678", "name": "A"}),
            "ok",
        ),
        (
            "kyc-match/v0.4/match",
            json!({"phoneNumber": PHONE, "idDocumentType": "id"}),
            "ok",
        ),
        (
            "sim-swap/v2/check",
            json!({"phoneNumber": PHONE, "maxAge": 0}),
            "ok",
        ),
        (
            "sim-swap/v2/check",
            json!({"phoneNumber": PHONE}),
            "bad correlator",
        ),
    ];
    for (path, body, correlator) in &bad {
        let c = if *correlator == "ok" {
            "abc-123"
        } else {
            "has space"
        };
        let _ = http
            .post(format!("{}/{path}", carrier.base_url()))
            .bearer_auth(&token)
            .header("x-correlator", c)
            .json(body)
            .send()
            .await
            .expect("request");
    }
    let v = carrier.seen(|s| s.violations.clone());
    assert_eq!(
        v.len(),
        bad.len(),
        "each bad request is caught once: {v:#?}"
    );
}
