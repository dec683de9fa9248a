//! Phone changes in Redis: a hash per change with the verification's challenge fields, so the
//! code check and resend are `check.lua` and `resend.lua` (the rules mirrored once); settling
//! is `pc_settle.lua`, with the account's phones and its history.

use std::collections::HashMap;
use std::sync::Arc;

use redis::{FromRedisValue, Script, Value};

use super::{Conn, RedisStore, msg_fields, with_events};
use crate::otp::challenge::{Challenge, ResendVerdict, Status};
use crate::phone::Phone;
use crate::purpose::Purpose;
use crate::store::events::{MAX_EVENTS, RETENTION_MS};
use crate::store::phone_changes::{
    PhoneChange, PhoneChangeStore, SettleOutcome, Settled, Settlement,
};
use crate::store::{
    BoxFuture, CheckOutcome, CodeProof, Error, MessageRecord, RETENTION_AFTER_EXPIRY_MS,
};

/// The Redis adapter of [`PhoneChangeStore`].
#[derive(Clone)]
pub struct RedisPhoneChanges {
    store: RedisStore,
    settle: Arc<Script>,
}

type Fields = HashMap<String, String>;

fn fields(pc: &PhoneChange) -> Vec<(&'static str, String)> {
    let c = &pc.challenge;
    vec![
        ("c", pc.client.clone()),
        ("p", Purpose::PhoneChange.as_str().to_owned()),
        ("a", pc.account_id.clone()),
        ("ph", pc.new_phone.e164().to_owned()),
        ("l", pc.locale.as_str().to_owned()),
        ("s", c.status.as_str().to_owned()),
        ("d", pc.digits.to_string()),
        ("ca", pc.created_at_ms.to_string()),
        ("ea", c.expires_at_ms.to_string()),
        ("au", c.attempts_used.to_string()),
        ("ma", c.max_attempts.to_string()),
        ("sn", c.sends.to_string()),
        ("xs", c.max_sends.to_string()),
        ("ls", c.last_sent_ms.to_string()),
        ("cd", c.cooldown_ms.to_string()),
        ("m", pc.message_id.clone()),
        ("k", pc.key_id.clone()),
        (
            "idn",
            serde_json::to_string(&pc.identity).unwrap_or_default(),
        ),
        ("ip", pc.ip.clone().unwrap_or_default()),
        (
            "st",
            pc.settled.as_ref().map(Settled::encode).unwrap_or_default(),
        ),
    ]
}

fn from_fields(id: &str, f: &Fields) -> Result<PhoneChange, Error> {
    let corrupt = |what: &'static str| Error::Corrupt {
        key: id.to_owned(),
        reason: what,
    };
    let s = |k: &'static str| f.get(k).cloned().ok_or_else(|| corrupt(k));
    let n = |k: &'static str| -> Result<i64, Error> { s(k)?.parse().map_err(|_| corrupt(k)) };
    Ok(PhoneChange {
        id: id.to_owned(),
        client: s("c")?,
        account_id: s("a")?,
        new_phone: Phone::from_e164_unchecked(s("ph")?),
        locale: s("l")?.parse().map_err(|_| corrupt("l"))?,
        challenge: Challenge {
            status: Status::parse(&s("s")?).ok_or_else(|| corrupt("s"))?,
            expires_at_ms: n("ea")?,
            attempts_used: n("au")? as u32,
            max_attempts: n("ma")? as u32,
            sends: n("sn")? as u32,
            max_sends: n("xs")? as u32,
            last_sent_ms: n("ls")?,
            cooldown_ms: n("cd")?,
        },
        digits: n("d")? as u8,
        created_at_ms: n("ca")?,
        message_id: s("m")?,
        key_id: s("k")?,
        identity: serde_json::from_str(&s("idn")?).map_err(|_| corrupt("idn"))?,
        ip: f.get("ip").filter(|x| !x.is_empty()).cloned(),
        settled: f.get("st").and_then(|x| Settled::decode(x)),
    })
}

fn word(v: &[Value], i: usize) -> String {
    v.get(i)
        .cloned()
        .and_then(|x| String::from_redis_value(x).ok())
        .unwrap_or_default()
}

impl RedisPhoneChanges {
    pub fn new(store: RedisStore) -> RedisPhoneChanges {
        RedisPhoneChanges {
            store,
            settle: Arc::new(with_events(include_str!("../lua/pc_settle.lua"))),
        }
    }

    fn key(&self, id: &str) -> Option<String> {
        self.store.keys.phone_change(id)
    }

    async fn create_change(&self, pc: &PhoneChange, msg: &MessageRecord) -> Result<(), Error> {
        let (Some(key), Some(msg_key)) = (self.key(&pc.id), self.store.keys.message(&msg.id))
        else {
            return Err(super::malformed(&pc.id));
        };
        let ttl =
            (pc.challenge.expires_at_ms - pc.created_at_ms).max(1) + RETENTION_AFTER_EXPIRY_MS;
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("HSET").arg(&key);
        for (k, v) in fields(pc) {
            pipe.arg(k).arg(v);
        }
        pipe.ignore().cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
        pipe.cmd("HSET").arg(&msg_key);
        for (k, v) in msg_fields(msg) {
            pipe.arg(k).arg(v);
        }
        pipe.ignore().cmd("PEXPIRE").arg(&msg_key).arg(ttl).ignore();
        Ok(match &self.store.conn {
            Conn::Single(c) => pipe.query_async::<()>(&mut c.clone()).await,
            Conn::Cluster(c) => pipe.query_async::<()>(&mut c.clone()).await,
        }?)
    }

    async fn get_change(&self, client: &str, id: &str) -> Result<Option<PhoneChange>, Error> {
        let Some(key) = self.key(id) else {
            return Ok(None);
        };
        let f: Fields = self.store.query(redis::cmd("HGETALL").arg(&key)).await?;
        if f.is_empty() || f.get("c").map(String::as_str) != Some(client) {
            return Ok(None);
        }
        from_fields(id, &f).map(Some)
    }

    async fn check_change(
        &self,
        client: &str,
        id: &str,
        proof: &CodeProof,
        now_ms: i64,
    ) -> Result<CheckOutcome, Error> {
        let Some(key) = self.key(id) else {
            return Ok(CheckOutcome::NotFound);
        };
        let mut inv = self.store.scripts.check.prepare_invoke();
        inv.key(&key)
            .arg(client)
            .arg(now_ms)
            .arg(&proof.current_key_id)
            .arg(",phone_change,")
            // check.lua's layout (verifications.rs): no account_failures counter, no pumping
            // guard, then the events' bounds (a change's hash names no events key).
            .arg(0)
            .arg(0)
            .arg(0)
            .arg(0)
            .arg(0)
            .arg(0)
            .arg(0)
            .arg(MAX_EVENTS)
            .arg(RETENTION_MS);
        for (k, d) in &proof.matches {
            inv.arg(format!("{k}:{d}"));
        }
        let v: Vec<Value> = self.store.run(&mut inv).await?;
        let w = word(&v, 0);
        Ok(match w.as_str() {
            "not_found" | "forbidden" => CheckOutcome::NotFound,
            "already_used" => CheckOutcome::AlreadyUsed,
            "locked" => CheckOutcome::Locked,
            "expired" => CheckOutcome::Expired,
            "approved" => CheckOutcome::Approved,
            "locked_now" => CheckOutcome::LockedNow,
            "wrong" => CheckOutcome::Wrong {
                attempts_remaining: v
                    .get(2)
                    .cloned()
                    .and_then(|x| i64::from_redis_value(x).ok())
                    .unwrap_or(0)
                    .max(0) as u32,
            },
            _ => {
                return Err(Error::UnexpectedReply {
                    command: "check.lua",
                    reply: w,
                });
            }
        })
    }

    async fn resend_change(
        &self,
        client: &str,
        id: &str,
        now_ms: i64,
        msg: &MessageRecord,
    ) -> Result<(ResendVerdict, Option<PhoneChange>), Error> {
        let (Some(key), Some(msg_key)) = (self.key(id), self.store.keys.message(&msg.id)) else {
            return Ok((ResendVerdict::NotFound, None));
        };
        // resend.lua's layout (verifications.rs): the outbox stream slot takes the change's own
        // key (no entry: the caller queues the SMS), no limits, no event.
        let mut inv = self.store.scripts.resend.prepare_invoke();
        inv.key(&key)
            .key(&msg_key)
            .key(&key)
            .arg(client)
            .arg(now_ms)
            .arg(&msg.id)
            .arg(0)
            .arg("0")
            .arg("")
            .arg(MAX_EVENTS)
            .arg(RETENTION_MS);
        for _ in 0..6 {
            inv.arg("");
        }
        for (k, val) in msg_fields(msg) {
            inv.arg(k).arg(val);
        }
        let mut v: Vec<Value> = self.store.run(&mut inv).await?;
        let w = word(&v, 0);
        Ok(match w.as_str() {
            "not_found" => (ResendVerdict::NotFound, None),
            "already_used" => (ResendVerdict::AlreadyUsed, None),
            "locked" => (ResendVerdict::Locked, None),
            "expired" => (ResendVerdict::Expired, None),
            "max_sends" => (ResendVerdict::MaxSends, None),
            "cooldown" => (
                ResendVerdict::Cooldown {
                    retry_after_ms: v
                        .get(1)
                        .cloned()
                        .and_then(|x| i64::from_redis_value(x).ok())
                        .unwrap_or(1000),
                },
                None,
            ),
            "sent" if v.len() == 2 => {
                let f = Fields::from_redis_value(v.swap_remove(1))
                    .map_err(|source| Error::Decode { key, source })?;
                (ResendVerdict::Sent, Some(from_fields(id, &f)?))
            }
            _ => {
                return Err(Error::UnexpectedReply {
                    command: "resend.lua",
                    reply: w,
                });
            }
        })
    }

    async fn settle_change(
        &self,
        client: &str,
        id: &str,
        how: &Settlement<'_>,
        now_ms: i64,
    ) -> Result<SettleOutcome, Error> {
        let Some(key) = self.key(id) else {
            return Ok(SettleOutcome::NotFound);
        };
        // The account is read from the change itself, so its keys can be named.
        let Some(pc) = self.get_change(client, id).await? else {
            return Ok(SettleOutcome::NotFound);
        };
        let keys = &self.store.keys;
        let (how_s, e164, entry, event) = match how {
            Settlement::Complete { phone, event } => (
                Settled::Completed.encode(),
                phone.phone.e164().to_owned(),
                format!("{}|1|2|{}", phone.id, phone.added_at_ms),
                event.encode(),
            ),
            Settlement::Refuse { reason, event } => (
                Settled::Refused((*reason).to_owned()).encode(),
                pc.new_phone.e164().to_owned(),
                String::new(),
                event.encode(),
            ),
        };
        let mut inv = self.settle.prepare_invoke();
        inv.key(&key)
            .key(keys.account_phones(&pc.account_id))
            .key(keys.account_events(&pc.account_id))
            .arg(client)
            .arg(now_ms)
            .arg(how_s)
            .arg(e164)
            .arg(entry)
            .arg(event)
            .arg(MAX_EVENTS)
            .arg(RETENTION_MS);
        let v: Vec<Value> = self.store.run(&mut inv).await?;
        let w = word(&v, 0);
        Ok(match w.as_str() {
            "not_found" => SettleOutcome::NotFound,
            "not_verified" => SettleOutcome::NotVerified,
            "expired" => SettleOutcome::Expired,
            "refused" => SettleOutcome::Refused,
            "settled" => match Settled::decode(&word(&v, 1)) {
                Some(s) => SettleOutcome::AlreadySettled(s),
                None => {
                    return Err(Error::Corrupt { key, reason: "st" });
                }
            },
            "completed" => {
                let old = word(&v, 1);
                SettleOutcome::Completed {
                    old_primary: (!old.is_empty()).then(|| Phone::from_e164_unchecked(old)),
                }
            }
            _ => {
                return Err(Error::UnexpectedReply {
                    command: "pc_settle.lua",
                    reply: w,
                });
            }
        })
    }
}

impl PhoneChangeStore for RedisPhoneChanges {
    fn create<'a>(
        &'a self,
        pc: &'a PhoneChange,
        msg: &'a MessageRecord,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.create_change(pc, msg))
    }

    fn get<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<PhoneChange>, Error>> {
        Box::pin(self.get_change(client, id))
    }

    fn check<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
        proof: &'a CodeProof,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<CheckOutcome, Error>> {
        Box::pin(self.check_change(client, id, proof, now_ms))
    }

    fn resend<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
        now_ms: i64,
        msg: &'a MessageRecord,
    ) -> BoxFuture<'a, Result<(ResendVerdict, Option<PhoneChange>), Error>> {
        Box::pin(self.resend_change(client, id, now_ms, msg))
    }

    fn settle<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
        how: &'a Settlement<'a>,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<SettleOutcome, Error>> {
        Box::pin(self.settle_change(client, id, how, now_ms))
    }
}
