//! Storage traits of the aggregates still to come, declared now so that each feature lands as
//! an implementation of a known shape (a memory and a Redis adapter, the same tests) rather
//! than as edits across the store. Nothing implements them yet and nothing holds them:
//! each joins [`super::Stores`] with the issue that implements it.
//!
//! The atomicity model stays that of the implemented traits: one operation per state change,
//! deciding its outcome (one Lua script on the one Redis endpoint, one locked entry in memory);
//! an operation may touch several aggregates of one request (a verification and the account's
//! phones, an event, limit counters) when the contract needs them to change together.

use super::{BoxFuture, CheckOutcome, Error, MessageRecord, ResendOutcome, Verification};
use crate::otp::challenge::Challenge;
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
    /// Binds the phone of an approved `registration` verification (spending it) to `account`.
    fn add<'a>(
        &'a self,
        client: &'a str,
        account: &'a str,
        verification_id: &'a str,
        phone: &'a AccountPhone,
    ) -> BoxFuture<'a, Result<Option<AccountPhone>, Error>>;

    fn list<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<Vec<AccountPhone>, Error>>;

    /// Removes a phone; `false` when the account has no such phone.
    fn remove<'a>(
        &'a self,
        account: &'a str,
        phone_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, Error>>;

    /// Creates a `login` verification only if its phone is one of the account's, in the same
    /// atomic operation that checks the membership (so a phone removed concurrently is never
    /// sent a code). Until this is implemented, `otp` refuses every login that names a phone.
    fn create_login_verification<'a>(
        &'a self,
        account: &'a str,
        v: &'a Verification,
        msg: &'a MessageRecord,
    ) -> BoxFuture<'a, Result<LoginCreated, Error>>;
}

/// A lost-phone number change (contract §3.3): a code challenge to the new phone, then the
/// carrier check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneChange {
    /// `pc_…`.
    pub id: String,
    pub client: String,
    pub account_id: String,
    pub new_phone: Phone,
    /// `code_sent`, `code_verified`, `completed`, `refused`.
    pub state: String,
    pub challenge: Challenge,
    pub digits: u8,
    pub message_id: String,
    pub key_id: String,
}

/// Phone changes; their code rules are [`crate::otp::challenge`]'s.
pub trait PhoneChangeStore: Send + Sync {
    fn create<'a>(
        &'a self,
        pc: &'a PhoneChange,
        msg: &'a MessageRecord,
    ) -> BoxFuture<'a, Result<(), Error>>;

    fn get<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<PhoneChange>, Error>>;

    /// A check of the code ([`crate::otp::challenge::check`]); on a right one the state becomes
    /// `code_verified`.
    fn check<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
        correct: bool,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<CheckOutcome, Error>>;

    fn resend<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
        now_ms: i64,
        msg: &'a MessageRecord,
    ) -> BoxFuture<'a, Result<ResendOutcome, Error>>;

    /// Completes (the new phone replaces the primary, in the same operation) or refuses a
    /// change in `code_verified`; `false` when it was not in that state.
    fn settle<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
        completed: bool,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<bool, Error>>;
}
