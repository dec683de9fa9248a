//! Abuse protection (contract §2 `[limits]`, §6): `COUNT/WINDOW` rules per phone, account, IP,
//! country and wrong codes, and the SMS-pumping guard.
//!
//! - [`window`]: what a rule means (a sliding log), as pure functions.
//! - [`pumping`]: the pumping guard's rule, as pure functions.
//! - [`engine`]: charges, refusals, and the in-process engine of the memory store.
//! - [`redis`]: the same rules as Lua that request scripts include.
//! - [`request`]: which counters a request is charged ([`Limiter`] builds a [`Plan`]).
//!
//! The stores apply a plan atomically with the change it guards (`store::verifications`,
//! `store::limits`); a refusal is a 429 naming the limit (`api::error`).

pub mod config;
pub mod engine;
pub mod pumping;
pub mod redis;
pub mod request;
pub mod window;

pub use config::{LimitsConfig, PumpingGuardConfig, RateSpec};
pub use engine::{Charge, CheckEffect, MemoryLimits, Mode, RangeCharge, Refused};
pub use request::{Limiter, Plan, Subject};
pub use window::{LimitName, Rule};

/// A range was just closed by the pumping guard: one warning (range prefix only) and a metric.
pub(crate) fn range_closed(range: &str) {
    tracing::warn!(
        range,
        "pumping guard: code SMS to this number range are refused (codes sent there go unused)"
    );
    metrics::counter!("otpgate_pumping_guard_closed_total").increment(1);
}

/// A refusal, counted by limit in `/metrics`.
pub fn refused(limit: LimitName) {
    metrics::counter!("otpgate_rate_limited_total", "limit" => limit.as_str()).increment(1);
}
