//! The expiry sweeper: jobs whose validity ended are removed wherever they wait — queued for a
//! route whose SMSC is away, bouncing between SMSCs (`avoid`/`exclude`), waiting for a retry —
//! and their messages become `expired`, instead of showing `queued` long after they died.
//! What a session already took it expires itself (at submit time).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Outbox;
use crate::clock::Clock;
use crate::store::messages::{DeliveryStatus, MessageStore, MessageUpdate};

/// How often the outbox is swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// Sweeps `outbox` every [`SWEEP_EVERY`] until `stop` (supervised: restarted when it panics).
pub fn spawn(
    outbox: Outbox,
    messages: Arc<dyn MessageStore>,
    clock: Clock,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    super::supervise::spawn("outbox_sweeper", "none".into(), stop.clone(), move || {
        let (outbox, messages, clock, stop) = (
            outbox.clone(),
            messages.clone(),
            clock.clone(),
            stop.clone(),
        );
        async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                sweep_once(&outbox, messages.as_ref(), &clock).await;
            }
        }
    })
}

/// One sweep: removes what expired and marks those messages `expired`.
pub async fn sweep_once(outbox: &Outbox, messages: &dyn MessageStore, clock: &Clock) {
    let now_ms = clock.now_ms();
    let ids = match outbox.take_expired(now_ms).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "outbox: expiry sweep failed");
            return;
        }
    };
    for id in ids {
        metrics::counter!("otpgate_sms_total", "smsc" => "none", "status" => "expired")
            .increment(1);
        let update = MessageUpdate {
            status: DeliveryStatus::Expired,
            at_ms: now_ms,
            error: Some("validity ended before an SMSC accepted it".into()),
        };
        let mut backoff = Duration::from_millis(100);
        for _ in 0..5 {
            match messages.update(&id, &update).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, message = %id, "outbox: expired message not recorded; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        }
    }
}
