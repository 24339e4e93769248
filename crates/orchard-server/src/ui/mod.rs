//! The web UI: server-rendered HTML pages (askama templates in `crates/orchard-server/templates`, compiled in)
//! for departments and central IT, in Swedish and English. Reading works without JavaScript; the vendored
//! htmx (`assets/htmx.min.js`, its licence beside it) only spares full reloads, and `assets/ui.js` copies the
//! service-desk summary. Pages call core through the same capability-checked methods as `api/`.
//!
//! Every UI response carries strict security headers ([`security_headers`]): a CSP without inline script or
//! style, no framing, HSTS, nosniff, no referrer. Every form carries the session's CSRF token; the sign-in form,
//! before there is a session, a double-submit token.
//!
//! Layout: `mod` (routes, headers, assets), shared `i18n` (catalogues), `session` (the caller), `page` (frame,
//! rendering, errors), `selection` (the device filter and the bulk actions); features `signin`, `dashboard`, `devices`, `actions`, `bulk` (bulk actions and their jobs), `maintenance`,
//! `guides` (the guides of docs/guides, rendered by the shared `markdown`),
//! `operator` (central IT's pages), `reports` (audit log, usage).

mod actions;
mod bulk;
mod dashboard;
mod devices;
mod guides;
pub mod i18n;
mod maintenance;
pub mod markdown;
mod operator;
pub mod page;
mod reports;
mod selection;
pub mod session;
mod signin;

use axum::extract::{Path, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::state::AppState;

/// The Content-Security-Policy of every UI response: scripts and styles only from our own files (no inline
/// code, no eval), forms only to us, never inside a frame.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The UI's routes, merged at the top level (pages for a person's browser, outside the API and its document).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { page::redirect("/ui") }))
        .route("/ui", get(dashboard::dashboard))
        .route("/ui/login", get(signin::login_page))
        .route("/ui/login/local", post(signin::local_sign_in))
        .route("/ui/logout", post(signin::sign_out))
        .route(
            "/ui/tenant",
            get(signin::tenant_page).post(signin::choose_tenant),
        )
        .route("/ui/language", get(signin::choose_language))
        .route("/ui/devices", get(devices::device_list))
        .route("/ui/devices.csv", get(devices::device_csv))
        .route("/ui/devices/columns", post(devices::save_columns))
        .route("/ui/bulk/preview", post(bulk::preview))
        .route("/ui/bulk", post(bulk::start))
        .route("/ui/jobs", get(bulk::jobs_page))
        .route("/ui/jobs/{id}", get(bulk::job_page))
        .route("/ui/devices/{id}", get(devices::device_page))
        .route(
            "/ui/devices/{id}/actions/{action}",
            post(actions::device_action),
        )
        .route(
            "/ui/devices/{id}/activation-lock/clear",
            post(actions::clear_activation_lock),
        )
        .route(
            "/ui/maintenance",
            get(maintenance::maintenance_page).post(maintenance::publish),
        )
        .route("/ui/maintenance/{id}/withdraw", post(maintenance::withdraw))
        .route("/ui/operator", get(operator::index))
        .route("/ui/operator/tenants", get(operator::tenants_page))
        .route("/ui/operator/people", get(operator::people_page))
        .route("/ui/operator/role-mappings", post(operator::create_mapping))
        .route(
            "/ui/operator/role-mappings/{id}/delete",
            post(operator::delete_mapping),
        )
        .route(
            "/ui/operator/tokens",
            get(operator::tokens_page).post(operator::create_token),
        )
        .route(
            "/ui/operator/tokens/{id}/revoke",
            post(operator::revoke_token),
        )
        .route("/ui/operator/apple", get(operator::apple_page))
        .route(
            "/ui/operator/dep-tokens/{id}/sync",
            post(operator::sync_dep),
        )
        .route("/ui/operator/links", get(operator::links_page))
        .route(
            "/ui/operator/tenants/{tenant}/links/{link}/revoke",
            post(operator::revoke_link),
        )
        .route("/ui/operator/expiring", get(operator::expiring_page))
        .route("/ui/guides", get(guides::guides_page))
        .route("/ui/guides/{name}", get(guides::guide_page))
        .route("/ui/audit", get(reports::audit_page))
        .route("/ui/usage", get(reports::usage_page))
        .route("/ui/assets/{file}", get(asset))
        .layer(axum::middleware::from_fn(security_headers))
}

/// Adds the UI's security headers to every response of its routes (pages, redirects, errors, assets).
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        (
            "strict-transport-security",
            "max-age=31536000; includeSubDomains",
        ),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
        (
            "permissions-policy",
            "camera=(), microphone=(), geolocation=()",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The UI's own static files, compiled into the binary.
fn asset_bytes(file: &str) -> Option<(&'static [u8], &'static str)> {
    Some(match file {
        "htmx.min.js" => (
            include_bytes!("../../assets/htmx.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "htmx.LICENSE" => (
            include_bytes!("../../assets/htmx.LICENSE"),
            "text/plain; charset=utf-8",
        ),
        "ui.js" => (
            include_bytes!("../../assets/ui.js"),
            "text/javascript; charset=utf-8",
        ),
        "style.css" => (
            include_bytes!("../../assets/style.css"),
            "text/css; charset=utf-8",
        ),
        _ => return None,
    })
}

async fn asset(Path(file): Path<String>) -> Response {
    match asset_bytes(&file) {
        Some((bytes, content_type)) => (
            [
                (header::CONTENT_TYPE, content_type),
                // Public and identical for everyone; an hour keeps an upgrade's new files arriving soon.
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
