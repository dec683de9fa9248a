//! `/v1/accounts/{account_id}/totp`: authenticator-app codes (contract §3.5, §6). Purpose
//! `totp`; an enrolment belongs to the account (one per account).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::{ApiError, AppState, Client, Json};
use crate::purpose::Purpose;
use crate::totp::rules::TotpOp;
use crate::totp::secret::EnrolError;
use crate::totp::service::Error;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/accounts/{account_id}/totp", post(enrol).delete(remove))
        .route("/v1/accounts/{account_id}/totp/confirm", post(confirm))
        .route("/v1/accounts/{account_id}/totp/check", post(check))
}

#[derive(OpenApi)]
#[openapi(
    paths(enrol, confirm, check, remove),
    components(schemas(TotpEnrolmentView, TotpCode, TotpStatusView))
)]
pub struct Doc;

#[derive(Debug, Serialize, ToSchema)]
pub struct TotpEnrolmentView {
    /// RFC 4648 base32, no padding.
    pub secret: String,
    /// `otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=…` (SHA-1, 6 digits, 30 s).
    pub otpauth_uri: String,
    /// The URI as a QR code, SVG.
    pub qr_svg: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCode {
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TotpStatusView {
    /// `active` (confirm) or `approved` (check).
    pub status: &'static str,
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Store(e) => e.into(),
            Error::NotFound | Error::NotActive => ApiError::NotFound,
            Error::AlreadyActive => ApiError::AlreadyUsed,
            Error::CodeIncorrect { attempts_remaining } => {
                ApiError::CodeIncorrect { attempts_remaining }
            }
            Error::Locked => ApiError::TooManyAttempts,
            Error::Enrol(EnrolError::Colon("account_id") | EnrolError::Empty("account_id")) => {
                ApiError::invalid(Some("account_id"), "may not contain `:`")
            }
            Error::Enrol(e @ (EnrolError::Colon(_) | EnrolError::Empty(_) | EnrolError::Qr(_))) => {
                tracing::error!(error = %e, "TOTP enrolment could not be made");
                ApiError::Unavailable
            }
            Error::KeyUnavailable(_) => ApiError::Unavailable,
        }
    }
}

fn code_ok(code: &str) -> Result<(), ApiError> {
    if code.is_empty() || code.chars().count() > 32 {
        return Err(ApiError::invalid(Some("code"), "must be 1..=32 characters"));
    }
    Ok(())
}

/// Enrol the account (pending until confirmed), replacing any previous enrolment.
#[utoipa::path(post, path = "/v1/accounts/{account_id}/totp",
    params(("account_id" = String, Path)),
    responses((status = 201, body = TotpEnrolmentView), (status = 400), (status = 401), (status = 403),
              (status = 503)),
    security(("bearer" = [])))]
pub async fn enrol(
    State(state): State<AppState>,
    client: Client,
    Path(account_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    client.require(Purpose::Totp)?;
    super::check_account_id(&account_id)?;
    let e = state
        .totp
        .enrol(client.name(), &account_id, state.clock.now_ms())
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(TotpEnrolmentView {
            secret: e.secret_base32,
            otpauth_uri: e.otpauth_uri,
            qr_svg: e.qr_svg,
        }),
    ))
}

/// Confirm the enrolment with a first code: it becomes active (the code's step is used up).
#[utoipa::path(post, path = "/v1/accounts/{account_id}/totp/confirm", request_body = TotpCode,
    params(("account_id" = String, Path)),
    responses((status = 200, body = TotpStatusView), (status = 400), (status = 401), (status = 403),
              (status = 404), (status = 409), (status = 422), (status = 423)),
    security(("bearer" = [])))]
pub async fn confirm(
    State(state): State<AppState>,
    client: Client,
    Path(account_id): Path<String>,
    Json(req): Json<TotpCode>,
) -> Result<axum::Json<TotpStatusView>, ApiError> {
    attempt(state, client, account_id, req, TotpOp::Confirm, "active").await
}

/// Check a code: the current step ±1, each step once.
#[utoipa::path(post, path = "/v1/accounts/{account_id}/totp/check", request_body = TotpCode,
    params(("account_id" = String, Path)),
    responses((status = 200, body = TotpStatusView), (status = 400), (status = 401), (status = 403),
              (status = 404), (status = 422), (status = 423)),
    security(("bearer" = [])))]
pub async fn check(
    State(state): State<AppState>,
    client: Client,
    Path(account_id): Path<String>,
    Json(req): Json<TotpCode>,
) -> Result<axum::Json<TotpStatusView>, ApiError> {
    attempt(state, client, account_id, req, TotpOp::Check, "approved").await
}

async fn attempt(
    state: AppState,
    client: Client,
    account_id: String,
    req: TotpCode,
    op: TotpOp,
    status: &'static str,
) -> Result<axum::Json<TotpStatusView>, ApiError> {
    client.require(Purpose::Totp)?;
    super::check_account_id(&account_id)?;
    code_ok(&req.code)?;
    state
        .totp
        .attempt(
            client.name(),
            &account_id,
            op,
            &req.code,
            state.clock.now_ms(),
        )
        .await?;
    Ok(axum::Json(TotpStatusView { status }))
}

/// Remove the enrolment.
#[utoipa::path(delete, path = "/v1/accounts/{account_id}/totp",
    params(("account_id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    client: Client,
    Path(account_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    client.require(Purpose::Totp)?;
    super::check_account_id(&account_id)?;
    state.totp.delete(&account_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
