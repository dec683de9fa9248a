//! The purposes a client may be granted and a verification is for (contract §2 `purposes`).

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Registration,
    Login,
    PasswordReset,
    Transaction,
    Activation,
    PhoneChange,
    Totp,
    Notification,
}

impl Purpose {
    pub const ALL: [Purpose; 8] = [
        Purpose::Registration,
        Purpose::Login,
        Purpose::PasswordReset,
        Purpose::Transaction,
        Purpose::Activation,
        Purpose::PhoneChange,
        Purpose::Totp,
        Purpose::Notification,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Registration => "registration",
            Purpose::Login => "login",
            Purpose::PasswordReset => "password_reset",
            Purpose::Transaction => "transaction",
            Purpose::Activation => "activation",
            Purpose::PhoneChange => "phone_change",
            Purpose::Totp => "totp",
            Purpose::Notification => "notification",
        }
    }

    pub fn parse(s: &str) -> Option<Purpose> {
        Purpose::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The purposes of `POST /v1/verifications` (SMS one-time codes, contract §3.1).
    pub fn is_sms_code(self) -> bool {
        matches!(
            self,
            Purpose::Registration | Purpose::Login | Purpose::PasswordReset | Purpose::Transaction
        )
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
