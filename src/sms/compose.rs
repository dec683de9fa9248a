//! Composition of an outbox job's text: a code SMS is rendered from its verification's id with
//! the server key it was made under (so no code is ever queued or stored), a text as given.

use crate::otp::codes::CodeDeriver;
use crate::outbox::Body;
use crate::sms::Templates;

/// Why a job's text cannot be rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The code was made under a server key that is no longer configured: any code computed
    /// now would be wrong, so nothing is sent (the message fails with this error).
    #[error("key_unavailable")]
    KeyUnavailable,
}

/// Renders a job's text.
pub struct Composer {
    pub codes: CodeDeriver,
    pub templates: Templates,
}

impl Composer {
    pub fn render(&self, body: &Body) -> Result<String, RenderError> {
        match body {
            Body::Code {
                verification_id,
                digits,
                locale,
                ttl_secs,
                key_id,
            } => {
                let Some(codes) = self.codes.for_key(key_id) else {
                    // Only when a retired key was removed while its codes were pending.
                    tracing::error!(key_id = %key_id, "code SMS made under a key no longer configured: not sent");
                    return Err(RenderError::KeyUnavailable);
                };
                let code = codes.numeric("otp", verification_id, *digits);
                Ok(self.templates.code_sms(*locale, &code, *ttl_secs))
            }
            Body::Text { text } => Ok(text.clone()),
        }
    }
}
