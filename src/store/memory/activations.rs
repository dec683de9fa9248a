//! Activations in memory: records, the redeem index and the account index behind one lock
//! (activations are few; a redeem holds it for a map look-up and [`decide`]).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::{MemoryStore, StoredMessage, ready};
use crate::activation::rules::decide;
use crate::store::activations::{
    Activation, ActivationStatus, ActivationStore, Redeem, RedeemOutcome,
};
use crate::store::{AccountEvent, BoxFuture, Error, MessageRecord, RETENTION_AFTER_EXPIRY_MS};

#[derive(Default)]
pub struct MemoryActivations {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Activation>,
    /// (client, lookup hash) → id of the latest activation.
    index: HashMap<(String, String), String>,
    /// (client, account) → id of the latest activation.
    by_account: HashMap<(String, String), String>,
}

impl MemoryActivations {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops activations past their retention, and index entries pointing nowhere.
    pub fn sweep(&self, now_ms: i64) {
        let mut g = self.lock();
        let cutoff = now_ms - RETENTION_AFTER_EXPIRY_MS;
        g.by_id.retain(|_, a| a.state.expires_at_ms > cutoff);
        let Inner {
            by_id,
            index,
            by_account,
        } = &mut *g;
        index.retain(|_, id| by_id.contains_key(id));
        by_account.retain(|_, id| by_id.contains_key(id));
    }
}

impl MemoryStore {
    fn issue_activation(&self, a: &Activation, msg: &MessageRecord, event: &AccountEvent) {
        let mut g = self.activations.lock();
        let account = (a.client.clone(), a.account_id.clone());
        if let Some(old) = g.by_account.get(&account).cloned()
            && let Some(o) = g.by_id.get_mut(&old)
            && o.state.status == ActivationStatus::Pending
        {
            o.state.status = ActivationStatus::Canceled;
        }
        g.by_id.insert(a.id.clone(), a.clone());
        g.index
            .insert((a.client.clone(), a.lookup_hash.clone()), a.id.clone());
        g.by_account.insert(account, a.id.clone());
        self.messages.with(&msg.id, |m| {
            m.insert(
                msg.id.clone(),
                StoredMessage::new(msg.clone(), a.state.expires_at_ms),
            )
        });
        self.events.lock().push(&a.account_id, event.clone());
    }

    fn redeem_activation(&self, r: Redeem<'_>) -> RedeemOutcome {
        let mut g = self.activations.lock();
        let found = r.id.and_then(|id| g.by_id.get_mut(id));
        let d = decide(found.as_ref().map(|a| &a.state), r.matched, r.now_ms);
        if let (Some(a), Some(next)) = (found, d.next) {
            a.state = next;
            if d.outcome == RedeemOutcome::Redeemed {
                self.events.lock().push(&a.account_id, r.event.clone());
            }
        }
        d.outcome
    }
}

impl ActivationStore for MemoryStore {
    fn issue<'a>(
        &'a self,
        a: &'a Activation,
        msg: &'a MessageRecord,
        event: &'a AccountEvent,
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.issue_activation(a, msg, event);
        ready(())
    }

    fn find<'a>(
        &'a self,
        client: &'a str,
        lookup_hashes: &'a [String],
    ) -> BoxFuture<'a, Result<Option<Activation>, Error>> {
        let g = self.activations.lock();
        let found = lookup_hashes.iter().find_map(|h| {
            let id = g.index.get(&(client.to_owned(), h.clone()))?;
            g.by_id.get(id).cloned()
        });
        ready(found)
    }

    fn redeem<'a>(&'a self, r: Redeem<'a>) -> BoxFuture<'a, Result<RedeemOutcome, Error>> {
        ready(self.redeem_activation(r))
    }

    fn get<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Activation>, Error>> {
        let g = self.activations.lock();
        ready(g.by_id.get(id).filter(|a| a.client == client).cloned())
    }
}
