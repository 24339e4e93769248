//! `/tenants/{id}/assignments`: what a tenant wants on its devices — a profile (its own or a global one) for
//! the whole tenant, groups or devices, minus exclusions. Targets must be the tenant's own; another tenant's
//! ids are refused exactly like ids that do not exist (422 naming the field). The reconciler does the rest.

use axum::http::StatusCode;
use axum::Json;
use orchard_core::desired::assignments::{AssignmentInput, AssignmentTargets, AssignmentView};
use orchard_core::reporting::audit_actions::AuditNote;
use orchard_types::{AssignmentId, TenantId};

use super::error::ErrorBody;
use super::extract::{AppState, Authenticated, Id, JsonBody, State};
use super::reply::{noted, Created, Items, Reply};

#[utoipa::path(
    get,
    path = "/tenants/{id}/assignments",
    tag = "assignments",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "The tenant's assignments", body = Items<AssignmentView>))
)]
pub(super) async fn list_assignments(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
) -> Reply<Json<Items<AssignmentView>>> {
    Ok(Items::of(
        state
            .orchard
            .list_assignments(&who.principal, tenant)
            .await?,
    ))
}

#[utoipa::path(
    post,
    path = "/tenants/{id}/assignments",
    tag = "assignments",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = AssignmentInput,
    responses(
        (status = 201, description = "Created; the reconciler queues what it calls for", body = AssignmentView),
        (status = 409, description = "The tenant assigns this object already", body = ErrorBody),
        (status = 422, description = "Unknown object, group or device (named by field)", body = ErrorBody)
    )
)]
pub(super) async fn create_assignment(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
    JsonBody(input): JsonBody<AssignmentInput>,
) -> Reply {
    let created = state
        .orchard
        .create_assignment(&who.principal, tenant, input)
        .await?;
    let note = AuditNote::default()
        .target(&created.id)
        .detail("object_kind", created.object_kind.clone())
        .detail("object_id", created.object_id.clone());
    Ok(noted(note, Created(created)))
}

#[utoipa::path(
    get,
    path = "/tenants/{id}/assignments/{assignment}",
    tag = "assignments",
    params(("id" = String, Path, description = "Tenant id"), ("assignment" = String, Path, description = "Assignment id")),
    responses((status = 200, description = "The assignment", body = AssignmentView))
)]
pub(super) async fn assignment_detail(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, id)): Id<(TenantId, AssignmentId)>,
) -> Reply<Json<AssignmentView>> {
    Ok(Json(
        state
            .orchard
            .assignment_detail(&who.principal, tenant, id)
            .await?,
    ))
}

#[utoipa::path(
    put,
    path = "/tenants/{id}/assignments/{assignment}",
    tag = "assignments",
    params(("id" = String, Path, description = "Tenant id"), ("assignment" = String, Path, description = "Assignment id")),
    request_body = AssignmentTargets,
    responses(
        (status = 200, description = "Targets replaced", body = AssignmentView),
        (status = 422, description = "Unknown group or device (named by field)", body = ErrorBody)
    )
)]
pub(super) async fn update_assignment(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, id)): Id<(TenantId, AssignmentId)>,
    JsonBody(targets): JsonBody<AssignmentTargets>,
) -> Reply<Json<AssignmentView>> {
    Ok(Json(
        state
            .orchard
            .update_assignment(&who.principal, tenant, id, targets)
            .await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/tenants/{id}/assignments/{assignment}",
    tag = "assignments",
    params(("id" = String, Path, description = "Tenant id"), ("assignment" = String, Path, description = "Assignment id")),
    responses((status = 204, description = "Deleted; the reconciler removes the object where it no longer applies"))
)]
pub(super) async fn delete_assignment(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, id)): Id<(TenantId, AssignmentId)>,
) -> Reply<StatusCode> {
    state
        .orchard
        .delete_assignment(&who.principal, tenant, id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
