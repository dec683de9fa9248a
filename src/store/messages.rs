//! The message aggregate: SMS records and what became of them, and the receipt correlations
//! that find a message from an SMSC's id, behind [`MessageStore`].

use serde::{Deserialize, Serialize};

use super::{BoxFuture, Error};

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

/// One part's final receipt, as [`MessageStore::record_part`] applies it.
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

/// The message aggregate's storage: records, status changes, receipt correlation.
pub trait MessageStore: Send + Sync {
    /// Stores a message that no verification owns (a notification), kept until `keep_until_ms`.
    fn create<'a>(
        &'a self,
        msg: &'a MessageRecord,
        keep_until_ms: i64,
    ) -> BoxFuture<'a, Result<(), Error>>;

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<MessageRecord>, Error>>;

    /// Moves a message to a new status; a final status is never changed again.
    fn update<'a>(
        &'a self,
        id: &'a str,
        update: &'a MessageUpdate,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Records that `smsc` gave these ids to the parts of `message_id`; returns the receipt
    /// stats (`DELIVRD`, …) that arrived for them before this was known.
    fn correlate<'a>(
        &'a self,
        smsc: &'a str,
        smsc_ids: &'a [String],
        message_id: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<String>, Error>>;

    /// The message (and its number of parts) a receipt of `smsc` is for; when unknown yet the
    /// receipt is kept for [`ORPHAN_RECEIPT_TTL_MS`] for [`MessageStore::correlate`] to find.
    fn match_receipt<'a>(
        &'a self,
        smsc: &'a str,
        smsc_id: &'a str,
        stat: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Option<(String, u32)>, Error>>;

    /// Applies one part's final receipt: a message is `delivered` when all `parts` are, and
    /// otherwise final at its first part that is not; with `resend`, an undeliverable message
    /// goes back to `queued` once (and the answer is [`PartOutcome::Resend`]).
    fn record_part<'a>(
        &'a self,
        message_id: &'a str,
        part: &'a PartReceipt,
    ) -> BoxFuture<'a, Result<PartOutcome, Error>>;
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
