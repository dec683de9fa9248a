//! The verification aggregate on Redis: `create.lua`, `check.lua`, `resend.lua`, each one round
//! trip that also applies the request's limits, writes the account's event and (create,
//! resend) the outbox entry.

use redis::{FromRedisValue, Value};

use super::{Fields, RedisStore, malformed, msg_fields};
use crate::ids;
use crate::limits::pumping::{Guard, SLOTS};
use crate::limits::{Plan, Refused};
use crate::phone::Phone;
use crate::purpose::Purpose;
use crate::store::events::{MAX_EVENTS, RETENTION_MS};
use crate::store::verifications::{CheckRequest, SendGuards, VerificationGuard};
use crate::store::{
    BoxFuture, CheckOutcome, Checked, Error, MessageRecord, RETENTION_AFTER_EXPIRY_MS,
    ResendOutcome, Status, Verification, VerificationStore,
};

fn ver_fields(
    v: &Verification,
    events_key: &str,
    failures_key: &str,
    range_key: &str,
) -> Vec<(&'static str, String)> {
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
        // For check.lua: the account_failures counter, the range, the events, the IP and the
        // masked phone of the events (full keys, keyed hashes: no number in them).
        ("xf", failures_key.to_owned()),
        ("xr", range_key.to_owned()),
        ("xe", events_key.to_owned()),
        ("ip", v.guard.ip.clone().unwrap_or_default()),
        ("pm", v.phone.masked()),
        ("gf", v.guard.failures_key.clone().unwrap_or_default()),
        ("gr", v.guard.range.clone().unwrap_or_default()),
    ]
}

fn ver_from_fields(id: &str, f: &Fields) -> Result<Verification, Error> {
    let corrupt = |what: &'static str| Error::Corrupt {
        key: id.to_owned(),
        reason: what,
    };
    let s = |k: &'static str| f.get(k).cloned().ok_or_else(|| corrupt(k));
    let n = |k: &'static str| -> Result<i64, Error> { s(k)?.parse().map_err(|_| corrupt(k)) };
    let opt = |k: &str| f.get(k).filter(|x| !x.is_empty()).cloned();
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
        guard: VerificationGuard {
            failures_key: opt("gf"),
            range: opt("gr"),
            ip: opt("ip"),
        },
    })
}

/// The guard's parameters as `limits.lua` reads them.
fn guard_args(inv: &mut redis::ScriptInvocation<'_>, g: Option<&Guard>) {
    match g {
        Some(g) => inv
            .arg(g.slot_ms())
            .arg(SLOTS)
            .arg(g.min_sent)
            .arg(g.min_approval_ratio)
            .arg(g.cool_off_ms),
        None => inv.arg(0).arg(0).arg(0).arg(0).arg(0),
    };
}

impl RedisStore {
    /// Adds a plan's keys and arguments (`limits.lua`'s layout).
    pub(crate) fn add_plan(&self, inv: &mut redis::ScriptInvocation<'_>, plan: &Plan) {
        let range = match (&plan.range, &plan.guard) {
            (Some(r), Some(g)) => Some((r, g)),
            _ => None,
        };
        crate::limits::redis::add_args(inv, &plan.charges, range, |k| self.keys.limit(k));
    }

    /// Reads a refusal; logs a range the guard closed.
    pub(crate) fn refusal(&self, reply: &[Value], plan: &Plan) -> Option<Refused> {
        let (refused, closes) = crate::limits::redis::parse_reply(reply)?;
        if closes && let Some(r) = &plan.range {
            crate::limits::range_closed(&r.range);
        }
        Some(refused)
    }

    /// The outbox stream (a key the script leaves alone, `fallback`, without a job: the caller
    /// queues it elsewhere).
    fn outbox_key(
        &self,
        inv: &mut redis::ScriptInvocation<'_>,
        g: &SendGuards<'_>,
        fallback: &str,
    ) {
        match g.job {
            Some(job) => inv.key(self.keys.outbox_stream(&job.route, job.priority)),
            None => inv.key(fallback),
        };
    }

    /// The outbox entry's fields and values (empty strings without a job: no `XADD`).
    fn entry(g: &SendGuards<'_>) -> Result<[(&'static str, String); 3], Error> {
        let Some(job) = g.job else {
            return Ok([
                ("", String::new()),
                ("", String::new()),
                ("", String::new()),
            ]);
        };
        crate::outbox::redis::entry_fields(job).map_err(|_| Error::Corrupt {
            key: job.message_id.clone(),
            reason: "job not encodable",
        })
    }

    async fn create_verification(
        &self,
        v: &Verification,
        msg: &MessageRecord,
        g: SendGuards<'_>,
    ) -> Result<Result<(), Refused>, Error> {
        Ok(self
            .create_verification_if(v, msg, g, None)
            .await?
            .map(|_| ()))
    }

    /// Creates a verification; with `member_of` (an account's phones key), only when its
    /// phone is in that hash, checked in the same script: `Ok(false)` when it was not (nothing
    /// written, nothing counted).
    pub(crate) async fn create_verification_if(
        &self,
        v: &Verification,
        msg: &MessageRecord,
        g: SendGuards<'_>,
        member_of: Option<&str>,
    ) -> Result<Result<bool, Refused>, Error> {
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
        let events_key = v
            .account_id
            .as_deref()
            .map(|a| self.keys.account_events(a))
            .unwrap_or_default();
        let failures_key = v
            .guard
            .failures_key
            .as_deref()
            .map(|k| self.keys.limit(k))
            .unwrap_or_default();
        let range_key = v
            .guard
            .range
            .as_deref()
            .map(|r| self.keys.limit(&format!("range:{r}")))
            .unwrap_or_default();
        let vf = ver_fields(v, &events_key, &failures_key, &range_key);
        let mf = msg_fields(msg);
        let entry = Self::entry(&g)?;
        let has_range = g.plan.range.is_some() && g.plan.guard.is_some();
        let event = g
            .event
            .filter(|_| v.account_id.is_some())
            .map(|e| e.encode())
            .unwrap_or_default();
        let mut inv = self.scripts.create.prepare_invoke();
        inv.key(&ver_key)
            .key(self.keys.subject(tag, &v.subject))
            .key(&msg_key);
        self.outbox_key(&mut inv, &g, &ver_key);
        inv.arg(&v.id)
            .arg(ver_ttl)
            .arg(subject_ttl)
            .arg(self.keys.verification_prefix(tag))
            .arg(vf.len() * 2)
            .arg(mf.len() * 2)
            .arg(now)
            .arg(g.plan.charges.len())
            .arg(if has_range { "1" } else { "0" })
            .arg(&event)
            .arg(MAX_EVENTS)
            .arg(RETENTION_MS);
        for (k, val) in &entry {
            inv.arg(*k).arg(val);
        }
        self.add_plan(&mut inv, g.plan);
        if !event.is_empty() {
            inv.key(&events_key);
        }
        for (k, val) in &vf {
            inv.arg(*k).arg(val);
        }
        for (k, val) in &mf {
            inv.arg(*k).arg(val);
        }
        // The membership check (login): one more key, last, and one more argument, after the
        // record's fields (create.lua reads both by position).
        if let Some(k) = member_of {
            inv.key(k).arg("member");
        }
        let reply: Vec<Value> = self.run(&mut inv).await?;
        if matches!(reply.first(), Some(Value::BulkString(b)) if b == b"not_registered") {
            return Ok(Ok(false));
        }
        Ok(match self.refusal(&reply, g.plan) {
            Some(r) => Err(r),
            None => Ok(true),
        })
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
        match req.guards.failures_rule {
            Some(r) => inv.arg(r.count).arg(r.window_ms),
            None => inv.arg(0).arg(0),
        };
        guard_args(&mut inv, req.guards.guard.as_ref());
        inv.arg(MAX_EVENTS).arg(RETENTION_MS);
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
        g: SendGuards<'_>,
    ) -> Result<ResendOutcome, Error> {
        let (Some(key), Some(msg_key)) = (self.keys.verification(id), self.keys.message(&msg.id))
        else {
            return Ok(ResendOutcome::NotFound);
        };
        let entry = Self::entry(&g)?;
        let has_range = g.plan.range.is_some() && g.plan.guard.is_some();
        let mut inv = self.scripts.resend.prepare_invoke();
        inv.key(&key).key(&msg_key);
        self.outbox_key(&mut inv, &g, &key);
        inv.arg(client)
            .arg(now_ms)
            .arg(&msg.id)
            .arg(g.plan.charges.len())
            .arg(if has_range { "1" } else { "0" });
        let event = g.event.map(|e| e.encode()).unwrap_or_default();
        inv.arg(&event).arg(MAX_EVENTS).arg(RETENTION_MS);
        for (k, val) in &entry {
            inv.arg(*k).arg(val);
        }
        self.add_plan(&mut inv, g.plan);
        if let (Some(_), Some(a)) = (g.event, g.account) {
            inv.key(self.keys.account_events(a));
        }
        for (k, val) in msg_fields(msg) {
            inv.arg(k).arg(val);
        }
        let mut v: Vec<Value> = self.run(&mut inv).await?;
        if let Some(r) = self.refusal(&v, g.plan) {
            return Ok(ResendOutcome::Limited(r));
        }
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
}

impl VerificationStore for RedisStore {
    fn create<'a>(
        &'a self,
        v: &'a Verification,
        msg: &'a MessageRecord,
        guards: SendGuards<'a>,
    ) -> BoxFuture<'a, Result<Result<(), Refused>, Error>> {
        Box::pin(self.create_verification(v, msg, guards))
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
        guards: SendGuards<'a>,
    ) -> BoxFuture<'a, Result<ResendOutcome, Error>> {
        Box::pin(self.resend_verification(client, id, now_ms, msg, guards))
    }
}
