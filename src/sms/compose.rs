//! Composition of an outbox job's text: a code SMS is rendered from its verification's id with
//! the server key it was made under (so no code is ever queued or stored), an activation SMS
//! from its activation id likewise, a text as given.

use crate::activation::codes::ActivationKeys;
use crate::activation::issue::render as render_activation;
use crate::otp::codes::CodeDeriver;
use crate::outbox::Body;
use crate::sms::Templates;

/// Renders a job's text.
pub struct Composer {
    pub codes: CodeDeriver,
    pub templates: Templates,
    /// The activation keys (`None` where no activation SMS is ever sent, e.g. a bare bind in
    /// tests): an activation job then cannot be rendered.
    pub activation: Option<ActivationKeys>,
}

/// Why a job's text cannot be rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The key its code was made under is no longer configured: sending would send a wrong
    /// code, so the message must fail (error `key_unavailable`).
    #[error("key_unavailable")]
    KeyUnavailable,
}

impl RenderError {
    /// The message record's `error`.
    pub fn code(self) -> &'static str {
        match self {
            RenderError::KeyUnavailable => "key_unavailable",
        }
    }
}

impl Composer {
    /// The text of `body`, or why it cannot be sent (never a wrong code).
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
            Body::Activation(sms) => self
                .activation
                .as_ref()
                .and_then(|keys| render_activation(keys, &self.templates, sms))
                .ok_or(RenderError::KeyUnavailable),
            Body::PhoneChanged {
                locale,
                new_phone_masked,
            } => Ok(self.templates.phone_changed_sms(*locale, new_phone_masked)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::issue::ActivationSms;
    use crate::sms::Locale;

    fn composer(activation: Option<ActivationKeys>) -> Composer {
        Composer {
            codes: CodeDeriver::new([1; 32]),
            templates: Templates::load("One Account", "", None).unwrap(),
            activation,
        }
    }

    #[test]
    fn an_activation_sms_renders_only_under_a_configured_key() {
        let keys = ActivationKeys::new(
            ("k1", &[5; 32]),
            &[],
            "23456789ABCDEFGHJKLMNPQRSTUVWXYZ",
            10,
        )
        .unwrap();
        let body = |key_id: &str| {
            Body::Activation(ActivationSms {
                activation_id: "act_x".into(),
                key_id: key_id.into(),
                locale: Locale::En,
                entity_number: None,
                activation_url: "https://e.example/a".into(),
            })
        };
        let c = composer(Some(keys.clone()));
        let code = keys.code("k1", "act_x").unwrap();
        assert_eq!(
            c.render(&body("k1")).unwrap(),
            format!(
                "One Account account activation\nActivation code: {code}\nActivate at: https://e.example/a"
            )
        );
        assert_eq!(c.render(&body("gone")), Err(RenderError::KeyUnavailable));
        assert_eq!(RenderError::KeyUnavailable.code(), "key_unavailable");
        assert_eq!(
            composer(None).render(&body("k1")),
            Err(RenderError::KeyUnavailable)
        );
    }
}
