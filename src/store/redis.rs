//! The shared store: Redis (single server through one multiplexed `ConnectionManager`, or
//! Redis Cluster). Each verification change is one Lua script, one round trip.
//!
//! Keys (all under `store.key_prefix`, all expiring with their object):
//! - `v:{tag}:ver_…` — a verification, a hash;
//! - `s:{tag}:<hex>` — the subject index: latest verification id of (client, purpose, account
//!   or phone), hashed with the server key so that no key names a phone number;
//! - `m:{tag}:msg_…` — an SMS message, a hash.
//!
//! `{tag}` is the hash-slot tag carried by the ids (see [`crate::ids`]), so one script's keys
//! always share a Redis Cluster slot.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, Script, Value};

use super::{
    CORRELATION_TTL_MS, CheckOutcome, Checked, DeliveryStatus, Error, MessageRecord, MessageUpdate,
    ORPHAN_RECEIPT_TTL_MS, PartOutcome, PartReceipt, RETENTION_AFTER_EXPIRY_MS, ResendOutcome,
    Status, Store, Verification, smsc_id_forms,
};
use crate::ids;
use crate::phone::Phone;
use crate::purpose::Purpose;

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The Redis-backed store. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    prefix: String,
    scripts: std::sync::Arc<Scripts>,
}

struct Scripts {
    create: Script,
    check: Script,
    resend: Script,
    update_message: Script,
    correlate: Script,
    match_receipt: Script,
    record_part: Script,
}

/// KEYS: n correlation keys, then their n orphan keys. ARGV: "message_id|parts", ttl_ms.
/// Returns the stats of orphan receipts found (their correlation is not stored).
const CORRELATE: &str = r#"
local n = #KEYS / 2
local early = {}
for i = 1, n do
  local o = redis.call('GETDEL', KEYS[n + i])
  if o then
    table.insert(early, o)
  else
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  end
end
return early
"#;

/// KEYS: n correlation keys (one per id form), then their n orphan keys. ARGV: stat, ttl_ms.
/// Returns "message_id|parts" and forgets it, or stores the orphan and returns nil.
const MATCH_RECEIPT: &str = r#"
local n = #KEYS / 2
for i = 1, n do
  local v = redis.call('GETDEL', KEYS[i])
  if v then return v end
end
for i = 1, n do
  redis.call('SET', KEYS[n + i], ARGV[1], 'PX', ARGV[2])
end
return false
"#;

/// KEYS: msg. ARGV: parts, status, error, resend (0/1), at_ms.
const RECORD_PART: &str = r#"
local v = redis.call('HMGET', KEYS[1], 's', 'rs')
local s = v[1]
if not s or (s ~= 'queued' and s ~= 'submitted') then return 'pending' end
if ARGV[2] == 'delivered' then
  local pd = redis.call('HINCRBY', KEYS[1], 'pd', 1)
  if pd < tonumber(ARGV[1]) then return 'pending' end
  redis.call('HSET', KEYS[1], 's', 'delivered', 'da', ARGV[5])
  return 'final'
end
if ARGV[4] == '1' and v[2] ~= '1' then
  redis.call('HSET', KEYS[1], 'rs', '1', 'pd', 0, 's', 'queued', 'er', ARGV[3])
  return 'resend'
end
redis.call('HSET', KEYS[1], 's', ARGV[2], 'er', ARGV[3])
return 'final'
"#;

/// Cancels the subject's pending verification, stores the new one and its message.
/// KEYS: ver, subject, msg. ARGV: id, ver_ttl_ms, subject_ttl_ms, old-key prefix, n_ver_fields, fields…, msg fields…
const CREATE: &str = r#"
local old = redis.call('GET', KEYS[2])
if old then
  local okey = ARGV[4] .. old
  if redis.call('HGET', okey, 's') == 'pending' then redis.call('HSET', okey, 's', 'canceled') end
end
local n = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], unpack(ARGV, 6, 5 + n))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
redis.call('HSET', KEYS[3], unpack(ARGV, 6 + n, #ARGV))
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return 1
"#;

/// KEYS: ver. ARGV: client, matches_digits, now_ms. Returns {outcome, purpose, remaining}.
const CHECK: &str = r#"
local v = redis.call('HMGET', KEYS[1], 'c', 's', 'ea', 'au', 'ma', 'd', 'p')
if not v[1] or v[1] ~= ARGV[1] then return {'not_found', ''} end
local s = v[2]
local p = v[7]
if s == 'canceled' then return {'not_found', p} end
if s == 'approved' then return {'already_used', p} end
if s == 'locked' then return {'locked', p} end
if s == 'expired' or tonumber(ARGV[3]) >= tonumber(v[3]) then return {'expired', p} end
if ARGV[2] == v[6] then
  redis.call('HSET', KEYS[1], 's', 'approved')
  return {'approved', p}
end
local au = tonumber(v[4]) + 1
local ma = tonumber(v[5])
if au >= ma then
  redis.call('HSET', KEYS[1], 'au', au, 's', 'locked')
  return {'locked_now', p}
end
redis.call('HSET', KEYS[1], 'au', au)
return {'wrong', p, ma - au}
"#;

/// KEYS: ver, msg. ARGV: client, now_ms, msg_id, msg fields…
const RESEND: &str = r#"
local v = redis.call('HMGET', KEYS[1], 'c', 's', 'ea', 'sn', 'xs', 'ls', 'cd')
if not v[1] or v[1] ~= ARGV[1] then return {'not_found'} end
local s = v[2]
local now = tonumber(ARGV[2])
if s == 'canceled' then return {'not_found'} end
if s == 'approved' then return {'already_used'} end
if s == 'locked' then return {'locked'} end
if s == 'expired' or now >= tonumber(v[3]) then return {'expired'} end
if tonumber(v[4]) >= tonumber(v[5]) then return {'max_sends'} end
local next = tonumber(v[6]) + tonumber(v[7])
if now < next then return {'cooldown', next - now} end
redis.call('HSET', KEYS[1], 'sn', tonumber(v[4]) + 1, 'ls', now, 'm', ARGV[3])
redis.call('HSET', KEYS[2], unpack(ARGV, 4, #ARGV))
redis.call('PEXPIRE', KEYS[2], redis.call('PTTL', KEYS[1]))
return {'sent', redis.call('HGETALL', KEYS[1])}
"#;

/// KEYS: msg. ARGV: status, time field ('sa', 'da' or ''), at_ms, error ('' = none).
const UPDATE_MESSAGE: &str = r#"
local s = redis.call('HGET', KEYS[1], 's')
if not s or (s ~= 'queued' and s ~= 'submitted') then return 0 end
redis.call('HSET', KEYS[1], 's', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'er', ARGV[4]) end
return 1
"#;

fn unavailable(e: redis::RedisError) -> Error {
    Error::Unavailable(e.to_string())
}

impl RedisStore {
    /// Connects lazily: the daemon starts (and `/readyz` says `store: down`) while Redis is away.
    pub async fn connect(url: &str, cluster: &[String], prefix: &str) -> Result<RedisStore, Error> {
        let conn = if cluster.is_empty() {
            let client = redis::Client::open(url).map_err(unavailable)?;
            let cfg = ConnectionManagerConfig::new()
                .set_response_timeout(Some(Duration::from_secs(2)))
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            Conn::Single(ConnectionManager::new_lazy_with_config(client, cfg).map_err(unavailable)?)
        } else {
            let client = redis::cluster::ClusterClientBuilder::new(cluster.to_vec())
                .connection_timeout(Duration::from_secs(2))
                .response_timeout(Duration::from_secs(2))
                .build()
                .map_err(unavailable)?;
            Conn::Cluster(client.get_async_connection().await.map_err(unavailable)?)
        };
        Ok(RedisStore {
            conn,
            prefix: prefix.to_owned(),
            scripts: std::sync::Arc::new(Scripts {
                create: Script::new(CREATE),
                check: Script::new(CHECK),
                resend: Script::new(RESEND),
                update_message: Script::new(UPDATE_MESSAGE),
                correlate: Script::new(CORRELATE),
                match_receipt: Script::new(MATCH_RECEIPT),
                record_part: Script::new(RECORD_PART),
            }),
        })
    }

    fn ver_key(&self, id: &str) -> Option<String> {
        ids::parse("ver", id).map(|tag| format!("{}v:{{{tag}}}:{id}", self.prefix))
    }

    /// Receipt correlation (`c`) and orphan (`o`) keys of one SMSC share the SMSC's slot.
    fn receipt_key(&self, kind: &str, smsc: &str, form: &str) -> String {
        format!("{}{kind}:{{smsc-{smsc}}}:{form}", self.prefix)
    }

    fn msg_key(&self, id: &str) -> Option<String> {
        ids::parse("msg", id).map(|tag| format!("{}m:{{{tag}}}:{id}", self.prefix))
    }

    async fn run<T: FromRedisValue>(
        &self,
        inv: &mut redis::ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        match &self.conn {
            Conn::Single(c) => inv.invoke_async(&mut c.clone()).await,
            Conn::Cluster(c) => inv.invoke_async(&mut c.clone()).await,
        }
        .map_err(unavailable)
    }

    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        match &self.conn {
            Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
        .map_err(unavailable)
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

fn pairs_to_map(v: Value) -> Result<Fields, Error> {
    Fields::from_redis_value(v).map_err(|e| Error::Corrupt {
        key: "(hash)".into(),
        reason: e.to_string(),
    })
}

fn ver_from_fields(id: &str, f: &Fields) -> Result<Verification, Error> {
    let corrupt = |what: &str| Error::Corrupt {
        key: id.to_owned(),
        reason: format!("field {what}"),
    };
    let s = |k: &str| f.get(k).cloned().ok_or_else(|| corrupt(k));
    let n = |k: &str| -> Result<i64, Error> { s(k)?.parse().map_err(|_| corrupt(k)) };
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
    })
}

fn msg_from_fields(id: &str, f: &Fields) -> Result<MessageRecord, Error> {
    let corrupt = |what: &str| Error::Corrupt {
        key: id.to_owned(),
        reason: format!("field {what}"),
    };
    let s = |k: &str| f.get(k).cloned().ok_or_else(|| corrupt(k));
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

impl Store for RedisStore {
    async fn create_verification(
        &self,
        v: &Verification,
        msg: &MessageRecord,
    ) -> Result<(), Error> {
        let tag = ids::parse("ver", &v.id).ok_or_else(|| Error::Corrupt {
            key: v.id.clone(),
            reason: "malformed id".into(),
        })?;
        let ver_key = format!("{}v:{{{tag}}}:{}", self.prefix, v.id);
        let subject_key = format!("{}s:{{{tag}}}:{}", self.prefix, v.subject);
        let msg_key = self.msg_key(&msg.id).ok_or_else(|| Error::Corrupt {
            key: msg.id.clone(),
            reason: "malformed id".into(),
        })?;
        let now = v.created_at_ms;
        let ver_ttl = (v.expires_at_ms - now).max(1) + RETENTION_AFTER_EXPIRY_MS;
        let subject_ttl = (v.expires_at_ms - now).max(1);
        let vf = ver_fields(v);
        let mut inv = self.scripts.create.prepare_invoke();
        inv.key(&ver_key).key(&subject_key).key(&msg_key);
        inv.arg(&v.id)
            .arg(ver_ttl)
            .arg(subject_ttl)
            .arg(format!("{}v:{{{tag}}}:", self.prefix))
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
        let Some(key) = self.ver_key(id) else {
            return Ok(None);
        };
        let f: Fields = self.query(redis::cmd("HGETALL").arg(&key)).await?;
        if f.is_empty() || f.get("c").map(String::as_str) != Some(client) {
            return Ok(None);
        }
        ver_from_fields(id, &f).map(Some)
    }

    async fn check_verification(
        &self,
        client: &str,
        id: &str,
        matches_digits: u8,
        now_ms: i64,
    ) -> Result<Checked, Error> {
        let not_found = Checked {
            outcome: CheckOutcome::NotFound,
            purpose: None,
        };
        let Some(key) = self.ver_key(id) else {
            return Ok(not_found);
        };
        let mut inv = self.scripts.check.prepare_invoke();
        inv.key(&key).arg(client).arg(matches_digits).arg(now_ms);
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
            "already_used" => CheckOutcome::AlreadyUsed,
            "locked" => CheckOutcome::Locked,
            "expired" => CheckOutcome::Expired,
            "approved" => CheckOutcome::Approved,
            "locked_now" => CheckOutcome::LockedNow,
            "wrong" => CheckOutcome::Wrong {
                attempts_remaining: n.unwrap_or(0).max(0) as u32,
            },
            other => {
                return Err(Error::Corrupt {
                    key,
                    reason: format!("check script answered {other:?}"),
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
        let Some(key) = self.ver_key(id) else {
            return Ok(ResendOutcome::NotFound);
        };
        let Some(msg_key) = self.msg_key(&msg.id) else {
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
                let fields = pairs_to_map(v.swap_remove(1))?;
                ResendOutcome::Sent(Box::new(ver_from_fields(id, &fields)?))
            }
            other => {
                return Err(Error::Corrupt {
                    key,
                    reason: format!("resend script answered {other:?}"),
                });
            }
        })
    }

    async fn create_message(&self, msg: &MessageRecord, keep_until_ms: i64) -> Result<(), Error> {
        let key = self.msg_key(&msg.id).ok_or_else(|| Error::Corrupt {
            key: msg.id.clone(),
            reason: "malformed id".into(),
        })?;
        let ttl = (keep_until_ms - msg.created_at_ms).max(1000);
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("HSET").arg(&key);
        for (k, v) in msg_fields(msg) {
            pipe.arg(k).arg(v);
        }
        pipe.ignore().cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
        match &self.conn {
            Conn::Single(c) => pipe.query_async::<()>(&mut c.clone()).await,
            Conn::Cluster(c) => pipe.query_async::<()>(&mut c.clone()).await,
        }
        .map_err(unavailable)
    }

    async fn get_message(&self, id: &str) -> Result<Option<MessageRecord>, Error> {
        let Some(key) = self.msg_key(id) else {
            return Ok(None);
        };
        let f: Fields = self.query(redis::cmd("HGETALL").arg(&key)).await?;
        if f.is_empty() {
            return Ok(None);
        }
        msg_from_fields(id, &f).map(Some)
    }

    async fn update_message(&self, id: &str, u: &MessageUpdate) -> Result<(), Error> {
        let Some(key) = self.msg_key(id) else {
            return Ok(());
        };
        let time_field = match u.status {
            DeliveryStatus::Submitted => "sa",
            DeliveryStatus::Delivered => "da",
            _ => "",
        };
        let mut inv = self.scripts.update_message.prepare_invoke();
        inv.key(&key)
            .arg(u.status.as_str())
            .arg(time_field)
            .arg(u.at_ms)
            .arg(u.error.clone().unwrap_or_default());
        let _: i64 = self.run(&mut inv).await?;
        Ok(())
    }

    async fn correlate(
        &self,
        smsc: &str,
        smsc_ids: &[String],
        message_id: &str,
        _now_ms: i64,
    ) -> Result<Vec<String>, Error> {
        let norms: Vec<String> = smsc_ids
            .iter()
            .filter_map(|id| smsc_id_forms(id).into_iter().next())
            .collect();
        if norms.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.scripts.correlate.prepare_invoke();
        for n in &norms {
            inv.key(self.receipt_key("c", smsc, n));
        }
        for n in &norms {
            inv.key(self.receipt_key("o", smsc, n));
        }
        inv.arg(format!("{message_id}|{}", smsc_ids.len()))
            .arg(CORRELATION_TTL_MS);
        self.run(&mut inv).await
    }

    async fn match_receipt(
        &self,
        smsc: &str,
        smsc_id: &str,
        stat: &str,
        _now_ms: i64,
    ) -> Result<Option<(String, u32)>, Error> {
        let forms = smsc_id_forms(smsc_id);
        let mut inv = self.scripts.match_receipt.prepare_invoke();
        for f in &forms {
            inv.key(self.receipt_key("c", smsc, f));
        }
        for f in &forms {
            inv.key(self.receipt_key("o", smsc, f));
        }
        inv.arg(stat).arg(ORPHAN_RECEIPT_TTL_MS);
        let found: Option<String> = self.run(&mut inv).await?;
        Ok(found.and_then(|v| {
            let (m, parts) = v.rsplit_once('|')?;
            Some((m.to_owned(), parts.parse().ok()?))
        }))
    }

    async fn record_part(
        &self,
        message_id: &str,
        part: &PartReceipt,
    ) -> Result<PartOutcome, Error> {
        let Some(key) = self.msg_key(message_id) else {
            return Ok(PartOutcome::Pending);
        };
        let mut inv = self.scripts.record_part.prepare_invoke();
        inv.key(&key)
            .arg(part.parts)
            .arg(part.status.as_str())
            .arg(part.error.clone().unwrap_or_default())
            .arg(if part.resend { 1 } else { 0 })
            .arg(part.at_ms);
        let word: String = self.run(&mut inv).await?;
        Ok(match word.as_str() {
            "final" => PartOutcome::Final(part.status),
            "resend" => PartOutcome::Resend,
            _ => PartOutcome::Pending,
        })
    }

    async fn ping(&self) -> Result<(), Error> {
        let pong: String = self.query(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(Error::Unavailable(format!("PING answered {pong}")))
        }
    }
}
