//! `/maintenance`: planned-maintenance notices. Every signed-in caller reads the ones in force or announced;
//! operators publish and withdraw them.

use axum::http::StatusCode;
use axum::Json;
use orchard_core::reporting::audit_actions::AuditNote;
use orchard_core::tenancy::maintenance::{MaintenanceNoticeView, NewMaintenanceNotice};
use orchard_types::MaintenanceNoticeId;

use super::extract::{AppState, Authenticated, Id, JsonBody, Operator, State};
use super::reply::{noted, Created, Items, Reply};

#[utoipa::path(
    get,
    path = "/maintenance",
    tag = "maintenance",
    responses((status = 200, description = "Notices whose window has not ended, soonest first", body = Items<MaintenanceNoticeView>))
)]
pub(super) async fn list_notices(
    State(state): State<AppState>,
    who: Authenticated,
) -> Reply<Json<Items<MaintenanceNoticeView>>> {
    let notices = state.orchard.maintenance_notices(&who.principal).await?;
    Ok(Items::of(notices))
}

#[utoipa::path(
    post,
    path = "/maintenance",
    tag = "maintenance",
    request_body = NewMaintenanceNotice,
    responses((status = 201, description = "Published", body = MaintenanceNoticeView))
)]
pub(super) async fn publish_notice(
    State(state): State<AppState>,
    Operator(operator): Operator,
    JsonBody(new): JsonBody<NewMaintenanceNotice>,
) -> Reply {
    let notice = state
        .orchard
        .publish_maintenance_notice(&operator, &new)
        .await?;
    let note = AuditNote::default().target(&notice.id);
    Ok(noted(note, Created(notice)))
}

#[utoipa::path(
    delete,
    path = "/maintenance/{id}",
    tag = "maintenance",
    params(("id" = String, Path, description = "Notice id")),
    responses((status = 204, description = "Withdrawn"))
)]
pub(super) async fn withdraw_notice(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Id(id): Id<MaintenanceNoticeId>,
) -> Reply<StatusCode> {
    state
        .orchard
        .withdraw_maintenance_notice(&operator, id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
