//! Composition of an outbox job's text: a code SMS is rendered from its verification's id with
//! the server key it was made under (so no code is ever queued or stored), a text as given.

use crate::otp::codes::CodeDeriver;
use crate::outbox::Body;
use crate::sms::Templates;

/// Renders a job's text.
pub struct Composer {
    pub codes: CodeDeriver,
    pub templates: Templates,
}

impl Composer {
    pub fn render(&self, body: &Body) -> String {
        match body {
            Body::Code {
                verification_id,
                digits,
                locale,
                ttl_secs,
                key_id,
            } => {
                let codes = self.codes.for_key(key_id).unwrap_or_else(|| {
                    // Only when a retired key was removed while its codes were pending: the
                    // code sent cannot be right, and the check will say so.
                    tracing::error!(key_id = %key_id, "code SMS made under a key no longer configured");
                    &self.codes
                });
                let code = codes.numeric("otp", verification_id, *digits);
                self.templates.code_sms(*locale, &code, *ttl_secs)
            }
            Body::Text { text } => text.clone(),
            Body::PhoneChanged {
                locale,
                new_phone_masked,
            } => self.templates.phone_changed_sms(*locale, new_phone_masked),
        }
    }
}
