//! `/devices`: finding devices, a device's details, and asking a device to check in now.

use axum::http::StatusCode;
use axum::Json;
use orchard_core::device::views::{DeviceDetail, DeviceView};
use orchard_types::{DeviceId, TenantId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{AppState, Authenticated, Id, PageQuery, QueryString, State};
use super::reply::{Paged, Reply};

/// How many channels (device and users) of the device were asked to check in.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushQueued {
    pub channels: u64,
}

/// `GET /devices` filters: `tenant`, `model`, `os_version` (exact, or a prefix ending in "."), `state`,
/// `last_seen_before` / `last_seen_after` (unix seconds, RFC 3339 or a day), `identity_expires_before` (same
/// forms: devices whose identity certificate runs out before then), `group` (members of a device group),
/// `q` (name, serial, UDID, model),
/// `sort` (enrolled_at | last_seen | name | serial | os_version | model), `order` (asc | desc), `limit`, `offset`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct DeviceListQuery {
    limit: Option<i64>,
    offset: Option<i64>,
    tenant: Option<String>,
    model: Option<String>,
    os_version: Option<String>,
    state: Option<String>,
    last_seen_before: Option<String>,
    last_seen_after: Option<String>,
    identity_expires_before: Option<String>,
    /// Members of this device group.
    group: Option<String>,
    q: Option<String>,
    sort: Option<String>,
    order: Option<String>,
}

impl DeviceListQuery {
    fn to_query(&self) -> Result<orchard_store::DeviceQuery, ApiError> {
        let invalid = ApiError::invalid;
        let time = |v: &Option<String>, end: bool| -> Result<_, ApiError> {
            Ok(v.as_deref()
                .map(|s| orchard_core::reporting::audit::parse_time_bound(s, end))
                .transpose()?)
        };
        Ok(orchard_store::DeviceQuery {
            // A malformed tenant id names no tenant: like any tenant the caller cannot see, it matches nothing.
            tenant_id: self.tenant.as_deref().map(|t| {
                TenantId::parse(t).unwrap_or_else(|_| TenantId::from_uuid(uuid::Uuid::nil()))
            }),
            model: self.model.clone(),
            os_version: self.os_version.clone(),
            state: self
                .state
                .as_deref()
                .map(|s| {
                    orchard_types::EnrollmentState::parse(s).ok_or_else(|| {
                        invalid(format!("state {s:?}: pending, enrolled or unenrolled"))
                    })
                })
                .transpose()?,
            last_seen_before: time(&self.last_seen_before, false)?,
            last_seen_after: time(&self.last_seen_after, false)?,
            identity_expires_before: time(&self.identity_expires_before, false)?,
            group_id: self
                .group
                .as_deref()
                .map(|g| {
                    orchard_types::GroupId::parse(g.trim())
                        .map_err(|_| invalid(format!("group {g:?} is not a group id")))
                })
                .transpose()?,
            text: self.q.clone(),
            sort: match self.sort.as_deref() {
                None => orchard_store::DeviceSort::default(),
                Some(s) => orchard_store::DeviceSort::parse(s).ok_or_else(|| {
                    invalid(format!(
                        "sort {s:?}: enrolled_at, last_seen, name, serial, os_version or model"
                    ))
                })?,
            },
            descending: match self.order.as_deref() {
                None | Some("asc") => false,
                Some("desc") => true,
                Some(o) => return Err(invalid(format!("order {o:?}: asc or desc"))),
            },
        })
    }
}

#[utoipa::path(
    get,
    path = "/devices",
    tag = "devices",
    params(DeviceListQuery),
    responses((status = 200, description = "A page of devices", body = Paged<orchard_core::device::views::DeviceView>))
)]
pub(super) async fn list_devices(
    State(state): State<AppState>,
    who: Authenticated,
    QueryString(q): QueryString<DeviceListQuery>,
) -> Reply<Json<Paged<DeviceView>>> {
    let page = PageQuery {
        limit: q.limit,
        offset: q.offset,
    }
    .page();
    let query = q.to_query()?;
    let (devices, total) = state
        .orchard
        .search_devices(&who.principal, &query, page)
        .await?;
    Ok(Json(Paged {
        items: devices.iter().map(DeviceView::from).collect(),
        total,
        limit: page.limit,
        offset: page.offset,
    }))
}

#[utoipa::path(
    get,
    path = "/devices/{id}",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "The device with channels and inventory", body = orchard_core::device::views::DeviceDetail))
)]
pub(super) async fn device_detail(
    State(state): State<AppState>,
    who: Authenticated,
    Id(id): Id<DeviceId>,
) -> Reply<Json<DeviceDetail>> {
    Ok(Json(state.orchard.device_detail(&who.principal, id).await?))
}

#[utoipa::path(
    post,
    path = "/devices/{id}/push",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 202, description = "Pushes queued", body = PushQueued))
)]
pub(super) async fn push_device(
    State(state): State<AppState>,
    who: Authenticated,
    Id(id): Id<DeviceId>,
) -> Reply<(StatusCode, Json<PushQueued>)> {
    let channels = state.orchard.push_device(&who.principal, id).await?;
    Ok((StatusCode::ACCEPTED, Json(PushQueued { channels })))
}
