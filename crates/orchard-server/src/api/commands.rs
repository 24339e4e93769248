//! `/devices/{id}/commands` and `/commands/bulk`: queueing MDM commands for one device or many, and a device's
//! command history.

use axum::response::IntoResponse;
use axum::Json;
use orchard_core::commands::policy::{BulkOutcome, BulkTarget};
use orchard_core::commands::queue::CommandView;
use orchard_core::reporting::audit_actions::AuditNote;
use orchard_protocol::commands::Command;
use orchard_types::{DeviceId, TenantId};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{AppState, Authenticated, Id, JsonBody, PageQuery, QueryString, State};
use super::reply::{noted, Created, Items, Reply};

/// A command as the API takes it: the typed command (`type` and its fields) plus, for dangerous commands
/// (EraseDevice, ClearPasscode, DeleteUser, removing management), `confirm_serial` = the device's serial.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct QueueCommandBody {
    #[serde(flatten)]
    #[schema(value_type = orchard_core::api_schema::CommandSchema)]
    command: Command,
    /// The device's serial number: required for EraseDevice, ClearPasscode, DeleteUser and removing management.
    #[serde(default)]
    confirm_serial: Option<String>,
}

/// The unlock token of ClearPasscode comes from the device's escrow, never from the caller.
fn refuse_caller_unlock_token(command: &Command) -> Result<(), ApiError> {
    if let Command::ClearPasscode {
        unlock_token: Some(_),
    } = command
    {
        return Err(ApiError::invalid(
            "unlock_token is filled in by Orchard from the device's escrow",
        ));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/devices/{id}/commands",
    tag = "commands",
    params(("id" = String, Path, description = "Device id")),
    request_body = QueueCommandBody,
    responses((status = 201, description = "Queued", body = orchard_core::commands::queue::CommandView))
)]
pub(super) async fn queue_command(
    State(state): State<AppState>,
    who: Authenticated,
    Id(id): Id<DeviceId>,
    JsonBody(body): JsonBody<QueueCommandBody>,
) -> Reply {
    let QueueCommandBody {
        command,
        confirm_serial,
    } = body;
    refuse_caller_unlock_token(&command)?;
    let record = state
        .orchard
        .queue_confirmed_command(&who.principal, id, command, confirm_serial.as_deref())
        .await?;
    let view = state.orchard.command_view(&who.principal, &record);
    let note = AuditNote::default()
        .detail("request_type", view.request_type.clone())
        .detail("command_uuid", view.command_uuid.clone());
    Ok(noted(note, Created(view)))
}

#[utoipa::path(
    get,
    path = "/devices/{id}/commands",
    tag = "commands",
    params(("id" = String, Path, description = "Device id"), PageQuery),
    responses((status = 200, description = "Commands, newest first; a result holding a secret (an Activation Lock bypass code) only for operators and the tenant's admins, otherwise `result_redacted`", body = Items<orchard_core::commands::queue::CommandView>))
)]
pub(super) async fn command_history(
    State(state): State<AppState>,
    who: Authenticated,
    QueryString(q): QueryString<PageQuery>,
    Id(id): Id<DeviceId>,
) -> Reply<Json<Items<CommandView>>> {
    let cmds = state
        .orchard
        .command_history(&who.principal, id, q.page())
        .await?;
    Ok(Items::of(cmds))
}

/// A command for many devices: `{"command": {...}, "device_ids": [...] | "tenant_id": ..., "dry_run": true,
/// "confirm_count": N}`. A dry run answers how many devices it would reach; destructive commands need that
/// number as `confirm_count`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BulkCommandBody {
    #[schema(value_type = orchard_core::api_schema::CommandSchema)]
    command: Command,
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    device_ids: Option<Vec<DeviceId>>,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    tenant_id: Option<TenantId>,
    /// The members of one device group.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    group_id: Option<orchard_types::GroupId>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    confirm_count: Option<usize>,
}

#[utoipa::path(
    post,
    path = "/commands/bulk",
    tag = "commands",
    request_body = BulkCommandBody,
    responses((status = 200, description = "Dry run: what would be queued", body = orchard_core::commands::policy::BulkOutcome), (status = 201, description = "Queued", body = orchard_core::commands::policy::BulkOutcome))
)]
pub(super) async fn queue_bulk_command(
    State(state): State<AppState>,
    who: Authenticated,
    request: axum::extract::Request,
) -> Reply {
    // Role first, then the body (its size capped while it is read), then the database.
    orchard_core::commands::policy::may_queue_bulk(&who.principal)?;
    let JsonBody(req) =
        <JsonBody<BulkCommandBody> as axum::extract::FromRequest<AppState>>::from_request(
            request, &state,
        )
        .await?;
    refuse_caller_unlock_token(&req.command)?;
    let outcome: BulkOutcome = state
        .orchard
        .queue_bulk_command(
            &who.principal,
            BulkTarget {
                device_ids: req.device_ids,
                tenant_id: req.tenant_id,
                group_id: req.group_id,
            },
            req.command,
            req.dry_run,
            req.confirm_count,
        )
        .await?;
    Ok(if outcome.dry_run {
        Json(outcome).into_response()
    } else {
        Created(outcome).into_response()
    })
}
