//! The phone-change aggregate (contract §3.3): a code challenge to the new number
//! ([`crate::otp::challenge`]'s rules), then the carrier check's outcome, settled in one
//! atomic operation with the account's phones and its event.

use super::{AccountEvent, AccountPhone, BoxFuture, CheckOutcome, CodeProof, Error, MessageRecord};
use crate::otp::challenge::{self, Challenge, ResendVerdict, Status};
use crate::phone::Phone;
use crate::sms::Locale;
use crate::subscriber::Identity;

/// How a change ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Completed,
    /// Refused; the reason as answered (see [`crate::phones::change`]).
    Refused(String),
}

impl Settled {
    /// The stored form: `completed`, or `refused:<reason>`.
    pub fn encode(&self) -> String {
        match self {
            Settled::Completed => "completed".into(),
            Settled::Refused(r) => format!("refused:{r}"),
        }
    }

    pub fn decode(s: &str) -> Option<Settled> {
        if s == "completed" {
            return Some(Settled::Completed);
        }
        s.strip_prefix("refused:")
            .map(|r| Settled::Refused(r.to_owned()))
    }
}

/// The state of a change as the contract names it (plus `expired` and `locked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeState {
    CodeSent,
    CodeVerified,
    Completed,
    Refused,
    Expired,
    Locked,
}

/// A lost-phone number change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneChange {
    /// `pc_…`.
    pub id: String,
    pub client: String,
    pub account_id: String,
    pub new_phone: Phone,
    pub locale: Locale,
    pub challenge: Challenge,
    pub digits: u8,
    pub created_at_ms: i64,
    /// The SMS of the latest send.
    pub message_id: String,
    pub key_id: String,
    /// What the carrier is asked (kept until the change is settled and expires).
    pub identity: Identity,
    /// The end user's IP at create (`context.ip`), for the account events.
    pub ip: Option<String>,
    pub settled: Option<Settled>,
}

impl PhoneChange {
    pub fn state_at(&self, now_ms: i64) -> ChangeState {
        match (&self.settled, challenge::status_at(&self.challenge, now_ms)) {
            (Some(Settled::Completed), _) => ChangeState::Completed,
            (Some(Settled::Refused(_)), _) => ChangeState::Refused,
            (None, Status::Approved) if now_ms >= self.challenge.expires_at_ms => {
                ChangeState::Expired
            }
            (None, Status::Approved) => ChangeState::CodeVerified,
            (None, Status::Pending) => ChangeState::CodeSent,
            (None, Status::Locked) => ChangeState::Locked,
            (None, Status::Expired | Status::Canceled) => ChangeState::Expired,
        }
    }
}

/// What settling a change asks for.
#[derive(Debug, Clone)]
pub enum Settlement<'a> {
    /// The new number becomes the primary (this entry, level 2, or the account's entry of
    /// that number raised to level 2); the old primary is removed.
    Complete {
        phone: &'a AccountPhone,
        event: &'a AccountEvent,
    },
    Refuse {
        reason: &'a str,
        event: &'a AccountEvent,
    },
}

/// What settling did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleOutcome {
    NotFound,
    /// The code was not checked (or the change is locked): nothing to settle.
    NotVerified,
    Expired,
    /// Settled before (a concurrent check or retry): how.
    AlreadySettled(Settled),
    /// Completed now; the account's previous primary (removed), if it had another.
    Completed {
        old_primary: Option<Phone>,
    },
    Refused,
}

/// Phone changes; their code rules are [`crate::otp::challenge`]'s.
pub trait PhoneChangeStore: Send + Sync {
    /// Stores a new change and the record of its first SMS.
    fn create<'a>(
        &'a self,
        pc: &'a PhoneChange,
        msg: &'a MessageRecord,
    ) -> BoxFuture<'a, Result<(), Error>>;

    fn get<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<PhoneChange>, Error>>;

    /// A check of the code ([`crate::otp::challenge::check`]); a right one makes the change
    /// `code_verified`.
    fn check<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
        proof: &'a CodeProof,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<CheckOutcome, Error>>;

    /// A resend ([`crate::otp::challenge::resend`]) with the record of its new SMS; the
    /// change as it is now when sent.
    fn resend<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
        now_ms: i64,
        msg: &'a MessageRecord,
    ) -> BoxFuture<'a, Result<(ResendVerdict, Option<PhoneChange>), Error>>;

    /// Completes or refuses a `code_verified` change before its expiry, with the account's
    /// phones and the event, in one atomic operation.
    fn settle<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
        how: &'a Settlement<'a>,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<SettleOutcome, Error>>;
}
