//! The durable outbox's writer: acknowledgements and releases, in order, each retried until
//! Redis takes it, so a Redis outage delays them but loses none. It holds no handle on the
//! outbox itself: it ends once the outbox (the last sender) is gone, after writing what was
//! queued. It runs supervised ([`crate::outbox::supervise`]): a writer that panics is replaced by
//! one that takes over its queue ([`WriterInput`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::{Notify, mpsc};

use super::GROUP;
use crate::clock::Clock;
use crate::outbox::{JOB_KIND_SMS, JOB_VERSION, Job};
use crate::store::keys::Keys;

/// Where a handed-out job sits in Redis.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct EntryRef {
    pub(super) stream: String,
    pub(super) id: String,
}

pub(super) enum WriteOp {
    /// Settled: acknowledge and delete.
    Ack(EntryRef),
    /// Back in the queue: re-add (to its stream, or the delay set) and acknowledge the old
    /// entry. `raw` is the job as the entry holds it: fields this version does not know (an
    /// older or newer writer's) are kept.
    Release {
        entry: EntryRef,
        job: Box<Job>,
        raw: String,
    },
}

/// What the writer needs, without the outbox (whose sender it would otherwise keep alive).
pub(super) struct WriterCtx {
    pub(super) conn: ConnectionManager,
    pub(super) keys: Keys,
    pub(super) clock: Clock,
    pub(super) pending: Arc<AtomicUsize>,
    pub(super) idle: Arc<Notify>,
    pub(super) settling: Arc<Mutex<HashSet<EntryRef>>>,
}

impl WriteOp {
    pub(super) fn entry(&self) -> &EntryRef {
        match self {
            WriteOp::Ack(e) => e,
            WriteOp::Release { entry, .. } => entry,
        }
    }
}

/// The writer's input, shared by the successive writer tasks of its supervisor: the queue,
/// and the op being written — so that the writer that replaces one that panicked loses nothing
/// queued and tries the interrupted op once more.
pub(super) struct WriterInput {
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<WriteOp>>,
    /// The op being written, and how many times it was tried again after a writer panicked.
    current: Mutex<Option<(Arc<WriteOp>, u32)>>,
}

impl WriterInput {
    pub(super) fn new(rx: mpsc::UnboundedReceiver<WriteOp>) -> Arc<WriterInput> {
        Arc::new(WriterInput {
            queue: tokio::sync::Mutex::new(rx),
            current: Mutex::new(None),
        })
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<(Arc<WriteOp>, u32)>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The op a writer that panicked was writing, to try once more; given up (and `None`)
    /// when it already made a writer panic after such a retry: its entry stays pending in
    /// Redis, so it is claimed again after `CLAIM_IDLE` — possibly sent twice, never lost.
    fn resume(&self, ctx: &WriterCtx) -> Option<Arc<WriteOp>> {
        let mut current = self.current();
        let (op, retries) = current.take()?;
        if retries == 0 {
            *current = Some((op.clone(), 1));
            return Some(op);
        }
        drop(current);
        let e = op.entry();
        tracing::error!(stream = %e.stream, entry = %e.id,
            "outbox: a write that made the writer panic twice is given up; the entry stays pending");
        finished(ctx, &op);
        None
    }
}

/// Writes acks and releases in order, retrying each until Redis takes it; ends once every
/// sender is gone and the queue is written.
pub(super) async fn run_writer(ctx: Arc<WriterCtx>, input: Arc<WriterInput>) {
    // The queue is this writer's for its life; a writer that panics releases it as it unwinds.
    let mut rx = input.queue.lock().await;
    let mut resumed = input.resume(&ctx);
    loop {
        let op = match resumed.take() {
            Some(op) => op,
            None => match rx.recv().await {
                Some(op) => {
                    let op = Arc::new(op);
                    *input.current() = Some((op.clone(), 0));
                    op
                }
                None => return,
            },
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            match apply(&ctx, &op).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox: write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        *input.current() = None;
        finished(&ctx, &op);
    }
}

/// An op is written (or given up): no longer settling, one write less pending.
fn finished(ctx: &WriterCtx, op: &WriteOp) {
    if let Ok(mut s) = ctx.settling.lock() {
        s.remove(op.entry());
    }
    if ctx.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
        ctx.idle.notify_waiters();
    }
}

/// The job to write back: the entry's original JSON with the fields this version knows
/// replaced by the job's, so that fields it does not know survive the round trip. `None`
/// when the job does not encode (a bug): then the original goes back unchanged.
pub(super) fn merged(raw: &str, job: &Job) -> Option<String> {
    let mut base: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(raw).unwrap_or_default();
    let serde_json::Value::Object(new) = serde_json::to_value(job).ok()? else {
        return None;
    };
    base.extend(new);
    serde_json::to_string(&base).ok()
}

async fn apply(ctx: &WriterCtx, op: &WriteOp) -> redis::RedisResult<()> {
    let mut c = ctx.conn.clone();
    let mut pipe = redis::pipe();
    pipe.atomic();
    let entry = match op {
        WriteOp::Ack(e) => e,
        WriteOp::Release { entry, job, raw } => {
            let json = match merged(raw, job) {
                Some(json) => json,
                None => {
                    tracing::error!(message = %job.message_id,
                        "outbox: job not encodable; released unchanged");
                    raw.clone()
                }
            };
            let stream = ctx.keys.outbox_stream(&job.route, job.priority);
            if job.not_before_ms > ctx.clock.now_ms() {
                // An SMS job in the member form every version reads (move_due.lua); other
                // kinds name their version and kind, so the entry written keeps them.
                let member = match job.kind() {
                    JOB_KIND_SMS => format!("{stream}\n{json}"),
                    kind => format!("{stream}\n{JOB_VERSION}\n{kind}\n{json}"),
                };
                pipe.cmd("ZADD")
                    .arg(ctx.keys.outbox_delay())
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
            entry
        }
    };
    pipe.cmd("XACK")
        .arg(&entry.stream)
        .arg(GROUP)
        .arg(&entry.id)
        .ignore();
    pipe.cmd("XDEL").arg(&entry.stream).arg(&entry.id).ignore();
    pipe.query_async(&mut c).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{Body, Priority};

    #[test]
    fn a_release_keeps_fields_this_version_does_not_know() {
        let job = Job::new(
            "msg_a".into(),
            crate::phone::Phone::from_e164_unchecked("+85366123456".into()),
            Body::Text { text: "hi".into() },
            9,
            Priority::Notification,
            String::new(),
        );
        let mut raw = serde_json::to_value(&job).unwrap();
        raw["future_field"] = serde_json::json!({"x": 1});
        let mut retried = job.clone();
        retried.attempts = 3;
        let out: serde_json::Value =
            serde_json::from_str(&merged(&raw.to_string(), &retried).unwrap()).unwrap();
        assert_eq!(out["future_field"]["x"], 1);
        assert_eq!(out["attempts"], 3);
    }
}
