//! Orchard's HTTP surfaces: the device surface (check-in, commands, SCEP, enrollment profiles), the admin
//! API, the browser sign-in and the operators' endpoints, on one axum router served over TLS. Handlers only
//! adapt HTTP to `orchard-core`.
//!
//! Layout: `device/` (the device surface and its error answers), `api/` (the one route list, shared error,
//! extractors and replies, one module per feature), `auth/` (sign-in routes and resolving the caller),
//! `ops` (health and metrics), `openapi` (the document), `state`, `tls`.

pub mod api;
pub mod auth;
pub mod device;
pub mod openapi;
pub mod ops;
pub mod state;
pub mod tls;

#[cfg(test)]
mod layout_tests;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use orchard_core::Orchard;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use state::{AppState, REQUEST_ID_HEADER};
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

/// Builds the whole application; `main` and the tests use this same function.
pub fn build_app(orchard: Arc<Orchard>, limits: Limits) -> Router {
    let state = AppState {
        orchard,
        openapi_json: Arc::from(openapi::document_json()),
    };
    let request_id = http::HeaderName::from_static(REQUEST_ID_HEADER);
    Router::new()
        .merge(device::routes().layer(DefaultBodyLimit::max(limits.device_body_bytes)))
        .nest(
            api::API_ROOT,
            api::router(state.clone()).layer(DefaultBodyLimit::max(limits.api_body_bytes)),
        )
        .merge(auth::routes())
        .merge(ops::routes().split_for_parts().0)
        .with_state(state)
        .layer(axum::middleware::from_fn(api::error::stamp_request_id))
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
