//! The durable outbox: Redis streams, one per (route, priority), read through one consumer
//! group by every bind of every instance.
//!
//! - A message is an entry until an SMSC settled it; then it is acknowledged and deleted.
//!   A daemon killed with SIGKILL leaves its entries pending in the group; once they have sat
//!   idle for [`CLAIM_IDLE`], any live consumer claims them (`claim.lua`, following a cursor)
//!   and sends them: only those that were in flight can go twice.
//! - A consumer reads on its own connection (`XREADGROUP … BLOCK` would stall a shared
//!   multiplexed one) into a buffer shared with its session, never more than its budget (the
//!   session's window) in all streams together, and never waits for the session: reading
//!   and touching go on however slowly the session takes work, so nothing it holds looks
//!   abandoned.
//! - A heartbeat on its own timer touches the entries the consumer holds (buffered or in
//!   flight) with `touch.lua`, which also says which it no longer owns (taken over while
//!   Redis or this process stalled past [`CLAIM_IDLE`]): those are fenced — never handed to
//!   the session, never released again (the new owner sends them).
//! - Retries with backoff wait in a sorted set, moved back to their stream by an atomic script
//!   that any instance may run.
//! - Acks and releases go through a background writer that retries until Redis answers, so a
//!   Redis outage delays them but loses none. A release writes back the entry's own JSON with
//!   the fields this version changed, so fields of another version survive.
//! - Entries are versioned envelopes (fields `v`, `k`, `j`; see [`super::JOB_VERSION`]): an
//!   entry of a newer version or unknown kind is left pending, never acknowledged nor claimed
//!   by this version, for an instance that can read it (logged once, counted in
//!   `otpgate_outbox_foreign_entries_total`; remembered while pending, forgotten by a
//!   heartbeat once a newer instance settled it).
//! - Consumers that hold nothing and were silent for [`REAP_IDLE`] are removed from the group.
//! - The writer, each consumer's reader and heartbeat run supervised ([`super::supervise`]):
//!   a panic restarts the task with a fresh state; the writer's queue survives it.
//!
//! All keys (spelled in [`crate::store::keys`]) carry the hash tag `{ob}`: one slot, so
//! multi-stream reads work on a cluster too; every key a script touches is passed in `KEYS`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::supervise;
use super::{Error, JOB_KINDS, JOB_VERSION, Job, Priority, Routing};
use crate::clock::Clock;
use crate::store::connect;
use crate::store::keys::Keys;
use writer::{EntryRef, WriteOp, WriterCtx, WriterInput, run_writer};

mod reader;
#[doc(hidden)]
pub use reader::panic_next_reader_of;
mod writer;

/// Entries of a consumer that has been silent this long are taken over by others.
pub const CLAIM_IDLE: Duration = Duration::from_secs(10);
/// How often a consumer touches the entries it holds, and looks for abandoned ones.
pub const HEARTBEAT: Duration = Duration::from_secs(3);
/// Consumers holding nothing and silent this long are removed from the group.
pub const REAP_IDLE: Duration = Duration::from_secs(600);
const GROUP: &str = "otpgate";

/// The fields of a new job's stream entry (`v`, `k`, `j`), in order: what [`RedisOutbox::push`]
/// writes and what the store's create and resend scripts `XADD` in their own step (a
/// transactional outbox), into the stream `Keys::outbox_stream(job.route, job.priority)`.
pub fn entry_fields(job: &Job) -> Result<[(&'static str, String); 3], Error> {
    Ok([
        ("v", JOB_VERSION.to_string()),
        ("k", job.kind().to_owned()),
        ("j", serde_json::to_string(job)?),
    ])
}

pub struct RedisOutbox {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    clock: Clock,
    /// Every stream of every route, for the depth gauge.
    all_streams: Vec<(String, Priority)>,
    instance: String,
    writes: mpsc::UnboundedSender<WriteOp>,
    writer_idle: Arc<Notify>,
    pending_writes: Arc<AtomicUsize>,
    /// Entries acknowledged or released and not yet written so: still pending in Redis, but
    /// never to be read or claimed again (they were settled).
    settling: Arc<Mutex<HashSet<EntryRef>>>,
    move_due: Script,
    touch: Script,
    claim: Script,
    reap: Script,
    sweep: Script,
    /// Checks code SMS against their verification before they are buffered.
    pub(super) stale: std::sync::OnceLock<Arc<super::stale::StaleCheck>>,
    /// Entries of a newer version already reported (each is logged once), while they are
    /// pending: every heartbeat forgets those that are not any more, so this does not grow.
    foreign_seen: Mutex<HashSet<EntryRef>>,
    /// Settled entries whose outcome the delivery tracker has not recorded yet, by the
    /// consumer that holds them: still touched by its heartbeat (so no other consumer takes
    /// them over), acknowledged by [`RedisOutbox::settled`].
    handed: Mutex<HashMap<EntryRef, Handed>>,
}

impl RedisOutbox {
    pub fn new(
        redis_url: &str,
        prefix: &str,
        routes: &[String],
        clock: Clock,
    ) -> Result<Arc<RedisOutbox>, Error> {
        let client = connect::client(redis_url)?;
        let conn = connect::shared(client.clone())?;
        let (tx, rx) = mpsc::unbounded_channel();
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
        let keys = Keys::new(prefix);
        let all_streams = Priority::ALL
            .iter()
            .flat_map(|p| routes.iter().map(|r| (keys.outbox_stream(r, *p), *p)))
            .collect();
        let writer_idle = Arc::new(Notify::new());
        let pending_writes = Arc::new(AtomicUsize::new(0));
        let settling: Arc<Mutex<HashSet<EntryRef>>> = Arc::default();
        let ctx = Arc::new(WriterCtx {
            conn: conn.clone(),
            keys: keys.clone(),
            clock: clock.clone(),
            pending: pending_writes.clone(),
            idle: writer_idle.clone(),
            settling: settling.clone(),
        });
        let input = WriterInput::new(rx);
        // No stop: it ends once the outbox is gone and what was queued is written.
        supervise::spawn(
            "outbox_writer",
            "none".into(),
            CancellationToken::new(),
            move || run_writer(ctx.clone(), input.clone()),
        );
        let outbox = Arc::new(RedisOutbox {
            client,
            conn,
            keys,
            clock,
            all_streams,
            instance: format!("{host}-{}-{}", std::process::id(), crate::ids::random_tag()),
            writes: tx,
            writer_idle,
            pending_writes,
            settling,
            move_due: Script::new(include_str!("move_due.lua")),
            touch: Script::new(include_str!("redis/touch.lua")),
            claim: Script::new(include_str!("redis/claim.lua")),
            reap: Script::new(include_str!("redis/reap.lua")),
            sweep: Script::new(include_str!("redis/sweep.lua")),
            stale: std::sync::OnceLock::new(),
            foreign_seen: Mutex::default(),
            handed: Mutex::default(),
        });
        // Touches handed entries for their consumers, whether or not those still run (a
        // session reconnecting has no heartbeat); ends with the outbox.
        let weak = Arc::downgrade(&outbox);
        supervise::spawn(
            "outbox_handed",
            "none".into(),
            CancellationToken::new(),
            move || reader::run_handed(weak.clone()),
        );
        Ok(outbox)
    }

    fn stream(&self, route: &str, priority: Priority) -> String {
        self.keys.outbox_stream(route, priority)
    }

    pub async fn push(&self, job: &Job) -> Result<(), Error> {
        let mut c = self.conn.clone();
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.stream(&job.route, job.priority)).arg("*");
        for (k, v) in entry_fields(job)? {
            cmd.arg(k).arg(v);
        }
        let _: String = cmd.query_async(&mut c).await?;
        Ok(())
    }

    pub async fn depth(&self) -> [usize; 2] {
        let mut c = self.conn.clone();
        let mut d = [0, 0];
        for (s, p) in &self.all_streams {
            let n: usize = redis::cmd("XLEN")
                .arg(s)
                .query_async(&mut c)
                .await
                .unwrap_or(0);
            d[p.index()] += n;
        }
        d
    }

    /// Removes expired jobs no consumer holds (never read, or waiting for a retry), of every
    /// version and kind this instance reads; returns their message ids.
    pub async fn take_expired(&self, now_ms: i64) -> Result<Vec<String>, Error> {
        let mut c = self.conn.clone();
        let kinds = JOB_KINDS.join(",");
        let delay = self.keys.outbox_delay();
        let targets = std::iter::once((&delay, "delay"))
            .chain(self.all_streams.iter().map(|(s, _)| (s, "stream")));
        let mut out = Vec::new();
        for (key, form) in targets {
            let ids: Vec<String> = self
                .sweep
                .key(key)
                .arg(form)
                .arg(GROUP)
                .arg(now_ms)
                .arg(1000)
                .arg(JOB_VERSION)
                .arg(&kinds)
                .invoke_async(&mut c)
                .await?;
            out.extend(ids);
        }
        Ok(out)
    }

    /// Waits until every ack and release was written (at most `limit`).
    pub async fn flush(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Registered before the count is read: a wake-up in between is not missed.
            let idle = self.writer_idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.pending_writes.load(Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                tracing::warn!(
                    "outbox: acknowledgements still unwritten at shutdown; those messages may be sent again"
                );
                return;
            }
        }
    }

    /// The tracker recorded the outcome of the message at `entry` ("stream\nid"): acknowledge
    /// and delete it. Acknowledged whoever holds it now: it was submitted (or settled for
    /// good), so a consumer that took it over must not send it again.
    pub fn settled(&self, entry: &str) {
        let Some(e) = EntryRef::parse(entry) else {
            return;
        };
        // Settling before it stops being handed: a recovery read in between skips it either way.
        self.write(WriteOp::Ack(e.clone()));
        if let Ok(mut h) = self.handed.lock() {
            h.remove(&e);
        }
    }

    fn write(&self, op: WriteOp) {
        if let Ok(mut s) = self.settling.lock() {
            s.insert(op.entry().clone());
        }
        self.pending_writes.fetch_add(1, Ordering::SeqCst);
        if self.writes.send(op).is_err() {
            self.pending_writes.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Whether `e` was settled by one of our sessions, its outcome not yet recorded.
    fn is_handed(&self, e: &EntryRef) -> bool {
        self.handed
            .lock()
            .map(|h| h.contains_key(e))
            .unwrap_or(false)
    }

    /// Whether an ack or release of `e` waits to be written.
    fn is_settling(&self, e: &EntryRef) -> bool {
        self.settling.lock().map(|s| s.contains(e)).unwrap_or(false)
    }

    /// Reports an entry of a newer version (or unknown kind) once per entry.
    fn foreign(&self, entry: EntryRef, version: &str, kind: &str) {
        let new = self
            .foreign_seen
            .lock()
            .map(|mut s| s.insert(entry.clone()))
            .unwrap_or(false);
        if new {
            metrics::counter!("otpgate_outbox_foreign_entries_total").increment(1);
            tracing::warn!(stream = %entry.stream, entry = %entry.id, version, kind,
                "outbox: entry of a newer version left pending for an instance that reads it");
        }
    }

    /// How many entries of a newer version (or unknown kind) this instance knows to be pending
    /// (each was reported once; forgotten once no longer pending).
    pub fn foreign_pending(&self) -> usize {
        self.foreign_seen.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// The reported entries of a newer version in `streams`.
    fn foreign_in(&self, streams: &[String]) -> Vec<EntryRef> {
        self.foreign_seen
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|e| streams.contains(&e.stream))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets reported entries that are no longer pending (a newer instance settled them).
    fn forget_foreign(&self, gone: &[EntryRef]) {
        if let Ok(mut s) = self.foreign_seen.lock() {
            for e in gone {
                s.remove(e);
            }
        }
    }

    /// A consumer for one bind of `smsc`, reading `routes`; it holds (buffered, not yet
    /// handed out) at most about `window` messages.
    pub fn consumer(
        self: &Arc<Self>,
        routes: &[String],
        smsc: &str,
        bind: u32,
        routing: Arc<Routing>,
        window: usize,
    ) -> Consumer {
        let name: Arc<str> = format!("{}-{smsc}-{bind}", self.instance).into();
        let streams: Vec<String> = Priority::ALL
            .iter()
            .flat_map(|p| routes.iter().map(move |r| (r.clone(), *p)))
            .map(|(r, p)| self.stream(&r, p))
            .collect();
        let slot = Arc::new(Slot {
            state: Mutex::default(),
            ready: Notify::new(),
            room: Notify::new(),
            stop: CancellationToken::new(),
            heart: CancellationToken::new(),
            budget: window.max(1),
        });
        let reader = Arc::new(reader::Reader {
            outbox: self.clone(),
            name: name.clone(),
            streams,
            smsc: smsc.to_owned(),
            routing,
            slot: slot.clone(),
        });
        // Both restarted with a fresh state when they panic; the reader ends when the consumer
        // closes, the heartbeat when it is dropped.
        let r = reader.clone();
        supervise::spawn(
            "outbox_reader",
            smsc.to_owned(),
            slot.stop.clone(),
            move || reader::run_reader(r.clone()),
        );
        supervise::spawn(
            "outbox_heartbeat",
            smsc.to_owned(),
            slot.heart.clone(),
            move || reader::run_heartbeat(reader.clone()),
        );
        Consumer {
            outbox: self.clone(),
            slot,
            name,
        }
    }
}

/// A settled entry whose outcome the tracker has not recorded yet.
struct Handed {
    /// The consumer it is pending to.
    consumer: Arc<str>,
    /// When Redis last reset its idle time.
    fresh_at: std::time::Instant,
    /// When it was handed over (one never recorded is let go after [`HANDED_MAX`]).
    handed_at: std::time::Instant,
}

/// A handed entry whose outcome was not recorded within this (a tracker that lost it, or a
/// store down this long) is no longer touched: after [`CLAIM_IDLE`] a consumer recovers it
/// and sends it again unless its message record says it went.
const HANDED_MAX: Duration = Duration::from_secs(120);

/// What a consumer holds of one entry.
struct Held {
    /// The job's JSON as the entry holds it (a release writes it back with our changes).
    raw: String,
    /// Taken over by another consumer: never hand it out nor release it.
    lost: bool,
    /// When Redis last reset its idle time (read, claimed or touched by us).
    fresh_at: std::time::Instant,
}

#[derive(Default)]
struct State {
    /// Read, not yet handed out: code SMS, then the rest.
    code: VecDeque<Job>,
    rest: VecDeque<Job>,
    /// Everything read and not settled (buffered or in flight), by entry.
    held: HashMap<EntryRef, Held>,
    closed: bool,
}

impl State {
    fn buffered(&self) -> usize {
        self.code.len() + self.rest.len()
    }
}

/// The buffer between a consumer's reader and its session.
struct Slot {
    state: Mutex<State>,
    /// A job was buffered.
    ready: Notify,
    /// The session took a job: room to read more.
    room: Notify,
    /// Stops the reader (the consumer takes no more work).
    stop: CancellationToken,
    /// Stops the heartbeat: only when the consumer is dropped, so what it still holds (its
    /// session's window while it drains at shutdown) stays touched, never claimed by others.
    heart: CancellationToken,
    /// How many jobs may wait in the buffer.
    budget: usize,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next buffered job this consumer still owns (the fence: one taken over by another
    /// consumer is dropped here, never submitted).
    fn take(&self) -> Option<Job> {
        let mut st = self.lock();
        loop {
            let job = st.code.pop_front().or_else(|| st.rest.pop_front())?;
            let Some(e) = entry_of(&job) else {
                return Some(job);
            };
            match st.held.get(&e) {
                Some(h) if !h.lost => return Some(job),
                _ => {
                    st.held.remove(&e);
                    metrics::counter!("otpgate_outbox_fenced_total").increment(1);
                    tracing::warn!(stream = %e.stream, entry = %e.id,
                        "outbox: message taken over by another consumer; not sent from here");
                }
            }
        }
    }
}

fn entry_of(job: &Job) -> Option<EntryRef> {
    EntryRef::parse(job.receipt.as_deref()?)
}

/// One bind's view of the durable outbox.
pub struct Consumer {
    outbox: Arc<RedisOutbox>,
    slot: Arc<Slot>,
    /// Its name in the consumer group.
    name: Arc<str>,
}

impl Consumer {
    /// The next job; cancel-safe (a job leaves the buffer only when this returns).
    pub async fn next(&mut self) -> Job {
        loop {
            let ready = self.slot.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if let Some(job) = self.slot.take() {
                self.slot.room.notify_one();
                return job;
            }
            ready.await;
        }
    }

    /// Settled, its event on the way to the tracker (see [`super::Consumer::handed`]): the
    /// entry stays ours, touched, until [`RedisOutbox::settled`].
    pub fn handed(&self, job: &Job) {
        let Some(e) = entry_of(job) else {
            return;
        };
        let mut st = self.slot.lock();
        // One taken over meanwhile is not ours to touch; the tracker acknowledges it anyway.
        // Handed before it leaves `held`: a recovery read never sees it in neither.
        if let Some(Held {
            lost: false,
            fresh_at,
            ..
        }) = st.held.get(&e)
            && let Ok(mut h) = self.outbox.handed.lock()
        {
            let now = std::time::Instant::now();
            h.insert(
                e.clone(),
                Handed {
                    consumer: self.name.clone(),
                    fresh_at: *fresh_at,
                    handed_at: now,
                },
            );
        }
        st.held.remove(&e);
    }

    pub fn release(&self, job: Job) {
        match entry_of(&job) {
            Some(e) => {
                let held = self.slot.lock().held.remove(&e);
                match held {
                    Some(Held {
                        raw, lost: false, ..
                    }) => self.outbox.write(WriteOp::Release {
                        entry: e,
                        job: Box::new(job),
                        raw,
                        consumer: self.name.clone(),
                    }),
                    // Another consumer owns it now and sends it: releasing it too would
                    // queue it twice.
                    Some(Held { lost: true, .. }) | None => {
                        tracing::debug!(stream = %e.stream, entry = %e.id,
                            "outbox: release of a message no longer ours ignored");
                    }
                }
            }
            None => {
                // Not from Redis (cannot happen): queue it as new.
                let outbox = self.outbox.clone();
                tokio::spawn(async move {
                    let _ = outbox.push(&job).await;
                });
            }
        }
    }

    /// Stops reading and gives back what was read but never handed out.
    pub fn close(&mut self) {
        // Closed before the reader is stopped: what a read it finishes brings goes back too.
        let jobs: Vec<Job> = {
            let mut st = self.slot.lock();
            st.closed = true;
            let mut v: Vec<Job> = st.code.drain(..).collect();
            v.extend(st.rest.drain(..));
            v
        };
        self.slot.stop.cancel();
        for job in jobs {
            self.release(job);
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.close();
        self.slot.heart.cancel();
    }
}
