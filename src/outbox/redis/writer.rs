//! The durable outbox's writer: acknowledgements and releases, batched, each batch retried
//! until Redis takes it, so a Redis outage delays them but loses none. It holds no handle on the
//! outbox itself: it ends once the outbox (the last sender) is gone, after writing what was
//! queued. It runs supervised ([`crate::outbox::supervise`]): a writer that panics is replaced by
//! one that takes over its queue ([`WriterInput`]).

use std::collections::{HashMap, HashSet};
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

impl EntryRef {
    /// From the form a job carries in `Job::receipt` and an event in `outbox_entry`:
    /// "stream\nid".
    pub(super) fn parse(entry: &str) -> Option<EntryRef> {
        let (stream, id) = entry.split_once('\n')?;
        Some(EntryRef {
            stream: stream.to_owned(),
            id: id.to_owned(),
        })
    }
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
        /// The consumer releasing it: only while the entry is still pending to it.
        consumer: Arc<str>,
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

/// How many writes go to Redis in one pipeline at most.
const BATCH: usize = 512;

/// The writer's input, shared by the successive writer tasks of its supervisor: the queue,
/// and the batch being written — so that the writer that replaces one that panicked loses
/// nothing queued and tries the interrupted batch once more.
pub(super) struct WriterInput {
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<WriteOp>>,
    /// The batch being written, and how many times it was tried again after a writer panicked.
    current: Mutex<Option<(Arc<Vec<WriteOp>>, u32)>>,
}

impl WriterInput {
    pub(super) fn new(rx: mpsc::UnboundedReceiver<WriteOp>) -> Arc<WriterInput> {
        Arc::new(WriterInput {
            queue: tokio::sync::Mutex::new(rx),
            current: Mutex::new(None),
        })
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<(Arc<Vec<WriteOp>>, u32)>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The batch a writer that panicked was writing, to try once more; given up (and `None`)
    /// when it already made a writer panic after such a retry: its entries stay pending in
    /// Redis, so they are claimed again after `CLAIM_IDLE` — possibly sent twice, never lost.
    fn resume(&self, ctx: &WriterCtx) -> Option<Arc<Vec<WriteOp>>> {
        let mut current = self.current();
        let (batch, retries) = current.take()?;
        if retries == 0 {
            *current = Some((batch.clone(), 1));
            return Some(batch);
        }
        drop(current);
        tracing::error!(
            writes = batch.len(),
            "outbox: writes that made the writer panic twice are given up; their entries stay pending"
        );
        finished(ctx, &batch);
        None
    }
}

/// Writes acks and releases, retrying until Redis takes them; ends once every sender is gone
/// and the queue is written. What is queued when the writer turns to it goes in one pipeline
/// (acknowledgements of one stream in one `XACK` and one `XDEL`): every write is idempotent,
/// so a batch that failed half-way is simply written again.
pub(super) async fn run_writer(ctx: Arc<WriterCtx>, input: Arc<WriterInput>) {
    let release = redis::Script::new(include_str!("release.lua"));
    // The queue is this writer's for its life; a writer that panics releases it as it unwinds.
    let mut rx = input.queue.lock().await;
    let mut resumed = input.resume(&ctx);
    loop {
        let batch = match resumed.take() {
            Some(batch) => batch,
            None => {
                let mut ops = Vec::with_capacity(BATCH);
                if rx.recv_many(&mut ops, BATCH).await == 0 {
                    return;
                }
                let batch = Arc::new(ops);
                *input.current() = Some((batch.clone(), 0));
                batch
            }
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            match apply(&ctx, &release, &batch).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, writes = batch.len(), "outbox: write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        *input.current() = None;
        finished(&ctx, &batch);
    }
}

/// A batch is written (or given up): no longer settling, that many writes less pending.
fn finished(ctx: &WriterCtx, batch: &[WriteOp]) {
    if let Ok(mut s) = ctx.settling.lock() {
        for op in batch {
            s.remove(op.entry());
        }
    }
    let n = batch.len();
    if n > 0 && ctx.pending.fetch_sub(n, Ordering::SeqCst) == n {
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

/// One pipeline for a batch: the acknowledgements grouped by stream, then each release
/// (`release.lua`, which checks that the entry is still the releasing consumer's).
async fn apply(
    ctx: &WriterCtx,
    release: &redis::Script,
    batch: &[WriteOp],
) -> redis::RedisResult<()> {
    let mut acks: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut invocations = Vec::new();
    for op in batch {
        match op {
            WriteOp::Ack(e) => acks.entry(&e.stream).or_default().push(&e.id),
            WriteOp::Release {
                entry,
                job,
                raw,
                consumer,
            } => invocations.push(release_invocation(ctx, release, entry, job, raw, consumer)),
        }
    }
    // Each command answers on its own: one refused (a full Redis refusing a release's XADD,
    // a key of the wrong type) is reported and given up — its entry stays pending, to be
    // recovered after CLAIM_IDLE — instead of holding back every write after it. Only a
    // failure of the whole pipeline (the connection) is retried.
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for (stream, ids) in &acks {
        // Deleted first: an entry left pending without its content (a cut between the two) is
        // cleaned up by the next claim; one acknowledged but not deleted would stay for ever.
        pipe.cmd("XDEL").arg(stream).arg(ids);
        pipe.cmd("XACK").arg(stream).arg(GROUP).arg(ids);
    }
    if !invocations.is_empty() {
        // Cheap when the script is cached; a pipeline cannot load it on NOSCRIPT.
        pipe.load_script(release);
        for inv in &invocations {
            pipe.invoke_script(inv);
        }
    }
    let mut c = ctx.conn.clone();
    let replies: Vec<redis::RedisResult<redis::Value>> = pipe.query_async(&mut c).await?;
    let mut refused = replies.iter().filter_map(|r| r.as_ref().err());
    if let Some(first) = refused.next() {
        let n = 1 + refused.count();
        metrics::counter!("otpgate_outbox_write_errors_total").increment(n as u64);
        tracing::error!(error = %first, commands = n,
            "outbox: Redis refused writes; their entries stay pending and are recovered later");
    }
    Ok(())
}

fn release_invocation<'a>(
    ctx: &WriterCtx,
    release: &'a redis::Script,
    entry: &EntryRef,
    job: &Job,
    raw: &str,
    consumer: &str,
) -> redis::ScriptInvocation<'a> {
    let json = match merged(raw, job) {
        Some(json) => json,
        None => {
            tracing::error!(message = %job.message_id,
                "outbox: job not encodable; released unchanged");
            raw.to_owned()
        }
    };
    let stream = ctx.keys.outbox_stream(&job.route, job.priority);
    let mut inv = release.prepare_invoke();
    inv.key(&entry.stream);
    if job.not_before_ms > ctx.clock.now_ms() {
        // An SMS job in the member form every version reads (move_due.lua); other kinds name
        // their version and kind, so the entry written keeps them.
        let member = match job.kind() {
            JOB_KIND_SMS => format!("{stream}\n{json}"),
            kind => format!("{stream}\n{JOB_VERSION}\n{kind}\n{json}"),
        };
        inv.key(ctx.keys.outbox_delay())
            .arg(GROUP)
            .arg(consumer)
            .arg(&entry.id)
            .arg("delay")
            .arg(job.not_before_ms)
            .arg(member);
    } else {
        inv.key(&stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(&entry.id)
            .arg("stream")
            .arg(0)
            .arg(json);
    }
    inv.arg(JOB_VERSION).arg(job.kind());
    inv
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
