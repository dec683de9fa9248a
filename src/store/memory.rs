//! The embedded store: sharded maps in this process. Nothing survives a restart.
//!
//! The verification rules are [`crate::otp::challenge`]'s, applied under the entry's lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;

use super::{
    BoxFuture, DeliveryStatus, Error, Health, MessageRecord, MessageStore, MessageUpdate,
    PartOutcome, PartReceipt, RETENTION_AFTER_EXPIRY_MS, ReceiptIds, ReceiptMatch, Verification,
};

pub mod activations;
pub mod events;
pub mod limits;
pub mod phone_changes;
pub mod phones;
pub mod receipts;
pub mod totp;
pub mod verifications;

const SHARDS: usize = 32;

/// Sharded maps keep lock contention low with many concurrent requests.
struct Sharded<V> {
    shards: Vec<Mutex<HashMap<String, V>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl<V> Sharded<V> {
    fn new() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }

    fn shard<K: Hash + ?Sized>(&self, key: &K) -> &Mutex<HashMap<String, V>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    fn with<R>(&self, key: &str, f: impl FnOnce(&mut HashMap<String, V>) -> R) -> R {
        let mut guard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    fn retain(&self, mut keep: impl FnMut(&V) -> bool) -> usize {
        let mut removed = 0;
        for s in &self.shards {
            let mut g = s.lock().unwrap_or_else(|e| e.into_inner());
            let before = g.len();
            g.retain(|_, v| keep(v));
            removed += before - g.len();
        }
        removed
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// The in-process store.
pub struct MemoryStore {
    verifications: Sharded<Verification>,
    /// Subject hash → id of its latest verification.
    subjects: Sharded<(String, i64)>,
    messages: Sharded<StoredMessage>,
    /// Receipt correlations, orphans and learned id rules.
    receipts: receipts::Receipts,
    /// Account histories; operations that record an event lock them after their own entry.
    pub(crate) events: events::MemoryEvents,
    activations: activations::MemoryActivations,
    totp: totp::MemoryTotp,
    /// `[limits]` counters; taken before any other lock by the operations they guard.
    pub(crate) limits: crate::limits::MemoryLimits,
}

/// A message with its receipt bookkeeping.
struct StoredMessage {
    record: MessageRecord,
    /// The object's expiry; kept until [`RETENTION_AFTER_EXPIRY_MS`] after it.
    expires_at_ms: i64,
    parts_delivered: u32,
    resent: bool,
}

impl StoredMessage {
    fn new(record: MessageRecord, expires_at_ms: i64) -> StoredMessage {
        StoredMessage {
            record,
            expires_at_ms,
            parts_delivered: 0,
            resent: false,
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store without the pumping guard.
    pub fn new() -> MemoryStore {
        MemoryStore::with_guard(None)
    }

    /// A store whose limits include the pumping guard `guard` (`[limits.pumping_guard]`).
    pub fn with_guard(guard: Option<crate::limits::pumping::Guard>) -> MemoryStore {
        MemoryStore {
            verifications: Sharded::new(),
            subjects: Sharded::new(),
            messages: Sharded::new(),
            receipts: receipts::Receipts::default(),
            events: events::MemoryEvents::default(),
            activations: Default::default(),
            totp: Default::default(),
            limits: crate::limits::MemoryLimits::new(guard),
        }
    }

    /// Drops what is past its retention; returns how many objects went.
    pub fn sweep(&self, now_ms: i64) -> usize {
        let cutoff = now_ms - RETENTION_AFTER_EXPIRY_MS;
        self.verifications.retain(|v| v.expires_at_ms > cutoff)
            + self.subjects.retain(|(_, exp)| *exp > now_ms)
            + self.messages.retain(|m| m.expires_at_ms > cutoff)
            + self.receipts.sweep(now_ms)
            + {
                self.events.sweep(now_ms);
                self.activations.sweep(now_ms);
                self.limits.sweep(now_ms);
                0
            }
    }

    /// Verifications held (any status).
    pub fn verification_count(&self) -> usize {
        self.verifications.len()
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, Result<T, Error>> {
    Box::pin(std::future::ready(Ok(v)))
}

impl MessageStore for MemoryStore {
    fn create<'a>(
        &'a self,
        msg: &'a MessageRecord,
        keep_until_ms: i64,
    ) -> BoxFuture<'a, Result<(), Error>> {
        // The sweep keeps messages until RETENTION_AFTER_EXPIRY_MS past their stored time.
        let expiry = keep_until_ms - RETENTION_AFTER_EXPIRY_MS;
        self.messages.with(&msg.id, |m| {
            m.insert(msg.id.clone(), StoredMessage::new(msg.clone(), expiry))
        });
        ready(())
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<MessageRecord>, Error>> {
        ready(
            self.messages
                .with(id, |m| m.get(id).map(|s| s.record.clone())),
        )
    }

    fn update<'a>(&'a self, id: &'a str, u: &'a MessageUpdate) -> BoxFuture<'a, Result<(), Error>> {
        self.messages.with(id, |m| {
            if let Some(s) = m.get_mut(id) {
                apply_message_update(&mut s.record, u);
            }
        });
        ready(())
    }

    fn record_submitted<'a>(
        &'a self,
        message_id: &'a str,
        smsc: &'a str,
        smsc_ids: &'a [String],
        u: &'a MessageUpdate,
    ) -> BoxFuture<'a, Result<super::Correlated, Error>> {
        let send = self.messages.with(message_id, |m| {
            m.get_mut(message_id).map_or(0, |s| {
                apply_message_update(&mut s.record, u);
                u32::from(s.resent)
            })
        });
        let now_ms = u.at_ms;
        ready(
            self.receipts
                .correlate(smsc, smsc_ids, message_id, send, now_ms),
        )
    }

    fn match_receipt<'a>(
        &'a self,
        smsc: &'a str,
        rule: ReceiptIds,
        smsc_id: &'a str,
        stat: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<ReceiptMatch, Error>> {
        ready(
            self.receipts
                .match_receipt(smsc, rule, smsc_id, stat, now_ms),
        )
    }

    /// The memory store holds no outbox: `_job` is the caller's to push, into room it
    /// reserved before this call (see [`MessageStore::record_part`]).
    fn record_part<'a>(
        &'a self,
        message_id: &'a str,
        part: &'a PartReceipt,
        _job: Option<&'a crate::outbox::Job>,
    ) -> BoxFuture<'a, Result<PartOutcome, Error>> {
        ready(
            self.messages
                .with(message_id, |m| match m.get_mut(message_id) {
                    None => PartOutcome::Pending,
                    Some(s) => apply_part(s, part),
                }),
        )
    }
}

impl Health for MemoryStore {
    fn ping(&self) -> BoxFuture<'_, Result<(), Error>> {
        ready(())
    }
}

/// The receipt accounting of one message (the Redis script implements the same).
fn apply_part(s: &mut StoredMessage, part: &PartReceipt) -> PartOutcome {
    if s.record.status.is_final() || part.send != u32::from(s.resent) {
        return PartOutcome::Pending;
    }
    if part.status == DeliveryStatus::Delivered {
        s.parts_delivered += 1;
        if s.parts_delivered < part.parts {
            return PartOutcome::Pending;
        }
        s.record.status = DeliveryStatus::Delivered;
        s.record.delivered_at_ms = Some(part.at_ms);
        return PartOutcome::Final(DeliveryStatus::Delivered);
    }
    if part.resend && !s.resent {
        s.resent = true;
        s.parts_delivered = 0;
        s.record.status = DeliveryStatus::Queued;
        s.record.error = part.error.clone();
        return PartOutcome::Resend;
    }
    s.record.status = part.status;
    s.record.error = part.error.clone();
    PartOutcome::Final(part.status)
}

pub(crate) fn apply_message_update(r: &mut MessageRecord, u: &MessageUpdate) {
    if r.status.is_final() {
        return;
    }
    r.status = u.status;
    match u.status {
        super::DeliveryStatus::Submitted => r.submitted_at_ms = Some(u.at_ms),
        super::DeliveryStatus::Delivered => r.delivered_at_ms = Some(u.at_ms),
        _ => {}
    }
    if u.error.is_some() {
        r.error = u.error.clone();
    }
}

impl super::EventStore for MemoryStore {
    fn append<'a>(
        &'a self,
        account: &'a str,
        event: &'a super::AccountEvent,
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.events.lock().push(account, event.clone());
        Box::pin(async { Ok(()) })
    }

    fn recent<'a>(
        &'a self,
        account: &'a str,
        limit: usize,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<super::AccountEvent>, Error>> {
        let out = self.events.recent(account, limit, now_ms);
        Box::pin(async move { Ok(out) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_an_earlier_send_do_not_count() {
        let rec = MessageRecord::queued("msg_x", "c", "ver_x", crate::sms::Coding::Gsm7, 2, 0);
        let mut s = StoredMessage::new(rec, 1000);
        let part = |status, send, resend| PartReceipt {
            parts: 2,
            status,
            error: None,
            resend,
            at_ms: 1,
            send,
        };
        assert_eq!(
            apply_part(&mut s, &part(DeliveryStatus::Delivered, 0, false)),
            PartOutcome::Pending
        );
        let undeliv = part(DeliveryStatus::Undeliverable, 0, true);
        assert_eq!(apply_part(&mut s, &undeliv), PartOutcome::Resend);
        // A late part of the first send, then the re-send's two parts.
        assert_eq!(
            apply_part(&mut s, &part(DeliveryStatus::Delivered, 0, false)),
            PartOutcome::Pending
        );
        assert_eq!(
            apply_part(&mut s, &part(DeliveryStatus::Delivered, 1, false)),
            PartOutcome::Pending
        );
        assert_eq!(
            apply_part(&mut s, &part(DeliveryStatus::Delivered, 1, false)),
            PartOutcome::Final(DeliveryStatus::Delivered)
        );
    }
}
