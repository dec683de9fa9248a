//! The SMS-pumping guard's rule (`[limits.pumping_guard]`), as pure functions on plain data.
//!
//! Toll fraud sends code SMS to premium or attacker-owned ranges and never uses the codes. Per
//! number range (the first `prefix_digits` digits of the E.164 number) the guard compares code
//! SMS sent with codes approved over `window`; past `min_sent`, an approval ratio below
//! `min_approval_ratio` closes the range to new code SMS for `cool_off`.
//!
//! Counts are kept in [`SLOTS`] time slots of `window / SLOTS` each, so the window slides in
//! steps of a twelfth and a range costs a fixed, small amount of memory.

use super::config::PumpingGuardConfig;

/// Time slots per window.
pub const SLOTS: usize = 12;

/// What the guard needs of its config, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guard {
    pub prefix_digits: usize,
    pub window_ms: i64,
    pub min_sent: u32,
    pub min_approval_ratio: f64,
    pub cool_off_ms: i64,
}

impl Guard {
    pub fn from_config(c: &PumpingGuardConfig) -> Option<Guard> {
        c.enabled.then(|| Guard {
            prefix_digits: c.prefix_digits,
            window_ms: i64::try_from(c.window.as_millis())
                .unwrap_or(i64::MAX)
                .max(SLOTS as i64),
            min_sent: c.min_sent,
            min_approval_ratio: c.min_approval_ratio,
            cool_off_ms: i64::try_from(c.cool_off.as_millis()).unwrap_or(i64::MAX),
        })
    }

    /// The range of an E.164 number (`+8536612…` → `853661` for 6 digits).
    pub fn range_of<'a>(&self, e164: &'a str) -> &'a str {
        let digits = e164.trim_start_matches('+');
        let end = digits
            .char_indices()
            .nth(self.prefix_digits)
            .map_or(digits.len(), |(i, _)| i);
        &digits[..end]
    }

    pub fn slot_ms(&self) -> i64 {
        (self.window_ms / SLOTS as i64).max(1)
    }
}

/// One slot: the slot number it holds counts for, code SMS sent, codes approved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slot {
    pub index: i64,
    pub sent: u32,
    pub approved: u32,
}

/// A range's counts and its closure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeState {
    pub slots: [Slot; SLOTS],
    /// The range is closed to code SMS until then (0: open).
    pub closed_until_ms: i64,
}

/// What the guard says about one more code SMS to a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Open,
    /// Closed now, by this call (log and count it once).
    Closes {
        retry_after_ms: i64,
    },
    /// Closed earlier, still cooling off.
    Closed {
        retry_after_ms: i64,
    },
}

impl RangeState {
    fn slot_mut(&mut self, g: &Guard, now_ms: i64) -> &mut Slot {
        let index = now_ms.div_euclid(g.slot_ms());
        let s = &mut self.slots[index.rem_euclid(SLOTS as i64) as usize];
        if s.index != index {
            *s = Slot {
                index,
                sent: 0,
                approved: 0,
            };
        }
        s
    }

    /// (sent, approved) over the window ending at `now_ms`.
    pub fn totals(&self, g: &Guard, now_ms: i64) -> (u64, u64) {
        let current = now_ms.div_euclid(g.slot_ms());
        self.slots
            .iter()
            .filter(|s| s.index > current - SLOTS as i64 && s.index <= current)
            .fold((0, 0), |(a, b), s| {
                (a + s.sent as u64, b + s.approved as u64)
            })
    }

    /// Judges one more code SMS to this range; closes the range when its codes go unused.
    pub fn judge(&mut self, g: &Guard, now_ms: i64) -> Verdict {
        if self.closed_until_ms > now_ms {
            return Verdict::Closed {
                retry_after_ms: self.closed_until_ms - now_ms,
            };
        }
        let (sent, approved) = self.totals(g, now_ms);
        if sent >= g.min_sent as u64
            && sent > 0
            && (approved as f64) < g.min_approval_ratio * sent as f64
        {
            self.closed_until_ms = now_ms.saturating_add(g.cool_off_ms);
            // A fresh start after the cool-off: old traffic does not close it again at once.
            self.slots = Default::default();
            return Verdict::Closes {
                retry_after_ms: g.cool_off_ms,
            };
        }
        Verdict::Open
    }

    pub fn record_sent(&mut self, g: &Guard, now_ms: i64) {
        self.slot_mut(g, now_ms).sent += 1;
    }

    pub fn record_approved(&mut self, g: &Guard, now_ms: i64) {
        self.slot_mut(g, now_ms).approved += 1;
    }

    /// Whether anything here still matters at `now_ms`.
    pub fn is_live(&self, g: &Guard, now_ms: i64) -> bool {
        self.closed_until_ms > now_ms || self.totals(g, now_ms).0 > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Guard = Guard {
        prefix_digits: 6,
        window_ms: 12_000,
        min_sent: 10,
        min_approval_ratio: 0.2,
        cool_off_ms: 5_000,
    };

    #[test]
    fn ranges_are_the_first_digits() {
        assert_eq!(G.range_of("+85366123456"), "853661");
        assert_eq!(G.range_of("+8536"), "8536");
    }

    #[test]
    fn unused_codes_close_the_range_for_the_cool_off() {
        let mut r = RangeState::default();
        for t in 0..10 {
            assert_eq!(r.judge(&G, t * 100), Verdict::Open, "below min_sent");
            r.record_sent(&G, t * 100);
        }
        assert_eq!(
            r.judge(&G, 1000),
            Verdict::Closes {
                retry_after_ms: 5000
            }
        );
        assert_eq!(
            r.judge(&G, 1001),
            Verdict::Closed {
                retry_after_ms: 4999
            }
        );
        assert_eq!(r.judge(&G, 6000), Verdict::Open, "open after the cool-off");
    }

    #[test]
    fn used_codes_keep_the_range_open() {
        let mut r = RangeState::default();
        for t in 0..50 {
            assert_eq!(r.judge(&G, t * 100), Verdict::Open);
            r.record_sent(&G, t * 100);
            if t % 5 == 0 {
                r.record_approved(&G, t * 100 + 50);
            }
        }
        // 10 approved of 50 = 0.2: not below the ratio.
        assert_eq!(r.judge(&G, 5000), Verdict::Open);
    }

    #[test]
    fn the_window_slides() {
        let mut r = RangeState::default();
        for t in 0..9 {
            r.record_sent(&G, t);
        }
        // 12 s later those 9 have left the window.
        for t in 0..9 {
            r.record_sent(&G, 12_000 + t);
        }
        assert_eq!(r.totals(&G, 12_010), (9, 0));
        assert_eq!(r.judge(&G, 12_010), Verdict::Open);
        assert!(!r.is_live(&G, 30_000));
    }
}
