//! What every page shares: the frame around it ([`Chrome`]: the signed-in person, the tenant acted for, the
//! language switch, the CSRF token of the sign-out form), rendering a template into a response, redirects,
//! cookies, and the one mapping of errors to HTML pages (status and a message in the reader's language, the
//! request id to quote; internals only in the log).

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use orchard_core::access::roles::{grants, Ability};
use orchard_core::tenancy::maintenance::MaintenanceNoticeView;
use orchard_core::CoreError;
use orchard_types::Role;

use super::i18n::{Lang, Texts};
use super::session::SignedIn;
use crate::auth::cookies::{set_cookie, with_cookies};
use crate::state::AppState;

/// The frame of a page.
pub struct Chrome {
    pub t: Texts,
    /// The signed-in person, when there is one.
    pub person: Option<Person>,
    /// The current path and query, for the language switch to come back to.
    pub here: String,
    pub request_id: String,
    /// Planned maintenance in force or announced, shown at the top of every page of a signed-in person.
    pub notices: Vec<NoticeLine>,
}

/// A maintenance notice as a page shows it: the text in the reader's language and the window in UTC.
pub struct NoticeLine {
    pub id: String,
    pub text: String,
    pub window: String,
    pub in_progress: bool,
}

/// `2026-12-05T06:00:00Z` → `2026-12-05 06:00`.
fn minute(rfc3339: &str) -> String {
    rfc3339.replace('T', " ").chars().take(16).collect()
}

impl NoticeLine {
    pub fn of(t: Texts, n: &MaintenanceNoticeView) -> NoticeLine {
        NoticeLine {
            id: n.id.clone(),
            text: match t.lang {
                Lang::Sv => n.text_sv.clone(),
                Lang::En => n.text_en.clone(),
            },
            window: t.fill(
                "maintenance.window",
                &[
                    ("start", &minute(&n.starts_at)),
                    ("end", &minute(&n.ends_at)),
                ],
            ),
            in_progress: n.in_progress,
        }
    }
}

/// The notices the frame shows (none when they cannot be read: a banner is never worth a failed page).
async fn notices(state: &AppState, who: &SignedIn) -> Vec<NoticeLine> {
    match state.orchard.maintenance_notices(&who.principal).await {
        Ok(notices) => notices
            .iter()
            .map(|n| NoticeLine::of(who.texts, n))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "maintenance notices could not be read for the page frame");
            Vec::new()
        }
    }
}

/// The signed-in person as the header shows them.
pub struct Person {
    pub name: String,
    /// The role acted as, in the reader's language.
    pub role: String,
    /// The tenant acted for (its name), or "all departments" for central IT.
    pub acting_for: String,
    pub can_switch_tenant: bool,
    /// Central IT: the operator pages are in the menu.
    pub is_operator: bool,
    /// Reads the audit log and the usage report (admins, helpdesk, operators).
    pub can_oversee: bool,
    pub csrf: String,
}

impl Chrome {
    /// The frame for someone not signed in.
    pub fn anonymous(t: Texts, here: &str, request_id: &str) -> Chrome {
        Chrome {
            t,
            person: None,
            here: here.to_string(),
            request_id: request_id.to_string(),
            notices: Vec::new(),
        }
    }

    /// The frame for a signed-in person; names the tenant they act for (visibly: the `x-orchard-tenant` rule).
    pub async fn of(state: &AppState, who: &SignedIn, here: &str) -> Chrome {
        let t = who.texts;
        let acting_for = match who.principal.tenant_id() {
            None => t.get("chrome.all_tenants").to_string(),
            Some(id) => state
                .orchard
                .tenant_view(&who.principal, id)
                .await
                .map(|v| v.name)
                .unwrap_or_else(|_| id.to_string()),
        };
        Chrome {
            t,
            person: Some(Person {
                name: who.principal.name().to_string(),
                role: role_label(t, who.principal.role()).to_string(),
                acting_for,
                can_switch_tenant: who.has_several_tenants(),
                is_operator: who.principal.operator().is_ok(),
                can_oversee: who.principal.oversight().is_ok(),
                csrf: who.user.csrf_token.clone(),
            }),
            here: here.to_string(),
            request_id: who.request_id.clone(),
            notices: notices(state, who).await,
        }
    }

    /// Whether the page shows the maintenance banner (the maintenance page lists the notices itself).
    pub fn shows_banner(&self) -> bool {
        !self.notices.is_empty() && self.here != "/ui/maintenance"
    }

    /// The language switch's link to `lang`, back to this page.
    pub fn switch_to(&self, lang: &str) -> String {
        format!("/ui/language?lang={lang}&back={}", url_encode(&self.here))
    }
}

/// What a role may do, as the page needs to know it to show or hide actions (the server re-checks on post).
pub fn may(who: &SignedIn, ability: Ability) -> bool {
    grants(who.principal.role(), ability)
}

pub fn role_label(t: Texts, role: Role) -> &'static str {
    match role {
        Role::Operator => t.get("role.operator"),
        Role::Helpdesk => t.get("role.helpdesk"),
        Role::Admin => t.get("role.admin"),
        Role::Viewer => t.get("role.viewer"),
    }
}

/// Percent-encodes a query value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A rendered template as a page (never cached: pages show a person's data).
pub fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (
            status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a page could not be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "page could not be rendered",
            )
                .into_response()
        }
    }
}

/// 303 to a path of ours.
pub fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// Only our own paths are redirect targets (an open redirect would lend our name to a phishing link).
pub fn local_path(candidate: Option<&str>) -> &str {
    match candidate {
        Some(p) if p.starts_with("/ui") && !p.starts_with("//") && !p.contains('\\') => p,
        _ => "/ui",
    }
}

pub fn clear_cookie(response: Response, name: &str) -> Response {
    with_cookies(response, [set_cookie(name, "", "/", 0)])
}

pub fn add_cookie(response: Response, name: &str, value: &str, max_age_seconds: i64) -> Response {
    with_cookies(response, [set_cookie(name, value, "/", max_age_seconds)])
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    c: Chrome,
    title: &'a str,
    message: &'a str,
}

/// An error page: `status`, a message for the reader, and the request id to quote.
pub fn error_page(t: Texts, status: StatusCode, message: &str, request_id: &str) -> Response {
    let title = match status {
        StatusCode::NOT_FOUND => t.get("error.not_found.title"),
        StatusCode::FORBIDDEN => t.get("error.forbidden.title"),
        s if s.is_client_error() => t.get("error.invalid.title"),
        _ => t.get("error.internal.title"),
    };
    render(
        status,
        &ErrorPage {
            c: Chrome::anonymous(t, "/ui", request_id),
            title,
            message,
        },
    )
}

/// The one mapping of core's errors to pages. Another tenant's ids are core's NotFound, so they answer exactly
/// like ids that do not exist.
pub fn core_error_page(t: Texts, e: CoreError, request_id: &str) -> Response {
    match e {
        CoreError::NotFound => error_page(
            t,
            StatusCode::NOT_FOUND,
            t.get("error.not_found"),
            request_id,
        ),
        CoreError::Forbidden(m) => {
            tracing::info!(reason = %m, %request_id, "web UI request refused");
            error_page(
                t,
                StatusCode::FORBIDDEN,
                t.get("error.forbidden"),
                request_id,
            )
        }
        CoreError::ConfirmationRequired(_) => error_page(
            t,
            StatusCode::CONFLICT,
            t.get("error.confirmation"),
            request_id,
        ),
        // Core's own words say what was wrong with the input (English: the API shares them).
        CoreError::Invalid(m) | CoreError::Conflict(m) | CoreError::Gone(m) => {
            let message = t.fill("error.invalid", &[("detail", &m)]);
            error_page(t, StatusCode::BAD_REQUEST, &message, request_id)
        }
        CoreError::Unauthenticated => redirect("/ui/login?expired=1"),
        other => {
            tracing::error!(error = %other, %request_id, "web UI request failed");
            error_page(
                t,
                StatusCode::INTERNAL_SERVER_ERROR,
                t.get("error.internal"),
                request_id,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ui::i18n::Lang;

    #[test]
    fn redirects_stay_on_our_pages() {
        assert_eq!(local_path(Some("/ui/devices?q=a")), "/ui/devices?q=a");
        assert_eq!(local_path(Some("https://evil.example/")), "/ui");
        assert_eq!(local_path(Some("//evil.example/ui")), "/ui");
        assert_eq!(local_path(Some("/ui\\@evil")), "/ui");
        assert_eq!(local_path(None), "/ui");
        assert_eq!(
            url_encode("/ui/devices?q=a b&x"),
            "/ui/devices%3Fq%3Da%20b%26x"
        );
    }

    #[test]
    fn core_errors_become_pages() {
        let t = Texts::new(Lang::En);
        for (e, status) in [
            (CoreError::NotFound, StatusCode::NOT_FOUND),
            (CoreError::Forbidden("x".into()), StatusCode::FORBIDDEN),
            (
                CoreError::ConfirmationRequired("x".into()),
                StatusCode::CONFLICT,
            ),
            (CoreError::Invalid("x".into()), StatusCode::BAD_REQUEST),
            (
                CoreError::Internal("secret detail".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (CoreError::Unauthenticated, StatusCode::SEE_OTHER),
        ] {
            assert_eq!(core_error_page(t, e, "rid").status(), status);
        }
    }
}
