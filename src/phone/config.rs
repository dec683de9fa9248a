//! `[phone]` (contract §2): the region of national numbers and the countries allowed.

use std::str::FromStr;

use serde::Deserialize;

use crate::config::Issues;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PhoneConfig {
    pub default_region: String,
    pub allowed_countries: Vec<String>,
}

impl Default for PhoneConfig {
    fn default() -> Self {
        PhoneConfig {
            default_region: "MO".into(),
            allowed_countries: Vec::new(),
        }
    }
}

/// Whether `code` is an ISO 3166 alpha-2 region `phonenumber` knows.
pub fn is_region(code: &str) -> bool {
    phonenumber::country::Id::from_str(code).is_ok()
}

pub const NOT_A_REGION: &str = "not an ISO 3166 alpha-2 region code";

impl PhoneConfig {
    /// Checks of `[phone]`; `at` is `phone`.
    pub fn validate(&self, at: &str, issues: &mut Issues) {
        if !is_region(&self.default_region) {
            issues.error(format!("{at}.default_region"), NOT_A_REGION);
        }
        for (i, c) in self.allowed_countries.iter().enumerate() {
            if !is_region(c) {
                issues.error(format!("{at}.allowed_countries[{i}]"), NOT_A_REGION);
            }
        }
    }
}
