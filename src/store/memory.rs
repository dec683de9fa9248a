//! The embedded store: sharded maps in this process. Nothing survives a restart.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;

use super::{
    CORRELATION_TTL_MS, CheckOutcome, Checked, DeliveryStatus, Error, MessageRecord, MessageUpdate,
    ORPHAN_RECEIPT_TTL_MS, PartOutcome, PartReceipt, RETENTION_AFTER_EXPIRY_MS, ResendOutcome,
    Status, Store, Verification, smsc_id_forms,
};

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
    /// (SMSC, SMSC id) → (message id, parts, expiry).
    correlations: Sharded<(String, u32, i64)>,
    /// (SMSC, SMSC id) → (receipt stat, expiry), for receipts that came first.
    orphans: Sharded<(String, i64)>,
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

fn pair_key(smsc: &str, id: &str) -> String {
    format!("{smsc}\u{1}{id}")
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore {
            verifications: Sharded::new(),
            subjects: Sharded::new(),
            messages: Sharded::new(),
            correlations: Sharded::new(),
            orphans: Sharded::new(),
        }
    }

    /// Drops what is past its retention; returns how many objects went.
    pub fn sweep(&self, now_ms: i64) -> usize {
        let cutoff = now_ms - RETENTION_AFTER_EXPIRY_MS;
        self.verifications.retain(|v| v.expires_at_ms > cutoff)
            + self.subjects.retain(|(_, exp)| *exp > now_ms)
            + self.messages.retain(|m| m.expires_at_ms > cutoff)
            + self.correlations.retain(|(_, _, exp)| *exp > now_ms)
            + self.orphans.retain(|(_, exp)| *exp > now_ms)
    }

    /// Verifications held (any status).
    pub fn verification_count(&self) -> usize {
        self.verifications.len()
    }
}

impl Store for MemoryStore {
    async fn create_verification(
        &self,
        v: &Verification,
        msg: &MessageRecord,
    ) -> Result<(), Error> {
        // Both the old and the new verification are looked up under the subject lock, so
        // two creations for one subject cannot both stay pending.
        self.subjects.with(&v.subject, |subjects| {
            if let Some((old, _)) = subjects.get(&v.subject) {
                self.verifications.with(old, |vs| {
                    if let Some(o) = vs.get_mut(old)
                        && o.status == Status::Pending
                    {
                        o.status = Status::Canceled;
                    }
                });
            }
            self.verifications
                .with(&v.id, |vs| vs.insert(v.id.clone(), v.clone()));
            subjects.insert(v.subject.clone(), (v.id.clone(), v.expires_at_ms));
        });
        self.messages.with(&msg.id, |m| {
            m.insert(
                msg.id.clone(),
                StoredMessage::new(msg.clone(), v.expires_at_ms),
            )
        });
        Ok(())
    }

    async fn get_verification(
        &self,
        client: &str,
        id: &str,
    ) -> Result<Option<Verification>, Error> {
        Ok(self
            .verifications
            .with(id, |vs| vs.get(id).filter(|v| v.client == client).cloned()))
    }

    async fn check_verification(
        &self,
        client: &str,
        id: &str,
        matches_digits: u8,
        now_ms: i64,
    ) -> Result<Checked, Error> {
        Ok(self.verifications.with(id, |vs| {
            let Some(v) = vs.get_mut(id).filter(|v| v.client == client) else {
                return Checked {
                    outcome: CheckOutcome::NotFound,
                    purpose: None,
                };
            };
            let correct = matches_digits == v.digits;
            Checked {
                outcome: apply_check(v, correct, now_ms),
                purpose: Some(v.purpose),
            }
        }))
    }

    async fn resend_verification(
        &self,
        client: &str,
        id: &str,
        now_ms: i64,
        msg: &MessageRecord,
    ) -> Result<ResendOutcome, Error> {
        let outcome = self.verifications.with(id, |vs| {
            let Some(v) = vs.get_mut(id).filter(|v| v.client == client) else {
                return ResendOutcome::NotFound;
            };
            apply_resend(v, now_ms, &msg.id)
        });
        if let ResendOutcome::Sent(v) = &outcome {
            self.messages.with(&msg.id, |m| {
                m.insert(
                    msg.id.clone(),
                    StoredMessage::new(msg.clone(), v.expires_at_ms),
                )
            });
        }
        Ok(outcome)
    }

    async fn create_message(&self, msg: &MessageRecord, keep_until_ms: i64) -> Result<(), Error> {
        // The sweep keeps messages until RETENTION_AFTER_EXPIRY_MS past their stored time.
        let expiry = keep_until_ms - RETENTION_AFTER_EXPIRY_MS;
        self.messages.with(&msg.id, |m| {
            m.insert(msg.id.clone(), StoredMessage::new(msg.clone(), expiry))
        });
        Ok(())
    }

    async fn get_message(&self, id: &str) -> Result<Option<MessageRecord>, Error> {
        Ok(self
            .messages
            .with(id, |m| m.get(id).map(|s| s.record.clone())))
    }

    async fn update_message(&self, id: &str, u: &MessageUpdate) -> Result<(), Error> {
        self.messages.with(id, |m| {
            if let Some(s) = m.get_mut(id) {
                apply_message_update(&mut s.record, u);
            }
        });
        Ok(())
    }

    async fn correlate(
        &self,
        smsc: &str,
        smsc_ids: &[String],
        message_id: &str,
        now_ms: i64,
    ) -> Result<Vec<String>, Error> {
        let mut early = Vec::new();
        for id in smsc_ids {
            let Some(norm) = smsc_id_forms(id).into_iter().next() else {
                continue;
            };
            let key = pair_key(smsc, &norm);
            let orphan = self.orphans.with(&key, |o| o.remove(&key));
            match orphan {
                Some((stat, _)) => early.push(stat),
                None => {
                    let value = (
                        message_id.to_owned(),
                        smsc_ids.len() as u32,
                        now_ms + CORRELATION_TTL_MS,
                    );
                    self.correlations
                        .with(&key, |c| c.insert(key.clone(), value));
                }
            }
        }
        Ok(early)
    }

    async fn match_receipt(
        &self,
        smsc: &str,
        smsc_id: &str,
        stat: &str,
        now_ms: i64,
    ) -> Result<Option<(String, u32)>, Error> {
        let forms = smsc_id_forms(smsc_id);
        for f in &forms {
            let key = pair_key(smsc, f);
            if let Some((m, parts, _)) = self.correlations.with(&key, |c| c.remove(&key)) {
                return Ok(Some((m, parts)));
            }
        }
        for f in &forms {
            let key = pair_key(smsc, f);
            let value = (stat.to_owned(), now_ms + ORPHAN_RECEIPT_TTL_MS);
            self.orphans.with(&key, |o| o.insert(key.clone(), value));
        }
        Ok(None)
    }

    async fn record_part(
        &self,
        message_id: &str,
        part: &PartReceipt,
    ) -> Result<PartOutcome, Error> {
        Ok(self
            .messages
            .with(message_id, |m| match m.get_mut(message_id) {
                None => PartOutcome::Pending,
                Some(s) => apply_part(s, part),
            }))
    }

    async fn ping(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// The receipt accounting of one message (the Redis script implements the same).
fn apply_part(s: &mut StoredMessage, part: &PartReceipt) -> PartOutcome {
    if s.record.status.is_final() {
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

/// The check state machine (the Redis script implements the same).
pub(crate) fn apply_check(v: &mut Verification, correct: bool, now_ms: i64) -> CheckOutcome {
    match v.status_at(now_ms) {
        Status::Canceled => return CheckOutcome::NotFound,
        Status::Approved => return CheckOutcome::AlreadyUsed,
        Status::Locked => return CheckOutcome::Locked,
        Status::Expired => return CheckOutcome::Expired,
        Status::Pending => {}
    }
    if correct {
        v.status = Status::Approved;
        return CheckOutcome::Approved;
    }
    v.attempts_used += 1;
    if v.attempts_used >= v.max_attempts {
        v.status = Status::Locked;
        CheckOutcome::LockedNow
    } else {
        CheckOutcome::Wrong {
            attempts_remaining: v.max_attempts - v.attempts_used,
        }
    }
}

/// The resend state machine (the Redis script implements the same).
pub(crate) fn apply_resend(v: &mut Verification, now_ms: i64, message_id: &str) -> ResendOutcome {
    match v.status_at(now_ms) {
        Status::Canceled => return ResendOutcome::NotFound,
        Status::Approved => return ResendOutcome::AlreadyUsed,
        Status::Locked => return ResendOutcome::Locked,
        Status::Expired => return ResendOutcome::Expired,
        Status::Pending => {}
    }
    if v.sends >= v.max_sends {
        return ResendOutcome::MaxSends;
    }
    let next = v.last_sent_ms + v.cooldown_ms;
    if now_ms < next {
        return ResendOutcome::Cooldown {
            retry_after_ms: next - now_ms,
        };
    }
    v.sends += 1;
    v.last_sent_ms = now_ms;
    v.message_id = message_id.to_owned();
    ResendOutcome::Sent(Box::new(v.clone()))
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
