//! Account phones in Redis: one hash per account (E.164 → "id|primary|level|added_at"),
//! changed by `phones_bind.lua` and `phones_remove.lua`; a login verification is created by
//! `create.lua` given that hash, which it checks first.

use std::sync::Arc;

use redis::{FromRedisValue, Script, Value};

use super::{RedisStore, malformed, with_events};
use crate::limits::Refused;
use crate::store::events::{MAX_EVENTS, RETENTION_MS};
use crate::store::phones::{BindOutcome, Binding, LoginCreated, PhoneStore, sort_phones};
use crate::store::verifications::SendGuards;
use crate::store::{AccountEvent, AccountPhone, BoxFuture, Error, MessageRecord, Verification};

struct Scripts {
    bind: Script,
    remove: Script,
}

/// The Redis adapter of [`PhoneStore`]. Cheap to clone.
#[derive(Clone)]
pub struct RedisPhones {
    pub(crate) store: RedisStore,
    scripts: Arc<Scripts>,
}

impl RedisPhones {
    pub fn new(store: RedisStore) -> RedisPhones {
        RedisPhones {
            store,
            scripts: Arc::new(Scripts {
                bind: with_events(include_str!("../lua/phones_bind.lua")),
                remove: with_events(include_str!("../lua/phones_remove.lua")),
            }),
        }
    }

    async fn bind_phone(&self, account: &str, b: &Binding<'_>) -> Result<BindOutcome, Error> {
        let Some(ver_key) = self.store.keys.verification(b.verification_id) else {
            return Ok(BindOutcome::NotUsable);
        };
        let keys = &self.store.keys;
        let mut inv = self.scripts.bind.prepare_invoke();
        inv.key(&ver_key)
            .key(keys.account_phones(account))
            .key(keys.account_events(account))
            .arg(b.client)
            .arg(b.phone.phone.e164())
            .arg(b.phone.encode())
            .arg(b.event.encode())
            .arg(MAX_EVENTS)
            .arg(RETENTION_MS);
        let reply: Vec<Value> = self.store.run(&mut inv).await?;
        let text = |i: usize| {
            reply
                .get(i)
                .cloned()
                .and_then(|x| String::from_redis_value(x).ok())
                .unwrap_or_default()
        };
        let word = text(0);
        Ok(match word.as_str() {
            "not_usable" => BindOutcome::NotUsable,
            "already_used" => BindOutcome::AlreadyUsed,
            "bound" => BindOutcome::Bound(
                AccountPhone::decode(b.phone.phone.e164(), &text(1)).ok_or_else(|| {
                    Error::Corrupt {
                        key: keys.account_phones(account),
                        reason: "phone entry",
                    }
                })?,
            ),
            _ => {
                return Err(Error::UnexpectedReply {
                    command: "phones_bind.lua",
                    reply: word,
                });
            }
        })
    }

    async fn list_phones(&self, account: &str) -> Result<Vec<AccountPhone>, Error> {
        let key = self.store.keys.account_phones(account);
        let all: Vec<(String, String)> = self.store.query(redis::cmd("HGETALL").arg(&key)).await?;
        let mut out = all
            .iter()
            .map(|(e164, v)| {
                AccountPhone::decode(e164, v).ok_or_else(|| Error::Corrupt {
                    key: key.clone(),
                    reason: "phone entry",
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        sort_phones(&mut out);
        Ok(out)
    }

    async fn remove_phone(
        &self,
        account: &str,
        phone: &AccountPhone,
        event: &AccountEvent,
    ) -> Result<bool, Error> {
        let keys = &self.store.keys;
        let mut inv = self.scripts.remove.prepare_invoke();
        inv.key(keys.account_phones(account))
            .key(keys.account_events(account))
            .arg(phone.phone.e164())
            .arg(&phone.id)
            .arg(event.encode())
            .arg(MAX_EVENTS)
            .arg(RETENTION_MS);
        let removed: i64 = self.store.run(&mut inv).await?;
        Ok(removed == 1)
    }

    async fn create_login(
        &self,
        account: &str,
        v: &Verification,
        msg: &MessageRecord,
        guards: SendGuards<'_>,
    ) -> Result<Result<LoginCreated, Refused>, Error> {
        if self.store.keys.verification(&v.id).is_none() {
            return Err(malformed(&v.id));
        }
        let phones = self.store.keys.account_phones(account);
        Ok(self
            .store
            .create_verification_if(v, msg, guards, Some(&phones))
            .await?
            .map(|created| {
                if created {
                    LoginCreated::Created
                } else {
                    LoginCreated::PhoneNotRegistered
                }
            }))
    }
}

impl PhoneStore for RedisPhones {
    fn bind<'a>(
        &'a self,
        account: &'a str,
        b: &'a Binding<'a>,
    ) -> BoxFuture<'a, Result<BindOutcome, Error>> {
        Box::pin(self.bind_phone(account, b))
    }

    fn list<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<Vec<AccountPhone>, Error>> {
        Box::pin(self.list_phones(account))
    }

    fn remove<'a>(
        &'a self,
        account: &'a str,
        phone: &'a AccountPhone,
        event: &'a AccountEvent,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(self.remove_phone(account, phone, event))
    }

    fn create_login_verification<'a>(
        &'a self,
        account: &'a str,
        v: &'a Verification,
        msg: &'a MessageRecord,
        guards: SendGuards<'a>,
    ) -> BoxFuture<'a, Result<Result<LoginCreated, Refused>, Error>> {
        Box::pin(self.create_login(account, v, msg, guards))
    }
}
