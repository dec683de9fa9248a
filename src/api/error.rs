//! The one error type of the API: the contract's `{"error": {"code", "message", …}}` shape.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::{otp, phone, store};

#[derive(Debug)]
pub enum ApiError {
    InvalidRequest {
        field: Option<String>,
        message: String,
    },
    InvalidPhone,
    Unauthorized,
    Forbidden,
    NotFound,
    AlreadyUsed,
    Expired,
    PayloadTooLarge,
    CodeIncorrect {
        attempts_remaining: u32,
    },
    /// 422 `code_incorrect` without `attempts_remaining` (activation redeem: no oracle).
    CodeIncorrectUncounted,
    PhoneNotRegistered,
    CountryNotAllowed,
    TooManyAttempts,
    RateLimited {
        limit: &'static str,
        retry_after_s: u64,
    },
    Unavailable,
    /// 422 `invalid_request` with `field`: a well-formed reference to something unusable
    /// (contract §6: binding from anything but an approved registration verification).
    Unusable {
        field: &'static str,
        message: &'static str,
    },
    /// 409 with `fields` (contract §3.3).
    SubscriberMismatch {
        fields: Vec<(&'static str, &'static str)>,
    },
    SimSwapDetected,
    SubscriberCheckUnavailable {
        message: &'static str,
    },
}

impl ApiError {
    pub fn invalid(field: Option<&str>, message: &str) -> ApiError {
        ApiError::InvalidRequest {
            field: field.map(str::to_owned),
            message: message.to_owned(),
        }
    }
}

impl ApiError {
    /// 429 for a `[limits]` refusal: `retry_after_s` (and `Retry-After`) rounded up, so a retry
    /// after that many seconds passes.
    pub fn rate_limited(r: crate::limits::Refused) -> ApiError {
        ApiError::RateLimited {
            limit: r.limit.as_str(),
            retry_after_s: r.retry_after_s(),
        }
    }
}

impl From<phone::PhoneError> for ApiError {
    fn from(e: phone::PhoneError) -> Self {
        match e {
            phone::PhoneError::Invalid => ApiError::InvalidPhone,
            phone::PhoneError::CountryNotAllowed => ApiError::CountryNotAllowed,
        }
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        tracing::error!(error = %e, "store error");
        ApiError::Unavailable
    }
}

impl From<otp::Error> for ApiError {
    fn from(e: otp::Error) -> Self {
        match e {
            otp::Error::Store(e) => e.into(),
            otp::Error::NotFound => ApiError::NotFound,
            otp::Error::Expired => ApiError::Expired,
            otp::Error::AlreadyUsed => ApiError::AlreadyUsed,
            otp::Error::Locked => ApiError::TooManyAttempts,
            otp::Error::CodeIncorrect { attempts_remaining } => {
                ApiError::CodeIncorrect { attempts_remaining }
            }
            otp::Error::ResendCooldown { retry_after_s } => ApiError::RateLimited {
                limit: "resend_cooldown",
                retry_after_s,
            },
            otp::Error::MaxSends { retry_after_s } => ApiError::RateLimited {
                limit: "max_sends",
                retry_after_s,
            },
            otp::Error::PhoneNotRegistered => ApiError::PhoneNotRegistered,
            otp::Error::Forbidden => ApiError::Forbidden,
            otp::Error::Unroutable => ApiError::CountryNotAllowed,
            otp::Error::QueueFull => {
                tracing::error!("SMS queue full; refusing new codes");
                ApiError::Unavailable
            }
            otp::Error::RateLimited(r) => ApiError::rate_limited(r),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            ApiError::InvalidRequest { message, .. } => {
                (StatusCode::BAD_REQUEST, "invalid_request", message.clone())
            }
            ApiError::InvalidPhone => (
                StatusCode::BAD_REQUEST,
                "invalid_phone",
                "not a valid phone number".into(),
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required".into(),
            ),
            ApiError::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "this client may not use this purpose".into(),
            ),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found", "not found".into()),
            ApiError::AlreadyUsed => (StatusCode::CONFLICT, "already_used", "already used".into()),
            ApiError::Expired => (StatusCode::GONE, "expired", "expired".into()),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is too large".into(),
            ),
            ApiError::CodeIncorrect { .. } | ApiError::CodeIncorrectUncounted => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "code_incorrect",
                "the code is not correct".into(),
            ),
            ApiError::PhoneNotRegistered => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "phone_not_registered",
                "the phone is not registered for this account".into(),
            ),
            ApiError::CountryNotAllowed => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "country_not_allowed",
                "numbers of this country are not allowed".into(),
            ),
            ApiError::TooManyAttempts => (
                StatusCode::LOCKED,
                "too_many_attempts",
                "too many wrong codes".into(),
            ),
            ApiError::RateLimited { limit, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("rate limited ({limit})"),
            ),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "temporarily unavailable; try again".into(),
            ),
            ApiError::Unusable { message, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                (*message).into(),
            ),
            ApiError::SubscriberMismatch { .. } => (
                StatusCode::CONFLICT,
                "subscriber_mismatch",
                "the carrier's subscriber record does not match the identity".into(),
            ),
            ApiError::SimSwapDetected => (
                StatusCode::CONFLICT,
                "sim_swap_detected",
                "the SIM of this number was changed recently".into(),
            ),
            ApiError::SubscriberCheckUnavailable { message } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "subscriber_check_unavailable",
                (*message).into(),
            ),
        };
        let mut body = json!({"code": code, "message": message});
        match &self {
            ApiError::InvalidRequest { field: Some(f), .. } => body["field"] = json!(f),
            ApiError::Unusable { field, .. } => body["field"] = json!(field),
            ApiError::CodeIncorrect { attempts_remaining } => {
                body["attempts_remaining"] = json!(attempts_remaining)
            }
            ApiError::RateLimited {
                limit,
                retry_after_s,
            } => {
                body["limit"] = json!(limit);
                body["retry_after_s"] = json!(retry_after_s);
            }
            ApiError::SubscriberMismatch { fields } => {
                body["fields"] = fields
                    .iter()
                    .map(|(f, r)| (f.to_string(), json!(r)))
                    .collect();
            }
            _ => {}
        }
        let mut resp = (status, axum::Json(json!({ "error": body }))).into_response();
        if let ApiError::RateLimited { retry_after_s, .. } = &self
            && let Ok(v) = HeaderValue::from_str(&retry_after_s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
