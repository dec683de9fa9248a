//! TOTP authenticator codes (contract §3.5, §6): RFC 6238, SHA-1, 6 digits, 30 s steps,
//! with `totp-rs`.
//!
//! - [`secret`]: the shared secret, the enrolment (base32, `otpauth://` URI, QR code as SVG)
//!   and which time steps a typed code matches (the current one ±1).
//! - [`seal`]: the secret encrypted at rest (XChaCha20-Poly1305, key from the server key
//!   with HKDF, key id stored with it for rotation, the account id as associated data).
//! - [`rules`]: the `confirm` / `check` decision on plain data (replay, the lock).
//! - [`record`]: an account's enrolment as stored, and making a new one.
//! - [`service`]: enrol, confirm, check, delete over [`crate::store::TotpStore`].
//!
//! Time is always a parameter; nothing here reads a clock or logs a secret.

pub mod record;
pub mod rules;
pub mod seal;
pub mod secret;
pub mod service;
