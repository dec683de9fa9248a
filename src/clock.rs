//! Time as a parameter: the daemon reads `now` from a [`Clock`], which tests can move forward
//! to reach expiry and cooldown ends without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Wall-clock milliseconds since the Unix epoch, plus a test offset.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock::default()
    }

    pub fn now_ms(&self) -> i64 {
        system_now_ms() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Moves this clock (and every clone of it) forward.
    pub fn advance(&self, d: std::time::Duration) {
        self.offset_ms
            .fetch_add(d.as_millis() as i64, Ordering::Relaxed);
    }
}

pub fn system_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 UTC with seconds, e.g. `2026-11-21T15:03:18Z`, rounded down: for deadlines
/// (`expires_at`), so acting before the announced second is always in time.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// RFC 3339 UTC with seconds, rounded up: for the earliest time something is allowed
/// (`resend_available_at`), so acting at the announced second is never too early.
pub fn rfc3339_ceil(ms: i64) -> String {
    rfc3339(ms.div_euclid(1000) * 1000 + if ms.rem_euclid(1000) == 0 { 0 } else { 1000 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_times_round_toward_safety() {
        // 2025-11-21T15:03:18.001Z
        let ms = 1_763_737_398_001;
        assert_eq!(rfc3339(ms), "2025-11-21T15:03:18Z");
        assert_eq!(rfc3339_ceil(ms), "2025-11-21T15:03:19Z");
        assert_eq!(rfc3339_ceil(ms - 1), "2025-11-21T15:03:18Z");
    }
}
