//! Admin API for Automated Device Enrollment beyond the tokens: enrollment templates, assigning serials to
//! them, the DEP device list (tenant-scoped), and a device's zero-touch setup and Activation Lock state.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use orchard_core::dep::templates::{parse_serial_list, TemplateSpec};
use orchard_core::CoreError;
use orchard_store::DepListingFilter;
use orchard_types::DeviceId;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{body, json_value, parse_id, ApiError, Authenticated};
use crate::api_audit::AuditNote;
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_template, list_token_templates))
        .routes(routes!(assign))
        .routes(routes!(list_templates))
        .routes(routes!(get_template, update_template, delete_template))
        .routes(routes!(list_dep_devices))
        .routes(routes!(device_setup))
        .routes(routes!(release_setup))
        .routes(routes!(activation_lock))
        .routes(routes!(clear_activation_lock))
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
async fn create_template(
    State(state): State<AppState>,
    who: Authenticated,
    Path(token): Path<String>,
    b: Result<Json<TemplateSpec>, JsonRejection>,
) -> Result<Response, ApiError> {
    let spec = body(&who, b)?;
    let view = state
        .orchard
        .create_dep_template(&who.operator()?, &token, spec)
        .await
        .map_err(|e| who.fail(e))?;
    Ok((StatusCode::CREATED, Json(json_value(&who, view)?)).into_response())
}

#[utoipa::path(
    get,
    path = "/dep-tokens/{id}/templates",
    tag = "dep",
    params(("id" = String, Path, description = "DEP token id")),
    responses((status = 200, description = "The token's templates", body = crate::openapi::Items<orchard_core::dep::templates::TemplateView>))
)]
async fn list_token_templates(
    State(state): State<AppState>,
    who: Authenticated,
    Path(token): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let items = state
        .orchard
        .list_dep_templates(&who.principal, Some(&token))
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json!({ "items": json_value(&who, items)? })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct TemplateQuery {
    token: Option<String>,
}

/// `GET /dep-templates?token=`: templates in the caller's scope (a tenant sees those offered to it).
#[utoipa::path(
    get,
    path = "/dep-templates",
    tag = "dep",
    params(TemplateQuery),
    responses((status = 200, description = "Templates in the caller's scope", body = crate::openapi::Items<orchard_core::dep::templates::TemplateView>))
)]
async fn list_templates(
    State(state): State<AppState>,
    who: Authenticated,
    q: Result<Query<TemplateQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = crate::api::query(&who, q)?;
    let items = state
        .orchard
        .list_dep_templates(&who.principal, q.token.as_deref())
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json!({ "items": json_value(&who, items)? })))
}

#[utoipa::path(
    get,
    path = "/dep-templates/{id}",
    tag = "dep",
    params(("id" = String, Path, description = "Template id")),
    responses((status = 200, description = "The template", body = orchard_core::dep::templates::TemplateView))
)]
async fn get_template(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let view = state
        .orchard
        .get_dep_template(&who.principal, &id)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json_value(&who, view)?))
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
async fn update_template(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    b: Result<Json<TemplateSpec>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let spec = body(&who, b)?;
    let view = state
        .orchard
        .update_dep_template(&who.operator()?, &id, spec)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json_value(&who, view)?))
}

#[utoipa::path(
    delete,
    path = "/dep-templates/{id}",
    tag = "dep",
    params(("id" = String, Path, description = "Template id")),
    responses((status = 204, description = "Deleted"))
)]
async fn delete_template(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .orchard
        .delete_dep_template(&who.operator()?, &id)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Serials as a list, or as text (one per line, or a CSV export with a serial column). `template_id` null
/// removes the assignment.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AssignBody {
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
async fn assign(
    State(state): State<AppState>,
    who: Authenticated,
    Path(token): Path<String>,
    b: Result<Json<AssignBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req = body(&who, b)?;
    let mut serials = req.serials;
    if let Some(csv) = &req.csv {
        serials.extend(parse_serial_list(csv).map_err(|e| who.fail(e))?);
    }
    if serials.len() > 100_000 {
        return Err(who.fail(CoreError::Invalid(
            "at most 100,000 serials per request".into(),
        )));
    }
    let summary = state
        .orchard
        .assign_dep_devices(
            &who.operator()?,
            &token,
            &serials,
            req.template_id.as_deref(),
        )
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json_value(&who, summary)?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DepDeviceQuery {
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
    responses((status = 200, description = "DEP devices in the caller's scope", body = crate::openapi::Counted<orchard_core::dep::templates::DepDeviceListingView>))
)]
async fn list_dep_devices(
    State(state): State<AppState>,
    who: Authenticated,
    q: Result<Query<DepDeviceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = crate::api::query(&who, q)?;
    let filter = DepListingFilter {
        token_id: q.token.as_deref(),
        template_id: q.template.as_deref(),
        only_active: !q.include_deleted,
    };
    let (items, total) = state
        .orchard
        .list_dep_device_listings(
            &who.principal,
            filter,
            q.limit.unwrap_or(100),
            q.offset.unwrap_or(0),
        )
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(
        json!({ "items": json_value(&who, items)?, "total": total }),
    ))
}

#[utoipa::path(
    get,
    path = "/devices/{id}/setup",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "Zero-touch setup state", body = orchard_core::enrollment::ade::SetupView))
)]
async fn device_setup(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&who, &id, DeviceId::parse)?;
    let view = state
        .orchard
        .device_setup_view(&who.principal, id)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json_value(&who, view)?))
}

/// `POST /devices/{id}/setup/release`: sends DeviceConfigured although setup failed or is still running.
#[utoipa::path(
    post,
    path = "/devices/{id}/setup/release",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "Released", body = orchard_core::enrollment::ade::SetupView))
)]
async fn release_setup(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&who, &id, DeviceId::parse)?;
    let view = state
        .orchard
        .release_device_setup(&who.principal, id)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json_value(&who, view)?))
}

#[utoipa::path(
    get,
    path = "/devices/{id}/activation-lock",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "Activation Lock bypass escrow", body = orchard_core::enrollment::ade::ActivationLockView))
)]
async fn activation_lock(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&who, &id, DeviceId::parse)?;
    let view = state
        .orchard
        .activation_lock_view(&who.principal, id)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json_value(&who, view)?))
}

/// `POST /devices/{id}/activation-lock/clear`: asks Apple to clear the device's Activation Lock with its escrowed
/// bypass code (operators and the device tenant's admins). 200 with the outcome when Apple cleared it; 502
/// `activation_lock_not_cleared` with Apple's status and reason (and the outcome) when Apple refused every code
/// or could not be reached, because the failure is upstream and a retry may succeed; 409 when Orchard cannot
/// ask at all (no escrowed code, no push certificate, serial or product type unknown).
#[utoipa::path(
    post,
    path = "/devices/{id}/activation-lock/clear",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "Cleared", body = orchard_core::device::activation_lock::ClearOutcome), (status = 502, description = "Apple refused or could not be reached", body = crate::openapi::ActivationLockNotCleared))
)]
async fn clear_activation_lock(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&who, &id, DeviceId::parse)?;
    let outcome = state
        .orchard
        .clear_activation_lock(&who.principal, id)
        .await
        .map_err(|e| who.fail(e))?;
    let attempts: Vec<serde_json::Value> = outcome
        .attempts
        .iter()
        .map(|a| json!({"code": a.code, "guid": a.guid, "result": a.result, "status": a.status}))
        .collect();
    let note = AuditNote {
        action: Some("device.activation_lock.clear".into()),
        tenant_id: Some(outcome.tenant_id),
        target: Some(id.to_string()),
        details: json!({"cleared": outcome.cleared, "attempts": attempts}),
    };
    let body = json_value(&who, &outcome)?;
    let response = match outcome.failure_reason() {
        None => (StatusCode::OK, Json(body)).into_response(),
        Some(reason) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({
                "error": {
                    "code": "activation_lock_not_cleared",
                    "message": reason,
                    "request_id": who.request_id,
                },
                "outcome": body,
            })),
        )
            .into_response(),
    };
    Ok(note.attach(response))
}
