//! `/v1/verifications`: SMS one-time codes (contract §3.1).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Router, response::IntoResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, AppState, Client, Json};
use crate::clock::{rfc3339, rfc3339_ceil};
use crate::otp::NewVerification;
use crate::purpose::Purpose;
use crate::sms::Locale;
use crate::store::{DeliveryStatus, MessageRecord, Status, Verification};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/verifications", post(create))
        .route("/v1/verifications/{id}", get(show))
        .route("/v1/verifications/{id}/resend", post(resend))
        .route("/v1/verifications/{id}/check", post(check))
}

/// The end user's context, for limits and the account history.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Context {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVerification {
    /// `registration`, `login`, `password_reset` or `transaction`.
    pub purpose: String,
    pub account_id: Option<String>,
    /// E.164 or national form (parsed with `phone.default_region`).
    pub phone: Option<String>,
    /// `en`, `zh-Hant`, `zh-Hans`, `pt` or `vi`; default `sms.default_locale`.
    pub locale: Option<String>,
    pub context: Option<Context>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckCode {
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerificationView {
    pub id: String,
    pub purpose: Purpose,
    pub status: Status,
    pub phone_masked: String,
    pub expires_at: String,
    pub resend_available_at: String,
    pub attempts_remaining: u32,
    pub sends_remaining: u32,
    pub message_id: String,
    /// Delivery of the latest SMS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryStatus>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResult {
    pub id: String,
    pub status: Status,
}

fn view(v: &Verification, msg: Option<&MessageRecord>, now_ms: i64) -> VerificationView {
    VerificationView {
        id: v.id.clone(),
        purpose: v.purpose,
        status: v.status_at(now_ms),
        phone_masked: v.phone.masked(),
        expires_at: rfc3339(v.expires_at_ms),
        resend_available_at: rfc3339_ceil(v.last_sent_ms + v.cooldown_ms),
        attempts_remaining: v.max_attempts.saturating_sub(v.attempts_used),
        sends_remaining: v.max_sends.saturating_sub(v.sends),
        message_id: v.message_id.clone(),
        delivery: msg.map(|m| m.status),
    }
}

fn check_account_id(a: &Option<String>) -> Result<(), ApiError> {
    match a {
        Some(a) => super::check_account_id(a),
        None => Ok(()),
    }
}

/// Start a verification: a code SMS goes to the phone.
#[utoipa::path(post, path = "/v1/verifications", request_body = CreateVerification,
    responses((status = 201, body = VerificationView), (status = 400), (status = 401), (status = 403),
              (status = 422), (status = 429), (status = 503)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    client: Client,
    Json(req): Json<CreateVerification>,
) -> Result<impl IntoResponse, ApiError> {
    let purpose = Purpose::parse(&req.purpose)
        .filter(|p| p.is_sms_code())
        .ok_or_else(|| {
            ApiError::invalid(
                Some("purpose"),
                "must be registration, login, password_reset or transaction",
            )
        })?;
    client.require(purpose)?;
    check_account_id(&req.account_id)?;
    let locale = req
        .locale
        .as_deref()
        .map(|l| l.parse::<Locale>())
        .transpose()
        .map_err(|m| ApiError::invalid(Some("locale"), &m))?;
    let phone = req
        .phone
        .as_deref()
        .map(|p| state.phones.parse(p))
        .transpose()?;
    match purpose {
        Purpose::Login if req.account_id.is_none() => {
            return Err(ApiError::invalid(Some("account_id"), "required for login"));
        }
        Purpose::Registration | Purpose::PasswordReset | Purpose::Transaction
            if phone.is_none() =>
        {
            return Err(ApiError::invalid(
                Some("phone"),
                "required for this purpose",
            ));
        }
        _ => {}
    }
    let now = state.clock.now_ms();
    let v = state
        .verifications
        .create(
            client.name(),
            NewVerification {
                purpose,
                account_id: req.account_id,
                phone,
                locale,
                ip: req.context.and_then(|c| c.ip),
            },
            now,
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(view(&v, None, now))))
}

/// Read a verification with its current status and SMS delivery.
#[utoipa::path(get, path = "/v1/verifications/{id}",
    responses((status = 200, body = VerificationView), (status = 401), (status = 404)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    client: Client,
    Path(id): Path<String>,
) -> Result<axum::Json<VerificationView>, ApiError> {
    let (v, msg) = state.verifications.get(client.name(), &id).await?;
    client.require(v.purpose)?;
    Ok(axum::Json(view(&v, msg.as_ref(), state.clock.now_ms())))
}

/// Send the same code again (the expiry does not move).
#[utoipa::path(post, path = "/v1/verifications/{id}/resend",
    responses((status = 200, body = VerificationView), (status = 401), (status = 404), (status = 409),
              (status = 410), (status = 423), (status = 429)),
    security(("bearer" = [])))]
pub async fn resend(
    State(state): State<AppState>,
    client: Client,
    Path(id): Path<String>,
) -> Result<axum::Json<VerificationView>, ApiError> {
    let now = state.clock.now_ms();
    let v = state
        .verifications
        .resend(client.name(), &client.0.purposes, &id, now)
        .await?;
    Ok(axum::Json(view(&v, None, now)))
}

/// Check a code.
#[utoipa::path(post, path = "/v1/verifications/{id}/check", request_body = CheckCode,
    responses((status = 200, body = CheckResult), (status = 401), (status = 403), (status = 404), (status = 409),
              (status = 410), (status = 422), (status = 423)),
    security(("bearer" = [])))]
pub async fn check(
    State(state): State<AppState>,
    client: Client,
    Path(id): Path<String>,
    Json(req): Json<CheckCode>,
) -> Result<axum::Json<CheckResult>, ApiError> {
    if req.code.is_empty() || req.code.len() > 32 {
        return Err(ApiError::invalid(Some("code"), "must be 1..=32 characters"));
    }
    state
        .verifications
        .check(
            client.name(),
            &client.0.purposes,
            &id,
            &req.code,
            state.clock.now_ms(),
        )
        .await?;
    Ok(axum::Json(CheckResult {
        id,
        status: Status::Approved,
    }))
}
