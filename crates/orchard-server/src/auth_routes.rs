//! University single sign-on for people (`/auth/...`, outside the API) and the operators' role mappings
//! (`/api/v1/role-mappings`).
//!
//! `/auth/login` redirects to the provider and binds the sign-in to the browser with a short-lived
//! `orchard_login` cookie holding the state; `/auth/callback` finishes it and sets the `orchard_session`
//! cookie (Secure, HttpOnly, SameSite=Lax, with an expiry). `/auth/me` answers who is signed in, with the CSRF
//! token that state-changing requests made with the cookie (such as `POST /auth/logout`) must send in
//! `x-csrf-token`. Errors a person sees in the browser are small HTML pages; the JSON endpoints answer the
//! API's error shape.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orchard_core::access::oidc::OidcCallback;
use orchard_core::access::users::{NewRoleMapping, SignedInUser, CSRF_HEADER, SESSION_COOKIE};
use orchard_core::CoreError;
use serde::Deserialize;
use serde_json::json;

use crate::api::{body, json_value, ApiError, Authenticated};
use crate::{request_id, AppState};

/// The cookie that carries a sign-in's state from `/auth/login` to `/auth/callback`.
const LOGIN_COOKIE: &str = "orchard_login";
/// Where the browser goes after signing in, until the web UI exists.
const AFTER_LOGIN: &str = "/auth/me";

/// `/auth/*`, merged at the top level.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/logout", post(logout))
        .route("/auth/me", get(me))
}

/// `/role-mappings`, merged into `/api/v1`.
pub fn api_routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(
            list_role_mappings,
            create_role_mapping
        ))
        .routes(utoipa_axum::routes!(delete_role_mapping))
}

/// The value of cookie `name` in the request, if any.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value: always Secure (Orchard only speaks https), HttpOnly and SameSite=Lax, so the cookie
/// travels on the provider's top-level redirect back to us but not on another site's requests.
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age_seconds: i64,
) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={}; Secure; HttpOnly; SameSite=Lax",
        max_age_seconds.max(0)
    ))
    .ok()
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

pub(crate) fn with_cookies(
    mut response: Response,
    cookies: impl IntoIterator<Item = Option<HeaderValue>>,
) -> Response {
    for c in cookies.into_iter().flatten() {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

/// `GET /auth/login`: 302 to the provider.
async fn login(State(state): State<AppState>, headers: HeaderMap) -> Response {
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
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /auth/callback`: the provider's answer.
async fn callback(
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
    let rid = request_id(headers);
    let secret = cookie(headers, SESSION_COOKIE)
        .ok_or_else(|| ApiError::from_core(CoreError::Unauthenticated, rid.clone()))?;
    state
        .orchard
        .authenticate_session(secret)
        .await
        .map_err(|e| ApiError::from_core(e, rid))
}

/// `GET /auth/me`: the signed-in user, memberships and the CSRF token.
async fn me(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let who = session_user(&state, &headers).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(who.view())).into_response())
}

/// `POST /auth/logout`: ends the session (CSRF token required) and clears the cookie.
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let rid = request_id(&headers);
    let who = session_user(&state, &headers).await?;
    let csrf = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    who.check_csrf(csrf)
        .map_err(|e| ApiError::from_core(e, rid.clone()))?;
    state
        .orchard
        .end_session(&who, Some(&rid))
        .await
        .map_err(|e| ApiError::from_core(e, rid))?;
    Ok(with_cookies(
        StatusCode::NO_CONTENT.into_response(),
        [set_cookie(SESSION_COOKIE, "", "/", 0)],
    ))
}

#[utoipa::path(
    get,
    path = "/role-mappings",
    tag = "role-mappings",
    responses((status = 200, description = "Role mappings (operators)", body = crate::openapi::Items<orchard_core::access::users::RoleMappingView>))
)]
async fn list_role_mappings(
    State(state): State<AppState>,
    who: Authenticated,
) -> Result<Json<serde_json::Value>, ApiError> {
    let items = state
        .orchard
        .list_role_mappings(&who.operator()?)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json!({ "items": json_value(&who, items)? })))
}

/// `POST /role-mappings` {claim, value, role, tenant_id?} (operators).
#[utoipa::path(
    post,
    path = "/role-mappings",
    tag = "role-mappings",
    request_body = orchard_core::access::users::NewRoleMapping,
    responses((status = 201, description = "Created", body = orchard_core::access::users::RoleMappingView))
)]
async fn create_role_mapping(
    State(state): State<AppState>,
    who: Authenticated,
    b: Result<Json<NewRoleMapping>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(&who, b)?;
    let created = state
        .orchard
        .create_role_mapping(&who.operator()?, req)
        .await
        .map_err(|e| who.fail(e))?;
    Ok((StatusCode::CREATED, Json(json_value(&who, created)?)).into_response())
}

/// `DELETE /role-mappings/{id}` (operators).
#[utoipa::path(
    delete,
    path = "/role-mappings/{id}",
    tag = "role-mappings",
    params(("id" = String, Path, description = "Role mapping id")),
    responses((status = 204, description = "Deleted"))
)]
async fn delete_role_mapping(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .orchard
        .delete_role_mapping(&who.operator()?, &id)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; orchard_session_x=2; orchard_session=abc"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("orchard_login=s"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), Some("s"));
        assert_eq!(cookie(&h, "missing"), None);
    }

    #[test]
    fn pages_escape_what_the_provider_sent() {
        let r = page(StatusCode::FORBIDDEN, "t", "<script>x</script>", "\"id\"");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn session_cookies_are_secure_httponly_lax() {
        let v = set_cookie(SESSION_COOKIE, "abc", "/", 3600)
            .map(|v| v.to_str().unwrap_or("").to_string());
        assert_eq!(
            v.as_deref(),
            Some("orchard_session=abc; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Lax")
        );
    }
}
