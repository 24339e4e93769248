//! University single sign-on for people (`/auth/login`, `/auth/callback`, `/auth/me`, `/auth/logout`).
//!
//! `/auth/login` redirects to the provider and binds the sign-in to the browser with a short-lived
//! `orchard_login` cookie holding the state; `/auth/callback` finishes it and sets the `orchard_session`
//! cookie (Secure, HttpOnly, SameSite=Lax, with an expiry). `/auth/me` answers who is signed in, with the CSRF
//! token that state-changing requests made with the cookie (such as `POST /auth/logout`) must send in
//! `x-csrf-token`. Errors a person sees in the browser are small HTML pages; the JSON endpoints answer the
//! API's error shape.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use orchard_core::access::oidc::OidcCallback;
use orchard_core::access::users::SignedInUser;
use orchard_core::CoreError;
use serde::Deserialize;

use super::cookies::{cookie, set_cookie, with_cookies, SESSION_COOKIE};
use super::principal::check_csrf;
use crate::api::error::ApiError;
use crate::html_escape;
use crate::state::{request_id, AppState};

/// The cookie that carries a sign-in's state from `/auth/login` to `/auth/callback`.
pub(super) const LOGIN_COOKIE: &str = "orchard_login";
/// Where the browser goes after signing in: the web UI.
const AFTER_LOGIN: &str = "/ui";

/// A small page for a person in a browser.
fn page(status: StatusCode, title: &str, message: &str, request_id: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · Orchard</title></head>\n\
         <body><h1>{t}</h1>\n<p>{m}</p>\n<p><a href=\"/auth/login\">Sign in again</a></p>\n\
         <p><small>Request id: {r}</small></p></body></html>\n",
        t = html_escape(title),
        m = html_escape(message),
        r = html_escape(request_id),
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

fn core_page(e: CoreError, request_id: &str) -> Response {
    match e {
        CoreError::NotFound => page(
            StatusCode::NOT_FOUND,
            "Single sign-on is not configured",
            "This Orchard has no identity provider configured.",
            request_id,
        ),
        CoreError::Forbidden(m) => page(StatusCode::FORBIDDEN, "Access refused", &m, request_id),
        CoreError::Invalid(m) => page(StatusCode::BAD_REQUEST, "Sign-in failed", &m, request_id),
        CoreError::Internal(m) => {
            tracing::warn!(error = %m, %request_id, "sign-in failed at the identity provider");
            page(
                StatusCode::BAD_GATEWAY,
                "Sign-in failed",
                "The university sign-in service did not answer as expected. Try again; if it keeps failing, quote the request id to central IT.",
                request_id,
            )
        }
        other => {
            tracing::error!(error = %other, %request_id, "sign-in failed");
            page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in failed",
                "Orchard could not complete the sign-in. Quote the request id to central IT.",
                request_id,
            )
        }
    }
}

/// `GET /auth/login`: 302 to the provider.
pub(super) async fn login(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let rid = request_id(&headers);
    match state.orchard.begin_oidc_login().await {
        Ok(redirect) => {
            let Ok(location) = HeaderValue::from_str(&redirect.authorize_url) else {
                return core_page(
                    CoreError::Internal("authorization URL is not a header value".into()),
                    &rid,
                );
            };
            let mut response = StatusCode::FOUND.into_response();
            response.headers_mut().insert(header::LOCATION, location);
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            with_cookies(
                response,
                [set_cookie(
                    LOGIN_COOKIE,
                    &redirect.state,
                    "/auth",
                    redirect.expires_in_seconds,
                )],
            )
        }
        Err(e) => core_page(e, &rid),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /auth/callback`: the provider's answer.
pub(super) async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let rid = request_id(&headers);
    let clear_login = set_cookie(LOGIN_COOKIE, "", "/auth", 0);
    let Ok(Query(q)) = query else {
        return with_cookies(
            page(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                "The sign-in answer is malformed.",
                &rid,
            ),
            [clear_login],
        );
    };
    if let Some(error) = q.error {
        let detail = q.error_description.unwrap_or_default();
        let message = format!(
            "The university sign-in service did not sign you in ({}{}{}).",
            error.chars().take(100).collect::<String>(),
            if detail.is_empty() { "" } else { ": " },
            detail.chars().take(300).collect::<String>()
        );
        return with_cookies(
            page(StatusCode::FORBIDDEN, "Sign-in failed", &message, &rid),
            [clear_login],
        );
    }
    let answer = OidcCallback {
        code: q.code.unwrap_or_default(),
        state: q.state.unwrap_or_default(),
        state_cookie: cookie(&headers, LOGIN_COOKIE).map(str::to_string),
        issuer: q.iss,
        request_id: Some(rid.clone()),
    };
    match state.orchard.finish_oidc_login(answer).await {
        Ok(signed_in) => {
            let max_age = signed_in.session.max_age_seconds;
            let mut response = StatusCode::SEE_OTHER.into_response();
            response
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static(AFTER_LOGIN));
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            with_cookies(
                response,
                [
                    clear_login,
                    set_cookie(SESSION_COOKIE, &signed_in.session.secret, "/", max_age),
                ],
            )
        }
        Err(e) => with_cookies(core_page(e, &rid), [clear_login]),
    }
}

/// The signed-in user of a request with the session cookie.
async fn session_user(state: &AppState, headers: &HeaderMap) -> Result<SignedInUser, ApiError> {
    let secret = cookie(headers, SESSION_COOKIE).ok_or(CoreError::Unauthenticated)?;
    Ok(state.orchard.authenticate_session(secret).await?)
}

/// `GET /auth/me`: the signed-in user, memberships and the CSRF token.
pub(super) async fn me(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = session_user(&state, &headers).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(who.view())).into_response())
}

/// `POST /auth/logout`: ends the session (CSRF token required) and clears the cookie.
pub(super) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rid = request_id(&headers);
    let who = session_user(&state, &headers).await?;
    check_csrf(&who, &headers)?;
    state.orchard.end_session(&who, Some(&rid)).await?;
    Ok(with_cookies(
        StatusCode::NO_CONTENT.into_response(),
        [set_cookie(SESSION_COOKIE, "", "/", 0)],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_the_provider_sent() {
        let r = page(StatusCode::FORBIDDEN, "t", "<script>x</script>", "\"id\"");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
