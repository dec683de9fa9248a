//! `GET /v1/accounts/{account_id}/events`: an account's history (contract §3.2), newest
//! first. Account data: the client needs the `login` purpose (§6).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::{ApiError, AppState, Client};
use crate::clock::rfc3339;
use crate::purpose::Purpose;
use crate::store::events::MAX_READ;
use crate::store::{AccountEvent, EventKind};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/accounts/{account_id}/events", get(list))
}

#[derive(OpenApi)]
#[openapi(paths(list), components(schemas(EventView, EventList, EventKind)))]
pub struct Doc;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// How many events, newest first: 1 to 1000 (default 50).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub at: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub purpose: Option<String>,
    pub phone_masked: Option<String>,
    pub ip: Option<String>,
    pub client: String,
    /// For `rate_limited`: the limit that refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventView>,
}

fn view(e: AccountEvent) -> EventView {
    EventView {
        at: rfc3339(e.at_ms),
        kind: e.kind,
        purpose: e.purpose,
        phone_masked: e.phone_masked,
        ip: e.ip,
        client: e.client,
        limit: e.detail,
    }
}

/// The account's history, newest first.
#[utoipa::path(get, path = "/v1/accounts/{account_id}/events",
    params(("account_id" = String, Path), ListQuery),
    responses((status = 200, body = EventList), (status = 400), (status = 401), (status = 403),
              (status = 503)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    client: Client,
    Path(account_id): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<EventList>, ApiError> {
    client.require(Purpose::Login)?;
    let Query(q) = query
        .map_err(|_| ApiError::invalid(Some("limit"), "must be a whole number from 1 to 1000"))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_READ).contains(&limit) {
        return Err(ApiError::invalid(Some("limit"), "must be 1..=1000"));
    }
    super::check_account_id(&account_id)?;
    let events = state
        .store
        .events
        .recent(&account_id, limit, state.clock.now_ms())
        .await?;
    Ok(axum::Json(EventList {
        events: events.into_iter().map(view).collect(),
    }))
}
