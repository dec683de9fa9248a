//! The activation aggregate (contract §3.4): activation records, found by id or by the keyed
//! hash of their application number, behind [`ActivationStore`].
//!
//! The store never sees a code, an application number or an entity number: only keyed hashes
//! ([`crate::activation::codes`]) and, at redeem, whether what was presented matched
//! (computed off the store). The redeem rules are [`crate::activation::rules::decide`]; the
//! memory store calls it under its lock, `lua/act_redeem.lua` mirrors it.

pub use crate::activation::issue::Activation;
pub use crate::activation::rules::{ActivationState, ActivationStatus, RedeemOutcome};

use super::{AccountEvent, BoxFuture, Error, MessageRecord};

/// One redeem, decided atomically by the store.
#[derive(Debug, Clone, Copy)]
pub struct Redeem<'a> {
    /// The activation found for the presented application number (`None`: none; the store
    /// does the same round trip and answers 422 without locking anything).
    pub id: Option<&'a str>,
    /// Its account (for the event; `""` when none was found).
    pub account_id: &'a str,
    /// Whether the presented code and entity number matched that activation.
    pub matched: bool,
    pub now_ms: i64,
    /// `activation_redeemed`, recorded in the same operation when it redeems.
    pub event: &'a AccountEvent,
}

/// Activations.
pub trait ActivationStore: Send + Sync {
    /// Stores `a` with its SMS record, indexes it by (client, lookup hash) and by
    /// (client, account), cancels the account's pending one and records `event`
    /// (`activation_issued`), all in one operation.
    fn issue<'a>(
        &'a self,
        a: &'a Activation,
        msg: &'a MessageRecord,
        event: &'a AccountEvent,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// The activation `client` issued most recently under one of `lookup_hashes` (the
    /// application number's hash under each configured key, current first): the first found.
    fn find<'a>(
        &'a self,
        client: &'a str,
        lookup_hashes: &'a [String],
    ) -> BoxFuture<'a, Result<Option<Activation>, Error>>;

    /// Applies one redeem ([`crate::activation::rules::decide`]) atomically.
    fn redeem<'a>(&'a self, r: Redeem<'a>) -> BoxFuture<'a, Result<RedeemOutcome, Error>>;

    /// An activation by id, when `client` issued it.
    fn get<'a>(
        &'a self,
        client: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Activation>, Error>>;
}
