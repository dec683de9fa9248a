//! Activation codes and the keyed hashes around them (contract §3.4).
//!
//! Nothing secret is stored. The code is derived from the server key and the activation id
//! (HMAC-SHA256, then rejection sampling over `activation.alphabet`), recomputed when the SMS
//! is rendered and when a redeem is checked, exactly as SMS codes are ([`crate::otp::codes`]).
//! The store knows an activation only by a keyed hash of its application number (so a Redis
//! dump names no application number) and holds a keyed hash of the entity number, never the
//! number itself.
//!
//! Each purpose uses its own key, derived from the server key with HKDF-SHA256 and a distinct
//! info string. Each activation records the id of the server key it was made under, so it
//! keeps working after a rotation (`security.retired_secret_keys`) until it ends.
//!
//! A redeem does the same work whether the application number exists or not
//! ([`ActivationKeys::presented_matches`] with `None` derives and compares a dummy code), and
//! compares code and entity number in constant time, so timing tells nothing either.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};
use unicode_normalization::UnicodeNormalization;

type HmacSha256 = Hmac<Sha256>;

const INFO_CODE: &[u8] = b"otpgate activation code v1";
const INFO_LOOKUP: &[u8] = b"otpgate activation lookup v1";
const INFO_ENTITY: &[u8] = b"otpgate activation entity v1";
/// Stands in for the id of an application number that matched nothing: as long as a real
/// id (so the HMAC work is the same), and never one (`0` is not in the id alphabet).
const DUMMY_ID: &str = "act_000000000000000000000000000000";

/// A 32-byte key derived from a server key for one purpose (HKDF-SHA256, no salt).
pub(crate) fn derive_key(server_key: &[u8; 32], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::new(None, server_key)
        .expand(info, &mut out)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

fn mac(key: &[u8; 32], parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        mac.update(&(p.len() as u32).to_be_bytes());
        mac.update(p);
    }
    mac
}

/// The derived keys of one server key.
#[derive(Clone)]
struct KeySet {
    id: String,
    code: [u8; 32],
    lookup: [u8; 32],
    entity: [u8; 32],
}

impl KeySet {
    fn new(id: String, server_key: &[u8; 32]) -> KeySet {
        KeySet {
            id,
            code: derive_key(server_key, INFO_CODE),
            lookup: derive_key(server_key, INFO_LOOKUP),
            entity: derive_key(server_key, INFO_ENTITY),
        }
    }
}

/// The keyed hash of an application number under one server key: the store's lookup key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupHash {
    /// The id of the server key it was computed with.
    pub key_id: String,
    /// Lowercase hex of HMAC-SHA256 (64 characters).
    pub hash: String,
}

/// What a redeem needs of a stored activation to check a presented code.
#[derive(Debug, Clone, Copy)]
pub struct StoredSecrets<'a> {
    pub activation_id: &'a str,
    /// The id of the server key the activation was made under.
    pub key_id: &'a str,
    /// Hex [`ActivationKeys::entity_hash`] of the entity number given at issue, if any.
    pub entity_hash: Option<&'a str>,
}

/// What the holder typed at redeem (raw; normalised here).
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub entity_number: Option<&'a str>,
    pub code: &'a str,
}

/// Derives activation codes and hashes from the current server key and any retired ones.
#[derive(Clone)]
pub struct ActivationKeys {
    /// The current key first, then the retired ones.
    keys: Vec<KeySet>,
    alphabet: Vec<u8>,
    length: usize,
}

impl std::fmt::Debug for ActivationKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("ActivationKeys")
            .field("key_ids", &ids)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

/// Why [`ActivationKeys::new`] refused its arguments (config validation should make these
/// unreachable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    /// The alphabet has fewer than 2 or more than 256 characters, a non-ASCII one, or a
    /// repeated one.
    #[error("activation.alphabet must be 2..=256 distinct ASCII characters")]
    Alphabet,
    /// A code of 0 characters.
    #[error("activation.length must be at least 1")]
    Length,
    /// Two server keys with the same id.
    #[error("duplicate key id `{0}`")]
    DuplicateKeyId(String),
}

impl ActivationKeys {
    /// `current` and `retired` are `(key id, server key)`; new activations use `current`.
    pub fn new(
        current: (&str, &[u8; 32]),
        retired: &[(&str, &[u8; 32])],
        alphabet: &str,
        length: usize,
    ) -> Result<ActivationKeys, KeysError> {
        let bytes = alphabet.as_bytes();
        let mut seen = [false; 256];
        if !(2..=256).contains(&bytes.len()) || !alphabet.is_ascii() {
            return Err(KeysError::Alphabet);
        }
        for &b in bytes {
            if std::mem::replace(&mut seen[b as usize], true) {
                return Err(KeysError::Alphabet);
            }
        }
        if length == 0 {
            return Err(KeysError::Length);
        }
        let mut keys = vec![KeySet::new(current.0.to_owned(), current.1)];
        for (id, key) in retired {
            if keys.iter().any(|k| k.id == *id) {
                return Err(KeysError::DuplicateKeyId((*id).to_owned()));
            }
            keys.push(KeySet::new((*id).to_owned(), key));
        }
        Ok(ActivationKeys {
            keys,
            alphabet: bytes.to_vec(),
            length,
        })
    }

    /// The id of the key new activations are made under.
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].id
    }

    fn key(&self, key_id: &str) -> Option<&KeySet> {
        self.keys.iter().find(|k| k.id == key_id)
    }

    /// The code of activation `activation_id` made under key `key_id`, as sent in the SMS;
    /// `None` when that key is no longer configured.
    pub fn code(&self, key_id: &str, activation_id: &str) -> Option<String> {
        self.key(key_id).map(|k| self.derive_code(k, activation_id))
    }

    /// `length` characters, each uniform over the alphabet: HMAC output bytes at or above
    /// the largest multiple of the alphabet size are skipped (no modulo bias).
    fn derive_code(&self, k: &KeySet, activation_id: &str) -> String {
        let n = self.alphabet.len();
        let limit = 256 - (256 % n);
        let mut out = String::with_capacity(self.length);
        let mut block: u32 = 0;
        while out.len() < self.length {
            let bytes = mac(&k.code, &[activation_id.as_bytes(), &block.to_be_bytes()])
                .finalize()
                .into_bytes();
            for b in bytes {
                if (b as usize) < limit && out.len() < self.length {
                    out.push(char::from(self.alphabet[b as usize % n]));
                }
            }
            block += 1;
        }
        out
    }

    /// The lookup hash of an application number under the current key (for a new activation).
    pub fn lookup_hash(&self, application_number: &str) -> LookupHash {
        self.lookup_under(&self.keys[0], application_number)
    }

    /// The lookup hashes of an application number under every configured key, current first:
    /// a redeem looks each up (in one store round trip, so the count of keys is all that
    /// timing could tell).
    pub fn lookup_hashes(&self, application_number: &str) -> Vec<LookupHash> {
        self.keys
            .iter()
            .map(|k| self.lookup_under(k, application_number))
            .collect()
    }

    fn lookup_under(&self, k: &KeySet, application_number: &str) -> LookupHash {
        let norm = normalize_application_number(application_number);
        LookupHash {
            key_id: k.id.clone(),
            hash: hex::encode(mac(&k.lookup, &[norm.as_bytes()]).finalize().into_bytes()),
        }
    }

    /// The hex keyed hash of an entity number for activation `activation_id` under `key_id`
    /// (what the store keeps); `None` when the number is absent or blank, or the key is gone.
    pub fn entity_hash(
        &self,
        key_id: &str,
        activation_id: &str,
        entity_number: Option<&str>,
    ) -> Option<String> {
        let k = self.key(key_id)?;
        let norm = normalize_entity_number(entity_number?)?;
        Some(hex::encode(entity_mac(k, activation_id, &norm)))
    }

    /// Whether the presented code and entity number match a stored activation; `None` for an
    /// application number that matched nothing, which does the same work (a dummy code and
    /// entity hash are derived and compared) and answers `false`.
    ///
    /// An entity number must be presented exactly when one was given at issue.
    pub fn presented_matches(&self, stored: Option<StoredSecrets<'_>>, p: Presented<'_>) -> bool {
        // Unknown application number, or a key that is no longer configured: same work
        // under the current key with an id no activation has, then `false`.
        let (k, id, entity_hash, known) = match stored.and_then(|s| Some((self.key(s.key_id)?, s)))
        {
            Some((k, s)) => (k, s.activation_id, s.entity_hash, Choice::from(1)),
            None => (&self.keys[0], DUMMY_ID, None, Choice::from(0)),
        };
        let expected = normalize_code(&self.derive_code(k, id));
        let given = normalize_code(p.code);
        let code_ok = expected.as_bytes().ct_eq(given.as_bytes());

        let presented_entity = p.entity_number.and_then(normalize_entity_number);
        let given_hash = entity_mac(k, id, presented_entity.as_deref().unwrap_or(""));
        let stored_hash = entity_hash
            .and_then(|h| hex::decode(h).ok())
            .unwrap_or_default();
        let entity_ok = match (stored_hash.is_empty(), presented_entity.is_some()) {
            // Issued with one: the presented one must hash the same.
            (false, true) => given_hash.as_slice().ct_eq(stored_hash.as_slice()),
            // Issued without one and none presented.
            (true, false) => Choice::from(1),
            // One given without the other: a mismatch, after the same hashing work.
            _ => Choice::from(0),
        };
        bool::from(code_ok & entity_ok & known)
    }
}

fn entity_mac(k: &KeySet, activation_id: &str, entity_number: &str) -> [u8; 32] {
    mac(
        &k.entity,
        &[activation_id.as_bytes(), entity_number.as_bytes()],
    )
    .finalize()
    .into_bytes()
    .into()
}

/// Is this character ignored in typed codes and entity numbers (after NFKC)?
fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '-' | '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}' | '\u{FF0D}'
        )
}

/// A typed activation code as compared: NFKC (full-width letters and digits become ASCII),
/// spaces and dashes dropped, ASCII letters upper-cased.
pub fn normalize_code(input: &str) -> String {
    input
        .nfkc()
        .filter(|c| !is_separator(*c))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// An entity number as hashed, normalised like a code; `None` when nothing is left (a blank
/// entity number counts as none).
pub fn normalize_entity_number(input: &str) -> Option<String> {
    Some(normalize_code(input)).filter(|s| !s.is_empty())
}

/// An application number as hashed: NFKC, surrounding whitespace trimmed, ASCII letters
/// upper-cased. Inner dashes and spaces are kept: they may tell two numbers apart.
pub fn normalize_application_number(input: &str) -> String {
    let s: String = input.nfkc().collect();
    s.trim().to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALPHABET: &str = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ";

    fn keys() -> ActivationKeys {
        ActivationKeys::new(("k1", &[7; 32]), &[("k0", &[6; 32])], ALPHABET, 10).unwrap()
    }

    #[test]
    fn codes_are_stable_per_id_key_and_alphabet() {
        let k = keys();
        let a = k.code("k1", "act_a").unwrap();
        assert_eq!(a.len(), 10);
        assert!(a.bytes().all(|b| ALPHABET.as_bytes().contains(&b)), "{a}");
        assert_eq!(Some(&a), k.code("k1", "act_a").as_ref());
        assert_ne!(Some(&a), k.code("k1", "act_b").as_ref());
        assert_ne!(Some(&a), k.code("k0", "act_a").as_ref());
        assert_eq!(k.code("gone", "act_a"), None);
    }

    #[test]
    fn codes_are_uniform_over_an_alphabet_that_does_not_divide_256() {
        // 30 characters: 256 % 30 = 16, so plain modulo would favour the first 16 characters.
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ2345";
        let k = ActivationKeys::new(("k", &[1; 32]), &[], alphabet, 12).unwrap();
        let mut counts = [0u32; 30];
        for i in 0..10_000 {
            for b in k.code("k", &format!("act_{i}")).unwrap().bytes() {
                counts[alphabet.bytes().position(|c| c == b).unwrap()] += 1;
            }
        }
        // 120,000 characters: each expected 4,000 (sd ≈ 62); modulo bias would put the first
        // 16 at 4,000·9/8.5 ≈ 4,235 and the rest at ≈ 3,765.
        for c in counts {
            assert!((3_750..=4_250).contains(&c), "{counts:?}");
        }
        let first: u32 = counts[..16].iter().sum();
        let rest: u32 = counts[16..].iter().sum();
        let ratio = (first as f64 / 16.0) / (rest as f64 / 14.0);
        assert!((0.98..1.02).contains(&ratio), "{ratio}");
    }

    #[test]
    fn bad_alphabets_and_lengths_are_refused() {
        let key = [0u8; 32];
        assert!(ActivationKeys::new(("k", &key), &[], "A", 10).is_err());
        assert!(ActivationKeys::new(("k", &key), &[], "ABCA", 10).is_err());
        assert!(ActivationKeys::new(("k", &key), &[], "ABCÉ", 10).is_err());
        assert!(ActivationKeys::new(("k", &key), &[], ALPHABET, 0).is_err());
        assert_eq!(
            ActivationKeys::new(("k", &key), &[("k", &key)], ALPHABET, 10).unwrap_err(),
            KeysError::DuplicateKeyId("k".into())
        );
    }

    #[test]
    fn typed_codes_are_normalised() {
        assert_eq!(normalize_code(" abcd-2345 67 "), "ABCD234567");
        // Full-width letters, digits, dash and the ideographic space.
        assert_eq!(
            normalize_code("ＡＢＣＤ－２３４５\u{3000}６７"),
            "ABCD234567"
        );
        assert_eq!(normalize_code("ab\u{2013}cd\tef"), "ABCDEF");
        assert_eq!(normalize_entity_number(" - "), None);
        assert_eq!(
            normalize_application_number(" ａ2026-000123 "),
            "A2026-000123"
        );
    }

    #[test]
    fn lookup_hashes_are_keyed_and_name_their_key() {
        let k = keys();
        let h = k.lookup_hash("A2026-000123");
        assert_eq!(h.key_id, "k1");
        assert_eq!(h.hash.len(), 64);
        assert!(!h.hash.contains("2026"));
        assert_eq!(k.lookup_hash(" a2026-000123"), h);
        assert_ne!(k.lookup_hash("A2026-000124"), h);
        let all = k.lookup_hashes("A2026-000123");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], h);
        assert_eq!(all[1].key_id, "k0");
        assert_ne!(all[1].hash, h.hash);
    }

    fn check(
        k: &ActivationKeys,
        stored_entity: Option<&str>,
        entity: Option<&str>,
        code: &str,
    ) -> bool {
        let hash = k.entity_hash("k1", "act_x", stored_entity);
        let stored = StoredSecrets {
            activation_id: "act_x",
            key_id: "k1",
            entity_hash: hash.as_deref(),
        };
        k.presented_matches(
            Some(stored),
            Presented {
                entity_number: entity,
                code,
            },
        )
    }

    #[test]
    fn presented_code_and_entity_number_must_both_match() {
        let k = keys();
        let code = k.code("k1", "act_x").unwrap();
        let typed = format!("{}-{}", code[..5].to_lowercase(), &code[5..]);
        assert!(check(&k, Some("600123"), Some("600123"), &code));
        assert!(check(&k, Some("600123"), Some(" 600-123 "), &typed));
        assert!(
            !check(&k, Some("600123"), Some("600124"), &code),
            "wrong entity"
        );
        assert!(!check(&k, Some("600123"), None, &code), "entity missing");
        assert!(!check(&k, None, Some("600123"), &code), "entity not issued");
        assert!(check(&k, None, None, &code));
        assert!(
            check(&k, None, Some("  "), &code),
            "a blank entity number is none"
        );
        let mut wrong = code.clone().into_bytes();
        wrong[9] = if wrong[9] == b'2' { b'3' } else { b'2' };
        assert!(!check(&k, None, None, std::str::from_utf8(&wrong).unwrap()));
        assert!(!check(&k, None, None, &code[..9]));
    }

    #[test]
    fn an_activation_under_a_retired_key_still_matches() {
        let k = keys();
        let code = k.code("k0", "act_old").unwrap();
        let stored = StoredSecrets {
            activation_id: "act_old",
            key_id: "k0",
            entity_hash: None,
        };
        let p = Presented {
            entity_number: None,
            code: &code,
        };
        assert!(k.presented_matches(Some(stored), p));
        // The retired key removed from the config: the activation no longer matches.
        let without = ActivationKeys::new(("k1", &[7; 32]), &[], ALPHABET, 10).unwrap();
        assert!(!without.presented_matches(Some(stored), p));
    }

    #[test]
    fn an_unknown_application_number_never_matches() {
        let k = keys();
        // Not even with the code the dummy derivation produces.
        assert_eq!(DUMMY_ID.len(), crate::ids::new_id("act", "abcd").len());
        let dummy = k.code("k1", DUMMY_ID).unwrap();
        assert!(!k.presented_matches(
            None,
            Presented {
                entity_number: None,
                code: &dummy
            }
        ));
    }

    #[test]
    fn debug_shows_no_key_material() {
        let s = format!("{:?}", keys());
        assert!(s.contains("k1") && !s.contains("[7, 7"), "{s}");
    }
}
