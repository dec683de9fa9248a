//! The outbox job of a code SMS: built here for the first send and for the re-send of an
//! undeliverable one (src/delivery), so both send the same thing.

use crate::outbox::{Body, Job, Priority};
use crate::store::Verification;

/// The job that sends `v`'s code as message `message_id` on `route`.
pub fn code_job(v: &Verification, message_id: &str, route: String) -> Job {
    let ttl_secs = ((v.expires_at_ms - v.created_at_ms) / 1000).max(1) as u64;
    Job::new(
        message_id.to_owned(),
        v.phone.clone(),
        Body::Code {
            verification_id: v.id.clone(),
            digits: v.digits,
            locale: v.locale,
            ttl_secs,
            key_id: v.key_id.clone(),
        },
        v.expires_at_ms,
        Priority::Code,
        route,
    )
}
