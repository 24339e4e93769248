//! `/tenants/{id}/apps`: Apps and Books per tenant. Its admins upload the location's content token (never
//! answered back), take a location over from another MDM with a confirmation, and sync; everyone who sees the
//! tenant sees the apps with their licence counts and the token's status (organization, location, expiry), and
//! per app each device's licence and install state.

use axum::Json;
use orchard_core::apps::installs::AppDeviceLicenceView;
use orchard_core::apps::{AppView, AppsSyncSummary, AppsTokenStatus};
use orchard_core::reporting::audit_actions::AuditNote;
use orchard_types::TenantId;
use serde::Deserialize;

use super::error::ErrorBody;
use super::extract::{AppState, Authenticated, Id, JsonBody, State};
use super::reply::{noted, Items, Reply};

/// A content token as downloaded from Apple School Manager (the `.vpptoken` file's text).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AppsTokenBody {
    content_token: String,
}

/// Taking a location over from another MDM.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TakeOverBody {
    /// The other MDM's name exactly as the token status shows it.
    confirm_other_mdm: String,
}

fn status_note(tenant: TenantId, status: &AppsTokenStatus) -> AuditNote {
    AuditNote::default()
        .tenant(Some(tenant))
        .detail("org_name", status.org_name.clone())
        .detail("claim_state", format!("{:?}", status.claim_state))
        .detail("expires_at", status.expires_at.clone())
}

#[utoipa::path(
    put,
    path = "/tenants/{id}/apps/token",
    tag = "apps",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = AppsTokenBody,
    responses(
        (status = 200, description = "Stored; the location claimed, or reported claimed elsewhere", body = AppsTokenStatus)
    )
)]
pub(super) async fn upload_apps_token(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
    JsonBody(body): JsonBody<AppsTokenBody>,
) -> Reply {
    let status = state
        .orchard
        .upload_apps_token(&who.principal, tenant, &body.content_token)
        .await?;
    Ok(noted(status_note(tenant, &status), Json(status)))
}

#[utoipa::path(
    get,
    path = "/tenants/{id}/apps/token",
    tag = "apps",
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "The token's status (never the token)", body = AppsTokenStatus)
    )
)]
pub(super) async fn apps_token_status(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
) -> Reply<Json<AppsTokenStatus>> {
    Ok(Json(
        state
            .orchard
            .apps_token_status(&who.principal, tenant)
            .await?,
    ))
}

#[utoipa::path(
    post,
    path = "/tenants/{id}/apps/token/take-over",
    tag = "apps",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = TakeOverBody,
    responses(
        (status = 200, description = "The location is now Orchard's", body = AppsTokenStatus),
        (status = 409, description = "No other MDM holds the location", body = ErrorBody)
    )
)]
pub(super) async fn take_over_apps_location(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
    JsonBody(body): JsonBody<TakeOverBody>,
) -> Reply {
    let status = state
        .orchard
        .take_over_apps_location(&who.principal, tenant, &body.confirm_other_mdm)
        .await?;
    Ok(noted(
        status_note(tenant, &status).detail("taken_from", body.confirm_other_mdm),
        Json(status),
    ))
}

#[utoipa::path(
    post,
    path = "/tenants/{id}/apps/sync",
    tag = "apps",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "Synced", body = AppsSyncSummary))
)]
pub(super) async fn sync_apps(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
) -> Reply {
    let summary = state.orchard.sync_apps(&who.principal, tenant).await?;
    Ok(noted(
        AuditNote::default()
            .tenant(Some(tenant))
            .detail("apps", summary.apps),
        Json(summary),
    ))
}

#[utoipa::path(
    get,
    path = "/tenants/{id}/apps",
    tag = "apps",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "The location's apps with total, assigned and available licences", body = Items<AppView>))
)]
pub(super) async fn list_apps(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
) -> Reply<Json<Items<AppView>>> {
    Ok(Items::of(
        state.orchard.list_apps(&who.principal, tenant).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/tenants/{id}/apps/{adam_id}/devices",
    tag = "apps",
    params(("id" = String, Path, description = "Tenant id"), ("adam_id" = String, Path, description = "The app's adamId")),
    responses((status = 200, description = "Each device's licence and install state for the app (shortage and failures with their reason)", body = Items<AppDeviceLicenceView>))
)]
pub(super) async fn app_device_licences(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, adam_id)): Id<(TenantId, String)>,
) -> Reply<Json<Items<AppDeviceLicenceView>>> {
    Ok(Items::of(
        state
            .orchard
            .app_device_licences(&who.principal, tenant, &adam_id)
            .await?,
    ))
}
