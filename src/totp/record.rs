//! A TOTP enrolment as stored (one per account), and making one.

use rand::{CryptoRng, RngCore};

use super::rules::TotpState;
use super::seal::{SealedSecret, SecretSealer};
use super::secret::{EnrolError, Enrolment, TotpSecret, enrol};

/// One account's enrolment. The secret only sealed; `Debug` shows no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpEnrolment {
    pub account_id: String,
    /// Stored as [`SealedSecret::encode`]; opens only for `account_id`.
    pub sealed: SealedSecret,
    pub created_at_ms: i64,
    /// When `confirm` activated it.
    pub activated_at_ms: Option<i64>,
    /// Status, last used step, wrong codes in a row, lock: what [`super::rules::decide`]
    /// reads and writes.
    pub state: TotpState,
}

/// A new (pending) enrolment for `account_id`: a fresh secret from `rng`, what the API
/// answers (secret, URI, QR) and what the store keeps (the secret sealed).
pub fn new_enrolment<R: RngCore + CryptoRng>(
    sealer: &SecretSealer,
    issuer: &str,
    account_id: &str,
    max_attempts: u32,
    now_ms: i64,
    rng: &mut R,
) -> Result<(Enrolment, TotpEnrolment), EnrolError> {
    let secret = TotpSecret::generate(rng);
    let shown = enrol(&secret, issuer, account_id)?;
    let record = TotpEnrolment {
        account_id: account_id.to_owned(),
        sealed: sealer.seal(&secret, account_id, rng),
        created_at_ms: now_ms,
        activated_at_ms: None,
        state: TotpState::enrolled(max_attempts),
    };
    Ok((shown, record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::totp::rules::TotpStatus;

    #[test]
    fn the_record_keeps_the_secret_only_sealed() {
        let sealer = SecretSealer::new(("k1", &[3; 32]), &[]);
        let (shown, rec) =
            new_enrolment(&sealer, "One Account", "acc-1", 5, 42, &mut rand::rng()).unwrap();
        assert_eq!(rec.state.status, TotpStatus::Pending);
        assert_eq!(rec.created_at_ms, 42);
        let opened = sealer.open(&rec.sealed, "acc-1").unwrap();
        assert_eq!(opened.base32(), shown.secret_base32);
        let stored = format!("{rec:?} {}", rec.sealed.encode());
        assert!(!stored.contains(&shown.secret_base32), "{stored}");
        assert!(new_enrolment(&sealer, "One Account", "a:b", 5, 0, &mut rand::rng()).is_err());
    }
}
