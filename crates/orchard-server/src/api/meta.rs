//! `GET /openapi.json`: the API's own OpenAPI document (no authentication; it carries no data).

use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::extract::{AppState, State};

/// `GET /api/v1/openapi.json`: this document (no authentication; it carries no data).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "This OpenAPI document", content_type = "application/json", body = Object))
)]
pub(super) async fn serve_openapi(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi_json.to_string(),
    )
        .into_response()
}
