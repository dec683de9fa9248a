//! The shared store: Redis (single server through one multiplexed `ConnectionManager`, or
//! Redis Cluster). Each state change is one Lua script (`src/store/lua/`), one round trip; the
//! keys are spelled in [`super::keys`].

pub mod phone_changes;
pub mod phones;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, Script};

use super::keys::Keys;
use super::{
    BoxFuture, DeliveryStatus, Error, Health, MessageRecord, MessageStore, MessageUpdate,
    PartOutcome, PartReceipt, ReceiptIds, ReceiptMatch, connect,
};
pub mod activations;
pub mod totp;

pub mod limits;
pub mod verifications;

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
    apply_limits: Script,
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
                apply_limits: crate::limits::redis::apply_script(),
                create: with_limits(include_str!("lua/create.lua")),
                check: with_limits(include_str!("lua/check.lua")),
                resend: with_limits(include_str!("lua/resend.lua")),
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

pub(crate) fn malformed(id: &str) -> Error {
    Error::Corrupt {
        key: id.to_owned(),
        reason: "malformed id",
    }
}

pub(crate) fn msg_fields(m: &MessageRecord) -> Vec<(&'static str, String)> {
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

pub(crate) type Fields = std::collections::HashMap<String, String>;

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
        job: Option<&'a crate::outbox::Job>,
    ) -> BoxFuture<'a, Result<PartOutcome, Error>> {
        Box::pin(self.apply_part(message_id, part, job))
    }
}

/// A script that applies limits and records events: `limits.lua`'s and `events.lua`'s helpers
/// prepended.
fn with_limits(body: &str) -> Script {
    Script::new(&format!(
        "{}\n{}\n{body}",
        crate::limits::redis::LUA,
        include_str!("lua/events.lua")
    ))
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
