//! TOTP secrets encrypted at rest: XChaCha20-Poly1305 under a key derived from the server key
//! (HKDF-SHA256, info `otpgate totp secret v1`), with the account id as associated data.
//!
//! A sealed secret names the id of the server key it was sealed under, so a rotated-out key
//! (`security.retired_secret_keys`) still opens what it sealed; new secrets use the current
//! key. The associated data binds a ciphertext to its account: copied to another account's
//! record it does not open. Nonces are 192-bit random, so random nonces never repeat in
//! practice.
//!
//! Stored form ([`SealedSecret::encode`]): `v1.{key_id}.{base64url(nonce ‖ ciphertext ‖ tag)}`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::{CryptoRng, RngCore};

use super::secret::{SECRET_LEN, TotpSecret};
use crate::activation::codes::derive_key;

const INFO: &[u8] = b"otpgate totp secret v1";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const VERSION: &str = "v1";

/// A secret as stored: which key sealed it, the nonce and the ciphertext (with its tag).
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret {
    pub key_id: String,
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSecret")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SealedSecret {
    /// One string for the store.
    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(NONCE_LEN + self.ciphertext.len());
        raw.extend_from_slice(&self.nonce);
        raw.extend_from_slice(&self.ciphertext);
        format!("{VERSION}.{}.{}", self.key_id, URL_SAFE_NO_PAD.encode(raw))
    }

    /// The inverse of [`encode`](Self::encode).
    pub fn decode(s: &str) -> Result<SealedSecret, OpenError> {
        // base64url has no `.`, so the key id may contain one.
        let (key_id, data) = s
            .strip_prefix(VERSION)
            .and_then(|r| r.strip_prefix('.'))
            .and_then(|r| r.rsplit_once('.'))
            .ok_or(OpenError::Malformed)?;
        let raw = URL_SAFE_NO_PAD
            .decode(data)
            .map_err(|_| OpenError::Malformed)?;
        if raw.len() != NONCE_LEN + SECRET_LEN + TAG_LEN {
            return Err(OpenError::Malformed);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        Ok(SealedSecret {
            key_id: key_id.to_owned(),
            nonce: nonce.try_into().map_err(|_| OpenError::Malformed)?,
            ciphertext: ciphertext.to_vec(),
        })
    }
}

/// Why a sealed secret did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Sealed under a key that is no longer configured (neither current nor retired).
    #[error("sealed under key `{0}`, which is not configured")]
    UnknownKey(String),
    /// Wrong key material, another account's ciphertext, or tampered with.
    #[error("does not authenticate")]
    Forged,
    /// Not something [`SealedSecret::encode`] wrote.
    #[error("malformed sealed secret")]
    Malformed,
}

/// Seals and opens TOTP secrets with the current server key and any retired ones.
#[derive(Clone)]
pub struct SecretSealer {
    /// `(key id, derived AEAD key)`, the current key first.
    keys: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for SecretSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("SecretSealer")
            .field("key_ids", &ids)
            .finish_non_exhaustive()
    }
}

fn aad(key_id: &str, account_id: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(32 + key_id.len() + account_id.len());
    for part in [INFO, key_id.as_bytes(), account_id.as_bytes()] {
        a.extend_from_slice(&(part.len() as u32).to_be_bytes());
        a.extend_from_slice(part);
    }
    a
}

impl SecretSealer {
    /// `current` and `retired` are `(key id, server key)`.
    pub fn new(current: (&str, &[u8; 32]), retired: &[(&str, &[u8; 32])]) -> SecretSealer {
        let keys = std::iter::once(current)
            .chain(retired.iter().copied())
            .map(|(id, key)| (id.to_owned(), derive_key(key, INFO)))
            .collect();
        SecretSealer { keys }
    }

    /// Seals `secret` for `account_id` under the current key, with a fresh nonce from `rng`.
    pub fn seal<R: RngCore + CryptoRng>(
        &self,
        secret: &TotpSecret,
        account_id: &str,
        rng: &mut R,
    ) -> SealedSecret {
        let (key_id, key) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let ciphertext = XChaCha20Poly1305::new(key.into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: &aad(key_id, account_id),
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any 20-byte message");
        SealedSecret {
            key_id: key_id.clone(),
            nonce,
            ciphertext,
        }
    }

    /// Opens a secret sealed for `account_id`.
    pub fn open(&self, sealed: &SealedSecret, account_id: &str) -> Result<TotpSecret, OpenError> {
        let (_, key) = self
            .keys
            .iter()
            .find(|(id, _)| *id == sealed.key_id)
            .ok_or_else(|| OpenError::UnknownKey(sealed.key_id.clone()))?;
        let plain = XChaCha20Poly1305::new(key.into())
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad(&sealed.key_id, account_id),
                },
            )
            .map_err(|_| OpenError::Forged)?;
        let bytes: [u8; SECRET_LEN] = plain.try_into().map_err(|_| OpenError::Malformed)?;
        Ok(TotpSecret::from_bytes(bytes))
    }

    /// Whether `sealed` was made under an older key (worth re-sealing under the current one).
    pub fn is_stale(&self, sealed: &SealedSecret) -> bool {
        sealed.key_id != self.keys[0].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8; 20] = b"12345678901234567890";

    fn sealer() -> SecretSealer {
        SecretSealer::new(("k2", &[2; 32]), &[("k1", &[1; 32])])
    }

    fn sealed(s: &SecretSealer, account: &str) -> SealedSecret {
        s.seal(&TotpSecret::from_bytes(*SECRET), account, &mut rand::rng())
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn seals_and_opens_for_the_same_account() {
        let s = sealer();
        let c = sealed(&s, "acc-1");
        assert_eq!(c.key_id, "k2");
        assert!(!contains(&c.ciphertext, SECRET));
        assert!(!contains(&c.ciphertext, &SECRET[..8]));
        assert_eq!(s.open(&c, "acc-1").unwrap().as_bytes(), SECRET);
        // Fresh nonce each time.
        assert_ne!(c, sealed(&s, "acc-1"));
    }

    #[test]
    fn another_account_or_key_does_not_open_it() {
        let s = sealer();
        let c = sealed(&s, "acc-1");
        assert_eq!(s.open(&c, "acc-2"), Err(OpenError::Forged));
        let other = SecretSealer::new(("k2", &[9; 32]), &[]);
        assert_eq!(other.open(&c, "acc-1"), Err(OpenError::Forged));
        let mut relabelled = c.clone();
        relabelled.key_id = "k1".into();
        assert_eq!(s.open(&relabelled, "acc-1"), Err(OpenError::Forged));
        let mut tampered = c.clone();
        tampered.ciphertext[0] ^= 1;
        assert_eq!(s.open(&tampered, "acc-1"), Err(OpenError::Forged));
    }

    #[test]
    fn a_retired_key_still_opens_and_a_removed_one_does_not() {
        let before = SecretSealer::new(("k1", &[1; 32]), &[]);
        let c = sealed(&before, "acc");
        let after = sealer();
        assert_eq!(after.open(&c, "acc").unwrap().as_bytes(), SECRET);
        assert!(after.is_stale(&c));
        assert!(!after.is_stale(&sealed(&after, "acc")));
        let forgotten = SecretSealer::new(("k2", &[2; 32]), &[]);
        assert_eq!(
            forgotten.open(&c, "acc"),
            Err(OpenError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn the_stored_form_round_trips_and_hides_the_secret() {
        let s = sealer();
        let c = sealed(&s, "acc");
        let text = c.encode();
        assert!(text.starts_with("v1.k2."), "{text}");
        assert!(!text.contains("GEZDGNBV") && !text.contains("1234567890"));
        assert_eq!(SealedSecret::decode(&text).unwrap(), c);
        for bad in ["", "v1.k2", "v2.k2.AAAA", "v1.k2.AAAA", "v1.k2.!!!"] {
            assert_eq!(
                SealedSecret::decode(bad),
                Err(OpenError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_shows_no_key_or_ciphertext() {
        let s = sealer();
        let shown = format!("{:?} {:?}", s, sealed(&s, "acc"));
        assert!(shown.contains("k2") && !shown.contains("[2, 2"), "{shown}");
    }
}
