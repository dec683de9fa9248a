//! The verification aggregate: a code challenge, its subject index and the record of its latest
//! SMS, changed only through [`VerificationStore`]'s atomic operations.

use super::{AccountEvent, BoxFuture, Error, MessageRecord};
use crate::limits::pumping::Guard;
use crate::limits::{Plan, Refused, Rule};
use crate::otp::challenge::{self, Challenge, ResendVerdict};
use crate::outbox::Job;
use crate::phone::Phone;
use crate::purpose::Purpose;
use crate::sms::Locale;

pub use crate::otp::challenge::{CheckOutcome, Status};

/// One SMS-code verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub id: String,
    pub client: String,
    pub purpose: Purpose,
    pub account_id: Option<String>,
    pub phone: Phone,
    pub locale: Locale,
    pub status: Status,
    pub digits: u8,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub attempts_used: u32,
    pub max_attempts: u32,
    pub sends: u32,
    pub max_sends: u32,
    pub last_sent_ms: i64,
    pub cooldown_ms: i64,
    /// The SMS of the latest send.
    pub message_id: String,
    /// Hash of the (client, purpose, account or phone) it was created for: at most one pending
    /// verification per subject.
    pub subject: String,
    /// The id of the server key its code is derived with (see [`crate::otp::codes::Keyring`]);
    /// empty for verifications stored before keys had ids (the current key).
    pub key_id: String,
    /// What its checks record besides the challenge (wrong codes, approvals, events).
    pub guard: VerificationGuard,
}

/// Set at creation, for the checks of a verification: where a wrong code is counted
/// (`account_failures`), which number range an approval counts in (pumping guard), and the
/// end user's IP for the account's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerificationGuard {
    /// The `account_failures` counter (a keyed hash; `None` without an account or the limit).
    pub failures_key: Option<String>,
    /// The pumping guard's range of the number (`None` with the guard off).
    pub range: Option<String>,
    /// `context.ip` of the create request.
    pub ip: Option<String>,
}

/// What a code SMS operation (create, resend) is guarded by and writes beside its change, all
/// in the same atomic operation: the limits it is charged (checked first; recorded only if the
/// operation goes through), the account's `verification_sent` event, and the outbox entry
/// (for a store that holds the outbox: Redis; `None` with the memory outbox, which reserved
/// room for the job before the call and pushes it after).
#[derive(Debug, Clone, Copy)]
pub struct SendGuards<'a> {
    pub plan: &'a Plan,
    /// The account whose history gets `event`.
    pub account: Option<&'a str>,
    pub event: Option<&'a AccountEvent>,
    pub job: Option<&'a Job>,
}

/// What a check records besides the challenge: a wrong code in `account_failures` (this rule,
/// at the verification's [`VerificationGuard::failures_key`]), an approval in its range.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckGuards {
    pub failures_rule: Option<Rule>,
    pub guard: Option<Guard>,
}

impl Verification {
    /// The status as of `now` (a pending verification past its expiry is `expired`).
    pub fn status_at(&self, now_ms: i64) -> Status {
        challenge::status_at(&self.challenge(), now_ms)
    }

    /// Its counters and deadlines, for the rules of [`crate::otp::challenge`].
    pub fn challenge(&self) -> Challenge {
        Challenge {
            status: self.status,
            expires_at_ms: self.expires_at_ms,
            attempts_used: self.attempts_used,
            max_attempts: self.max_attempts,
            sends: self.sends,
            max_sends: self.max_sends,
            last_sent_ms: self.last_sent_ms,
            cooldown_ms: self.cooldown_ms,
        }
    }

    /// Takes back the counters a rule changed.
    pub fn set_challenge(&mut self, c: &Challenge) {
        self.status = c.status;
        self.expires_at_ms = c.expires_at_ms;
        self.attempts_used = c.attempts_used;
        self.max_attempts = c.max_attempts;
        self.sends = c.sends;
        self.max_sends = c.max_sends;
        self.last_sent_ms = c.last_sent_ms;
        self.cooldown_ms = c.cooldown_ms;
    }
}

/// For which server keys and lengths a submitted code is right. Codes of every length are
/// prefixes of one HMAC digit stream per key, so the caller compares the code with the stream
/// of each key it holds; the store decides whether one of the matches is the verification's
/// own (key, digits), in the same atomic operation that counts the attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeProof {
    /// The id of the current key (for verifications stored before keys had ids).
    pub current_key_id: String,
    /// (key id, digits) pairs the code matched.
    pub matches: Vec<(String, u8)>,
}

impl CodeProof {
    /// Whether the code is right for a verification made under `key_id` with `digits`.
    pub fn is_right(&self, key_id: &str, digits: u8) -> bool {
        let key = if key_id.is_empty() {
            self.current_key_id.as_str()
        } else {
            key_id
        };
        self.matches.iter().any(|(k, d)| k == key && *d == digits)
    }
}

/// A check's outcome, with the verification's purpose (when it was found) for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub outcome: CheckOutcome,
    pub purpose: Option<Purpose>,
}

/// What a resend did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResendOutcome {
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
    /// Recorded; the verification as it is now.
    Sent(Box<Verification>),
    /// Refused by a `[limits]` rule; nothing recorded.
    Limited(Refused),
}

impl ResendOutcome {
    /// The outcome of a refused resend (`None` for [`ResendVerdict::Sent`]).
    pub fn refused(verdict: ResendVerdict) -> Option<ResendOutcome> {
        Some(match verdict {
            ResendVerdict::NotFound => ResendOutcome::NotFound,
            ResendVerdict::Expired => ResendOutcome::Expired,
            ResendVerdict::AlreadyUsed => ResendOutcome::AlreadyUsed,
            ResendVerdict::Locked => ResendOutcome::Locked,
            ResendVerdict::Cooldown { retry_after_ms } => {
                ResendOutcome::Cooldown { retry_after_ms }
            }
            ResendVerdict::MaxSends => ResendOutcome::MaxSends,
            ResendVerdict::Sent => return None,
        })
    }
}

/// What a check needs besides the verification's id.
#[derive(Debug, Clone)]
pub struct CheckRequest<'a> {
    pub client: &'a str,
    /// The purposes the client may use: a verification of another purpose is not touched.
    pub allowed: &'a [Purpose],
    pub proof: &'a CodeProof,
    pub now_ms: i64,
    pub guards: CheckGuards,
}

/// The verification aggregate's storage.
pub trait VerificationStore: Send + Sync {
    /// Stores a new verification and its first SMS record; cancels the pending verification of
    /// the same subject, if any, in the same atomic operation, with `guards` (limits checked
    /// first and recorded, event, outbox entry). `Ok(Err(_))`: refused by a limit, nothing
    /// written.
    fn create<'a>(
        &'a self,
        v: &'a Verification,
        msg: &'a MessageRecord,
        guards: SendGuards<'a>,
    ) -> BoxFuture<'a, Result<Result<(), Refused>, Error>>;

    /// The verification, if it exists and belongs to `client`.
    fn get<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Verification>, Error>>;

    /// Applies one code check atomically ([`crate::otp::challenge::check`]), so one round trip
    /// decides and the store never sees a code.
    fn check<'a>(
        &'a self,
        id: &'a str,
        req: &'a CheckRequest<'a>,
    ) -> BoxFuture<'a, Result<Checked, Error>>;

    /// Records a resend atomically ([`crate::otp::challenge::resend`]), if allowed now and by
    /// the limits of `guards`, with the record of its new SMS (and its event and outbox entry).
    fn resend<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
        now_ms: i64,
        msg: &'a MessageRecord,
        guards: SendGuards<'a>,
    ) -> BoxFuture<'a, Result<ResendOutcome, Error>>;
}
