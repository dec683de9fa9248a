//! The supervisor of one bind: reconnect with backoff until shutdown, then drain.

use std::time::Duration;

use rand::Rng;
use rusmpp::values::{Npi, Ton};
use tokio::time::{Instant, sleep};

use super::BindContext;
use super::connection::{Session, connect_and_bind};

/// Supervises one bind until shutdown: reconnects with backoff after any drop.
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
        match connect_and_bind(&ctx).await {
            Ok(conn) => {
                backoff = Duration::from_secs(1);
                tracing::info!(smsc = %ctx.status.name, bind = bind_index, "bound");
                ctx.status.session_up();
                let consumer = ctx.outbox.consumer(
                    &ctx.routes,
                    &ctx.status.name,
                    bind_index,
                    ctx.routing.clone(),
                    ctx.config.window as usize,
                );
                let mut session = Session::new(&ctx, &source, conn.seq_next, consumer);
                let result = session
                    .run(conn.reader, conn.buf, conn.writer, &mut drain_deadline)
                    .await;
                ctx.status.session_down();
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
        let wait = backoff.mul_f64(jitter);
        tokio::select! {
            _ = sleep(wait) => {}
            _ = ctx.shutdown.cancelled(), if drain_deadline.is_none() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}
