//! TOTP authenticator codes (contract §3.5, §6): RFC 6238, SHA-1, 6 digits, 30 s steps.
