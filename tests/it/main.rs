#![allow(clippy::unwrap_used)]
//! Integration tests: one test binary, shared helpers in `util`. Everything talks to real
//! parts: the daemon over HTTP, the SMSC simulator over SMPP/TCP, Redis over its protocol.

mod util;

mod activation;
mod activation_http;
mod activation_rotation;
mod carrier;
mod challenge;
mod daemon;
mod durability;
mod edges;
mod events;
mod expiry;
mod limits;
mod limits_api;
mod messages;
mod ops;
mod outbox_fence;
mod outbox_load;
mod outbox_tasks;
mod outbox_tx;
mod phone_changes;
mod phones;
mod receipts;
mod resend;
mod resilience;
mod rotation;
mod shutdown;
mod smpp;
mod stale;
mod subscriber;
mod totp;
mod totp_http;
mod verifications;
