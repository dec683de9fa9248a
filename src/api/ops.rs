//! Operations: `/healthz`, `/readyz`, `/metrics`, `/openapi.json` (no authentication).

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use utoipa::{Modify, OpenApi, ToSchema};

use super::AppState;
use super::{messages, verifications};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", responses((status = 200)))]
pub async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ok` or `down`.
    pub store: &'static str,
    /// Per SMSC: `bound` or `down`.
    pub smsc: BTreeMap<String, &'static str>,
}

/// 200 when the store answers and at least one SMSC is bound, else 503.
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let store_ok = tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping())
        .await
        .is_ok_and(|r| r.is_ok());
    let smsc: BTreeMap<String, &'static str> = state
        .smscs
        .iter()
        .map(|s| {
            (
                s.name.to_string(),
                if s.is_bound() { "bound" } else { "down" },
            )
        })
        .collect();
    let ready = store_ok && smsc.values().any(|s| *s == "bound");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(Readiness {
            store: if store_ok { "ok" } else { "down" },
            smsc,
        }),
    )
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let depth = state.outbox.depth().await;
    for p in crate::outbox::Priority::ALL {
        metrics::gauge!("otpgate_sms_queue_depth", "priority" => p.as_str())
            .set(depth[p.index()] as f64);
    }
    for s in state.smscs.iter() {
        metrics::gauge!("otpgate_smpp_binds_up", "smsc" => s.name.to_string())
            .set(s.bound_sessions() as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "otpgate", description = "SMS and one-time-code gateway"),
    paths(
        verifications::create, verifications::show, verifications::resend, verifications::check,
        messages::create, messages::show,
        healthz, readyz, metrics,
    ),
    components(schemas(
        verifications::CreateVerification, verifications::CheckCode, verifications::Context,
        verifications::VerificationView, verifications::CheckResult, Readiness,
        messages::CreateMessage, messages::MessageAccepted, messages::MessageView,
        crate::purpose::Purpose, crate::store::Status, crate::store::DeliveryStatus,
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The OpenAPI 3.1 description of every route.
/// Each resource module adds its own `Doc` here.
pub async fn openapi() -> impl IntoResponse {
    let mut doc = ApiDoc::openapi();
    doc.merge(super::events::Doc::openapi());
    doc.merge(super::activations::Doc::openapi());
    doc.merge(super::totp::Doc::openapi());
    doc.merge(super::phones::Doc::openapi());
    doc.merge(super::phone_changes::Doc::openapi());
    axum::Json(doc)
}
