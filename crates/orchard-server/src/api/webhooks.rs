//! `/tenants/{id}/webhooks` and `/webhooks`: signed webhook endpoints. A tenant's admins (and operators) manage
//! the tenant's endpoints, which receive only its events; operators manage the global ones (every event). The
//! secret is in the creation's answer only. Each endpoint's delivery log shows recent deliveries with their
//! attempts, status codes and next try.

use axum::http::StatusCode;
use axum::Json;
use orchard_core::reporting::audit_actions::AuditNote;
use orchard_core::webhooks::{
    CreatedWebhook, NewWebhook, WebhookDeliveryView, WebhookPatch, WebhookView,
};
use orchard_types::{TenantId, WebhookId};

use super::extract::{AppState, Authenticated, Id, JsonBody, Operator, State};
use super::reply::{noted, Created, Items, Reply};

fn created_note(created: &CreatedWebhook) -> AuditNote {
    AuditNote::default()
        .target(&created.webhook.id)
        .detail("url", created.webhook.url.clone())
        .detail("event_types", created.webhook.event_types.clone())
}

#[utoipa::path(
    get,
    path = "/tenants/{id}/webhooks",
    tag = "webhooks",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "The tenant's endpoints (admins)", body = Items<WebhookView>))
)]
pub(super) async fn list_tenant_webhooks(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
) -> Reply<Json<Items<WebhookView>>> {
    Ok(Items::of(
        state
            .orchard
            .list_tenant_webhooks(&who.principal, tenant)
            .await?,
    ))
}

#[utoipa::path(
    post,
    path = "/tenants/{id}/webhooks",
    tag = "webhooks",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = NewWebhook,
    responses((status = 201, description = "Created; the secret is shown this once", body = CreatedWebhook))
)]
pub(super) async fn create_tenant_webhook(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
    JsonBody(new): JsonBody<NewWebhook>,
) -> Reply {
    let created = state
        .orchard
        .create_tenant_webhook(&who.principal, tenant, &new)
        .await?;
    Ok(noted(created_note(&created), Created(created)))
}

#[utoipa::path(
    get,
    path = "/tenants/{id}/webhooks/{webhook}",
    tag = "webhooks",
    params(("id" = String, Path, description = "Tenant id"), ("webhook" = String, Path, description = "Webhook id")),
    responses((status = 200, description = "The endpoint", body = WebhookView))
)]
pub(super) async fn tenant_webhook(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, id)): Id<(TenantId, WebhookId)>,
) -> Reply<Json<WebhookView>> {
    Ok(Json(
        state
            .orchard
            .tenant_webhook(&who.principal, tenant, id)
            .await?,
    ))
}

#[utoipa::path(
    patch,
    path = "/tenants/{id}/webhooks/{webhook}",
    tag = "webhooks",
    params(("id" = String, Path, description = "Tenant id"), ("webhook" = String, Path, description = "Webhook id")),
    request_body = WebhookPatch,
    responses((status = 200, description = "Changed", body = WebhookView))
)]
pub(super) async fn update_tenant_webhook(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, id)): Id<(TenantId, WebhookId)>,
    JsonBody(patch): JsonBody<WebhookPatch>,
) -> Reply<Json<WebhookView>> {
    Ok(Json(
        state
            .orchard
            .update_tenant_webhook(&who.principal, tenant, id, &patch)
            .await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/tenants/{id}/webhooks/{webhook}",
    tag = "webhooks",
    params(("id" = String, Path, description = "Tenant id"), ("webhook" = String, Path, description = "Webhook id")),
    responses((status = 204, description = "Deleted with its delivery log"))
)]
pub(super) async fn delete_tenant_webhook(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, id)): Id<(TenantId, WebhookId)>,
) -> Reply<StatusCode> {
    state
        .orchard
        .delete_tenant_webhook(&who.principal, tenant, id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/tenants/{id}/webhooks/{webhook}/deliveries",
    tag = "webhooks",
    params(("id" = String, Path, description = "Tenant id"), ("webhook" = String, Path, description = "Webhook id")),
    responses((status = 200, description = "Recent deliveries, newest first, with their attempts", body = Items<WebhookDeliveryView>))
)]
pub(super) async fn tenant_webhook_deliveries(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, id)): Id<(TenantId, WebhookId)>,
) -> Reply<Json<Items<WebhookDeliveryView>>> {
    Ok(Items::of(
        state
            .orchard
            .tenant_webhook_deliveries(&who.principal, tenant, id)
            .await?,
    ))
}

#[utoipa::path(
    get,
    path = "/webhooks",
    tag = "webhooks",
    responses((status = 200, description = "The global endpoints (operators)", body = Items<WebhookView>))
)]
pub(super) async fn list_global_webhooks(
    State(state): State<AppState>,
    Operator(operator): Operator,
) -> Reply<Json<Items<WebhookView>>> {
    Ok(Items::of(
        state.orchard.list_global_webhooks(&operator).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/webhooks",
    tag = "webhooks",
    request_body = NewWebhook,
    responses((status = 201, description = "Created; the secret is shown this once", body = CreatedWebhook))
)]
pub(super) async fn create_global_webhook(
    State(state): State<AppState>,
    Operator(operator): Operator,
    JsonBody(new): JsonBody<NewWebhook>,
) -> Reply {
    let created = state.orchard.create_global_webhook(&operator, &new).await?;
    Ok(noted(created_note(&created), Created(created)))
}

#[utoipa::path(
    get,
    path = "/webhooks/{webhook}",
    tag = "webhooks",
    params(("webhook" = String, Path, description = "Webhook id")),
    responses((status = 200, description = "The endpoint", body = WebhookView))
)]
pub(super) async fn global_webhook(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Id(id): Id<WebhookId>,
) -> Reply<Json<WebhookView>> {
    Ok(Json(state.orchard.global_webhook(&operator, id).await?))
}

#[utoipa::path(
    patch,
    path = "/webhooks/{webhook}",
    tag = "webhooks",
    params(("webhook" = String, Path, description = "Webhook id")),
    request_body = WebhookPatch,
    responses((status = 200, description = "Changed", body = WebhookView))
)]
pub(super) async fn update_global_webhook(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Id(id): Id<WebhookId>,
    JsonBody(patch): JsonBody<WebhookPatch>,
) -> Reply<Json<WebhookView>> {
    Ok(Json(
        state
            .orchard
            .update_global_webhook(&operator, id, &patch)
            .await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/webhooks/{webhook}",
    tag = "webhooks",
    params(("webhook" = String, Path, description = "Webhook id")),
    responses((status = 204, description = "Deleted with its delivery log"))
)]
pub(super) async fn delete_global_webhook(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Id(id): Id<WebhookId>,
) -> Reply<StatusCode> {
    state.orchard.delete_global_webhook(&operator, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/webhooks/{webhook}/deliveries",
    tag = "webhooks",
    params(("webhook" = String, Path, description = "Webhook id")),
    responses((status = 200, description = "Recent deliveries, newest first, with their attempts", body = Items<WebhookDeliveryView>))
)]
pub(super) async fn global_webhook_deliveries(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Id(id): Id<WebhookId>,
) -> Reply<Json<Items<WebhookDeliveryView>>> {
    Ok(Items::of(
        state
            .orchard
            .global_webhook_deliveries(&operator, id)
            .await?,
    ))
}
