//! The TOTP service (contract §3.5, §6): enrol, confirm, check, delete, over
//! [`crate::store::TotpStore`]. The secret is opened here, the matching time steps computed
//! here, and the store decides with them; time comes from the caller (`now_ms`).

use super::record::new_enrolment;
use super::rules::{TotpOp, TotpOutcome};
use super::seal::SecretSealer;
use super::secret::{EnrolError, Enrolment};
use crate::store::totp::TotpAttempt;
use crate::store::{self, AccountEvent, EventKind, Stores};

/// Why a TOTP call was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    /// No enrolment for the account (never made, deleted, or replaced meanwhile).
    #[error("no TOTP enrolment")]
    NotFound,
    /// `check` before `confirm`.
    #[error("TOTP enrolment not yet confirmed")]
    NotActive,
    /// `confirm` of an active enrolment.
    #[error("TOTP enrolment already active")]
    AlreadyActive,
    /// A wrong code, or a code of a step already used.
    #[error("wrong code")]
    CodeIncorrect { attempts_remaining: u32 },
    /// Too many wrong codes in a row (this one or before).
    #[error("too many wrong codes")]
    Locked,
    /// The account id cannot label an `otpauth://` URI.
    #[error(transparent)]
    Enrol(#[from] EnrolError),
    /// The secret was sealed under a key no longer configured (or does not open).
    #[error("TOTP secret does not open: {0}")]
    KeyUnavailable(#[from] super::seal::OpenError),
}

/// The TOTP service: cheap to share behind an `Arc`.
pub struct Totp {
    pub stores: Stores,
    pub sealer: SecretSealer,
    /// `sms.service_name`.
    pub issuer: String,
    /// `otp.max_attempts` (of purpose `totp`).
    pub max_attempts: u32,
    /// `otp.ttl` (of purpose `totp`): how long the lock holds.
    pub lock_ms: i64,
}

impl Totp {
    /// A new (pending) enrolment for `account`, replacing any previous one.
    pub async fn enrol(
        &self,
        client: &str,
        account: &str,
        now_ms: i64,
    ) -> Result<Enrolment, Error> {
        let (shown, record) = {
            let mut rng = rand::rng();
            new_enrolment(
                &self.sealer,
                &self.issuer,
                account,
                self.max_attempts,
                now_ms,
                &mut rng,
            )?
        };
        let event = AccountEvent::new(EventKind::TotpEnrolled, client, now_ms).purpose("totp");
        self.stores.totp.enrol(&record, &event).await?;
        metrics::counter!("otpgate_totp_total", "op" => "enrol", "outcome" => "enrolled")
            .increment(1);
        Ok(shown)
    }

    /// `confirm` or `check` a code.
    pub async fn attempt(
        &self,
        client: &str,
        account: &str,
        op: TotpOp,
        code: &str,
        now_ms: i64,
    ) -> Result<(), Error> {
        let e = self
            .stores
            .totp
            .get(account)
            .await?
            .ok_or(Error::NotFound)?;
        let secret = self.sealer.open(&e.sealed, account).inspect_err(|err| {
            tracing::error!(error = %err, "TOTP secret does not open");
        })?;
        let steps = secret.matching_steps(code, now_ms);
        let sealed = e.sealed.encode();
        let approved = AccountEvent::new(EventKind::TotpApproved, client, now_ms).purpose("totp");
        let failed = AccountEvent::new(EventKind::TotpFailed, client, now_ms).purpose("totp");
        let outcome = self
            .stores
            .totp
            .attempt(
                account,
                TotpAttempt {
                    op,
                    matched_steps: &steps,
                    now_ms,
                    lock_ms: self.lock_ms,
                    sealed: &sealed,
                    approved_event: Some(&approved),
                    failed_event: &failed,
                },
            )
            .await?
            .ok_or(Error::NotFound)?;
        let (label, result) = match outcome {
            TotpOutcome::Activated { .. } => ("activated", Ok(())),
            TotpOutcome::Approved { .. } => ("approved", Ok(())),
            TotpOutcome::Incorrect { attempts_remaining } => (
                "code_incorrect",
                Err(Error::CodeIncorrect { attempts_remaining }),
            ),
            TotpOutcome::Replayed { attempts_remaining } => {
                ("replayed", Err(Error::CodeIncorrect { attempts_remaining }))
            }
            TotpOutcome::LockedNow { .. } => ("locked", Err(Error::Locked)),
            TotpOutcome::Locked { .. } => ("locked_retry", Err(Error::Locked)),
            TotpOutcome::NotActive => ("not_active", Err(Error::NotActive)),
            TotpOutcome::AlreadyActive => ("already_active", Err(Error::AlreadyActive)),
        };
        let op_label = match op {
            TotpOp::Confirm => "confirm",
            TotpOp::Check => "check",
        };
        metrics::counter!("otpgate_totp_total", "op" => op_label, "outcome" => label).increment(1);
        result
    }

    /// Removes the account's enrolment; `NotFound` when there was none.
    pub async fn delete(&self, account: &str) -> Result<(), Error> {
        if self.stores.totp.delete(account).await? {
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }
}
