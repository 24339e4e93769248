//! The admin API's error answer: a status, a stable `code`, a message for people and the request id, as
//! `{"error": {"code", "message", "request_id"}}`. Core errors convert with `?`; the request id is stamped in by
//! [`stamp_request_id`] on the way out, so handlers never pass it around.

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orchard_core::CoreError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::request_id;

/// The error body every 4xx/5xx of the API carries.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code, e.g. `not_found`, `invalid_request`, `forbidden`.
    pub code: String,
    /// For people; may change between versions.
    pub message: String,
    /// The request id (also in the `x-request-id` response header) to quote to the operators.
    pub request_id: String,
    /// `validation_failed` (422): every problem, each with the payload and key path it is about.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One problem of a `validation_failed` answer.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    /// Payload and key path, e.g. `com.apple.wifi.managed[0].EncryptionType`.
    pub path: String,
    pub message: String,
}

/// An API error: status, stable code and a message for the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    errors: Vec<FieldError>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            errors: Vec::new(),
        }
    }

    /// A bad field or parameter (`400 invalid_request`).
    pub fn invalid(message: impl Into<String>) -> Self {
        CoreError::Invalid(message.into()).into()
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The error as its body says it, with the request id to quote.
    pub fn detail(&self, request_id: &str) -> ErrorDetail {
        ErrorDetail {
            code: self.code.to_string(),
            message: self.message.clone(),
            request_id: request_id.to_string(),
            errors: self.errors.clone(),
        }
    }

    fn response(&self, request_id: &str) -> Response {
        let body = ErrorBody {
            error: self.detail(request_id),
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", "not found"),
            CoreError::Gone(m) => ApiError::new(StatusCode::GONE, "gone", m),
            CoreError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", m),
            CoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            CoreError::ConfirmationRequired(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, "confirmation_required", m)
            }
            CoreError::Unauthenticated => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "a valid bearer token is required",
            ),
            CoreError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            CoreError::Unprocessable(errors) => {
                let mut e = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    match errors.first() {
                        Some(first) if errors.len() == 1 => first.to_string(),
                        Some(first) => format!("{first} (and {} more)", errors.len() - 1),
                        None => "the input is not valid".to_owned(),
                    },
                );
                e.errors = errors
                    .into_iter()
                    .map(|v| FieldError {
                        path: v.path,
                        message: v.message,
                    })
                    .collect();
                e
            }
            CoreError::Device(r) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", r.reason())
            }
            other => {
                // The log gets the detail (the request span carries the request id); the caller gets the
                // request id to quote.
                tracing::error!(error = %other, "api request failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; quote the request id to the operators",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    /// The body without the request id, and the error itself in the extensions for [`stamp_request_id`].
    fn into_response(self) -> Response {
        let mut response = self.response("");
        response.extensions_mut().insert(self);
        response
    }
}

/// Writes the request id into every [`ApiError`] answer of the wrapped routes.
pub async fn stamp_request_id(request: Request, next: Next) -> Response {
    let id = request_id(request.headers());
    let response = next.run(request).await;
    let Some(error) = response.extensions().get::<ApiError>().cloned() else {
        return response;
    };
    let (parts, _) = response.into_parts();
    let (_, body) = error.response(&id).into_parts();
    Response::from_parts(parts, Body::new(body))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt;

    #[test]
    fn internal_errors_hide_details() {
        let e = ApiError::from(CoreError::Internal("db password wrong".into()));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let detail = e.detail("rid");
        assert_eq!(detail.code, "internal");
        assert!(!detail.message.contains("password"));
        assert_eq!(detail.request_id, "rid");
    }

    #[test]
    fn core_errors_keep_their_codes() {
        let cases = [
            (CoreError::NotFound, 404, "not_found"),
            (CoreError::Gone("x".into()), 410, "gone"),
            (CoreError::Invalid("x".into()), 400, "invalid_request"),
            (CoreError::Conflict("x".into()), 409, "conflict"),
            (
                CoreError::ConfirmationRequired("x".into()),
                400,
                "confirmation_required",
            ),
            (CoreError::Unauthenticated, 401, "unauthenticated"),
            (CoreError::Forbidden("x".into()), 403, "forbidden"),
        ];
        for (core, status, code) in cases {
            let e = ApiError::from(core);
            assert_eq!(e.status().as_u16(), status);
            assert_eq!(e.detail("").code, code);
        }
    }

    #[tokio::test]
    async fn answers_carry_the_request_id() {
        let app = axum::Router::new()
            .route(
                "/x",
                get(|| async { Err::<(), ApiError>(CoreError::NotFound.into()) }),
            )
            .layer(axum::middleware::from_fn(stamp_request_id));
        let request = Request::builder()
            .uri("/x")
            .header(crate::state::REQUEST_ID_HEADER, "rid-1")
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "not_found", "message": "not found", "request_id": "rid-1"}})
        );
    }
}
