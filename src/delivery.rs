//! Applies what the SMPP sessions report to the stored messages: submitted, failed, expired,
//! and delivery receipts.
//!
//! Receipts are matched through the store ([`Store::correlate`], [`Store::match_receipt`]), so
//! a receipt finds its message whichever bind — or whichever instance sharing the Redis —
//! receives it, and whether it arrives before or after the `submit_sm_resp` was processed.
//! A code SMS that comes back `UNDELIV`/`REJECTD` while its code is alive goes once more,
//! avoiding the SMSC that failed, when its route has another SMSC.
//!
//! Nothing is dropped on a store error: a receipt is answered (`deliver_sm_resp` 0) only once
//! the store has it, and `ESME_RX_T_APPN` while the store is down, so the SMSC sends it again
//! (contract §6); submit results are retried with backoff until the store takes them (or the
//! daemon stops). Events are applied by several workers ([`start`]), each owning a shard of
//! bounded channel: events with the same [`DeliveryEvent::shard_key`] stay in order, and a
//! full shard slows the session that feeds it. A worker that panics is restarted (the event it
//! was applying is lost; a receipt among them goes unanswered, so the SMSC sends it again).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::outbox::{Body, Job, Outbox, Priority, Routing};
use crate::smpp::{DeliveryEvent, ESME_RX_T_APPN, EventSink};
use crate::store::{
    AnyStore, DeliveryStatus, MessageUpdate, PartOutcome, PartReceipt, Status, Store,
};

/// Why a message is `submitted` with nothing more to come.
const NO_RECEIPT_ID: &str = "the SMSC gave no message id: no receipt can be matched";

pub struct Tracker {
    pub store: AnyStore,
    pub outbox: Outbox,
    pub routing: Arc<Routing>,
    pub clock: Clock,
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

/// Starts the tracker: `shards` workers, each reading a channel of `capacity` events. Returns
/// the sink for the sessions and a task that ends once every sender is gone and the events
/// are applied — or, for events the store cannot take, once `stop` is cancelled.
pub fn start(
    tracker: Tracker,
    shards: usize,
    capacity: usize,
    stop: CancellationToken,
) -> (EventSink, JoinHandle<()>) {
    let engine = Arc::new(Engine { tracker, stop });
    let mut senders = Vec::new();
    let mut supervisors = Vec::new();
    for shard in 0..shards.max(1) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        senders.push(tx);
        supervisors.push(tokio::spawn(supervise(
            engine.clone(),
            Arc::new(Mutex::new(rx)),
            shard,
        )));
    }
    let all = tokio::spawn(async move {
        for s in supervisors {
            let _ = s.await;
        }
    });
    (EventSink::new(senders), all)
}

/// Runs one shard's worker; restarts it when it panics.
async fn supervise(
    engine: Arc<Engine>,
    rx: Arc<Mutex<mpsc::Receiver<DeliveryEvent>>>,
    shard: usize,
) {
    loop {
        let worker = tokio::spawn(work(engine.clone(), rx.clone()));
        match worker.await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                metrics::counter!("otpgate_task_restarts_total", "task" => "delivery", "smsc" => "none").increment(1);
                tracing::error!(shard, "delivery worker panicked; restarting it");
            }
            Err(_) => return,
        }
    }
}

async fn work(engine: Arc<Engine>, rx: Arc<Mutex<mpsc::Receiver<DeliveryEvent>>>) {
    // The lock is the worker's for its life; a panicking worker releases it as it unwinds.
    let mut rx = rx.lock().await;
    while let Some(ev) = rx.recv().await {
        engine.apply(ev).await;
    }
}

struct Engine {
    tracker: Tracker,
    stop: CancellationToken,
}

/// The SMSC ids receipts can be matched on: distinct and non-empty, in part order. An SMSC that
/// gives every part the same id sends one receipt for it that we can tell apart; an empty id
/// can never be matched.
fn receipt_ids(ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        if !id.is_empty() && !out.contains(id) {
            out.push(id.clone());
        }
    }
    out
}

impl Engine {
    /// Runs a store operation until it succeeds, with backoff (100 ms doubling to 5 s); `None`
    /// when the daemon stopped first.
    async fn retry<T, Fut>(&self, what: &str, mut op: impl FnMut() -> Fut) -> Option<T>
    where
        Fut: Future<Output = Result<T, crate::store::Error>>,
    {
        let mut delay = Duration::from_millis(100);
        let mut failures = 0u32;
        loop {
            match op().await {
                Ok(v) => {
                    if failures > 0 {
                        tracing::info!(what, failures, "recorded after the store came back");
                    }
                    return Some(v);
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(what, error = %e, "store unavailable; retrying");
                    }
                    metrics::counter!("otpgate_delivery_store_retries_total").increment(1);
                }
            }
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => {
                    tracing::warn!(what, "daemon stopping with the store unavailable; event not recorded");
                    return None;
                }
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn update(&self, message_id: &str, update: MessageUpdate) -> Option<()> {
        let store = &self.tracker.store;
        let u = &update;
        self.retry("message status", move || {
            store.update_message(message_id, u)
        })
        .await
    }

    async fn apply(&self, ev: DeliveryEvent) {
        let store = &self.tracker.store;
        let now_ms = self.tracker.clock.now_ms();
        match ev {
            DeliveryEvent::Submitted {
                message_id,
                smsc,
                smsc_message_ids,
            } => {
                metrics::counter!("otpgate_sms_total", "smsc" => smsc.to_string(), "status" => "submitted").increment(1);
                let ids = receipt_ids(&smsc_message_ids);
                if ids.is_empty() {
                    tracing::warn!(smsc = %smsc, message_id = %message_id, "{NO_RECEIPT_ID}");
                }
                let update = MessageUpdate {
                    status: DeliveryStatus::Submitted,
                    at_ms: now_ms,
                    error: ids.is_empty().then(|| NO_RECEIPT_ID.to_owned()),
                };
                if self.update(&message_id, update).await.is_none() || ids.is_empty() {
                    return;
                }
                let (id, smsc_ref, ids_ref) = (message_id.as_str(), &*smsc, ids.as_slice());
                let Some(early) = self
                    .retry("receipt correlation", move || {
                        store.correlate(smsc_ref, ids_ref, id, now_ms)
                    })
                    .await
                else {
                    return;
                };
                for stat in early {
                    self.final_receipt(&smsc, &message_id, ids.len() as u32, &stat)
                        .await;
                }
            }
            DeliveryEvent::Failed {
                message_id,
                smsc,
                error,
            } => {
                metrics::counter!("otpgate_sms_total", "smsc" => smsc.to_string(), "status" => "failed").increment(1);
                let update = MessageUpdate {
                    status: DeliveryStatus::Failed,
                    at_ms: now_ms,
                    error: Some(error),
                };
                self.update(&message_id, update).await;
            }
            DeliveryEvent::Expired { message_id } => {
                metrics::counter!("otpgate_sms_total", "smsc" => "none", "status" => "expired")
                    .increment(1);
                let update = MessageUpdate {
                    status: DeliveryStatus::Expired,
                    at_ms: now_ms,
                    error: Some("validity ended before an SMSC accepted it".into()),
                };
                self.update(&message_id, update).await;
            }
            DeliveryEvent::Receipt {
                smsc,
                smsc_message_id,
                stat,
                ack,
            } => {
                if status_of_stat(&stat).is_none() {
                    ack.answer(0).await;
                    return;
                }
                match store
                    .match_receipt(&smsc, &smsc_message_id, &stat, now_ms)
                    .await
                {
                    Err(e) => {
                        // Not kept: the SMSC must send it again.
                        metrics::counter!("otpgate_receipts_deferred_total", "smsc" => smsc.to_string()).increment(1);
                        tracing::debug!(smsc = %smsc, error = %e, "store down; receipt answered ESME_RX_T_APPN");
                        ack.answer(ESME_RX_T_APPN).await;
                    }
                    Ok(None) => {
                        tracing::debug!(smsc = %smsc, "receipt before its submit_sm_resp; kept");
                        ack.answer(0).await;
                    }
                    Ok(Some((message_id, parts))) => {
                        // The correlation is taken: from here on this worker owns the receipt
                        // and records it through outages.
                        self.final_receipt(&smsc, &message_id, parts, &stat).await;
                        ack.answer(0).await;
                    }
                }
            }
        }
    }

    async fn final_receipt(&self, smsc: &str, message_id: &str, parts: u32, stat: &str) {
        let Some(status) = status_of_stat(stat) else {
            return;
        };
        let now_ms = self.tracker.clock.now_ms();
        let resend_job = if status == DeliveryStatus::Undeliverable {
            let Some(job) = self
                .retry("re-send check", || {
                    self.resend_job(smsc, message_id, now_ms)
                })
                .await
            else {
                return;
            };
            job
        } else {
            None
        };
        let part = PartReceipt {
            parts,
            status,
            error: (status != DeliveryStatus::Delivered).then(|| format!("receipt stat {stat}")),
            resend: resend_job.is_some(),
            at_ms: now_ms,
        };
        let store = &self.tracker.store;
        let p = &part;
        let Some(outcome) = self
            .retry("receipt", move || store.record_part(message_id, p))
            .await
        else {
            return;
        };
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
                    if let Err(e) = self.tracker.outbox.push(job).await {
                        tracing::warn!(message_id = %message_id, error = %e, "could not queue the re-send");
                    }
                }
            }
        }
    }

    /// The job to send an undeliverable code SMS again, when its code is alive and its route
    /// has an SMSC other than `smsc`.
    async fn resend_job(
        &self,
        smsc: &str,
        message_id: &str,
        now_ms: i64,
    ) -> Result<Option<Job>, crate::store::Error> {
        let Some(rec) = self.tracker.store.get_message(message_id).await? else {
            return Ok(None);
        };
        if !rec.owner.starts_with("ver_") {
            return Ok(None);
        }
        let Some(v) = self
            .tracker
            .store
            .get_verification(&rec.client, &rec.owner)
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
            ..Job::new(
                message_id.to_owned(),
                v.phone.clone(),
                Body::Code {
                    verification_id: v.id.clone(),
                    digits: v.digits,
                    locale: v.locale,
                    ttl_secs: ((v.expires_at_ms - v.created_at_ms) / 1000).max(1) as u64,
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
