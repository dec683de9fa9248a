//! The embedded store: sharded maps in this process. Nothing survives a restart.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;

use super::{
    CheckOutcome, Checked, Error, MessageRecord, MessageUpdate, RETENTION_AFTER_EXPIRY_MS,
    ResendOutcome, Status, Store, Verification,
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
    messages: Sharded<(MessageRecord, i64)>,
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
        }
    }

    /// Drops what is past its retention; returns how many objects went.
    pub fn sweep(&self, now_ms: i64) -> usize {
        let cutoff = now_ms - RETENTION_AFTER_EXPIRY_MS;
        self.verifications.retain(|v| v.expires_at_ms > cutoff)
            + self.subjects.retain(|(_, exp)| *exp > now_ms)
            + self.messages.retain(|(_, exp)| *exp > cutoff)
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
            m.insert(msg.id.clone(), (msg.clone(), v.expires_at_ms))
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
                m.insert(msg.id.clone(), (msg.clone(), v.expires_at_ms))
            });
        }
        Ok(outcome)
    }

    async fn create_message(&self, msg: &MessageRecord, keep_until_ms: i64) -> Result<(), Error> {
        // The sweep keeps messages until RETENTION_AFTER_EXPIRY_MS past their stored time.
        let expiry = keep_until_ms - RETENTION_AFTER_EXPIRY_MS;
        self.messages
            .with(&msg.id, |m| m.insert(msg.id.clone(), (msg.clone(), expiry)));
        Ok(())
    }

    async fn get_message(&self, id: &str) -> Result<Option<MessageRecord>, Error> {
        Ok(self
            .messages
            .with(id, |m| m.get(id).map(|(r, _)| r.clone())))
    }

    async fn update_message(&self, id: &str, u: &MessageUpdate) -> Result<(), Error> {
        self.messages.with(id, |m| {
            if let Some((r, _)) = m.get_mut(id) {
                apply_message_update(r, u);
            }
        });
        Ok(())
    }

    async fn ping(&self) -> Result<(), Error> {
        Ok(())
    }
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
