//! The durable outbox: Redis streams, one per (route, priority), read through one consumer
//! group by every bind of every instance.
//!
//! - A message is an entry until an SMSC settled it; then it is acknowledged and deleted.
//!   A daemon killed with SIGKILL leaves its entries pending in the group; once they have sat
//!   idle for [`CLAIM_IDLE`], any live consumer claims them (`XAUTOCLAIM`) and sends them: only
//!   those that were in flight can go twice. A live consumer touches the entries it holds
//!   (`XCLAIM … JUSTID`) well within that time, so they never look abandoned.
//! - Each consumer reads on its own connection (`XREADGROUP … BLOCK` would stall a shared
//!   multiplexed one) into a small buffer, so that [`Consumer::next`] is cancel-safe.
//! - Retries with backoff wait in a sorted set, moved back to their stream by an atomic script
//!   that any instance may run.
//! - Acks and releases go through a background writer that retries until Redis answers, so a
//!   Redis outage delays them but loses none.
//!
//! - Entries are versioned envelopes (fields `v`, `k`, `j`; see [`super::JOB_VERSION`]): an
//!   entry of a newer version or unknown kind is left pending, never acknowledged, for an
//!   instance that can read it (a rolling upgrade loses nothing).
//!
//! All keys (spelled in [`crate::store::keys`]) carry the hash tag `{ob}`: one slot, so
//! multi-stream reads work on a cluster too.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::{StreamAutoClaimReply, StreamReadReply};
use redis::{FromRedisValue, Script, Value};
use tokio::sync::{Notify, mpsc};

use super::{Envelope, Error, JOB_VERSION, Job, Priority, Routing};
use crate::clock::Clock;
use crate::store::connect;
use crate::store::keys::Keys;
use writer::{EntryRef, WriteOp, run_writer};

mod writer;

/// Entries of a consumer that has been silent this long are taken over by others.
pub const CLAIM_IDLE: Duration = Duration::from_secs(10);
/// How often a consumer touches the entries it holds, and looks for abandoned ones.
const HEARTBEAT: Duration = Duration::from_secs(3);
const GROUP: &str = "otpgate";

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
    pending_writes: Arc<std::sync::atomic::AtomicUsize>,
    move_due: Script,
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
        let outbox = Arc::new(RedisOutbox {
            client,
            conn,
            keys,
            clock,
            all_streams,
            instance: format!("{host}-{}-{}", std::process::id(), crate::ids::random_tag()),
            writes: tx,
            writer_idle: Arc::new(Notify::new()),
            pending_writes: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            move_due: Script::new(include_str!("move_due.lua")),
        });
        tokio::spawn(run_writer(outbox.clone(), rx));
        Ok(outbox)
    }

    fn stream(&self, route: &str, priority: Priority) -> String {
        self.keys.outbox_stream(route, priority)
    }

    pub async fn push(&self, job: &Job) -> Result<(), Error> {
        let json = serde_json::to_string(job)?;
        let mut c = self.conn.clone();
        let _: String = redis::cmd("XADD")
            .arg(self.stream(&job.route, job.priority))
            .arg("*")
            .arg("v")
            .arg(JOB_VERSION)
            .arg("k")
            .arg(job.kind())
            .arg("j")
            .arg(json)
            .query_async(&mut c)
            .await?;
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

    /// Waits until every ack and release was written (at most `limit`).
    pub async fn flush(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self
            .pending_writes
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
        {
            if tokio::time::timeout_at(deadline, self.writer_idle.notified())
                .await
                .is_err()
            {
                tracing::warn!(
                    "outbox: acknowledgements still unwritten at shutdown; those messages may be sent again"
                );
                return;
            }
        }
    }

    fn write(&self, op: WriteOp) {
        self.pending_writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.writes.send(op).is_err() {
            self.pending_writes
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// A consumer for one bind of `smsc`, reading `routes`.
    pub fn consumer(
        self: &Arc<Self>,
        routes: &[String],
        smsc: &str,
        bind: u32,
        routing: Arc<Routing>,
        window: usize,
    ) -> Consumer {
        let name = format!("{}-{smsc}-{bind}", self.instance);
        let streams: Vec<String> = Priority::ALL
            .iter()
            .flat_map(|p| routes.iter().map(move |r| (r.clone(), *p)))
            .map(|(r, p)| self.stream(&r, p))
            .collect();
        let (tx, rx) = mpsc::channel(window.max(1));
        let held: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(run_reader(
            self.clone(),
            Reader {
                name,
                streams,
                smsc: smsc.to_owned(),
                routing,
                batch: window.max(1),
            },
            tx,
            held.clone(),
            stop.clone(),
        ));
        Consumer {
            outbox: self.clone(),
            rx,
            held,
            stop,
        }
    }
}

/// One bind's view of the durable outbox.
pub struct Consumer {
    outbox: Arc<RedisOutbox>,
    rx: mpsc::Receiver<Job>,
    /// Entry id → stream of what this consumer holds (buffered or in flight).
    held: Arc<Mutex<HashMap<String, String>>>,
    stop: tokio_util::sync::CancellationToken,
}

impl Consumer {
    /// The next job; cancel-safe.
    pub async fn next(&mut self) -> Job {
        match self.rx.recv().await {
            Some(job) => job,
            None => std::future::pending().await,
        }
    }

    fn entry(&self, job: &Job) -> Option<EntryRef> {
        let (stream, id) = job.receipt.as_deref()?.split_once('\n')?;
        Some(EntryRef {
            stream: stream.to_owned(),
            id: id.to_owned(),
        })
    }

    fn forget(&self, e: &EntryRef) {
        if let Ok(mut h) = self.held.lock() {
            h.remove(&e.id);
        }
    }

    pub fn done(&self, job: &Job) {
        if let Some(e) = self.entry(job) {
            self.forget(&e);
            self.outbox.write(WriteOp::Ack(e));
        }
    }

    pub fn release(&self, job: Job) {
        match self.entry(&job) {
            Some(e) => {
                self.forget(&e);
                self.outbox.write(WriteOp::Release(e, Box::new(job)));
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
        self.stop.cancel();
        self.rx.close();
        while let Ok(job) = self.rx.try_recv() {
            self.release(job);
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.close();
    }
}

struct Reader {
    name: String,
    streams: Vec<String>,
    smsc: String,
    routing: Arc<Routing>,
    batch: usize,
}

async fn ensure_groups(
    c: &mut MultiplexedConnection,
    streams: &[String],
) -> redis::RedisResult<()> {
    for s in streams {
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(s)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(c)
            .await;
        if let Err(e) = r
            && e.code() != Some("BUSYGROUP")
        {
            return Err(e);
        }
    }
    Ok(())
}

async fn run_reader(
    outbox: Arc<RedisOutbox>,
    r: Reader,
    tx: mpsc::Sender<Job>,
    held: Arc<Mutex<HashMap<String, String>>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut backoff = Duration::from_millis(250);
    let mut last_heartbeat = tokio::time::Instant::now() - HEARTBEAT;
    // First our own pending entries (a previous session of this consumer), then new ones.
    let mut own_pending = true;
    loop {
        if stop.is_cancelled() || tx.is_closed() {
            return;
        }
        let c = match &mut conn {
            Some(c) => c,
            None => match connect::dedicated(&outbox.client).await {
                Ok(mut c) => match ensure_groups(&mut c, &r.streams).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(250);
                        conn.insert(c)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox: cannot create consumer group");
                        sleep_or_stop(&stop, backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "outbox: Redis unreachable; retrying");
                    sleep_or_stop(&stop, backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            },
        };
        // Stopping closes the connection even mid-`XREADGROUP … BLOCK`: a read left blocked
        // would take the next entry for a consumer that is gone (until `CLAIM_IDLE`).
        let result = tokio::select! {
            r = read_once(&outbox, &r, c, &tx, &held, &mut own_pending, &mut last_heartbeat) => r,
            _ = stop.cancelled() => return,
            _ = tx.closed() => return,
        };
        if let Err(e) = result {
            if e.code() == Some("NOGROUP") {
                // Redis lost the streams (restarted without persistence): recreate.
                if let Some(c) = conn.as_mut() {
                    let _ = ensure_groups(c, &r.streams).await;
                }
            } else {
                tracing::warn!(error = %e, "outbox: read failed; reconnecting");
                conn = None;
                sleep_or_stop(&stop, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn sleep_or_stop(stop: &tokio_util::sync::CancellationToken, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.cancelled() => {}
    }
}

async fn read_once(
    outbox: &RedisOutbox,
    r: &Reader,
    c: &mut MultiplexedConnection,
    tx: &mpsc::Sender<Job>,
    held: &Mutex<HashMap<String, String>>,
    own_pending: &mut bool,
    last_heartbeat: &mut tokio::time::Instant,
) -> redis::RedisResult<()> {
    if last_heartbeat.elapsed() >= HEARTBEAT {
        *last_heartbeat = tokio::time::Instant::now();
        heartbeat(outbox, r, c, tx, held).await?;
    }
    let room = tx.capacity();
    if room == 0 {
        // The session is busy: wait for it to take one.
        tokio::time::sleep(Duration::from_millis(5)).await;
        return Ok(());
    }
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(GROUP)
        .arg(&r.name)
        .arg("COUNT")
        .arg(room.min(r.batch));
    if !*own_pending {
        cmd.arg("BLOCK").arg(1000);
    }
    cmd.arg("STREAMS");
    for s in &r.streams {
        cmd.arg(s);
    }
    for _ in &r.streams {
        cmd.arg(if *own_pending { "0" } else { ">" });
    }
    let reply: Option<StreamReadReply> = cmd.query_async(c).await?;
    let entries: Vec<(String, redis::streams::StreamId)> = reply
        .map(|rep| {
            rep.keys
                .into_iter()
                .flat_map(|k| {
                    let key = k.key;
                    k.ids.into_iter().map(move |id| (key.clone(), id))
                })
                .collect()
        })
        .unwrap_or_default();
    if *own_pending && entries.is_empty() {
        *own_pending = false;
    }
    deliver(outbox, r, entries, tx, held).await;
    Ok(())
}

/// Hands entries to the session, code SMS first; re-queues those this SMSC must not take.
async fn deliver(
    outbox: &RedisOutbox,
    r: &Reader,
    entries: Vec<(String, redis::streams::StreamId)>,
    tx: &mpsc::Sender<Job>,
    held: &Mutex<HashMap<String, String>>,
) {
    let mut code = VecDeque::new();
    let mut rest = VecDeque::new();
    for (stream, entry) in entries {
        let field = |f: &str| {
            entry
                .map
                .get(f)
                .and_then(|v| String::from_redis_value(v.clone()).ok())
        };
        let (v, k, j) = (field("v"), field("k"), field("j"));
        let mut job = match Envelope::open(v.as_deref(), k.as_deref(), j.as_deref()) {
            Envelope::Job(job) => *job,
            Envelope::Unknown { version, kind } => {
                // Not ours to read: it stays pending (never acknowledged, not held, so it goes
                // idle and is claimed again) until an instance that reads it takes it.
                tracing::warn!(stream = %stream, entry = %entry.id, version, kind = %kind,
                    "outbox: entry of a newer version left pending for an instance that reads it");
                continue;
            }
            Envelope::Corrupt(e) => {
                tracing::error!(stream = %stream, entry = %entry.id, error = %e, "outbox: undecodable entry dropped");
                outbox.write(WriteOp::Ack(EntryRef {
                    stream,
                    id: entry.id,
                }));
                continue;
            }
        };
        job.receipt = Some(format!("{stream}\n{}", entry.id));
        if let Ok(mut h) = held.lock() {
            h.insert(entry.id.clone(), stream.clone());
        }
        let refuse = job.exclude.as_deref() == Some(r.smsc.as_str())
            || (job.avoid.as_deref() == Some(r.smsc.as_str())
                && r.routing.other_bound(&job.route, &r.smsc));
        if refuse {
            // Give it back for another SMSC, a little later so it does not bounce here.
            if let Ok(mut h) = held.lock() {
                h.remove(&entry.id);
            }
            job.not_before_ms = outbox.clock.now_ms() + 200;
            outbox.write(WriteOp::Release(
                EntryRef {
                    stream,
                    id: entry.id,
                },
                Box::new(job),
            ));
            continue;
        }
        if job.priority == Priority::Code {
            code.push_back(job);
        } else {
            rest.push_back(job);
        }
    }
    for job in code.into_iter().chain(rest) {
        if tx.send(job).await.is_err() {
            return;
        }
    }
}

/// Touches what we hold, moves due retries back, and claims entries of dead consumers.
async fn heartbeat(
    outbox: &RedisOutbox,
    r: &Reader,
    c: &mut MultiplexedConnection,
    tx: &mpsc::Sender<Job>,
    held: &Mutex<HashMap<String, String>>,
) -> redis::RedisResult<()> {
    let mine: Vec<(String, String)> = held
        .lock()
        .map(|h| h.iter().map(|(id, s)| (s.clone(), id.clone())).collect())
        .unwrap_or_default();
    let mut by_stream: HashMap<String, Vec<String>> = HashMap::new();
    for (s, id) in mine {
        by_stream.entry(s).or_default().push(id);
    }
    for (s, ids) in by_stream {
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&s).arg(GROUP).arg(&r.name).arg(0);
        for id in &ids {
            cmd.arg(id);
        }
        cmd.arg("JUSTID");
        let _: Value = cmd.query_async(c).await?;
    }
    let _: i64 = outbox
        .move_due
        .key(outbox.keys.outbox_delay())
        .arg(outbox.clock.now_ms())
        .invoke_async(c)
        .await?;
    for s in &r.streams {
        let room = tx.capacity();
        if room == 0 {
            break;
        }
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(s)
            .arg(GROUP)
            .arg(&r.name)
            .arg(CLAIM_IDLE.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(room.min(r.batch))
            .query_async(c)
            .await?;
        if !reply.claimed.is_empty() {
            tracing::info!(
                claimed = reply.claimed.len(),
                "outbox: took over messages of a silent consumer"
            );
            let entries = reply.claimed.into_iter().map(|e| (s.clone(), e)).collect();
            deliver(outbox, r, entries, tx, held).await;
        }
    }
    Ok(())
}
