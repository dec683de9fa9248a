//! The semantics of a `COUNT/WINDOW` rule, as pure functions on plain data.
//!
//! A rule lets at most `count` events through in any `window`: it keeps the times of the
//! events it let through (newest first, at most `count` of them), and refuses an event while
//! the `count`-th newest is younger than `window`; a refused event leaves no trace. The wait
//! announced with a refusal is exact: at `now + retry_after` the oldest of those events has left
//! the window, so the same request passes (unless something else was let through meanwhile).
//!
//! Why a sliding log and not GCRA (governor): `"5/1h"` is read by operators, and by contract §6
//! ("once 10 wrong codes fell within the hour"), as "no more than 5 in any hour". GCRA with a
//! burst of 5 refills one cell every 12 minutes, so it lets up to 9 through in one hour. The
//! log is exact, costs `count` timestamps per subject and rule, and is the same few lines in
//! Rust (memory store) and Lua (Redis), both tested by one suite.

use super::config::RateSpec;

/// The names a refusal carries (contract §6 "`limit` names").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitName {
    PerPhone,
    PerAccount,
    PerIp,
    AccountFailures,
    PerCountry,
    PumpingGuard,
}

impl LimitName {
    pub const ALL: [LimitName; 6] = [
        LimitName::PerPhone,
        LimitName::PerAccount,
        LimitName::PerIp,
        LimitName::AccountFailures,
        LimitName::PerCountry,
        LimitName::PumpingGuard,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LimitName::PerPhone => "per_phone",
            LimitName::PerAccount => "per_account",
            LimitName::PerIp => "per_ip",
            LimitName::AccountFailures => "account_failures",
            LimitName::PerCountry => "per_country",
            LimitName::PumpingGuard => "pumping_guard",
        }
    }
}

/// A rule as the engines apply it: milliseconds, and whether a pass also records the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub count: u32,
    pub window_ms: i64,
}

impl From<RateSpec> for Rule {
    fn from(r: RateSpec) -> Rule {
        Rule {
            count: r.count.max(1),
            window_ms: i64::try_from(r.window.as_millis())
                .unwrap_or(i64::MAX)
                .max(1),
        }
    }
}

/// `Some(wait_ms)` when `log` (event times, newest first) leaves no room for one more event
/// at `now_ms`; the wait is > 0 and exact.
pub fn refusal(log: &[i64], rule: Rule, now_ms: i64) -> Option<i64> {
    let n = rule.count as usize;
    let oldest_counted = *log.get(n - 1)?;
    let free_at = oldest_counted.saturating_add(rule.window_ms);
    (free_at > now_ms).then(|| free_at - now_ms)
}

/// Records an event at `now_ms` in `log` (newest first), keeping at most `count` entries.
pub fn record(log: &mut Vec<i64>, rule: Rule, now_ms: i64) {
    log.insert(0, now_ms);
    log.truncate(rule.count as usize);
}

/// Whether `log` still matters at `now_ms` (else it may be forgotten).
pub fn is_live(log: &[i64], rule: Rule, now_ms: i64) -> bool {
    log.first()
        .is_some_and(|newest| newest.saturating_add(rule.window_ms) > now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Rule = Rule {
        count: 3,
        window_ms: 1000,
    };

    /// Lets events through at the given times; returns what each attempt answered.
    fn run(times: &[i64]) -> Vec<Option<i64>> {
        let mut log = Vec::new();
        times
            .iter()
            .map(|&t| {
                let r = refusal(&log, R, t);
                if r.is_none() {
                    record(&mut log, R, t);
                }
                r
            })
            .collect()
    }

    #[test]
    fn at_most_count_in_any_window() {
        assert_eq!(
            run(&[0, 10, 20, 30, 999, 1000, 1005, 1010, 1011]),
            vec![
                None,
                None,
                None,
                Some(970),
                Some(1),
                None,
                Some(5),
                None,
                Some(9)
            ]
        );
    }

    #[test]
    fn the_announced_wait_is_exact() {
        let mut log = Vec::new();
        for t in [0, 100, 200] {
            record(&mut log, R, t);
        }
        let wait = refusal(&log, R, 500).expect("refused");
        assert_eq!(refusal(&log, R, 500 + wait - 1), Some(1));
        assert_eq!(refusal(&log, R, 500 + wait), None);
    }

    #[test]
    fn refusals_count_for_nothing() {
        // Hammering while refused does not push the next free time back.
        let mut answers = run(&[0, 1, 2]);
        let mut log = vec![2, 1, 0];
        for t in 3..1000 {
            answers.push(refusal(&log, R, t));
        }
        assert!(answers[3..].iter().all(Option::is_some));
        assert_eq!(refusal(&log, R, 1000), None);
        record(&mut log, R, 1000);
        assert_eq!(log, vec![1000, 2, 1]);
    }

    #[test]
    fn a_log_is_forgotten_after_its_window() {
        let log = vec![500, 100];
        assert!(is_live(&log, R, 1499));
        assert!(!is_live(&log, R, 1500));
        assert!(!is_live(&[], R, 0));
    }
}
