//! Orchard's HTTP surfaces: the device surface (check-in, commands, SCEP, enrollment profiles) and the admin
//! API, on one axum router served over TLS. Handlers only adapt HTTP to `orchard-core`.

pub mod api;
pub mod api_audit;
mod api_dep;
mod api_tokens;
mod api_users;
mod auth_local;
mod auth_routes;
pub mod device;
pub mod openapi;
pub mod tls;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use orchard_core::Orchard;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use tls::{serve_tls, tls_server_config};

/// Request size limits per surface.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Device bodies: check-ins and command reports (a big InstalledApplicationList still fits).
    pub device_body_bytes: usize,
    /// Admin API bodies (an InstallProfile payload in base64 must fit).
    pub api_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            device_body_bytes: orchard_protocol::MAX_PLIST_BYTES,
            api_body_bytes: 4 << 20,
        }
    }
}

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub orchard: Arc<Orchard>,
}

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Builds the whole application; `main` and the tests use this same function.
pub fn build_app(orchard: Arc<Orchard>, limits: Limits) -> Router {
    let state = AppState { orchard };
    let request_id = http::HeaderName::from_static(REQUEST_ID_HEADER);
    Router::new()
        .merge(device::routes().layer(DefaultBodyLimit::max(limits.device_body_bytes)))
        .nest(
            "/api/v1",
            api_audit::with_audit(api::routes().split_for_parts().0, state.clone())
                .layer(DefaultBodyLimit::max(limits.api_body_bytes)),
        )
        .merge(auth_routes::routes())
        .merge(auth_local::routes())
        .merge(operations_routes().split_for_parts().0)
        .with_state(state)
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &http::Request<_>| {
                let id = req
                    .headers()
                    .get(REQUEST_ID_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// The request id of the current request, as set by the request-id layer.
pub(crate) fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// A label value with Prometheus' escapes (backslash, double quote, newline).
fn prometheus_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `/healthz` and `/metrics` for the operators' monitoring, outside the API; in the OpenAPI document too.
pub(crate) fn operations_routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(healthz))
        .routes(utoipa_axum::routes!(metrics))
}

/// Liveness: answers while the server runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    security(()),
    responses((status = 200, description = "The server is up", body = String, content_type = "text/plain"))
)]
async fn healthz() -> &'static str {
    "ok"
}

/// Prometheus text metrics. Unauthenticated on purpose (scrapers), and carries no tenant data.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security(()),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
async fn metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut out = String::new();
    match state.orchard.push_certificate_status() {
        Some(s) => {
            out.push_str("# HELP orchard_push_certificate_days_left Days until the MDM push certificate expires.\n");
            out.push_str("# TYPE orchard_push_certificate_days_left gauge\n");
            out.push_str(&format!(
                "orchard_push_certificate_days_left {}\n",
                s.days_left
            ));
            out.push_str("# HELP orchard_push_certificate_expiry_warning 1 within 60 days of expiry or expired.\n");
            out.push_str("# TYPE orchard_push_certificate_expiry_warning gauge\n");
            out.push_str(&format!(
                "orchard_push_certificate_expiry_warning {}\n",
                u8::from(s.expiry_warning)
            ));
            out.push_str("# HELP orchard_push_stopped 1 when pushes are stopped (certificate expired or refused).\n");
            out.push_str("# TYPE orchard_push_stopped gauge\n");
            out.push_str(&format!(
                "orchard_push_stopped {}\n",
                u8::from(s.pushes_stopped.is_some())
            ));
        }
        None => {
            out.push_str(
                "# HELP orchard_push_certificate_present 0 until a push certificate is uploaded.\n",
            );
            out.push_str("# TYPE orchard_push_certificate_present gauge\n");
            out.push_str("orchard_push_certificate_present 0\n");
        }
    }
    if let Ok(tokens) = state.orchard.dep_token_days_left().await {
        if !tokens.is_empty() {
            out.push_str(
                "# HELP orchard_dep_token_days_left Days until a DEP (ASM) server token expires.\n",
            );
            out.push_str("# TYPE orchard_dep_token_days_left gauge\n");
            for (id, name, days) in &tokens {
                out.push_str(&format!(
                    "orchard_dep_token_days_left{{token=\"{id}\",name=\"{}\"}} {days}\n",
                    prometheus_label(name)
                ));
            }
            out.push_str(&format!(
                "# HELP orchard_dep_token_expiry_warning 1 within {} days of expiry or expired.\n",
                orchard_core::dep::DEP_TOKEN_WARNING_DAYS
            ));
            out.push_str("# TYPE orchard_dep_token_expiry_warning gauge\n");
            for (id, name, days) in &tokens {
                out.push_str(&format!(
                    "orchard_dep_token_expiry_warning{{token=\"{id}\",name=\"{}\"}} {}\n",
                    prometheus_label(name),
                    u8::from(*days <= orchard_core::dep::DEP_TOKEN_WARNING_DAYS)
                ));
            }
        }
    }
    if let Ok(n) = state.orchard.pending_push_count().await {
        out.push_str("# HELP orchard_pushes_pending Channels that owe a push.\n");
        out.push_str("# TYPE orchard_pushes_pending gauge\n");
        out.push_str(&format!("orchard_pushes_pending {n}\n"));
    }
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}
