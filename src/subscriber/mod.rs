//! Carrier subscriber checks (contract §3.3, §6): before a phone change completes (or a phone
//! is bound at level 2), the mobile carrier's subscriber record for the number must match the
//! account holder, and the SIM must not have been swapped recently.
//!
//! - [`identity`]: the identity fields and their names here, in the API and in CAMARA.
//! - [`camara`]: CAMARA KYC Match 0.4 and SIM Swap 2 over HTTPS, OAuth2 client credentials.
//! - [`static_file`]: subscriber records from a TOML file (development, tests, walk-throughs).
//! - [`Checker`]: asks the provider, applies `require` and `sim_swap_max_age`, decides.

pub mod camara;
pub mod config;
pub mod identity;
pub mod static_file;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

pub use config::{CamaraConfig, SubscriberConfig, SubscriberProvider};
pub use identity::{Field, Identity};

use crate::phone::Phone;

/// What the carrier said about one field (contract §3.3 `fields`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldResult {
    Match,
    Mismatch,
    NotAvailable,
}

impl FieldResult {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldResult::Match => "match",
            FieldResult::Mismatch => "mismatch",
            FieldResult::NotAvailable => "not_available",
        }
    }
}

/// The carrier's answer to a match request: one result per field sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KycAnswer {
    pub fields: Vec<(Field, FieldResult)>,
    /// The carrier itself refused the identity (no subscriber for the number, or the ID
    /// document does not match): refused whatever `require` says (§6).
    pub refused: bool,
}

impl KycAnswer {
    /// Every field sent, not available, refused: the number has no subscriber.
    pub fn no_subscriber(identity: &Identity) -> KycAnswer {
        KycAnswer {
            fields: identity
                .given()
                .map(|(f, _)| (f, FieldResult::NotAvailable))
                .collect(),
            refused: true,
        }
    }
}

/// Why a check could not be made. Both answer 503 `subscriber_check_unavailable`; a change
/// stays `code_verified` and can be retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The carrier did not answer in time, or answered 429/5xx: try again later.
    #[error("carrier unavailable: {reason}")]
    Unavailable { reason: String },
    /// The carrier refused otpgate itself (credentials, scope, a document it requires, a
    /// request it calls invalid): an operator must act; logged at error level.
    #[error("carrier check misconfigured: {reason}")]
    Misconfigured { reason: String },
    /// `subscriber.provider = "none"`: carrier checks are off.
    #[error("no subscriber provider is configured")]
    Disabled,
}

/// A source of subscriber records.
pub trait Provider: Send + Sync {
    /// Matches `identity` against the subscriber record of `phone`.
    fn kyc_match<'a>(
        &'a self,
        phone: &'a Phone,
        identity: &'a Identity,
    ) -> BoxFuture<'a, Result<KycAnswer, Error>>;

    /// Whether the SIM of `phone` changed within the last `max_age_hours`.
    fn sim_swapped<'a>(
        &'a self,
        phone: &'a Phone,
        max_age_hours: u32,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<bool, Error>>;
}

/// The decision on a number change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Identity matches and no recent SIM swap. `fields` as for a mismatch (for the record).
    Match { fields: Vec<(Field, FieldResult)> },
    /// 409 `subscriber_mismatch` with `fields`.
    Mismatch { fields: Vec<(Field, FieldResult)> },
    /// 409 `sim_swap_detected`.
    SimSwapped,
}

/// Applies `require` to an answer: refused when the carrier refused, or when a required field
/// is anything but a match (a field outside `require` that mismatches is reported only).
pub fn judge(answer: &KycAnswer, require: &[Field]) -> bool {
    !answer.refused
        && answer
            .fields
            .iter()
            .filter(|(f, _)| require.contains(f))
            .all(|(_, r)| *r == FieldResult::Match)
}

/// `sim_swap_max_age` as CAMARA's `maxAge`: hours rounded up, clamped to 1..=2400; `None`
/// when the check is off (`"0s"`).
pub fn max_age_hours(max_age: Duration) -> Option<u32> {
    if max_age.is_zero() {
        return None;
    }
    let hours = max_age.as_nanos().div_ceil(3_600_000_000_000);
    Some(hours.clamp(1, 2400) as u32)
}

/// The configured check.
#[derive(Clone)]
pub struct Checker {
    provider: Option<Arc<dyn Provider>>,
    require: Vec<Field>,
    max_age_hours: Option<u32>,
}

impl Checker {
    pub fn new(
        provider: Option<Arc<dyn Provider>>,
        require: Vec<Field>,
        sim_swap_max_age: Duration,
    ) -> Checker {
        Checker {
            provider,
            require,
            max_age_hours: max_age_hours(sim_swap_max_age),
        }
    }

    /// Whether checks can run at all (`provider` other than `"none"`).
    pub fn enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// The fields that must match (validated at create: each must be given).
    pub fn required(&self) -> &[Field] {
        &self.require
    }

    /// Identity first; the SIM swap only for an identity that matched.
    pub async fn check(
        &self,
        phone: &Phone,
        identity: &Identity,
        now_ms: i64,
    ) -> Result<Verdict, Error> {
        let provider = self.provider.as_ref().ok_or(Error::Disabled)?;
        let answer = provider.kyc_match(phone, identity).await?;
        if !judge(&answer, &self.require) {
            return Ok(Verdict::Mismatch {
                fields: answer.fields,
            });
        }
        if let Some(h) = self.max_age_hours
            && provider.sim_swapped(phone, h, now_ms).await?
        {
            return Ok(Verdict::SimSwapped);
        }
        Ok(Verdict::Match {
            fields: answer.fields,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FieldResult::*;

    #[test]
    fn only_required_fields_refuse() {
        let a = KycAnswer {
            fields: vec![
                (Field::IdDocument, Match),
                (Field::Name, Match),
                (Field::Address, Mismatch),
            ],
            refused: false,
        };
        assert!(judge(&a, &[Field::IdDocument, Field::Name]));
        assert!(!judge(&a, &[Field::Address]));
        let na = KycAnswer {
            fields: vec![(Field::Birthdate, NotAvailable)],
            refused: false,
        };
        assert!(
            !judge(&na, &[Field::Birthdate]),
            "a required not_available refuses"
        );
        let refused = KycAnswer {
            fields: vec![(Field::Name, Match)],
            refused: true,
        };
        assert!(!judge(&refused, &[]), "the carrier's refusal stands");
    }

    #[test]
    fn max_age_is_hours_rounded_up_and_clamped() {
        assert_eq!(max_age_hours(Duration::ZERO), None);
        assert_eq!(max_age_hours(Duration::from_secs(1)), Some(1));
        assert_eq!(max_age_hours(Duration::from_secs(3600)), Some(1));
        assert_eq!(max_age_hours(Duration::from_secs(3601)), Some(2));
        assert_eq!(max_age_hours(Duration::from_secs(72 * 3600)), Some(72));
        assert_eq!(
            max_age_hours(Duration::from_secs(400 * 24 * 3600)),
            Some(2400)
        );
    }
}
