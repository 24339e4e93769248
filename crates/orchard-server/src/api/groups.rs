//! `/tenants/{id}/groups`: a tenant's device groups. Static groups take members by device id, serial list
//! (JSON) or a CSV of serials (`Content-Type: text/csv`); serials and ids the tenant does not have come back
//! in the answer. Smart groups take a filter over inventory; a bad filter answers 422 naming the field. Viewers
//! read, the tenant's admins and operators change; another tenant's groups answer like missing ones.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use orchard_core::desired::groups::{
    serials_from_csv, GroupHistoryView, GroupInput, GroupMemberView, GroupUpdate, GroupView,
    MembersInput, MembersOutcome,
};
use orchard_core::reporting::audit_actions::AuditNote;
use orchard_types::{DeviceId, GroupId, TenantId};
use serde::Deserialize;

use super::error::{ApiError, ErrorBody};
use super::extract::{AppState, Authenticated, Id, JsonBody, PageQuery, QueryString, State};
use super::reply::{noted, Created, Items, Paged, Reply};

/// The body of a membership change: JSON [`MembersInput`], or a CSV of serial numbers.
fn members_input(headers: &HeaderMap, body: &Bytes) -> Result<MembersInput, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim_start()
        .to_ascii_lowercase();
    if content_type.starts_with("text/csv") || content_type.starts_with("text/plain") {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::invalid("the CSV is not UTF-8 text"))?;
        return Ok(MembersInput {
            device_ids: Vec::new(),
            serials: serials_from_csv(text)?,
        });
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))
}

#[utoipa::path(
    get,
    path = "/tenants/{id}/groups",
    tag = "groups",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "The tenant's groups", body = Items<GroupView>))
)]
pub(super) async fn list_groups(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
) -> Reply<Json<Items<GroupView>>> {
    Ok(Items::of(
        state.orchard.list_groups(&who.principal, tenant).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/tenants/{id}/groups",
    tag = "groups",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = GroupInput,
    responses(
        (status = 201, description = "Created (a smart group with its members)", body = GroupView),
        (status = 409, description = "A group of that name exists", body = ErrorBody),
        (status = 422, description = "Invalid filter: every problem with its field", body = ErrorBody)
    )
)]
pub(super) async fn create_group(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
    JsonBody(input): JsonBody<GroupInput>,
) -> Reply {
    let group = state
        .orchard
        .create_group(&who.principal, tenant, input)
        .await?;
    let note = AuditNote::default()
        .target(&group.id)
        .detail("kind", group.kind)
        .detail("members", group.member_count);
    Ok(noted(note, Created(group)))
}

#[utoipa::path(
    get,
    path = "/tenants/{id}/groups/{group}",
    tag = "groups",
    params(("id" = String, Path, description = "Tenant id"), ("group" = String, Path, description = "Group id")),
    responses((status = 200, description = "The group", body = GroupView))
)]
pub(super) async fn group_detail(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, group)): Id<(TenantId, GroupId)>,
) -> Reply<Json<GroupView>> {
    Ok(Json(
        state
            .orchard
            .group_detail(&who.principal, tenant, group)
            .await?,
    ))
}

#[utoipa::path(
    patch,
    path = "/tenants/{id}/groups/{group}",
    tag = "groups",
    params(("id" = String, Path, description = "Tenant id"), ("group" = String, Path, description = "Group id")),
    request_body = GroupUpdate,
    responses(
        (status = 200, description = "Changed (a new filter's members recomputed)", body = GroupView),
        (status = 422, description = "Invalid filter: every problem with its field", body = ErrorBody)
    )
)]
pub(super) async fn update_group(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, group)): Id<(TenantId, GroupId)>,
    JsonBody(update): JsonBody<GroupUpdate>,
) -> Reply<Json<GroupView>> {
    Ok(Json(
        state
            .orchard
            .update_group(&who.principal, tenant, group, update)
            .await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/tenants/{id}/groups/{group}",
    tag = "groups",
    params(("id" = String, Path, description = "Tenant id"), ("group" = String, Path, description = "Group id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "An assignment names the group", body = ErrorBody)
    )
)]
pub(super) async fn delete_group(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, group)): Id<(TenantId, GroupId)>,
) -> Reply<StatusCode> {
    state
        .orchard
        .delete_group(&who.principal, tenant, group)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/tenants/{id}/groups/{group}/members",
    tag = "groups",
    params(("id" = String, Path, description = "Tenant id"), ("group" = String, Path, description = "Group id"), PageQuery),
    responses((status = 200, description = "A page of members with when they joined", body = Paged<GroupMemberView>))
)]
pub(super) async fn group_members(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, group)): Id<(TenantId, GroupId)>,
    QueryString(page): QueryString<PageQuery>,
) -> Reply<Json<Paged<GroupMemberView>>> {
    let page = page.page();
    let (items, total) = state
        .orchard
        .group_members(&who.principal, tenant, group, page.limit, page.offset)
        .await?;
    Ok(Json(Paged {
        items,
        total,
        limit: page.limit,
        offset: page.offset,
    }))
}

fn members_note(group: GroupId, outcome: &MembersOutcome) -> AuditNote {
    AuditNote::default()
        .target(group)
        .detail("changed", outcome.changed)
        .detail("unknown_serials", outcome.unknown_serials.len())
        .detail("unknown_device_ids", outcome.unknown_device_ids.len())
}

#[utoipa::path(
    post,
    path = "/tenants/{id}/groups/{group}/members",
    tag = "groups",
    params(("id" = String, Path, description = "Tenant id"), ("group" = String, Path, description = "Group id")),
    request_body(content((MembersInput = "application/json"), (String = "text/csv")), description = "Device ids and serials, or a CSV whose first column is the serial number"),
    responses(
        (status = 200, description = "Added; unknown serials and ids listed", body = MembersOutcome),
        (status = 409, description = "A smart group's members come from its filter", body = ErrorBody)
    )
)]
pub(super) async fn add_group_members(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, group)): Id<(TenantId, GroupId)>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let input = members_input(&headers, &body)?;
    let outcome = state
        .orchard
        .change_group_members(&who.principal, tenant, group, input, false)
        .await?;
    Ok(noted(members_note(group, &outcome), Json(outcome)))
}

#[utoipa::path(
    post,
    path = "/tenants/{id}/groups/{group}/members/remove",
    tag = "groups",
    params(("id" = String, Path, description = "Tenant id"), ("group" = String, Path, description = "Group id")),
    request_body(content((MembersInput = "application/json"), (String = "text/csv")), description = "Device ids and serials, or a CSV whose first column is the serial number"),
    responses((status = 200, description = "Removed; unknown serials and ids listed", body = MembersOutcome))
)]
pub(super) async fn remove_group_members(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, group)): Id<(TenantId, GroupId)>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let input = members_input(&headers, &body)?;
    let outcome = state
        .orchard
        .change_group_members(&who.principal, tenant, group, input, true)
        .await?;
    Ok(noted(members_note(group, &outcome), Json(outcome)))
}

/// History filters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    /// Only this device's joins and leaves.
    device: Option<String>,
    /// At most this many events (default 100, at most 1000).
    limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/tenants/{id}/groups/{group}/history",
    tag = "groups",
    params(("id" = String, Path, description = "Tenant id"), ("group" = String, Path, description = "Group id"), HistoryQuery),
    responses((status = 200, description = "Joins and leaves, newest first", body = Items<GroupHistoryView>))
)]
pub(super) async fn group_history(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, group)): Id<(TenantId, GroupId)>,
    QueryString(q): QueryString<HistoryQuery>,
) -> Reply<Json<Items<GroupHistoryView>>> {
    let device = q
        .device
        .as_deref()
        .map(|d| {
            DeviceId::parse(d.trim()).map_err(|_| ApiError::invalid("device is not a device id"))
        })
        .transpose()?;
    Ok(Items::of(
        state
            .orchard
            .group_history(
                &who.principal,
                tenant,
                group,
                device,
                q.limit.unwrap_or(100),
            )
            .await?,
    ))
}
