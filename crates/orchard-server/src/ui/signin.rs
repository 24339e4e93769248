//! Signing in and out of the web UI, picking the tenant to act for, and the language switch.
//!
//! Sign-in is the university's single sign-on (`/auth/login`, which comes back to `/ui`) or, for operators when
//! the provider is down, the break-glass local account (`POST /ui/login/local`, the same core sign-in as
//! `POST /auth/local`, with its throttling and audit). There is no session yet when the sign-in form is posted,
//! so its CSRF token is a double-submit one: a random value in a cookie and in the form, which another site can
//! neither read nor set.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::{Extension, Form};
use orchard_core::access::local_accounts::LocalSignIn;
use orchard_core::CoreError;
use serde::Deserialize;

use super::i18n::{Lang, Texts, LANG_COOKIE};
use super::page::{add_cookie, clear_cookie, error_page, local_path, redirect, render, Chrome};
use super::session::{session_user, SignedIn, Visitor, TENANT_COOKIE};
use crate::auth::cookies::{cookie, SESSION_COOKIE};
use crate::state::AppState;

/// The double-submit cookie of the sign-in form.
const FORM_COOKIE: &str = "orchard_form";
/// How long a sign-in form stays usable.
const FORM_TTL_SECONDS: i64 = 3600;
/// A year: the language choice is a preference, not a credential.
const LANG_TTL_SECONDS: i64 = 365 * 86_400;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    c: Chrome,
    sso: bool,
    form_token: &'a str,
    /// A notice above the forms (session expired, wrong password …), already in the reader's language.
    notice: Option<String>,
    username: &'a str,
}

#[derive(Deserialize)]
pub(super) struct LoginQuery {
    expired: Option<String>,
}

fn login_response(
    state: &AppState,
    t: Texts,
    request_id: &str,
    status: StatusCode,
    notice: Option<String>,
    username: &str,
) -> Response {
    let token = orchard_core::random_secret(24);
    let page = LoginPage {
        c: Chrome::anonymous(t, "/ui/login", request_id),
        sso: state.orchard.oidc_enabled(),
        form_token: &token,
        notice,
        username,
    };
    add_cookie(render(status, &page), FORM_COOKIE, &token, FORM_TTL_SECONDS)
}

/// `GET /ui/login`.
pub(super) async fn login_page(
    State(state): State<AppState>,
    visitor: Visitor,
    query: Result<Query<LoginQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let t = visitor.texts;
    let notice = query
        .ok()
        .and_then(|Query(q)| q.expired)
        .map(|_| t.get("login.expired").to_string());
    login_response(&state, t, &visitor.request_id, StatusCode::OK, notice, "")
}

#[derive(Deserialize)]
pub(super) struct LocalSignInForm {
    username: String,
    password: String,
    form_token: String,
}

/// `POST /ui/login/local`: break-glass sign-in.
pub(super) async fn local_sign_in(
    State(state): State<AppState>,
    visitor: Visitor,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    form: Result<Form<LocalSignInForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let t = visitor.texts;
    let rid = visitor.request_id;
    let Ok(Form(form)) = form else {
        return error_page(t, StatusCode::BAD_REQUEST, t.get("error.form"), &rid);
    };
    let cookie_token = cookie(&headers, FORM_COOKIE).unwrap_or("");
    if cookie_token.is_empty() || cookie_token != form.form_token {
        return error_page(t, StatusCode::FORBIDDEN, t.get("error.csrf"), &rid);
    }
    // The peer of the TCP connection, never a client-supplied header.
    let source = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    match state
        .orchard
        .local_sign_in(&form.username, &form.password, Some(&rid), source)
        .await
    {
        Ok(LocalSignIn::SignedIn(session)) => add_cookie(
            clear_cookie(redirect("/ui"), FORM_COOKIE),
            SESSION_COOKIE,
            &session.secret,
            session.max_age_seconds,
        ),
        Ok(LocalSignIn::Throttled {
            retry_after_seconds,
        }) => {
            let notice = t.fill(
                "login.throttled",
                &[("seconds", &retry_after_seconds.to_string())],
            );
            login_response(
                &state,
                t,
                &rid,
                StatusCode::TOO_MANY_REQUESTS,
                Some(notice),
                &form.username,
            )
        }
        Err(CoreError::Unauthenticated) => login_response(
            &state,
            t,
            &rid,
            StatusCode::UNAUTHORIZED,
            Some(t.get("login.failed").to_string()),
            &form.username,
        ),
        Err(e) => super::page::core_error_page(t, e, &rid),
    }
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/logout`: ends the session (CSRF token required) and forgets the tenant choice.
pub(super) async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let (user, t, rid) = match session_user(&state, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let presented = form.ok().map(|Form(f)| f.csrf);
    if user.check_csrf(presented.as_deref()).is_err() {
        return error_page(t, StatusCode::FORBIDDEN, t.get("error.csrf"), &rid);
    }
    if let Err(e) = state.orchard.end_session(&user, Some(&rid)).await {
        return super::page::core_error_page(t, e, &rid);
    }
    clear_cookie(
        clear_cookie(redirect("/ui/login"), SESSION_COOKIE),
        TENANT_COOKIE,
    )
}

/// One tenant a person may act for.
struct TenantChoice {
    id: String,
    name: String,
    role: &'static str,
    current: bool,
}

#[derive(Template)]
#[template(path = "tenant.html")]
struct TenantPage {
    c: Chrome,
    csrf: String,
    choices: Vec<TenantChoice>,
}

/// `GET /ui/tenant`: the tenants of a person with several, to pick the one to act for.
pub(super) async fn tenant_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (user, t, rid) = match session_user(&state, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let current = cookie(&headers, TENANT_COOKIE).map(str::to_string);
    let mut tenant_ids: Vec<_> = user
        .memberships
        .iter()
        .filter_map(|m| m.tenant_id)
        .collect();
    tenant_ids.sort();
    tenant_ids.dedup();
    let mut choices = Vec::new();
    for id in tenant_ids {
        // Acting for the tenant is what shows its name: the same rule every request of the choice will apply.
        let Ok(principal) = state
            .orchard
            .principal_for_session(&user, Some(&id.to_string()))
        else {
            continue;
        };
        let name = match state.orchard.tenant_view(&principal, id).await {
            Ok(v) => v.name,
            Err(_) => continue,
        };
        choices.push(TenantChoice {
            id: id.to_string(),
            name,
            role: super::page::role_label(t, principal.role()),
            current: current.as_deref() == Some(id.to_string().as_str()),
        });
    }
    let Ok(principal) = state
        .orchard
        .principal_for_session(&user, current.as_deref())
        .or_else(|_| state.orchard.principal_for_session(&user, None))
    else {
        // No tenant of theirs resolves and no central role: a page with the choices and no frame person.
        let page = TenantPage {
            c: Chrome::anonymous(t, "/ui/tenant", &rid),
            csrf: user.csrf_token.clone(),
            choices,
        };
        return render(StatusCode::OK, &page);
    };
    let who = SignedIn {
        user,
        principal,
        texts: t,
        request_id: rid,
        tenant_choice: current,
    };
    let page = TenantPage {
        c: Chrome::of(&state, &who, "/ui/tenant").await,
        csrf: who.user.csrf_token.clone(),
        choices,
    };
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub(super) struct TenantForm {
    #[serde(default)]
    csrf: String,
    tenant: String,
}

/// `POST /ui/tenant`: act for the chosen tenant from now on (only a tenant the person holds a role in).
pub(super) async fn choose_tenant(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<TenantForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let (user, t, rid) = match session_user(&state, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Ok(Form(form)) = form else {
        return error_page(t, StatusCode::BAD_REQUEST, t.get("error.form"), &rid);
    };
    if user.check_csrf(Some(&form.csrf)).is_err() {
        return error_page(t, StatusCode::FORBIDDEN, t.get("error.csrf"), &rid);
    }
    if state
        .orchard
        .principal_for_session(&user, Some(&form.tenant))
        .is_err()
    {
        return error_page(t, StatusCode::FORBIDDEN, t.get("error.tenant"), &rid);
    }
    let max_age = user.session_expires_at.0 - state.orchard.now().0;
    add_cookie(redirect("/ui"), TENANT_COOKIE, form.tenant.trim(), max_age)
}

#[derive(Deserialize)]
pub(super) struct LanguageQuery {
    lang: String,
    back: Option<String>,
}

/// `GET /ui/language?lang=sv&back=/ui/devices`: remembers the language and goes back (only to our pages).
pub(super) async fn choose_language(
    visitor: Visitor,
    query: Result<Query<LanguageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return redirect("/ui");
    };
    let back = local_path(q.back.as_deref()).to_string();
    match Lang::parse(&q.lang) {
        Some(lang) => add_cookie(redirect(&back), LANG_COOKIE, lang.tag(), LANG_TTL_SECONDS),
        None => {
            let t = visitor.texts;
            error_page(
                t,
                StatusCode::BAD_REQUEST,
                t.get("error.language"),
                &visitor.request_id,
            )
        }
    }
}
