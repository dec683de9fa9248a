#![allow(clippy::unwrap_used)]
//! Integration tests: one test binary, shared helpers in `util`. Everything talks to real
//! parts: the daemon over HTTP, the SMSC simulator over SMPP/TCP, Redis over its protocol.

mod util;

mod activation;
mod carrier;
mod challenge;
mod daemon;
mod durability;
mod edges;
mod events;
mod expiry;
mod limits;
mod messages;
mod ops;
mod outbox_load;
mod receipts;
mod resilience;
mod rotation;
mod smpp;
mod stale;
mod subscriber;
mod totp;
mod verifications;
