//! The HTTP API (contract §3): state, authentication, the error shape, and the router.
//! One file per resource, each exporting `router()`.

pub mod activations;
pub mod error;
pub mod events;
pub mod messages;
pub mod ops;
pub mod phone_changes;
pub mod phones;
pub mod serve;
pub mod totp;
pub mod verifications;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::Response;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

pub use error::ApiError;

use crate::clock::Clock;
use crate::config::Config;
use crate::otp::Verifications;
use crate::phone::PhonePolicy;
use crate::purpose::Purpose;
use crate::smpp::SmscStatus;
use crate::store::Stores;

/// What every handler may use: cheap handles.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub clients: Arc<Clients>,
    pub phones: Arc<PhonePolicy>,
    pub verifications: Arc<Verifications>,
    pub activations: Arc<crate::activation::service::Activations>,
    pub totp: Arc<crate::totp::service::Totp>,
    pub messages: Arc<crate::messages::Messages>,
    pub account_phones: Arc<crate::phones::AccountPhones>,
    pub store: Stores,
    pub smscs: Arc<Vec<Arc<SmscStatus>>>,
    pub outbox: crate::outbox::Outbox,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub clock: Clock,
}

/// Configured API clients by the SHA-256 of their token.
pub struct Clients {
    by_hash: HashMap<[u8; 32], Arc<ClientInfo>>,
}

#[derive(Debug)]
pub struct ClientInfo {
    pub name: String,
    pub purposes: Vec<Purpose>,
}

impl Clients {
    pub fn from_config(config: &Config) -> Clients {
        let by_hash = config
            .clients
            .iter()
            .filter_map(|c| {
                let hash: [u8; 32] = hex::decode(&c.key_sha256).ok()?.try_into().ok()?;
                Some((
                    hash,
                    Arc::new(ClientInfo {
                        name: c.name.clone(),
                        purposes: c.purposes.clone(),
                    }),
                ))
            })
            .collect();
        Clients { by_hash }
    }
}

/// The authenticated caller. As an extractor it answers 401 when the bearer token is missing
/// or unknown, so a handler cannot forget authentication.
#[derive(Debug, Clone)]
pub struct Client(pub Arc<ClientInfo>);

impl Client {
    /// 403 unless the client was granted `purpose`.
    pub fn require(&self, purpose: Purpose) -> Result<(), ApiError> {
        if self.0.purposes.contains(&purpose) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }
}

impl FromRequestParts<AppState> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let token = bearer_token(header).ok_or(ApiError::Unauthorized)?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        state
            .clients
            .by_hash
            .get(&hash)
            .cloned()
            .map(Client)
            .ok_or(ApiError::Unauthorized)
    }
}

/// A JSON body with the contract's errors: 413 over `max_body_bytes`, 400 `invalid_request`
/// naming the field for unknown fields, wrong types and missing fields.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // The whole body within the slow-client time (the body-timeout layer only bounds the
        // gap between two chunks).
        let bytes = tokio::time::timeout(
            serve::HEADER_TIMEOUT,
            axum::body::Bytes::from_request(req, state),
        )
        .await
        .map_err(|_| ApiError::invalid(None, "the request body did not arrive in time"))?
        .map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::invalid(None, "could not read the request body")
            }
        })?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = inner.to_string();
            // serde_path_to_error's path already ends with an unknown field; a missing field
            // is named only in the message, under its parent's path.
            let field = if let Some(f) = backticked(&msg, "missing field `") {
                Some(if path == "." {
                    f
                } else {
                    format!("{path}.{f}")
                })
            } else if path != "." {
                Some(path)
            } else {
                None
            };
            let message = match inner.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    "the body is not valid JSON".to_owned()
                }
                _ => strip_position(&msg),
            };
            ApiError::invalid(field.as_deref(), &message)
        })?;
        de.end()
            .map_err(|_| ApiError::invalid(None, "trailing characters after the JSON body"))?;
        Ok(Json(value))
    }
}

/// An account id as the platform gives it: 1 to 128 characters, no control characters.
pub(crate) fn check_account_id(a: &str) -> Result<(), ApiError> {
    if a.is_empty() || a.len() > 128 || a.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            Some("account_id"),
            "must be 1..=128 characters without control characters",
        ));
    }
    Ok(())
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 7235 §2.1) and may be followed by any run of spaces.
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, rest) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_matches(' ');
    (!token.is_empty() && !token.contains(' ')).then_some(token)
}

fn backticked(msg: &str, after: &str) -> Option<String> {
    let start = msg.find(after)? + after.len();
    let end = msg[start..].find('`')?;
    Some(msg[start..start + end].to_owned())
}

fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Counts requests by route and status.
async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("otpgate_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("otpgate_http_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// The `method` label: one of a fixed set, so a client cannot create series at will.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Requests handled at once; more wait for a turn (with the connection bound of `serve`,
/// this keeps a flood from turning into unbounded work on the store).
const MAX_IN_FLIGHT: usize = 4096;

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let limit = state.config.server.max_body_bytes;
    Router::new()
        .merge(verifications::router())
        .merge(messages::router())
        .merge(events::router())
        .merge(activations::router())
        .merge(totp::router())
        .merge(phones::router())
        .merge(phone_changes::router())
        .merge(ops::router())
        .fallback(|| async { ApiError::NotFound })
        .route_layer(middleware::from_fn(track))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            serve::HEADER_TIMEOUT,
        ))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            MAX_IN_FLIGHT,
        ))
        .with_state(state)
}
