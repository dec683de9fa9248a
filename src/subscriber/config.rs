//! `[subscriber]` (contract §2): which carrier check, and which identity fields must match.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Issues, Secret, duration};

/// The identity fields a phone change may carry (contract §3.3).
pub const IDENTITY_FIELDS: [&str; 7] = [
    "id_document",
    "id_document_type",
    "name",
    "given_name",
    "family_name",
    "birthdate",
    "address",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriberProvider {
    Static,
    Camara,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriberConfig {
    pub provider: SubscriberProvider,
    pub static_file: PathBuf,
    #[serde(with = "duration")]
    pub sim_swap_max_age: Duration,
    pub require: Vec<String>,
    pub name_score_threshold: u8,
    pub camara: Option<CamaraConfig>,
}

impl Default for SubscriberConfig {
    fn default() -> Self {
        SubscriberConfig {
            provider: SubscriberProvider::Static,
            static_file: PathBuf::from("config/subscribers.toml"),
            sim_swap_max_age: Duration::from_secs(72 * 3600),
            require: vec!["id_document".into(), "name".into(), "birthdate".into()],
            name_score_threshold: 90,
            camara: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CamaraConfig {
    pub base_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub routes: Vec<String>,
}

fn is_http_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

impl SubscriberConfig {
    /// Checks of `[subscriber]`; `at` is `subscriber`.
    pub fn validate(&self, at: &str, issues: &mut Issues) {
        for (i, f) in self.require.iter().enumerate() {
            if !IDENTITY_FIELDS.contains(&f.as_str()) {
                issues.error(
                    format!("{at}.require[{i}]"),
                    format!("unknown identity field ({})", IDENTITY_FIELDS.join(", ")),
                );
            }
        }
        if self.provider != SubscriberProvider::None && self.require.is_empty() {
            // Nothing required would let any carrier answer (even "not_available" for every
            // field) complete a number change.
            issues.error(
                format!("{at}.require"),
                "must name at least one identity field (id_document, name, birthdate, …)",
            );
        }
        if self.name_score_threshold > 100 {
            issues.error(format!("{at}.name_score_threshold"), "must be 0..=100");
        }
        if self.provider == SubscriberProvider::Static
            && let Err(e) = super::static_file::StaticProvider::load(&self.static_file)
        {
            // `serve` loads it at start; say so here rather than fail there.
            issues.error(format!("{at}.static_file"), e.to_string());
        }
        if self.provider == SubscriberProvider::Camara {
            match &self.camara {
                None => issues.error(
                    format!("{at}.camara"),
                    "required with subscriber.provider = \"camara\"",
                ),
                Some(c) => {
                    if !is_http_url(&c.base_url) {
                        issues.error(format!("{at}.camara.base_url"), "must be an http(s) URL");
                    }
                    if !is_http_url(&c.token_url) {
                        issues.error(format!("{at}.camara.token_url"), "must be an http(s) URL");
                    }
                }
            }
        }
    }
}
