//! Applies what the SMPP sessions report to the stored messages: submitted, failed, expired,
//! and delivery receipts.
//!
//! Receipts are matched through the store ([`MessageStore::correlate`],
//! [`MessageStore::match_receipt`]), so
//! a receipt finds its message whichever bind — or whichever instance sharing the Redis —
//! receives it, and whether it arrives before or after the `submit_sm_resp` was processed.
//! A code SMS that comes back `UNDELIV`/`REJECTD` while its code is alive goes once more,
//! avoiding the SMSC that failed, when its route has another SMSC.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::outbox::{Body, Job, Outbox, Priority, Routing};
use crate::smpp::DeliveryEvent;
#[cfg(doc)]
use crate::store::MessageStore;
use crate::store::{DeliveryStatus, MessageUpdate, PartOutcome, PartReceipt, Status, Stores};

pub struct Tracker {
    pub store: Stores,
    pub outbox: Outbox,
    pub routing: Arc<Routing>,
}

/// The message status a final receipt stat means; `None` for intermediate ones.
pub fn status_of_stat(stat: &str) -> Option<DeliveryStatus> {
    match stat {
        "DELIVRD" => Some(DeliveryStatus::Delivered),
        "UNDELIV" | "REJECTD" => Some(DeliveryStatus::Undeliverable),
        "EXPIRED" => Some(DeliveryStatus::Expired),
        "ACCEPTD" | "ENROUTE" => None,
        // DELETED, UNKNOWN, and anything an SMSC invents.
        _ => Some(DeliveryStatus::Failed),
    }
}

/// Runs until every session is gone (the channel closes).
pub async fn run(tracker: Tracker, mut events: mpsc::UnboundedReceiver<DeliveryEvent>) {
    while let Some(ev) = events.recv().await {
        if let Err(e) = tracker.apply(ev).await {
            tracing::warn!(error = %e, "could not record a delivery event");
        }
    }
}

impl Tracker {
    async fn apply(&self, ev: DeliveryEvent) -> Result<(), crate::store::Error> {
        let now_ms = crate::clock::system_now_ms();
        match ev {
            DeliveryEvent::Submitted {
                message_id,
                smsc,
                smsc_message_ids,
            } => {
                metrics::counter!("otpgate_sms_total", "smsc" => smsc.to_string(), "status" => "submitted").increment(1);
                self.store
                    .messages
                    .update(
                        &message_id,
                        &MessageUpdate {
                            status: DeliveryStatus::Submitted,
                            at_ms: now_ms,
                            error: None,
                        },
                    )
                    .await?;
                let parts = smsc_message_ids.len() as u32;
                let early = self
                    .store
                    .messages
                    .correlate(&smsc, &smsc_message_ids, &message_id, now_ms)
                    .await?;
                for stat in early {
                    self.final_receipt(&smsc, &message_id, parts, &stat).await?;
                }
            }
            DeliveryEvent::Failed {
                message_id,
                smsc,
                error,
            } => {
                metrics::counter!("otpgate_sms_total", "smsc" => smsc.to_string(), "status" => "failed").increment(1);
                self.store
                    .messages
                    .update(
                        &message_id,
                        &MessageUpdate {
                            status: DeliveryStatus::Failed,
                            at_ms: now_ms,
                            error: Some(error),
                        },
                    )
                    .await?;
            }
            DeliveryEvent::Expired { message_id } => {
                metrics::counter!("otpgate_sms_total", "smsc" => "none", "status" => "expired")
                    .increment(1);
                self.store
                    .messages
                    .update(
                        &message_id,
                        &MessageUpdate {
                            status: DeliveryStatus::Expired,
                            at_ms: now_ms,
                            error: Some("validity ended before an SMSC accepted it".into()),
                        },
                    )
                    .await?;
            }
            DeliveryEvent::Receipt {
                smsc,
                smsc_message_id,
                stat,
            } => {
                if status_of_stat(&stat).is_none() {
                    return Ok(());
                }
                match self
                    .store
                    .messages
                    .match_receipt(&smsc, &smsc_message_id, &stat, now_ms)
                    .await?
                {
                    Some((message_id, parts)) => {
                        self.final_receipt(&smsc, &message_id, parts, &stat).await?
                    }
                    None => {
                        tracing::debug!(smsc = %smsc, "receipt before its submit_sm_resp; kept");
                    }
                }
            }
        }
        Ok(())
    }

    async fn final_receipt(
        &self,
        smsc: &str,
        message_id: &str,
        parts: u32,
        stat: &str,
    ) -> Result<(), crate::store::Error> {
        let Some(status) = status_of_stat(stat) else {
            return Ok(());
        };
        let now_ms = crate::clock::system_now_ms();
        let resend_job = if status == DeliveryStatus::Undeliverable {
            self.resend_job(smsc, message_id, now_ms).await?
        } else {
            None
        };
        let outcome = self
            .store
            .messages
            .record_part(
                message_id,
                &PartReceipt {
                    parts,
                    status,
                    error: (status != DeliveryStatus::Delivered)
                        .then(|| format!("receipt stat {stat}")),
                    resend: resend_job.is_some(),
                    at_ms: now_ms,
                },
            )
            .await?;
        match outcome {
            PartOutcome::Pending => {}
            PartOutcome::Final(s) => {
                metrics::counter!("otpgate_sms_total", "smsc" => smsc.to_owned(), "status" => s.as_str()).increment(1);
            }
            PartOutcome::Resend => {
                if let Some(job) = resend_job {
                    metrics::counter!("otpgate_sms_resent_total", "smsc" => smsc.to_owned())
                        .increment(1);
                    tracing::info!(smsc = %smsc, message_id = %message_id, "undeliverable code SMS sent again via another SMSC");
                    if let Err(e) = self.outbox.push(job).await {
                        tracing::warn!(message_id = %message_id, error = %e, "could not queue the re-send");
                    }
                }
            }
        }
        Ok(())
    }

    /// The job to send an undeliverable code SMS again, when its code is alive and its route
    /// has an SMSC other than `smsc`.
    async fn resend_job(
        &self,
        smsc: &str,
        message_id: &str,
        now_ms: i64,
    ) -> Result<Option<Job>, crate::store::Error> {
        let Some(rec) = self.store.messages.get(message_id).await? else {
            return Ok(None);
        };
        if !rec.owner.starts_with("ver_") {
            return Ok(None);
        }
        let Some(v) = self
            .store
            .verifications
            .get(&rec.client, &rec.owner)
            .await?
        else {
            return Ok(None);
        };
        if v.status_at(now_ms) != Status::Pending || v.message_id != message_id {
            return Ok(None);
        }
        let route = self.routing.route_of(&v.phone);
        let other = self
            .routing
            .smscs
            .iter()
            .any(|s| &*s.status.name != smsc && s.routes.contains(&route));
        if !other {
            return Ok(None);
        }
        Ok(Some(Job {
            exclude: Some(smsc.to_owned()),
            ..Job::new(
                message_id.to_owned(),
                v.phone.clone(),
                Body::Code {
                    verification_id: v.id.clone(),
                    digits: v.digits,
                    locale: v.locale,
                    ttl_secs: ((v.expires_at_ms - v.created_at_ms) / 1000).max(1) as u64,
                    key_id: v.key_id.clone(),
                },
                v.expires_at_ms,
                Priority::Code,
                route,
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_stats_map_to_contract_statuses() {
        assert_eq!(status_of_stat("DELIVRD"), Some(DeliveryStatus::Delivered));
        assert_eq!(
            status_of_stat("UNDELIV"),
            Some(DeliveryStatus::Undeliverable)
        );
        assert_eq!(
            status_of_stat("REJECTD"),
            Some(DeliveryStatus::Undeliverable)
        );
        assert_eq!(status_of_stat("EXPIRED"), Some(DeliveryStatus::Expired));
        assert_eq!(status_of_stat("DELETED"), Some(DeliveryStatus::Failed));
        assert_eq!(status_of_stat("UNKNOWN"), Some(DeliveryStatus::Failed));
        assert_eq!(status_of_stat("ENROUTE"), None);
        assert_eq!(status_of_stat("ACCEPTD"), None);
    }
}
