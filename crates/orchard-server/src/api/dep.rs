//! Automated Device Enrollment (operators manage, tenants see theirs): DEP server tokens (`/dep-tokens`),
//! enrollment templates and assigning serials to them, and the DEP device list (tenant-scoped).

use axum::http::StatusCode;

use axum::Json;
use orchard_core::dep::templates::{
    parse_serial_list, AssignmentSummary, DepDeviceListingView, TemplateSpec, TemplateView,
};
use orchard_core::dep::{DepSyncSummary, DepTokenStatus};
use orchard_core::reporting::audit_actions::AuditNote;
use orchard_store::DepListingFilter;
use orchard_types::TenantId;
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{
    AppState, Authenticated, Id, JsonBody, Operator, PageQuery, QueryString, State,
};
use super::reply::{noted, Counted, Created, Items, Reply};

/// The tenant a template serves, for the audit trail.
fn template_note(view: &TemplateView) -> AuditNote {
    AuditNote::default().tenant(TenantId::parse(&view.tenant_id).ok())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateDepToken {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    name: String,
}

/// `POST /dep-tokens` {name}: a key pair for a new ASM MDM server; answers {id, certificate_pem} (upload the
/// certificate to ASM).
#[utoipa::path(
    post,
    path = "/dep-tokens",
    tag = "dep",
    request_body = CreateDepToken,
    responses((status = 201, description = "Key pair made; upload the certificate to ASM", body = orchard_core::dep::CreatedDepToken))
)]
pub(super) async fn create_dep_token(
    State(state): State<AppState>,
    Operator(operator): Operator,
    JsonBody(req): JsonBody<CreateDepToken>,
) -> Reply {
    let created = state.orchard.create_dep_token(&operator, &req.name).await?;
    let note = AuditNote::default().target(&created.id);
    Ok(noted(note, Created(created)))
}

#[utoipa::path(
    get,
    path = "/dep-tokens",
    tag = "dep",
    responses((status = 200, description = "DEP server tokens", body = Items<orchard_core::dep::DepTokenStatus>))
)]
pub(super) async fn list_dep_tokens(
    State(state): State<AppState>,
    Operator(operator): Operator,
) -> Reply<Json<Items<DepTokenStatus>>> {
    Ok(Items::of(state.orchard.list_dep_tokens(&operator).await?))
}

/// The `.p7m` server token downloaded from ASM, base64 (the file as is).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DepTokenBody {
    p7m_base64: String,
}

#[utoipa::path(
    put,
    path = "/dep-tokens/{id}/token",
    tag = "dep",
    params(("id" = String, Path, description = "DEP token id")),
    request_body = DepTokenBody,
    responses((status = 200, description = "Installed", body = orchard_core::dep::DepTokenStatus))
)]
pub(super) async fn upload_dep_token(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Id(id): Id<String>,
    JsonBody(req): JsonBody<DepTokenBody>,
) -> Reply<Json<DepTokenStatus>> {
    use base64::Engine;
    // Who may upload is decided (by the extractor) before what was uploaded is looked at.
    let p7m = base64::engine::general_purpose::STANDARD
        .decode(req.p7m_base64.trim())
        .map_err(|_| ApiError::invalid("p7m_base64 is not base64"))?;
    Ok(Json(
        state.orchard.upload_dep_token(&operator, &id, &p7m).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/dep-tokens/{id}/sync",
    tag = "dep",
    params(("id" = String, Path, description = "DEP token id")),
    responses((status = 200, description = "What the sync did", body = orchard_core::dep::DepSyncSummary))
)]
pub(super) async fn sync_dep_token(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Id(id): Id<String>,
) -> Reply<Json<DepSyncSummary>> {
    Ok(Json(state.orchard.sync_dep_token(&operator, &id).await?))
}

/// `POST /dep-tokens/{id}/templates`: a new enrollment template on that token (operators).
#[utoipa::path(
    post,
    path = "/dep-tokens/{id}/templates",
    tag = "dep",
    params(("id" = String, Path, description = "DEP token id")),
    request_body = orchard_core::dep::templates::TemplateSpec,
    responses((status = 201, description = "Created", body = orchard_core::dep::templates::TemplateView))
)]
pub(super) async fn create_template(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Id(token): Id<String>,
    JsonBody(spec): JsonBody<TemplateSpec>,
) -> Reply {
    let view = state
        .orchard
        .create_dep_template(&operator, &token, spec)
        .await?;
    Ok(noted(template_note(&view), Created(view)))
}

#[utoipa::path(
    get,
    path = "/dep-tokens/{id}/templates",
    tag = "dep",
    params(("id" = String, Path, description = "DEP token id")),
    responses((status = 200, description = "The token's templates", body = Items<orchard_core::dep::templates::TemplateView>))
)]
pub(super) async fn list_token_templates(
    State(state): State<AppState>,
    who: Authenticated,
    Id(token): Id<String>,
) -> Reply<Json<Items<TemplateView>>> {
    let items = state
        .orchard
        .list_dep_templates(&who.principal, Some(&token))
        .await?;
    Ok(Items::of(items))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct TemplateQuery {
    token: Option<String>,
}

/// `GET /dep-templates?token=`: templates in the caller's scope (a tenant sees those offered to it).
#[utoipa::path(
    get,
    path = "/dep-templates",
    tag = "dep",
    params(TemplateQuery),
    responses((status = 200, description = "Templates in the caller's scope", body = Items<orchard_core::dep::templates::TemplateView>))
)]
pub(super) async fn list_templates(
    State(state): State<AppState>,
    who: Authenticated,
    QueryString(q): QueryString<TemplateQuery>,
) -> Reply<Json<Items<TemplateView>>> {
    let items = state
        .orchard
        .list_dep_templates(&who.principal, q.token.as_deref())
        .await?;
    Ok(Items::of(items))
}

#[utoipa::path(
    get,
    path = "/dep-templates/{id}",
    tag = "dep",
    params(("id" = String, Path, description = "Template id")),
    responses((status = 200, description = "The template", body = orchard_core::dep::templates::TemplateView))
)]
pub(super) async fn get_template(
    State(state): State<AppState>,
    who: Authenticated,
    Id(id): Id<String>,
) -> Reply<Json<TemplateView>> {
    Ok(Json(
        state.orchard.get_dep_template(&who.principal, &id).await?,
    ))
}

/// `PUT /dep-templates/{id}`: replaces the template; its profile is defined again at Apple.
#[utoipa::path(
    put,
    path = "/dep-templates/{id}",
    tag = "dep",
    params(("id" = String, Path, description = "Template id")),
    request_body = orchard_core::dep::templates::TemplateSpec,
    responses((status = 200, description = "Replaced", body = orchard_core::dep::templates::TemplateView))
)]
pub(super) async fn update_template(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Id(id): Id<String>,
    JsonBody(spec): JsonBody<TemplateSpec>,
) -> Reply {
    let view = state
        .orchard
        .update_dep_template(&operator, &id, spec)
        .await?;
    Ok(noted(template_note(&view), Json(view)))
}

#[utoipa::path(
    delete,
    path = "/dep-templates/{id}",
    tag = "dep",
    params(("id" = String, Path, description = "Template id")),
    responses((status = 204, description = "Deleted"))
)]
pub(super) async fn delete_template(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Id(id): Id<String>,
) -> Reply<StatusCode> {
    state.orchard.delete_dep_template(&operator, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Serials as a list, or as text (one per line, or a CSV export with a serial column). `template_id` null
/// removes the assignment.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AssignBody {
    #[serde(default)]
    serials: Vec<String>,
    #[serde(default)]
    csv: Option<String>,
    template_id: Option<String>,
}

/// `POST /dep-tokens/{id}/assignments`: assigns serials to a template (the device's tenant follows) and tells
/// Apple; answers what changed and Apple's answers.
#[utoipa::path(
    post,
    path = "/dep-tokens/{id}/assignments",
    tag = "dep",
    params(("id" = String, Path, description = "DEP token id")),
    request_body = AssignBody,
    responses((status = 200, description = "What changed and Apple's answers", body = orchard_core::dep::templates::AssignmentSummary))
)]
pub(super) async fn assign(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Id(token): Id<String>,
    JsonBody(req): JsonBody<AssignBody>,
) -> Reply<Json<AssignmentSummary>> {
    let mut serials = req.serials;
    if let Some(csv) = &req.csv {
        serials.extend(parse_serial_list(csv)?);
    }
    if serials.len() > 100_000 {
        return Err(ApiError::invalid("at most 100,000 serials per request"));
    }
    Ok(Json(
        state
            .orchard
            .assign_dep_devices(&operator, &token, &serials, req.template_id.as_deref())
            .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct DepDeviceQuery {
    token: Option<String>,
    template: Option<String>,
    #[serde(default)]
    include_deleted: bool,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// `GET /dep-devices?token=&template=&include_deleted=&limit=&offset=`: operators and helpdesk see every
/// serial; a tenant the serials assigned to its templates, enrolled or not yet.
#[utoipa::path(
    get,
    path = "/dep-devices",
    tag = "dep",
    params(DepDeviceQuery),
    responses((status = 200, description = "DEP devices in the caller's scope", body = Counted<orchard_core::dep::templates::DepDeviceListingView>))
)]
pub(super) async fn list_dep_devices(
    State(state): State<AppState>,
    who: Authenticated,
    QueryString(q): QueryString<DepDeviceQuery>,
) -> Reply<Json<Counted<DepDeviceListingView>>> {
    let filter = DepListingFilter {
        token_id: q.token.as_deref(),
        template_id: q.template.as_deref(),
        only_active: !q.include_deleted,
    };
    let page = PageQuery {
        limit: q.limit,
        offset: q.offset,
    }
    .page();
    let (items, total) = state
        .orchard
        .list_dep_device_listings(&who.principal, filter, page.limit, page.offset)
        .await?;
    Ok(Json(Counted { items, total }))
}
