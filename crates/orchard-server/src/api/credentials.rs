//! `/credentials`: the credential register — every certificate and token with its owner, expiry, state and how to
//! renew it (a department's admin sees only its own Apps and Books token and its iPads' identities).

use axum::Json;
use orchard_core::credentials::CredentialRegister;

use super::error::ApiError;
use super::extract::{AppState, Overseer, State};

/// `GET /credentials`: the register, soonest expiry first. Operators and helpdesk see every credential; a
/// department's admin sees its own; viewers are refused.
#[utoipa::path(
    get,
    path = "/credentials",
    tag = "credentials",
    responses((status = 200, description = "The credential register", body = CredentialRegister))
)]
pub(super) async fn credential_register(
    State(state): State<AppState>,
    Overseer(overseer): Overseer,
) -> Result<Json<CredentialRegister>, ApiError> {
    Ok(Json(state.orchard.credential_register(&overseer).await?))
}
