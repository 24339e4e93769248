//! `/devices/{id}/declarations`: a device's declarative management per channel — the declarations Orchard
//! holds for it, and the device's status of each (active, valid, reasons) from its status reports.

use axum::Json;
use orchard_core::declarative::DeviceDeclarations;
use orchard_types::DeviceId;

use super::extract::{AppState, Authenticated, Id, State};
use super::reply::Reply;

#[utoipa::path(
    get,
    path = "/devices/{id}/declarations",
    tag = "declarative",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "The device's declarations per channel with its status of each", body = DeviceDeclarations))
)]
pub(super) async fn device_declarations(
    State(state): State<AppState>,
    who: Authenticated,
    Id(id): Id<DeviceId>,
) -> Reply<Json<DeviceDeclarations>> {
    Ok(Json(
        state
            .orchard
            .device_declarations(&who.principal, id)
            .await?,
    ))
}
