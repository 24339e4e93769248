//! `/api/v1/tokens`: API tokens through the API (create: secret shown once; list; revoke), and
//! `/api/v1/tenants/{id}`: a tenant's details (read in scope; operators edit).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use orchard_core::tenants::TenantEdit;
use orchard_core::tokens::NewTokenRequest;
use orchard_types::{TenantId, TokenId};
use serde::Deserialize;
use serde_json::json;

use crate::api::{body, json_value, parse_id, ApiError, Authenticated};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tokens", post(create_token).get(list_tokens))
        .route("/tokens/{id}", delete(revoke_token))
        .route("/tenants/{id}", get(tenant).patch(edit_tenant))
}

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

async fn create_token(
    State(state): State<AppState>,
    who: Authenticated,
    b: Result<Json<NewTokenRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(&who, b)?;
    let created = state
        .orchard
        .create_token(&who.principal, req)
        .await
        .map_err(|e| who.fail(e))?;
    Ok((StatusCode::CREATED, Json(json_value(&who, created)?)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn list_tokens(
    State(state): State<AppState>,
    who: Authenticated,
    Query(q): Query<PageQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let items = state
        .orchard
        .list_tokens(
            &who.principal,
            q.limit.unwrap_or(100),
            q.offset.unwrap_or(0),
        )
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json!({ "items": json_value(&who, items)? })))
}

/// `DELETE /tokens/{id}`: revokes (the row stays for the audit trail).
async fn revoke_token(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&who, &id, TokenId::parse)?;
    let revoked = state
        .orchard
        .revoke_token(&who.principal, id)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json_value(&who, revoked)?))
}
