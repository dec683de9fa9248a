//! TOTP enrolments in Redis: `lua/totp_enrol.lua`, `lua/totp_apply.lua`, `HGETALL`, `DEL`.
//! The secret is stored only sealed ([`crate::totp::seal::SealedSecret::encode`]).

use std::sync::LazyLock;

use redis::{FromRedisValue, Script, Value};

use super::{Fields, RedisStore, with_events};
use crate::store::events::{MAX_EVENTS, RETENTION_MS};
use crate::store::totp::{
    TotpAttempt, TotpEnrolment, TotpOp, TotpOutcome, TotpState, TotpStatus, TotpStore,
};
use crate::store::{AccountEvent, BoxFuture, Error};
use crate::totp::seal::SealedSecret;

static ENROL: LazyLock<Script> =
    LazyLock::new(|| with_events(include_str!("../lua/totp_enrol.lua")));
static APPLY: LazyLock<Script> =
    LazyLock::new(|| with_events(include_str!("../lua/totp_apply.lua")));

fn fields(e: &TotpEnrolment) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("a", e.account_id.clone()),
        ("sec", e.sealed.encode()),
        ("ca", e.created_at_ms.to_string()),
        ("st", e.state.status.as_str().to_owned()),
        ("f", e.state.failures.to_string()),
        ("ma", e.state.max_attempts.to_string()),
    ];
    if let Some(t) = e.activated_at_ms {
        f.push(("aa", t.to_string()));
    }
    if let Some(s) = e.state.last_step {
        f.push(("ls", s.to_string()));
    }
    if let Some(t) = e.state.locked_until_ms {
        f.push(("lu", t.to_string()));
    }
    f
}

fn from_fields(key: &str, f: &Fields) -> Result<TotpEnrolment, Error> {
    let corrupt = |what: &'static str| Error::Corrupt {
        key: key.to_owned(),
        reason: what,
    };
    let s = |k: &'static str| f.get(k).cloned().ok_or_else(|| corrupt(k));
    let n = |k: &'static str| -> Result<i64, Error> { s(k)?.parse().map_err(|_| corrupt(k)) };
    let opt = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok());
    Ok(TotpEnrolment {
        account_id: s("a")?,
        sealed: SealedSecret::decode(&s("sec")?).map_err(|_| corrupt("sec"))?,
        created_at_ms: n("ca")?,
        activated_at_ms: opt("aa"),
        state: TotpState {
            status: TotpStatus::parse(&s("st")?).ok_or_else(|| corrupt("st"))?,
            last_step: opt("ls").map(|s| s as u64),
            failures: n("f")? as u32,
            locked_until_ms: opt("lu"),
            max_attempts: n("ma")? as u32,
        },
    })
}

impl RedisStore {
    async fn totp_enrol(&self, e: &TotpEnrolment, event: &AccountEvent) -> Result<(), Error> {
        let mut inv = ENROL.prepare_invoke();
        inv.key(self.keys.totp(&e.account_id))
            .key(self.keys.account_events(&e.account_id))
            .arg(event.encode())
            .arg(MAX_EVENTS)
            .arg(RETENTION_MS);
        for (k, v) in fields(e) {
            inv.arg(k).arg(v);
        }
        let _: i64 = self.run(&mut inv).await?;
        Ok(())
    }

    async fn totp_get(&self, account: &str) -> Result<Option<TotpEnrolment>, Error> {
        let key = self.keys.totp(account);
        let f: Fields = self.query(redis::cmd("HGETALL").arg(&key)).await?;
        if f.is_empty() {
            return Ok(None);
        }
        from_fields(&key, &f).map(Some)
    }

    async fn totp_attempt(
        &self,
        account: &str,
        a: TotpAttempt<'_>,
    ) -> Result<Option<TotpOutcome>, Error> {
        let mut inv = APPLY.prepare_invoke();
        inv.key(self.keys.totp(account))
            .key(self.keys.account_events(account))
            .arg(match a.op {
                TotpOp::Confirm => "confirm",
                TotpOp::Check => "check",
            })
            .arg(a.now_ms)
            .arg(a.lock_ms)
            .arg(a.sealed)
            .arg(
                a.approved_event
                    .map(AccountEvent::encode)
                    .unwrap_or_default(),
            )
            .arg(a.failed_event.encode())
            .arg(MAX_EVENTS)
            .arg(RETENTION_MS);
        for s in a.matched_steps {
            inv.arg(*s);
        }
        let v: Vec<Value> = self.run(&mut inv).await?;
        let text = |i: usize| {
            v.get(i)
                .cloned()
                .and_then(|x| String::from_redis_value(x).ok())
                .unwrap_or_default()
        };
        let word = text(0);
        let num = text(1).parse::<i64>().unwrap_or(0).max(0);
        Ok(Some(match word.as_str() {
            "gone" => return Ok(None),
            "activated" => TotpOutcome::Activated { step: num as u64 },
            "approved" => TotpOutcome::Approved { step: num as u64 },
            "incorrect" => TotpOutcome::Incorrect {
                attempts_remaining: num as u32,
            },
            "replayed" => TotpOutcome::Replayed {
                attempts_remaining: num as u32,
            },
            "locked_now" => TotpOutcome::LockedNow {
                locked_until_ms: num,
            },
            "locked" => TotpOutcome::Locked {
                locked_until_ms: num,
            },
            "not_active" => TotpOutcome::NotActive,
            "already_active" => TotpOutcome::AlreadyActive,
            _ => {
                return Err(Error::UnexpectedReply {
                    command: "totp_apply.lua",
                    reply: word,
                });
            }
        }))
    }

    async fn totp_delete(&self, account: &str) -> Result<bool, Error> {
        let n: i64 = self
            .query(redis::cmd("DEL").arg(self.keys.totp(account)))
            .await?;
        Ok(n > 0)
    }
}

impl TotpStore for RedisStore {
    fn enrol<'a>(
        &'a self,
        e: &'a TotpEnrolment,
        event: &'a AccountEvent,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.totp_enrol(e, event))
    }

    fn get<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<Option<TotpEnrolment>, Error>> {
        Box::pin(self.totp_get(account))
    }

    fn attempt<'a>(
        &'a self,
        account: &'a str,
        a: TotpAttempt<'a>,
    ) -> BoxFuture<'a, Result<Option<TotpOutcome>, Error>> {
        Box::pin(self.totp_attempt(account, a))
    }

    fn delete<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(self.totp_delete(account))
    }
}
