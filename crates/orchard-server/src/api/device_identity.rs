//! `/devices/{id}/identity`, `/devices/{id}/release`, `/devices/{id}/move`: a device's identity certificate
//! and who may claim the device. Reading is for everyone who sees the device; revoking the identity, releasing
//! the device for re-enrollment and moving it to another tenant are operator actions (403 for every other role
//! before anything is read), each recorded by the audit trail.

use axum::Json;
use orchard_core::enrollment::identity::{DeviceIdentityView, RevocationReason};
use orchard_core::reporting::audit_actions::AuditNote;
use orchard_types::{DeviceId, TenantId};
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::{AppState, Authenticated, Id, JsonBody, Operator, State};
use super::reply::{noted, Reply};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RevokeIdentity {
    /// retired | moved | suspected_theft
    reason: RevocationReason,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReleaseDevice {
    /// The tenant whose enrollment may claim the device; any tenant when absent.
    #[schema(value_type = Option<String>, format = Uuid)]
    tenant_id: Option<TenantId>,
    /// How long the release stays open (default 7 days, at most 30 days).
    expires_in_seconds: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MoveDevice {
    #[schema(value_type = String, format = Uuid)]
    tenant_id: TenantId,
    /// Keep the inventory the previous tenant collected (true), or delete it (false). Required: the choice is
    /// deliberate.
    keep_inventory: bool,
}

#[utoipa::path(
    get,
    path = "/devices/{id}/identity",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "The device's identity and release state", body = orchard_core::enrollment::identity::DeviceIdentityView))
)]
pub(super) async fn device_identity(
    State(state): State<AppState>,
    who: Authenticated,
    Id(id): Id<DeviceId>,
) -> Reply<Json<DeviceIdentityView>> {
    Ok(Json(
        state
            .orchard
            .device_identity_view(&who.principal, id)
            .await?,
    ))
}

/// `POST /devices/{id}/identity/revoke`: every request the device signs with its identity is refused from now
/// on (retired, moved, suspected theft). Operators only.
#[utoipa::path(
    post,
    path = "/devices/{id}/identity/revoke",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    request_body = RevokeIdentity,
    responses((status = 200, description = "Revoked", body = orchard_core::enrollment::identity::DeviceIdentityView))
)]
pub(super) async fn revoke_identity(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Id(id): Id<DeviceId>,
    JsonBody(req): JsonBody<RevokeIdentity>,
) -> Reply {
    let view = state
        .orchard
        .revoke_device_identity(&operator, id, req.reason)
        .await?;
    let note = AuditNote::default().detail("reason", req.reason.as_str());
    Ok(noted(note, Json(view)))
}

/// `POST /devices/{id}/release`: opens the device for re-enrollment by another tenant (or any) for a while; the
/// first Authenticate of such an identity moves it there. Operators only.
#[utoipa::path(
    post,
    path = "/devices/{id}/release",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    request_body = ReleaseDevice,
    responses((status = 200, description = "Released", body = orchard_core::enrollment::identity::DeviceIdentityView))
)]
pub(super) async fn release_device(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Id(id): Id<DeviceId>,
    JsonBody(req): JsonBody<ReleaseDevice>,
) -> Reply {
    let view = state
        .orchard
        .release_device_for_reenrollment(&operator, id, req.tenant_id, req.expires_in_seconds)
        .await?;
    let note = AuditNote::default()
        .detail(
            "to_tenant_id",
            req.tenant_id.map(|t| t.to_string()).unwrap_or_default(),
        )
        .detail(
            "released_until",
            view.released_until.clone().unwrap_or_default(),
        );
    Ok(noted(note, Json(view)))
}

/// `POST /devices/{id}/move`: moves the device to another tenant now (record, identity and history stay;
/// unfinished commands expire; inventory kept or deleted as asked). Operators only.
#[utoipa::path(
    post,
    path = "/devices/{id}/move",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    request_body = MoveDevice,
    responses((status = 200, description = "Moved", body = orchard_core::enrollment::identity::DeviceIdentityView))
)]
pub(super) async fn move_device(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Id(id): Id<DeviceId>,
    JsonBody(req): JsonBody<MoveDevice>,
) -> Reply {
    let (view, from) = state
        .orchard
        .move_device_to_tenant(&operator, id, req.tenant_id, req.keep_inventory)
        .await?;
    let note = AuditNote::default()
        .tenant(Some(req.tenant_id))
        .detail("from_tenant_id", from.to_string())
        .detail("to_tenant_id", req.tenant_id.to_string())
        .detail("keep_inventory", req.keep_inventory);
    Ok(noted(note, Json(view)))
}
