//! `[otp]` (contract §2): the code policy, with per-purpose overrides.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Issues, duration};
use crate::purpose::Purpose;

/// Shortest code lifetime (contract §6: test environments use seconds).
pub const MIN_TTL: Duration = Duration::from_secs(1);
pub const MAX_TTL: Duration = Duration::from_secs(86400);
/// Below this, `serve` warns: fine for tests, short for a person typing a code.
pub const SHORT_TTL: Duration = Duration::from_secs(30);

/// OTP policy: the `[otp]` defaults, or one purpose's effective values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtpPolicy {
    pub digits: u8,
    #[serde(with = "duration")]
    pub ttl: Duration,
    pub max_attempts: u32,
    pub max_sends: u32,
    #[serde(with = "duration")]
    pub resend_cooldown: Duration,
}

impl Default for OtpPolicy {
    fn default() -> Self {
        OtpPolicy {
            digits: 6,
            ttl: Duration::from_secs(300),
            max_attempts: 5,
            max_sends: 3,
            resend_cooldown: Duration::from_secs(60),
        }
    }
}

/// Per-purpose overrides: every key optional, falling back to `[otp]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtpOverride {
    pub digits: Option<u8>,
    #[serde(default, with = "duration::option")]
    pub ttl: Option<Duration>,
    pub max_attempts: Option<u32>,
    pub max_sends: Option<u32>,
    #[serde(default, with = "duration::option")]
    pub resend_cooldown: Option<Duration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "OtpSection")]
pub struct OtpConfig {
    pub defaults: OtpPolicy,
    pub purposes: BTreeMap<Purpose, OtpOverride>,
}

/// `[otp]` as written. Its keys are spelled out rather than `#[serde(flatten)]`ed into
/// `OtpPolicy`: flatten buffers the table, and an error inside it would lose its key path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OtpSection {
    digits: Option<u8>,
    #[serde(default, with = "duration::option")]
    ttl: Option<Duration>,
    max_attempts: Option<u32>,
    max_sends: Option<u32>,
    #[serde(default, with = "duration::option")]
    resend_cooldown: Option<Duration>,
    #[serde(default)]
    purposes: BTreeMap<PurposeKey, OtpOverride>,
}

/// A purpose as a table key, read as a string so that an error below it keeps its key path.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct PurposeKey(Purpose);

impl<'de> Deserialize<'de> for PurposeKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Purpose::parse(&s).map(PurposeKey).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown purpose `{s}` (expected one of {})",
                Purpose::ALL.map(Purpose::as_str).join(", ")
            ))
        })
    }
}

impl From<OtpSection> for OtpConfig {
    fn from(s: OtpSection) -> Self {
        let d = OtpPolicy::default();
        OtpConfig {
            defaults: OtpPolicy {
                digits: s.digits.unwrap_or(d.digits),
                ttl: s.ttl.unwrap_or(d.ttl),
                max_attempts: s.max_attempts.unwrap_or(d.max_attempts),
                max_sends: s.max_sends.unwrap_or(d.max_sends),
                resend_cooldown: s.resend_cooldown.unwrap_or(d.resend_cooldown),
            },
            purposes: s.purposes.into_iter().map(|(k, v)| (k.0, v)).collect(),
        }
    }
}

impl OtpConfig {
    /// The effective policy of one purpose.
    pub fn policy(&self, purpose: Purpose) -> OtpPolicy {
        let d = self.defaults;
        match self.purposes.get(&purpose) {
            None => d,
            Some(o) => OtpPolicy {
                digits: o.digits.unwrap_or(d.digits),
                ttl: o.ttl.unwrap_or(d.ttl),
                max_attempts: o.max_attempts.unwrap_or(d.max_attempts),
                max_sends: o.max_sends.unwrap_or(d.max_sends),
                resend_cooldown: o.resend_cooldown.unwrap_or(d.resend_cooldown),
            },
        }
    }

    /// Range checks of the defaults and of each override's own keys; `at` is `otp`.
    pub fn validate(&self, at: &str, issues: &mut Issues) {
        let d = &self.defaults;
        check(
            at,
            Some(d.digits),
            Some(d.ttl),
            Some(d.max_attempts),
            Some(d.max_sends),
            issues,
        );
        for (p, o) in &self.purposes {
            let at = format!("{at}.purposes.{p}");
            check(&at, o.digits, o.ttl, o.max_attempts, o.max_sends, issues);
        }
        // The cooldown against the lifetime it applies to (its own, or the default one).
        let cooldowns = std::iter::once((at.to_owned(), *d, d.resend_cooldown)).chain(
            self.purposes.iter().filter_map(|(p, o)| {
                o.resend_cooldown
                    .map(|c| (format!("{at}.purposes.{p}"), self.policy(*p), c))
            }),
        );
        for (at, policy, cooldown) in cooldowns {
            if cooldown > MAX_TTL {
                issues.error(format!("{at}.resend_cooldown"), "must be 0s..=24h");
            } else if cooldown >= policy.ttl && policy.max_sends > 1 {
                issues.warn(
                    format!("{at}.resend_cooldown"),
                    "is not shorter than the ttl: no resend can ever be sent",
                );
            }
        }
    }

    /// Lifetimes short enough to surprise a person (allowed: test environments use them).
    pub fn warn_short(&self, at: &str, issues: &mut Issues) {
        let short = |t: Duration| t < SHORT_TTL;
        if short(self.defaults.ttl) {
            issues.warn(format!("{at}.ttl"), short_message(self.defaults.ttl));
        }
        for (p, o) in &self.purposes {
            if let Some(t) = o.ttl.filter(|t| short(*t)) {
                issues.warn(format!("{at}.purposes.{p}.ttl"), short_message(t));
            }
        }
    }
}

fn short_message(t: Duration) -> String {
    format!(
        "{} is shorter than {}: fine for a test environment, short for a person",
        humantime::format_duration(t),
        humantime::format_duration(SHORT_TTL)
    )
}

fn check(
    at: &str,
    digits: Option<u8>,
    ttl: Option<Duration>,
    max_attempts: Option<u32>,
    max_sends: Option<u32>,
    issues: &mut Issues,
) {
    if let Some(d) = digits.filter(|d| !(4..=10).contains(d)) {
        issues.error(format!("{at}.digits"), format!("must be 4..=10, not {d}"));
    }
    if ttl.is_some_and(|t| !(MIN_TTL..=MAX_TTL).contains(&t)) {
        issues.error(format!("{at}.ttl"), "must be 1s..=24h");
    }
    if max_attempts.is_some_and(|n| !(1..=100).contains(&n)) {
        issues.error(format!("{at}.max_attempts"), "must be 1..=100");
    }
    if max_sends.is_some_and(|n| !(1..=20).contains(&n)) {
        issues.error(format!("{at}.max_sends"), "must be 1..=20");
    }
}
