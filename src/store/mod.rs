//! Storage of verifications and SMS messages behind one trait, [`Store`], with two
//! implementations: [`memory::MemoryStore`] (embedded, one process) and
//! [`redis::RedisStore`] (shared by every instance). Both pass the same test suite.
//!
//! Every state change of a verification is one atomic store operation that also decides the
//! outcome (a Lua script in Redis, a locked map entry in memory), so concurrent checks of the
//! right code approve exactly once. The store never sees a code: the caller compares codes
//! and tells the store only whether the one given was right.

pub mod config;
pub mod memory;
pub mod redis;

use serde::{Deserialize, Serialize};

use crate::phone::Phone;
use crate::purpose::Purpose;
use crate::sms::Locale;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend did not answer or refused the command (Redis down, timeout).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The stored data could not be read back (a bug or a foreign writer).
    #[error("corrupt record {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

/// Verification status as stored (`expired` is derived from `expires_at_ms` when read).
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
}

impl Verification {
    /// The status as of `now` (a pending verification past its expiry is `expired`).
    pub fn status_at(&self, now_ms: i64) -> Status {
        if self.status == Status::Pending && now_ms >= self.expires_at_ms {
            Status::Expired
        } else {
            self.status
        }
    }
}

/// Delivery status of an SMS (contract §3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Queued,
    Submitted,
    Delivered,
    Undeliverable,
    Expired,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Submitted => "submitted",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Undeliverable => "undeliverable",
            DeliveryStatus::Expired => "expired",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        [
            DeliveryStatus::Queued,
            DeliveryStatus::Submitted,
            DeliveryStatus::Delivered,
            DeliveryStatus::Undeliverable,
            DeliveryStatus::Expired,
            DeliveryStatus::Failed,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    /// Whether no later event can change it.
    pub fn is_final(self) -> bool {
        !matches!(self, DeliveryStatus::Queued | DeliveryStatus::Submitted)
    }
}

/// One SMS message and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub id: String,
    pub client: String,
    /// The verification (or other object) that sent it; empty for a notification.
    pub owner: String,
    pub status: DeliveryStatus,
    pub encoding: String,
    pub parts: u32,
    pub created_at_ms: i64,
    pub submitted_at_ms: Option<i64>,
    pub delivered_at_ms: Option<i64>,
    pub error: Option<String>,
}

impl MessageRecord {
    /// A new message, `queued`, as the API reports it: its encoding and parts.
    pub fn queued(
        id: &str,
        client: &str,
        owner: &str,
        coding: crate::sms::Coding,
        parts: u32,
        now_ms: i64,
    ) -> MessageRecord {
        MessageRecord {
            id: id.to_owned(),
            client: client.to_owned(),
            owner: owner.to_owned(),
            status: DeliveryStatus::Queued,
            encoding: coding.as_str().to_owned(),
            parts,
            created_at_ms: now_ms,
            submitted_at_ms: None,
            delivered_at_ms: None,
            error: None,
        }
    }
}

/// A change of a message's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageUpdate {
    pub status: DeliveryStatus,
    pub at_ms: i64,
    pub error: Option<String>,
}

/// What a part's final receipt did to its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartOutcome {
    /// Nothing changed for the message (more parts to come, or already final).
    Pending,
    /// The message reached this final status now.
    Final(DeliveryStatus),
    /// The message was undeliverable and goes once more (status back to `queued`).
    Resend,
}

/// One part's final receipt, as [`Store::record_part`] applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartReceipt {
    /// Parts the message was sent in (by the SMSC that took it).
    pub parts: u32,
    /// The part's final state (never `queued` or `submitted`).
    pub status: DeliveryStatus,
    /// Why, when not delivered (e.g. `receipt stat UNDELIV err 001`).
    pub error: Option<String>,
    /// Send an undeliverable message once more instead of failing it.
    pub resend: bool,
    pub at_ms: i64,
}

/// How long receipt correlations are kept (SMSCs send receipts for up to days).
pub const CORRELATION_TTL_MS: i64 = 3 * 24 * 3600 * 1000;
/// How long a receipt that matched nothing yet waits for its submit_sm_resp to be processed.
pub const ORPHAN_RECEIPT_TTL_MS: i64 = 10 * 60 * 1000;

/// The forms an SMSC message id may take in a receipt: the id itself without leading zeros
/// (lower case), then the same number read as hex written in decimal, and read as decimal
/// written in hex. Receipts are matched on the first form when possible, so an SMSC that
/// writes ids one way always matches exactly.
pub fn smsc_id_forms(id: &str) -> Vec<String> {
    let t = id.trim();
    let norm = {
        let s = t.trim_start_matches('0').to_ascii_lowercase();
        if s.is_empty() && !t.is_empty() {
            "0".to_owned()
        } else {
            s
        }
    };
    let mut out = vec![norm.clone()];
    if !norm.is_empty() && norm.len() <= 30 {
        if let Ok(n) = u128::from_str_radix(&norm, 16) {
            out.push(n.to_string());
        }
        if let Ok(n) = norm.parse::<u128>() {
            out.push(format!("{n:x}"));
        }
    }
    out.dedup();
    out
}

/// What a check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Unknown, another client's, or canceled.
    NotFound,
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
}

/// How long objects are kept after they expire, so that late calls get 410, not 404.
pub const RETENTION_AFTER_EXPIRY_MS: i64 = 24 * 3600 * 1000;

/// The storage operations of the daemon.
pub trait Store: Send + Sync + 'static {
    /// Stores a new verification and its first SMS; cancels the pending verification of the
    /// same subject, if any.
    fn create_verification(
        &self,
        v: &Verification,
        msg: &MessageRecord,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// The verification, if it exists and belongs to `client`.
    fn get_verification(
        &self,
        client: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<Verification>, Error>> + Send;

    /// Applies one code check atomically. `matches_digits` is the digit count for which the
    /// submitted code is right (codes of different lengths are prefixes of one HMAC digit
    /// stream), 0 when it is right for none: the code is right when that equals the
    /// verification's `digits`. So one round trip decides, and the store never sees a code.
    fn check_verification(
        &self,
        client: &str,
        id: &str,
        matches_digits: u8,
        now_ms: i64,
    ) -> impl Future<Output = Result<Checked, Error>> + Send;

    /// Records a resend atomically, if allowed now, with its new SMS.
    fn resend_verification(
        &self,
        client: &str,
        id: &str,
        now_ms: i64,
        msg: &MessageRecord,
    ) -> impl Future<Output = Result<ResendOutcome, Error>> + Send;

    /// Stores a message that no verification owns (a notification), kept until `keep_until_ms`.
    fn create_message(
        &self,
        msg: &MessageRecord,
        keep_until_ms: i64,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    fn get_message(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<MessageRecord>, Error>> + Send;

    /// Moves a message to a new status; a final status is never changed again.
    fn update_message(
        &self,
        id: &str,
        update: &MessageUpdate,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Records that `smsc` gave these ids to the parts of `message_id`; returns the receipt
    /// stats (`DELIVRD`, …) that arrived for them before this was known.
    fn correlate(
        &self,
        smsc: &str,
        smsc_ids: &[String],
        message_id: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// The message (and its number of parts) a receipt of `smsc` is for; when unknown yet the
    /// receipt is kept for [`ORPHAN_RECEIPT_TTL_MS`] for [`Store::correlate`] to find.
    fn match_receipt(
        &self,
        smsc: &str,
        smsc_id: &str,
        stat: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<Option<(String, u32)>, Error>> + Send;

    /// Applies one part's final receipt: a message is `delivered` when all `parts` are, and
    /// otherwise final at its first part that is not; with `resend`, an undeliverable message
    /// goes back to `queued` once (and the answer is [`PartOutcome::Resend`]).
    fn record_part(
        &self,
        message_id: &str,
        part: &PartReceipt,
    ) -> impl Future<Output = Result<PartOutcome, Error>> + Send;

    /// Whether the backend answers.
    fn ping(&self) -> impl Future<Output = Result<(), Error>> + Send;
}

/// The configured store: one of the two implementations.
#[derive(Clone)]
pub enum AnyStore {
    Memory(std::sync::Arc<memory::MemoryStore>),
    Redis(redis::RedisStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Memory($s) => $e,
            AnyStore::Redis($s) => $e,
        }
    };
}

impl Store for AnyStore {
    async fn create_verification(
        &self,
        v: &Verification,
        msg: &MessageRecord,
    ) -> Result<(), Error> {
        dispatch!(self, s => s.create_verification(v, msg).await)
    }
    async fn get_verification(
        &self,
        client: &str,
        id: &str,
    ) -> Result<Option<Verification>, Error> {
        dispatch!(self, s => s.get_verification(client, id).await)
    }
    async fn check_verification(
        &self,
        client: &str,
        id: &str,
        matches_digits: u8,
        now_ms: i64,
    ) -> Result<Checked, Error> {
        dispatch!(self, s => s.check_verification(client, id, matches_digits, now_ms).await)
    }
    async fn resend_verification(
        &self,
        client: &str,
        id: &str,
        now_ms: i64,
        msg: &MessageRecord,
    ) -> Result<ResendOutcome, Error> {
        dispatch!(self, s => s.resend_verification(client, id, now_ms, msg).await)
    }
    async fn create_message(&self, msg: &MessageRecord, keep_until_ms: i64) -> Result<(), Error> {
        dispatch!(self, s => s.create_message(msg, keep_until_ms).await)
    }
    async fn get_message(&self, id: &str) -> Result<Option<MessageRecord>, Error> {
        dispatch!(self, s => s.get_message(id).await)
    }
    async fn update_message(&self, id: &str, update: &MessageUpdate) -> Result<(), Error> {
        dispatch!(self, s => s.update_message(id, update).await)
    }
    async fn correlate(
        &self,
        smsc: &str,
        smsc_ids: &[String],
        message_id: &str,
        now_ms: i64,
    ) -> Result<Vec<String>, Error> {
        dispatch!(self, s => s.correlate(smsc, smsc_ids, message_id, now_ms).await)
    }
    async fn match_receipt(
        &self,
        smsc: &str,
        smsc_id: &str,
        stat: &str,
        now_ms: i64,
    ) -> Result<Option<(String, u32)>, Error> {
        dispatch!(self, s => s.match_receipt(smsc, smsc_id, stat, now_ms).await)
    }
    async fn record_part(
        &self,
        message_id: &str,
        part: &PartReceipt,
    ) -> Result<PartOutcome, Error> {
        dispatch!(self, s => s.record_part(message_id, part).await)
    }
    async fn ping(&self) -> Result<(), Error> {
        dispatch!(self, s => s.ping().await)
    }
}

#[cfg(test)]
mod tests {
    use super::smsc_id_forms;

    #[test]
    fn id_forms_cover_hex_decimal_and_leading_zeros() {
        assert_eq!(smsc_id_forms("001A2B"), vec!["1a2b", "6699"]);
        assert_eq!(smsc_id_forms("6699"), vec!["6699", "26265", "1a2b"]);
        assert_eq!(smsc_id_forms("0000"), vec!["0"]);
        assert_eq!(smsc_id_forms("abc-def"), vec!["abc-def"]);
    }
}
