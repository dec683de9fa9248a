//! `[[smpp.smsc]]` (contract §2, §5): the SMSCs, their binds and their routes.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Issues, Secret, duration};
pub use crate::store::ReceiptIds;

/// SMPP 3.4 field sizes (C-octet strings, without the terminating NUL).
pub const MAX_SYSTEM_ID: usize = 15;
pub const MAX_PASSWORD: usize = 8;
pub const MAX_SYSTEM_TYPE: usize = 12;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmppConfig {
    pub smsc: Vec<SmscConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LongMessages {
    Udh,
    Sar,
    Payload,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmscConfig {
    pub name: String,
    pub simulator: bool,
    pub address: String,
    pub system_id: String,
    pub password: Secret,
    pub system_type: String,
    pub binds: u32,
    pub window: u32,
    pub throughput: u32,
    #[serde(with = "duration")]
    pub enquire_link_interval: Duration,
    #[serde(with = "duration")]
    pub response_timeout: Duration,
    pub source_addr: String,
    pub routes: Vec<String>,
    pub long_messages: LongMessages,
    /// How its receipt ids relate to its `submit_sm_resp` ids (contract §6 "Receipt ids").
    pub receipt_ids: ReceiptIds,
}

impl Default for SmscConfig {
    fn default() -> Self {
        SmscConfig {
            name: String::new(),
            simulator: false,
            address: "127.0.0.1:2775".into(),
            system_id: "otpgate".into(),
            password: Secret::default(),
            system_type: String::new(),
            binds: 1,
            window: 32,
            throughput: 0,
            enquire_link_interval: Duration::from_secs(30),
            response_timeout: Duration::from_secs(10),
            source_addr: "OneAccount".into(),
            routes: Vec::new(),
            long_messages: LongMessages::Udh,
            receipt_ids: ReceiptIds::Auto,
        }
    }
}

impl SmppConfig {
    /// Range and consistency checks; `at` is the section's path (`smpp`).
    pub fn validate(&self, at: &str, issues: &mut Issues) {
        if self.smsc.is_empty() {
            issues.error(
                format!("{at}.smsc"),
                "at least one [[smpp.smsc]] is required",
            );
        }
        let mut names = HashSet::new();
        for (i, s) in self.smsc.iter().enumerate() {
            let at = format!("{at}.smsc[{i}]");
            if s.name.trim().is_empty() {
                issues.error(format!("{at}.name"), "must not be empty");
            } else if !names.insert(s.name.as_str()) {
                issues.error(format!("{at}.name"), "duplicate SMSC name");
            }
            s.validate(&at, issues);
        }
        self.warn_unroutable(at, issues);
    }

    /// When every SMSC has `routes`, numbers outside them have nowhere to go.
    fn warn_unroutable(&self, at: &str, issues: &mut Issues) {
        if self.smsc.is_empty() || self.smsc.iter().any(|s| s.routes.is_empty()) {
            return;
        }
        let mut prefixes: Vec<&str> = self
            .smsc
            .iter()
            .flat_map(|s| s.routes.iter().map(String::as_str))
            .collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        issues.warn(
            format!("{at}.smsc"),
            format!(
                "every SMSC has `routes` (no default SMSC): numbers outside {} will be refused (422 country_not_allowed)",
                prefixes.join(", ")
            ),
        );
    }
}

impl SmscConfig {
    /// Checks of one SMSC; `at` is its path (`smpp.smsc[0]`).
    pub fn validate(&self, at: &str, issues: &mut Issues) {
        let key = |k: &str| format!("{at}.{k}");
        if !self.simulator
            && self.address.parse::<SocketAddr>().is_err()
            && !self.address.contains(':')
        {
            issues.error(key("address"), "must be HOST:PORT");
        }
        if self.system_id.is_empty() || self.system_id.len() > MAX_SYSTEM_ID {
            issues.error(
                key("system_id"),
                format!("must be 1..={MAX_SYSTEM_ID} characters (SMPP 3.4)"),
            );
        }
        if self.password.expose().len() > MAX_PASSWORD {
            issues.error(
                key("password"),
                format!("must be at most {MAX_PASSWORD} characters (SMPP 3.4)"),
            );
        }
        if self.system_type.len() > MAX_SYSTEM_TYPE {
            issues.error(
                key("system_type"),
                format!("must be at most {MAX_SYSTEM_TYPE} characters (SMPP 3.4)"),
            );
        }
        if !(1..=64).contains(&self.binds) {
            issues.error(key("binds"), "must be 1..=64");
        }
        if !(1..=1024).contains(&self.window) {
            issues.error(key("window"), "must be 1..=1024");
        }
        if self.enquire_link_interval < Duration::from_secs(1) {
            issues.error(key("enquire_link_interval"), "must be at least 1s");
        }
        if self.response_timeout < Duration::from_millis(100) {
            issues.error(key("response_timeout"), "must be at least 100ms");
        }
        if super::addressing::source_address(&self.source_addr).is_none() {
            issues.error(
                key("source_addr"),
                "must be 1..=11 GSM letters/digits (alphanumeric) or 1..=20 digits with optional +",
            );
        }
        for (j, r) in self.routes.iter().enumerate() {
            let digits = r.strip_prefix('+').unwrap_or("");
            if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                issues.error(
                    format!("{at}.routes[{j}]"),
                    "must be an E.164 prefix like \"+853\"",
                );
            }
        }
    }
}
