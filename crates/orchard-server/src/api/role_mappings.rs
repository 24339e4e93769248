//! `/role-mappings` (operators): which claims of the university's identity provider give which role.

use axum::http::StatusCode;
use axum::Json;
use orchard_core::access::users::{NewRoleMapping, RoleMappingView};
use orchard_core::reporting::audit_actions::AuditNote;

use super::extract::{AppState, Id, JsonBody, Operator, State};
use super::reply::{noted, Created, Items, Reply};

#[utoipa::path(
    get,
    path = "/role-mappings",
    tag = "role-mappings",
    responses((status = 200, description = "Role mappings (operators)", body = Items<orchard_core::access::users::RoleMappingView>))
)]
pub(super) async fn list_role_mappings(
    State(state): State<AppState>,
    Operator(operator): Operator,
) -> Reply<Json<Items<RoleMappingView>>> {
    Ok(Items::of(
        state.orchard.list_role_mappings(&operator).await?,
    ))
}

/// `POST /role-mappings` {claim, value, role, tenant_id?} (operators).
#[utoipa::path(
    post,
    path = "/role-mappings",
    tag = "role-mappings",
    request_body = orchard_core::access::users::NewRoleMapping,
    responses((status = 201, description = "Created", body = orchard_core::access::users::RoleMappingView))
)]
pub(super) async fn create_role_mapping(
    State(state): State<AppState>,
    Operator(operator): Operator,
    JsonBody(req): JsonBody<NewRoleMapping>,
) -> Reply {
    let created = state.orchard.create_role_mapping(&operator, req).await?;
    let note = AuditNote::default()
        .target(&created.id)
        .tenant(created.tenant_id);
    Ok(noted(note, Created(created)))
}

/// `DELETE /role-mappings/{id}` (operators).
#[utoipa::path(
    delete,
    path = "/role-mappings/{id}",
    tag = "role-mappings",
    params(("id" = String, Path, description = "Role mapping id")),
    responses((status = 204, description = "Deleted"))
)]
pub(super) async fn delete_role_mapping(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Id(id): Id<String>,
) -> Reply<StatusCode> {
    state.orchard.delete_role_mapping(&operator, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
