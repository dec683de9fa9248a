//! TOTP enrolments in memory: one map behind one lock; [`decide`] runs under it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::{MemoryStore, ready};
use crate::store::totp::{TotpAttempt, TotpEnrolment, TotpOutcome, TotpStatus, TotpStore};
use crate::store::{AccountEvent, BoxFuture, Error};
use crate::totp::rules::decide;

#[derive(Default)]
pub struct MemoryTotp {
    by_account: Mutex<HashMap<String, TotpEnrolment>>,
}

impl MemoryTotp {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, TotpEnrolment>> {
        self.by_account.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MemoryStore {
    fn totp_attempt(&self, account: &str, a: TotpAttempt<'_>) -> Option<TotpOutcome> {
        let mut g = self.totp.lock();
        let e = g
            .get_mut(account)
            .filter(|e| e.sealed.encode() == a.sealed)?;
        let d = decide(&e.state, a.op, a.matched_steps, a.now_ms, a.lock_ms);
        if let Some(next) = d.next {
            if e.state.status == TotpStatus::Pending && next.status == TotpStatus::Active {
                e.activated_at_ms = Some(a.now_ms);
            }
            e.state = next;
        }
        let event = match d.outcome {
            TotpOutcome::Approved { .. } => a.approved_event,
            TotpOutcome::Activated { .. } => None,
            TotpOutcome::Incorrect { .. } | TotpOutcome::LockedNow { .. } => Some(a.failed_event),
            TotpOutcome::Replayed { .. }
            | TotpOutcome::Locked { .. }
            | TotpOutcome::NotActive
            | TotpOutcome::AlreadyActive => None,
        };
        if let Some(ev) = event {
            self.events.lock().push(account, ev.clone());
        }
        Some(d.outcome)
    }
}

impl TotpStore for MemoryStore {
    fn enrol<'a>(
        &'a self,
        e: &'a TotpEnrolment,
        event: &'a AccountEvent,
    ) -> BoxFuture<'a, Result<(), Error>> {
        let mut g = self.totp.lock();
        g.insert(e.account_id.clone(), e.clone());
        self.events.lock().push(&e.account_id, event.clone());
        ready(())
    }

    fn get<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<Option<TotpEnrolment>, Error>> {
        ready(self.totp.lock().get(account).cloned())
    }

    fn attempt<'a>(
        &'a self,
        account: &'a str,
        a: TotpAttempt<'a>,
    ) -> BoxFuture<'a, Result<Option<TotpOutcome>, Error>> {
        ready(self.totp_attempt(account, a))
    }

    fn delete<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<bool, Error>> {
        ready(self.totp.lock().remove(account).is_some())
    }
}
