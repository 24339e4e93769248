//! `POST /auth/local`: break-glass sign-in with a local operator password (JSON `{"username","password"}`),
//! for when the university's identity provider is down. Answers 204 with the same session cookie as single
//! sign-on; every failure is the same 401 (the audit log says why).

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use orchard_core::access::users::SESSION_COOKIE;
use orchard_core::CoreError;
use serde::Deserialize;

use crate::api::ApiError;
use crate::auth_routes::{set_cookie, with_cookies};
use crate::{request_id, AppState};

pub fn routes() -> Router<AppState> {
    Router::new().route("/auth/local", post(local_sign_in))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalSignIn {
    username: String,
    password: String,
}

async fn local_sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    b: Result<Json<LocalSignIn>, JsonRejection>,
) -> Result<Response, ApiError> {
    let rid = request_id(&headers);
    let Json(req) =
        b.map_err(|e| ApiError::from_core(CoreError::Invalid(e.body_text()), rid.clone()))?;
    let session = state
        .orchard
        .local_sign_in(&req.username, &req.password, Some(&rid))
        .await
        .map_err(|e| ApiError::from_core(e, rid.clone()))?;
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
