//! An account's history (contract §3.2 `GET /v1/accounts/{account_id}/events`): what happened
//! to its codes and phones, newest first.
//!
//! Events are written by the operation whose state change they record, in the same atomic step
//! (the Redis scripts prepend `lua/events.lua` and push there; the memory store appends under
//! the same lock). Retention: the newest [`MAX_EVENTS`] events of an account, none older than
//! [`RETENTION_MS`] (400 days): an account's list expires 400 days after its latest event, and
//! older entries are skipped when read.

use serde::{Deserialize, Serialize};

use super::{BoxFuture, Error};

/// Events kept per account.
pub const MAX_EVENTS: usize = 1000;
/// How long an event is kept: 400 days.
pub const RETENTION_MS: i64 = 400 * 24 * 3600 * 1000;
/// `limit` of a read, at most.
pub const MAX_READ: usize = 1000;

/// The event types of contract §3.2 (and the limits issue's refusals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    VerificationSent,
    VerificationApproved,
    VerificationFailed,
    VerificationLocked,
    PhoneAdded,
    PhoneRemoved,
    PhoneChanged,
    PhoneChangeRefused,
    ActivationIssued,
    ActivationRedeemed,
    TotpEnrolled,
    TotpApproved,
    TotpFailed,
    /// A request refused by a `[limits]` rule (`detail` names the limit).
    RateLimited,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::VerificationSent => "verification_sent",
            EventKind::VerificationApproved => "verification_approved",
            EventKind::VerificationFailed => "verification_failed",
            EventKind::VerificationLocked => "verification_locked",
            EventKind::PhoneAdded => "phone_added",
            EventKind::PhoneRemoved => "phone_removed",
            EventKind::PhoneChanged => "phone_changed",
            EventKind::PhoneChangeRefused => "phone_change_refused",
            EventKind::ActivationIssued => "activation_issued",
            EventKind::ActivationRedeemed => "activation_redeemed",
            EventKind::TotpEnrolled => "totp_enrolled",
            EventKind::TotpApproved => "totp_approved",
            EventKind::TotpFailed => "totp_failed",
            EventKind::RateLimited => "rate_limited",
        }
    }
}

/// One entry of an account's history. Stored as compact JSON (one Redis list element); it
/// carries a masked phone at most, never a number or a code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEvent {
    #[serde(rename = "at")]
    pub at_ms: i64,
    #[serde(rename = "t")]
    pub kind: EventKind,
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(rename = "ph", default, skip_serializing_if = "Option::is_none")]
    pub phone_masked: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(rename = "c")]
    pub client: String,
    /// What else the event needs to say (the `limit` of a refusal).
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AccountEvent {
    pub fn new(kind: EventKind, client: &str, at_ms: i64) -> AccountEvent {
        AccountEvent {
            at_ms,
            kind,
            purpose: None,
            phone_masked: None,
            ip: None,
            client: client.to_owned(),
            detail: None,
        }
    }

    pub fn purpose(mut self, p: &str) -> Self {
        self.purpose = Some(p.to_owned());
        self
    }

    pub fn phone_masked(mut self, m: String) -> Self {
        self.phone_masked = Some(m);
        self
    }

    pub fn ip(mut self, ip: Option<&str>) -> Self {
        self.ip = ip.map(str::to_owned);
        self
    }

    pub fn detail(mut self, d: &str) -> Self {
        self.detail = Some(d.to_owned());
        self
    }

    /// The stored form (a Redis list element; the memory store keeps the struct).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(s: &str) -> Option<AccountEvent> {
        serde_json::from_str(s).ok()
    }
}

/// Account histories. Writing happens inside the operations that change state; `append` is
/// for the few changes that have no store operation of their own (a refusal).
pub trait EventStore: Send + Sync {
    fn append<'a>(
        &'a self,
        account: &'a str,
        event: &'a AccountEvent,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// The newest `limit` events (at most [`MAX_READ`]) younger than [`RETENTION_MS`].
    fn recent<'a>(
        &'a self,
        account: &'a str,
        limit: usize,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<AccountEvent>, Error>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_compactly() {
        let e = AccountEvent::new(EventKind::VerificationSent, "platform", 1_700_000_000_000)
            .purpose("login")
            .phone_masked("+853****3456".into())
            .ip(Some("203.0.113.7"));
        let s = e.encode();
        assert_eq!(
            s,
            r#"{"at":1700000000000,"t":"verification_sent","p":"login","ph":"+853****3456","ip":"203.0.113.7","c":"platform"}"#
        );
        assert_eq!(AccountEvent::decode(&s), Some(e));
        assert_eq!(AccountEvent::decode("garbage"), None);
    }
}
