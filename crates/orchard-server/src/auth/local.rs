//! `POST /auth/local`: break-glass sign-in with a local operator password (JSON `{"username","password"}`),
//! for when the university's identity provider is down. Answers 204 with the same session cookie as single
//! sign-on; every failure is the same 401 (the audit log says why).

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::cookies::{set_cookie, with_cookies, SESSION_COOKIE};
use crate::api::error::ApiError;
use crate::state::{request_id, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LocalSignIn {
    username: String,
    password: String,
}

pub(super) async fn local_sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    b: Result<Json<LocalSignIn>, JsonRejection>,
) -> Result<Response, ApiError> {
    let rid = request_id(&headers);
    let Json(req) = b.map_err(|e| ApiError::invalid(e.body_text()))?;
    let session = state
        .orchard
        .local_sign_in(&req.username, &req.password, Some(&rid))
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(with_cookies(
        response,
        [set_cookie(
            SESSION_COOKIE,
            &session.secret,
            "/",
            session.max_age_seconds,
        )],
    ))
}
