//! Abuse protection (contract §2 `[limits]`, §6): `COUNT/WINDOW` rules per phone, account, IP,
//! country and wrong codes, and the SMS-pumping guard.
//!
//! - [`window`]: what a rule means (a sliding log), as pure functions.
//! - [`pumping`]: the pumping guard's rule, as pure functions.
//! - [`engine`]: charges, refusals, and the in-process engine of the memory store.

pub mod engine;
pub mod pumping;
pub mod redis;
pub mod window;

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
