//! `[limits]` (contract §2): rate specs like `"5/1h"` and the pumping guard's settings.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::{Issues, duration};
use crate::phone::config::{NOT_A_REGION, is_region};

/// A rate limit like `"5/1h"`: at most `count` events per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub count: u32,
    pub window: Duration,
}

impl FromStr for RateSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (count, window) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid rate \"{s}\" (COUNT/WINDOW, like \"5/1h\")"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("invalid rate \"{s}\": `{count}` is not a whole number"))?;
        let window = humantime::parse_duration(window.trim())
            .map_err(|_| format!("invalid rate \"{s}\": `{window}` is not a duration"))?;
        if count == 0 || window.is_zero() {
            return Err(format!(
                "invalid rate \"{s}\": count and window must be positive"
            ));
        }
        Ok(RateSpec { count, window })
    }
}

impl<'de> Deserialize<'de> for RateSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.count,
            humantime::format_duration(self.window)
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub per_phone: Vec<RateSpec>,
    pub per_account: Vec<RateSpec>,
    pub per_ip: Vec<RateSpec>,
    pub account_failures: Option<RateSpec>,
    pub per_country: BTreeMap<String, RateSpec>,
    pub pumping_guard: PumpingGuardConfig,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let r = |count, secs| RateSpec {
            count,
            window: Duration::from_secs(secs),
        };
        LimitsConfig {
            per_phone: vec![r(5, 3600), r(10, 86400)],
            per_account: vec![r(10, 3600)],
            per_ip: vec![r(20, 3600)],
            account_failures: Some(r(10, 3600)),
            per_country: BTreeMap::new(),
            pumping_guard: PumpingGuardConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PumpingGuardConfig {
    pub enabled: bool,
    pub prefix_digits: usize,
    #[serde(with = "duration")]
    pub window: Duration,
    pub min_sent: u32,
    pub min_approval_ratio: f64,
    #[serde(with = "duration")]
    pub cool_off: Duration,
}

impl Default for PumpingGuardConfig {
    fn default() -> Self {
        PumpingGuardConfig {
            enabled: false,
            prefix_digits: 6,
            window: Duration::from_secs(3600),
            min_sent: 50,
            min_approval_ratio: 0.2,
            cool_off: Duration::from_secs(3600),
        }
    }
}

impl LimitsConfig {
    /// Checks of `[limits]`; `at` is `limits`.
    pub fn validate(&self, at: &str, issues: &mut Issues) {
        for k in self.per_country.keys() {
            if !is_region(k) {
                issues.error(format!("{at}.per_country.{k}"), NOT_A_REGION);
            }
        }
        let g = &self.pumping_guard;
        if !(1..=15).contains(&g.prefix_digits) {
            issues.error(
                format!("{at}.pumping_guard.prefix_digits"),
                "must be 1..=15",
            );
        }
        if !(0.0..=1.0).contains(&g.min_approval_ratio) {
            issues.error(
                format!("{at}.pumping_guard.min_approval_ratio"),
                "must be 0.0..=1.0",
            );
        }
    }
}
