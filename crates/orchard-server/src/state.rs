//! What every handler gets: the core, and the facts of the request the server itself assigns (its id).

use std::sync::Arc;

use orchard_core::Orchard;

/// The state of the application, cloned into every handler.
#[derive(Clone)]
pub struct AppState {
    pub orchard: Arc<Orchard>,
    /// The OpenAPI document as served, built once at start-up from the same route list as the router.
    pub openapi_json: Arc<str>,
}

/// The header carrying the id the server gives each request (and answers with).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request id of the current request, as set by the request-id layer.
pub(crate) fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The header a client's own request id is kept in (checked and bounded), beside ours; see
/// `assign_request_id` in the crate root.
pub const CLIENT_REQUEST_ID_HEADER: &str = "x-client-request-id";
