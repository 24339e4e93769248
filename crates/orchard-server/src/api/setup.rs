//! `/devices/{id}/setup`: a device's zero-touch setup state, and releasing it from Setup Assistant.

use axum::Json;
use orchard_core::enrollment::ade::SetupView;
use orchard_types::DeviceId;

use super::extract::{AppState, Authenticated, Id, State};
use super::reply::Reply;

#[utoipa::path(
    get,
    path = "/devices/{id}/setup",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "Zero-touch setup state", body = orchard_core::enrollment::ade::SetupView))
)]
pub(super) async fn device_setup(
    State(state): State<AppState>,
    who: Authenticated,
    Id(id): Id<DeviceId>,
) -> Reply<Json<SetupView>> {
    Ok(Json(
        state.orchard.device_setup_view(&who.principal, id).await?,
    ))
}

/// `POST /devices/{id}/setup/release`: sends DeviceConfigured although setup failed or is still running.
#[utoipa::path(
    post,
    path = "/devices/{id}/setup/release",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "Released", body = orchard_core::enrollment::ade::SetupView))
)]
pub(super) async fn release_setup(
    State(state): State<AppState>,
    who: Authenticated,
    Id(id): Id<DeviceId>,
) -> Reply<Json<SetupView>> {
    Ok(Json(
        state
            .orchard
            .release_device_setup(&who.principal, id)
            .await?,
    ))
}
