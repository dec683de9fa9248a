//! Secrets everybody knows: the development API token and every key written in the
//! repository's config files. `serve` refuses them when `server.listen` is not loopback.
//!
//! The files are embedded at compile time, so a key added to them later is refused without
//! anyone copying it into a list. A test checks that every `config/*.toml` is embedded.

use sha2::{Digest, Sha256};

/// The development client token of `config/otpgate.toml`.
pub const DEV_TOKEN: &str = "dev-token-change-me";

/// Every config file of the repository (see the test below).
pub const FILES: [(&str, &str); 3] = [
    (
        "config/otpgate.toml",
        include_str!("../../config/otpgate.toml"),
    ),
    (
        "config/otpgate.example.toml",
        include_str!("../../config/otpgate.example.toml"),
    ),
    (
        "config/subscribers.toml",
        include_str!("../../config/subscribers.toml"),
    ),
];

/// The `secret_key` of the example config of the first releases.
const EARLIER_EXAMPLE_KEY: &str =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// Every run of exactly 64 hex characters in the repository's config files (API key hashes
/// and secret keys alike), lowercase, plus the earlier example key and the dev token's hash.
pub fn published_hex() -> Vec<String> {
    let mut out = vec![
        EARLIER_EXAMPLE_KEY.to_owned(),
        hex::encode(Sha256::digest(DEV_TOKEN.as_bytes())),
    ];
    for (_, text) in FILES {
        for word in text.split(|c: char| !c.is_ascii_hexdigit()) {
            if word.len() == 64 {
                out.push(word.to_ascii_lowercase());
            }
        }
    }
    out
}

/// Whether `hex` (a key or a key hash) was published.
pub fn is_published(hex: &str) -> bool {
    let hex = hex.trim().to_ascii_lowercase();
    published_hex().contains(&hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_repository_config_file_is_embedded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .expect("config/")
            .filter_map(|e| e.ok())
            .map(|e| format!("config/{}", e.file_name().to_string_lossy()))
            .filter(|n| n.ends_with(".toml"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = FILES.iter().map(|(n, _)| (*n).to_owned()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "add new config files to FILES");
        for (name, text) in FILES {
            let path = format!("{}/{name}", env!("CARGO_MANIFEST_DIR"));
            assert_eq!(std::fs::read_to_string(path).expect("read"), text);
        }
    }

    #[test]
    fn the_dev_token_and_the_shipped_client_hash_are_published() {
        assert!(is_published(&hex::encode(Sha256::digest(DEV_TOKEN))));
        assert!(is_published(
            "F01D2474FD375B4C5EB46064B550034167661B86322F1E1D3CB7645512A06607"
        ));
        assert!(is_published(EARLIER_EXAMPLE_KEY));
        assert!(!is_published(&hex::encode([42u8; 32])));
    }
}
