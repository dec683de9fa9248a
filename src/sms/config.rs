//! `[sms]` (contract §2, §4): the texts' service name, default locale, WebOTP line, overrides.

use std::path::PathBuf;

use serde::Deserialize;

use super::Locale;
use crate::config::Issues;

/// `{service}` goes into every SMS; a long name pushes a code SMS into two parts.
pub const MAX_SERVICE_NAME: usize = 40;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    pub service_name: String,
    pub default_locale: Locale,
    pub webotp_domain: String,
    pub notify_old_phone_on_change: bool,
    pub templates_dir: Option<PathBuf>,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            service_name: "One Account".into(),
            default_locale: Locale::En,
            webotp_domain: String::new(),
            notify_old_phone_on_change: true,
            templates_dir: None,
        }
    }
}

impl SmsConfig {
    /// Checks of `[sms]`, reading the override files of `templates_dir`; `at` is `sms`.
    pub fn validate(&self, at: &str, issues: &mut Issues) {
        let name = &self.service_name;
        if name.trim().is_empty() {
            issues.error(format!("{at}.service_name"), "must not be empty");
        } else if name.chars().count() > MAX_SERVICE_NAME {
            issues.error(
                format!("{at}.service_name"),
                format!("must be at most {MAX_SERVICE_NAME} characters"),
            );
        } else if name.chars().any(char::is_control) {
            issues.error(
                format!("{at}.service_name"),
                "must not contain control characters (line breaks, tabs)",
            );
        }
        let domain = &self.webotp_domain;
        if !domain.is_empty() && (domain.contains(char::is_whitespace) || !domain.contains('.')) {
            issues.error(
                format!("{at}.webotp_domain"),
                "must be a host name like \"example.gov.mo\"",
            );
        }
        if let Some(dir) = &self.templates_dir {
            for (file, problem) in super::templates::check_overrides(dir) {
                let shown = dir.join(&file);
                issues.error(
                    format!("{at}.templates_dir"),
                    format!("{}: {problem}", shown.display()),
                );
            }
        }
    }
}
