//! The audit trail of the admin API: every mutating request, whatever its outcome (refused ones included),
//! becomes one audit event. This layer only says what the request was (method, matched route, path, request
//! id, caller, status, and the note the handler left in the response extensions); core names the action, the
//! target and the tenant and records it (`orchard_core::reporting::audit_actions`).
//!
//! The record is part of a mutation's contract: it is written before the response leaves, and if it cannot be
//! written the caller gets a 500 (`audit_unavailable`) instead of the handler's answer (core logs the complete
//! event), so it is never silently lost. The handler's own work may already be committed then; the 500 tells
//! the caller (and the operators, through the request id) that the outcome must be checked.

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orchard_core::reporting::audit_actions::{is_mutation, ApiRequest, AuditNote};

use super::error::ApiError;
use super::API_ROOT;
use crate::auth::Resolution;
use crate::state::{request_id, AppState};

/// Records one audit event per mutating request; see the module documentation.
pub async fn record_mutations(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().as_str().to_string();
    if !is_mutation(&method) {
        return next.run(request).await;
    }
    let request_id = request_id(request.headers());
    // Inside the nested router the URI has lost the API root; the matched route keeps it.
    let uri_path = request.uri().path();
    let full_path = if uri_path.starts_with(API_ROOT) {
        uri_path.to_string()
    } else {
        format!("{API_ROOT}{uri_path}")
    };
    let full_route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| full_path.clone());
    let below_root = |s: &str| s.strip_prefix(API_ROOT).unwrap_or(s).to_string();
    let principal = request
        .extensions()
        .get::<Resolution>()
        .and_then(|r| r.principal().cloned());

    let mut response = next.run(request).await;

    let recorded = state
        .orchard
        // The trail is the server's own record of the request, whoever (if anyone) made it.
        .record_api_request(
            &state.orchard.system(),
            ApiRequest {
                method,
                route: below_root(&full_route),
                path: below_root(&full_path),
                full_path,
                request_id: Some(request_id),
                principal,
                status: response.status().as_u16(),
                note: response.extensions_mut().remove::<AuditNote>(),
            },
        )
        .await;
    match recorded {
        Ok(()) => response,
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "audit_unavailable",
            "the request could not be recorded in the audit log, so its outcome is not confirmed; \
             quote the request id to the operators",
        )
        .into_response(),
    }
}
