//! Who is using the web UI. A page takes [`Visitor`] (anyone: the sign-in page) or [`SignedIn`] (a person with
//! a valid session, acting as one principal). The session is the same `orchard_session` cookie the API
//! accepts; the tenant a person of several tenants acts for is the `orchard_tenant` cookie they set on the
//! tenant page, which is the UI's `x-orchard-tenant` header: core's `principal_for_session` applies the same
//! rule to both, and re-checks the membership on every request (a forged cookie names no tenant of theirs).
//!
//! Without a valid session a page redirects to the sign-in page (an expired one says so); a person of several
//! tenants who picked none is sent to the tenant page. Forms carry the session's CSRF token in a hidden field,
//! checked by [`SignedIn::csrf_refusal`] before anything else happens.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use orchard_core::access::principal::Principal;
use orchard_core::access::users::SignedInUser;
use orchard_core::reporting::audit_actions::{ApiRequest, AuditNote};
use orchard_core::CoreError;
use orchard_types::Role;

use super::i18n::{Lang, Texts};
use super::page::{clear_cookie, core_error_page, error_page, redirect};
use crate::auth::cookies::{cookie, SESSION_COOKIE};
use crate::state::{request_id, AppState};

/// The cookie naming the tenant a person of several tenants acts for (the UI's `x-orchard-tenant`).
pub const TENANT_COOKIE: &str = "orchard_tenant";

/// Anyone: the reader's language and the request id.
pub struct Visitor {
    pub texts: Texts,
    pub request_id: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        Ok(Visitor {
            texts: Texts::new(Lang::of_request(&parts.headers)),
            request_id: request_id(&parts.headers),
        })
    }
}

/// A signed-in person and the principal they act as on this request.
pub struct SignedIn {
    pub user: SignedInUser,
    pub principal: Principal,
    pub texts: Texts,
    pub request_id: String,
    /// The tenant cookie as sent (kept so the page can show the choice).
    pub tenant_choice: Option<String>,
}

impl SignedIn {
    /// The CSRF check of a form: the hidden `csrf` field must be this session's token. The refusal page when it
    /// is not, `None` when it is.
    pub fn csrf_refusal(&self, presented: &str) -> Option<Response> {
        self.user.check_csrf(Some(presented)).err().map(|_| {
            error_page(
                self.texts,
                axum::http::StatusCode::FORBIDDEN,
                self.texts.get("error.csrf"),
                &self.request_id,
            )
        })
    }

    /// Whether the person holds tenant roles in more than one tenant (and so may switch).
    pub fn has_several_tenants(&self) -> bool {
        let mut tenants: Vec<_> = self
            .user
            .memberships
            .iter()
            .filter_map(|m| m.tenant_id)
            .collect();
        tenants.sort();
        tenants.dedup();
        tenants.len() > 1
            && !self
                .user
                .memberships
                .iter()
                .any(|m| m.role == Role::Operator)
    }

    /// Records a form's post in the audit log as the API records the same request: `route` and `path` are the
    /// API's (so the action name is the same), `full_path` the page's; the note gets `via: web`. Refused posts
    /// are recorded too. Err is the page to answer with when the event could not be written (the post's outcome
    /// is then not confirmed, as the API's `audit_unavailable`).
    pub async fn record_post(
        &self,
        state: &AppState,
        route: &str,
        path: String,
        full_path: String,
        status: u16,
        note: AuditNote,
    ) -> Result<(), Response> {
        self.record_request(state, "POST", route, path, full_path, status, note)
            .await
    }

    /// [`SignedIn::record_post`] for a form that does what the API does with another method (a revocation the
    /// API answers on `DELETE`): `method` is the API's, so the action name is too.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_request(
        &self,
        state: &AppState,
        method: &str,
        route: &str,
        path: String,
        full_path: String,
        status: u16,
        note: AuditNote,
    ) -> Result<(), Response> {
        let recorded = state
            .orchard
            // The web UI's trail is the server's own record of the request, like the API's audit trail.
            .record_api_request(
                &state.orchard.system(),
                ApiRequest {
                    method: method.into(),
                    route: route.into(),
                    path,
                    full_path,
                    request_id: Some(self.request_id.clone()),
                    principal: Some(self.principal.clone()),
                    status,
                    note: Some(note.detail("via", "web")),
                },
            )
            .await;
        recorded.map_err(|_| {
            error_page(
                self.texts,
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                self.texts.get("error.audit"),
                &self.request_id,
            )
        })
    }

    /// The HTTP status the API would answer a core outcome with (what the audit event records).
    pub fn status_of(outcome: Result<(), &CoreError>) -> u16 {
        match outcome {
            Ok(()) => 201,
            Err(CoreError::NotFound) => 404,
            Err(CoreError::Forbidden(_)) => 403,
            Err(CoreError::ConfirmationRequired(_) | CoreError::Conflict(_)) => 409,
            Err(CoreError::Gone(_)) => 410,
            Err(CoreError::Invalid(_)) => 400,
            Err(CoreError::Unprocessable(_)) => 422,
            Err(CoreError::Unauthenticated) => 401,
            Err(_) => 500,
        }
    }

    /// A page's answer to a core error, in the reader's language.
    pub fn core_error(&self, e: CoreError) -> Response {
        core_error_page(self.texts, e, &self.request_id)
    }
}

/// The person behind the session cookie (no principal yet: the tenant page works before a tenant is picked).
pub async fn session_user(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<(SignedInUser, Texts, String), Response> {
    let texts = Texts::new(Lang::of_request(headers));
    let request_id = request_id(headers);
    let Some(secret) = cookie(headers, SESSION_COOKIE) else {
        return Err(redirect("/ui/login"));
    };
    match state.orchard.authenticate_session(secret).await {
        Ok(user) => Ok((user, texts, request_id)),
        // Unknown, expired, revoked or disabled: sign in again (the cookie is worth nothing now).
        Err(CoreError::Unauthenticated) => Err(clear_cookie(
            redirect("/ui/login?expired=1"),
            SESSION_COOKIE,
        )),
        Err(e) => Err(core_error_page(texts, e, &request_id)),
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let (user, texts, request_id) = session_user(state, &parts.headers).await?;
        let tenant_choice = cookie(&parts.headers, TENANT_COOKIE)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        match state
            .orchard
            .principal_for_session(&user, tenant_choice.as_deref())
        {
            Ok(principal) => {
                crate::auth::note_caller(&principal);
                Ok(SignedIn {
                    user,
                    principal,
                    texts,
                    request_id,
                    tenant_choice,
                })
            }
            // Several tenants and none picked: pick one.
            Err(CoreError::Invalid(_)) => Err(redirect("/ui/tenant")),
            // A cookie naming a tenant that is not (or no longer) theirs: forget it and pick again.
            Err(CoreError::Forbidden(_)) if tenant_choice.is_some() => {
                Err(clear_cookie(redirect("/ui/tenant"), TENANT_COOKIE))
            }
            Err(e) => Err(core_error_page(texts, e, &request_id).into_response()),
        }
    }
}
