//! `POST /auth/local`: break-glass sign-in with a local operator password (JSON `{"username","password"}`),
//! for when the university's identity provider is down. Answers 204 with the same session cookie as single
//! sign-on; every failure is the same 401 (the audit log says why), except a source that keeps failing, which
//! is told to wait (429 with `Retry-After`) whatever account it names.

use std::net::SocketAddr;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use orchard_core::access::local_accounts::LocalSignIn;
use serde::Deserialize;

use super::cookies::{set_cookie, with_cookies, SESSION_COOKIE};
use crate::api::error::ApiError;
use crate::state::{request_id, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LocalSignInBody {
    username: String,
    password: String,
}

pub(super) async fn local_sign_in(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    b: Result<Json<LocalSignInBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let rid = request_id(&headers);
    let Json(req) = b.map_err(|e| ApiError::invalid(e.body_text()))?;
    // The peer of the TCP connection (set by the TLS accept loop), never a client-supplied header.
    let source = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    let session = match state
        .orchard
        .local_sign_in(&req.username, &req.password, Some(&rid), source)
        .await?
    {
        LocalSignIn::SignedIn(session) => session,
        LocalSignIn::Throttled {
            retry_after_seconds,
        } => {
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "too many failed sign-ins from this address; wait and try again",
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&retry_after_seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return Ok(response);
        }
    };
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
