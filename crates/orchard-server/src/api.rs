//! The admin API `/api/v1` (JSON). Every route takes an [`Authenticated`] principal; errors have a stable
//! `code`, a message, and the request id.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use orchard_core::access::capability::{OperatorCtx, OversightCtx, TokenAdminCtx};
use orchard_core::access::principal::Principal;
use orchard_core::commands::queue::CommandView;
use orchard_core::device::views::DeviceView;
use orchard_core::push::{PushCertificateUpload, VendorIdentity};
use orchard_core::CoreError;
use orchard_protocol::commands::Command;
use orchard_store::Page;
use orchard_types::{DeviceId, TenantId};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{request_id, AppState};

/// Every `/api/v1` route, each registered with its OpenAPI description (see [`crate::openapi`]): add routes
/// only through `.routes(routes!(…))` (never a plain axum route), or the document misses them (a test checks).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(crate::openapi::serve_openapi))
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(create_link, list_links))
        .routes(routes!(revoke_link))
        .routes(routes!(list_devices))
        .routes(routes!(device_detail))
        .routes(routes!(queue_command, command_history))
        .routes(routes!(push_device))
        .routes(routes!(push_certificate_status, upload_push_certificate))
        .routes(routes!(create_push_csr))
        .routes(routes!(create_dep_token, list_dep_tokens))
        .routes(routes!(upload_dep_token))
        .routes(routes!(sync_dep_token))
        .merge(crate::api_dep::routes())
        .merge(crate::api_tokens::routes())
        .merge(crate::api_users::routes())
        .routes(routes!(queue_bulk_command))
        .merge(crate::api_audit::routes())
        .merge(crate::auth_routes::api_routes())
}

/// An API error: status, stable code, a message for the caller, and the request id.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    request_id: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            request_id: String::new(),
        }
    }

    fn with_request_id(mut self, id: String) -> Self {
        self.request_id = id;
        self
    }

    pub fn from_core(e: CoreError, request_id: String) -> Self {
        let err = match e {
            CoreError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", "not found"),
            CoreError::Gone(m) => ApiError::new(StatusCode::GONE, "gone", m),
            CoreError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", m),
            CoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            CoreError::ConfirmationRequired(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, "confirmation_required", m)
            }
            CoreError::Unauthenticated => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "a valid bearer token is required",
            ),
            CoreError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            CoreError::Device(r) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", r.reason())
            }
            other => {
                // The log gets the detail; the caller gets the request id to quote.
                tracing::error!(error = %other, %request_id, "api request failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; quote the request id to the operators",
                )
            }
        };
        err.with_request_id(request_id)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message, "request_id": self.request_id}});
        (self.status, Json(body)).into_response()
    }
}

/// The authenticated caller, from `Authorization: Bearer …`.
pub struct Authenticated {
    pub principal: Principal,
    pub request_id: String,
}

impl Authenticated {
    pub(crate) fn fail(&self, e: CoreError) -> ApiError {
        ApiError::from_core(e, self.request_id.clone())
    }

    /// The operator's handle, or 403.
    pub(crate) fn operator(&self) -> Result<OperatorCtx, ApiError> {
        self.principal.operator().map_err(|e| self.fail(e))
    }

    /// The handle to see people, the audit log and usage, or 403.
    pub(crate) fn oversight(&self) -> Result<OversightCtx, ApiError> {
        self.principal.oversight().map_err(|e| self.fail(e))
    }

    /// The handle to manage API tokens, or 403.
    pub(crate) fn token_admin(&self) -> Result<TokenAdminCtx, ApiError> {
        self.principal.token_admin().map_err(|e| self.fail(e))
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let request_id = request_id(&parts.headers);
        let fail = |e: CoreError| ApiError::from_core(e, request_id.clone());
        // A bearer token (scripts, the CLI) wins; otherwise the web UI's session cookie.
        let principal = if let Some(secret) = bearer(&parts.headers) {
            state
                .orchard
                .authenticate_bearer_in(secret, Some(&request_id))
                .await
                .map_err(fail)?
        } else if let Some(secret) =
            crate::auth_routes::cookie(&parts.headers, orchard_core::access::users::SESSION_COOKIE)
        {
            let user = state
                .orchard
                .authenticate_session(secret)
                .await
                .map_err(fail)?;
            // A cookie rides along with any request the browser makes: a state-changing one must also
            // carry the CSRF token that only our own pages can read from /auth/me.
            let safe = matches!(
                parts.method,
                http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
            );
            if !safe {
                let presented = parts
                    .headers
                    .get(orchard_core::access::users::CSRF_HEADER)
                    .and_then(|v| v.to_str().ok());
                user.check_csrf(presented).map_err(fail)?;
            }
            let tenant = parts
                .headers
                .get(orchard_core::access::sessions::TENANT_HEADER)
                .and_then(|v| v.to_str().ok());
            state
                .orchard
                .principal_for_session(&user, tenant)
                .map_err(fail)?
        } else {
            return Err(fail(CoreError::Unauthenticated));
        };
        crate::api_audit::remember_principal(&parts.extensions, &principal);
        Ok(Authenticated {
            principal,
            request_id,
        })
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// JSON bodies with our error shape on failure.
pub(crate) fn body<T>(
    who: &Authenticated,
    b: Result<Json<T>, JsonRejection>,
) -> Result<T, ApiError> {
    b.map(|Json(v)| v).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.body_text())
            .with_request_id(who.request_id.clone())
    })
}

/// Query strings with our error shape on failure (axum's own rejection is plain text).
pub(crate) fn query<T>(
    who: &Authenticated,
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| who.fail(CoreError::Invalid(e.body_text())))
}

pub(crate) fn parse_id<T, F: FnOnce(&str) -> Result<T, orchard_types::ParseError>>(
    who: &Authenticated,
    s: &str,
    parse: F,
) -> Result<T, ApiError> {
    // A malformed id is reported like a missing one: it names nothing.
    parse(s).map_err(|_| who.fail(CoreError::NotFound))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    /// The department's name (1 to 200 characters).
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    name: String,
    /// Short code: lowercase letters, digits and dashes.
    #[schema(pattern = r"^[a-z0-9-]{1,32}$")]
    code: String,
}

#[utoipa::path(
    post,
    path = "/tenants",
    tag = "tenants",
    request_body = CreateTenant,
    responses((status = 201, description = "Created", body = crate::openapi::TenantSummary))
)]
async fn create_tenant(
    State(state): State<AppState>,
    who: Authenticated,
    b: Result<Json<CreateTenant>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(&who, b)?;
    let t = state
        .orchard
        .create_tenant(&who.operator()?, &req.name, &req.code)
        .await
        .map_err(|e| who.fail(e))?;
    Ok((StatusCode::CREATED, Json(tenant_json(&t))).into_response())
}

fn tenant_json(t: &orchard_store::Tenant) -> serde_json::Value {
    json!({"id": t.id, "name": t.name, "code": t.code, "created_at": t.created_at.to_rfc3339()})
}

#[utoipa::path(
    get,
    path = "/tenants",
    tag = "tenants",
    responses((status = 200, description = "Tenants in the caller's scope", body = crate::openapi::Items<crate::openapi::TenantSummary>))
)]
async fn list_tenants(
    State(state): State<AppState>,
    who: Authenticated,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ts = state
        .orchard
        .list_tenants(&who.principal)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(
        json!({"items": ts.iter().map(tenant_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateLink {
    #[serde(default)]
    name: String,
    max_uses: Option<i64>,
    expires_in_seconds: Option<i64>,
}

/// `GET /tenants/{id}/enrollment-links`: the tenant's links (their secrets are never stored, only hashes).
#[utoipa::path(
    get,
    path = "/tenants/{id}/enrollment-links",
    tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "The tenant's enrollment links (not those of enrollment templates)", body = crate::openapi::Items<orchard_core::tenancy::links::LinkView>))
)]
async fn list_links(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = parse_id(&who, &id, TenantId::parse)?;
    let items = state
        .orchard
        .list_enrollment_links(&who.principal, tenant)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json!({ "items": json_value(&who, items)? })))
}

/// `DELETE /tenants/{id}/enrollment-links/{link}`: the link stops handing out profiles now; devices enrolled
/// through it stay.
#[utoipa::path(
    delete,
    path = "/tenants/{id}/enrollment-links/{link}",
    tag = "tenants",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("link" = String, Path, description = "Enrollment link id")
    ),
    responses((status = 204, description = "Revoked"))
)]
async fn revoke_link(
    State(state): State<AppState>,
    who: Authenticated,
    Path((id, link)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = parse_id(&who, &id, TenantId::parse)?;
    let link = parse_id(&who, &link, orchard_types::EnrollmentLinkId::parse)?;
    state
        .orchard
        .revoke_enrollment_link(&who.principal, tenant, link)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/tenants/{id}/enrollment-links",
    tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = CreateLink,
    responses((status = 201, description = "Created", body = orchard_core::tenancy::links::CreatedLink))
)]
async fn create_link(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    b: Result<Json<CreateLink>, JsonRejection>,
) -> Result<Response, ApiError> {
    let tenant = parse_id(&who, &id, TenantId::parse)?;
    let req = body(&who, b)?;
    let link = state
        .orchard
        .create_enrollment_link(
            &who.principal,
            tenant,
            &req.name,
            req.max_uses,
            req.expires_in_seconds,
        )
        .await
        .map_err(|e| who.fail(e))?;
    Ok((StatusCode::CREATED, Json(link)).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    limit: Option<i64>,
    offset: Option<i64>,
}

impl PageQuery {
    fn page(&self) -> Page {
        Page {
            limit: self.limit.unwrap_or(100).clamp(1, 1000),
            offset: self.offset.unwrap_or(0).max(0),
        }
    }
}

/// `GET /devices` filters: `tenant`, `model`, `os_version` (exact, or a prefix ending in "."), `state`,
/// `last_seen_before` / `last_seen_after` (unix seconds, RFC 3339 or a day), `q` (name, serial, UDID, model),
/// `sort` (enrolled_at | last_seen | name | serial | os_version | model), `order` (asc | desc), `limit`, `offset`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DeviceListQuery {
    limit: Option<i64>,
    offset: Option<i64>,
    tenant: Option<String>,
    model: Option<String>,
    os_version: Option<String>,
    state: Option<String>,
    last_seen_before: Option<String>,
    last_seen_after: Option<String>,
    q: Option<String>,
    sort: Option<String>,
    order: Option<String>,
}

impl DeviceListQuery {
    fn to_query(&self, who: &Authenticated) -> Result<orchard_store::DeviceQuery, ApiError> {
        let invalid = |m: String| who.fail(CoreError::Invalid(m));
        let time = |v: &Option<String>, end: bool| -> Result<_, ApiError> {
            v.as_deref()
                .map(|s| orchard_core::reporting::audit::parse_time_bound(s, end))
                .transpose()
                .map_err(|e| who.fail(e))
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
    responses((status = 200, description = "A page of devices", body = crate::openapi::Paged<orchard_core::device::views::DeviceView>))
)]
async fn list_devices(
    State(state): State<AppState>,
    who: Authenticated,
    q: Result<Query<DeviceListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q.map_err(|e| who.fail(CoreError::Invalid(e.body_text())))?;
    let page = PageQuery {
        limit: q.limit,
        offset: q.offset,
    }
    .page();
    let query = q.to_query(&who)?;
    let (devices, total) = state
        .orchard
        .search_devices(&who.principal, &query, page)
        .await
        .map_err(|e| who.fail(e))?;
    let items: Vec<DeviceView> = devices.iter().map(DeviceView::from).collect();
    Ok(Json(
        json!({"items": items, "total": total, "limit": page.limit, "offset": page.offset}),
    ))
}

#[utoipa::path(
    get,
    path = "/devices/{id}",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "The device with channels and inventory", body = orchard_core::device::views::DeviceDetail))
)]
async fn device_detail(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&who, &id, DeviceId::parse)?;
    let detail = state
        .orchard
        .device_detail(&who.principal, id)
        .await
        .map_err(|e| who.fail(e))?;
    serde_json::to_value(detail)
        .map(Json)
        .map_err(|e| who.fail(CoreError::Internal(e.to_string())))
}

/// A command as the API takes it: the typed command (`type` and its fields) plus, for dangerous commands
/// (EraseDevice, ClearPasscode, DeleteUser, removing management), `confirm_serial` = the device's serial.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct QueueCommandBody {
    #[serde(flatten)]
    #[schema(value_type = orchard_core::api_schema::CommandSchema)]
    command: Command,
    /// The device's serial number: required for EraseDevice, ClearPasscode, DeleteUser and removing management.
    #[serde(default)]
    confirm_serial: Option<String>,
}

#[utoipa::path(
    post,
    path = "/devices/{id}/commands",
    tag = "commands",
    params(("id" = String, Path, description = "Device id")),
    request_body = QueueCommandBody,
    responses((status = 201, description = "Queued", body = orchard_core::commands::queue::CommandView))
)]
async fn queue_command(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    b: Result<Json<QueueCommandBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(&who, &id, DeviceId::parse)?;
    let QueueCommandBody {
        command,
        confirm_serial,
    } = body(&who, b)?;
    if let Command::ClearPasscode { unlock_token } = &command {
        if unlock_token.is_some() {
            return Err(who.fail(CoreError::Invalid(
                "unlock_token is filled in by Orchard from the device's escrow".into(),
            )));
        }
    }
    let record = state
        .orchard
        .queue_confirmed_command(&who.principal, id, command, confirm_serial.as_deref())
        .await
        .map_err(|e| who.fail(e))?;
    Ok((StatusCode::CREATED, Json(CommandView::from(&record))).into_response())
}

#[utoipa::path(
    get,
    path = "/devices/{id}/commands",
    tag = "commands",
    params(("id" = String, Path, description = "Device id"), PageQuery),
    responses((status = 200, description = "Commands, newest first", body = crate::openapi::Items<orchard_core::commands::queue::CommandView>))
)]
async fn command_history(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = crate::api::query(&who, q)?;
    let id = parse_id(&who, &id, DeviceId::parse)?;
    let cmds = state
        .orchard
        .command_history(&who.principal, id, q.page())
        .await
        .map_err(|e| who.fail(e))?;
    let items: Vec<CommandView> = cmds.iter().map(CommandView::from).collect();
    Ok(Json(json!({"items": items})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_details() {
        let r = ApiError::from_core(
            CoreError::Internal("db password wrong".into()),
            "rid".into(),
        );
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!r.message.contains("password"));
        assert_eq!(r.request_id, "rid");
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer orc_abc".parse().unwrap(),
        );
        assert_eq!(bearer(&h), Some("orc_abc"));
        h.insert(http::header::AUTHORIZATION, "Basic xyz".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}

#[utoipa::path(
    post,
    path = "/devices/{id}/push",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 202, description = "Pushes queued", body = crate::openapi::PushQueued))
)]
async fn push_device(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&who, &id, DeviceId::parse)?;
    let channels = state
        .orchard
        .push_device(&who.principal, id)
        .await
        .map_err(|e| who.fail(e))?;
    Ok((StatusCode::ACCEPTED, Json(json!({"channels": channels}))).into_response())
}

#[utoipa::path(
    get,
    path = "/push-certificate",
    tag = "push",
    responses((status = 200, description = "The push certificate (operators)", body = crate::openapi::PushCertificateAnswer))
)]
async fn push_certificate_status(
    State(state): State<AppState>,
    who: Authenticated,
) -> Result<Json<serde_json::Value>, ApiError> {
    who.operator()?;
    match state.orchard.push_certificate_status() {
        Some(s) => serde_json::to_value(s)
            .map(Json)
            .map_err(|e| who.fail(CoreError::Internal(e.to_string()))),
        None => Ok(Json(json!({
            "topic": state.orchard.current_topic().to_string(),
            "development_topic": true,
            "message": "no push certificate uploaded: devices cannot be woken by push"
        }))),
    }
}

/// A push certificate upload: PEM certificate and key, a base64 PKCS#12 with its password, or the PEM
/// certificate alone when it was issued for a CSR from `POST /push-certificate/csr` (the key is stored).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PushCertificateBody {
    certificate_pem: Option<String>,
    private_key_pem: Option<String>,
    pkcs12_base64: Option<String>,
    password: Option<String>,
    #[serde(default)]
    force: bool,
}

#[utoipa::path(
    put,
    path = "/push-certificate",
    tag = "push",
    request_body = PushCertificateBody,
    responses((status = 200, description = "Installed", body = orchard_core::push::PushCertificateStatus))
)]
async fn upload_push_certificate(
    State(state): State<AppState>,
    who: Authenticated,
    b: Result<Json<PushCertificateBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use base64::Engine;
    let req = body(&who, b)?;
    let upload = match (req.certificate_pem, req.private_key_pem, req.pkcs12_base64) {
        (Some(c), Some(k), None) => PushCertificateUpload::Pem {
            certificate: c.into_bytes(),
            private_key: k.into_bytes(),
        },
        (Some(c), None, None) => PushCertificateUpload::CertificateOnly {
            certificate: c.into_bytes(),
        },
        (None, None, Some(p)) => PushCertificateUpload::Pkcs12 {
            der: base64::engine::general_purpose::STANDARD
                .decode(p.trim())
                .map_err(|_| who.fail(CoreError::Invalid("pkcs12_base64 is not base64".into())))?,
            password: req.password.unwrap_or_default(),
        },
        _ => return Err(who.fail(CoreError::Invalid(
            "give certificate_pem (with private_key_pem, or alone when orchard made the csr), or \
                 pkcs12_base64 (and password)"
                .into(),
        ))),
    };
    let status = state
        .orchard
        .upload_push_certificate(&who.operator()?, upload, req.force)
        .await
        .map_err(|e| who.fail(e))?;
    serde_json::to_value(status)
        .map(Json)
        .map_err(|e| who.fail(CoreError::Internal(e.to_string())))
}

/// `POST /push-certificate/csr`: optional MDM vendor identity (both fields or neither). No body at all means
/// no vendor: the answer is the CSR alone.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PushCsrBody {
    vendor_cert_chain_pem: Option<String>,
    vendor_key_pem: Option<String>,
}

#[utoipa::path(
    post,
    path = "/push-certificate/csr",
    tag = "push",
    request_body(content = Option<PushCsrBody>, description = "Optional MDM vendor identity; no body means no vendor"),
    responses((status = 201, description = "A new key and CSR", body = orchard_core::push::PushCsr))
)]
async fn create_push_csr(
    State(state): State<AppState>,
    who: Authenticated,
    b: Result<Option<Json<PushCsrBody>>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(
        &who,
        b.map(|o| Json(o.map(|Json(v)| v).unwrap_or_default())),
    )?;
    let vendor = match (req.vendor_cert_chain_pem, req.vendor_key_pem) {
        (Some(chain), Some(key)) => Some(VendorIdentity {
            cert_chain_pem: chain.into_bytes(),
            key_pem: orchard_types::Secret::new(key.into_bytes()),
        }),
        (None, None) => None,
        _ => {
            return Err(who.fail(CoreError::Invalid(
                "give vendor_cert_chain_pem and vendor_key_pem together, or neither".into(),
            )))
        }
    };
    let csr = state
        .orchard
        .create_push_csr(&who.operator()?, vendor)
        .await
        .map_err(|e| who.fail(e))?;
    let value =
        serde_json::to_value(csr).map_err(|e| who.fail(CoreError::Internal(e.to_string())))?;
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

pub(crate) fn json_value<T: serde::Serialize>(
    who: &Authenticated,
    v: T,
) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(v).map_err(|e| who.fail(CoreError::Internal(e.to_string())))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateDepToken {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    name: String,
}

/// `POST /dep-tokens` {name}: a key pair for a new ASM MDM server; answers {id, certificate_pem} (upload the
/// certificate to ASM).
#[utoipa::path(
    post,
    path = "/dep-tokens",
    tag = "dep",
    request_body = CreateDepToken,
    responses((status = 201, description = "Key pair made; upload the certificate to ASM", body = orchard_core::dep::CreatedDepToken))
)]
async fn create_dep_token(
    State(state): State<AppState>,
    who: Authenticated,
    b: Result<Json<CreateDepToken>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(&who, b)?;
    let created = state
        .orchard
        .create_dep_token(&who.operator()?, &req.name)
        .await
        .map_err(|e| who.fail(e))?;
    Ok((StatusCode::CREATED, Json(json_value(&who, created)?)).into_response())
}

#[utoipa::path(
    get,
    path = "/dep-tokens",
    tag = "dep",
    responses((status = 200, description = "DEP server tokens", body = crate::openapi::Items<orchard_core::dep::DepTokenStatus>))
)]
async fn list_dep_tokens(
    State(state): State<AppState>,
    who: Authenticated,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tokens = state
        .orchard
        .list_dep_tokens(&who.operator()?)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json!({ "items": json_value(&who, tokens)? })))
}

/// The `.p7m` server token downloaded from ASM, base64 (the file as is).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DepTokenBody {
    p7m_base64: String,
}

#[utoipa::path(
    put,
    path = "/dep-tokens/{id}/token",
    tag = "dep",
    params(("id" = String, Path, description = "DEP token id")),
    request_body = DepTokenBody,
    responses((status = 200, description = "Installed", body = orchard_core::dep::DepTokenStatus))
)]
async fn upload_dep_token(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    b: Result<Json<DepTokenBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use base64::Engine;
    let req = body(&who, b)?;
    // Who may upload is decided before what was uploaded is looked at.
    let operator = who.operator()?;
    let p7m = base64::engine::general_purpose::STANDARD
        .decode(req.p7m_base64.trim())
        .map_err(|_| who.fail(CoreError::Invalid("p7m_base64 is not base64".into())))?;
    let status = state
        .orchard
        .upload_dep_token(&operator, &id, &p7m)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json_value(&who, status)?))
}

#[utoipa::path(
    post,
    path = "/dep-tokens/{id}/sync",
    tag = "dep",
    params(("id" = String, Path, description = "DEP token id")),
    responses((status = 200, description = "What the sync did", body = orchard_core::dep::DepSyncSummary))
)]
async fn sync_dep_token(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let summary = state
        .orchard
        .sync_dep_token(&who.operator()?, &id)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json_value(&who, summary)?))
}

/// A command for many devices: `{"command": {...}, "device_ids": [...] | "tenant_id": ..., "dry_run": true,
/// "confirm_count": N}`. A dry run answers how many devices it would reach; destructive commands need that
/// number as `confirm_count`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BulkCommandBody {
    #[schema(value_type = orchard_core::api_schema::CommandSchema)]
    command: Command,
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    device_ids: Option<Vec<DeviceId>>,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    tenant_id: Option<TenantId>,
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
async fn queue_bulk_command(
    State(state): State<AppState>,
    who: Authenticated,
    b: Result<Json<BulkCommandBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(&who, b)?;
    if let Command::ClearPasscode {
        unlock_token: Some(_),
    } = &req.command
    {
        return Err(who.fail(CoreError::Invalid(
            "unlock_token is filled in by Orchard from the device's escrow".into(),
        )));
    }
    let outcome = state
        .orchard
        .queue_bulk_command(
            &who.principal,
            orchard_core::commands::policy::BulkTarget {
                device_ids: req.device_ids,
                tenant_id: req.tenant_id,
            },
            req.command,
            req.dry_run,
            req.confirm_count,
        )
        .await
        .map_err(|e| who.fail(e))?;
    let status = if outcome.dry_run {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(json_value(&who, outcome)?)).into_response())
}
