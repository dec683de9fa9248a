//! One-time codes derived from the server key and the verification id (HMAC-SHA256).
//!
//! Nothing code-like is ever stored: the code is recomputed from the key and the id when it is
//! sent (so a resend carries the same code) and when it is checked. Digits come from the HMAC
//! output by rejection sampling (bytes ≥ 250 are skipped), so every digit is uniform with no
//! modulo bias; the 128-bit random id makes codes unpredictable without the key.
//!
//! Keys rotate: a deriver holds the current key and the retired ones, each known by its id
//! ([`key_id`]). Every object records the id of the key it was made under, so a pending code
//! is sent again and checked with its own key after a rotation, and new ones use the current.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The id of a server key: the first 8 hex digits of its SHA-256 (names the key, reveals nothing).
pub fn key_id(key: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(key)[..4])
}

/// Derives codes from the server keys.
#[derive(Clone)]
pub struct CodeDeriver {
    /// HMAC with `key` already absorbed (its inner and outer pads): cloned per use, which
    /// saves two SHA-256 blocks per MAC — several per request.
    keyed: HmacSha256,
    id: String,
    /// Retired keys by id: still used for the objects made under them.
    retired: Vec<CodeDeriver>,
}

impl std::fmt::Debug for CodeDeriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeDeriver(***)")
    }
}

impl CodeDeriver {
    /// A deriver with one key.
    pub fn new(key: [u8; 32]) -> CodeDeriver {
        CodeDeriver {
            keyed: <HmacSha256 as Mac>::new_from_slice(&key).expect("HMAC takes any key length"),
            id: key_id(&key),
            retired: Vec::new(),
        }
    }

    /// A deriver with the current `key` and `retired` keys (for objects made under them).
    pub fn with_retired(key: [u8; 32], retired: &[[u8; 32]]) -> CodeDeriver {
        CodeDeriver {
            retired: retired
                .iter()
                .filter(|k| *k != &key)
                .map(|k| CodeDeriver::new(*k))
                .collect(),
            ..CodeDeriver::new(key)
        }
    }

    /// The id of the current key: what new objects record.
    pub fn current_id(&self) -> &str {
        &self.id
    }

    /// The deriver of key `id` (`""`: the current key, for objects stored before keys had
    /// ids); `None` for a key this process does not hold.
    pub fn for_key(&self, id: &str) -> Option<&CodeDeriver> {
        if id.is_empty() || id == self.id {
            return Some(self);
        }
        self.retired.iter().find(|k| k.id == id)
    }

    /// Every key held, current first: (id, deriver of that key alone).
    pub fn keys(&self) -> impl Iterator<Item = (&str, &CodeDeriver)> {
        std::iter::once((self.id.as_str(), self))
            .chain(self.retired.iter().map(|k| (k.id.as_str(), k)))
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        for p in parts {
            mac.update(&(p.len() as u32).to_be_bytes());
            mac.update(p);
        }
        mac
    }

    /// The `digits`-digit code of object `id` (domain-separated by `kind`).
    pub fn numeric(&self, kind: &str, id: &str, digits: u8) -> String {
        let mut out = String::with_capacity(digits as usize);
        let mut block: u32 = 0;
        while out.len() < digits as usize {
            let bytes = self
                .mac(&[kind.as_bytes(), id.as_bytes(), &block.to_be_bytes()])
                .finalize()
                .into_bytes();
            for b in bytes {
                if b < 250 && out.len() < digits as usize {
                    out.push(char::from(b'0' + b % 10));
                }
            }
            block += 1;
        }
        out
    }

    /// A code of `length` characters from `alphabet` (activation codes).
    pub fn alphabetic(&self, kind: &str, id: &str, alphabet: &[u8], length: usize) -> String {
        let n = alphabet.len();
        let limit = 256 - (256 % n);
        let mut out = String::with_capacity(length);
        let mut block: u32 = 0;
        while out.len() < length {
            let bytes = self
                .mac(&[kind.as_bytes(), id.as_bytes(), &block.to_be_bytes()])
                .finalize()
                .into_bytes();
            for b in bytes {
                if (b as usize) < limit && out.len() < length {
                    out.push(char::from(alphabet[b as usize % n]));
                }
            }
            block += 1;
        }
        out
    }

    /// A keyed hash of a lookup key (so store keys reveal no phone number or account id).
    pub fn subject_hash(&self, parts: &[&str]) -> [u8; 32] {
        let bytes: Vec<&[u8]> = std::iter::once(b"subject".as_slice())
            .chain(parts.iter().map(|p| p.as_bytes()))
            .collect();
        self.mac(&bytes).finalize().into_bytes().into()
    }
}

/// Constant-time comparison of a submitted code with the expected one.
pub fn codes_equal(expected: &str, given: &str) -> bool {
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_per_id_and_differ_between_ids() {
        let d = CodeDeriver::new([7; 32]);
        let a = d.numeric("otp", "ver_a", 6);
        assert_eq!(a.len(), 6);
        assert!(a.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(a, d.numeric("otp", "ver_a", 6));
        assert_ne!(a, d.numeric("otp", "ver_b", 6));
        assert_ne!(a, CodeDeriver::new([8; 32]).numeric("otp", "ver_a", 6));
    }

    #[test]
    fn shorter_codes_are_prefixes_of_longer_ones() {
        // The check relies on it: one stream, any length.
        let d = CodeDeriver::new([3; 32]);
        let ten = d.numeric("otp", "ver_x", 10);
        for n in 4..10 {
            assert_eq!(d.numeric("otp", "ver_x", n), ten[..n as usize]);
        }
    }

    #[test]
    fn digits_are_uniform() {
        let d = CodeDeriver::new([1; 32]);
        let mut counts = [0u32; 10];
        for i in 0..20_000 {
            for b in d.numeric("otp", &i.to_string(), 6).bytes() {
                counts[(b - b'0') as usize] += 1;
            }
        }
        // 120,000 digits: each expected 12,000; 5 sigma ≈ 520.
        for c in counts {
            assert!((11_480..=12_520).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn retired_keys_are_found_by_id() {
        let d = CodeDeriver::with_retired([2; 32], &[[1; 32]]);
        let old = key_id(&[1; 32]);
        assert_eq!(old.len(), 8);
        assert_eq!(d.current_id(), key_id(&[2; 32]));
        let code = d.for_key(&old).map(|k| k.numeric("otp", "ver_a", 6));
        assert_eq!(
            code,
            Some(CodeDeriver::new([1; 32]).numeric("otp", "ver_a", 6))
        );
        assert_eq!(d.for_key("").map(|k| k.current_id()), Some(d.current_id()));
        assert!(d.for_key("00000000").is_none());
        assert_eq!(d.keys().count(), 2);
    }

    #[test]
    fn constant_time_compare() {
        assert!(codes_equal("123456", "123456"));
        assert!(!codes_equal("123456", "123457"));
        assert!(!codes_equal("123456", "12345"));
    }
}
