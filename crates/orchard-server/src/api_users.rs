//! `/api/v1/users`: the people who signed in (operators and helpdesk all; a tenant admin those of its tenant),
//! and disabling one at once (operators).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use orchard_core::access::user_admin::UserEdit;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{body, json_value, ApiError, Authenticated};
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(edit_user))
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
    path = "/users",
    tag = "users",
    params(PageQuery),
    responses((status = 200, description = "People in the caller's scope", body = crate::openapi::Items<orchard_core::access::user_admin::UserView>))
)]
async fn list_users(
    State(state): State<AppState>,
    who: Authenticated,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = crate::api::query(&who, q)?;
    let items = state
        .orchard
        .list_users(
            &who.oversight()?,
            q.limit.unwrap_or(100),
            q.offset.unwrap_or(0),
        )
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json!({ "items": json_value(&who, items)? })))
}

/// `PATCH /users/{id}` {"disabled": true|false}.
#[utoipa::path(
    patch,
    path = "/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = "User id")),
    request_body = UserEdit,
    responses((status = 200, description = "Edited", body = orchard_core::access::user_admin::UserView))
)]
async fn edit_user(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    b: Result<Json<UserEdit>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let edit = body(&who, b)?;
    let view = state
        .orchard
        .edit_user(&who.principal, &id, edit)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json_value(&who, view)?))
}
