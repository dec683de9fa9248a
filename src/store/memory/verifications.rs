//! The verification aggregate in memory: [`crate::otp::challenge`]'s rules applied under the
//! entry's lock, inside [`crate::limits::MemoryLimits`]' lock when limits guard the change.
//!
//! Lock order (always): limits, then the subject, then a verification shard, then messages,
//! then the account histories.

use super::{MemoryStore, StoredMessage, ready};
use crate::limits::{CheckEffect, LimitName, Mode, RangeCharge, Refused};
use crate::otp::challenge;
use crate::store::events::{AccountEvent, EventKind};
use crate::store::verifications::{CheckRequest, SendGuards};
use crate::store::{
    BoxFuture, CheckOutcome, Checked, Error, MessageRecord, ResendOutcome, Status, Verification,
    VerificationStore,
};

/// The account event of a check's outcome, for a verification with an account.
pub(crate) fn check_event(
    v: &Verification,
    outcome: CheckOutcome,
    now_ms: i64,
) -> Option<AccountEvent> {
    let kind = match outcome {
        CheckOutcome::Approved => EventKind::VerificationApproved,
        CheckOutcome::Wrong { .. } => EventKind::VerificationFailed,
        CheckOutcome::LockedNow => EventKind::VerificationLocked,
        CheckOutcome::Locked
        | CheckOutcome::Expired
        | CheckOutcome::AlreadyUsed
        | CheckOutcome::NotFound
        | CheckOutcome::Forbidden => return None,
    };
    v.account_id.as_ref()?;
    Some(
        AccountEvent::new(kind, &v.client, now_ms)
            .purpose(v.purpose.as_str())
            .phone_masked(v.phone.masked())
            .ip(v.guard.ip.as_deref()),
    )
}

impl MemoryStore {
    fn insert_message(&self, msg: &MessageRecord, expires_at_ms: i64) {
        self.messages.with(&msg.id, |m| {
            m.insert(
                msg.id.clone(),
                StoredMessage::new(msg.clone(), expires_at_ms),
            )
        });
    }

    fn push_event(&self, account: Option<&String>, event: Option<&AccountEvent>) {
        if let (Some(a), Some(e)) = (account, event) {
            self.events.lock().push(a, e.clone());
        }
    }

    pub(crate) fn create_verification(
        &self,
        v: &Verification,
        msg: &MessageRecord,
        g: SendGuards<'_>,
    ) -> Result<(), Refused> {
        let change = || {
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
            self.insert_message(msg, v.expires_at_ms);
            self.push_event(v.account_id.as_ref(), g.event);
            Ok::<(), std::convert::Infallible>(())
        };
        self.limits
            .apply_with(
                &g.plan.charges,
                g.plan.range.as_ref(),
                v.created_at_ms,
                change,
            )
            .map(|_| ())
    }

    fn check_verification(&self, id: &str, req: &CheckRequest<'_>) -> Checked {
        // What the check records besides the challenge is fixed at creation: read it first.
        let guard = self
            .verifications
            .with(id, |vs| vs.get(id).map(|v| v.guard.clone()))
            .unwrap_or_default();
        let failure = match (&guard.failures_key, req.guards.failures_rule) {
            (Some(key), Some(rule)) => Some(crate::limits::Charge {
                limit: LimitName::AccountFailures,
                key: key.clone(),
                rule,
                mode: Mode::Record,
            }),
            _ => None,
        };
        let range = guard.range.map(|range| RangeCharge { range });
        if failure.is_none() && range.is_none() {
            return self.check_locked(id, req).0;
        }
        self.limits
            .after_check(failure.as_ref(), range.as_ref(), req.now_ms, || {
                self.check_locked(id, req)
            })
    }

    fn check_locked(&self, id: &str, req: &CheckRequest<'_>) -> (Checked, CheckEffect) {
        self.verifications.with(id, |vs| {
            let Some(v) = vs.get_mut(id).filter(|v| v.client == req.client) else {
                let c = Checked {
                    outcome: CheckOutcome::NotFound,
                    purpose: None,
                };
                return (c, CheckEffect::default());
            };
            if !req.allowed.contains(&v.purpose) {
                let c = Checked {
                    outcome: CheckOutcome::Forbidden,
                    purpose: Some(v.purpose),
                };
                return (c, CheckEffect::default());
            }
            let correct = req.proof.is_right(&v.key_id, v.digits);
            let mut c = v.challenge();
            let outcome = challenge::check(&mut c, correct, req.now_ms);
            v.set_challenge(&c);
            let event = check_event(v, outcome, req.now_ms);
            self.push_event(v.account_id.as_ref(), event.as_ref());
            let effect = CheckEffect {
                failed: matches!(
                    outcome,
                    CheckOutcome::Wrong { .. } | CheckOutcome::LockedNow
                ),
                approved: outcome == CheckOutcome::Approved,
            };
            (
                Checked {
                    outcome,
                    purpose: Some(v.purpose),
                },
                effect,
            )
        })
    }

    /// The challenge's answer to a resend now, without changing anything.
    fn resend_verdict(&self, client: &str, id: &str, now_ms: i64) -> Option<ResendOutcome> {
        self.verifications.with(id, |vs| {
            let Some(v) = vs.get(id).filter(|v| v.client == client) else {
                return Some(ResendOutcome::NotFound);
            };
            let mut c = v.challenge();
            ResendOutcome::refused(challenge::resend(&mut c, now_ms))
        })
    }

    fn resend_verification(
        &self,
        client: &str,
        id: &str,
        now_ms: i64,
        msg: &MessageRecord,
        g: SendGuards<'_>,
    ) -> ResendOutcome {
        // The challenge's refusals come before the limits' (as in resend.lua); the change
        // itself decides again under the locks.
        if let Some(refused) = self.resend_verdict(client, id, now_ms) {
            return refused;
        }
        let change = || {
            let outcome = self.verifications.with(id, |vs| {
                let Some(v) = vs.get_mut(id).filter(|v| v.client == client) else {
                    return ResendOutcome::NotFound;
                };
                let mut c = v.challenge();
                let verdict = challenge::resend(&mut c, now_ms);
                if let Some(refused) = ResendOutcome::refused(verdict) {
                    return refused;
                }
                v.set_challenge(&c);
                v.message_id = msg.id.clone();
                ResendOutcome::Sent(Box::new(v.clone()))
            });
            match outcome {
                ResendOutcome::Sent(v) => {
                    self.insert_message(msg, v.expires_at_ms);
                    self.push_event(v.account_id.as_ref(), g.event);
                    Ok(ResendOutcome::Sent(v))
                }
                other => Err(other),
            }
        };
        match self
            .limits
            .apply_with(&g.plan.charges, g.plan.range.as_ref(), now_ms, change)
        {
            Err(refused) => ResendOutcome::Limited(refused),
            Ok(Ok(o)) | Ok(Err(o)) => o,
        }
    }
}

impl VerificationStore for MemoryStore {
    fn create<'a>(
        &'a self,
        v: &'a Verification,
        msg: &'a MessageRecord,
        guards: SendGuards<'a>,
    ) -> BoxFuture<'a, Result<Result<(), Refused>, Error>> {
        ready(self.create_verification(v, msg, guards))
    }

    fn get<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Verification>, Error>> {
        ready(
            self.verifications
                .with(id, |vs| vs.get(id).filter(|v| v.client == client).cloned()),
        )
    }

    fn check<'a>(
        &'a self,
        id: &'a str,
        req: &'a CheckRequest<'a>,
    ) -> BoxFuture<'a, Result<Checked, Error>> {
        ready(self.check_verification(id, req))
    }

    fn resend<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
        now_ms: i64,
        msg: &'a MessageRecord,
        guards: SendGuards<'a>,
    ) -> BoxFuture<'a, Result<ResendOutcome, Error>> {
        ready(self.resend_verification(client, id, now_ms, msg, guards))
    }
}
