//! Activations in Redis: `lua/act_issue.lua`, `lua/act_find.lua`, `lua/act_redeem.lua`.

use std::sync::LazyLock;

use redis::Script;

use super::{Fields, RedisStore, malformed, msg_fields, with_events};
use crate::phone::Phone;
use crate::store::activations::{
    Activation, ActivationState, ActivationStatus, ActivationStore, Redeem, RedeemOutcome,
};
use crate::store::events::{MAX_EVENTS, RETENTION_MS};
use crate::store::{AccountEvent, BoxFuture, Error, MessageRecord, RETENTION_AFTER_EXPIRY_MS};

/// Stands in for the activation of an unknown application number: a well-formed id (so the
/// script runs the same way) whose record never exists (ids are random; this one is fixed).
const UNKNOWN: &str = "act_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

static ISSUE: LazyLock<Script> =
    LazyLock::new(|| with_events(include_str!("../lua/act_issue.lua")));
static FIND: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/act_find.lua")));
static REDEEM: LazyLock<Script> =
    LazyLock::new(|| with_events(include_str!("../lua/act_redeem.lua")));

fn fields(a: &Activation) -> Vec<(&'static str, String)> {
    vec![
        ("id", a.id.clone()),
        ("c", a.client.clone()),
        ("a", a.account_id.clone()),
        ("k", a.key_id.clone()),
        ("lh", a.lookup_hash.clone()),
        ("eh", a.entity_hash.clone().unwrap_or_default()),
        ("ph", a.phone.e164().to_owned()),
        ("l", a.locale.as_str().to_owned()),
        ("m", a.message_id.clone()),
        ("ca", a.created_at_ms.to_string()),
        ("s", a.state.status.as_str().to_owned()),
        ("ea", a.state.expires_at_ms.to_string()),
        ("au", a.state.attempts_used.to_string()),
        ("ma", a.state.max_attempts.to_string()),
    ]
}

fn from_fields(f: &Fields) -> Result<Activation, Error> {
    let id = f.get("id").cloned().unwrap_or_default();
    let corrupt = |what: &'static str| Error::Corrupt {
        key: id.clone(),
        reason: what,
    };
    let s = |k: &'static str| f.get(k).cloned().ok_or_else(|| corrupt(k));
    let n = |k: &'static str| -> Result<i64, Error> { s(k)?.parse().map_err(|_| corrupt(k)) };
    let entity = s("eh")?;
    Ok(Activation {
        id: s("id")?,
        client: s("c")?,
        account_id: s("a")?,
        key_id: s("k")?,
        lookup_hash: s("lh")?,
        entity_hash: (!entity.is_empty()).then_some(entity),
        phone: Phone::from_e164_unchecked(s("ph")?),
        locale: s("l")?.parse().map_err(|_| corrupt("l"))?,
        message_id: s("m")?,
        created_at_ms: n("ca")?,
        state: ActivationState {
            status: ActivationStatus::parse(&s("s")?).ok_or_else(|| corrupt("s"))?,
            expires_at_ms: n("ea")?,
            attempts_used: n("au")? as u32,
            max_attempts: n("ma")? as u32,
        },
    })
}

impl RedisStore {
    async fn issue_activation(
        &self,
        a: &Activation,
        msg: &MessageRecord,
        event: &AccountEvent,
    ) -> Result<(), Error> {
        let tag = crate::ids::parse("act", &a.id).ok_or_else(|| malformed(&a.id))?;
        let key = self
            .keys
            .activation(&a.id)
            .ok_or_else(|| malformed(&a.id))?;
        let msg_key = self
            .keys
            .message(&msg.id)
            .ok_or_else(|| malformed(&msg.id))?;
        let live = (a.state.expires_at_ms - a.created_at_ms).max(1);
        let af = fields(a);
        let mut inv = ISSUE.prepare_invoke();
        inv.key(&key)
            .key(self.keys.activation_index(tag, &a.client, &a.lookup_hash))
            .key(self.keys.activation_account(&a.client, &a.account_id))
            .key(&msg_key)
            .key(self.keys.account_events(&a.account_id));
        inv.arg(live + RETENTION_AFTER_EXPIRY_MS)
            .arg(live + RETENTION_AFTER_EXPIRY_MS)
            .arg(event.encode())
            .arg(MAX_EVENTS)
            .arg(RETENTION_MS)
            .arg(af.len() * 2);
        for (k, v) in &af {
            inv.arg(*k).arg(v);
        }
        for (k, v) in msg_fields(msg) {
            inv.arg(k).arg(v);
        }
        let _: i64 = self.run(&mut inv).await?;
        Ok(())
    }

    async fn find_activation(
        &self,
        client: &str,
        hashes: &[String],
    ) -> Result<Option<Activation>, Error> {
        let mut inv = FIND.prepare_invoke();
        for h in hashes {
            let tag = crate::ids::tag_of(&hex::decode(h).unwrap_or_else(|_| vec![0; 4]));
            inv.key(self.keys.activation_index(&tag, client, h));
        }
        let f: Fields = self.run(&mut inv).await?;
        if f.is_empty() {
            return Ok(None);
        }
        from_fields(&f).map(Some)
    }

    async fn redeem_activation(&self, r: Redeem<'_>) -> Result<RedeemOutcome, Error> {
        // An unknown application number runs the same script on a key that does not exist.
        let id = r.id.unwrap_or(UNKNOWN);
        let key = self.keys.activation(id).ok_or_else(|| malformed(id))?;
        let mut inv = REDEEM.prepare_invoke();
        inv.key(&key)
            .key(self.keys.account_events(r.account_id))
            .arg(if r.matched { "1" } else { "0" })
            .arg(r.now_ms)
            .arg(r.event.encode())
            .arg(MAX_EVENTS)
            .arg(RETENTION_MS);
        let word: String = self.run(&mut inv).await?;
        Ok(match word.as_str() {
            "redeemed" => RedeemOutcome::Redeemed,
            "incorrect" => RedeemOutcome::Incorrect { locks: false },
            "locked_now" => RedeemOutcome::Incorrect { locks: true },
            "locked" => RedeemOutcome::Locked,
            "expired" => RedeemOutcome::Expired,
            "already_used" => RedeemOutcome::AlreadyUsed,
            _ => {
                return Err(Error::UnexpectedReply {
                    command: "act_redeem.lua",
                    reply: word,
                });
            }
        })
    }

    async fn get_activation(&self, client: &str, id: &str) -> Result<Option<Activation>, Error> {
        let Some(key) = self.keys.activation(id) else {
            return Ok(None);
        };
        let f: Fields = self.query(redis::cmd("HGETALL").arg(&key)).await?;
        if f.is_empty() || f.get("c").map(String::as_str) != Some(client) {
            return Ok(None);
        }
        from_fields(&f).map(Some)
    }
}

impl ActivationStore for RedisStore {
    fn issue<'a>(
        &'a self,
        a: &'a Activation,
        msg: &'a MessageRecord,
        event: &'a AccountEvent,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.issue_activation(a, msg, event))
    }

    fn find<'a>(
        &'a self,
        client: &'a str,
        lookup_hashes: &'a [String],
    ) -> BoxFuture<'a, Result<Option<Activation>, Error>> {
        Box::pin(self.find_activation(client, lookup_hashes))
    }

    fn redeem<'a>(&'a self, r: Redeem<'a>) -> BoxFuture<'a, Result<RedeemOutcome, Error>> {
        Box::pin(self.redeem_activation(r))
    }

    fn get<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Activation>, Error>> {
        Box::pin(self.get_activation(client, id))
    }
}
