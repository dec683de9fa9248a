//! Applying one step to the store: a session's event, or what is left of it after a store
//! error (so a retry never repeats what the store already took).

use std::sync::Arc;

use super::{Engine, status_of_stat};
use crate::outbox::{Job, Outbox};
use crate::smpp::{AckBatch, DeliveryEvent, ESME_RX_T_APPN, ReceiptAck};
use crate::store::{
    DeliveryStatus, MessageUpdate, PartOutcome, PartReceipt, ReceiptIds, ReceiptMatch, ReceiptOf,
    ReceiptPart, Status,
};

/// Why a message is `submitted` with nothing more to come.
const NO_RECEIPT_ID: &str = "the SMSC gave no message id: no receipt can be matched";

/// Work for the store.
pub(super) enum Step {
    Event(DeliveryEvent),
    /// A receipt kept while its SMSC's `receipt_ids` rule was unknown (already answered), to
    /// match again under the rule just learned.
    Replay {
        smsc: Arc<str>,
        rule: ReceiptIds,
        smsc_id: String,
        stat: String,
    },
    /// A final receipt matched to its message (the correlation is taken: only this step knows
    /// it any more), to record; its SMSC is answered after.
    Final {
        smsc: Arc<str>,
        of: ReceiptOf,
        stat: String,
        ack: Option<ReceiptAck>,
    },
}

impl Engine {
    /// Applies one step; returns what the store could not take (to retry, in order). The
    /// answers to receipts go into `acks`.
    pub(super) async fn apply(&self, step: Step, acks: &mut AckBatch) -> Vec<Step> {
        match step {
            Step::Event(ev) => self.event(ev, acks).await,
            Step::Replay {
                smsc,
                rule,
                smsc_id,
                stat,
            } => self.replay(smsc, rule, smsc_id, stat, acks).await,
            Step::Final {
                smsc,
                of,
                stat,
                ack,
            } => self.final_receipt(smsc, of, stat, ack, acks).await,
        }
    }

    async fn event(&self, ev: DeliveryEvent, acks: &mut AckBatch) -> Vec<Step> {
        let now_ms = self.tracker.clock.now_ms();
        let (message_id, update) = match &ev {
            DeliveryEvent::Submitted { .. } => return self.submitted(ev, acks).await,
            DeliveryEvent::Receipt { .. } => return self.receipt(ev, acks).await,
            DeliveryEvent::Failed {
                message_id, error, ..
            } => (
                message_id,
                MessageUpdate {
                    status: DeliveryStatus::Failed,
                    at_ms: now_ms,
                    error: Some(error.clone()),
                },
            ),
            DeliveryEvent::Expired { message_id, .. } => (
                message_id,
                MessageUpdate {
                    status: DeliveryStatus::Expired,
                    at_ms: now_ms,
                    error: Some("validity ended before an SMSC accepted it".into()),
                },
            ),
        };
        let done = self
            .tracker
            .store
            .messages
            .update(message_id, &update)
            .await;
        self.mark(done.is_ok());
        if let Err(e) = done {
            tracing::debug!(error = %e, "message status not recorded; parked");
            return vec![Step::Event(ev)];
        }
        if let Some(entry) = ev.outbox_entry() {
            self.tracker.outbox.settled(entry);
        }
        let smsc = match &ev {
            DeliveryEvent::Failed { smsc, .. } => smsc.to_string(),
            _ => "none".to_owned(),
        };
        metrics::counter!("otpgate_sms_total", "smsc" => smsc, "status" => update.status.as_str())
            .increment(1);
        Vec::new()
    }

    /// `submitted` and the receipt ids, in one store call; then the receipts that came first.
    async fn submitted(&self, ev: DeliveryEvent, acks: &mut AckBatch) -> Vec<Step> {
        let DeliveryEvent::Submitted {
            message_id,
            smsc,
            smsc_message_ids,
            outbox_entry,
        } = &ev
        else {
            return Vec::new();
        };
        let ids = receipt_ids(smsc_message_ids);
        let update = MessageUpdate {
            status: DeliveryStatus::Submitted,
            at_ms: self.tracker.clock.now_ms(),
            error: ids.is_empty().then(|| NO_RECEIPT_ID.to_owned()),
        };
        let done = self
            .tracker
            .store
            .messages
            .record_submitted(message_id, smsc, &ids, &update)
            .await;
        self.mark(done.is_ok());
        let done = match done {
            Ok(done) => done,
            Err(e) => {
                tracing::debug!(error = %e, "message status not recorded; parked");
                return vec![Step::Event(ev)];
            }
        };
        // Recorded: the outbox entry goes (a crash before this line sends it again, as one
        // of the messages in flight).
        if let Some(entry) = outbox_entry {
            self.tracker.outbox.settled(entry);
        }
        metrics::counter!("otpgate_sms_total", "smsc" => smsc.to_string(), "status" => "submitted")
            .increment(1);
        if ids.is_empty() {
            tracing::warn!(smsc = %smsc, message_id = %message_id, "{NO_RECEIPT_ID}");
        }
        let (_, replays) = self.learned(
            smsc,
            ReceiptMatch {
                message: None,
                learned: done.learned,
            },
        );
        let steps: Vec<Step> = done
            .early
            .into_iter()
            .map(|stat| Step::Final {
                smsc: smsc.clone(),
                of: ReceiptOf {
                    message_id: message_id.clone(),
                    parts: ids.len() as u32,
                    send: done.send,
                },
                stat,
                ack: None,
            })
            .chain(replays)
            .collect();
        self.apply_all(steps, acks).await
    }

    async fn receipt(&self, ev: DeliveryEvent, acks: &mut AckBatch) -> Vec<Step> {
        let DeliveryEvent::Receipt {
            smsc,
            smsc_message_id,
            stat,
            receipt_ids,
            ack,
        } = ev
        else {
            return Vec::new();
        };
        let Some(status) = status_of_stat(&stat) else {
            ack.answer_into(0, acks);
            return Vec::new();
        };
        if !self.may_try_store() {
            metrics::counter!("otpgate_receipts_deferred_total", "smsc" => smsc.to_string())
                .increment(1);
            ack.answer_into(ESME_RX_T_APPN, acks);
            return Vec::new();
        }
        let now_ms = self.tracker.clock.now_ms();
        let store = &self.tracker.store.messages;
        // Matched and applied in one step where the store can; else matched, then applied.
        let part = ReceiptPart {
            status,
            error: part_error(status, &stat),
            at_ms: now_ms,
        };
        let one = store
            .record_receipt(&smsc, receipt_ids, &smsc_message_id, &stat, &part)
            .await;
        let (matched, outcome) = match one {
            Ok(Some(r)) => (Ok(r.matched), r.outcome),
            Ok(None) => (
                store
                    .match_receipt(&smsc, receipt_ids, &smsc_message_id, &stat, now_ms)
                    .await,
                None,
            ),
            Err(e) => (Err(e), None),
        };
        self.mark(matched.is_ok());
        let matched = matched.map(|m| self.learned(&smsc, m));
        match matched {
            Err(e) => {
                // Not kept: the SMSC must send it again.
                metrics::counter!("otpgate_receipts_deferred_total", "smsc" => smsc.to_string())
                    .increment(1);
                tracing::debug!(smsc = %smsc, error = %e, "store down; receipt answered ESME_RX_T_APPN");
                ack.answer_into(ESME_RX_T_APPN, acks);
                Vec::new()
            }
            Ok((None, replays)) => {
                tracing::debug!(smsc = %smsc, "receipt before its submit_sm_resp; kept");
                ack.answer_into(0, acks);
                self.apply_all(replays, acks).await
            }
            Ok((Some(_), replays)) if outcome.is_some() => {
                ack.answer_into(0, acks);
                if let Some(PartOutcome::Final(s)) = outcome {
                    metrics::counter!("otpgate_sms_total", "smsc" => smsc.to_string(), "status" => s.as_str()).increment(1);
                }
                self.apply_all(replays, acks).await
            }
            Ok((Some(of), mut replays)) => {
                let mut left = self.final_receipt(smsc, of, stat, Some(ack), acks).await;
                if left.is_empty() {
                    left = self.apply_all(replays, acks).await;
                } else {
                    left.append(&mut replays);
                }
                left
            }
        }
    }

    /// A match, and the receipts to match again when it fixed the SMSC's rule.
    fn learned(&self, smsc: &Arc<str>, m: ReceiptMatch) -> (Option<ReceiptOf>, Vec<Step>) {
        let replays = match m.learned {
            None => Vec::new(),
            Some((rule, pool)) => {
                tracing::info!(smsc = %smsc, rule = rule.letter(), kept = pool.len(), "receipt_ids learned for this SMSC");
                pool.into_iter()
                    .map(|(smsc_id, stat)| Step::Replay {
                        smsc: smsc.clone(),
                        rule,
                        smsc_id,
                        stat,
                    })
                    .collect()
            }
        };
        (m.message, replays)
    }

    /// Applies steps in order; returns the first that the store could not take and the rest.
    async fn apply_all(&self, steps: Vec<Step>, acks: &mut AckBatch) -> Vec<Step> {
        let mut left = Vec::new();
        for step in steps {
            if left.is_empty() {
                left = Box::pin(self.apply(step, acks)).await;
            } else {
                left.push(step);
            }
        }
        left
    }

    /// A receipt kept while the rule was unknown, matched again under it.
    async fn replay(
        &self,
        smsc: Arc<str>,
        rule: ReceiptIds,
        smsc_id: String,
        stat: String,
        acks: &mut AckBatch,
    ) -> Vec<Step> {
        let now_ms = self.tracker.clock.now_ms();
        let matched = self
            .tracker
            .store
            .messages
            .match_receipt(&smsc, rule, &smsc_id, &stat, now_ms)
            .await;
        self.mark(matched.is_ok());
        match matched {
            Err(e) => {
                tracing::debug!(error = %e, "kept receipt not matched again; parked");
                vec![Step::Replay {
                    smsc,
                    rule,
                    smsc_id,
                    stat,
                }]
            }
            Ok(ReceiptMatch {
                message: Some(of), ..
            }) => self.final_receipt(smsc, of, stat, None, acks).await,
            Ok(ReceiptMatch { message: None, .. }) => Vec::new(),
        }
    }

    async fn final_receipt(
        &self,
        smsc: Arc<str>,
        of: ReceiptOf,
        stat: String,
        ack: Option<ReceiptAck>,
        acks: &mut AckBatch,
    ) -> Vec<Step> {
        let Some(status) = status_of_stat(&stat) else {
            if let Some(ack) = ack {
                ack.answer_into(0, acks);
            }
            return Vec::new();
        };
        let now_ms = self.tracker.clock.now_ms();
        // Only the first send goes once more.
        let resend_job = if status == DeliveryStatus::Undeliverable && of.send == 0 {
            let job = self.resend_job(&smsc, &of.message_id, now_ms).await;
            self.mark(job.is_ok());
            match job {
                Ok(job) => job,
                Err(e) => {
                    tracing::debug!(error = %e, "receipt not recorded; parked");
                    return vec![Step::Final {
                        smsc,
                        of,
                        stat,
                        ack,
                    }];
                }
            }
        } else {
            None
        };
        // The re-send is queued in the step that records it, or not at all (a transactional
        // outbox): with Redis the store's script writes its outbox entry; the memory outbox
        // cannot be part of the store's step, so room is reserved first and the push after
        // the step cannot fail.
        let (in_store, room) = match (&resend_job, &self.tracker.outbox) {
            (None, _) => (None, None),
            (Some(job), Outbox::Redis(_)) => (Some(job), None),
            (Some(_), Outbox::Memory(m)) => match m.reserve() {
                Ok(room) => (None, Some(room)),
                Err(e) => {
                    tracing::debug!(message_id = %of.message_id, error = %e, "no room for the re-send; receipt parked");
                    return vec![Step::Final {
                        smsc,
                        of,
                        stat,
                        ack,
                    }];
                }
            },
        };
        let part = PartReceipt {
            parts: of.parts,
            status,
            error: part_error(status, &stat),
            resend: resend_job.is_some(),
            at_ms: now_ms,
            send: of.send,
        };
        let outcome = self
            .tracker
            .store
            .messages
            .record_part(&of.message_id, &part, in_store)
            .await;
        self.mark(outcome.is_ok());
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                // Nothing was recorded (nor queued): the whole step goes again.
                tracing::debug!(error = %e, "receipt not recorded; parked");
                return vec![Step::Final {
                    smsc,
                    of,
                    stat,
                    ack,
                }];
            }
        };
        match outcome {
            PartOutcome::Pending => {}
            PartOutcome::Final(s) => {
                metrics::counter!("otpgate_sms_total", "smsc" => smsc.to_string(), "status" => s.as_str()).increment(1);
            }
            PartOutcome::Resend => {
                if let (Some(room), Some(job)) = (room, resend_job) {
                    room.push(job);
                }
                metrics::counter!("otpgate_sms_resent_total", "smsc" => smsc.to_string())
                    .increment(1);
                tracing::info!(smsc = %smsc, message_id = %of.message_id, "undeliverable code SMS sent again via another SMSC");
            }
        }
        // Kept (and the re-send queued): now the SMSC may forget it.
        if let Some(ack) = ack {
            ack.answer_into(0, acks);
        }
        Vec::new()
    }

    /// The job to send an undeliverable code SMS again, when its code is alive and its route
    /// has an SMSC other than `smsc`.
    async fn resend_job(
        &self,
        smsc: &str,
        message_id: &str,
        now_ms: i64,
    ) -> Result<Option<Job>, crate::store::Error> {
        let Some(rec) = self.tracker.store.messages.get(message_id).await? else {
            return Ok(None);
        };
        if !rec.owner.starts_with("ver_") {
            return Ok(None);
        }
        let Some(v) = self
            .tracker
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
        let route = self.tracker.routing.route_of(&v.phone);
        let other = self
            .tracker
            .routing
            .smscs
            .iter()
            .any(|s| &*s.status.name != smsc && s.routes.contains(&route));
        if !other {
            return Ok(None);
        }
        Ok(Some(Job {
            exclude: Some(smsc.to_owned()),
            ..crate::otp::job::code_job(&v, message_id, route)
        }))
    }
}

/// What a part's receipt says when it was not delivered (e.g. `receipt stat UNDELIV`).
fn part_error(status: DeliveryStatus, stat: &str) -> Option<String> {
    (status != DeliveryStatus::Delivered).then(|| format!("receipt stat {stat}"))
}

/// The SMSC ids receipts can be matched on: distinct and non-empty, in part order. An SMSC that
/// gives every part the same id sends receipts we cannot tell apart: one settles the message;
/// an empty id can never be matched.
fn receipt_ids(ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        if !id.is_empty() && !out.contains(id) {
            out.push(id.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::status_of_stat;

    #[test]
    fn receipt_ids_skip_empty_and_repeated_ones() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(receipt_ids(&ids(&["A", "A", "A"])), ids(&["A"]));
        assert_eq!(receipt_ids(&ids(&["", ""])), Vec::<String>::new());
        assert_eq!(receipt_ids(&ids(&["1", "", "2", "1"])), ids(&["1", "2"]));
    }

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
