//! `/devices/{id}/activation-lock`: the escrowed Activation Lock bypass code, and asking Apple to clear the
//! lock with it.

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use orchard_core::device::activation_lock::ClearOutcome;
use orchard_core::enrollment::ade::ActivationLockView;
use orchard_core::reporting::audit_actions::AuditNote;
use orchard_types::DeviceId;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorDetail};
use super::extract::{AppState, Authenticated, Id, State};
use super::reply::{noted, Reply};

/// Apple refused or could not be asked to clear the Activation Lock: the error and what was tried.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivationLockNotCleared {
    pub error: ErrorDetail,
    pub outcome: orchard_core::device::activation_lock::ClearOutcome,
}

#[utoipa::path(
    get,
    path = "/devices/{id}/activation-lock",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "Activation Lock bypass escrow", body = orchard_core::enrollment::ade::ActivationLockView))
)]
pub(super) async fn activation_lock(
    State(state): State<AppState>,
    who: Authenticated,
    Id(id): Id<DeviceId>,
) -> Reply<Json<ActivationLockView>> {
    Ok(Json(
        state
            .orchard
            .activation_lock_view(&who.principal, id)
            .await?,
    ))
}

/// `POST /devices/{id}/activation-lock/clear`: asks Apple to clear the device's Activation Lock with its escrowed
/// bypass code (operators and the device tenant's admins). 200 with the outcome when Apple cleared it; 502
/// `activation_lock_not_cleared` with Apple's status and reason (and the outcome) when Apple refused every code
/// or could not be reached, because the failure is upstream and a retry may succeed; 409 when Orchard cannot
/// ask at all (no escrowed code, no push certificate, serial or product type unknown).
#[utoipa::path(
    post,
    path = "/devices/{id}/activation-lock/clear",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "Cleared", body = orchard_core::device::activation_lock::ClearOutcome), (status = 502, description = "Apple refused or could not be reached", body = ActivationLockNotCleared))
)]
pub(super) async fn clear_activation_lock(
    State(state): State<AppState>,
    who: Authenticated,
    Id(id): Id<DeviceId>,
) -> Reply {
    let outcome: ClearOutcome = state
        .orchard
        .clear_activation_lock(&who.principal, id)
        .await?;
    let attempts: Vec<serde_json::Value> = outcome
        .attempts
        .iter()
        .map(|a| json!({"code": a.code, "guid": a.guid, "result": a.result, "status": a.status}))
        .collect();
    let note = AuditNote {
        action: Some("device.activation_lock.clear".into()),
        tenant_id: Some(outcome.tenant_id),
        target: Some(id.to_string()),
        ..AuditNote::default()
    }
    .detail("cleared", outcome.cleared)
    .detail("attempts", attempts);
    let response = match outcome.failure_reason() {
        None => (StatusCode::OK, Json(outcome)).into_response(),
        Some(reason) => {
            let error = ApiError::new(
                StatusCode::BAD_GATEWAY,
                "activation_lock_not_cleared",
                reason,
            );
            (
                error.status(),
                Json(ActivationLockNotCleared {
                    error: error.detail(&who.request_id),
                    outcome,
                }),
            )
                .into_response()
        }
    };
    Ok(noted(note, response))
}
