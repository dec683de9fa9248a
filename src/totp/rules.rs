//! The `confirm` and `check` decisions (contract §3.5, §6), on plain data.
//!
//! [`decide`] is the one place the rules live: the memory store runs it under its lock, the
//! Redis script mirrors it. Which time steps the code matched is computed beforehand, off the
//! store, by [`super::secret::TotpSecret::matching_steps`]; the store only learns the steps.
//!
//! - A code is good for the current step ±1, and only for a step later than the last one
//!   used (a replay is refused with 422 and does not count as a wrong try).
//! - `max_attempts` wrong codes in a row lock it: the one that uses the last attempt answers
//!   423, and so does every code until `otp.ttl` has passed. After that a right code approves
//!   and clears the count; a wrong one is one more in the same row, so it locks again at once
//!   (the lock lifts only with a right code after `otp.ttl`).
//! - `confirm` turns a pending enrolment active and uses up its step (423 on its last attempt
//!   too); `check` needs an active one.

/// An enrolment's status as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TotpStatus {
    /// Enrolled, not yet confirmed with a code.
    Pending,
    Active,
}

impl TotpStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TotpStatus::Pending => "pending",
            TotpStatus::Active => "active",
        }
    }

    pub fn parse(s: &str) -> Option<TotpStatus> {
        [TotpStatus::Pending, TotpStatus::Active]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

/// The part of a stored enrolment that `confirm` and `check` read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpState {
    pub status: TotpStatus,
    /// The last time step a code was accepted for; codes of this step or earlier are refused.
    pub last_step: Option<u64>,
    /// Wrong codes in a row since the last right one.
    pub failures: u32,
    /// Set when the row reached `max_attempts`: codes are refused until then.
    pub locked_until_ms: Option<i64>,
    pub max_attempts: u32,
}

impl TotpState {
    /// A fresh (pending) enrolment.
    pub fn enrolled(max_attempts: u32) -> TotpState {
        TotpState {
            status: TotpStatus::Pending,
            last_step: None,
            failures: 0,
            locked_until_ms: None,
            max_attempts,
        }
    }

    fn attempts_remaining(&self) -> u32 {
        self.max_attempts.saturating_sub(self.failures)
    }
}

/// `POST …/totp/confirm` or `POST …/totp/check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpOp {
    Confirm,
    Check,
}

/// The answer to one `confirm` or `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpOutcome {
    /// `confirm`: 200 `{"status": "active"}`; `step` is now used up.
    Activated { step: u64 },
    /// `check`: 200 `{"status": "approved"}`; `step` is now used up.
    Approved { step: u64 },
    /// 422 `code_incorrect`: no step of the window matched.
    Incorrect { attempts_remaining: u32 },
    /// 422 `code_incorrect`: the code is right but its step is not later than the last used.
    Replayed { attempts_remaining: u32 },
    /// 423 `too_many_attempts`: this wrong code used the last attempt.
    LockedNow { locked_until_ms: i64 },
    /// 423 `too_many_attempts`: locked before this code (whatever it was).
    Locked { locked_until_ms: i64 },
    /// `check` on an enrolment not yet confirmed.
    NotActive,
    /// `confirm` on an enrolment already active.
    AlreadyActive,
}

/// What to answer and what to write back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpDecision {
    pub outcome: TotpOutcome,
    /// The new state to store; `None`: nothing changes.
    pub next: Option<TotpState>,
}

fn answer(outcome: TotpOutcome) -> TotpDecision {
    TotpDecision {
        outcome,
        next: None,
    }
}

/// Decides `op` on an enrolment in `state`, given the steps the presented code matched
/// (among the current step ±1), at `now_ms`; `lock_ms` is `otp.ttl`.
pub fn decide(
    state: &TotpState,
    op: TotpOp,
    matched_steps: &[u64],
    now_ms: i64,
    lock_ms: i64,
) -> TotpDecision {
    match (op, state.status) {
        (TotpOp::Check, TotpStatus::Pending) => return answer(TotpOutcome::NotActive),
        (TotpOp::Confirm, TotpStatus::Active) => return answer(TotpOutcome::AlreadyActive),
        (TotpOp::Check, TotpStatus::Active) | (TotpOp::Confirm, TotpStatus::Pending) => {}
    }
    if let Some(until) = state.locked_until_ms
        && now_ms < until
    {
        return answer(TotpOutcome::Locked {
            locked_until_ms: until,
        });
    }
    let fresh = matched_steps
        .iter()
        .copied()
        .filter(|s| state.last_step.is_none_or(|last| *s > last))
        .max();
    if let Some(step) = fresh {
        let next = TotpState {
            status: TotpStatus::Active,
            last_step: Some(step),
            failures: 0,
            locked_until_ms: None,
            max_attempts: state.max_attempts,
        };
        let outcome = match op {
            TotpOp::Confirm => TotpOutcome::Activated { step },
            TotpOp::Check => TotpOutcome::Approved { step },
        };
        return TotpDecision {
            outcome,
            next: Some(next),
        };
    }
    if !matched_steps.is_empty() {
        return answer(TotpOutcome::Replayed {
            attempts_remaining: state.attempts_remaining(),
        });
    }
    let failures = state.failures.saturating_add(1);
    if failures >= state.max_attempts {
        let until = now_ms + lock_ms;
        return TotpDecision {
            outcome: TotpOutcome::LockedNow {
                locked_until_ms: until,
            },
            next: Some(TotpState {
                failures,
                locked_until_ms: Some(until),
                ..*state
            }),
        };
    }
    TotpDecision {
        outcome: TotpOutcome::Incorrect {
            attempts_remaining: state.max_attempts - failures,
        },
        next: Some(TotpState { failures, ..*state }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const TTL: i64 = 300_000;
    const STEP: u64 = 60_000_000; // step of NOW

    fn active(last: u64) -> TotpState {
        TotpState {
            status: TotpStatus::Active,
            last_step: Some(last),
            ..TotpState::enrolled(3)
        }
    }

    #[test]
    fn confirm_activates_and_uses_up_its_step() {
        let d = decide(&TotpState::enrolled(3), TotpOp::Confirm, &[STEP], NOW, TTL);
        assert_eq!(d.outcome, TotpOutcome::Activated { step: STEP });
        let s = d.next.unwrap();
        assert_eq!(s.status, TotpStatus::Active);
        assert_eq!(s.last_step, Some(STEP));
        // The same code at check: a replay.
        let d = decide(&s, TotpOp::Check, &[STEP], NOW, TTL);
        assert_eq!(
            d.outcome,
            TotpOutcome::Replayed {
                attempts_remaining: 3
            }
        );
        assert_eq!(d.next, None);
        // Confirm again: already active.
        assert_eq!(
            decide(&s, TotpOp::Confirm, &[STEP + 1], NOW, TTL).outcome,
            TotpOutcome::AlreadyActive
        );
    }

    #[test]
    fn check_needs_an_active_enrolment() {
        let d = decide(&TotpState::enrolled(3), TotpOp::Check, &[STEP], NOW, TTL);
        assert_eq!(d, answer(TotpOutcome::NotActive));
    }

    #[test]
    fn only_steps_later_than_the_last_used_are_accepted() {
        let s = active(STEP);
        for earlier in [STEP - 1, STEP] {
            assert!(matches!(
                decide(&s, TotpOp::Check, &[earlier], NOW, TTL).outcome,
                TotpOutcome::Replayed { .. }
            ));
        }
        let d = decide(&s, TotpOp::Check, &[STEP + 1], NOW, TTL);
        assert_eq!(d.outcome, TotpOutcome::Approved { step: STEP + 1 });
        assert_eq!(d.next.unwrap().last_step, Some(STEP + 1));
        // A code that matched two steps: the later fresh one is used up.
        let d = decide(&s, TotpOp::Check, &[STEP - 1, STEP + 1], NOW, TTL);
        assert_eq!(d.outcome, TotpOutcome::Approved { step: STEP + 1 });
    }

    #[test]
    fn wrong_codes_in_a_row_lock_and_a_right_one_clears_the_row() {
        let mut s = active(STEP - 10);
        for remaining in [2, 1] {
            let d = decide(&s, TotpOp::Check, &[], NOW, TTL);
            assert_eq!(
                d.outcome,
                TotpOutcome::Incorrect {
                    attempts_remaining: remaining
                }
            );
            s = d.next.unwrap();
        }
        // A right code before the last attempt clears the row.
        let cleared = decide(&s, TotpOp::Check, &[STEP], NOW, TTL).next.unwrap();
        assert_eq!(cleared.failures, 0);
        // Without it, the third wrong code locks.
        let d = decide(&s, TotpOp::Check, &[], NOW, TTL);
        assert_eq!(
            d.outcome,
            TotpOutcome::LockedNow {
                locked_until_ms: NOW + TTL
            }
        );
        assert_eq!(d.next.unwrap().locked_until_ms, Some(NOW + TTL));
    }

    #[test]
    fn the_lock_lifts_only_with_a_right_code_after_the_ttl() {
        let mut s = active(STEP - 10);
        for _ in 0..3 {
            s = decide(&s, TotpOp::Check, &[], NOW, TTL).next.unwrap();
        }
        let locked = TotpOutcome::Locked {
            locked_until_ms: NOW + TTL,
        };
        // During the lock: 423 for right and wrong codes alike, nothing changes.
        for steps in [&[STEP][..], &[]] {
            let d = decide(&s, TotpOp::Check, steps, NOW + TTL - 1, TTL);
            assert_eq!(d, answer(locked));
        }
        // After it, a wrong code is one more in the row: locked again at once.
        let later = NOW + TTL;
        let d = decide(&s, TotpOp::Check, &[], later, TTL);
        assert_eq!(
            d.outcome,
            TotpOutcome::LockedNow {
                locked_until_ms: later + TTL
            }
        );
        // A right code after the lock approves and clears it.
        let later_step = later as u64 / 30_000;
        let d = decide(&s, TotpOp::Check, &[later_step], later, TTL);
        assert_eq!(d.outcome, TotpOutcome::Approved { step: later_step });
        let n = d.next.unwrap();
        assert_eq!((n.failures, n.locked_until_ms), (0, None));
    }

    #[test]
    fn confirm_locks_on_its_last_attempt_too() {
        let mut s = TotpState::enrolled(2);
        let d = decide(&s, TotpOp::Confirm, &[], NOW, TTL);
        assert_eq!(
            d.outcome,
            TotpOutcome::Incorrect {
                attempts_remaining: 1
            }
        );
        s = d.next.unwrap();
        let d = decide(&s, TotpOp::Confirm, &[], NOW, TTL);
        assert!(matches!(d.outcome, TotpOutcome::LockedNow { .. }));
        assert_eq!(d.next.unwrap().status, TotpStatus::Pending);
    }

    #[test]
    fn statuses_round_trip() {
        for s in [TotpStatus::Pending, TotpStatus::Active] {
            assert_eq!(TotpStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(TotpStatus::parse("locked"), None);
    }
}
