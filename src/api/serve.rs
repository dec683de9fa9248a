//! The HTTP server loop: the router on hyper, with the edges a public service needs.
//!
//! `axum::serve` runs hyper without a timer, so hyper's header timeout is off and a client that
//! sends half a request head holds its connection for ever (slowloris). Here every connection
//! gets [`HEADER_TIMEOUT`] to send a complete request head, counted from the moment it is
//! accepted (a silent connection is closed too) and again after each response on a kept-alive
//! one (contract §6 "Slow clients"); the body has the same time as a whole (the `Json`
//! extractor). The number of open connections is bounded (past it, connections wait in the
//! kernel's backlog), and on shutdown in-flight requests get at most the drain cap before their
//! connections are cut, so one slow client cannot hold the SMS drain that follows.
//!
//! HTTP/1.1 only: the account platform's backend speaks it, and hyper-util's protocol sniffing
//! (HTTP/1 or HTTP/2) reads its first bytes with no timer at all, which is the slowloris hole
//! this module exists to close.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// A connection that has not sent a complete request head within this time is closed; a
/// request body that stalls this long is cut; on shutdown, in-flight requests get this long.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Open connections at most; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 16_384;

/// The edges of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Time to send a complete request head (and between body chunks).
    pub header_timeout: Duration,
    /// On shutdown: how long in-flight requests may still run.
    pub drain: Duration,
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: HEADER_TIMEOUT,
            drain: HEADER_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, lets in-flight
/// requests finish for at most `limits.drain` and cuts the connections still open after that.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
    limits: HttpLimits,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // The stop is looked at first, so no connection is taken once it was asked for.
        let permit = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        conns.spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    let open = conns.len();
    if tokio::time::timeout(limits.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = conns.len(),
            drain_s = limits.drain.as_secs_f64(),
            "HTTP drain cap reached: cutting the connections still open"
        );
    } else if open > 0 {
        tracing::info!(connections = open, "HTTP connections drained");
    }
    conns.shutdown().await;
}
