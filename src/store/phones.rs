//! Account phones (contract §3.2): per account, the numbers that receive its codes, one of
//! them primary. Changed only through [`PhoneStore`]'s atomic operations, each of which also
//! records its account event.

use super::verifications::SendGuards;
use super::{AccountEvent, BoxFuture, Error, MessageRecord, Verification};
use crate::limits::Refused;
use crate::phone::Phone;

/// One phone of an account (contract §3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountPhone {
    /// `ph_…`.
    pub id: String,
    pub phone: Phone,
    pub primary: bool,
    /// 1: confirmed by a code; 2: carrier-verified.
    pub level: u8,
    pub added_at_ms: i64,
}

impl AccountPhone {
    /// The stored form of everything but the number: `id|primary|level|added_at` (the Redis
    /// hash value; the Lua scripts read and write the same).
    pub fn encode(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.id,
            u8::from(self.primary),
            self.level,
            self.added_at_ms
        )
    }

    pub fn decode(e164: &str, s: &str) -> Option<AccountPhone> {
        let mut it = s.split('|');
        let id = it.next()?.to_owned();
        let primary = it.next()? == "1";
        let level = it.next()?.parse().ok()?;
        let added_at_ms = it.next()?.parse().ok()?;
        Some(AccountPhone {
            id,
            phone: Phone::from_e164_unchecked(e164.to_owned()),
            primary,
            level,
            added_at_ms,
        })
    }
}

/// Oldest first (ties by id), the order of the list and of promotion.
pub fn sort_phones(phones: &mut [AccountPhone]) {
    phones.sort_by(|a, b| (a.added_at_ms, &a.id).cmp(&(b.added_at_ms, &b.id)));
}

/// What binding a phone did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindOutcome {
    /// Stored (or, for a number the account already had, updated); the verification is spent.
    Bound(AccountPhone),
    /// Not an approved `registration` verification of this client (or unknown).
    NotUsable,
    /// The verification was bound before.
    AlreadyUsed,
}

/// What a binding needs besides the account.
#[derive(Debug, Clone)]
pub struct Binding<'a> {
    pub client: &'a str,
    pub verification_id: &'a str,
    /// The phone the verification was sent to (read before; the operation checks it again).
    pub phone: &'a AccountPhone,
    pub event: &'a AccountEvent,
}

/// What creating a login verification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginCreated {
    /// Stored, with its first SMS record; the subject's pending one was canceled.
    Created,
    /// The phone is not one of the account's: nothing was stored.
    PhoneNotRegistered,
}

/// Account phones (contract §3.2).
pub trait PhoneStore: Send + Sync {
    /// Binds the phone of an approved `registration` verification (spending it) to `account`,
    /// records the event; all in one atomic operation. The first phone, or one bound with
    /// `primary`, becomes the primary.
    fn bind<'a>(
        &'a self,
        account: &'a str,
        b: &'a Binding<'a>,
    ) -> BoxFuture<'a, Result<BindOutcome, Error>>;

    /// The account's phones, oldest first.
    fn list<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<Vec<AccountPhone>, Error>>;

    /// Removes `phone` (a phone read from [`PhoneStore::list`]) if it is still the account's
    /// with that id, promoting the oldest remaining one when it was the primary, and records
    /// the event; `false` when it was not there.
    fn remove<'a>(
        &'a self,
        account: &'a str,
        phone: &'a AccountPhone,
        event: &'a AccountEvent,
    ) -> BoxFuture<'a, Result<bool, Error>>;

    /// Creates a `login` verification only if its phone is one of the account's, in the same
    /// atomic operation that checks the membership (so a phone removed concurrently is never
    /// sent a code).
    fn create_login_verification<'a>(
        &'a self,
        account: &'a str,
        v: &'a Verification,
        msg: &'a MessageRecord,
        guards: SendGuards<'a>,
    ) -> BoxFuture<'a, Result<Result<LoginCreated, Refused>, Error>>;
}
