//! The shared store: Redis (single server through one multiplexed `ConnectionManager`, or
//! Redis Cluster). Each state change is one Lua script (`src/store/lua/`), one round trip; the
//! keys are spelled in [`super::keys`].

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, Script, Value};

use super::keys::Keys;
use super::verifications::CheckRequest;
use super::{
    BoxFuture, CheckOutcome, Checked, DeliveryStatus, Error, Health, MessageRecord, MessageStore,
    MessageUpdate, PartOutcome, PartReceipt, RETENTION_AFTER_EXPIRY_MS, ReceiptIds, ReceiptMatch,
    ResendOutcome, Status, Verification, VerificationStore, connect,
};
use crate::ids;
use crate::phone::Phone;
use crate::purpose::Purpose;

mod receipts;

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The Redis-backed store. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    keys: Keys,
    scripts: std::sync::Arc<Scripts>,
}

struct Scripts {
    create: Script,
    check: Script,
    resend: Script,
    update_message: Script,
    correlate: Script,
    match_receipt: Script,
    record_submitted: Script,
    record_receipt: Script,
    record_part: Script,
    append_event: Script,
}

impl RedisStore {
    /// Connects lazily: the daemon starts (and `/readyz` says `store: down`) while Redis is away.
    pub async fn connect(url: &str, cluster: &[String], prefix: &str) -> Result<RedisStore, Error> {
        let conn = if cluster.is_empty() {
            Conn::Single(connect::shared(connect::client(url)?)?)
        } else {
            Conn::Cluster(connect::cluster(cluster).await?)
        };
        Ok(RedisStore {
            conn,
            keys: Keys::new(prefix),
            scripts: std::sync::Arc::new(Scripts {
                create: Script::new(include_str!("lua/create.lua")),
                check: Script::new(include_str!("lua/check.lua")),
                resend: Script::new(include_str!("lua/resend.lua")),
                update_message: Script::new(include_str!("lua/update_message.lua")),
                correlate: receipts::script(include_str!("lua/correlate.lua")),
                match_receipt: receipts::script(include_str!("lua/match_receipt.lua")),
                record_submitted: receipts::script(include_str!("lua/record_submitted.lua")),
                record_part: receipts::with_part(include_str!("lua/record_part.lua")),
                record_receipt: receipts::with_part(&format!(
                    "{}\n{}",
                    include_str!("lua/receipt_rule.lua"),
                    include_str!("lua/record_receipt.lua")
                )),
                append_event: with_events(include_str!("lua/append_event.lua")),
            }),
        })
    }

    async fn run<T: FromRedisValue>(
        &self,
        inv: &mut redis::ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        Ok(match &self.conn {
            Conn::Single(c) => inv.invoke_async(&mut c.clone()).await,
            Conn::Cluster(c) => inv.invoke_async(&mut c.clone()).await,
        }?)
    }

    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        Ok(match &self.conn {
            Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }?)
    }
}

fn malformed(id: &str) -> Error {
    Error::Corrupt {
        key: id.to_owned(),
        reason: "malformed id",
    }
}

fn ver_fields(v: &Verification) -> Vec<(&'static str, String)> {
    vec![
        ("c", v.client.clone()),
        ("p", v.purpose.as_str().to_owned()),
        ("a", v.account_id.clone().unwrap_or_default()),
        ("ph", v.phone.e164().to_owned()),
        ("l", v.locale.as_str().to_owned()),
        ("s", v.status.as_str().to_owned()),
        ("d", v.digits.to_string()),
        ("ca", v.created_at_ms.to_string()),
        ("ea", v.expires_at_ms.to_string()),
        ("au", v.attempts_used.to_string()),
        ("ma", v.max_attempts.to_string()),
        ("sn", v.sends.to_string()),
        ("xs", v.max_sends.to_string()),
        ("ls", v.last_sent_ms.to_string()),
        ("cd", v.cooldown_ms.to_string()),
        ("m", v.message_id.clone()),
        ("sj", v.subject.clone()),
        ("k", v.key_id.clone()),
    ]
}

fn msg_fields(m: &MessageRecord) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("c", m.client.clone()),
        ("o", m.owner.clone()),
        ("s", m.status.as_str().to_owned()),
        ("e", m.encoding.clone()),
        ("n", m.parts.to_string()),
        ("ca", m.created_at_ms.to_string()),
    ];
    if let Some(t) = m.submitted_at_ms {
        f.push(("sa", t.to_string()));
    }
    if let Some(t) = m.delivered_at_ms {
        f.push(("da", t.to_string()));
    }
    if let Some(e) = &m.error {
        f.push(("er", e.clone()));
    }
    f
}

type Fields = std::collections::HashMap<String, String>;

fn ver_from_fields(id: &str, f: &Fields) -> Result<Verification, Error> {
    let corrupt = |what: &'static str| Error::Corrupt {
        key: id.to_owned(),
        reason: what,
    };
    let s = |k: &'static str| f.get(k).cloned().ok_or_else(|| corrupt(k));
    let n = |k: &'static str| -> Result<i64, Error> { s(k)?.parse().map_err(|_| corrupt(k)) };
    let account = s("a")?;
    Ok(Verification {
        id: id.to_owned(),
        client: s("c")?,
        purpose: Purpose::parse(&s("p")?).ok_or_else(|| corrupt("p"))?,
        account_id: (!account.is_empty()).then_some(account),
        phone: Phone::from_e164_unchecked(s("ph")?),
        locale: s("l")?.parse().map_err(|_| corrupt("l"))?,
        status: Status::parse(&s("s")?).ok_or_else(|| corrupt("s"))?,
        digits: n("d")? as u8,
        created_at_ms: n("ca")?,
        expires_at_ms: n("ea")?,
        attempts_used: n("au")? as u32,
        max_attempts: n("ma")? as u32,
        sends: n("sn")? as u32,
        max_sends: n("xs")? as u32,
        last_sent_ms: n("ls")?,
        cooldown_ms: n("cd")?,
        message_id: s("m")?,
        subject: s("sj")?,
        // Absent in verifications stored before keys had ids: the current key.
        key_id: f.get("k").cloned().unwrap_or_default(),
    })
}

fn msg_from_fields(id: &str, f: &Fields) -> Result<MessageRecord, Error> {
    let corrupt = |what: &'static str| Error::Corrupt {
        key: id.to_owned(),
        reason: what,
    };
    let s = |k: &'static str| f.get(k).cloned().ok_or_else(|| corrupt(k));
    let opt = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok());
    Ok(MessageRecord {
        id: id.to_owned(),
        client: s("c")?,
        owner: s("o")?,
        status: DeliveryStatus::parse(&s("s")?).ok_or_else(|| corrupt("s"))?,
        encoding: s("e")?,
        parts: s("n")?.parse().map_err(|_| corrupt("n"))?,
        created_at_ms: s("ca")?.parse().map_err(|_| corrupt("ca"))?,
        submitted_at_ms: opt("sa"),
        delivered_at_ms: opt("da"),
        error: f.get("er").cloned(),
    })
}

impl RedisStore {
    async fn create_verification(
        &self,
        v: &Verification,
        msg: &MessageRecord,
    ) -> Result<(), Error> {
        let tag = ids::parse("ver", &v.id).ok_or_else(|| malformed(&v.id))?;
        let ver_key = self
            .keys
            .verification(&v.id)
            .ok_or_else(|| malformed(&v.id))?;
        let msg_key = self
            .keys
            .message(&msg.id)
            .ok_or_else(|| malformed(&msg.id))?;
        let now = v.created_at_ms;
        let ver_ttl = (v.expires_at_ms - now).max(1) + RETENTION_AFTER_EXPIRY_MS;
        let subject_ttl = (v.expires_at_ms - now).max(1);
        let vf = ver_fields(v);
        let mut inv = self.scripts.create.prepare_invoke();
        inv.key(&ver_key)
            .key(self.keys.subject(tag, &v.subject))
            .key(&msg_key);
        inv.arg(&v.id)
            .arg(ver_ttl)
            .arg(subject_ttl)
            .arg(self.keys.verification_prefix(tag))
            .arg(vf.len() * 2);
        for (k, val) in &vf {
            inv.arg(*k).arg(val);
        }
        for (k, val) in msg_fields(msg) {
            inv.arg(k).arg(val);
        }
        let _: i64 = self.run(&mut inv).await?;
        Ok(())
    }

    async fn get_verification(
        &self,
        client: &str,
        id: &str,
    ) -> Result<Option<Verification>, Error> {
        let Some(key) = self.keys.verification(id) else {
            return Ok(None);
        };
        let f: Fields = self.query(redis::cmd("HGETALL").arg(&key)).await?;
        if f.is_empty() || f.get("c").map(String::as_str) != Some(client) {
            return Ok(None);
        }
        ver_from_fields(id, &f).map(Some)
    }

    async fn check_verification(&self, id: &str, req: &CheckRequest<'_>) -> Result<Checked, Error> {
        let Some(key) = self.keys.verification(id) else {
            return Ok(Checked {
                outcome: CheckOutcome::NotFound,
                purpose: None,
            });
        };
        let allowed: String = req
            .allowed
            .iter()
            .fold(",".to_owned(), |s, p| s + p.as_str() + ",");
        let mut inv = self.scripts.check.prepare_invoke();
        inv.key(&key)
            .arg(req.client)
            .arg(req.now_ms)
            .arg(&req.proof.current_key_id)
            .arg(allowed);
        for (k, d) in &req.proof.matches {
            inv.arg(format!("{k}:{d}"));
        }
        let v: Vec<Value> = self.run(&mut inv).await?;
        let text = |i: usize| {
            v.get(i)
                .cloned()
                .and_then(|x| String::from_redis_value(x).ok())
                .unwrap_or_default()
        };
        let word = text(0);
        let purpose = Purpose::parse(&text(1));
        let n = v
            .get(2)
            .cloned()
            .and_then(|x| i64::from_redis_value(x).ok());
        let outcome = match word.as_str() {
            "not_found" => CheckOutcome::NotFound,
            "forbidden" => CheckOutcome::Forbidden,
            "already_used" => CheckOutcome::AlreadyUsed,
            "locked" => CheckOutcome::Locked,
            "expired" => CheckOutcome::Expired,
            "approved" => CheckOutcome::Approved,
            "locked_now" => CheckOutcome::LockedNow,
            "wrong" => CheckOutcome::Wrong {
                attempts_remaining: n.unwrap_or(0).max(0) as u32,
            },
            _ => {
                return Err(Error::UnexpectedReply {
                    command: "check.lua",
                    reply: word,
                });
            }
        };
        Ok(Checked { outcome, purpose })
    }

    async fn resend_verification(
        &self,
        client: &str,
        id: &str,
        now_ms: i64,
        msg: &MessageRecord,
    ) -> Result<ResendOutcome, Error> {
        let (Some(key), Some(msg_key)) = (self.keys.verification(id), self.keys.message(&msg.id))
        else {
            return Ok(ResendOutcome::NotFound);
        };
        let mut inv = self.scripts.resend.prepare_invoke();
        inv.key(&key)
            .key(&msg_key)
            .arg(client)
            .arg(now_ms)
            .arg(&msg.id);
        for (k, val) in msg_fields(msg) {
            inv.arg(k).arg(val);
        }
        let mut v: Vec<Value> = self.run(&mut inv).await?;
        let word = v
            .first()
            .cloned()
            .map(String::from_redis_value)
            .transpose()
            .ok()
            .flatten()
            .unwrap_or_default();
        Ok(match word.as_str() {
            "not_found" => ResendOutcome::NotFound,
            "already_used" => ResendOutcome::AlreadyUsed,
            "locked" => ResendOutcome::Locked,
            "expired" => ResendOutcome::Expired,
            "max_sends" => ResendOutcome::MaxSends,
            "cooldown" => ResendOutcome::Cooldown {
                retry_after_ms: v
                    .get(1)
                    .cloned()
                    .map(i64::from_redis_value)
                    .transpose()
                    .ok()
                    .flatten()
                    .unwrap_or(1000),
            },
            "sent" if v.len() == 2 => {
                let fields = Fields::from_redis_value(v.swap_remove(1))
                    .map_err(|source| Error::Decode { key, source })?;
                ResendOutcome::Sent(Box::new(ver_from_fields(id, &fields)?))
            }
            _ => {
                return Err(Error::UnexpectedReply {
                    command: "resend.lua",
                    reply: word,
                });
            }
        })
    }

    async fn create_message(&self, msg: &MessageRecord, keep_until_ms: i64) -> Result<(), Error> {
        let key = self
            .keys
            .message(&msg.id)
            .ok_or_else(|| malformed(&msg.id))?;
        let ttl = (keep_until_ms - msg.created_at_ms).max(1000);
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("HSET").arg(&key);
        for (k, v) in msg_fields(msg) {
            pipe.arg(k).arg(v);
        }
        pipe.ignore().cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
        Ok(match &self.conn {
            Conn::Single(c) => pipe.query_async::<()>(&mut c.clone()).await,
            Conn::Cluster(c) => pipe.query_async::<()>(&mut c.clone()).await,
        }?)
    }

    async fn get_message(&self, id: &str) -> Result<Option<MessageRecord>, Error> {
        let Some(key) = self.keys.message(id) else {
            return Ok(None);
        };
        let f: Fields = self.query(redis::cmd("HGETALL").arg(&key)).await?;
        if f.is_empty() {
            return Ok(None);
        }
        msg_from_fields(id, &f).map(Some)
    }

    async fn ping_redis(&self) -> Result<(), Error> {
        let pong: String = self.query(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(Error::UnexpectedReply {
                command: "PING",
                reply: pong,
            })
        }
    }
}

impl VerificationStore for RedisStore {
    fn create<'a>(
        &'a self,
        v: &'a Verification,
        msg: &'a MessageRecord,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.create_verification(v, msg))
    }
    fn get<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Verification>, Error>> {
        Box::pin(self.get_verification(client, id))
    }
    fn check<'a>(
        &'a self,
        id: &'a str,
        req: &'a CheckRequest<'a>,
    ) -> BoxFuture<'a, Result<Checked, Error>> {
        Box::pin(self.check_verification(id, req))
    }
    fn resend<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
        now_ms: i64,
        msg: &'a MessageRecord,
    ) -> BoxFuture<'a, Result<ResendOutcome, Error>> {
        Box::pin(self.resend_verification(client, id, now_ms, msg))
    }
}

impl MessageStore for RedisStore {
    fn create<'a>(
        &'a self,
        msg: &'a MessageRecord,
        keep_until_ms: i64,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.create_message(msg, keep_until_ms))
    }
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<MessageRecord>, Error>> {
        Box::pin(self.get_message(id))
    }
    fn update<'a>(
        &'a self,
        id: &'a str,
        update: &'a MessageUpdate,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move { self.update_message(id, update).await.map(|_| ()) })
    }
    fn record_submitted<'a>(
        &'a self,
        message_id: &'a str,
        smsc: &'a str,
        smsc_ids: &'a [String],
        update: &'a MessageUpdate,
    ) -> BoxFuture<'a, Result<super::Correlated, Error>> {
        Box::pin(self.submitted(message_id, smsc, smsc_ids, update))
    }
    fn match_receipt<'a>(
        &'a self,
        smsc: &'a str,
        rule: ReceiptIds,
        smsc_id: &'a str,
        stat: &'a str,
        _now_ms: i64,
    ) -> BoxFuture<'a, Result<ReceiptMatch, Error>> {
        Box::pin(self.find_receipt(smsc, rule, smsc_id, stat))
    }
    fn record_receipt<'a>(
        &'a self,
        smsc: &'a str,
        rule: ReceiptIds,
        smsc_id: &'a str,
        stat: &'a str,
        part: &'a super::ReceiptPart,
    ) -> BoxFuture<'a, Result<Option<super::ReceiptRecorded>, Error>> {
        Box::pin(self.receipt_in_one(smsc, rule, smsc_id, stat, part))
    }
    fn record_part<'a>(
        &'a self,
        message_id: &'a str,
        part: &'a PartReceipt,
    ) -> BoxFuture<'a, Result<PartOutcome, Error>> {
        Box::pin(self.apply_part(message_id, part))
    }
}

/// A script that records events: `lua/events.lua`'s helper prepended.
pub(crate) fn with_events(body: &str) -> Script {
    Script::new(&format!("{}\n{body}", include_str!("lua/events.lua")))
}

impl super::EventStore for RedisStore {
    fn append<'a>(
        &'a self,
        account: &'a str,
        event: &'a super::AccountEvent,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let mut inv = self.scripts.append_event.prepare_invoke();
            inv.key(self.keys.account_events(account))
                .arg(event.encode())
                .arg(super::events::MAX_EVENTS)
                .arg(super::events::RETENTION_MS);
            let _: i64 = self.run(&mut inv).await?;
            Ok(())
        })
    }

    fn recent<'a>(
        &'a self,
        account: &'a str,
        limit: usize,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<super::AccountEvent>, Error>> {
        Box::pin(async move {
            let n = limit.clamp(1, super::events::MAX_READ) as isize;
            let raw: Vec<String> = self
                .query(
                    redis::cmd("LRANGE")
                        .arg(self.keys.account_events(account))
                        .arg(0)
                        .arg(n - 1),
                )
                .await?;
            Ok(raw
                .iter()
                .filter_map(|s| super::AccountEvent::decode(s))
                .take_while(|e| e.at_ms > now_ms - super::events::RETENTION_MS)
                .collect())
        })
    }
}

impl Health for RedisStore {
    fn ping(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.ping_redis())
    }
}
