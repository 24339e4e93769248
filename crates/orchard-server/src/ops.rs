//! Operations outside the API: `/healthz` and `/metrics` for the operators' monitoring (in the OpenAPI
//! document too).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// A label value with Prometheus' escapes (backslash, double quote, newline).
fn prometheus_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `/healthz` and `/metrics` for the operators' monitoring, outside the API; in the OpenAPI document too.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(metrics))
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
async fn metrics(State(state): State<AppState>) -> Response {
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
