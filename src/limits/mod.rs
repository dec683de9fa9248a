//! Rate limits and the SMS-pumping guard (`[limits]`, contract §2, §6).
//!
//! Only the configuration exists so far: the limits are parsed and validated, not enforced,
//! and `serve` says so in an error-level log line per limit ([`unenforced`]).

pub mod config;

pub use config::{LimitsConfig, PumpingGuardConfig, RateSpec};

/// The `[limits]` names (contract §6) that this configuration sets and this version does not
/// enforce. `resend_cooldown` and `max_sends` are `[otp]` keys and are enforced.
pub fn unenforced(c: &LimitsConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    if !c.per_phone.is_empty() {
        out.push("per_phone");
    }
    if !c.per_account.is_empty() {
        out.push("per_account");
    }
    if !c.per_ip.is_empty() {
        out.push("per_ip");
    }
    if c.account_failures.is_some() {
        out.push("account_failures");
    }
    if !c.per_country.is_empty() {
        out.push("per_country");
    }
    if c.pumping_guard.enabled {
        out.push("pumping_guard");
    }
    out
}
