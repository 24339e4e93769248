//! `/tenants/{id}/profiles` and `/profiles`: the profile library. A tenant's people see its profiles and the
//! global ones and change only its own (admins); operators make the global ones. Creating a profile or a new
//! version takes a .mobileconfig (any content type but JSON: XML or binary plist, or CMS-signed) or, with
//! `Content-Type: application/json`, a [`ProfileJson`]. Validation problems answer 422 `validation_failed`
//! with every problem and its key path. Secrets never come back: they read `"<sealed>"`.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use orchard_core::desired::mobileconfig::ProfileJson;
use orchard_core::desired::profile_schema::ProfileTarget;
use orchard_core::desired::profiles::{
    DeviceProfileView, ProfileDetail, ProfileInput, ProfileSummary, ProfileVersionDetail,
    QueuedProfileCommand,
};
use orchard_core::reporting::audit_actions::AuditNote;
use orchard_types::{DeviceId, ProfileId, TenantId};
use serde::Deserialize;

use super::error::{ApiError, ErrorBody};
use super::extract::{AppState, Authenticated, Id, JsonBody, Operator, QueryString, State};
use super::reply::{noted, Created, Items, Reply};

/// Options of a .mobileconfig upload (a JSON body carries them itself).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct UploadQuery {
    /// Orchard's name for the profile (default: its PayloadDisplayName).
    name: Option<String>,
    /// Validate for Shared iPad.
    #[serde(default)]
    shared_ipad: bool,
    /// Validate for a Shared iPad's user channel.
    #[serde(default)]
    user_channel: bool,
}

/// The body as a profile: JSON when the content type says so, else the .mobileconfig's bytes.
fn profile_input(
    headers: &HeaderMap,
    query: UploadQuery,
    body: Bytes,
) -> Result<ProfileInput, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if is_json {
        let json: ProfileJson = serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))?;
        return Ok(ProfileInput::Json(json));
    }
    Ok(ProfileInput::Upload {
        bytes: body.to_vec(),
        name: query.name,
        target: ProfileTarget {
            shared_ipad: query.shared_ipad,
            user_channel: query.user_channel,
        },
    })
}

fn created_note(detail: &ProfileDetail) -> AuditNote {
    AuditNote::default()
        .target(&detail.profile.id)
        .detail("identifier", detail.profile.identifier.clone())
        .detail("version", detail.profile.latest_version)
}

/// Install or remove on one device.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DeviceProfileRequest {
    /// The device (one of the tenant's).
    #[schema(value_type = String, format = Uuid)]
    device_id: DeviceId,
    /// The version to install (default: the latest). Not for removal.
    version: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/tenants/{id}/profiles",
    tag = "profiles",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "The tenant's profiles and the global ones", body = Items<ProfileSummary>))
)]
pub(super) async fn list_tenant_profiles(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
) -> Reply<Json<Items<ProfileSummary>>> {
    Ok(Items::of(
        state
            .orchard
            .list_tenant_profiles(&who.principal, tenant)
            .await?,
    ))
}

#[utoipa::path(
    post,
    path = "/tenants/{id}/profiles",
    tag = "profiles",
    params(("id" = String, Path, description = "Tenant id"), UploadQuery),
    request_body(content((ProfileJson = "application/json"), (Vec<u8> = "application/x-apple-aspen-config")), description = "A profile as JSON, or a .mobileconfig (plist or CMS-signed)"),
    responses(
        (status = 201, description = "Created with version 1", body = ProfileDetail),
        (status = 409, description = "A profile with this identifier exists", body = ErrorBody),
        (status = 422, description = "Validation failed: every problem with its key path", body = ErrorBody)
    )
)]
pub(super) async fn create_tenant_profile(
    State(state): State<AppState>,
    who: Authenticated,
    Id(tenant): Id<TenantId>,
    QueryString(query): QueryString<UploadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let input = profile_input(&headers, query, body)?;
    let detail = state
        .orchard
        .create_tenant_profile(&who.principal, tenant, input)
        .await?;
    Ok(noted(created_note(&detail), Created(detail)))
}

#[utoipa::path(
    get,
    path = "/tenants/{id}/profiles/{profile}",
    tag = "profiles",
    params(("id" = String, Path, description = "Tenant id"), ("profile" = String, Path, description = "Profile id")),
    responses((status = 200, description = "The profile, its versions and its latest content (secrets sealed)", body = ProfileDetail))
)]
pub(super) async fn tenant_profile(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, profile)): Id<(TenantId, ProfileId)>,
) -> Reply<Json<ProfileDetail>> {
    Ok(Json(
        state
            .orchard
            .tenant_profile_detail(&who.principal, tenant, profile)
            .await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/tenants/{id}/profiles/{profile}",
    tag = "profiles",
    params(("id" = String, Path, description = "Tenant id"), ("profile" = String, Path, description = "Profile id")),
    responses((status = 204, description = "Archived (versions and device records stay)"))
)]
pub(super) async fn archive_tenant_profile(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, profile)): Id<(TenantId, ProfileId)>,
) -> Reply<StatusCode> {
    state
        .orchard
        .archive_tenant_profile(&who.principal, tenant, profile)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/tenants/{id}/profiles/{profile}/versions",
    tag = "profiles",
    params(("id" = String, Path, description = "Tenant id"), ("profile" = String, Path, description = "Profile id"), UploadQuery),
    request_body(content((ProfileJson = "application/json"), (Vec<u8> = "application/x-apple-aspen-config")), description = "The new version as JSON or a .mobileconfig; \"<sealed>\" keeps the previous secret"),
    responses(
        (status = 201, description = "The profile with its new version", body = ProfileDetail),
        (status = 422, description = "Validation failed: every problem with its key path", body = ErrorBody)
    )
)]
pub(super) async fn add_tenant_profile_version(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, profile)): Id<(TenantId, ProfileId)>,
    QueryString(query): QueryString<UploadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let input = profile_input(&headers, query, body)?;
    let detail = state
        .orchard
        .add_tenant_profile_version(&who.principal, tenant, profile, input)
        .await?;
    Ok(noted(created_note(&detail), Created(detail)))
}

#[utoipa::path(
    get,
    path = "/tenants/{id}/profiles/{profile}/versions/{version}",
    tag = "profiles",
    params(("id" = String, Path, description = "Tenant id"), ("profile" = String, Path, description = "Profile id"), ("version" = i64, Path, description = "Version number")),
    responses((status = 200, description = "The version and its content (secrets sealed)", body = ProfileVersionDetail))
)]
pub(super) async fn tenant_profile_version(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, profile, version)): Id<(TenantId, ProfileId, i64)>,
) -> Reply<Json<ProfileVersionDetail>> {
    Ok(Json(
        state
            .orchard
            .tenant_profile_version(&who.principal, tenant, profile, version)
            .await?,
    ))
}

#[utoipa::path(
    get,
    path = "/tenants/{id}/profiles/{profile}/devices",
    tag = "profiles",
    params(("id" = String, Path, description = "Tenant id"), ("profile" = String, Path, description = "Profile id")),
    responses((status = 200, description = "What the tenant's devices have of the profile", body = Items<DeviceProfileView>))
)]
pub(super) async fn profile_devices(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, profile)): Id<(TenantId, ProfileId)>,
) -> Reply<Json<Items<DeviceProfileView>>> {
    Ok(Items::of(
        state
            .orchard
            .profile_devices(&who.principal, tenant, profile)
            .await?,
    ))
}

#[utoipa::path(
    post,
    path = "/tenants/{id}/profiles/{profile}/install",
    tag = "profiles",
    params(("id" = String, Path, description = "Tenant id"), ("profile" = String, Path, description = "Profile id")),
    request_body = DeviceProfileRequest,
    responses((status = 202, description = "InstallProfile queued (signed by Orchard's profile signer)", body = QueuedProfileCommand))
)]
pub(super) async fn install_profile(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, profile)): Id<(TenantId, ProfileId)>,
    JsonBody(req): JsonBody<DeviceProfileRequest>,
) -> Reply {
    let queued = state
        .orchard
        .install_profile_on_device(&who.principal, tenant, profile, req.device_id, req.version)
        .await?;
    let note = AuditNote::default()
        .target(profile)
        .detail("device_id", queued.device_id.clone())
        .detail("command_uuid", queued.command_uuid.clone())
        .detail("version", queued.version);
    Ok(noted(note, (StatusCode::ACCEPTED, Json(queued))))
}

#[utoipa::path(
    post,
    path = "/tenants/{id}/profiles/{profile}/remove",
    tag = "profiles",
    params(("id" = String, Path, description = "Tenant id"), ("profile" = String, Path, description = "Profile id")),
    request_body = DeviceProfileRequest,
    responses((status = 202, description = "RemoveProfile queued", body = QueuedProfileCommand))
)]
pub(super) async fn remove_profile(
    State(state): State<AppState>,
    who: Authenticated,
    Id((tenant, profile)): Id<(TenantId, ProfileId)>,
    JsonBody(req): JsonBody<DeviceProfileRequest>,
) -> Reply {
    if req.version.is_some() {
        return Err(ApiError::invalid("a removal takes no version"));
    }
    let queued = state
        .orchard
        .remove_profile_from_device(&who.principal, tenant, profile, req.device_id)
        .await?;
    let note = AuditNote::default()
        .target(profile)
        .detail("device_id", queued.device_id.clone())
        .detail("command_uuid", queued.command_uuid.clone());
    Ok(noted(note, (StatusCode::ACCEPTED, Json(queued))))
}

#[utoipa::path(
    get,
    path = "/profiles",
    tag = "profiles",
    responses((status = 200, description = "The global profiles (offered to every tenant)", body = Items<ProfileSummary>))
)]
pub(super) async fn list_global_profiles(
    State(state): State<AppState>,
    who: Authenticated,
) -> Reply<Json<Items<ProfileSummary>>> {
    Ok(Items::of(
        state.orchard.list_global_profiles(&who.principal).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/profiles",
    tag = "profiles",
    params(UploadQuery),
    request_body(content((ProfileJson = "application/json"), (Vec<u8> = "application/x-apple-aspen-config")), description = "A profile as JSON, or a .mobileconfig (plist or CMS-signed)"),
    responses(
        (status = 201, description = "Created with version 1 (operators)", body = ProfileDetail),
        (status = 409, description = "A profile with this identifier exists", body = ErrorBody),
        (status = 422, description = "Validation failed: every problem with its key path", body = ErrorBody)
    )
)]
pub(super) async fn create_global_profile(
    State(state): State<AppState>,
    Operator(operator): Operator,
    QueryString(query): QueryString<UploadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let input = profile_input(&headers, query, body)?;
    let detail = state
        .orchard
        .create_global_profile(&operator, input)
        .await?;
    Ok(noted(created_note(&detail), Created(detail)))
}

#[utoipa::path(
    get,
    path = "/profiles/{profile}",
    tag = "profiles",
    params(("profile" = String, Path, description = "Profile id")),
    responses((status = 200, description = "A global profile with its versions (secrets sealed)", body = ProfileDetail))
)]
pub(super) async fn global_profile(
    State(state): State<AppState>,
    who: Authenticated,
    Id(profile): Id<ProfileId>,
) -> Reply<Json<ProfileDetail>> {
    Ok(Json(
        state
            .orchard
            .global_profile_detail(&who.principal, profile)
            .await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/profiles/{profile}",
    tag = "profiles",
    params(("profile" = String, Path, description = "Profile id")),
    responses((status = 204, description = "Archived (operators)"))
)]
pub(super) async fn archive_global_profile(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Id(profile): Id<ProfileId>,
) -> Reply<StatusCode> {
    state
        .orchard
        .archive_global_profile(&operator, profile)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/profiles/{profile}/versions",
    tag = "profiles",
    params(("profile" = String, Path, description = "Profile id"), UploadQuery),
    request_body(content((ProfileJson = "application/json"), (Vec<u8> = "application/x-apple-aspen-config")), description = "The new version as JSON or a .mobileconfig"),
    responses(
        (status = 201, description = "The profile with its new version (operators)", body = ProfileDetail),
        (status = 422, description = "Validation failed: every problem with its key path", body = ErrorBody)
    )
)]
pub(super) async fn add_global_profile_version(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Id(profile): Id<ProfileId>,
    QueryString(query): QueryString<UploadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let input = profile_input(&headers, query, body)?;
    let detail = state
        .orchard
        .add_global_profile_version(&operator, profile, input)
        .await?;
    Ok(noted(created_note(&detail), Created(detail)))
}

#[utoipa::path(
    get,
    path = "/profiles/{profile}/versions/{version}",
    tag = "profiles",
    params(("profile" = String, Path, description = "Profile id"), ("version" = i64, Path, description = "Version number")),
    responses((status = 200, description = "The version and its content (secrets sealed)", body = ProfileVersionDetail))
)]
pub(super) async fn global_profile_version(
    State(state): State<AppState>,
    who: Authenticated,
    Id((profile, version)): Id<(ProfileId, i64)>,
) -> Reply<Json<ProfileVersionDetail>> {
    Ok(Json(
        state
            .orchard
            .global_profile_version(&who.principal, profile, version)
            .await?,
    ))
}
