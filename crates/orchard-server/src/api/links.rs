//! `/tenants/{id}/enrollment-links`: the links that hand out a tenant's enrollment profiles.

use axum::http::StatusCode;
use axum::Json;
use orchard_core::reporting::audit_actions::AuditNote;
use orchard_core::tenancy::links::CreatedLink;
use orchard_core::tenancy::links::LinkView;
use orchard_types::{EnrollmentLinkId, TenantId};
use serde::Deserialize;

use super::extract::{AppState, Authenticated, Id, JsonBody, State};
use super::reply::{noted, Created, Items, Reply};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateLink {
    #[serde(default)]
    name: String,
    max_uses: Option<i64>,
    expires_in_seconds: Option<i64>,
}

/// `GET /tenants/{id}/enrollment-links`: the tenant's links (their secrets are never stored, only hashes).
#[utoipa::path(
    get,
    path = "/tenants/{id}/enrollment-links",
    tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "The tenant's enrollment links (not those of enrollment templates)", body = Items<orchard_core::tenancy::links::LinkView>))
)]
pub(super) async fn list_links(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
) -> Reply<Json<Items<LinkView>>> {
    let items = state
        .orchard
        .list_enrollment_links(&who.principal, tenant)
        .await?;
    Ok(Items::of(items))
}

/// `DELETE /tenants/{id}/enrollment-links/{link}`: the link stops handing out profiles now, its unused SCEP
/// challenges end and the identities it issued that never enrolled a device are revoked (their count goes to
/// the audit event); devices enrolled through it stay.
#[utoipa::path(
    delete,
    path = "/tenants/{id}/enrollment-links/{link}",
    tag = "tenants",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("link" = String, Path, description = "Enrollment link id")
    ),
    responses((status = 204, description = "Revoked"))
)]
pub(super) async fn revoke_link(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, link)): Id<(TenantId, EnrollmentLinkId)>,
) -> Reply {
    let revoked_identities = state
        .orchard
        .revoke_enrollment_link(&who.principal, tenant, link)
        .await?;
    let note = AuditNote::default().detail("revoked_identities", revoked_identities);
    Ok(noted(note, StatusCode::NO_CONTENT))
}

#[utoipa::path(
    post,
    path = "/tenants/{id}/enrollment-links",
    tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = CreateLink,
    responses((status = 201, description = "Created", body = orchard_core::tenancy::links::CreatedLink))
)]
pub(super) async fn create_link(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
    JsonBody(req): JsonBody<CreateLink>,
) -> Reply<Created<CreatedLink>> {
    let link = state
        .orchard
        .create_enrollment_link(
            &who.principal,
            tenant,
            &req.name,
            req.max_uses,
            req.expires_in_seconds,
        )
        .await?;
    Ok(Created(link))
}
