//! Applies what the SMPP sessions report to the stored messages: submitted, failed, expired,
//! and delivery receipts.
//!
//! Receipts are matched through the store ([`MessageStore::correlate`](crate::store::MessageStore::correlate),
//! [`MessageStore::match_receipt`](crate::store::MessageStore::match_receipt)), so a receipt finds its message
//! whichever bind — or whichever instance sharing the Redis — receives it, and whether it arrives
//! before or after the `submit_sm_resp` was processed. A code SMS that comes back
//! `UNDELIV`/`REJECTD` while its code is alive goes once more, avoiding the SMSC that failed,
//! when its route has another SMSC; the re-send is queued in the store step that records it
//! (Redis: by the script; memory: into room reserved before), so it is never recorded and lost.
//!
//! Nothing is dropped on a store error (contract §6 "Receipts are kept before they are
//! acknowledged"):
//! - a receipt is answered (`deliver_sm_resp` 0) only once the store has it — kept as an orphan
//!   or applied to its message — and `ESME_RX_T_APPN` while the store is down, so that the SMSC
//!   sends it again; while the store is known to be down, receipts are refused at once (one
//!   probe per [`PROBE_EVERY`]) rather than each waiting for a timeout;
//! - a submit result the store cannot take is parked and retried with backoff (100 ms doubling
//!   to 5 s), in order, until it is taken or the daemon stops; so is a final receipt whose
//!   re-send could not be queued (nothing of it recorded, its receipt unanswered meanwhile).
//!
//! Events are applied by [`start`]'s workers, one per shard of bounded channel chosen by
//! [`DeliveryEvent::shard_key`]: events with one key stay in order; a full shard (or a worker with
//! [`MAX_PARKED`] results parked) makes the sessions wait, so a flood slows the SMSC, not the
//! heap. A worker that panics is restarted: the step it was applying is lost (a receipt among
//! them goes unanswered, so the SMSC sends it again).

mod apply;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::outbox::{Outbox, Routing};
use crate::smpp::{AckBatch, DeliveryEvent, EventSink};
use crate::store::{DeliveryStatus, Stores};

use apply::Step;

/// What the tracker works with.
pub struct Tracker {
    pub store: Stores,
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

/// Submit results one worker keeps for retrying before it stops taking new events.
pub const MAX_PARKED: usize = 1024;
/// While the store is down, how often a receipt may try it (the others are refused at once).
pub const PROBE_EVERY: Duration = Duration::from_millis(250);
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Starts the tracker: `shards` workers, each reading a channel of `capacity` events. Returns
/// the sink for the sessions and a task that ends once every sender is gone and the events
/// are applied — or, for results the store cannot take, once `stop` is cancelled.
pub fn start(
    tracker: Tracker,
    shards: usize,
    capacity: usize,
    stop: CancellationToken,
) -> (EventSink, JoinHandle<()>) {
    let engine = Arc::new(Engine {
        tracker,
        stop,
        store_down: AtomicBool::new(false),
        last_probe: std::sync::Mutex::new(None),
    });
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

/// One shard: applies events in order; parks what the store could not take and retries it.
async fn work(engine: Arc<Engine>, rx: Arc<Mutex<mpsc::Receiver<DeliveryEvent>>>) {
    // The lock is the worker's for its life; a panicking worker releases it as it unwinds.
    let mut rx = rx.lock().await;
    let mut parked: VecDeque<Step> = VecDeque::new();
    let mut retry_at: Option<Instant> = None;
    let mut delay = RETRY_FIRST;
    let mut open = true;
    // Receipt answers, written when no event is waiting (or every 256): fewer writes and wake-ups.
    let mut acks = AckBatch::default();
    loop {
        let next_is_queued = open && parked.len() < MAX_PARKED && !rx.is_empty();
        if !acks.is_empty() && (!next_is_queued || acks.len() >= 256) {
            acks.flush();
        }
        if !open && parked.is_empty() {
            acks.flush();
            return;
        }
        let stopping = engine.stop.is_cancelled();
        // Stopping: one last try of what is parked, now.
        let wake = match retry_at {
            Some(t) if !stopping => t,
            _ => Instant::now(),
        };
        tokio::select! {
            biased;
            _ = engine.stop.cancelled(), if !stopping && !parked.is_empty() => {}
            _ = sleep_until(wake), if retry_at.is_some() || (stopping && !parked.is_empty()) => {
                // In order; the first that fails again means the store is still down.
                while let Some(step) = parked.pop_front() {
                    let left = engine.apply(step, &mut acks).await;
                    if !left.is_empty() {
                        for step in left.into_iter().rev() {
                            parked.push_front(step);
                        }
                        break;
                    }
                }
                if parked.is_empty() {
                    retry_at = None;
                    delay = RETRY_FIRST;
                } else if engine.stop.is_cancelled() {
                    tracing::warn!(events = parked.len(), "stopping with submit results the store never took");
                    parked.clear();
                    retry_at = None;
                } else {
                    delay = (delay * 2).min(RETRY_MAX);
                    retry_at = Some(Instant::now() + delay);
                }
            }
            ev = rx.recv(), if open && parked.len() < MAX_PARKED => {
                let Some(ev) = ev else {
                    open = false;
                    continue;
                };
                // Behind what is parked (same order), unless it is a receipt: those are
                // answered now either way.
                let left = if parked.is_empty() || matches!(ev, DeliveryEvent::Receipt { .. }) {
                    engine.apply(Step::Event(ev), &mut acks).await
                } else {
                    vec![Step::Event(ev)]
                };
                if !left.is_empty() {
                    metrics::counter!("otpgate_delivery_parked_total").increment(left.len() as u64);
                    parked.extend(left);
                    retry_at.get_or_insert_with(|| Instant::now() + delay);
                }
            }
        }
    }
}

struct Engine {
    tracker: Tracker,
    stop: CancellationToken,
    /// The last store call failed (cleared by the next that succeeds).
    store_down: AtomicBool,
    last_probe: std::sync::Mutex<Option<Instant>>,
}

impl Engine {
    fn mark(&self, ok: bool) {
        let was_down = self.store_down.swap(!ok, Ordering::Relaxed);
        // A change: down → up, or up → down.
        if was_down == ok {
            if ok {
                tracing::info!("store answers again; delivery events flow");
            } else {
                tracing::warn!(
                    "store unavailable; receipts answered ESME_RX_T_APPN, submit results parked"
                );
            }
        }
    }

    /// Whether a receipt may try the store now: always while it is up; while it is down, one
    /// receipt per [`PROBE_EVERY`].
    fn may_try_store(&self) -> bool {
        if !self.store_down.load(Ordering::Relaxed) {
            return true;
        }
        let Ok(mut last) = self.last_probe.lock() else {
            return true;
        };
        let now = Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= PROBE_EVERY) {
            *last = Some(now);
            return true;
        }
        false
    }
}
