//! The supervisor of one bind: reconnect with backoff until shutdown, then drain; and above it
//! [`spawn_supervised`], which restarts a bind task that panicked.

use std::time::Duration;

use rand::Rng;
use rusmpp::values::{Npi, Ton};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use super::BindContext;
use super::connection::{Session, connect_and_bind};
use crate::smpp::SmscStatus;

/// Starts one bind as a supervised task: when [`run_bind`] panics, its state is dropped (the
/// messages it had in flight go back to the outbox, the SMSC counts one session less, so
/// `/readyz` shows it `down` while no other bind is up) and a fresh one starts after 1 s. It
/// ends when `run_bind` returns (after shutdown) — or, after a panic, when shutdown began.
pub fn spawn_supervised(ctx: BindContext, bind_index: u32) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let task = tokio::spawn(run_bind(ctx.clone(), bind_index));
            match task.await {
                Ok(()) => return,
                Err(e) if e.is_panic() => {
                    metrics::counter!("otpgate_task_restarts_total", "task" => "smpp_bind", "smsc" => ctx.status.name.to_string()).increment(1);
                    tracing::error!(smsc = %ctx.status.name, bind = bind_index,
                        "bind task panicked; restarting it with a fresh state");
                }
                // Cancelled: the runtime is going away.
                Err(_) => return,
            }
            tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    })
}

/// Counts one bound session of an SMSC while it lives (also when its task panics).
struct BoundSession<'a>(&'a SmscStatus);

impl<'a> BoundSession<'a> {
    fn new(status: &'a SmscStatus) -> BoundSession<'a> {
        status.session_up();
        BoundSession(status)
    }
}

impl Drop for BoundSession<'_> {
    fn drop(&mut self) {
        self.0.session_down();
    }
}

/// Supervises one bind until shutdown: reconnects with backoff after any drop. Once shutdown
/// began, nothing here waits past the drain deadline (`shutdown_grace` after it began): not a
/// connect, not a bind, not a backoff sleep.
pub async fn run_bind(ctx: BindContext, bind_index: u32) {
    let source = crate::smpp::addressing::source_address(&ctx.config.source_addr).unwrap_or((
        Ton::Alphanumeric,
        Npi::Unknown,
        "otpgate".into(),
    ));
    let mut backoff = Duration::from_secs(1);
    let mut drain_deadline: Option<Instant> = None;
    loop {
        if ctx.shutdown.is_cancelled() {
            let deadline =
                *drain_deadline.get_or_insert_with(|| Instant::now() + ctx.shutdown_grace);
            if Instant::now() >= deadline || ctx.outbox.is_empty_for(&ctx.routes).await {
                break;
            }
        }
        // Draining: connecting and binding may take no longer than the drain has left.
        let connected = match drain_deadline {
            None => connect_and_bind(&ctx).await,
            Some(deadline) => match tokio::time::timeout_at(deadline, connect_and_bind(&ctx)).await
            {
                Ok(r) => r,
                Err(_) => break,
            },
        };
        match connected {
            Ok(conn) => {
                backoff = Duration::from_secs(1);
                tracing::info!(smsc = %ctx.status.name, bind = bind_index, "bound");
                let bound = BoundSession::new(&ctx.status);
                let consumer = ctx.outbox.consumer(
                    &ctx.routes,
                    &ctx.status.name,
                    bind_index,
                    ctx.routing.clone(),
                    ctx.config.window as usize,
                );
                let mut session = Session::new(&ctx, &source, consumer, &conn);
                let result = session.run(conn, &mut drain_deadline).await;
                drop(session);
                drop(bound);
                match result {
                    Ok(()) => {
                        tracing::info!(smsc = %ctx.status.name, bind = bind_index, "unbound");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(smsc = %ctx.status.name, bind = bind_index, error = %e,
                            "session lost; reconnecting");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(smsc = %ctx.status.name, bind = bind_index, error = %e,
                    retry_in_ms = backoff.as_millis() as u64, "bind failed");
            }
        }
        let jitter = rand::rng().random_range(0.8..1.2);
        let mut wake = Instant::now() + backoff.mul_f64(jitter);
        if let Some(deadline) = drain_deadline {
            wake = wake.min(deadline);
        }
        tokio::select! {
            _ = sleep_until(wake) => {}
            _ = ctx.shutdown.cancelled(), if drain_deadline.is_none() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}
