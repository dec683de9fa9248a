//! A consumer's two tasks: the reader (`XREADGROUP` into the buffer, within its budget) and
//! the heartbeat (touch what it holds, move due retries, take over abandoned entries, remove
//! dead consumers), each on its own schedule so that neither waits for the other or for the
//! session.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::FromRedisValue;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;

use super::{
    CLAIM_IDLE, EntryRef, GROUP, HANDED_MAX, HEARTBEAT, Held, REAP_IDLE, RedisOutbox, Slot, WriteOp,
};
use crate::outbox::stale::Verdict;
use crate::outbox::{Body, Envelope, JOB_KINDS, JOB_VERSION, Priority, Routing};
use crate::store::connect;
use crate::store::verifications::Status;

/// How often a heartbeat also removes dead consumers.
const REAP_EVERY: u32 = 20;
/// An entry is touched once its idle time passed this: with a heartbeat every [`HEARTBEAT`],
/// it is touched before it has been idle for `TOUCH_AFTER + HEARTBEAT` (4.5 s): a failed or late
/// beat still leaves a margin under [`CLAIM_IDLE`].
const TOUCH_AFTER: Duration = Duration::from_millis(1500);
const _: () = assert!(
    TOUCH_AFTER.as_millis() + 2 * HEARTBEAT.as_millis() < CLAIM_IDLE.as_millis(),
    "an entry must be touched twice before it can be claimed"
);
/// How long a read under way may still finish once the consumer closed.
const FINISH_READ: Duration = Duration::from_millis(100);

pub(super) struct Reader {
    pub(super) outbox: Arc<RedisOutbox>,
    pub(super) name: Arc<str>,
    pub(super) streams: Vec<String>,
    pub(super) smsc: String,
    pub(super) routing: Arc<Routing>,
    pub(super) slot: Arc<Slot>,
}

/// One entry as read: stream, id and the fields `v`, `k`, `j`.
struct Raw {
    stream: String,
    id: String,
    v: Option<String>,
    k: Option<String>,
    j: Option<String>,
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

async fn sleep_or_stop(stop: &tokio_util::sync::CancellationToken, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.cancelled() => {}
    }
}

pub(super) async fn run_reader(r: Arc<Reader>) {
    let stop = r.slot.stop.clone();
    let mut conn: Option<MultiplexedConnection> = None;
    let mut backoff = Duration::from_millis(250);
    // First our own pending entries (a read whose reply was lost), from these ids on; then
    // new ones.
    let mut own_pending: Option<Vec<String>> = Some(vec!["0".to_owned(); r.streams.len()]);
    loop {
        if stop.is_cancelled() {
            return;
        }
        if panic_requested(r.outbox.keys.prefix()) {
            panic!("test hook: an outbox reader of {} panics", r.name);
        }
        let c = match &mut conn {
            Some(c) => c,
            None => match connect::dedicated(&r.outbox.client).await {
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
        // Room in the buffer, waiting (without reading) while there is none.
        let room = {
            let woken = r.slot.room.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let room = r.slot.budget.saturating_sub(r.slot.lock().buffered());
            if room == 0 {
                tokio::select! {
                    _ = woken => {}
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            room
        };
        let result = {
            let read = read_once(&r, c, room, &mut own_pending);
            tokio::pin!(read);
            tokio::select! {
            res = &mut read => res,
            _ = stop.cancelled() => {
                // A read Redis already answered gave its entries to this consumer: finished,
                // they go back to the stream (the buffer is closed) instead of waiting for a
                // takeover after `CLAIM_IDLE`. A read still blocked (`XREADGROUP … BLOCK` on
                // empty streams) is dropped with the connection, so Redis unblocks it
                // rather than hand the next entry to a consumer that is gone.
                let _ = tokio::time::timeout(FINISH_READ, read).await;
                return;
            }
            }
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
                own_pending = Some(vec!["0".to_owned(); r.streams.len()]);
                sleep_or_stop(&stop, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// One `XREADGROUP` over every stream, reading at most about `room` entries in all (the
/// count is per stream, so it is divided among them; at least one each).
async fn read_once(
    r: &Reader,
    c: &mut MultiplexedConnection,
    room: usize,
    own_pending: &mut Option<Vec<String>>,
) -> redis::RedisResult<()> {
    let per_stream = (room / r.streams.len().max(1)).max(1);
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(GROUP)
        .arg(&*r.name)
        .arg("COUNT")
        .arg(per_stream);
    if own_pending.is_none() {
        cmd.arg("BLOCK").arg(1000);
    }
    cmd.arg("STREAMS");
    for s in &r.streams {
        cmd.arg(s);
    }
    match own_pending {
        Some(from) => {
            for f in from.iter() {
                cmd.arg(f);
            }
        }
        None => {
            for _ in &r.streams {
                cmd.arg(">");
            }
        }
    }
    // Redis resets the idle time of what it hands out no earlier than this.
    let read_at = std::time::Instant::now();
    let reply: Option<StreamReadReply> = cmd.query_async(c).await?;
    let mut entries = Vec::new();
    let mut last: HashMap<String, String> = HashMap::new();
    for k in reply.map(|rep| rep.keys).unwrap_or_default() {
        for id in k.ids {
            last.insert(k.key.clone(), id.id.clone());
            let field = |f: &str| {
                id.map
                    .get(f)
                    .and_then(|v| String::from_redis_value(v.clone()).ok())
            };
            entries.push(Raw {
                stream: k.key.clone(),
                v: field("v"),
                k: field("k"),
                j: field("j"),
                id: id.id.clone(),
            });
        }
    }
    let recovered = own_pending.is_some();
    if let Some(from) = own_pending {
        // Page on through our own pending entries; done once a page comes back empty.
        for (s, f) in r.streams.iter().zip(from.iter_mut()) {
            if let Some(id) = last.get(s) {
                *f = id.clone();
            }
        }
        if entries.is_empty() {
            *own_pending = None;
        }
    }
    admit(r, entries, recovered, read_at).await;
    Ok(())
}

/// Buffers entries for the session (code SMS first); re-queues those this SMSC must not take;
/// leaves entries of a newer version pending; settles stale code SMS. `recovered`: entries read
/// before (our own pending ones after a reconnection, or taken over from a silent consumer),
/// which may have been submitted already: those whose message is no longer `queued` go.
async fn admit(r: &Reader, entries: Vec<Raw>, recovered: bool, read_at: std::time::Instant) {
    let outbox = &r.outbox;
    let mut jobs = Vec::with_capacity(entries.len());
    for raw in entries {
        let e = EntryRef {
            stream: raw.stream,
            id: raw.id,
        };
        if r.slot.lock().held.contains_key(&e) || outbox.is_settling(&e) || outbox.is_handed(&e) {
            // Already ours (read again from our own pending entries), or settled with the
            // acknowledgement or the outcome not yet written (claimed back by ourselves after
            // an outage).
            continue;
        }
        let mut job = match Envelope::open(raw.v.as_deref(), raw.k.as_deref(), raw.j.as_deref()) {
            Envelope::Job(job) => *job,
            Envelope::Unknown { .. } => {
                outbox.foreign(
                    e,
                    raw.v.as_deref().unwrap_or("1"),
                    raw.k.as_deref().unwrap_or(""),
                );
                continue;
            }
            Envelope::Corrupt(err) => {
                tracing::error!(stream = %e.stream, entry = %e.id, error = %err,
                    "outbox: undecodable entry dropped");
                outbox.write(WriteOp::Ack(e));
                continue;
            }
        };
        job.receipt = Some(format!("{}\n{}", e.stream, e.id));
        jobs.push((e, job, raw.j.unwrap_or_default()));
    }
    let jobs = drop_stale(r, jobs, recovered).await;
    buffer(r, jobs, read_at);
}

/// Settles the code SMS whose verification is no longer pending (see [`crate::outbox::stale`])
/// and, of `recovered` entries, those whose message is past `queued` (submitted before the
/// entry was acknowledged: sent once is enough): one pipeline of `HMGET`s for the batch.
async fn drop_stale(
    r: &Reader,
    jobs: Vec<(EntryRef, crate::outbox::Job, String)>,
    recovered: bool,
) -> Vec<(EntryRef, crate::outbox::Job, String)> {
    let outbox = &r.outbox;
    let check = outbox.stale.get();
    // Per job: the verification hash to read (code SMS), the message record to read.
    let mut pipe = redis::pipe();
    let mut reads: Vec<(Option<usize>, Option<usize>)> = Vec::with_capacity(jobs.len());
    let mut n = 0usize;
    for (_, job, _) in &jobs {
        let ver = match (&job.body, check) {
            // A phone change's code is checked like a verification's: its hash carries the
            // same challenge fields.
            (
                Body::Code {
                    verification_id, ..
                },
                Some(_),
            ) => Some(if verification_id.starts_with("pc_") {
                outbox.keys.phone_change(verification_id)
            } else {
                outbox.keys.verification(verification_id)
            }),
            _ => None,
        };
        let ver = ver.map(|key| {
            // The verification hash's status (`s`) and expiry (`ea`), as the store writes them.
            pipe.cmd("HMGET")
                .arg(key.as_deref().unwrap_or("-"))
                .arg("s")
                .arg("ea");
            n += 1;
            n - 1
        });
        let msg = recovered
            .then(|| outbox.keys.message(&job.message_id))
            .flatten()
            .map(|key| {
                // The message's status (`s`) and whether it was sent again (`rs`).
                pipe.cmd("HMGET").arg(key).arg("s").arg("rs");
                n += 1;
                n - 1
            });
        reads.push((ver, msg));
    }
    if n == 0 {
        return jobs;
    }
    let mut c = outbox.conn.clone();
    let replies: Vec<(Option<String>, Option<String>)> = match pipe.query_async(&mut c).await {
        Ok(v) => v,
        Err(e) => {
            // Sent rather than lost: an outage must not cost codes.
            tracing::warn!(error = %e, "outbox: message status unreadable; SMS sent");
            return jobs;
        }
    };
    let now_ms = outbox.clock.now_ms();
    let mut keep = Vec::with_capacity(jobs.len());
    for ((e, job, raw), (ver, msg)) in jobs.into_iter().zip(reads) {
        if let Some((status, rs)) = msg.and_then(|i| replies.get(i))
            && already_sent(status.as_deref(), rs.as_deref(), &job)
        {
            metrics::counter!("otpgate_outbox_already_sent_total").increment(1);
            tracing::info!(message_id = %job.message_id,
                "outbox: recovered message was already submitted; not sent again");
            outbox.write(WriteOp::Ack(e));
            continue;
        }
        let verdict = match ver.and_then(|i| replies.get(i)) {
            Some((status, expires)) => {
                let found = match (
                    status.as_deref().and_then(Status::parse),
                    expires.as_deref().and_then(|x| x.parse::<i64>().ok()),
                ) {
                    (Some(s), Some(ea)) => Some((s, ea)),
                    _ => None,
                };
                Verdict::of(found, now_ms)
            }
            None => Verdict::Send,
        };
        if verdict == Verdict::Send {
            keep.push((e, job, raw));
            continue;
        }
        outbox.write(WriteOp::Ack(e));
        if let Some(check) = check {
            let check = check.clone();
            tokio::spawn(async move { check.mark(&job, verdict).await });
        }
    }
    keep
}

/// Whether a message record says its job was submitted already: its status is past `queued`,
/// or it is a first send (no `exclude`) of a message whose re-send was decided (`rs`).
fn already_sent(status: Option<&str>, resent: Option<&str>, job: &crate::outbox::Job) -> bool {
    match status {
        // No record (expired, or never written): nothing says it went.
        None => false,
        Some("queued") => resent == Some("1") && job.exclude.is_none(),
        Some(_) => true,
    }
}

fn buffer(
    r: &Reader,
    jobs: Vec<(EntryRef, crate::outbox::Job, String)>,
    read_at: std::time::Instant,
) {
    let outbox = &r.outbox;
    let mut any = false;
    for (e, mut job, raw_j) in jobs {
        let refuse = job.exclude.as_deref() == Some(r.smsc.as_str())
            || (job.avoid.as_deref() == Some(r.smsc.as_str())
                && r.routing
                    .other_bound(&job.route, &r.smsc, job.exclude.as_deref()));
        let mut st = r.slot.lock();
        if st.held.contains_key(&e) {
            continue;
        }
        if st.closed || refuse {
            drop(st);
            if refuse {
                // For another SMSC, a little later so it does not bounce here.
                job.not_before_ms = outbox.clock.now_ms() + 200;
            }
            outbox.write(WriteOp::Release {
                entry: e,
                job: Box::new(job),
                raw: raw_j,
                consumer: r.name.clone(),
            });
            continue;
        }
        st.held.insert(
            e,
            Held {
                raw: raw_j,
                lost: false,
                fresh_at: read_at,
            },
        );
        if job.priority == Priority::Code {
            st.code.push_back(job);
        } else {
            st.rest.push_back(job);
        }
        any = true;
    }
    if any {
        r.slot.ready.notify_waiters();
    }
}

/// The heartbeat: its own timer, on the shared connection (nothing here blocks).
pub(super) async fn run_heartbeat(r: Arc<Reader>) {
    let stop = r.slot.heart.clone();
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cursors: Vec<String> = vec!["-".to_owned(); r.streams.len()];
    let mut beats: u32 = 0;
    // After Redis failed us, no takeover until it answered for CLAIM_IDLE: every owner (in
    // every instance) gets to touch what it holds first — an outage makes everything idle.
    let mut failed_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        beats = beats.wrapping_add(1);
        let reap = beats % REAP_EVERY == 1;
        let may_claim = failed_at.is_none_or(|t| t.elapsed() >= CLAIM_IDLE);
        let result = tokio::select! {
            res = heartbeat(&r, &mut cursors, reap, may_claim) => res,
            _ = stop.cancelled() => return,
        };
        if let Err(e) = result {
            failed_at = Some(tokio::time::Instant::now());
            tracing::warn!(error = %e, "outbox: heartbeat failed");
        }
    }
}

async fn heartbeat(
    r: &Reader,
    cursors: &mut [String],
    reap: bool,
    may_claim: bool,
) -> redis::RedisResult<()> {
    let outbox = &r.outbox;
    let mut c = outbox.conn.clone();
    touch(r, &mut c).await?;
    move_due(outbox, &mut c).await?;
    let kinds = JOB_KINDS.join(",");
    for (s, cursor) in r.streams.iter().zip(cursors.iter_mut()) {
        let room = {
            let st = r.slot.lock();
            if st.closed {
                0
            } else {
                r.slot.budget.saturating_sub(st.buffered())
            }
        };
        if !may_claim || room == 0 {
            break;
        }
        let claimed_at = std::time::Instant::now();
        let (next, claimed, foreign): (String, Vec<Vec<String>>, Vec<Vec<String>>) = outbox
            .claim
            .key(s)
            .arg(GROUP)
            .arg(&*r.name)
            .arg(CLAIM_IDLE.as_millis() as u64)
            .arg(cursor.as_str())
            .arg(room)
            .arg(JOB_VERSION)
            .arg(&kinds)
            .invoke_async(&mut c)
            .await?;
        *cursor = next;
        for f in foreign {
            if let [id, v, k] = f.as_slice() {
                let e = EntryRef {
                    stream: s.clone(),
                    id: id.clone(),
                };
                outbox.foreign(e, v, k);
            }
        }
        if !claimed.is_empty() {
            tracing::info!(
                claimed = claimed.len(),
                "outbox: took over messages of a silent consumer"
            );
            let entries = claimed
                .into_iter()
                .filter_map(|e| match <[String; 4]>::try_from(e) {
                    Ok([id, v, k, j]) => Some(Raw {
                        stream: s.clone(),
                        id,
                        v: Some(v),
                        k: Some(k),
                        j: Some(j),
                    }),
                    Err(_) => None,
                })
                .collect();
            admit(r, entries, true, claimed_at).await;
        }
    }
    if reap {
        for s in &r.streams {
            let n: i64 = outbox
                .reap
                .key(s)
                .arg(GROUP)
                .arg(REAP_IDLE.as_millis() as u64)
                .invoke_async(&mut c)
                .await?;
            if n > 0 {
                tracing::info!(
                    removed = n,
                    "outbox: removed idle consumers that held nothing"
                );
            }
        }
    }
    prune_foreign(r, &mut c).await
}

/// Forgets the reported entries of a newer version (in this consumer's streams) that are no
/// longer pending: one pipeline, only while there are some.
async fn prune_foreign(
    r: &Reader,
    c: &mut redis::aio::ConnectionManager,
) -> redis::RedisResult<()> {
    let known = r.outbox.foreign_in(&r.streams);
    if known.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for e in &known {
        pipe.cmd("XPENDING")
            .arg(&e.stream)
            .arg(GROUP)
            .arg(&e.id)
            .arg(&e.id)
            .arg(1);
    }
    let pending: Vec<Vec<redis::Value>> = pipe.query_async(c).await?;
    let gone: Vec<EntryRef> = known
        .into_iter()
        .zip(pending)
        .filter(|(_, p)| p.is_empty())
        .map(|(e, _)| e)
        .collect();
    r.outbox.forget_foreign(&gone);
    Ok(())
}

/// Moves due retries back to their streams (any instance may; each moves once).
async fn move_due(
    outbox: &RedisOutbox,
    c: &mut redis::aio::ConnectionManager,
) -> redis::RedisResult<()> {
    let delay = outbox.keys.outbox_delay();
    let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(&delay)
        .arg("-inf")
        .arg(outbox.clock.now_ms())
        .arg("LIMIT")
        .arg(0)
        .arg(200)
        .query_async(c)
        .await?;
    for m in due {
        let Some((stream, _)) = m.split_once('\n') else {
            // Not a member any version writes: drop it rather than retry it for ever.
            tracing::error!("outbox: malformed delayed entry dropped");
            let _: i64 = redis::cmd("ZREM")
                .arg(&delay)
                .arg(&m)
                .query_async(c)
                .await?;
            continue;
        };
        let _: i64 = outbox
            .move_due
            .key(&delay)
            .key(stream)
            .arg(&m)
            .invoke_async(c)
            .await?;
    }
    Ok(())
}

/// Touches the entries this consumer holds whose idle time in Redis passed [`TOUCH_AFTER`]
/// (the others are too fresh to be taken over: a claim needs [`CLAIM_IDLE`]); marks those it no
/// longer owns as lost. Most entries are settled long before: a heartbeat touches few.
async fn touch(r: &Reader, c: &mut redis::aio::ConnectionManager) -> redis::RedisResult<()> {
    let now = std::time::Instant::now();
    let before = now.checked_sub(TOUCH_AFTER).unwrap_or(now);
    let mut by_stream: HashMap<String, Vec<String>> = HashMap::new();
    for (e, h) in r.slot.lock().held.iter() {
        if !h.lost && h.fresh_at <= before {
            by_stream
                .entry(e.stream.clone())
                .or_default()
                .push(e.id.clone());
        }
    }
    for (s, ids) in by_stream {
        let lost = touch_ids(&r.outbox, c, &s, &r.name, &ids).await?;
        let mut st = r.slot.lock();
        // Fresh from before the call on, once Redis confirmed it.
        for id in &ids {
            let e = EntryRef {
                stream: s.clone(),
                id: id.clone(),
            };
            if let Some(h) = st.held.get_mut(&e) {
                h.fresh_at = now;
            }
        }
        let mut n = 0u64;
        for id in lost {
            let e = EntryRef {
                stream: s.clone(),
                id,
            };
            // Settled meanwhile (acked by us): not lost, just gone.
            if let Some(h) = st.held.get_mut(&e) {
                h.lost = true;
                n += 1;
            }
        }
        drop(st);
        if n > 0 {
            metrics::counter!("otpgate_outbox_lost_total").increment(n);
            tracing::warn!(lost = n, stream = %s,
                "outbox: messages taken over by another consumer (this one was silent too long)");
        }
    }
    Ok(())
}

/// `touch.lua` for `ids` of `stream` pending to `consumer`: returns those it no longer owns.
async fn touch_ids(
    outbox: &RedisOutbox,
    c: &mut redis::aio::ConnectionManager,
    stream: &str,
    consumer: &str,
    ids: &[String],
) -> redis::RedisResult<Vec<String>> {
    outbox
        .touch
        .key(stream)
        .arg(GROUP)
        .arg(consumer)
        .arg(ids)
        .invoke_async(c)
        .await
}

/// The toucher of handed entries (settled, their outcome not yet recorded by the tracker): one
/// per outbox, on behalf of the consumers they are pending to — also while a consumer's
/// session reconnects and has no heartbeat. Ends with the outbox.
pub(super) async fn run_handed(outbox: std::sync::Weak<RedisOutbox>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(outbox) = outbox.upgrade() else {
            return;
        };
        if let Err(e) = touch_handed(&outbox).await {
            tracing::warn!(error = %e, "outbox: touching settled messages failed");
        }
    }
}

async fn touch_handed(outbox: &RedisOutbox) -> redis::RedisResult<()> {
    let now = std::time::Instant::now();
    let before = now.checked_sub(TOUCH_AFTER).unwrap_or(now);
    let mut groups: HashMap<(String, Arc<str>), Vec<String>> = HashMap::new();
    let mut abandoned = 0u64;
    if let Ok(mut h) = outbox.handed.lock() {
        h.retain(|_, x| {
            let keep = now.duration_since(x.handed_at) < HANDED_MAX;
            abandoned += u64::from(!keep);
            keep
        });
        for (e, x) in h.iter() {
            if x.fresh_at <= before {
                groups
                    .entry((e.stream.clone(), x.consumer.clone()))
                    .or_default()
                    .push(e.id.clone());
            }
        }
    }
    if abandoned > 0 {
        tracing::warn!(
            messages = abandoned,
            "outbox: settled messages whose outcome was never recorded are no longer held; they may be sent again"
        );
    }
    let mut c = outbox.conn.clone();
    for ((stream, consumer), ids) in groups {
        let lost = touch_ids(outbox, &mut c, &stream, &consumer, &ids).await?;
        let lost: std::collections::HashSet<String> = lost.into_iter().collect();
        if let Ok(mut h) = outbox.handed.lock() {
            for id in ids {
                let e = EntryRef {
                    stream: stream.clone(),
                    id,
                };
                if lost.contains(&e.id) {
                    // Taken over (or acknowledged meanwhile): not ours to touch any more; the
                    // tracker's acknowledgement still removes it.
                    h.remove(&e);
                } else if let Some(x) = h.get_mut(&e) {
                    x.fresh_at = now;
                }
            }
        }
    }
    Ok(())
}

/// A test hook: the next outbox reader of the daemon whose key prefix is `prefix` panics (at
/// its next read), to prove supervision. Not for production use; nothing in the daemon calls it.
#[doc(hidden)]
pub fn panic_next_reader_of(prefix: &str) {
    if let Ok(mut armed) = PANIC_AT.lock() {
        armed.push(prefix.to_owned());
        PANIC_ARMED.store(true, Ordering::SeqCst);
    }
}

static PANIC_AT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
static PANIC_ARMED: AtomicBool = AtomicBool::new(false);

/// Whether the test hook asks a reader of `prefix` to panic now (once).
fn panic_requested(prefix: &str) -> bool {
    if !PANIC_ARMED.load(Ordering::Relaxed) {
        return false;
    }
    let Ok(mut armed) = PANIC_AT.lock() else {
        return false;
    };
    let Some(i) = armed.iter().position(|a| a == prefix) else {
        return false;
    };
    armed.swap_remove(i);
    PANIC_ARMED.store(!armed.is_empty(), Ordering::SeqCst);
    true
}
