//! Account phones in memory. One lock over every account's phones: binding, removing and
//! creating a login verification take it first (then the verification's own locks, then the
//! event histories), so a login's membership check and its creation are one step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::MemoryStore;
use crate::limits::Refused;
use crate::purpose::Purpose;
use crate::store::phones::{BindOutcome, Binding, LoginCreated, PhoneStore, sort_phones};
use crate::store::verifications::SendGuards;
use crate::store::{
    AccountEvent, AccountPhone, BoxFuture, Error, MessageRecord, RETENTION_AFTER_EXPIRY_MS, Status,
    Verification,
};

#[derive(Default)]
pub(crate) struct Accounts {
    /// Account → its phones.
    pub(crate) phones: HashMap<String, Vec<AccountPhone>>,
    /// Verification ids spent by a binding → until when to remember them.
    spent: HashMap<String, i64>,
}

/// The phones of every account, beside the store whose verifications they are bound from.
pub struct MemoryPhones {
    pub(crate) store: Arc<MemoryStore>,
    accounts: Mutex<Accounts>,
}

impl MemoryPhones {
    pub fn new(store: Arc<MemoryStore>) -> MemoryPhones {
        MemoryPhones {
            store,
            accounts: Mutex::new(Accounts::default()),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Accounts> {
        self.accounts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bind_phone(&self, account: &str, b: &Binding<'_>) -> BindOutcome {
        let mut acc = self.lock();
        let now = b.phone.added_at_ms;
        acc.spent.retain(|_, until| *until > now);
        if acc.spent.contains_key(b.verification_id) {
            return BindOutcome::AlreadyUsed;
        }
        let usable = self.store.verifications.with(b.verification_id, |vs| {
            vs.get(b.verification_id)
                .filter(|v| {
                    v.client == b.client
                        && v.purpose == Purpose::Registration
                        && v.status == Status::Approved
                        && v.phone == b.phone.phone
                })
                .map(|v| v.expires_at_ms)
        });
        let Some(expires_at_ms) = usable else {
            return BindOutcome::NotUsable;
        };
        acc.spent.insert(
            b.verification_id.to_owned(),
            expires_at_ms + RETENTION_AFTER_EXPIRY_MS,
        );
        let phones = acc.phones.entry(account.to_owned()).or_default();
        let bound = upsert(phones, b.phone.clone());
        self.store.events.lock().push(account, b.event.clone());
        BindOutcome::Bound(bound)
    }

    fn remove_phone(&self, account: &str, phone: &AccountPhone, event: &AccountEvent) -> bool {
        let mut acc = self.lock();
        let Some(phones) = acc.phones.get_mut(account) else {
            return false;
        };
        let Some(i) = phones
            .iter()
            .position(|p| p.id == phone.id && p.phone == phone.phone)
        else {
            return false;
        };
        let removed = phones.remove(i);
        if removed.primary {
            promote_oldest(phones);
        }
        if phones.is_empty() {
            acc.phones.remove(account);
        }
        self.store.events.lock().push(account, event.clone());
        true
    }

    /// The phones lock is held through the creation (lock order: phones, then the limits and
    /// the verification's own locks), so a delete cannot slip between the check and the write.
    fn create_login(
        &self,
        account: &str,
        v: &Verification,
        msg: &MessageRecord,
        guards: SendGuards<'_>,
    ) -> Result<LoginCreated, Refused> {
        let acc = self.lock();
        let registered = acc
            .phones
            .get(account)
            .is_some_and(|ps| ps.iter().any(|p| p.phone == v.phone));
        if !registered {
            return Ok(LoginCreated::PhoneNotRegistered);
        }
        self.store
            .create_verification(v, msg, guards)
            .map(|()| LoginCreated::Created)
    }
}

/// Adds `new` to `phones`, or updates the entry of the same number (its id stays; the level
/// only rises). The first phone, or one marked primary, becomes the only primary.
pub(crate) fn upsert(phones: &mut Vec<AccountPhone>, new: AccountPhone) -> AccountPhone {
    let make_primary = new.primary || phones.is_empty();
    let i = match phones.iter().position(|p| p.phone == new.phone) {
        Some(i) => {
            phones[i].level = phones[i].level.max(new.level);
            i
        }
        None => {
            phones.push(new);
            phones.len() - 1
        }
    };
    if make_primary {
        for (j, p) in phones.iter_mut().enumerate() {
            p.primary = j == i;
        }
    }
    phones[i].clone()
}

/// Makes the oldest phone the primary (after the primary was removed).
pub(crate) fn promote_oldest(phones: &mut [AccountPhone]) {
    sort_phones(phones);
    if let Some(first) = phones.first_mut() {
        first.primary = true;
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, Result<T, Error>> {
    Box::pin(std::future::ready(Ok(v)))
}

impl PhoneStore for MemoryPhones {
    fn bind<'a>(
        &'a self,
        account: &'a str,
        b: &'a Binding<'a>,
    ) -> BoxFuture<'a, Result<BindOutcome, Error>> {
        ready(self.bind_phone(account, b))
    }

    fn list<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<Vec<AccountPhone>, Error>> {
        let mut out = self.lock().phones.get(account).cloned().unwrap_or_default();
        sort_phones(&mut out);
        ready(out)
    }

    fn remove<'a>(
        &'a self,
        account: &'a str,
        phone: &'a AccountPhone,
        event: &'a AccountEvent,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        ready(self.remove_phone(account, phone, event))
    }

    fn create_login_verification<'a>(
        &'a self,
        account: &'a str,
        v: &'a Verification,
        msg: &'a MessageRecord,
        guards: SendGuards<'a>,
    ) -> BoxFuture<'a, Result<Result<LoginCreated, Refused>, Error>> {
        let out = self.create_login(account, v, msg, guards);
        Box::pin(async move { Ok(out) })
    }
}
