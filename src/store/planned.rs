//! Storage traits of the aggregates still to come, declared now so that each feature lands as
//! an implementation of a known shape (a memory and a Redis adapter, the same tests) rather
//! than as edits across the store. Nothing implements them yet and nothing holds them:
//! each joins [`super::Stores`] with the issue that implements it.
//!
//! The atomicity model stays that of the implemented traits: one operation per state change,
//! deciding its outcome (one Lua script on the one Redis endpoint, one locked entry in memory);
//! an operation may touch several aggregates of one request (a verification and the account's
//! phones, an event, limit counters) when the contract needs them to change together.

use super::{BoxFuture, CheckOutcome, Error, MessageRecord};
use crate::otp::challenge::Challenge;
use crate::phone::Phone;

pub use super::phones::{AccountPhone, LoginCreated, PhoneStore};

pub use super::phone_changes::{PhoneChange, PhoneChangeStore};

/// An activation code of an entity account (contract §3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    /// `act_…`.
    pub id: String,
    pub client: String,
    pub account_id: String,
    pub application_number: String,
    pub entity_number: Option<String>,
    pub phone: Phone,
    pub challenge: Challenge,
    pub message_id: String,
    pub key_id: String,
}

/// Activations, found by application number when redeemed.
pub trait ActivationStore: Send + Sync {
    /// Stores it and cancels the account's pending one.
    fn issue<'a>(
        &'a self,
        a: &'a Activation,
        msg: &'a MessageRecord,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// A redeem attempt for an application number, counted against that number's attempts.
    fn redeem<'a>(
        &'a self,
        application_number: &'a str,
        correct_for: Option<&'a str>,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<(CheckOutcome, Option<Activation>), Error>>;

    fn by_application<'a>(
        &'a self,
        application_number: &'a str,
    ) -> BoxFuture<'a, Result<Option<Activation>, Error>>;
}

/// One account's TOTP enrolment (contract §3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpEnrolment {
    /// The secret, encrypted with the server key (never stored in the clear).
    pub sealed_secret: Vec<u8>,
    pub key_id: String,
    pub active: bool,
    /// The last time step accepted (a step is used once).
    pub last_step: u64,
    pub failures_in_row: u32,
    pub locked_until_ms: i64,
}

/// TOTP enrolments.
pub trait TotpStore: Send + Sync {
    fn put<'a>(
        &'a self,
        account: &'a str,
        e: &'a TotpEnrolment,
    ) -> BoxFuture<'a, Result<(), Error>>;

    fn get<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<Option<TotpEnrolment>, Error>>;

    /// Records a check atomically: `matched_step` is the time step the code matched, if any;
    /// a step at or before `last_step` is refused as reused.
    fn record_check<'a>(
        &'a self,
        account: &'a str,
        matched_step: Option<u64>,
        max_attempts: u32,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<CheckOutcome, Error>>;

    fn delete<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<bool, Error>>;
}

/// Fixed-window counters for `[limits]`.
pub trait LimitStore: Send + Sync {
    /// Adds one to each `(key, limit, window_ms)` counter unless one of them is at its limit;
    /// all or none, atomically. `Ok(None)` when counted, else the milliseconds until the first
    /// full counter's window ends.
    fn hit<'a>(
        &'a self,
        counters: &'a [(String, u32, i64)],
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Option<i64>, Error>>;
}
