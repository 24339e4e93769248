//! Who is calling: the browser sign-in routes (`/auth/*`: university single sign-on, and the break-glass local
//! login) and the resolution of an API caller from a bearer token or the session cookie.

pub(crate) mod cookies;
mod local;
mod oidc;
mod principal;

use axum::routing::{get, post};
use axum::Router;

pub(crate) use principal::note_caller;
pub use principal::{resolve_principal, Authenticated, Operator, Overseer, Resolution, TokenAdmin};

use crate::state::AppState;

/// `/auth/*`, merged at the top level (outside the API and its document: these are pages and redirects for
/// a person's browser).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/login", get(oidc::login))
        .route("/auth/callback", get(oidc::callback))
        .route("/auth/logout", post(oidc::logout))
        .route("/auth/me", get(oidc::me))
        .route("/auth/local", post(local::local_sign_in))
}
