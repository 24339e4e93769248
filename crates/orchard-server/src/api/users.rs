//! `/users`: the people who signed in (operators and helpdesk all; a tenant admin those of its tenant), and
//! disabling one at once (operators).

use axum::Json;
use orchard_core::access::user_admin::{UserEdit, UserView};

use super::extract::{
    AppState, Authenticated, Id, JsonBody, Overseer, PageQuery, QueryString, State,
};
use super::reply::{Items, Reply};

#[utoipa::path(
    get,
    path = "/users",
    tag = "users",
    params(PageQuery),
    responses((status = 200, description = "People in the caller's scope", body = Items<orchard_core::access::user_admin::UserView>))
)]
pub(super) async fn list_users(
    State(state): State<AppState>,
    Overseer(overseer): Overseer,
    QueryString(q): QueryString<PageQuery>,
) -> Reply<Json<Items<UserView>>> {
    let page = q.page();
    let items = state
        .orchard
        .list_users(&overseer, page.limit, page.offset)
        .await?;
    Ok(Items::of(items))
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
pub(super) async fn edit_user(
    State(state): State<AppState>,
    who: Authenticated,
    Id(id): Id<String>,
    JsonBody(edit): JsonBody<UserEdit>,
) -> Reply<Json<UserView>> {
    Ok(Json(
        state.orchard.edit_user(&who.principal, &id, edit).await?,
    ))
}
