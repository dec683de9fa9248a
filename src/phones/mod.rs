//! Account phones (contract §3.2) and lost-phone number changes (§3.3, [`change`]).
//!
//! Binding reads the registration verification, runs the carrier check when an identity is
//! given (between store operations, never inside one), then binds in one atomic store
//! operation that also spends the verification and records the event.

pub mod change;

use std::sync::Arc;

use crate::ids;
use crate::outbox::{Composer, Outbox, Routing};
use crate::phone::Phone;
use crate::purpose::Purpose;
use crate::sms::Locale;
use crate::store::phones::{BindOutcome, Binding};
use crate::store::{self, AccountEvent, AccountPhone, EventKind, Status, Stores};
use crate::subscriber::{self, Checker, Field, FieldResult, Identity, Verdict};

/// Why a phone call was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Unknown phone, phone change, or another client's change.
    #[error("not found")]
    NotFound,
    /// The verification is not an approved `registration` one of this client (or unknown).
    #[error("not an approved registration verification")]
    NotUsable,
    /// The verification (or the code of a change) was used before.
    #[error("already used")]
    AlreadyUsed,
    /// A request field is wrong (`identity.<field>` for identities).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The carrier's record does not match: one entry per identity field sent.
    #[error("subscriber mismatch")]
    Mismatch { fields: Vec<(Field, FieldResult)> },
    /// The SIM of the number changed within `subscriber.sim_swap_max_age`.
    #[error("recent SIM swap")]
    SimSwapped,
    /// The carrier could not be asked (down, or otpgate misconfigured): try again.
    #[error("subscriber check unavailable")]
    CheckUnavailable,
    /// `subscriber.provider = "none"`: number changes cannot be checked, so none is accepted.
    #[error("phone changes need a subscriber provider (subscriber.provider is \"none\")")]
    ChangesDisabled,
    /// `/retry` of a change whose code was not checked yet.
    #[error("the code of this change has not been checked")]
    NotVerified,
    /// Code errors of a phone change, as for verifications.
    #[error(transparent)]
    Code(#[from] crate::otp::Error),
}

/// What binding needs from the request.
#[derive(Debug, Clone)]
pub struct NewBinding {
    pub verification_id: String,
    pub primary: bool,
    pub identity: Option<Identity>,
    pub ip: Option<String>,
}

/// The account-phone service: cheap to share behind an `Arc`.
pub struct AccountPhones {
    pub stores: Stores,
    /// For the code proofs of phone changes (the same derivation as verifications).
    pub verifications: Arc<crate::otp::Verifications>,
    pub checker: Arc<Checker>,
    pub composer: Arc<Composer>,
    pub outbox: Outbox,
    pub routing: Arc<Routing>,
    pub otp: crate::config::OtpConfig,
    pub default_locale: Locale,
    /// `sms.notify_old_phone_on_change`.
    pub notify_old_phone: bool,
}

impl AccountPhones {
    /// Binds the phone of an approved registration verification (contract §3.2).
    pub async fn bind(
        &self,
        client: &str,
        account: &str,
        req: NewBinding,
        now_ms: i64,
    ) -> Result<AccountPhone, Error> {
        let v = self
            .stores
            .verifications
            .get(client, &req.verification_id)
            .await?
            .ok_or(Error::NotUsable)?;
        // A registration made for one account cannot bind a phone to another.
        if v.purpose != Purpose::Registration
            || v.status_at(now_ms) != Status::Approved
            || v.account_id.as_deref().is_some_and(|a| a != account)
        {
            return Err(Error::NotUsable);
        }
        let level = match &req.identity {
            Some(identity) if self.checker.enabled() => {
                validate(&self.checker, identity)?;
                match self.checker.check(&v.phone, identity, now_ms).await {
                    Ok(Verdict::Match { .. }) => 2,
                    Ok(Verdict::Mismatch { fields }) => return Err(Error::Mismatch { fields }),
                    Ok(Verdict::SimSwapped) => return Err(Error::SimSwapped),
                    Err(e) => return Err(unavailable(e)),
                }
            }
            // Without an identity, or without a provider: confirmed by the code only.
            Some(_) | None => 1,
        };
        let phone = AccountPhone {
            id: ids::new_id("ph", &ids::random_tag()),
            phone: v.phone.clone(),
            primary: req.primary,
            level,
            added_at_ms: now_ms,
        };
        let event = AccountEvent::new(EventKind::PhoneAdded, client, now_ms)
            .purpose(Purpose::Registration.as_str())
            .phone_masked(v.phone.masked())
            .ip(req.ip.as_deref());
        let binding = Binding {
            client,
            verification_id: &req.verification_id,
            phone: &phone,
            event: &event,
        };
        match self.stores.phones.bind(account, &binding).await? {
            BindOutcome::Bound(p) => Ok(p),
            BindOutcome::NotUsable => Err(Error::NotUsable),
            BindOutcome::AlreadyUsed => Err(Error::AlreadyUsed),
        }
    }

    pub async fn list(&self, account: &str) -> Result<Vec<AccountPhone>, Error> {
        Ok(self.stores.phones.list(account).await?)
    }

    /// Removes a phone; the oldest remaining one becomes primary when it was the primary.
    pub async fn remove(
        &self,
        client: &str,
        account: &str,
        phone_id: &str,
        now_ms: i64,
    ) -> Result<(), Error> {
        let phone = self
            .stores
            .phones
            .list(account)
            .await?
            .into_iter()
            .find(|p| p.id == phone_id)
            .ok_or(Error::NotFound)?;
        let event = AccountEvent::new(EventKind::PhoneRemoved, client, now_ms)
            .purpose(Purpose::Login.as_str())
            .phone_masked(phone.phone.masked());
        if self.stores.phones.remove(account, &phone, &event).await? {
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }

    /// The account's primary phone, if it has one.
    pub async fn primary(&self, account: &str) -> Result<Option<Phone>, Error> {
        Ok(self
            .stores
            .phones
            .list(account)
            .await?
            .into_iter()
            .find(|p| p.primary)
            .map(|p| p.phone))
    }
}

/// Every required identity field given, each well-formed (400 `identity.<field>`).
pub(crate) fn validate(checker: &Checker, identity: &Identity) -> Result<(), Error> {
    identity
        .validate(checker.required())
        .map_err(|e| Error::Invalid {
            field: e.field,
            message: e.message,
        })
}

/// A check that could not be made: 503, with an error log when an operator must act.
pub(crate) fn unavailable(e: subscriber::Error) -> Error {
    match &e {
        subscriber::Error::Misconfigured { .. } => {
            tracing::error!(error = %e, "carrier subscriber check misconfigured");
        }
        subscriber::Error::Unavailable { .. } => {
            tracing::warn!(error = %e, "carrier subscriber check unavailable");
        }
        subscriber::Error::Disabled => {
            tracing::error!("carrier subscriber check asked with provider \"none\"");
        }
    }
    Error::CheckUnavailable
}
