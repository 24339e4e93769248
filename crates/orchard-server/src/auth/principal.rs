//! Who is calling the admin API: `Authorization: Bearer …` (scripts, the CLI) or the web UI's session cookie
//! (with the CSRF token on state-changing requests, and the tenant to act for). [`resolve_principal`] resolves
//! the caller once per request, before the audit trail and the handler; [`Authenticated`] hands it to the
//! handler, and the capability extractors ([`Operator`], [`Overseer`], [`TokenAdmin`]) hand it over only
//! when the role table grants what the handler needs: a handler that calls an operator method takes an
//! [`Operator`], and cannot be written for anyone else (403 before it runs).

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use orchard_core::access::capability::{OperatorCtx, OversightCtx, TokenAdminCtx};
use orchard_core::access::principal::Principal;
use orchard_core::access::users::SignedInUser;
use orchard_core::CoreError;

use crate::api::error::ApiError;
use crate::auth::cookies::{cookie, SESSION_COOKIE};
use crate::state::{request_id, AppState};

/// Header that must carry the session's CSRF token on state-changing requests made with the cookie.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The request header that picks the tenant a person with several memberships acts on.
pub const TENANT_HEADER: &str = "x-orchard-tenant";

/// The authenticated caller.
pub struct Authenticated {
    pub principal: Principal,
    pub request_id: String,
}

/// The caller as [`resolve_principal`] found it, in the request extensions.
#[derive(Clone)]
pub struct Resolution(pub Result<Principal, ApiError>);

impl Resolution {
    /// The principal, when the credential was accepted.
    pub fn principal(&self) -> Option<&Principal> {
        self.0.as_ref().ok()
    }
}

/// Resolves the caller of every wrapped route and leaves a [`Resolution`] in the request extensions.
pub async fn resolve_principal(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let resolution = resolve(&state, request.method(), request.headers()).await;
    if let Ok(principal) = &resolution {
        note_caller(principal);
    }
    request.extensions_mut().insert(Resolution(resolution));
    next.run(request).await
}

/// The caller's department on the request's span, so every log line of the request names it; central roles act
/// for none.
pub(crate) fn note_caller(principal: &Principal) {
    if let Some(tenant) = principal.tenant_id() {
        tracing::Span::current().record("tenant", tracing::field::display(tenant));
    }
}

async fn resolve(
    state: &AppState,
    method: &http::Method,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    let request_id = request_id(headers);
    // A bearer token (scripts, the CLI) wins; otherwise the web UI's session cookie.
    if let Some(secret) = bearer(headers) {
        return Ok(state
            .orchard
            .authenticate_bearer_in(secret, Some(&request_id))
            .await?);
    }
    let Some(secret) = cookie(headers, SESSION_COOKIE) else {
        return Err(CoreError::Unauthenticated.into());
    };
    let user = state.orchard.authenticate_session(secret).await?;
    // A cookie rides along with any request the browser makes: a state-changing one must also carry the CSRF
    // token that only our own pages can read from /auth/me.
    let safe = matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    if !safe {
        check_csrf(&user, headers)?;
    }
    let tenant = headers
        .get(TENANT_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.trim().is_empty());
    state
        .orchard
        .principal_for_session(&user, tenant)
        .map_err(|e| tenant_refusal(e, tenant.is_some()))
}

/// Core speaks of the requested tenant; the caller needs to know it is [`TENANT_HEADER`]. With the header, the
/// only refusal is a tenant the person has no role in; without it, the only invalid request is a person of
/// several tenants who did not pick one.
fn tenant_refusal(e: CoreError, header_sent: bool) -> ApiError {
    match e {
        CoreError::Forbidden(_) if header_sent => {
            CoreError::Forbidden(format!("{TENANT_HEADER} names no tenant of yours")).into()
        }
        CoreError::Invalid(m) => ApiError::invalid(format!("{m} in the {TENANT_HEADER} header")),
        other => other.into(),
    }
}

/// The CSRF check of a state-changing request made with the session cookie.
pub fn check_csrf(user: &SignedInUser, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    user.check_csrf(presented).map_err(|_| {
        CoreError::Forbidden(format!(
            "a state-changing request with the session cookie needs the {CSRF_HEADER} header from /auth/me"
        ))
        .into()
    })
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Resolved once by the layer on the API routes; a route outside it resolves here.
        let resolution = match parts.extensions.remove::<Resolution>() {
            Some(Resolution(r)) => r,
            None => resolve(state, &parts.method, &parts.headers).await,
        };
        Ok(Authenticated {
            principal: resolution?,
            request_id: request_id(&parts.headers),
        })
    }
}

/// An operator (central IT): everything on every tenant.
pub struct Operator(pub OperatorCtx);

/// Someone who may see the people, the audit log and usage: operators and helpdesk on every tenant, a tenant's
/// admins on theirs.
pub struct Overseer(pub OversightCtx);

/// Someone who manages API tokens: operators on every tenant, a tenant's admins on theirs.
pub struct TokenAdmin(pub TokenAdminCtx);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let who = Authenticated::from_request_parts(parts, state).await?;
        Ok(Operator(who.principal.operator()?))
    }
}

impl FromRequestParts<AppState> for Overseer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let who = Authenticated::from_request_parts(parts, state).await?;
        Ok(Overseer(who.principal.oversight()?))
    }
}

impl FromRequestParts<AppState> for TokenAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let who = Authenticated::from_request_parts(parts, state).await?;
        Ok(TokenAdmin(who.principal.token_admin()?))
    }
}

/// The secret of `Authorization: Bearer <secret>`, if that is the header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer orc_abc".parse().unwrap(),
        );
        assert_eq!(bearer(&h), Some("orc_abc"));
        h.insert(http::header::AUTHORIZATION, "Basic xyz".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn tenant_refusals_name_the_header() {
        let refused = tenant_refusal(CoreError::Forbidden("x".into()), true);
        assert_eq!(
            refused.detail("").message,
            "x-orchard-tenant names no tenant of yours"
        );
        let ambiguous = tenant_refusal(CoreError::Invalid("name the one".into()), false);
        assert_eq!(
            ambiguous.detail("").message,
            "name the one in the x-orchard-tenant header"
        );
        let no_role = tenant_refusal(CoreError::Forbidden("no role".into()), false);
        assert_eq!(no_role.detail("").message, "no role");
    }
}
