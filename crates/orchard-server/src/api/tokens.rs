//! `/tokens`: API tokens through the API (create: secret shown once; list; revoke).

use axum::Json;
use orchard_core::access::tokens::{NewTokenRequest, TokenView};
use orchard_core::reporting::audit_actions::AuditNote;
use orchard_types::{TenantId, TokenId};

use super::extract::{AppState, Id, JsonBody, PageQuery, QueryString, State, TokenAdmin};
use super::reply::{noted, Created, Items, Reply};

/// The tenant a token acts in, for the audit trail.
fn token_tenant(token: &TokenView) -> Option<TenantId> {
    token
        .tenant_id
        .as_deref()
        .and_then(|t| TenantId::parse(t).ok())
}

#[utoipa::path(
    post,
    path = "/tokens",
    tag = "tokens",
    request_body = orchard_core::access::tokens::NewTokenRequest,
    responses((status = 201, description = "Created; the secret is shown only now", body = orchard_core::access::tokens::CreatedTokenView))
)]
pub(super) async fn create_token(
    State(state): State<AppState>,
    TokenAdmin(manager): TokenAdmin,
    JsonBody(req): JsonBody<NewTokenRequest>,
) -> Reply {
    let created = state.orchard.create_token(&manager, req).await?;
    let note = AuditNote::default()
        .target(&created.token.id)
        .tenant(token_tenant(&created.token));
    Ok(noted(note, Created(created)))
}

#[utoipa::path(
    get,
    path = "/tokens",
    tag = "tokens",
    params(PageQuery),
    responses((status = 200, description = "Tokens in the caller's scope", body = Items<orchard_core::access::tokens::TokenView>))
)]
pub(super) async fn list_tokens(
    State(state): State<AppState>,
    TokenAdmin(manager): TokenAdmin,
    QueryString(q): QueryString<PageQuery>,
) -> Reply<Json<Items<TokenView>>> {
    let page = q.page();
    let items = state
        .orchard
        .list_tokens(&manager, page.limit, page.offset)
        .await?;
    Ok(Items::of(items))
}

/// `DELETE /tokens/{id}`: revokes (the row stays for the audit trail).
#[utoipa::path(
    delete,
    path = "/tokens/{id}",
    tag = "tokens",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 200, description = "Revoked", body = orchard_core::access::tokens::TokenView))
)]
pub(super) async fn revoke_token(
    State(state): State<AppState>,
    TokenAdmin(manager): TokenAdmin,
    Id(id): Id<TokenId>,
) -> Reply {
    let revoked = state.orchard.revoke_token(&manager, id).await?;
    let note = AuditNote::default().tenant(token_tenant(&revoked));
    Ok(noted(note, Json(revoked)))
}
