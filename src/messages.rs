//! Notification SMS (contract §3.6): a text to a number, queued behind code SMS.

use std::sync::Arc;

use crate::ids;
use crate::limits::{Limiter, Refused};
use crate::outbox::{Body, Composer, Job, Outbox, Priority, Routing};
use crate::phone::Phone;
use crate::sms;
use crate::store::{self, MessageRecord, RETENTION_AFTER_EXPIRY_MS, Stores};

/// How long a notification may wait for an SMSC before it is `expired` instead of sent.
pub const NOTIFICATION_VALIDITY_MS: i64 = 24 * 3600 * 1000;

/// The longest notification text accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Unknown, or not visible to this client.
    #[error("message not found")]
    NotFound,
    /// The outbox refused it (full or unavailable).
    #[error("outbox: {0}")]
    Outbox(#[from] crate::outbox::Error),
    /// No SMSC takes the number (no route prefix matches and no SMSC without routes).
    #[error("no SMSC takes this number")]
    Unroutable,
    /// Refused by `per_country`; nothing was queued or counted.
    #[error("rate limited ({})", .0.limit.as_str())]
    RateLimited(Refused),
}

pub struct Messages {
    pub stores: Stores,
    pub outbox: Outbox,
    pub routing: Arc<Routing>,
    pub limits: Arc<Limiter>,
    /// For the keyed hashes of limit counters.
    pub composer: Arc<Composer>,
}

impl Messages {
    /// Queues a notification; the record says how it will be encoded and in how many parts.
    pub async fn send(
        &self,
        client: &str,
        to: Phone,
        text: String,
        now_ms: i64,
    ) -> Result<MessageRecord, Error> {
        let route = self.routing.route(&to).ok_or(Error::Unroutable)?;
        if self.outbox.is_full() {
            return Err(Error::Outbox(crate::outbox::Error::Full));
        }
        // `per_country` counts every SMS, notifications included (contract §6). Counted when
        // let through, before the record and the queueing: a queueing that fails after it
        // (queue full, store down between the two) costs one count.
        let plan = self.limits.for_notification(&self.composer.codes, &to);
        if let Err(r) = self.stores.limits.apply(&plan, now_ms).await? {
            crate::limits::refused(r.limit);
            return Err(Error::RateLimited(r));
        }
        let seg = sms::split(&text);
        let parts = self.routing.parts_on(&route, &seg);
        let id = ids::new_id("msg", &ids::random_tag());
        let expires_at_ms = now_ms + NOTIFICATION_VALIDITY_MS;
        let record = MessageRecord::queued(&id, client, "", seg.coding, parts, now_ms);
        self.stores
            .messages
            .create(&record, expires_at_ms + RETENTION_AFTER_EXPIRY_MS)
            .await?;
        let job = Job::new(
            id,
            to,
            Body::Text { text },
            expires_at_ms,
            Priority::Notification,
            route,
        );
        self.outbox.push(job).await?;
        metrics::counter!("otpgate_messages_total", "outcome" => "queued").increment(1);
        Ok(record)
    }

    /// The message, when `client` created it or the object that sent it.
    pub async fn get(&self, client: &str, id: &str) -> Result<MessageRecord, Error> {
        match self.stores.messages.get(id).await? {
            Some(m) if m.client == client => Ok(m),
            _ => Err(Error::NotFound),
        }
    }
}
