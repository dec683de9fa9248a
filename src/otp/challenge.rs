//! The code-challenge core: the rules that decide a check and a resend (attempts, lock on the
//! last attempt, sends, cooldown, expiry) on plain data.
//!
//! [`crate::store::memory`] calls these functions under its lock; the Redis scripts
//! `src/store/lua/check.lua` and `resend.lua` mirror them. One table-driven suite
//! (`tests/it/challenge.rs`) runs the same cases against these functions and against both
//! stores, so the three cannot drift. Phone changes and activations will reuse them.

use serde::{Deserialize, Serialize};

/// A challenge's status as stored (`expired` is derived from `expires_at_ms` when read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Approved,
    Expired,
    Locked,
    Canceled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Expired => "expired",
            Status::Locked => "locked",
            Status::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::Approved,
            Status::Expired,
            Status::Locked,
            Status::Canceled,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// The counters and deadlines of one code challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    pub status: Status,
    pub expires_at_ms: i64,
    pub attempts_used: u32,
    pub max_attempts: u32,
    pub sends: u32,
    pub max_sends: u32,
    pub last_sent_ms: i64,
    pub cooldown_ms: i64,
}

/// What a check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Unknown, another client's, or canceled.
    NotFound,
    /// The client may not use the challenge's purpose (a store answers it; nothing changed).
    Forbidden,
    Expired,
    AlreadyUsed,
    /// Locked before this check.
    Locked,
    /// The right code: approved now.
    Approved,
    /// A wrong code; attempts left.
    Wrong {
        attempts_remaining: u32,
    },
    /// A wrong code that used the last attempt: locked now.
    LockedNow,
}

/// What a resend request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResendVerdict {
    NotFound,
    Expired,
    AlreadyUsed,
    Locked,
    /// Too early; may retry after this many milliseconds.
    Cooldown {
        retry_after_ms: i64,
    },
    /// Every send is used up.
    MaxSends,
    /// Allowed and counted: the send is recorded.
    Sent,
}

/// The status as of `now` (a pending challenge at or past its expiry is `expired`).
pub fn status_at(c: &Challenge, now_ms: i64) -> Status {
    if c.status == Status::Pending && now_ms >= c.expires_at_ms {
        Status::Expired
    } else {
        c.status
    }
}

/// Applies one check: `correct` says whether the code given was right.
pub fn check(c: &mut Challenge, correct: bool, now_ms: i64) -> CheckOutcome {
    match status_at(c, now_ms) {
        Status::Canceled => return CheckOutcome::NotFound,
        Status::Approved => return CheckOutcome::AlreadyUsed,
        Status::Locked => return CheckOutcome::Locked,
        Status::Expired => return CheckOutcome::Expired,
        Status::Pending => {}
    }
    if correct {
        c.status = Status::Approved;
        return CheckOutcome::Approved;
    }
    c.attempts_used += 1;
    if c.attempts_used >= c.max_attempts {
        c.status = Status::Locked;
        CheckOutcome::LockedNow
    } else {
        CheckOutcome::Wrong {
            attempts_remaining: c.max_attempts - c.attempts_used,
        }
    }
}

/// Applies one resend request at `now`.
pub fn resend(c: &mut Challenge, now_ms: i64) -> ResendVerdict {
    match status_at(c, now_ms) {
        Status::Canceled => return ResendVerdict::NotFound,
        Status::Approved => return ResendVerdict::AlreadyUsed,
        Status::Locked => return ResendVerdict::Locked,
        Status::Expired => return ResendVerdict::Expired,
        Status::Pending => {}
    }
    if c.sends >= c.max_sends {
        return ResendVerdict::MaxSends;
    }
    let next = c.last_sent_ms + c.cooldown_ms;
    if now_ms < next {
        return ResendVerdict::Cooldown {
            retry_after_ms: next - now_ms,
        };
    }
    c.sends += 1;
    c.last_sent_ms = now_ms;
    ResendVerdict::Sent
}
