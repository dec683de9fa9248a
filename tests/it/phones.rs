//! Account phones (contract §3.2): binding from an approved registration verification (once),
//! listing, deleting with promotion, login codes only to registered phones (also while a phone
//! is deleted concurrently), notifications to an account, and their events; both stores.

use serde_json::{Value, json};

use crate::both_stores;
use crate::util::*;

pub const MO: &str = "+85366123456";
pub const HK: &str = "+85291234567";
pub const VN: &str = "+84912345678";

/// An approved registration verification of `phone` (its id).
pub async fn approved_registration(d: &TestDaemon, phone: &str) -> String {
    let (id, code, _) = d
        .create_and_receive(json!({"purpose": "registration", "phone": phone}))
        .await;
    let (s, b, _) = d
        .post(
            TOKEN_A,
            &format!("/v1/verifications/{id}/check"),
            json!({"code": code}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    id
}

/// Binds `phone` to `account` through a fresh registration; the phone object.
pub async fn bind(d: &TestDaemon, account: &str, phone: &str, primary: bool) -> Value {
    let vid = approved_registration(d, phone).await;
    let (s, b, _) = d
        .post(
            TOKEN_A,
            &format!("/v1/accounts/{account}/phones"),
            json!({"verification_id": vid, "primary": primary}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    b
}

pub async fn phones(d: &TestDaemon, account: &str) -> Vec<Value> {
    let (s, b) = d
        .get(TOKEN_A, &format!("/v1/accounts/{account}/phones"))
        .await;
    assert_eq!(s, 200, "{b}");
    b["phones"].as_array().expect("phones").clone()
}

async fn delete(d: &TestDaemon, account: &str, phone_id: &str) -> u16 {
    d.http
        .delete(format!(
            "{}/v1/accounts/{account}/phones/{phone_id}",
            d.base
        ))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .expect("delete")
        .status()
        .as_u16()
}

fn masked(p: &Value) -> &str {
    p["phone_masked"].as_str().unwrap_or("")
}

both_stores! {
    async fn a_registration_binds_once_and_nothing_else_binds(b: Backend) {
        let d = TestDaemon::start(b).await;
        assert!(phones(&d, "acc-1").await.is_empty(), "no phones: an empty list");
        let vid = approved_registration(&d, MO).await;
        let path = "/v1/accounts/acc-1/phones";
        let (s, p, _) = d.post(TOKEN_A, path, json!({"verification_id": vid})).await;
        assert_eq!(s, 201, "{p}");
        assert!(p["id"].as_str().expect("id").starts_with("ph_"));
        assert_eq!(
            (masked(&p), &p["primary"], &p["level"]),
            ("+853****3456", &json!(true), &json!(1)),
            "the first phone is the primary, code-verified"
        );
        assert!(p["added_at"].as_str().expect("added_at").ends_with('Z'));
        // Used once, for this account or another.
        let (s, e, _) = d.post(TOKEN_A, path, json!({"verification_id": vid})).await;
        assert_eq!((s, &e["error"]["code"]), (409, &json!("already_used")), "{e}");
        let (s, _, _) = d
            .post(TOKEN_A, "/v1/accounts/acc-2/phones", json!({"verification_id": vid}))
            .await;
        assert_eq!(s, 409);
        // A pending registration, a login verification, an unknown id: 422 on verification_id.
        let (login, lcode, m) = d
            .create_and_receive(json!({"purpose": "login", "account_id": "acc-1"}))
            .await;
        assert_eq!(m.destination_addr, "85366123456");
        let (s, _, _) = d
            .post(TOKEN_A, &format!("/v1/verifications/{login}/check"), json!({"code": lcode}))
            .await;
        assert_eq!(s, 200, "the login code went to the primary and is right");
        let (s, pending, _) = d
            .post(TOKEN_A, "/v1/verifications", json!({"purpose": "registration", "phone": HK}))
            .await;
        assert_eq!(s, 201);
        for id in [pending["id"].as_str().unwrap(), login.as_str(), "ver_nope"] {
            let (s, e, _) = d.post(TOKEN_A, path, json!({"verification_id": id})).await;
            assert_eq!(s, 422, "{id}: {e}");
            assert_eq!(e["error"]["code"], "invalid_request");
            assert_eq!(e["error"]["field"], "verification_id");
        }
        assert_eq!(phones(&d, "acc-1").await.len(), 1);
        d.stop().await;
    }

    async fn phones_list_delete_and_promote_the_oldest(b: Backend) {
        let d = TestDaemon::start(b).await;
        let first = bind(&d, "acc-p", MO, false).await;
        let second = bind(&d, "acc-p", HK, false).await;
        let third = bind(&d, "acc-p", VN, false).await;
        assert_eq!(second["primary"], false);
        let list = phones(&d, "acc-p").await;
        assert_eq!(list.iter().map(masked).collect::<Vec<_>>(),
                   ["+853****3456", "+852****4567", "+84*****5678"], "oldest first");
        assert_eq!(list.iter().filter(|p| p["primary"] == true).count(), 1);
        // Binding one as primary moves the primary.
        let again = bind(&d, "acc-p", VN, true).await;
        assert_eq!(again["id"], third["id"], "the same number keeps its id");
        let list = phones(&d, "acc-p").await;
        assert_eq!(list.iter().filter(|p| p["primary"] == true).map(masked).collect::<Vec<_>>(),
                   ["+84*****5678"]);
        // Deleting the primary promotes the oldest remaining.
        assert_eq!(delete(&d, "acc-p", third["id"].as_str().unwrap()).await, 204);
        let list = phones(&d, "acc-p").await;
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["id"], first["id"]);
        assert_eq!(list[0]["primary"], true);
        assert_eq!(list[1]["primary"], false);
        assert_eq!(delete(&d, "acc-p", third["id"].as_str().unwrap()).await, 404);
        assert_eq!(delete(&d, "acc-other", first["id"].as_str().unwrap()).await, 404);
        // Events, newest first.
        let (_, ev) = d.get(TOKEN_A, "/v1/accounts/acc-p/events").await;
        let kinds: Vec<&str> = ev["events"].as_array().unwrap().iter()
            .map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["phone_removed", "phone_added", "phone_added", "phone_added", "phone_added"]);
        assert_eq!(ev["events"][0]["phone_masked"], "+84*****5678");
        assert_eq!(ev["events"][0]["client"], "client-a");
        d.stop().await;
    }

    async fn logins_go_to_the_primary_or_a_named_registered_phone(b: Backend) {
        let d = TestDaemon::start(b).await;
        let login = |account: &str, phone: Option<&str>| {
            let mut body = json!({"purpose": "login", "account_id": account});
            if let Some(p) = phone { body["phone"] = json!(p); }
            body
        };
        // No phone yet: refused, with or without a phone named.
        for body in [login("acc-l", None), login("acc-l", Some(MO))] {
            let (s, e, _) = d.post(TOKEN_A, "/v1/verifications", body).await;
            assert_eq!((s, &e["error"]["code"]), (422, &json!("phone_not_registered")));
        }
        bind(&d, "acc-l", MO, false).await;
        bind(&d, "acc-l", HK, false).await;
        let (_, _, m) = d.create_and_receive(login("acc-l", None)).await;
        assert_eq!(m.destination_addr, "85366123456", "the primary by default");
        let (_, _, m) = d.create_and_receive(login("acc-l", Some(HK))).await;
        assert_eq!(m.destination_addr, "85291234567", "a named registered phone");
        let (s, e, _) = d.post(TOKEN_A, "/v1/verifications", login("acc-l", Some(VN))).await;
        assert_eq!((s, &e["error"]["code"]), (422, &json!("phone_not_registered")));
        // One number, two accounts.
        bind(&d, "acc-l2", MO, false).await;
        let (_, _, m) = d.create_and_receive(login("acc-l2", None)).await;
        assert_eq!(m.destination_addr, "85366123456");
        assert_eq!(phones(&d, "acc-l").await.len(), 2);
        // A notification to an account goes to its primary; none without one.
        let mut rx = d.sim.subscribe();
        let (s, n, _) = d.post(TOKEN_A, "/v1/messages",
            json!({"account_id": "acc-l", "text": "Your appointment is confirmed."})).await;
        assert_eq!(s, 202, "{n}");
        let m = next_message(&mut rx).await;
        assert_eq!(m.destination_addr, "85366123456");
        let (s, e, _) = d.post(TOKEN_A, "/v1/messages",
            json!({"account_id": "acc-none", "text": "x"})).await;
        assert_eq!((s, &e["error"]["code"]), (422, &json!("phone_not_registered")));
        d.stop().await;
    }

    async fn no_login_code_reaches_a_phone_after_its_delete_returned(b: Backend) {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let d = TestDaemon::start(b).await;
        bind(&d, "acc-c", MO, false).await;
        let hk = bind(&d, "acc-c", HK, false).await;
        let before = d.sim.received().len();
        let deleted = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(std::sync::Mutex::new(Vec::<(bool, u16)>::new()));
        let mut workers = Vec::new();
        for _ in 0..8 {
            let (http, base) = (d.http.clone(), d.base.clone());
            let (deleted, stop, seen) = (deleted.clone(), stop.clone(), seen.clone());
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    // Whether the delete had returned before this login was asked.
                    let after = deleted.load(Ordering::SeqCst);
                    let s = http.post(format!("{base}/v1/verifications"))
                        .bearer_auth(TOKEN_A)
                        .json(&json!({"purpose": "login", "account_id": "acc-c", "phone": HK}))
                        .send().await.expect("login").status().as_u16();
                    seen.lock().unwrap().push((after, s));
                }
            }));
        }
        let count = |pred: &dyn Fn(&(bool, u16)) -> bool| seen.lock().unwrap().iter().filter(|x| pred(x)).count();
        while count(&|x| x.1 == 201) < 10 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // Logins keep coming while the phone is deleted.
        assert_eq!(delete(&d, "acc-c", hk["id"].as_str().unwrap()).await, 204);
        deleted.store(true, Ordering::SeqCst);
        while count(&|x| x.0) < 40 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.await.expect("worker");
        }
        let seen = seen.lock().unwrap().clone();
        assert!(seen.iter().all(|(_, s)| *s == 201 || *s == 422), "{seen:?}");
        assert!(seen.iter().filter(|(after, _)| *after).all(|(_, s)| *s == 422),
                "a login asked after the delete returned was created");
        let created = seen.iter().filter(|(_, s)| *s == 201).count();
        // Every code SMS to the number belongs to a login answered 201 (a canceled one may be
        // left unsent): wait for them, then check that none more comes.
        let to_hk = || d.sim.received()[before..].iter()
            .filter(|m| m.destination_addr == "85291234567").count();
        for _ in 0..200 {
            if to_hk() >= created { break; }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(to_hk() <= created, "{} SMS for {created} created logins", to_hk());
        d.stop().await;
    }
}
