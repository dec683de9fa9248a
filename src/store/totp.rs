//! The TOTP aggregate (contract §3.5): one enrolment per account, the secret only sealed,
//! behind [`TotpStore`].
//!
//! The store never sees a code or a plaintext secret: the caller opens the sealed secret,
//! computes which time steps the presented code matched, and the store decides atomically
//! with [`crate::totp::rules::decide`] (memory, under its lock) or `lua/totp_apply.lua`
//! (Redis, mirroring it).

pub use crate::totp::record::TotpEnrolment;
pub use crate::totp::rules::{TotpOp, TotpOutcome, TotpState, TotpStatus};

use super::{AccountEvent, BoxFuture, Error};

/// One `confirm` or `check`, decided atomically by the store.
#[derive(Debug, Clone, Copy)]
pub struct TotpAttempt<'a> {
    pub op: TotpOp,
    /// The time steps the code matched (among the current one ±1).
    pub matched_steps: &'a [u64],
    pub now_ms: i64,
    /// `otp.ttl`: how long the lock holds.
    pub lock_ms: i64,
    /// The sealed secret the steps were computed with ([`crate::totp::seal::SealedSecret::encode`]):
    /// if the enrolment was replaced meanwhile, nothing is decided (`Ok(None)`).
    pub sealed: &'a str,
    /// Recorded with an approval (`totp_approved`; none for `confirm`).
    pub approved_event: Option<&'a AccountEvent>,
    /// Recorded with a wrong code (`totp_failed`).
    pub failed_event: &'a AccountEvent,
}

/// TOTP enrolments, one per account.
pub trait TotpStore: Send + Sync {
    /// Stores a new (pending) enrolment, replacing any previous one, and records `event`
    /// (`totp_enrolled`) in the same operation.
    fn enrol<'a>(
        &'a self,
        e: &'a TotpEnrolment,
        event: &'a AccountEvent,
    ) -> BoxFuture<'a, Result<(), Error>>;

    fn get<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<Option<TotpEnrolment>, Error>>;

    /// Applies a `confirm` or `check` ([`crate::totp::rules::decide`]) atomically; `None` when
    /// the account has no enrolment (any more) or it was replaced.
    fn attempt<'a>(
        &'a self,
        account: &'a str,
        a: TotpAttempt<'a>,
    ) -> BoxFuture<'a, Result<Option<TotpOutcome>, Error>>;

    /// Removes the enrolment; `false` when there was none.
    fn delete<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<bool, Error>>;
}
