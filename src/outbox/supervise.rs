//! Supervision of the outbox's background tasks — the Redis writer, each consumer's reader and
//! heartbeat, the expiry sweeper — the way bind tasks and delivery workers are supervised
//! (ARCHITECTURE.md, "Supervision: restart, not exit"): a task that panics is restarted with a
//! fresh state after [`RESTART_AFTER`], counted in `otpgate_task_restarts_total{task, smsc}`
//! and logged as an error. A task that returns is not restarted, nor one that panics once its
//! `stop` is cancelled.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The pause before a panicked task runs again (one that panics at once does not spin).
pub const RESTART_AFTER: Duration = Duration::from_secs(1);

/// Runs `run()` as a task named `task` (of SMSC `smsc`, `"none"` for daemon-wide tasks) and
/// runs it again each time it panics, until it returns or `stop` is cancelled.
pub fn spawn<F, Fut>(
    task: &'static str,
    smsc: String,
    stop: CancellationToken,
    run: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match tokio::spawn(run()).await {
                Ok(()) => return,
                Err(e) if e.is_panic() => {
                    metrics::counter!("otpgate_task_restarts_total", "task" => task, "smsc" => smsc.clone())
                        .increment(1);
                    tracing::error!(task, smsc = %smsc,
                        "outbox task panicked; restarting it with a fresh state");
                }
                // Cancelled: the runtime is going away.
                Err(_) => return,
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RESTART_AFTER) => {}
            }
        }
    })
}
