//! The message aggregate: SMS records and what became of them, and the receipt correlations
//! that find a message from an SMSC's id, behind [`MessageStore`].

use serde::{Deserialize, Serialize};

use super::{BoxFuture, Error};
use crate::outbox::Job;

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
    /// The send the part belongs to ([`ReceiptOf::send`]): a part of an earlier send does not
    /// count.
    pub send: u32,
}

/// How long receipt correlations are kept (SMSCs send receipts for up to days).
pub const CORRELATION_TTL_MS: i64 = 3 * 24 * 3600 * 1000;
/// How long a receipt that matched nothing yet waits for its submit_sm_resp to be processed.
pub const ORPHAN_RECEIPT_TTL_MS: i64 = 10 * 60 * 1000;

/// How an SMSC's receipt ids relate to the ids of its `submit_sm_resp` (contract §6 "Receipt
/// ids", `[[smpp.smsc]] receipt_ids`). Leading zeros and letter case never matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptIds {
    /// Learned from the first receipts that match unambiguously, then fixed for the SMSC (the
    /// learned rule is kept in the store, so every bind and instance uses the same).
    #[default]
    Auto,
    /// The receipt writes the id as the response did.
    Same,
    /// Decimal in the response, hex in the receipt.
    HexInReceipt,
    /// Hex in the response, decimal in the receipt.
    DecimalInReceipt,
}

impl ReceiptIds {
    /// The explicit rules, in the order [`ReceiptIds::letter`] spells them.
    pub const EXPLICIT: [ReceiptIds; 3] = [
        ReceiptIds::Same,
        ReceiptIds::HexInReceipt,
        ReceiptIds::DecimalInReceipt,
    ];

    /// One letter for the store (`s`, `h`, `d`; `a` for auto).
    pub fn letter(self) -> &'static str {
        match self {
            ReceiptIds::Auto => "a",
            ReceiptIds::Same => "s",
            ReceiptIds::HexInReceipt => "h",
            ReceiptIds::DecimalInReceipt => "d",
        }
    }

    pub fn from_letter(l: &str) -> Option<ReceiptIds> {
        Self::EXPLICIT.into_iter().find(|r| r.letter() == l)
    }

    /// The canonical form (the response's id, normalised) a receipt's id stands for.
    pub fn canonical_of_receipt(self, receipt_id: &str) -> Option<String> {
        let n = normalize_id(receipt_id);
        match self {
            ReceiptIds::Auto => None,
            ReceiptIds::Same => (!n.is_empty()).then_some(n),
            ReceiptIds::HexInReceipt => hex_to_decimal(&n),
            ReceiptIds::DecimalInReceipt => decimal_to_hex(&n),
        }
    }

    /// How a receipt writes the id whose canonical form is `canonical`.
    pub fn receipt_form_of(self, canonical: &str) -> Option<String> {
        match self {
            ReceiptIds::Auto => None,
            ReceiptIds::Same => (!canonical.is_empty()).then(|| canonical.to_owned()),
            ReceiptIds::HexInReceipt => decimal_to_hex(canonical),
            ReceiptIds::DecimalInReceipt => hex_to_decimal(canonical),
        }
    }
}

/// How many receipts that match one message under one rule only fix an `auto` SMSC's rule.
pub const LEARN_VOTES: u32 = 3;

/// An SMSC id without leading zeros (`"0"` for zeros only), lower case.
pub fn normalize_id(id: &str) -> String {
    let t = id.trim();
    let s = t.trim_start_matches('0').to_ascii_lowercase();
    if s.is_empty() && !t.is_empty() {
        "0".to_owned()
    } else {
        s
    }
}

fn hex_to_decimal(n: &str) -> Option<String> {
    if n.is_empty() || n.len() > 30 {
        return None;
    }
    u128::from_str_radix(n, 16).ok().map(|v| v.to_string())
}

fn decimal_to_hex(n: &str) -> Option<String> {
    if n.is_empty() || n.len() > 38 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse::<u128>().ok().map(|v| format!("{v:x}"))
}

/// The canonical forms a receipt id may stand for while the rule is not known, each with the
/// rules that give it (a form several rules give is no evidence for any of them).
pub fn receipt_candidates(receipt_id: &str) -> Vec<(String, Vec<ReceiptIds>)> {
    let mut out: Vec<(String, Vec<ReceiptIds>)> = Vec::new();
    for rule in ReceiptIds::EXPLICIT {
        if let Some(form) = rule.canonical_of_receipt(receipt_id) {
            match out.iter_mut().find(|(f, _)| *f == form) {
                Some((_, rules)) => rules.push(rule),
                None => out.push((form, vec![rule])),
            }
        }
    }
    out
}

/// The forms a receipt may write the id whose canonical form is `canonical` in, while the rule
/// is not known, each with the rules that give it.
pub fn receipt_forms(canonical: &str) -> Vec<(String, Vec<ReceiptIds>)> {
    let mut out: Vec<(String, Vec<ReceiptIds>)> = Vec::new();
    for rule in ReceiptIds::EXPLICIT {
        if let Some(form) = rule.receipt_form_of(canonical) {
            match out.iter_mut().find(|(f, _)| *f == form) {
                Some((_, rules)) => rules.push(rule),
                None => out.push((form, vec![rule])),
            }
        }
    }
    out
}

/// A rule just learned, with the receipts kept while it was unknown: (receipt id, stat), to
/// match again under it.
pub type Learned = Option<(ReceiptIds, Vec<(String, String)>)>;

/// What [`MessageStore::record_submitted`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Correlated {
    /// The send these ids are of: 0 the first, 1 the re-send of an undeliverable code.
    pub send: u32,
    /// The stats of receipts that came before (their correlation is not stored).
    pub early: Vec<String>,
    pub learned: Learned,
}

/// A final receipt, as [`MessageStore::record_receipt`] applies it to the message it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptPart {
    /// The part's final state (never `queued` or `submitted`).
    pub status: DeliveryStatus,
    pub error: Option<String>,
    pub at_ms: i64,
}

/// What [`MessageStore::record_receipt`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRecorded {
    pub matched: ReceiptMatch,
    /// What the part did to its message; `None` when matched but not applied (an
    /// undeliverable part of a first send: the caller decides on its re-send).
    pub outcome: Option<PartOutcome>,
}

/// The message a receipt is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptOf {
    pub message_id: String,
    /// Parts the message was sent in.
    pub parts: u32,
    /// The send the receipt's part belongs to.
    pub send: u32,
}

impl ReceiptOf {
    /// From a stored correlation, "message_id|parts|send" (or "message_id|parts": the first).
    pub fn decode(v: &str) -> Option<ReceiptOf> {
        let mut it = v.split('|');
        let message_id = it.next()?.to_owned();
        let parts = it.next()?.parse().ok()?;
        let send = it.next().map_or(Some(0), |s| s.parse().ok())?;
        Some(ReceiptOf {
            message_id,
            parts,
            send,
        })
    }
}

/// What [`MessageStore::match_receipt`] found for a receipt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptMatch {
    /// Its message; `None`: the receipt is kept (before its correlation, or until the SMSC's
    /// rule is known).
    pub message: Option<ReceiptOf>,
    /// This receipt fixed the SMSC's rule.
    pub learned: Learned,
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

    /// Every part of `message_id` was accepted by `smsc`, which gave them these ids: its status
    /// becomes `update` (`submitted`, unless final) and the ids are recorded under their
    /// canonical form ([`normalize_id`]) for the send the message is at; returns that send and
    /// the stats (`DELIVRD`, …) of receipts that arrived for them before. While an `auto`
    /// SMSC's rule is unknown, a kept receipt is taken when it is the only one that fits, and
    /// counts toward learning the rule when one rule only gives its form. Atomic with
    /// [`MessageStore::match_receipt`].
    fn record_submitted<'a>(
        &'a self,
        message_id: &'a str,
        smsc: &'a str,
        smsc_ids: &'a [String],
        update: &'a MessageUpdate,
    ) -> BoxFuture<'a, Result<Correlated, Error>>;

    /// The message a receipt of `smsc` is for, under `rule` (for
    /// [`ReceiptIds::Auto`]: the rule learned for `smsc`, learning it when this receipt matches
    /// one message under one rule only, for the [`LEARN_VOTES`]th time). A receipt that matches
    /// no message, or several while the rule is unknown, is kept for [`ORPHAN_RECEIPT_TTL_MS`]
    /// (under its canonical form once the rule is known) for [`MessageStore::correlate`] to
    /// find. A correlation is taken by one receipt only.
    fn match_receipt<'a>(
        &'a self,
        smsc: &'a str,
        rule: ReceiptIds,
        smsc_id: &'a str,
        stat: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<ReceiptMatch, Error>>;

    /// [`MessageStore::match_receipt`] and, unless the part is an undeliverable part of a
    /// first send (whose re-send the caller decides), [`MessageStore::record_part`] on the
    /// matched message, in one step, where the store can (a single Redis server: one round
    /// trip). `None`: not here; call the two.
    fn record_receipt<'a>(
        &'a self,
        _smsc: &'a str,
        _rule: ReceiptIds,
        _smsc_id: &'a str,
        _stat: &'a str,
        _part: &'a ReceiptPart,
    ) -> BoxFuture<'a, Result<Option<ReceiptRecorded>, Error>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Applies one part's final receipt: a message is `delivered` when all `parts` of its
    /// current send are, and otherwise final at its first part that is not; with `resend`, an
    /// undeliverable message goes back to `queued` once (and the answer is
    /// [`PartOutcome::Resend`]); a part of an earlier send changes nothing.
    ///
    /// `job` is the re-send's outbox job, for a store that holds the outbox (Redis): its entry
    /// is written in the same atomic step as the change to [`PartOutcome::Resend`], and only
    /// then (a transactional outbox, like [`VerificationStore::create`]'s), so a re-send is
    /// never recorded without being queued. `None` with the memory outbox, which the caller
    /// reserved room in before the call and pushes the job into after.
    ///
    /// [`VerificationStore::create`]: crate::store::VerificationStore::create
    fn record_part<'a>(
        &'a self,
        message_id: &'a str,
        part: &'a PartReceipt,
        job: Option<&'a Job>,
    ) -> BoxFuture<'a, Result<PartOutcome, Error>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_ids_convert_under_each_rule() {
        assert_eq!(normalize_id("001A2B"), "1a2b");
        assert_eq!(normalize_id("0000"), "0");
        let c = |r: ReceiptIds, id: &str| r.canonical_of_receipt(id);
        assert_eq!(c(ReceiptIds::Same, "001A2B").as_deref(), Some("1a2b"));
        assert_eq!(c(ReceiptIds::HexInReceipt, "1000").as_deref(), Some("4096"));
        assert_eq!(c(ReceiptIds::HexInReceipt, "03E8").as_deref(), Some("1000"));
        assert_eq!(
            c(ReceiptIds::DecimalInReceipt, "6699").as_deref(),
            Some("1a2b")
        );
        assert_eq!(c(ReceiptIds::DecimalInReceipt, "1a2b"), None);
        assert_eq!(c(ReceiptIds::Auto, "1"), None);
        for r in ReceiptIds::EXPLICIT {
            let canon = c(r, "0000001000").unwrap();
            assert_eq!(
                r.receipt_form_of(&canon).as_deref(),
                Some("1000"),
                "{r:?} round trip"
            );
        }
    }

    #[test]
    fn candidates_merge_forms_several_rules_give() {
        let rules = |id: &str| receipt_candidates(id);
        assert_eq!(
            rules("5"),
            vec![(
                "5".to_owned(),
                vec![
                    ReceiptIds::Same,
                    ReceiptIds::HexInReceipt,
                    ReceiptIds::DecimalInReceipt
                ]
            )]
        );
        assert_eq!(
            rules("3E8"),
            vec![
                ("3e8".to_owned(), vec![ReceiptIds::Same]),
                ("1000".to_owned(), vec![ReceiptIds::HexInReceipt]),
            ]
        );
        assert_eq!(
            rules("abc-def"),
            vec![("abc-def".to_owned(), vec![ReceiptIds::Same])]
        );
    }
}
