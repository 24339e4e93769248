//! Shared iPads: `/devices/{id}/users` (the resident users, and logging out or deleting them) and a tenant's
//! Shared iPad policy (`/tenants/{id}/shared-ipad-policy`, per group `/tenants/{id}/groups/{group}/…`) with its
//! compliance (`/tenants/{id}/shared-ipad-compliance`).

use axum::http::StatusCode;
use axum::Json;
use orchard_core::desired::shared_ipad_policy::{
    SharedIpadComplianceReport, SharedIpadPolicies, SharedIpadSettings,
};
use orchard_core::device::shared_ipad::{DeleteUsers, SharedIpadActionQueued, SharedIpadUsers};
use orchard_core::reporting::audit_actions::AuditNote;
use orchard_types::{DeviceId, GroupId, TenantId};
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::extract::{AppState, Authenticated, Id, JsonBody, State};
use super::reply::{noted, Reply};

/// Deleting one user. `force_deletion` deletes data that is not synced yet too and needs `confirm_serial` (the
/// device's serial number); without it a user with unsynced data is refused (409).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteUserBody {
    /// The user's `UserName` (Managed Apple Account) as `GET /devices/{id}/users` shows it.
    user_name: String,
    #[serde(default)]
    force_deletion: bool,
    #[serde(default)]
    confirm_serial: Option<String>,
}

/// Deleting every user (`DeleteAllUsers`); always needs `confirm_serial`. Logged-in users, and users with unsynced
/// data unless `force_deletion`, stay (the device keeps them).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteAllUsersBody {
    #[serde(default)]
    force_deletion: bool,
    #[serde(default)]
    confirm_serial: Option<String>,
}

fn accepted(outcome: SharedIpadActionQueued, note: AuditNote) -> axum::response::Response {
    let note = note
        .target(outcome.device_id)
        .detail("request_type", outcome.request_type.clone())
        .detail("command_uuid", outcome.command_uuid.clone());
    noted(note, (StatusCode::ACCEPTED, Json(outcome)))
}

#[utoipa::path(
    get,
    path = "/devices/{id}/users",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "Resident users from the device's latest UserList, and its user channels", body = orchard_core::device::shared_ipad::SharedIpadUsers))
)]
pub(super) async fn shared_ipad_users(
    State(state): State<AppState>,
    who: Authenticated,
    Id(id): Id<DeviceId>,
) -> Reply<Json<SharedIpadUsers>> {
    Ok(Json(
        state.orchard.shared_ipad_users(&who.principal, id).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/devices/{id}/users/refresh",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses(
        (status = 202, description = "UserList queued", body = orchard_core::device::shared_ipad::SharedIpadActionQueued),
        (status = 409, description = "Not a Shared iPad", body = ErrorBody)
    )
)]
pub(super) async fn refresh_users(
    State(state): State<AppState>,
    who: Authenticated,
    Id(id): Id<DeviceId>,
) -> Reply {
    let outcome = state
        .orchard
        .refresh_shared_ipad_users(&who.principal, id)
        .await?;
    Ok(accepted(outcome, AuditNote::default()))
}

#[utoipa::path(
    post,
    path = "/devices/{id}/users/log-out",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses(
        (status = 202, description = "LogOutUser (and a UserList behind it) queued", body = orchard_core::device::shared_ipad::SharedIpadActionQueued),
        (status = 409, description = "Not a Shared iPad", body = ErrorBody)
    )
)]
pub(super) async fn log_out_user(
    State(state): State<AppState>,
    who: Authenticated,
    Id(id): Id<DeviceId>,
) -> Reply {
    let outcome = state
        .orchard
        .log_out_shared_ipad_user(&who.principal, id)
        .await?;
    Ok(accepted(outcome, AuditNote::default()))
}

#[utoipa::path(
    post,
    path = "/devices/{id}/users/delete",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    request_body = DeleteUserBody,
    responses(
        (status = 202, description = "DeleteUser (and a UserList behind it) queued", body = orchard_core::device::shared_ipad::SharedIpadActionQueued),
        (status = 409, description = "Not a Shared iPad, the user is logged in, or has unsynced data and force_deletion is not set", body = ErrorBody)
    )
)]
pub(super) async fn delete_user(
    State(state): State<AppState>,
    who: Authenticated,
    Id(id): Id<DeviceId>,
    JsonBody(body): JsonBody<DeleteUserBody>,
) -> Reply {
    let note = AuditNote::default()
        .detail("user_name", body.user_name.clone())
        .detail("force_deletion", body.force_deletion);
    let outcome = state
        .orchard
        .delete_shared_ipad_users(
            &who.principal,
            id,
            DeleteUsers {
                user_name: Some(body.user_name),
                force_deletion: body.force_deletion,
                confirm_serial: body.confirm_serial,
            },
        )
        .await?;
    Ok(accepted(outcome, note))
}

#[utoipa::path(
    post,
    path = "/devices/{id}/users/delete-all",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    request_body = DeleteAllUsersBody,
    responses(
        (status = 202, description = "DeleteUser with DeleteAllUsers (and a UserList behind it) queued", body = orchard_core::device::shared_ipad::SharedIpadActionQueued),
        (status = 409, description = "Not a Shared iPad", body = ErrorBody)
    )
)]
pub(super) async fn delete_all_users(
    State(state): State<AppState>,
    who: Authenticated,
    Id(id): Id<DeviceId>,
    JsonBody(body): JsonBody<DeleteAllUsersBody>,
) -> Reply {
    let note = AuditNote::default().detail("force_deletion", body.force_deletion);
    let outcome = state
        .orchard
        .delete_shared_ipad_users(
            &who.principal,
            id,
            DeleteUsers {
                user_name: None,
                force_deletion: body.force_deletion,
                confirm_serial: body.confirm_serial,
            },
        )
        .await?;
    Ok(accepted(outcome, note))
}

#[utoipa::path(
    get,
    path = "/tenants/{id}/shared-ipad-policy",
    tag = "devices",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "The tenant's Shared iPad settings and its groups'", body = orchard_core::desired::shared_ipad_policy::SharedIpadPolicies))
)]
pub(super) async fn get_shared_ipad_policy(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
) -> Reply<Json<SharedIpadPolicies>> {
    Ok(Json(
        state
            .orchard
            .shared_ipad_policies(&who.principal, tenant)
            .await?,
    ))
}

#[utoipa::path(
    put,
    path = "/tenants/{id}/shared-ipad-policy",
    tag = "devices",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = orchard_core::desired::shared_ipad_policy::SharedIpadSettings,
    responses(
        (status = 200, description = "Saved; the reconciler sends each Shared iPad of the tenant its settings", body = orchard_core::desired::shared_ipad_policy::SharedIpadPolicyView)
    )
)]
pub(super) async fn put_shared_ipad_policy(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
    JsonBody(settings): JsonBody<SharedIpadSettings>,
) -> Reply {
    let saved = state
        .orchard
        .put_shared_ipad_policy(&who.principal, tenant, None, settings)
        .await?;
    let note = AuditNote::default()
        .target(tenant)
        .detail("revision", saved.revision)
        .detail(
            "settings",
            serde_json::to_value(&saved.settings).unwrap_or_default(),
        );
    Ok(noted(note, Json(saved)))
}

#[utoipa::path(
    put,
    path = "/tenants/{id}/groups/{group}/shared-ipad-policy",
    tag = "devices",
    params(("id" = String, Path, description = "Tenant id"), ("group" = String, Path, description = "Group id")),
    request_body = orchard_core::desired::shared_ipad_policy::SharedIpadSettings,
    responses(
        (status = 200, description = "Saved; its keys override the tenant's for the group's Shared iPads", body = orchard_core::desired::shared_ipad_policy::SharedIpadPolicyView)
    )
)]
pub(super) async fn put_group_shared_ipad_policy(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, group)): Id<(TenantId, GroupId)>,
    JsonBody(settings): JsonBody<SharedIpadSettings>,
) -> Reply {
    let saved = state
        .orchard
        .put_shared_ipad_policy(&who.principal, tenant, Some(group), settings)
        .await?;
    let note = AuditNote::default()
        .target(group)
        .tenant(Some(tenant))
        .detail("revision", saved.revision)
        .detail(
            "settings",
            serde_json::to_value(&saved.settings).unwrap_or_default(),
        );
    Ok(noted(note, Json(saved)))
}

#[utoipa::path(
    delete,
    path = "/tenants/{id}/groups/{group}/shared-ipad-policy",
    tag = "devices",
    params(("id" = String, Path, description = "Tenant id"), ("group" = String, Path, description = "Group id")),
    responses((status = 204, description = "Deleted: the group's keys no longer apply"))
)]
pub(super) async fn delete_group_shared_ipad_policy(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, group)): Id<(TenantId, GroupId)>,
) -> Reply {
    state
        .orchard
        .delete_shared_ipad_policy(&who.principal, tenant, Some(group))
        .await?;
    let note = AuditNote::default().target(group).tenant(Some(tenant));
    Ok(noted(note, StatusCode::NO_CONTENT))
}

#[utoipa::path(
    get,
    path = "/tenants/{id}/shared-ipad-compliance",
    tag = "devices",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "Each enrolled device against its effective Shared iPad settings", body = orchard_core::desired::shared_ipad_policy::SharedIpadComplianceReport))
)]
pub(super) async fn shared_ipad_compliance(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
) -> Reply<Json<SharedIpadComplianceReport>> {
    Ok(Json(
        state
            .orchard
            .shared_ipad_compliance(&who.principal, tenant)
            .await?,
    ))
}
