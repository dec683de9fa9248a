//! What a request asks of the limits, and the in-process engine (memory store).
//!
//! A request names its [`Charge`]s: for each rule that applies, the subject's counter and
//! whether it is checked, recorded, or both. The engine checks every charge first and records
//! only when all pass (and, with [`MemoryLimits::apply_with`], only when the state change it
//! guards succeeded): a refused request counts for nothing. The Redis engine does the same in
//! the request's script (one round trip, see `store/lua/`).

use std::collections::HashMap;
use std::sync::Mutex;

use super::pumping::{Guard, RangeState, Verdict};
use super::window::{self, LimitName, Rule};

/// How a charge uses its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Refuse when full; record when the request goes through.
    CheckAndRecord,
    /// Refuse when full; record nothing (`account_failures` at creation).
    Check,
    /// Record without refusing (`account_failures` on a wrong code).
    Record,
}

/// One rule applied to one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub limit: LimitName,
    /// The counter: a keyed hash of the subject and the rule (never a phone number or an IP).
    pub key: String,
    pub rule: Rule,
    pub mode: Mode,
}

/// A refusal: which limit, and when a retry passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub limit: LimitName,
    pub retry_after_ms: i64,
}

impl Refused {
    /// Whole seconds, rounded up: a retry after that many seconds passes.
    pub fn retry_after_s(&self) -> u64 {
        (self.retry_after_ms.max(1) as u64).div_ceil(1000)
    }
}

/// Of several refusals, the one to report: the longest wait (a retry before it would fail).
pub fn worst(refusals: impl IntoIterator<Item = Refused>) -> Option<Refused> {
    refusals.into_iter().max_by_key(|r| r.retry_after_ms)
}

/// What a code check did, for the limits: a wrong code was counted, or the code approved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckEffect {
    pub failed: bool,
    pub approved: bool,
}

/// The pumping guard's part of a request: the range of the number a code SMS goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeCharge {
    pub range: String,
}

#[derive(Default)]
struct State {
    logs: HashMap<String, (Rule, Vec<i64>)>,
    ranges: HashMap<String, RangeState>,
}

/// The in-process engine: one lock over every counter, held for microseconds.
pub struct MemoryLimits {
    guard: Option<Guard>,
    state: Mutex<State>,
}

impl MemoryLimits {
    pub fn new(guard: Option<Guard>) -> MemoryLimits {
        MemoryLimits {
            guard,
            state: Mutex::new(State::default()),
        }
    }

    /// Checks every charge (and the range, when given); when all pass, runs `change` under the
    /// same lock and records the charges only if it succeeded.
    pub fn apply_with<T, E>(
        &self,
        charges: &[Charge],
        range: Option<&RangeCharge>,
        now_ms: i64,
        change: impl FnOnce() -> Result<T, E>,
    ) -> Result<Result<T, E>, Refused> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let refused = worst(
            charges
                .iter()
                .filter(|c| c.mode != Mode::Record)
                .filter_map(|c| {
                    let log = st.logs.get(&c.key).map_or(&[][..], |(_, l)| l.as_slice());
                    window::refusal(log, c.rule, now_ms).map(|w| Refused {
                        limit: c.limit,
                        retry_after_ms: w,
                    })
                }),
        );
        if let Some(r) = refused {
            // A range already closed may hold the request longer than the rule that refused:
            // announce the longer wait, so a retry at that time passes (nothing is changed).
            let closed = match (&self.guard, range) {
                (Some(_), Some(rc)) => st.ranges.get(&rc.range).map_or(0, |s| s.closed_until_ms),
                _ => 0,
            };
            return Err(if closed - now_ms > r.retry_after_ms {
                Refused {
                    limit: LimitName::PumpingGuard,
                    retry_after_ms: closed - now_ms,
                }
            } else {
                r
            });
        }
        if let (Some(g), Some(rc)) = (&self.guard, range) {
            match st
                .ranges
                .entry(rc.range.clone())
                .or_default()
                .judge(g, now_ms)
            {
                Verdict::Open => {}
                Verdict::Closes { retry_after_ms } => {
                    super::range_closed(&rc.range);
                    return Err(Refused {
                        limit: LimitName::PumpingGuard,
                        retry_after_ms,
                    });
                }
                Verdict::Closed { retry_after_ms } => {
                    return Err(Refused {
                        limit: LimitName::PumpingGuard,
                        retry_after_ms,
                    });
                }
            }
        }
        let out = change();
        if out.is_ok() {
            for c in charges.iter().filter(|c| c.mode != Mode::Check) {
                let (_, log) = st
                    .logs
                    .entry(c.key.clone())
                    .or_insert_with(|| (c.rule, Vec::new()));
                window::record(log, c.rule, now_ms);
            }
            if let (Some(g), Some(rc)) = (&self.guard, range) {
                st.ranges
                    .entry(rc.range.clone())
                    .or_default()
                    .record_sent(g, now_ms);
            }
        }
        Ok(out)
    }

    /// Runs a code check (`change`) under the limits lock; records `failure` when the check
    /// says a wrong code was counted, and an approval in `range` when it approved.
    pub fn after_check<T>(
        &self,
        failure: Option<&Charge>,
        range: Option<&RangeCharge>,
        now_ms: i64,
        change: impl FnOnce() -> (T, CheckEffect),
    ) -> T {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (out, effect) = change();
        if effect.failed
            && let Some(c) = failure
        {
            let (_, log) = st
                .logs
                .entry(c.key.clone())
                .or_insert_with(|| (c.rule, Vec::new()));
            window::record(log, c.rule, now_ms);
        }
        if effect.approved
            && let (Some(g), Some(rc)) = (&self.guard, range)
        {
            st.ranges
                .entry(rc.range.clone())
                .or_default()
                .record_approved(g, now_ms);
        }
        out
    }

    /// Checks and records `charges` with nothing else to guard.
    pub fn apply(
        &self,
        charges: &[Charge],
        range: Option<&RangeCharge>,
        now_ms: i64,
    ) -> Result<(), Refused> {
        self.apply_with(charges, range, now_ms, || Ok::<(), ()>(()))
            .map(|_| ())
    }

    /// A code to this range was approved (the pumping guard's other count).
    pub fn approved(&self, range: &RangeCharge, now_ms: i64) {
        if let Some(g) = &self.guard {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.ranges
                .entry(range.range.clone())
                .or_default()
                .record_approved(g, now_ms);
        }
    }

    /// Forgets counters that no longer matter.
    pub fn sweep(&self, now_ms: i64) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.logs
            .retain(|_, (rule, log)| window::is_live(log, *rule, now_ms));
        if let Some(g) = &self.guard {
            st.ranges.retain(|_, r| r.is_live(g, now_ms));
        } else {
            st.ranges.clear();
        }
    }

    /// Counters held (for tests and the memory benchmark).
    pub fn len(&self) -> usize {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.logs.len() + st.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(limit: LimitName, key: &str, count: u32, mode: Mode) -> Charge {
        Charge {
            limit,
            key: key.into(),
            rule: Rule {
                count,
                window_ms: 1000,
            },
            mode,
        }
    }

    #[test]
    fn a_request_refused_by_one_rule_consumes_none() {
        let l = MemoryLimits::new(None);
        let phone = charge(LimitName::PerPhone, "p", 5, Mode::CheckAndRecord);
        let ip = charge(LimitName::PerIp, "i", 1, Mode::CheckAndRecord);
        assert_eq!(l.apply(&[phone.clone(), ip.clone()], None, 0), Ok(()));
        // The IP is full: the phone's counter must not move.
        for t in 1..10 {
            assert_eq!(
                l.apply(&[phone.clone(), ip.clone()], None, t),
                Err(Refused {
                    limit: LimitName::PerIp,
                    retry_after_ms: 1000 - t
                })
            );
        }
        // 4 more for the phone alone: exactly its count of 5 with the first.
        for t in 10..14 {
            assert_eq!(l.apply(std::slice::from_ref(&phone), None, t), Ok(()));
        }
        assert!(l.apply(std::slice::from_ref(&phone), None, 14).is_err());
    }

    #[test]
    fn a_failed_change_records_nothing() {
        let l = MemoryLimits::new(None);
        let c = charge(LimitName::PerAccount, "a", 1, Mode::CheckAndRecord);
        let r = l.apply_with(std::slice::from_ref(&c), None, 0, || Err::<(), _>("no"));
        assert_eq!(r, Ok(Err("no")));
        assert_eq!(l.apply(std::slice::from_ref(&c), None, 1), Ok(()));
    }

    #[test]
    fn check_only_and_record_only() {
        let l = MemoryLimits::new(None);
        let rec = charge(LimitName::AccountFailures, "f", 2, Mode::Record);
        let chk = charge(LimitName::AccountFailures, "f", 2, Mode::Check);
        assert_eq!(l.apply(std::slice::from_ref(&chk), None, 0), Ok(()));
        assert_eq!(
            l.apply(std::slice::from_ref(&chk), None, 0),
            Ok(()),
            "checks record nothing"
        );
        l.apply(std::slice::from_ref(&rec), None, 1)
            .expect("records never refuse");
        l.apply(std::slice::from_ref(&rec), None, 2)
            .expect("records never refuse");
        l.apply(std::slice::from_ref(&rec), None, 3)
            .expect("records never refuse");
        assert_eq!(
            l.apply(std::slice::from_ref(&chk), None, 4),
            Err(Refused {
                limit: LimitName::AccountFailures,
                retry_after_ms: 998
            })
        );
    }

    #[test]
    fn the_longest_wait_is_reported() {
        let l = MemoryLimits::new(None);
        let a = charge(LimitName::PerPhone, "a", 1, Mode::CheckAndRecord);
        let mut b = charge(LimitName::PerIp, "b", 1, Mode::CheckAndRecord);
        b.rule.window_ms = 5000;
        l.apply(&[a.clone(), b.clone()], None, 0).expect("first");
        assert_eq!(
            l.apply(&[a, b], None, 10),
            Err(Refused {
                limit: LimitName::PerIp,
                retry_after_ms: 4990
            })
        );
    }

    #[test]
    fn sweeping_forgets_old_counters() {
        let l = MemoryLimits::new(None);
        let c = charge(LimitName::PerPhone, "p", 1, Mode::CheckAndRecord);
        l.apply(std::slice::from_ref(&c), None, 0).expect("first");
        l.sweep(999);
        assert_eq!(l.len(), 1);
        l.sweep(1000);
        assert!(l.is_empty());
    }
}
