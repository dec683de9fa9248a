//! `/v1/accounts/{account_id}/phones`: the phones that receive an account's codes (contract
//! §3.2). Account data: the client needs the `login` purpose (§6).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::verifications::Context;
use super::{ApiError, AppState, Client, Json};
use crate::clock::rfc3339;
use crate::phones::{self, NewBinding};
use crate::purpose::Purpose;
use crate::store::AccountPhone;
use crate::subscriber::Identity;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/accounts/{account_id}/phones", get(list).post(bind))
        .route(
            "/v1/accounts/{account_id}/phones/{phone_id}",
            delete(remove),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(bind, list, remove),
    components(schemas(BindPhone, PhoneView, PhoneList, Identity))
)]
pub struct Doc;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindPhone {
    /// An approved `registration` verification (used once).
    pub verification_id: String,
    /// Make it the primary phone (the first phone bound always is).
    #[serde(default)]
    pub primary: bool,
    /// With an identity the carrier check runs: level 2 on a match, else 409.
    pub identity: Option<Identity>,
    pub context: Option<Context>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PhoneView {
    /// `ph_…`.
    pub id: String,
    pub phone_masked: String,
    pub primary: bool,
    /// 1: code-verified; 2: carrier-verified.
    pub level: u8,
    pub added_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PhoneList {
    pub phones: Vec<PhoneView>,
}

pub(crate) fn view(p: &AccountPhone) -> PhoneView {
    PhoneView {
        id: p.id.clone(),
        phone_masked: p.phone.masked(),
        primary: p.primary,
        level: p.level,
        added_at: rfc3339(p.added_at_ms),
    }
}

impl From<phones::Error> for ApiError {
    fn from(e: phones::Error) -> Self {
        match e {
            phones::Error::Store(e) => e.into(),
            phones::Error::NotFound => ApiError::NotFound,
            phones::Error::NotUsable => ApiError::Unusable {
                field: "verification_id",
                message: "must be an approved registration verification",
            },
            phones::Error::AlreadyUsed => ApiError::AlreadyUsed,
            phones::Error::Invalid { field, message } => ApiError::InvalidRequest {
                field: Some(field),
                message,
            },
            phones::Error::Mismatch { fields } => ApiError::SubscriberMismatch {
                fields: fields
                    .into_iter()
                    .map(|(f, r)| (f.as_str(), r.as_str()))
                    .collect(),
            },
            phones::Error::SimSwapped => ApiError::SimSwapDetected,
            phones::Error::CheckUnavailable => ApiError::SubscriberCheckUnavailable {
                message: "the carrier subscriber check is unavailable; retry later",
            },
            phones::Error::ChangesDisabled => ApiError::SubscriberCheckUnavailable {
                message: "phone changes are disabled: no subscriber provider is configured (subscriber.provider = \"none\")",
            },
            phones::Error::NotVerified => ApiError::Unusable {
                field: "id",
                message: "the code of this change has not been checked yet",
            },
            phones::Error::Code(e) => e.into(),
        }
    }
}

/// Bind the phone of an approved registration verification to the account.
#[utoipa::path(post, path = "/v1/accounts/{account_id}/phones", request_body = BindPhone,
    params(("account_id" = String, Path)),
    responses((status = 201, body = PhoneView), (status = 400), (status = 401), (status = 403),
              (status = 409), (status = 422), (status = 503)),
    security(("bearer" = [])))]
pub async fn bind(
    State(state): State<AppState>,
    client: Client,
    Path(account_id): Path<String>,
    Json(req): Json<BindPhone>,
) -> Result<impl IntoResponse, ApiError> {
    client.require(Purpose::Login)?;
    super::check_account_id(&account_id)?;
    let p = state
        .account_phones
        .bind(
            client.name(),
            &account_id,
            NewBinding {
                verification_id: req.verification_id,
                primary: req.primary,
                identity: req.identity,
                ip: req.context.and_then(|c| c.ip),
            },
            state.clock.now_ms(),
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(view(&p))))
}

/// The account's phones, oldest first, masked.
#[utoipa::path(get, path = "/v1/accounts/{account_id}/phones",
    params(("account_id" = String, Path)),
    responses((status = 200, body = PhoneList), (status = 400), (status = 401), (status = 403),
              (status = 503)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    client: Client,
    Path(account_id): Path<String>,
) -> Result<axum::Json<PhoneList>, ApiError> {
    client.require(Purpose::Login)?;
    super::check_account_id(&account_id)?;
    let phones = state.account_phones.list(&account_id).await?;
    Ok(axum::Json(PhoneList {
        phones: phones.iter().map(view).collect(),
    }))
}

/// Remove a phone; removing the primary promotes the oldest remaining phone.
#[utoipa::path(delete, path = "/v1/accounts/{account_id}/phones/{phone_id}",
    params(("account_id" = String, Path), ("phone_id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 503)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    client: Client,
    Path((account_id, phone_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    client.require(Purpose::Login)?;
    super::check_account_id(&account_id)?;
    state
        .account_phones
        .remove(client.name(), &account_id, &phone_id, state.clock.now_ms())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
