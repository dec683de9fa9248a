//! `/v1/messages`: notification SMS (contract §3.6), and the delivery of any SMS we sent.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, AppState, Client, Json};
use crate::clock::rfc3339;
use crate::messages::{self, MAX_TEXT_CHARS};
use crate::purpose::Purpose;
use crate::store::{DeliveryStatus, MessageRecord};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/messages", post(create))
        .route("/v1/messages/{id}", get(show))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMessage {
    /// E.164 or national form; or give `account_id` to use the account's primary phone.
    pub to: Option<String>,
    pub account_id: Option<String>,
    /// 1 to 1000 characters; GSM 03.38 when it fits, else UCS-2, split as needed.
    pub text: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageAccepted {
    pub id: String,
    pub status: DeliveryStatus,
    /// `gsm7` or `ucs2`.
    pub encoding: String,
    pub parts: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    pub id: String,
    pub status: DeliveryStatus,
    pub encoding: String,
    pub parts: u32,
    pub submitted_at: Option<String>,
    pub delivered_at: Option<String>,
    pub error: Option<String>,
}

impl From<messages::Error> for ApiError {
    fn from(e: messages::Error) -> Self {
        match e {
            messages::Error::Store(e) => e.into(),
            messages::Error::NotFound => ApiError::NotFound,
            messages::Error::Unroutable => ApiError::CountryNotAllowed,
            messages::Error::RateLimited(r) => ApiError::rate_limited(r),
            messages::Error::Outbox(e) => {
                tracing::error!(error = %e, "notification not queued");
                ApiError::Unavailable
            }
        }
    }
}

fn view(m: MessageRecord) -> MessageView {
    MessageView {
        id: m.id,
        status: m.status,
        encoding: m.encoding,
        parts: m.parts,
        submitted_at: m.submitted_at_ms.map(rfc3339),
        delivered_at: m.delivered_at_ms.map(rfc3339),
        error: m.error,
    }
}

/// Send a notification SMS.
#[utoipa::path(post, path = "/v1/messages", request_body = CreateMessage,
    responses((status = 202, body = MessageAccepted), (status = 400), (status = 401), (status = 403),
              (status = 422), (status = 503)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    client: Client,
    Json(req): Json<CreateMessage>,
) -> Result<impl IntoResponse, ApiError> {
    client.require(Purpose::Notification)?;
    let chars = req.text.chars().count();
    if chars == 0 || chars > MAX_TEXT_CHARS {
        return Err(ApiError::invalid(
            Some("text"),
            "must be 1..=1000 characters",
        ));
    }
    if req.text.contains('\0') {
        return Err(ApiError::invalid(Some("text"), "must not contain NUL"));
    }
    let to = match (req.to, req.account_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                Some("to"),
                "give either to or account_id, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::invalid(
                Some("to"),
                "to or account_id is required",
            ));
        }
        (Some(to), None) => state.phones.parse(&to)?,
        // The account's primary phone (contract §3.6); none: 422 `phone_not_registered`.
        (None, Some(account)) => {
            super::check_account_id(&account)?;
            state
                .store
                .phones
                .list(&account)
                .await?
                .into_iter()
                .find(|p| p.primary)
                .map(|p| p.phone)
                .ok_or(ApiError::PhoneNotRegistered)?
        }
    };
    let m = state
        .messages
        .send(client.name(), to, req.text, state.clock.now_ms())
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(MessageAccepted {
            id: m.id,
            status: m.status,
            encoding: m.encoding,
            parts: m.parts,
        }),
    ))
}

/// A message's delivery: for its creator, or the creator of the verification that sent it.
#[utoipa::path(get, path = "/v1/messages/{id}",
    responses((status = 200, body = MessageView), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    client: Client,
    Path(id): Path<String>,
) -> Result<axum::Json<MessageView>, ApiError> {
    let m = state.messages.get(client.name(), &id).await?;
    if m.owner.is_empty() {
        client.require(Purpose::Notification)?;
    }
    Ok(axum::Json(view(m)))
}
