//! `/v1/activations`: activation codes of entity and staff accounts (contract §3.4). Purpose
//! `activation`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::verifications::Context;
use super::{ApiError, AppState, Client, Json};
use crate::activation::issue::{Activation, NewActivation};
use crate::activation::service::Error;
use crate::clock::rfc3339;
use crate::purpose::Purpose;
use crate::sms::Locale;
use crate::store::{DeliveryStatus, MessageRecord};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/activations", post(create))
        .route("/v1/activations/redeem", post(redeem))
        .route("/v1/activations/{id}", get(show))
}

#[derive(OpenApi)]
#[openapi(
    paths(create, redeem, show),
    components(schemas(CreateActivation, RedeemActivation, ActivationView, Redeemed))
)]
pub struct Doc;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateActivation {
    pub account_id: String,
    /// 1 to 64 characters; redeeming needs it (case and surrounding spaces do not matter).
    pub application_number: String,
    /// Optional, printed in the SMS; when given, redeeming needs it.
    pub entity_number: Option<String>,
    /// E.164 or national form (parsed with `phone.default_region`).
    pub phone: String,
    /// `https://…` (or `http://…`), printed in the SMS.
    pub activation_url: String,
    /// `en`, `zh-Hant`, `zh-Hans`, `pt` or `vi`; default `sms.default_locale`.
    pub locale: Option<String>,
    pub context: Option<Context>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemActivation {
    pub application_number: String,
    pub entity_number: Option<String>,
    /// Case-insensitive; spaces and dashes are ignored.
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActivationView {
    pub id: String,
    /// `pending`, `redeemed`, `expired`, `locked` or `canceled`.
    pub status: &'static str,
    pub phone_masked: String,
    pub expires_at: String,
    pub message_id: String,
    /// `GET` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// `GET` only: delivery of the activation SMS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryStatus>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Redeemed {
    pub id: String,
    pub account_id: String,
    /// `redeemed`.
    pub status: &'static str,
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Store(e) => e.into(),
            Error::NotFound => ApiError::NotFound,
            Error::Incorrect => ApiError::CodeIncorrectUncounted,
            Error::Locked => ApiError::TooManyAttempts,
            Error::Expired => ApiError::Expired,
            Error::AlreadyUsed => ApiError::AlreadyUsed,
            Error::Unroutable => ApiError::CountryNotAllowed,
            Error::QueueFull => {
                tracing::error!("SMS queue full; refusing activations");
                ApiError::Unavailable
            }
            Error::RateLimited(r) => ApiError::rate_limited(r),
        }
    }
}

fn view(a: &Activation, msg: Option<&MessageRecord>, now_ms: i64, full: bool) -> ActivationView {
    ActivationView {
        id: a.id.clone(),
        status: a.state.status_at(now_ms).as_str(),
        phone_masked: a.phone.masked(),
        expires_at: rfc3339(a.state.expires_at_ms),
        message_id: a.message_id.clone(),
        account_id: full.then(|| a.account_id.clone()),
        delivery: msg.map(|m| m.status),
    }
}

/// A text field of 1..=`max` characters without control characters.
fn text(field: &str, v: &str, max: usize) -> Result<(), ApiError> {
    let n = v.chars().count();
    if v.trim().is_empty() || n > max || v.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            Some(field),
            &format!("must be 1..={max} characters without control characters"),
        ));
    }
    Ok(())
}

/// Issue an activation code: the activation SMS goes to the phone; the account's pending
/// activation is canceled.
#[utoipa::path(post, path = "/v1/activations", request_body = CreateActivation,
    responses((status = 201, body = ActivationView), (status = 400), (status = 401), (status = 403),
              (status = 422), (status = 503)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    client: Client,
    Json(req): Json<CreateActivation>,
) -> Result<impl IntoResponse, ApiError> {
    client.require(Purpose::Activation)?;
    super::check_account_id(&req.account_id)?;
    text("application_number", &req.application_number, 64)?;
    if let Some(e) = &req.entity_number {
        text("entity_number", e, 64)?;
    }
    let url = req.activation_url.as_str();
    if !(url.starts_with("https://") || url.starts_with("http://"))
        || url.len() > 512
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError::invalid(
            Some("activation_url"),
            "must be an http(s) URL of at most 512 characters without spaces",
        ));
    }
    let locale = match req.locale.as_deref() {
        Some(l) => l
            .parse::<Locale>()
            .map_err(|m| ApiError::invalid(Some("locale"), &m))?,
        None => state.config.sms.default_locale,
    };
    let phone = state.phones.parse(&req.phone)?;
    let now = state.clock.now_ms();
    let ip = req.context.as_ref().and_then(|c| c.ip.clone());
    let a = state
        .activations
        .issue(
            NewActivation {
                client: client.name().to_owned(),
                account_id: req.account_id,
                application_number: req.application_number,
                entity_number: req.entity_number,
                phone,
                activation_url: req.activation_url,
                locale,
            },
            ip.as_deref(),
            now,
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(view(&a, None, now, false))))
}

/// Redeem an activation code, once. Any mismatch answers the same 422 (no
/// `attempts_remaining`), whichever field was wrong.
#[utoipa::path(post, path = "/v1/activations/redeem", request_body = RedeemActivation,
    responses((status = 200, body = Redeemed), (status = 400), (status = 401), (status = 403),
              (status = 409), (status = 410), (status = 422), (status = 423), (status = 503)),
    security(("bearer" = [])))]
pub async fn redeem(
    State(state): State<AppState>,
    client: Client,
    Json(req): Json<RedeemActivation>,
) -> Result<axum::Json<Redeemed>, ApiError> {
    client.require(Purpose::Activation)?;
    text("application_number", &req.application_number, 64)?;
    if let Some(e) = &req.entity_number
        && e.chars().count() > 64
    {
        return Err(ApiError::invalid(
            Some("entity_number"),
            "must be at most 64 characters",
        ));
    }
    if req.code.is_empty() || req.code.chars().count() > 64 {
        return Err(ApiError::invalid(Some("code"), "must be 1..=64 characters"));
    }
    let a = state
        .activations
        .redeem(
            client.name(),
            &req.application_number,
            req.entity_number.as_deref(),
            &req.code,
            state.clock.now_ms(),
        )
        .await?;
    Ok(axum::Json(Redeemed {
        id: a.id,
        account_id: a.account_id,
        status: "redeemed",
    }))
}

/// Read an activation with its current status and the delivery of its SMS.
#[utoipa::path(get, path = "/v1/activations/{id}",
    params(("id" = String, Path)),
    responses((status = 200, body = ActivationView), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    client: Client,
    Path(id): Path<String>,
) -> Result<axum::Json<ActivationView>, ApiError> {
    client.require(Purpose::Activation)?;
    let (a, msg) = state.activations.get(client.name(), &id).await?;
    Ok(axum::Json(view(
        &a,
        msg.as_ref(),
        state.clock.now_ms(),
        true,
    )))
}
