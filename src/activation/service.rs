//! The activation service (contract §3.4): issue (the record, its SMS job and the event in
//! one store operation, then the outbox), redeem (look up by keyed hash, match off the store,
//! decide in the store), read.

use std::sync::Arc;

use super::codes::{ActivationKeys, Presented, StoredSecrets};
use super::config::ActivationConfig;
use super::issue::{Activation, NewActivation, issue};
use crate::outbox::{Body, Composer, Job, Outbox, Priority, Routing};
use crate::sms;
use crate::store::activations::{Redeem, RedeemOutcome};
use crate::store::{
    self, AccountEvent, DeliveryStatus, EventKind, MessageRecord, MessageUpdate, Stores,
};

/// Why an activation call was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Unknown, or another client's.
    #[error("activation not found")]
    NotFound,
    /// Any mismatch at redeem, whichever field was wrong (422 without attempts).
    #[error("activation code incorrect")]
    Incorrect,
    /// Locked by too many wrong tries (this one or before).
    #[error("too many wrong tries; activation locked")]
    Locked,
    #[error("activation expired")]
    Expired,
    #[error("activation already redeemed")]
    AlreadyUsed,
    /// No SMSC takes the number.
    #[error("no SMSC takes this number")]
    Unroutable,
    /// The SMS queue is full or unavailable.
    #[error("SMS queue full")]
    QueueFull,
    /// Refused by a `[limits]` rule (an activation SMS is a code SMS); nothing was sent.
    #[error("rate limited ({})", .0.limit.as_str())]
    RateLimited(crate::limits::Refused),
}

/// The server keys, current first, as `(key id, key)`, without duplicates: what
/// [`ActivationKeys`] and the TOTP sealer are built from (the ids are [`crate::otp::codes::key_id`],
/// the same as the code deriver's, so one rotation covers everything).
pub fn server_keys(current: &[u8; 32], retired: &[[u8; 32]]) -> Vec<(String, [u8; 32])> {
    let mut out: Vec<(String, [u8; 32])> = vec![(crate::otp::codes::key_id(current), *current)];
    for k in retired {
        let id = crate::otp::codes::key_id(k);
        if !out.iter().any(|(i, _)| *i == id) {
            out.push((id, *k));
        }
    }
    out
}

/// The activation keys of the configured server keys.
pub fn keys_for(
    server: &[(String, [u8; 32])],
    config: &ActivationConfig,
) -> Result<ActivationKeys, super::codes::KeysError> {
    let retired: Vec<(&str, &[u8; 32])> =
        server[1..].iter().map(|(i, k)| (i.as_str(), k)).collect();
    ActivationKeys::new(
        (&server[0].0, &server[0].1),
        &retired,
        &config.alphabet,
        config.length,
    )
}

/// The activation service: cheap to share behind an `Arc`.
pub struct Activations {
    /// The `[limits]` rules (shared with verifications).
    pub limits: std::sync::Arc<crate::limits::Limiter>,
    pub stores: Stores,
    pub keys: ActivationKeys,
    pub composer: Arc<Composer>,
    pub config: ActivationConfig,
    pub outbox: Outbox,
    pub routing: Arc<Routing>,
}

fn count(outcome: &'static str) {
    metrics::counter!("otpgate_activations_total", "outcome" => outcome).increment(1);
}

impl Activations {
    /// Issues an activation and queues its SMS; the account's pending one is canceled. `ip`:
    /// the end user's (`context.ip`), for the account's history.
    pub async fn issue(
        &self,
        req: NewActivation,
        ip: Option<&str>,
        now_ms: i64,
    ) -> Result<Activation, Error> {
        let route = self.routing.route(&req.phone).ok_or(Error::Unroutable)?;
        if self.outbox.is_full() {
            return Err(Error::QueueFull);
        }
        // The limits of a code SMS to this number, account and end user (contract §6),
        // checked and recorded before the activation is stored.
        let plan = self.limits.for_create(
            &self.composer.codes,
            crate::limits::Subject {
                account: Some(&req.account_id),
                phone: &req.phone,
                ip,
            },
        );
        if let Err(r) = self.stores.limits.apply(&plan, now_ms).await? {
            crate::limits::refused(r.limit);
            return Err(Error::RateLimited(r));
        }
        let client = req.client.clone();
        let ttl_ms = self.config.ttl.as_millis() as i64;
        let (a, sms_job) = issue(&self.keys, req, now_ms, ttl_ms, self.config.max_attempts);
        let body = Body::Activation(sms_job);
        // Rendered here only to know the encoding and parts; the session renders it again.
        let seg = sms::split(&self.composer.render(&body).unwrap_or_default());
        let parts = self.routing.parts_on(&route, &seg);
        let record =
            MessageRecord::queued(&a.message_id, &client, &a.id, seg.coding, parts, now_ms);
        let event = AccountEvent::new(EventKind::ActivationIssued, &client, now_ms)
            .purpose("activation")
            .phone_masked(a.phone.masked())
            .ip(ip);
        self.stores.activations.issue(&a, &record, &event).await?;
        let job = Job::new(
            a.message_id.clone(),
            a.phone.clone(),
            body,
            a.state.expires_at_ms,
            Priority::Code,
            route,
        );
        if let Err(e) = self.outbox.push(job).await {
            tracing::error!(message_id = %a.message_id, error = %e, "could not queue activation SMS");
            let failed = MessageUpdate {
                status: DeliveryStatus::Failed,
                at_ms: now_ms,
                error: Some(e.to_string()),
            };
            let _ = self.stores.messages.update(&a.message_id, &failed).await;
            return Err(Error::QueueFull);
        }
        count("issued");
        Ok(a)
    }

    /// Redeems: `Ok` with the activation when it was redeemed just now. The same work is done
    /// whether the application number is known or not (one look-up, one match, one decision).
    pub async fn redeem(
        &self,
        client: &str,
        application_number: &str,
        entity_number: Option<&str>,
        code: &str,
        now_ms: i64,
    ) -> Result<Activation, Error> {
        let hashes: Vec<String> = self
            .keys
            .lookup_hashes(application_number)
            .into_iter()
            .map(|h| h.hash)
            .collect();
        let found = self.stores.activations.find(client, &hashes).await?;
        let matched = self.keys.presented_matches(
            found.as_ref().map(|a| StoredSecrets {
                activation_id: &a.id,
                key_id: &a.key_id,
                entity_hash: a.entity_hash.as_deref(),
            }),
            Presented {
                entity_number,
                code,
            },
        );
        let mut event =
            AccountEvent::new(EventKind::ActivationRedeemed, client, now_ms).purpose("activation");
        if let Some(a) = &found {
            event = event.phone_masked(a.phone.masked());
        }
        let outcome = self
            .stores
            .activations
            .redeem(Redeem {
                id: found.as_ref().map(|a| a.id.as_str()),
                account_id: found.as_ref().map_or("", |a| a.account_id.as_str()),
                matched,
                now_ms,
                event: &event,
            })
            .await?;
        match outcome {
            RedeemOutcome::Redeemed => {
                count("redeemed");
                found.ok_or(Error::Incorrect)
            }
            RedeemOutcome::Incorrect { locks: false } => {
                count("code_incorrect");
                Err(Error::Incorrect)
            }
            RedeemOutcome::Incorrect { locks: true } => {
                count("locked");
                Err(Error::Locked)
            }
            RedeemOutcome::Locked => {
                count("locked_retry");
                Err(Error::Locked)
            }
            RedeemOutcome::Expired => {
                count("expired");
                Err(Error::Expired)
            }
            RedeemOutcome::AlreadyUsed => {
                count("already_used");
                Err(Error::AlreadyUsed)
            }
        }
    }

    /// An activation `client` issued, with its SMS record.
    pub async fn get(
        &self,
        client: &str,
        id: &str,
    ) -> Result<(Activation, Option<MessageRecord>), Error> {
        let a = self
            .stores
            .activations
            .get(client, id)
            .await?
            .ok_or(Error::NotFound)?;
        let msg = self.stores.messages.get(&a.message_id).await?;
        Ok((a, msg))
    }
}
