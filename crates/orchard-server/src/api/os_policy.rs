//! OS currency: a tenant's OS policy (`/tenants/{id}/os-policy`: the latest release for each model or a
//! pinned version, by a deadline), its compliance (`/tenants/{id}/os-compliance`: summary and per device) and
//! the operators' catalogue of releases per model (`/os-catalogue`, set from a document or refreshed from
//! Apple's feed).

use axum::response::IntoResponse;
use axum::Json;
use orchard_core::osupdate::catalogue::CatalogueView;
use orchard_core::osupdate::compliance::ComplianceReport;
use orchard_core::osupdate::{OsPolicyInput, OsPolicyView};
use orchard_core::reporting::audit_actions::AuditNote;
use orchard_types::TenantId;
use serde::Deserialize;

use super::error::ErrorBody;
use super::extract::{AppState, Authenticated, Id, JsonBody, Operator, QueryString, State};
use super::reply::{noted, Reply};

#[utoipa::path(
    get,
    path = "/tenants/{id}/os-policy",
    tag = "os",
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "The tenant's OS policy", body = OsPolicyView)
    )
)]
pub(super) async fn get_os_policy(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
) -> Reply<Json<OsPolicyView>> {
    Ok(Json(state.orchard.os_policy(&who.principal, tenant).await?))
}

#[utoipa::path(
    put,
    path = "/tenants/{id}/os-policy",
    tag = "os",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = OsPolicyInput,
    responses(
        (status = 200, description = "Saved; devices whose declarations changed are asked to sync, older iPads behind it get AvailableOSUpdates", body = OsPolicyView)
    )
)]
pub(super) async fn put_os_policy(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
    JsonBody(input): JsonBody<OsPolicyInput>,
) -> Reply {
    let saved = state
        .orchard
        .put_os_policy(&who.principal, tenant, input)
        .await?;
    let note = AuditNote::default()
        .target(tenant)
        .detail("target", saved.target.clone())
        .detail("version", saved.version.clone())
        .detail("deadline", saved.deadline.clone())
        .detail("revision", saved.revision);
    Ok(noted(note, Json(saved)))
}

#[utoipa::path(
    get,
    path = "/tenants/{id}/os-compliance",
    tag = "os",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "Summary and per-device state against the tenant's OS policy", body = ComplianceReport))
)]
pub(super) async fn os_compliance(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
) -> Reply<Json<ComplianceReport>> {
    Ok(Json(
        state.orchard.os_compliance(&who.principal, tenant).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/os-catalogue",
    tag = "os",
    responses((status = 200, description = "The catalogue's origin and the newest release per model (operators)", body = CatalogueView))
)]
pub(super) async fn get_os_catalogue(
    State(state): State<AppState>,
    Operator(operator): Operator,
) -> Reply<Json<CatalogueView>> {
    Ok(Json(state.orchard.os_catalogue(&operator).await?))
}

/// Where a catalogue document came from (for the audit log and the catalogue's `source`).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct CatalogueQuery {
    /// `api` (default) or `file` (the CLI uploading a file).
    source: Option<String>,
}

#[utoipa::path(
    put,
    path = "/os-catalogue",
    tag = "os",
    params(CatalogueQuery),
    request_body(content = Object, description = "Apple's feed document (PublicAssetSets.iOS[]) or {\"entries\": [{product_type, os_version, build}]}"),
    responses(
        (status = 200, description = "Replaced; tenants following the latest release are re-evaluated", body = CatalogueView)
    )
)]
pub(super) async fn put_os_catalogue(
    State(state): State<AppState>,
    Operator(operator): Operator,
    QueryString(query): QueryString<CatalogueQuery>,
    JsonBody(doc): JsonBody<serde_json::Value>,
) -> Reply {
    let source = match query.source.as_deref() {
        None | Some("api") => "api",
        Some("file") => "file",
        Some(other) => {
            return Err(super::error::ApiError::invalid(format!(
                "source {other:?}: api or file"
            )))
        }
    };
    let view = state
        .orchard
        .replace_os_catalogue(&operator, &doc, source)
        .await?;
    let note = AuditNote::default()
        .detail("revision", view.revision)
        .detail("entries", view.entries)
        .detail("source", source);
    Ok(noted(note, Json(view)))
}

#[utoipa::path(
    post,
    path = "/os-catalogue/refresh",
    tag = "os",
    responses(
        (status = 200, description = "Refreshed from the configured feed", body = CatalogueView),
        (status = 409, description = "The feed could not be read (the reason is given)", body = ErrorBody)
    )
)]
pub(super) async fn refresh_os_catalogue(
    State(state): State<AppState>,
    Operator(operator): Operator,
) -> Reply {
    let view = state.orchard.refresh_os_catalogue(&operator).await?;
    let note = AuditNote::default()
        .detail("revision", view.revision)
        .detail("entries", view.entries)
        .detail("source", view.source.clone());
    Ok(noted(note, Json(view)).into_response())
}
