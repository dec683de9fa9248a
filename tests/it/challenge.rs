//! The code-challenge conformance suite: one table of cases (state, action, time → outcome,
//! state after) run against the pure rules (`otp::challenge`), the memory store and the Redis
//! store (its Lua scripts), so the three cannot drift.

use std::sync::Arc;

use otpgate::otp::challenge::{self, Challenge, CheckOutcome, ResendVerdict, Status};
use otpgate::purpose::Purpose;
use otpgate::store::{
    CheckRequest, CodeProof, DeliveryStatus, MessageRecord, ResendOutcome, Verification,
    VerificationStore,
};

use crate::util::*;

const NOW: i64 = 1_900_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Check { correct: bool },
    Resend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Check(CheckOutcome),
    Resend(ResendVerdict),
}

struct Case {
    name: &'static str,
    before: Challenge,
    action: Action,
    now: i64,
    outcome: Outcome,
    after: Challenge,
}

/// Pending, 60 s to live, 0 of 5 attempts, 1 of 3 sends, the cooldown (60 s) over 2 min ago.
fn fresh() -> Challenge {
    Challenge {
        status: Status::Pending,
        expires_at_ms: NOW + 60_000,
        attempts_used: 0,
        max_attempts: 5,
        sends: 1,
        max_sends: 3,
        last_sent_ms: NOW - 120_000,
        cooldown_ms: 60_000,
    }
}

fn with(f: impl FnOnce(&mut Challenge)) -> Challenge {
    let mut c = fresh();
    f(&mut c);
    c
}

fn cases() -> Vec<Case> {
    use Action::*;
    use CheckOutcome as C;
    use ResendVerdict as R;
    let right = Check { correct: true };
    let wrong = Check { correct: false };
    vec![
        Case {
            name: "right code approves",
            before: fresh(),
            action: right,
            now: NOW,
            outcome: Outcome::Check(C::Approved),
            after: with(|c| c.status = Status::Approved),
        },
        Case {
            name: "wrong code counts an attempt",
            before: fresh(),
            action: wrong,
            now: NOW,
            outcome: Outcome::Check(C::Wrong {
                attempts_remaining: 4,
            }),
            after: with(|c| c.attempts_used = 1),
        },
        Case {
            name: "wrong code on the last attempt locks",
            before: with(|c| c.attempts_used = 4),
            action: wrong,
            now: NOW,
            outcome: Outcome::Check(C::LockedNow),
            after: with(|c| {
                c.attempts_used = 5;
                c.status = Status::Locked
            }),
        },
        Case {
            name: "one attempt allowed: the first wrong code locks",
            before: with(|c| c.max_attempts = 1),
            action: wrong,
            now: NOW,
            outcome: Outcome::Check(C::LockedNow),
            after: with(|c| {
                c.max_attempts = 1;
                c.attempts_used = 1;
                c.status = Status::Locked
            }),
        },
        Case {
            name: "right code after the lock is refused",
            before: with(|c| {
                c.attempts_used = 5;
                c.status = Status::Locked
            }),
            action: right,
            now: NOW,
            outcome: Outcome::Check(C::Locked),
            after: with(|c| {
                c.attempts_used = 5;
                c.status = Status::Locked
            }),
        },
        Case {
            name: "right code one ms before expiry approves",
            before: fresh(),
            action: right,
            now: NOW + 59_999,
            outcome: Outcome::Check(C::Approved),
            after: with(|c| c.status = Status::Approved),
        },
        Case {
            name: "right code at the expiry instant is expired",
            before: fresh(),
            action: right,
            now: NOW + 60_000,
            outcome: Outcome::Check(C::Expired),
            after: fresh(),
        },
        Case {
            name: "wrong code after expiry counts nothing",
            before: fresh(),
            action: wrong,
            now: NOW + 90_000,
            outcome: Outcome::Check(C::Expired),
            after: fresh(),
        },
        Case {
            name: "right code again is already used",
            before: with(|c| c.status = Status::Approved),
            action: right,
            now: NOW,
            outcome: Outcome::Check(C::AlreadyUsed),
            after: with(|c| c.status = Status::Approved),
        },
        Case {
            name: "approved and past expiry is still already used",
            before: with(|c| c.status = Status::Approved),
            action: right,
            now: NOW + 90_000,
            outcome: Outcome::Check(C::AlreadyUsed),
            after: with(|c| c.status = Status::Approved),
        },
        Case {
            name: "canceled is not found",
            before: with(|c| c.status = Status::Canceled),
            action: right,
            now: NOW,
            outcome: Outcome::Check(C::NotFound),
            after: with(|c| c.status = Status::Canceled),
        },
        Case {
            name: "resend after the cooldown is sent",
            before: fresh(),
            action: Resend,
            now: NOW,
            outcome: Outcome::Resend(R::Sent),
            after: with(|c| {
                c.sends = 2;
                c.last_sent_ms = NOW
            }),
        },
        Case {
            name: "resend at the cooldown's end is sent",
            before: with(|c| c.last_sent_ms = NOW - 60_000),
            action: Resend,
            now: NOW,
            outcome: Outcome::Resend(R::Sent),
            after: with(|c| {
                c.sends = 2;
                c.last_sent_ms = NOW
            }),
        },
        Case {
            name: "resend one ms before the cooldown's end waits",
            before: with(|c| c.last_sent_ms = NOW - 59_999),
            action: Resend,
            now: NOW,
            outcome: Outcome::Resend(R::Cooldown { retry_after_ms: 1 }),
            after: with(|c| c.last_sent_ms = NOW - 59_999),
        },
        Case {
            name: "resend with every send used",
            before: with(|c| c.sends = 3),
            action: Resend,
            now: NOW,
            outcome: Outcome::Resend(R::MaxSends),
            after: with(|c| c.sends = 3),
        },
        Case {
            name: "max sends wins over the cooldown",
            before: with(|c| {
                c.sends = 3;
                c.last_sent_ms = NOW
            }),
            action: Resend,
            now: NOW,
            outcome: Outcome::Resend(R::MaxSends),
            after: with(|c| {
                c.sends = 3;
                c.last_sent_ms = NOW
            }),
        },
        Case {
            name: "resend at the expiry instant is expired",
            before: fresh(),
            action: Resend,
            now: NOW + 60_000,
            outcome: Outcome::Resend(R::Expired),
            after: fresh(),
        },
        Case {
            name: "resend of a locked one",
            before: with(|c| c.status = Status::Locked),
            action: Resend,
            now: NOW,
            outcome: Outcome::Resend(R::Locked),
            after: with(|c| c.status = Status::Locked),
        },
        Case {
            name: "resend of an approved one",
            before: with(|c| c.status = Status::Approved),
            action: Resend,
            now: NOW,
            outcome: Outcome::Resend(R::AlreadyUsed),
            after: with(|c| c.status = Status::Approved),
        },
        Case {
            name: "resend of a canceled one",
            before: with(|c| c.status = Status::Canceled),
            action: Resend,
            now: NOW,
            outcome: Outcome::Resend(R::NotFound),
            after: with(|c| c.status = Status::Canceled),
        },
    ]
}

/// Panics listing every case whose outcome or state after differs.
fn report(runner: &str, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{runner}: {} case(s) differ from the table:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn compare(case: &Case, outcome: Outcome, after: Challenge) -> Option<String> {
    (outcome != case.outcome || after != case.after).then(|| {
        format!(
            "- {}: got {outcome:?} → {after:?}; want {:?} → {:?}",
            case.name, case.outcome, case.after
        )
    })
}

#[test]
fn pure_rules_pass_the_table() {
    let failures = cases()
        .iter()
        .filter_map(|case| {
            let mut c = case.before;
            let outcome = match case.action {
                Action::Check { correct } => {
                    Outcome::Check(challenge::check(&mut c, correct, case.now))
                }
                Action::Resend => Outcome::Resend(challenge::resend(&mut c, case.now)),
            };
            compare(case, outcome, c)
        })
        .collect();
    report("otp::challenge", failures);
}

/// Stores the case's verification, applies its action through the store, reads it back.
async fn run_on_store(store: &dyn VerificationStore, case: &Case) -> Option<String> {
    let tag = otpgate::ids::random_tag();
    let id = otpgate::ids::new_id("ver", &tag);
    let first_msg = otpgate::ids::new_id("msg", &tag);
    let c = case.before;
    let v = Verification {
        id: id.clone(),
        client: "client-a".into(),
        purpose: Purpose::Registration,
        account_id: None,
        phone: otpgate::phone::Phone::from_e164_unchecked("+85366123456".into()),
        locale: otpgate::sms::Locale::En,
        status: c.status,
        digits: 6,
        created_at_ms: c.expires_at_ms - 300_000,
        expires_at_ms: c.expires_at_ms,
        attempts_used: c.attempts_used,
        max_attempts: c.max_attempts,
        sends: c.sends,
        max_sends: c.max_sends,
        last_sent_ms: c.last_sent_ms,
        cooldown_ms: c.cooldown_ms,
        message_id: first_msg.clone(),
        subject: hex::encode(otpgate::ids::new_id("sub", &tag)),
        key_id: "k1".into(),
        guard: Default::default(),
    };
    let no_limits = otpgate::limits::Plan::default();
    let guards = otpgate::store::SendGuards {
        plan: &no_limits,
        account: None,
        event: None,
        job: None,
    };
    let record = |id: &str| MessageRecord {
        id: id.to_owned(),
        client: "client-a".into(),
        owner: v.id.clone(),
        status: DeliveryStatus::Queued,
        encoding: "gsm7".into(),
        parts: 1,
        created_at_ms: NOW,
        submitted_at_ms: None,
        delivered_at_ms: None,
        error: None,
    };
    store
        .create(&v, &record(&first_msg), guards)
        .await
        .expect("create")
        .expect("no limits");
    let outcome = match case.action {
        Action::Check { correct } => {
            let proof = CodeProof {
                current_key_id: "k2".into(),
                matches: if correct {
                    vec![("k1".into(), 6)]
                } else {
                    vec![("k2".into(), 6)]
                },
            };
            let req = CheckRequest {
                client: "client-a",
                allowed: &Purpose::ALL,
                proof: &proof,
                now_ms: case.now,
                guards: Default::default(),
            };
            Outcome::Check(store.check(&id, &req).await.expect("check").outcome)
        }
        Action::Resend => {
            let msg = otpgate::ids::new_id("msg", &tag);
            let out = store
                .resend("client-a", &id, case.now, &record(&msg), guards)
                .await
                .expect("resend");
            Outcome::Resend(match out {
                ResendOutcome::NotFound => ResendVerdict::NotFound,
                ResendOutcome::Expired => ResendVerdict::Expired,
                ResendOutcome::AlreadyUsed => ResendVerdict::AlreadyUsed,
                ResendOutcome::Locked => ResendVerdict::Locked,
                ResendOutcome::Cooldown { retry_after_ms } => {
                    ResendVerdict::Cooldown { retry_after_ms }
                }
                ResendOutcome::MaxSends => ResendVerdict::MaxSends,
                ResendOutcome::Sent(_) => ResendVerdict::Sent,
                ResendOutcome::Limited(r) => panic!("no limits apply here: {r:?}"),
            })
        }
    };
    let after = store
        .get("client-a", &id)
        .await
        .expect("get")
        .expect("stored")
        .challenge();
    compare(case, outcome, after)
}

async fn store_passes(runner: &str, store: &dyn VerificationStore) {
    let mut failures = Vec::new();
    for case in cases() {
        failures.extend(run_on_store(store, &case).await);
    }
    report(runner, failures);
}

#[tokio::test]
async fn memory_store_passes_the_table() {
    let store = Arc::new(otpgate::store::memory::MemoryStore::new());
    store_passes("memory store", store.as_ref()).await;
}

#[tokio::test]
async fn redis_store_passes_the_table() {
    require_redis().await;
    let prefix = test_prefix();
    let store = otpgate::store::redis::RedisStore::connect(&redis_url(), &[], &prefix)
        .await
        .expect("redis store");
    store_passes("redis store (Lua)", &store).await;
}

/// Cases of the request around the challenge: who asks, for which purposes, with which code
/// for which key and length. The verification is `fresh()`, of client `client-a`, purpose
/// `registration`, 6 digits, made under key `key_id`.
struct RequestCase {
    name: &'static str,
    /// The verification's key id (`""`: stored before keys had ids, i.e. the current key).
    key_id: &'static str,
    client: &'static str,
    allowed: &'static [Purpose],
    /// The id of the current key and the (key id, digits) the code matched.
    current_key_id: &'static str,
    matches: &'static [(&'static str, u8)],
    outcome: CheckOutcome,
    after: Challenge,
}

fn request_cases() -> Vec<RequestCase> {
    use CheckOutcome as C;
    const ALL: &[Purpose] = &Purpose::ALL;
    let counted = with(|c| c.attempts_used = 1);
    vec![
        RequestCase {
            name: "a purpose the client may not use: refused, nothing counted",
            key_id: "k1",
            client: "client-a",
            allowed: &[Purpose::Transaction],
            current_key_id: "k1",
            matches: &[("k1", 6)],
            outcome: C::Forbidden,
            after: fresh(),
        },
        RequestCase {
            name: "another client's id: not found, nothing counted",
            key_id: "k1",
            client: "client-b",
            allowed: ALL,
            current_key_id: "k1",
            matches: &[("k1", 6)],
            outcome: C::NotFound,
            after: fresh(),
        },
        RequestCase {
            name: "empty legacy key id: checked with the current key",
            key_id: "",
            client: "client-a",
            allowed: ALL,
            current_key_id: "k1",
            matches: &[("k1", 6)],
            outcome: C::Approved,
            after: with(|c| c.status = Status::Approved),
        },
        RequestCase {
            name: "empty legacy key id: a code of a retired key is wrong",
            key_id: "",
            client: "client-a",
            allowed: ALL,
            current_key_id: "k2",
            matches: &[("k1", 6)],
            outcome: C::Wrong {
                attempts_remaining: 4,
            },
            after: counted,
        },
        RequestCase {
            name: "digits mismatch: the right key's 8-digit code for a 6-digit verification",
            key_id: "k1",
            client: "client-a",
            allowed: ALL,
            current_key_id: "k1",
            matches: &[("k1", 8)],
            outcome: C::Wrong {
                attempts_remaining: 4,
            },
            after: counted,
        },
        RequestCase {
            name: "another key's code of the right length is wrong",
            key_id: "k1",
            client: "client-a",
            allowed: ALL,
            current_key_id: "k2",
            matches: &[("k2", 6)],
            outcome: C::Wrong {
                attempts_remaining: 4,
            },
            after: counted,
        },
    ]
}

fn proof_of(case: &RequestCase) -> CodeProof {
    CodeProof {
        current_key_id: case.current_key_id.into(),
        matches: case
            .matches
            .iter()
            .map(|(k, d)| ((*k).to_owned(), *d))
            .collect(),
    }
}

fn compare_request(case: &RequestCase, outcome: CheckOutcome, after: Challenge) -> Option<String> {
    (outcome != case.outcome || after != case.after).then(|| {
        format!(
            "- {}: got {outcome:?} → {after:?}; want {:?} → {:?}",
            case.name, case.outcome, case.after
        )
    })
}

#[test]
fn pure_rules_pass_the_request_table() {
    // The stores' order: the owner, then the purpose, then the code (CodeProof::is_right) for
    // the challenge.
    let failures = request_cases()
        .iter()
        .filter_map(|case| {
            let mut c = fresh();
            let outcome = if case.client != "client-a" {
                CheckOutcome::NotFound
            } else if !case.allowed.contains(&Purpose::Registration) {
                CheckOutcome::Forbidden
            } else {
                let correct = proof_of(case).is_right(case.key_id, 6);
                challenge::check(&mut c, correct, NOW)
            };
            compare_request(case, outcome, c)
        })
        .collect();
    report("otp::challenge (requests)", failures);
}

async fn store_passes_the_request_table(runner: &str, store: &dyn VerificationStore) {
    let mut failures = Vec::new();
    for case in request_cases() {
        let tag = otpgate::ids::random_tag();
        let id = otpgate::ids::new_id("ver", &tag);
        let msg = otpgate::ids::new_id("msg", &tag);
        let c = fresh();
        let v = Verification {
            id: id.clone(),
            client: "client-a".into(),
            purpose: Purpose::Registration,
            account_id: None,
            phone: otpgate::phone::Phone::from_e164_unchecked("+85366123456".into()),
            locale: otpgate::sms::Locale::En,
            status: c.status,
            digits: 6,
            created_at_ms: c.expires_at_ms - 300_000,
            expires_at_ms: c.expires_at_ms,
            attempts_used: c.attempts_used,
            max_attempts: c.max_attempts,
            sends: c.sends,
            max_sends: c.max_sends,
            last_sent_ms: c.last_sent_ms,
            cooldown_ms: c.cooldown_ms,
            message_id: msg.clone(),
            subject: hex::encode(otpgate::ids::new_id("sub", &tag)),
            key_id: case.key_id.into(),
            guard: Default::default(),
        };
        let record = MessageRecord {
            id: msg,
            client: "client-a".into(),
            owner: id.clone(),
            status: DeliveryStatus::Queued,
            encoding: "gsm7".into(),
            parts: 1,
            created_at_ms: NOW,
            submitted_at_ms: None,
            delivered_at_ms: None,
            error: None,
        };
        let plan = otpgate::limits::Plan::default();
        let guards = otpgate::store::SendGuards {
            plan: &plan,
            account: None,
            event: None,
            job: None,
        };
        store
            .create(&v, &record, guards)
            .await
            .expect("create")
            .expect("no limits");
        let proof = proof_of(&case);
        let req = CheckRequest {
            client: case.client,
            allowed: case.allowed,
            proof: &proof,
            now_ms: NOW,
            guards: Default::default(),
        };
        let outcome = store.check(&id, &req).await.expect("check").outcome;
        let after = store
            .get("client-a", &id)
            .await
            .expect("get")
            .expect("stored")
            .challenge();
        failures.extend(compare_request(&case, outcome, after));
    }
    report(runner, failures);
}

#[tokio::test]
async fn memory_store_passes_the_request_table() {
    let store = Arc::new(otpgate::store::memory::MemoryStore::new());
    store_passes_the_request_table("memory store (requests)", store.as_ref()).await;
}

#[tokio::test]
async fn redis_store_passes_the_request_table() {
    require_redis().await;
    let prefix = test_prefix();
    let store = otpgate::store::redis::RedisStore::connect(&redis_url(), &[], &prefix)
        .await
        .expect("redis store");
    store_passes_the_request_table("redis store (Lua, requests)", &store).await;
}
