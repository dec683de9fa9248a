//! `[activation]` (contract §2): the shape and lifetime of activation codes.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Issues, duration};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActivationConfig {
    pub length: usize,
    pub alphabet: String,
    #[serde(with = "duration")]
    pub ttl: Duration,
    pub max_attempts: u32,
}

impl Default for ActivationConfig {
    fn default() -> Self {
        ActivationConfig {
            length: 10,
            alphabet: "23456789ABCDEFGHJKLMNPQRSTUVWXYZ".into(),
            ttl: Duration::from_secs(7 * 86400),
            max_attempts: 5,
        }
    }
}

impl ActivationConfig {
    /// Checks of `[activation]`; `at` is `activation`.
    pub fn validate(&self, at: &str, issues: &mut Issues) {
        if !(6..=32).contains(&self.length) {
            issues.error(format!("{at}.length"), "must be 6..=32");
        }
        let alphabet: Vec<char> = self.alphabet.chars().collect();
        let unique: HashSet<char> = alphabet.iter().copied().collect();
        if alphabet.len() < 10
            || unique.len() != alphabet.len()
            || !alphabet.iter().all(|c| c.is_ascii_alphanumeric())
        {
            issues.error(
                format!("{at}.alphabet"),
                "must be at least 10 distinct ASCII letters or digits",
            );
        }
        // Contract §6: any lifetime from 1s (test environments use short ones).
        if self.ttl < Duration::from_secs(1) {
            issues.error(format!("{at}.ttl"), "must be at least 1s");
        }
        if self.max_attempts == 0 {
            issues.error(format!("{at}.max_attempts"), "must be at least 1");
        }
    }
}
