//! Activation codes for entity and staff accounts (contract §3.4, seed 000).
//!
//! - [`codes`]: the code derived from the server key and the activation id (never stored),
//!   the keyed hashes of the application and entity numbers, input normalisation, and the
//!   constant-time match of what the holder typed.
//! - [`rules`]: the redeem decision on plain data (redeemed, 422, the lock, 409, 410).
//! - [`issue`]: the stored record and the outbox job of a new activation (no code in
//!   either), and the SMS rendered from the job at send time.
//!
//! - [`service`]: issue, redeem and read, over the store ([`crate::store::ActivationStore`])
//!   and the outbox.
//!
//! The activation SMS texts themselves are [`crate::sms::Templates::activation_sms`].

pub mod codes;
pub mod config;
pub mod issue;
pub mod rules;
pub mod service;

pub use config::ActivationConfig;
