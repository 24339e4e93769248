//! `/tenants`: creating and listing departments (tenants) and a tenant's details (read in scope; operators
//! edit).

use axum::Json;
use orchard_core::reporting::audit_actions::AuditNote;
use orchard_core::tenancy::tenants::{TenantEdit, TenantView};
use orchard_types::TenantId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{AppState, Authenticated, Id, JsonBody, Operator, State};
use super::reply::{noted, Created, Items, Reply};

/// A tenant as created and listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantSummary {
    pub id: String,
    pub name: String,
    pub code: String,
    pub created_at: String,
}

impl From<&orchard_store::Tenant> for TenantSummary {
    fn from(t: &orchard_store::Tenant) -> Self {
        TenantSummary {
            id: t.id.to_string(),
            name: t.name.clone(),
            code: t.code.clone(),
            created_at: t.created_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTenant {
    /// The department's name (1 to 200 characters).
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    name: String,
    /// Short code: lowercase letters, digits and dashes.
    #[schema(pattern = r"^[a-z0-9-]{1,32}$")]
    code: String,
}

#[utoipa::path(
    post,
    path = "/tenants",
    tag = "tenants",
    request_body = CreateTenant,
    responses((status = 201, description = "Created", body = TenantSummary))
)]
pub(super) async fn create_tenant(
    State(state): State<AppState>,
    Operator(operator): Operator,
    JsonBody(req): JsonBody<CreateTenant>,
) -> Reply {
    let t = state
        .orchard
        .create_tenant(&operator, &req.name, &req.code)
        .await?;
    let note = AuditNote::default().target(t.id).tenant(Some(t.id));
    Ok(noted(note, Created(TenantSummary::from(&t))))
}

#[utoipa::path(
    get,
    path = "/tenants",
    tag = "tenants",
    responses((status = 200, description = "Tenants in the caller's scope", body = Items<TenantSummary>))
)]
pub(super) async fn list_tenants(
    State(state): State<AppState>,
    who: Authenticated,
) -> Reply<Json<Items<TenantSummary>>> {
    let ts = state.orchard.list_tenants(&who.principal).await?;
    Ok(Items::of(ts.iter().map(TenantSummary::from)))
}

#[utoipa::path(
    get,
    path = "/tenants/{id}",
    tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "The tenant", body = orchard_core::tenancy::tenants::TenantView))
)]
pub(super) async fn tenant(
    State(state): State<AppState>,
    who: Authenticated,
    Id(id): Id<TenantId>,
) -> Reply<Json<TenantView>> {
    Ok(Json(state.orchard.tenant_view(&who.principal, id).await?))
}

/// `PATCH /tenants/{id}` {name?, cost_centre?, contact_name?, contact_email?} (operators; "" clears).
#[utoipa::path(
    patch,
    path = "/tenants/{id}",
    tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = orchard_core::tenancy::tenants::TenantEdit,
    responses((status = 200, description = "Edited", body = orchard_core::tenancy::tenants::TenantView))
)]
pub(super) async fn edit_tenant(
    State(state): State<AppState>,
    who: Authenticated,
    Id(id): Id<TenantId>,
    JsonBody(edit): JsonBody<TenantEdit>,
) -> Reply<Json<TenantView>> {
    Ok(Json(
        state.orchard.edit_tenant(&who.principal, id, edit).await?,
    ))
}
