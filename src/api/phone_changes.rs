//! `/v1/phone-changes`: lost-phone number changes with the carrier check (contract §3.3).
//! The client needs the `phone_change` purpose.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::verifications::{CheckCode, Context};
use super::{ApiError, AppState, Client, Json};
use crate::clock::{rfc3339, rfc3339_ceil};
use crate::phones::change::NewChange;
use crate::purpose::Purpose;
use crate::sms::Locale;
use crate::store::phone_changes::{ChangeState, PhoneChange};
use crate::subscriber::Identity;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/phone-changes", post(create))
        .route("/v1/phone-changes/{id}", get(show))
        .route("/v1/phone-changes/{id}/resend", post(resend))
        .route("/v1/phone-changes/{id}/check", post(check))
        .route("/v1/phone-changes/{id}/retry", post(retry))
}

#[derive(OpenApi)]
#[openapi(
    paths(create, show, resend, check, retry),
    components(schemas(CreatePhoneChange, PhoneChangeView, PhoneChangeResult, ChangeState))
)]
pub struct Doc;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePhoneChange {
    pub account_id: String,
    /// E.164 or national form: the code goes here.
    pub new_phone: String,
    /// The code SMS and the notice to the old number; default `sms.default_locale`.
    pub locale: Option<String>,
    /// Checked against the carrier's subscriber record of the new number; every field of
    /// `subscriber.require` must be given.
    pub identity: Identity,
    pub context: Option<Context>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PhoneChangeView {
    pub id: String,
    pub status: ChangeState,
    /// The new number, masked.
    pub phone_masked: String,
    pub expires_at: String,
    pub attempts_remaining: u32,
    pub resend_available_at: String,
    pub sends_remaining: u32,
    /// The latest code SMS.
    pub message_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PhoneChangeResult {
    pub id: String,
    pub status: ChangeState,
    pub phone_masked: String,
}

fn view(pc: &PhoneChange, now_ms: i64) -> PhoneChangeView {
    let c = &pc.challenge;
    PhoneChangeView {
        id: pc.id.clone(),
        status: pc.state_at(now_ms),
        phone_masked: pc.new_phone.masked(),
        expires_at: rfc3339(c.expires_at_ms),
        attempts_remaining: c.max_attempts.saturating_sub(c.attempts_used),
        resend_available_at: rfc3339_ceil(c.last_sent_ms + c.cooldown_ms),
        sends_remaining: c.max_sends.saturating_sub(c.sends),
        message_id: pc.message_id.clone(),
    }
}

fn result(pc: &PhoneChange, now_ms: i64) -> PhoneChangeResult {
    PhoneChangeResult {
        id: pc.id.clone(),
        status: pc.state_at(now_ms),
        phone_masked: pc.new_phone.masked(),
    }
}

/// Start a number change: a code goes to the new number. 503 `subscriber_check_unavailable`
/// when `subscriber.provider` is `"none"` (changes cannot be checked, so none starts).
#[utoipa::path(post, path = "/v1/phone-changes", request_body = CreatePhoneChange,
    responses((status = 201, body = PhoneChangeView), (status = 400), (status = 401), (status = 403),
              (status = 422), (status = 503)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    client: Client,
    Json(req): Json<CreatePhoneChange>,
) -> Result<impl IntoResponse, ApiError> {
    client.require(Purpose::PhoneChange)?;
    super::check_account_id(&req.account_id)?;
    let locale = req
        .locale
        .as_deref()
        .map(|l| l.parse::<Locale>())
        .transpose()
        .map_err(|m| ApiError::invalid(Some("locale"), &m))?;
    let new_phone = state.phones.parse(&req.new_phone).map_err(ApiError::from)?;
    let now = state.clock.now_ms();
    let pc = state
        .account_phones
        .create_change(
            client.name(),
            NewChange {
                account_id: req.account_id,
                new_phone,
                locale,
                identity: req.identity,
                ip: req.context.and_then(|c| c.ip),
            },
            now,
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(view(&pc, now))))
}

/// Read a change with its current status.
#[utoipa::path(get, path = "/v1/phone-changes/{id}",
    responses((status = 200, body = PhoneChangeView), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    client: Client,
    Path(id): Path<String>,
) -> Result<axum::Json<PhoneChangeView>, ApiError> {
    client.require(Purpose::PhoneChange)?;
    let pc = state.account_phones.get_change(client.name(), &id).await?;
    Ok(axum::Json(view(&pc, state.clock.now_ms())))
}

/// Send the same code again (the expiry does not move).
#[utoipa::path(post, path = "/v1/phone-changes/{id}/resend",
    responses((status = 200, body = PhoneChangeView), (status = 401), (status = 403), (status = 404),
              (status = 409), (status = 410), (status = 423), (status = 429)),
    security(("bearer" = [])))]
pub async fn resend(
    State(state): State<AppState>,
    client: Client,
    Path(id): Path<String>,
) -> Result<axum::Json<PhoneChangeView>, ApiError> {
    client.require(Purpose::PhoneChange)?;
    let now = state.clock.now_ms();
    let pc = state
        .account_phones
        .resend_change(client.name(), &id, now)
        .await?;
    Ok(axum::Json(view(&pc, now)))
}

/// Check the code; a right one runs the carrier check and completes or refuses the change.
#[utoipa::path(post, path = "/v1/phone-changes/{id}/check", request_body = CheckCode,
    responses((status = 200, body = PhoneChangeResult), (status = 401), (status = 403), (status = 404),
              (status = 409), (status = 410), (status = 422), (status = 423), (status = 503)),
    security(("bearer" = [])))]
pub async fn check(
    State(state): State<AppState>,
    client: Client,
    Path(id): Path<String>,
    Json(req): Json<CheckCode>,
) -> Result<axum::Json<PhoneChangeResult>, ApiError> {
    client.require(Purpose::PhoneChange)?;
    if req.code.is_empty() || req.code.len() > 32 {
        return Err(ApiError::invalid(Some("code"), "must be 1..=32 characters"));
    }
    let now = state.clock.now_ms();
    let pc = state
        .account_phones
        .check_change(client.name(), &id, &req.code, now)
        .await?;
    Ok(axum::Json(result(&pc, now)))
}

/// Run the carrier check again for a change left `code_verified` by an unavailable carrier.
#[utoipa::path(post, path = "/v1/phone-changes/{id}/retry",
    responses((status = 200, body = PhoneChangeResult), (status = 401), (status = 403), (status = 404),
              (status = 409), (status = 410), (status = 422), (status = 423), (status = 503)),
    security(("bearer" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    client: Client,
    Path(id): Path<String>,
) -> Result<axum::Json<PhoneChangeResult>, ApiError> {
    client.require(Purpose::PhoneChange)?;
    let now = state.clock.now_ms();
    let pc = state
        .account_phones
        .retry_change(client.name(), &id, now)
        .await?;
    Ok(axum::Json(result(&pc, now)))
}
