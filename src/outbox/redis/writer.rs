//! The durable outbox's writer: acknowledgements and releases, in order, each retried until
//! Redis takes it, so a Redis outage delays them but loses none.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{GROUP, RedisOutbox};
use crate::outbox::{JOB_KIND_SMS, JOB_VERSION, Job};

/// Where a handed-out job sits in Redis.
#[derive(Debug, Clone)]
pub(super) struct EntryRef {
    pub(super) stream: String,
    pub(super) id: String,
}

pub(super) enum WriteOp {
    /// Settled: acknowledge and delete.
    Ack(EntryRef),
    /// Back in the queue: re-add (to its stream, or the delay set) and acknowledge the old entry.
    Release(EntryRef, Box<Job>),
}

/// Writes acks and releases in order, retrying each until Redis takes it.
pub(super) async fn run_writer(outbox: Arc<RedisOutbox>, mut rx: mpsc::UnboundedReceiver<WriteOp>) {
    while let Some(op) = rx.recv().await {
        let mut backoff = Duration::from_millis(100);
        loop {
            match apply(&outbox, &op).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox: write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        if outbox
            .pending_writes
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            outbox.writer_idle.notify_waiters();
        }
    }
}

async fn apply(outbox: &RedisOutbox, op: &WriteOp) -> redis::RedisResult<()> {
    let mut c = outbox.conn.clone();
    let mut pipe = redis::pipe();
    pipe.atomic();
    match op {
        WriteOp::Ack(e) => {
            pipe.cmd("XACK")
                .arg(&e.stream)
                .arg(GROUP)
                .arg(&e.id)
                .ignore();
            pipe.cmd("XDEL").arg(&e.stream).arg(&e.id).ignore();
        }
        WriteOp::Release(e, job) => {
            let json = serde_json::to_string(job.as_ref()).unwrap_or_default();
            let stream = outbox.stream(&job.route, job.priority);
            if job.not_before_ms > outbox.clock.now_ms() {
                // An SMS job in the member form every version reads (move_due.lua); other
                // kinds name their version and kind, so the entry written keeps them.
                let member = match job.kind() {
                    JOB_KIND_SMS => format!("{stream}\n{json}"),
                    kind => format!("{stream}\n{JOB_VERSION}\n{kind}\n{json}"),
                };
                pipe.cmd("ZADD")
                    .arg(outbox.keys.outbox_delay())
                    .arg(job.not_before_ms)
                    .arg(member)
                    .ignore();
            } else {
                pipe.cmd("XADD")
                    .arg(&stream)
                    .arg("*")
                    .arg("v")
                    .arg(JOB_VERSION)
                    .arg("k")
                    .arg(job.kind())
                    .arg("j")
                    .arg(json)
                    .ignore();
            }
            pipe.cmd("XACK")
                .arg(&e.stream)
                .arg(GROUP)
                .arg(&e.id)
                .ignore();
            pipe.cmd("XDEL").arg(&e.stream).arg(&e.id).ignore();
        }
    }
    pipe.query_async(&mut c).await
}
