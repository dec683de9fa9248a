//! Prefixed object ids (`ver_…`, `msg_…`) and the hash-slot tag they carry.
//!
//! An id is `PREFIX_` + a 4-character tag + 26 characters of base32 randomness (130 bits).
//! Objects that a single store operation touches together (a verification, its subject index
//! and its SMS) share the tag, so that with Redis Cluster their keys live in one hash slot.

use rand::Rng;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A fresh random slot tag.
pub fn random_tag() -> String {
    let mut r = rand::rng();
    (0..4)
        .map(|_| ALPHABET[r.random_range(0..32)] as char)
        .collect()
}

/// The tag of a subject key hash (first 4 base32 characters of its first bytes).
pub fn tag_of(hash: &[u8]) -> String {
    let n = u32::from_be_bytes([hash[0], hash[1], hash[2], hash[3]]);
    (0..4)
        .map(|i| ALPHABET[((n >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// A new id with this prefix and tag.
pub fn new_id(prefix: &str, tag: &str) -> String {
    let mut r = rand::rng();
    let mut s = String::with_capacity(prefix.len() + 1 + 4 + 26);
    s.push_str(prefix);
    s.push('_');
    s.push_str(tag);
    for _ in 0..26 {
        s.push(ALPHABET[r.random_range(0..32)] as char);
    }
    s
}

/// The tag of a well-formed id with this prefix; `None` for anything else (which is then
/// simply not found, without touching the store).
pub fn parse<'a>(prefix: &str, id: &'a str) -> Option<&'a str> {
    let rest = id.strip_prefix(prefix)?.strip_prefix('_')?;
    if rest.len() != 30 || !rest.bytes().all(|b| ALPHABET.contains(&b)) {
        return None;
    }
    Some(&rest[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_their_tag() {
        let id = new_id("ver", "abcd");
        assert_eq!(id.len(), 4 + 30);
        assert_eq!(parse("ver", &id), Some("abcd"));
        assert_eq!(parse("msg", &id), None);
        assert_eq!(parse("ver", "ver_../../etc"), None);
    }
}
