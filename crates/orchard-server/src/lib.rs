//! Orchard's HTTP surfaces: the device surface (check-in, commands, SCEP, enrollment profiles), the admin
//! API, the browser sign-in and the operators' endpoints, on one axum router served over TLS. Handlers only
//! adapt HTTP to `orchard-core`.
//!
//! Layout: `device/` (the device surface and its error answers), `api/` (the one route list, shared error,
//! extractors and replies, one module per feature), `auth/` (sign-in routes and resolving the caller),
//! `ui/` (the web UI's pages), `ops` (health and metrics), `openapi` (the document), `state`, `tls`.

pub mod api;
pub mod auth;
pub mod device;
mod exposition;
pub mod openapi;
pub mod ops;
pub mod state;
pub mod tls;
pub mod ui;

#[cfg(test)]
mod layout_tests;

use std::sync::Arc;

/// HTML-escapes text, quotes included, so it is safe in element content and attribute values. The one escaper
/// of the hand-written pages (enrollment landing page, sign-in pages, the guides' Markdown).
pub(crate) fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use http::HeaderValue;
use orchard_core::Orchard;
use tower_http::trace::TraceLayer;

pub use state::{AppState, CLIENT_REQUEST_ID_HEADER, REQUEST_ID_HEADER};
pub use tls::{serve_tls, tls_server_config, ConnectionLimits, RequestArrival};

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
    build_app_with(orchard, limits, ops::MetricsAccess::default())
}

/// [`build_app`] with who may read `/metrics`.
pub fn build_app_with(
    orchard: Arc<Orchard>,
    limits: Limits,
    metrics: ops::MetricsAccess,
) -> Router {
    let metrics_orchard = orchard.clone();
    let state = AppState {
        orchard,
        openapi_json: Arc::from(openapi::document_json()),
    };
    Router::new()
        .merge(device::routes().layer(DefaultBodyLimit::max(limits.device_body_bytes)))
        .nest(
            api::API_ROOT,
            api::router(state.clone()).layer(DefaultBodyLimit::max(limits.api_body_bytes)),
        )
        .merge(auth::routes())
        .merge(ui::routes())
        .merge(
            ops::routes()
                .split_for_parts()
                .0
                .layer(axum::middleware::from_fn_with_state(
                    metrics,
                    ops::require_metrics_token,
                )),
        )
        .with_state(state)
        .layer(axum::middleware::from_fn(api::error::stamp_request_id))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &http::Request<_>| {
                let header = |name: &str| {
                    req.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                // The path only, with link secrets redacted; never the query string (OIDC code and state,
                // SCEP messages) and never a header value other than the ids. The device, its department and
                // the command a device reports on are recorded by core once known, the department of an API
                // caller when the caller is resolved.
                tracing::info_span!(
                    "request",
                    method = %req.method(),
                    path = %loggable_path(req.uri().path()),
                    route = route_label(req.extensions().get::<MatchedPath>()),
                    request_id = %header(REQUEST_ID_HEADER),
                    client_request_id = %header(CLIENT_REQUEST_ID_HEADER),
                    tenant = tracing::field::Empty,
                    udid = tracing::field::Empty,
                    command_uuid = tracing::field::Empty,
                    request_type = tracing::field::Empty,
                )
            }),
        )
        .layer(axum::middleware::from_fn(assign_request_id))
        .layer(axum::middleware::from_fn_with_state(
            metrics_orchard,
            count_request,
        ))
}

/// What requests no route matched are counted as.
const UNMATCHED_ROUTE: &str = "unmatched";

/// The route template a request matched (`/api/v1/devices/{id}`), never its path: a path carries UDIDs and ids,
/// which would make a series per device. A nested router's catch-all (an unknown path under the API) is
/// unmatched too.
fn route_label(matched: Option<&MatchedPath>) -> &str {
    match matched {
        Some(m) if !m.as_str().contains("__private__") => m.as_str(),
        _ => UNMATCHED_ROUTE,
    }
}

/// Counts every answered request by route template and status, with its duration (`/metrics`).
async fn count_request(
    axum::extract::State(orchard): axum::extract::State<Arc<Orchard>>,
    request: Request,
    next: Next,
) -> Response {
    let route = route_label(request.extensions().get::<MatchedPath>()).to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    orchard
        .metrics()
        .http_request(&route, response.status().as_u16(), started.elapsed());
    response
}

/// The longest client request id kept (as `x-client-request-id`); longer ones are dropped.
const MAX_CLIENT_REQUEST_ID_CHARS: usize = 128;

/// A client's request id worth keeping: short, and only characters that cannot forge a log line or a header.
fn acceptable_client_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_CLIENT_REQUEST_ID_CHARS
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Every request gets Orchard's own id (UUID v7) in `x-request-id`, which handlers, the audit log, error
/// bodies and the answer use. A client's `x-request-id` never becomes ours (a caller could otherwise make its
/// events share someone else's id); a well-formed one is kept beside it as `x-client-request-id`, for the
/// logs only. A client-sent `x-client-request-id` is dropped.
async fn assign_request_id(mut request: Request, next: Next) -> Response {
    let headers = request.headers_mut();
    let client_id = headers
        .remove(REQUEST_ID_HEADER)
        .filter(acceptable_client_request_id);
    headers.remove(CLIENT_REQUEST_ID_HEADER);
    let ours = HeaderValue::from_str(&uuid::Uuid::now_v7().hyphenated().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    headers.insert(REQUEST_ID_HEADER, ours.clone());
    if let Some(client_id) = client_id {
        headers.insert(CLIENT_REQUEST_ID_HEADER, client_id);
    }
    let mut response = next.run(request).await;
    response.headers_mut().insert(REQUEST_ID_HEADER, ours);
    response
}

/// Path segments that are secrets: the one after `enroll` (an enrollment link's secret; `dep` is the public
/// zero-touch endpoint). Logs get the path with these replaced, so a link never appears in a log line.
fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    // A declared profile's URL ends in the tag that lets a device download it.
    if let Some(rest) =
        path.strip_prefix(orchard_core::declarative::profiles::PROFILE_DOWNLOAD_PATH)
    {
        if let Some((named, _tag)) = rest.rsplit_once('/') {
            return format!(
                "{}{named}/[redacted]",
                orchard_core::declarative::profiles::PROFILE_DOWNLOAD_PATH
            )
            .into();
        }
    }
    let mut segments = path.split('/');
    if !segments.any(|s| s == "enroll") {
        return path.into();
    }
    let mut out = Vec::new();
    let mut after_enroll = false;
    for segment in path.split('/') {
        if after_enroll && segment != "dep" && !segment.is_empty() {
            out.push("[redacted]");
        } else {
            out.push(segment);
        }
        after_enroll = segment == "enroll";
    }
    out.join("/").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_secrets_never_reach_a_log_line() {
        assert_eq!(loggable_path("/enroll/s3cr3t"), "/enroll/[redacted]");
        assert_eq!(
            loggable_path("/enroll/s3cr3t/profile"),
            "/enroll/[redacted]/profile"
        );
        assert_eq!(loggable_path("/enroll/dep"), "/enroll/dep");
        assert_eq!(loggable_path("/mdm/checkin"), "/mdm/checkin");
        assert_eq!(loggable_path("//enroll/x"), "//enroll/[redacted]");
        assert_eq!(
            loggable_path("/mdm/declared-profiles/d/p/3/0a1b2c"),
            "/mdm/declared-profiles/d/p/3/[redacted]"
        );
    }

    #[test]
    fn client_request_ids_are_short_and_plain() {
        assert!(acceptable_client_request_id(&HeaderValue::from_static(
            "trace-01.ab:c_d"
        )));
        let long = "a".repeat(MAX_CLIENT_REQUEST_ID_CHARS + 1);
        assert!(!acceptable_client_request_id(
            &HeaderValue::from_str(&long).unwrap_or(HeaderValue::from_static(""))
        ));
        assert!(!acceptable_client_request_id(&HeaderValue::from_static(
            "a b"
        )));
        assert!(!acceptable_client_request_id(&HeaderValue::from_static("")));
    }
}
