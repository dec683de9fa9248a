//! The redeem decision (contract §3.4, §6), on plain data.
//!
//! [`decide`] is the one place the rules live. The memory store runs it under its lock; the
//! Redis script mirrors it line by line (its tests run against both stores). Whether the
//! presented code and entity number matched is computed beforehand, off the store, by
//! [`super::codes::ActivationKeys::presented_matches`]; the store only learns the boolean.
//!
//! No oracle for whether an application number exists: every mismatch answers the same
//! [`RedeemOutcome::Incorrect`] (422, no `attempts_remaining`), whether the number is unknown,
//! or the entity number or the code was wrong, and whatever the activation's status. Only a
//! matching code learns that an activation was redeemed (409) or expired (410). The lock is
//! the one thing an unknown number can never show: it never locks.

/// An activation's status as stored. `Expired` is never stored: [`ActivationState::status_at`]
/// shows it for a pending activation past its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActivationStatus {
    Pending,
    Redeemed,
    /// Too many wrong tries; for good.
    Locked,
    /// Replaced by a newer activation for the same account.
    Canceled,
    Expired,
}

impl ActivationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ActivationStatus::Pending => "pending",
            ActivationStatus::Redeemed => "redeemed",
            ActivationStatus::Locked => "locked",
            ActivationStatus::Canceled => "canceled",
            ActivationStatus::Expired => "expired",
        }
    }

    /// The inverse of [`as_str`](Self::as_str) (for reading a stored status).
    pub fn parse(s: &str) -> Option<ActivationStatus> {
        [
            ActivationStatus::Pending,
            ActivationStatus::Redeemed,
            ActivationStatus::Locked,
            ActivationStatus::Canceled,
            ActivationStatus::Expired,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// The part of a stored activation a redeem reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivationState {
    pub status: ActivationStatus,
    pub expires_at_ms: i64,
    /// Wrong tries so far (wrong code or wrong entity number alike).
    pub attempts_used: u32,
    pub max_attempts: u32,
}

impl ActivationState {
    /// A fresh activation.
    pub fn issued(now_ms: i64, ttl_ms: i64, max_attempts: u32) -> ActivationState {
        ActivationState {
            status: ActivationStatus::Pending,
            expires_at_ms: now_ms + ttl_ms,
            attempts_used: 0,
            max_attempts,
        }
    }

    /// The status to show at `now_ms` (`GET /v1/activations/{id}`).
    pub fn status_at(&self, now_ms: i64) -> ActivationStatus {
        match self.status {
            ActivationStatus::Pending if now_ms >= self.expires_at_ms => ActivationStatus::Expired,
            s => s,
        }
    }
}

/// The answer to one redeem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeemOutcome {
    /// 200: redeemed just now.
    Redeemed,
    /// A mismatch. `locks: false` → 422 `code_incorrect` without `attempts_remaining`;
    /// `locks: true` → this try used the last attempt: 423 `too_many_attempts`.
    Incorrect { locks: bool },
    /// 423: locked before this try (whatever was presented).
    Locked,
    /// 410: the right code, too late.
    Expired,
    /// 409: the right code, already redeemed.
    AlreadyUsed,
}

/// What to answer and what to write back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedeemDecision {
    pub outcome: RedeemOutcome,
    /// The new state to store; `None`: nothing changes.
    pub next: Option<ActivationState>,
}

impl RedeemDecision {
    fn answer(outcome: RedeemOutcome) -> RedeemDecision {
        RedeemDecision {
            outcome,
            next: None,
        }
    }
}

/// Decides a redeem of the activation found for the presented application number (`None`:
/// none found) given whether the presented code and entity number `matched` it, at `now_ms`.
///
/// - Locked: 423 whatever was presented.
/// - A mismatch on a pending, unexpired activation uses an attempt; the one that uses the
///   last locks it and answers 423. A mismatch on anything else (unknown, expired, redeemed,
///   canceled) changes nothing and answers the same 422, so none of those can be told apart
///   and none of them can be made to lock.
/// - A match: redeemed (once), else 409 after redemption, 410 after expiry. A canceled
///   activation's code is no longer a code: 422.
pub fn decide(state: Option<&ActivationState>, matched: bool, now_ms: i64) -> RedeemDecision {
    let Some(s) = state else {
        return RedeemDecision::answer(RedeemOutcome::Incorrect { locks: false });
    };
    let status = s.status_at(now_ms);
    match (status, matched) {
        (ActivationStatus::Locked, _) => RedeemDecision::answer(RedeemOutcome::Locked),
        (ActivationStatus::Pending, true) => RedeemDecision {
            outcome: RedeemOutcome::Redeemed,
            next: Some(ActivationState {
                status: ActivationStatus::Redeemed,
                ..*s
            }),
        },
        (ActivationStatus::Pending, false) => {
            let used = s.attempts_used.saturating_add(1);
            let locks = used >= s.max_attempts;
            RedeemDecision {
                outcome: RedeemOutcome::Incorrect { locks },
                next: Some(ActivationState {
                    status: if locks {
                        ActivationStatus::Locked
                    } else {
                        ActivationStatus::Pending
                    },
                    attempts_used: used,
                    ..*s
                }),
            }
        }
        (ActivationStatus::Redeemed, true) => RedeemDecision::answer(RedeemOutcome::AlreadyUsed),
        (ActivationStatus::Expired, true) => RedeemDecision::answer(RedeemOutcome::Expired),
        (ActivationStatus::Canceled, _)
        | (ActivationStatus::Redeemed, false)
        | (ActivationStatus::Expired, false) => {
            RedeemDecision::answer(RedeemOutcome::Incorrect { locks: false })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn pending() -> ActivationState {
        ActivationState::issued(NOW, 7 * 86_400_000, 3)
    }

    #[test]
    fn the_right_code_redeems_once() {
        let d = decide(Some(&pending()), true, NOW);
        assert_eq!(d.outcome, RedeemOutcome::Redeemed);
        let next = d.next.unwrap();
        assert_eq!(next.status, ActivationStatus::Redeemed);
        let again = decide(Some(&next), true, NOW + 1);
        assert_eq!(again.outcome, RedeemOutcome::AlreadyUsed);
        assert_eq!(again.next, None);
    }

    #[test]
    fn wrong_tries_lock_on_the_last_attempt() {
        let mut s = pending();
        for used in 1..=2 {
            let d = decide(Some(&s), false, NOW);
            assert_eq!(d.outcome, RedeemOutcome::Incorrect { locks: false });
            s = d.next.unwrap();
            assert_eq!(s.attempts_used, used);
            assert_eq!(s.status, ActivationStatus::Pending);
        }
        let d = decide(Some(&s), false, NOW);
        assert_eq!(d.outcome, RedeemOutcome::Incorrect { locks: true });
        s = d.next.unwrap();
        assert_eq!(s.status, ActivationStatus::Locked);
        // Locked for good: even the right code, even later.
        for matched in [true, false] {
            let d = decide(Some(&s), matched, NOW + 10 * 86_400_000);
            assert_eq!(d.outcome, RedeemOutcome::Locked);
            assert_eq!(d.next, None);
        }
    }

    #[test]
    fn a_single_attempt_locks_at_once() {
        let s = ActivationState::issued(NOW, 1000, 1);
        let d = decide(Some(&s), false, NOW);
        assert_eq!(d.outcome, RedeemOutcome::Incorrect { locks: true });
    }

    #[test]
    fn expiry_is_reached_at_expires_at() {
        let s = pending();
        let last = s.expires_at_ms - 1;
        assert_eq!(
            decide(Some(&s), true, last).outcome,
            RedeemOutcome::Redeemed
        );
        let d = decide(Some(&s), true, s.expires_at_ms);
        assert_eq!(d.outcome, RedeemOutcome::Expired);
        assert_eq!(d.next, None);
        assert_eq!(s.status_at(last), ActivationStatus::Pending);
        assert_eq!(s.status_at(s.expires_at_ms), ActivationStatus::Expired);
    }

    #[test]
    fn every_mismatch_that_is_not_a_live_try_answers_the_same_and_changes_nothing() {
        let redeemed = decide(Some(&pending()), true, NOW).next.unwrap();
        let canceled = ActivationState {
            status: ActivationStatus::Canceled,
            ..pending()
        };
        let expired_at = pending().expires_at_ms;
        let same = RedeemDecision {
            outcome: RedeemOutcome::Incorrect { locks: false },
            next: None,
        };
        assert_eq!(decide(None, false, NOW), same, "unknown");
        assert_eq!(
            decide(None, true, NOW),
            same,
            "unknown, whatever matched says"
        );
        assert_eq!(decide(Some(&redeemed), false, NOW), same, "redeemed");
        assert_eq!(decide(Some(&pending()), false, expired_at), same, "expired");
        assert_eq!(decide(Some(&canceled), false, NOW), same, "canceled");
        assert_eq!(
            decide(Some(&canceled), true, NOW),
            same,
            "canceled, right code"
        );
    }

    #[test]
    fn an_unknown_application_number_never_locks() {
        for _ in 0..100 {
            assert_eq!(
                decide(None, false, NOW).outcome,
                RedeemOutcome::Incorrect { locks: false }
            );
        }
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            ActivationStatus::Pending,
            ActivationStatus::Redeemed,
            ActivationStatus::Locked,
            ActivationStatus::Canceled,
            ActivationStatus::Expired,
        ] {
            assert_eq!(ActivationStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(ActivationStatus::parse("approved"), None);
    }
}
