//! Abuse protection (contract §2 `[limits]`, §6): `COUNT/WINDOW` rules per phone, account, IP,
//! country and wrong codes, and the SMS-pumping guard.
//!
//! - [`window`]: what a rule means (a sliding log), as pure functions.
//! - [`pumping`]: the pumping guard's rule, as pure functions.
//! - [`engine`]: charges, refusals, and the in-process engine of the memory store.
//! - [`redis`]: the same rules as Lua that request scripts include.
//!
//! The rules are not applied to requests yet: `serve` says so in an error-level log line per
//! limit ([`unenforced`]).

pub mod config;
pub mod engine;
pub mod pumping;
pub mod redis;
pub mod window;

pub use config::{LimitsConfig, PumpingGuardConfig, RateSpec};
pub use engine::{Charge, MemoryLimits, Mode, RangeCharge, Refused};
pub use window::{LimitName, Rule};

/// A range was just closed by the pumping guard: one warning (range prefix only) and a metric.
pub(crate) fn range_closed(range: &str) {
    tracing::warn!(
        range,
        "pumping guard: code SMS to this number range are refused (codes sent there go unused)"
    );
    metrics::counter!("otpgate_pumping_guard_closed_total").increment(1);
}

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
