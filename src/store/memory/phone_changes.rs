//! Phone changes in memory. A change's own lock first, then (to settle) the account phones'
//! lock, then the event histories: the order of [`super::phones`] after its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::StoredMessage;
use super::phones::{MemoryPhones, upsert};
use crate::otp::challenge::{self, ResendVerdict};
use crate::store::phone_changes::{
    PhoneChange, PhoneChangeStore, SettleOutcome, Settled, Settlement,
};
use crate::store::{
    BoxFuture, CheckOutcome, CodeProof, Error, MessageRecord, RETENTION_AFTER_EXPIRY_MS, Status,
};

pub struct MemoryPhoneChanges {
    phones: Arc<MemoryPhones>,
    changes: Mutex<HashMap<String, PhoneChange>>,
}

impl MemoryPhoneChanges {
    pub fn new(phones: Arc<MemoryPhones>) -> MemoryPhoneChanges {
        MemoryPhoneChanges {
            phones,
            changes: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, PhoneChange>> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn store_message(&self, msg: &MessageRecord, expires_at_ms: i64) {
        self.phones.store.messages.with(&msg.id, |m| {
            m.insert(
                msg.id.clone(),
                StoredMessage::new(msg.clone(), expires_at_ms),
            )
        });
    }

    fn create_change(&self, pc: &PhoneChange, msg: &MessageRecord) {
        let mut changes = self.lock();
        // Forget changes past their retention (phone changes are rare; a scan is cheap).
        let cutoff = pc.created_at_ms - RETENTION_AFTER_EXPIRY_MS;
        changes.retain(|_, c| c.challenge.expires_at_ms > cutoff);
        changes.insert(pc.id.clone(), pc.clone());
        self.store_message(msg, pc.challenge.expires_at_ms);
    }

    fn check_change(&self, client: &str, id: &str, proof: &CodeProof, now_ms: i64) -> CheckOutcome {
        let mut changes = self.lock();
        let Some(pc) = changes.get_mut(id).filter(|c| c.client == client) else {
            return CheckOutcome::NotFound;
        };
        let correct = proof.is_right(&pc.key_id, pc.digits);
        challenge::check(&mut pc.challenge, correct, now_ms)
    }

    fn resend_change(
        &self,
        client: &str,
        id: &str,
        now_ms: i64,
        msg: &MessageRecord,
    ) -> (ResendVerdict, Option<PhoneChange>) {
        let mut changes = self.lock();
        let Some(pc) = changes.get_mut(id).filter(|c| c.client == client) else {
            return (ResendVerdict::NotFound, None);
        };
        let verdict = challenge::resend(&mut pc.challenge, now_ms);
        if verdict != ResendVerdict::Sent {
            return (verdict, None);
        }
        pc.message_id = msg.id.clone();
        let now = pc.clone();
        self.store_message(msg, now.challenge.expires_at_ms);
        (verdict, Some(now))
    }

    fn settle_change(
        &self,
        client: &str,
        id: &str,
        how: &Settlement<'_>,
        now_ms: i64,
    ) -> SettleOutcome {
        let mut changes = self.lock();
        let Some(pc) = changes.get_mut(id).filter(|c| c.client == client) else {
            return SettleOutcome::NotFound;
        };
        if let Some(s) = &pc.settled {
            return SettleOutcome::AlreadySettled(s.clone());
        }
        if pc.challenge.status != Status::Approved {
            return SettleOutcome::NotVerified;
        }
        if now_ms >= pc.challenge.expires_at_ms {
            return SettleOutcome::Expired;
        }
        match how {
            Settlement::Refuse { reason, event } => {
                pc.settled = Some(Settled::Refused((*reason).to_owned()));
                self.phones
                    .store
                    .events
                    .lock()
                    .push(&pc.account_id, (*event).clone());
                SettleOutcome::Refused
            }
            Settlement::Complete { phone, event } => {
                let mut acc = self.phones.lock();
                let phones = acc.phones.entry(pc.account_id.clone()).or_default();
                let old = phones
                    .iter()
                    .position(|p| p.primary && p.phone != phone.phone)
                    .map(|i| phones.remove(i).phone);
                let mut new = (*phone).clone();
                new.primary = true;
                new.level = 2;
                upsert(phones, new);
                pc.settled = Some(Settled::Completed);
                self.phones
                    .store
                    .events
                    .lock()
                    .push(&pc.account_id, (*event).clone());
                SettleOutcome::Completed { old_primary: old }
            }
        }
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, Result<T, Error>> {
    Box::pin(std::future::ready(Ok(v)))
}

impl PhoneChangeStore for MemoryPhoneChanges {
    fn create<'a>(
        &'a self,
        pc: &'a PhoneChange,
        msg: &'a MessageRecord,
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.create_change(pc, msg);
        ready(())
    }

    fn get<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<PhoneChange>, Error>> {
        ready(self.lock().get(id).filter(|c| c.client == client).cloned())
    }

    fn check<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
        proof: &'a CodeProof,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<CheckOutcome, Error>> {
        ready(self.check_change(client, id, proof, now_ms))
    }

    fn resend<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
        now_ms: i64,
        msg: &'a MessageRecord,
    ) -> BoxFuture<'a, Result<(ResendVerdict, Option<PhoneChange>), Error>> {
        ready(self.resend_change(client, id, now_ms, msg))
    }

    fn settle<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
        how: &'a Settlement<'a>,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<SettleOutcome, Error>> {
        ready(self.settle_change(client, id, how, now_ms))
    }
}
