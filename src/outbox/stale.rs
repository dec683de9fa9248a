//! Stale code SMS (contract §6): a code SMS whose verification is no longer pending when its
//! turn comes (approved, canceled, locked, expired) is not submitted; its message becomes
//! `failed` with error `not_pending` (`expired` when the code died).
//!
//! Where the check lives: where a consumer takes jobs from the outbox, just before they can
//! reach a session. With Redis, the reader checks the code jobs of each `XREADGROUP` (or
//! claim) batch with one pipeline of `HMGET`s — one round trip per batch, and none for a
//! batch of notifications; with the memory store, each code job as it is taken (in-process
//! reads). Checking at queue time would be too early (the backlog is the problem), and in
//! the session too late and per message (the window would wait on the store). A store error
//! sends the SMS (an outage must not lose codes).

use std::sync::Arc;

use super::{Body, Job};
use crate::clock::Clock;
use crate::store::messages::{DeliveryStatus, MessageStore, MessageUpdate};
use crate::store::phone_changes::PhoneChangeStore;
use crate::store::verifications::{Status, VerificationStore};

/// What to do with a code SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// The verification was approved, canceled or locked.
    NotPending,
    /// The code died (or its verification is gone).
    Expired,
}

impl Verdict {
    /// From the verification's stored status and expiry (`None`: no such verification).
    pub fn of(stored: Option<(Status, i64)>, now_ms: i64) -> Verdict {
        match stored {
            None => Verdict::Expired,
            Some((Status::Pending, expires_at_ms)) if expires_at_ms > now_ms => Verdict::Send,
            Some((Status::Pending | Status::Expired, _)) => Verdict::Expired,
            Some((Status::Approved | Status::Canceled | Status::Locked, _)) => Verdict::NotPending,
        }
    }
}

/// The stores the check reads and writes.
pub struct StaleCheck {
    pub messages: Arc<dyn MessageStore>,
    pub verifications: Arc<dyn VerificationStore>,
    /// A phone change's code SMS is judged by its change's challenge.
    pub phone_changes: Arc<dyn PhoneChangeStore>,
    pub clock: Clock,
}

impl StaleCheck {
    /// The verdict for one job through the store traits (the memory store: in-process).
    pub async fn verdict(&self, job: &Job) -> Verdict {
        let Body::Code {
            verification_id, ..
        } = &job.body
        else {
            return Verdict::Send;
        };
        let client = match self.messages.get(&job.message_id).await {
            Ok(Some(m)) => m.client,
            Ok(None) => return Verdict::Send,
            Err(_) => return Verdict::Send,
        };
        let stored = if verification_id.starts_with("pc_") {
            self.phone_changes
                .get(&client, verification_id)
                .await
                .map(|c| c.map(|c| (c.challenge.status, c.challenge.expires_at_ms)))
        } else {
            self.verifications
                .get(&client, verification_id)
                .await
                .map(|v| v.map(|v| (v.status, v.expires_at_ms)))
        };
        match stored {
            Ok(v) => Verdict::of(v, self.clock.now_ms()),
            Err(_) => Verdict::Send,
        }
    }

    /// Records why a code SMS was not sent.
    pub async fn mark(&self, job: &Job, verdict: Verdict) {
        let now_ms = self.clock.now_ms();
        let update = match verdict {
            Verdict::Send => return,
            Verdict::NotPending => MessageUpdate {
                status: DeliveryStatus::Failed,
                at_ms: now_ms,
                error: Some("not_pending".into()),
            },
            Verdict::Expired => MessageUpdate {
                status: DeliveryStatus::Expired,
                at_ms: now_ms,
                error: Some("validity ended before an SMSC accepted it".into()),
            },
        };
        metrics::counter!("otpgate_sms_stale_total").increment(1);
        if let Err(e) = self.messages.update(&job.message_id, &update).await {
            tracing::warn!(error = %e, message = %job.message_id,
                "outbox: stale code SMS not sent, and its status not recorded");
        }
    }
}
