//! `/api/v1/tokens`: API tokens through the API (create: secret shown once; list; revoke), and
//! `/api/v1/tenants/{id}`: a tenant's details (read in scope; operators edit).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use orchard_core::access::tokens::NewTokenRequest;
use orchard_core::tenancy::tenants::TenantEdit;
use orchard_types::{TenantId, TokenId};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{body, json_value, parse_id, ApiError, Authenticated};
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
        .routes(routes!(tenant, edit_tenant))
}

#[utoipa::path(
    get,
    path = "/tenants/{id}",
    tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "The tenant", body = orchard_core::tenancy::tenants::TenantView))
)]
async fn tenant(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&who, &id, TenantId::parse)?;
    let view = state
        .orchard
        .tenant_view(&who.principal, id)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json_value(&who, view)?))
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
async fn edit_tenant(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    b: Result<Json<TenantEdit>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&who, &id, TenantId::parse)?;
    let edit = body(&who, b)?;
    let view = state
        .orchard
        .edit_tenant(&who.principal, id, edit)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json_value(&who, view)?))
}

#[utoipa::path(
    post,
    path = "/tokens",
    tag = "tokens",
    request_body = orchard_core::access::tokens::NewTokenRequest,
    responses((status = 201, description = "Created; the secret is shown only now", body = orchard_core::access::tokens::CreatedTokenView))
)]
async fn create_token(
    State(state): State<AppState>,
    who: Authenticated,
    b: Result<Json<NewTokenRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(&who, b)?;
    let created = state
        .orchard
        .create_token(&who.token_admin()?, req)
        .await
        .map_err(|e| who.fail(e))?;
    Ok((StatusCode::CREATED, Json(json_value(&who, created)?)).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<i64>,
    offset: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/tokens",
    tag = "tokens",
    params(PageQuery),
    responses((status = 200, description = "Tokens in the caller's scope", body = crate::openapi::Items<orchard_core::access::tokens::TokenView>))
)]
async fn list_tokens(
    State(state): State<AppState>,
    who: Authenticated,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = crate::api::query(&who, q)?;
    let items = state
        .orchard
        .list_tokens(
            &who.token_admin()?,
            q.limit.unwrap_or(100),
            q.offset.unwrap_or(0),
        )
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json!({ "items": json_value(&who, items)? })))
}

/// `DELETE /tokens/{id}`: revokes (the row stays for the audit trail).
#[utoipa::path(
    delete,
    path = "/tokens/{id}",
    tag = "tokens",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 200, description = "Revoked", body = orchard_core::access::tokens::TokenView))
)]
async fn revoke_token(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&who, &id, TokenId::parse)?;
    let revoked = state
        .orchard
        .revoke_token(&who.token_admin()?, id)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json_value(&who, revoked)?))
}
