//! Storage adapters: one narrow trait per aggregate, each with a memory and a Redis
//! implementation that pass the same tests.
//!
//! - [`VerificationStore`] (verifications, their subject index and first SMS record) and
//!   [`MessageStore`] (SMS records, receipt correlation) are implemented by
//!   [`memory::MemoryStore`] (embedded, one process) and [`redis::RedisStore`] (shared by every
//!   instance).
//! - [`ActivationStore`] ([`activations`]), [`TotpStore`] ([`totp`]), [`PhoneStore`]
//!   ([`phones`]), [`PhoneChangeStore`] ([`phone_changes`]), [`EventStore`] ([`events`]) and
//!   [`limits::LimitStore`]: the other aggregates, memory in `memory/`, Redis in `redis/`.
//!
//! The rules live in the domains ([`crate::otp::challenge`] decides a check and a resend); a
//! store applies them atomically (a Lua script in Redis mirroring them, a locked map entry in
//! memory calling them). The store never sees a code: the caller compares codes and tells the
//! store only for which key and length the one given was right.
//!
//! Dispatch is `dyn` with boxed futures ([`BoxFuture`]): one allocation per call costs nothing
//! next to a Redis round trip, and a new aggregate is one new trait and one new field of
//! [`Stores`] rather than a new arm in every dispatching `match`.

pub mod activations;
pub mod config;
pub mod connect;
pub mod events;
pub mod keys;
pub mod limits;
pub mod memory;
pub mod messages;
pub mod phone_changes;
pub mod phones;
pub mod redis;
pub mod totp;
pub mod verifications;

use std::sync::Arc;

pub use crate::otp::challenge::CheckOutcome;
pub use activations::ActivationStore;
pub use events::{AccountEvent, EventKind, EventStore};
pub use limits::LimitStore;
pub use messages::{
    CORRELATION_TTL_MS, Correlated, DeliveryStatus, LEARN_VOTES, Learned, MessageRecord,
    MessageStore, MessageUpdate, ORPHAN_RECEIPT_TTL_MS, PartOutcome, PartReceipt, ReceiptIds,
    ReceiptMatch, ReceiptOf, ReceiptPart, ReceiptRecorded, normalize_id, receipt_candidates,
    receipt_forms,
};
pub use phone_changes::{PhoneChange, PhoneChangeStore};
pub use phones::{AccountPhone, PhoneStore};
pub use totp::TotpStore;
pub use verifications::{
    CheckGuards, CheckRequest, Checked, CodeProof, ResendOutcome, SendGuards, Status, Verification,
    VerificationGuard, VerificationStore,
};

/// The future every store method returns.
pub type BoxFuture<'a, T> = futures::future::BoxFuture<'a, T>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend did not answer or refused the command (Redis down, timeout).
    #[error("store unavailable: {0}")]
    Unavailable(#[source] ::redis::RedisError),
    /// The backend answered something no version of this daemon writes.
    #[error("unexpected reply to {command}: {reply}")]
    UnexpectedReply {
        command: &'static str,
        reply: String,
    },
    /// The stored data could not be read back (a bug or a foreign writer).
    #[error("corrupt record {key}: {reason}")]
    Corrupt { key: String, reason: &'static str },
    /// A stored hash could not be decoded.
    #[error("corrupt record {key}: {source}")]
    Decode {
        key: String,
        #[source]
        source: ::redis::ParsingError,
    },
}

impl From<::redis::RedisError> for Error {
    fn from(e: ::redis::RedisError) -> Self {
        Error::Unavailable(e)
    }
}

/// How long objects are kept after they expire, so that late calls get 410, not 404.
pub const RETENTION_AFTER_EXPIRY_MS: i64 = 24 * 3600 * 1000;

/// Whether a backend answers.
pub trait Health: Send + Sync {
    fn ping(&self) -> BoxFuture<'_, Result<(), Error>>;
}

/// The configured stores: one cheap handle per aggregate (all backed by one backend).
#[derive(Clone)]
pub struct Stores {
    pub verifications: Arc<dyn VerificationStore>,
    pub messages: Arc<dyn MessageStore>,
    pub events: Arc<dyn EventStore>,
    pub activations: Arc<dyn ActivationStore>,
    pub totp: Arc<dyn TotpStore>,
    pub limits: Arc<dyn LimitStore>,
    pub phones: Arc<dyn PhoneStore>,
    pub phone_changes: Arc<dyn PhoneChangeStore>,
    health: Arc<dyn Health>,
}

impl Stores {
    /// The embedded store for every aggregate.
    pub fn memory(m: Arc<memory::MemoryStore>) -> Stores {
        let phones = Arc::new(memory::phones::MemoryPhones::new(m.clone()));
        Stores {
            verifications: m.clone(),
            messages: m.clone(),
            events: m.clone(),
            activations: m.clone(),
            totp: m.clone(),
            limits: m.clone(),
            phones: phones.clone(),
            phone_changes: Arc::new(memory::phone_changes::MemoryPhoneChanges::new(phones)),
            health: m,
        }
    }

    /// The Redis store for every aggregate.
    pub fn redis(r: redis::RedisStore) -> Stores {
        let phones = Arc::new(redis::phones::RedisPhones::new(r.clone()));
        let phone_changes = Arc::new(redis::phone_changes::RedisPhoneChanges::new(r.clone()));
        let r = Arc::new(r);
        Stores {
            verifications: r.clone(),
            messages: r.clone(),
            events: r.clone(),
            activations: r.clone(),
            totp: r.clone(),
            limits: r.clone(),
            phones,
            phone_changes,
            health: r,
        }
    }

    /// Whether the backend answers.
    pub async fn ping(&self) -> Result<(), Error> {
        self.health.ping().await
    }
}
