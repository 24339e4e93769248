//! The audit trail of the admin API and the two reports built on recorded data: the audit log itself and the
//! usage report for billing.
//!
//! [`record_mutations`] wraps every `/api/v1` route. Each POST, PUT, PATCH and DELETE, whatever its outcome
//! (refused ones included), becomes one audit event: actor, the tenant of the target, a stable dotted action,
//! the target, the request id the server assigned, the outcome and the HTTP status.
//!
//! The record is part of a mutation's contract: it is written before the response leaves, and if it cannot be
//! written the caller gets a 500 (`audit_unavailable`) instead of the handler's answer, and the complete event
//! goes to the error log, so it is never silently lost. The handler's own work may already be committed then;
//! the 500 tells the caller (and the operators, through the request id) that the outcome must be checked.
//!
//! Handlers may refine their event by putting an [`AuditNote`] in the response extensions; otherwise the
//! action comes from the route table below (or method and route), the target from the last path parameter or
//! the created object's `id`, and the tenant from the target when the request succeeded (the tenant in the
//! path, the device's tenant, or the answer's `tenant_id`), else from the actor.

use std::sync::{Arc, Mutex};

use axum::body::{Body, HttpBody};
use axum::extract::rejection::QueryRejection;
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use orchard_core::access::principal::Principal;
use orchard_core::reporting::audit::{
    audit_csv, parse_time_bound, AuditActor, AuditEvent, AuditEventView, AuditOutcome, AuditQuery,
};
use orchard_core::reporting::usage::parse_day;
use orchard_core::CoreError;
use orchard_store::Page;
use orchard_types::{DeviceId, TenantId};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::{ApiError, Authenticated};
use crate::{request_id, AppState};

const API_PREFIX: &str = "/api/v1";

/// Response bodies up to this size are read for the created object's id and the command's type.
const MAX_INSPECTED_BODY: u64 = 64 * 1024;

pub fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(list_audit))
        .routes(utoipa_axum::routes!(export_audit_csv))
        .routes(utoipa_axum::routes!(usage_report))
}

/// Wraps every route of `router` with [`record_mutations`]. Only matched routes are wrapped: a request to a
/// path that is no route changes nothing and is not an action.
pub fn with_audit(router: Router<AppState>, state: AppState) -> Router<AppState> {
    router.route_layer(axum::middleware::from_fn_with_state(
        state,
        record_mutations,
    ))
}

/// What a handler tells the audit middleware about its action (put it in the response extensions). Fields
/// left empty keep the middleware's defaults; `details` (an object) is merged into the defaults.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    pub action: Option<String>,
    pub tenant_id: Option<TenantId>,
    pub target: Option<String>,
    pub details: Value,
}

impl AuditNote {
    /// The response with this note attached.
    pub fn attach(self, response: impl IntoResponse) -> Response {
        let mut response = response.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// Where the `Authenticated` extractor leaves the principal for the middleware (request extensions move into
/// the handler, so the middleware hands in a shared slot).
#[derive(Clone, Default)]
struct PrincipalSlot(Arc<Mutex<Option<Principal>>>);

/// Called by the `Authenticated` extractor once the bearer token was accepted.
pub fn remember_principal(extensions: &http::Extensions, principal: &Principal) {
    if let Some(slot) = extensions.get::<PrincipalSlot>() {
        if let Ok(mut guard) = slot.0.lock() {
            *guard = Some(principal.clone());
        }
    }
}

fn is_mutation(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The stable action names of the routes; others get [`generic_action`].
fn known_action(method: &Method, route: &str) -> Option<&'static str> {
    Some(match (method.as_str(), route) {
        ("POST", "/tenants") => "tenant.create",
        ("POST", "/tenants/{id}/enrollment-links") => "enrollment_link.create",
        ("POST", "/devices/{id}/commands") => "device.command.queue",
        ("POST", "/devices/{id}/push") => "device.push",
        ("PUT", "/push-certificate") => "push_certificate.upload",
        ("POST", "/push-certificate/csr") => "push_certificate.csr.create",
        ("POST", "/dep-tokens") => "dep_token.create",
        ("PUT", "/dep-tokens/{id}/token") => "dep_token.upload",
        ("POST", "/dep-tokens/{id}/sync") => "dep_token.sync",
        ("POST", "/dep-tokens/{id}/assignments") => "dep_token.assign",
        ("POST", "/dep-tokens/{id}/templates") => "dep_template.create",
        ("PUT", "/dep-templates/{id}") => "dep_template.update",
        ("DELETE", "/dep-templates/{id}") => "dep_template.delete",
        ("PATCH", "/tenants/{id}") => "tenant.update",
        ("POST", "/tokens") => "token.create",
        ("DELETE", "/tokens/{id}") => "token.revoke",
        ("POST", "/commands/bulk") => "device.command.bulk_queue",
        ("POST", "/devices/{id}/setup/release") => "device.setup.release",
        ("POST", "/devices/{id}/activation-lock/clear") => "device.activation_lock.clear",
        _ => return None,
    })
}

/// `DELETE /tokens/{id}` → `tokens.delete`: the literal path segments, dotted, and the verb.
fn generic_action(method: &Method, route: &str) -> String {
    let verb = match *method {
        Method::POST => "create",
        Method::PUT | Method::PATCH => "update",
        Method::DELETE => "delete",
        _ => "call",
    };
    let mut parts: Vec<String> = route
        .split('/')
        .filter(|s| !s.is_empty() && !s.starts_with('{'))
        .map(|s| s.replace('-', "_"))
        .collect();
    parts.push(verb.to_string());
    parts.join(".")
}

/// The values of the route's `{param}` segments, by name, in order.
fn path_params(route: &str, path: &str) -> Vec<(String, String)> {
    route
        .split('/')
        .zip(path.split('/'))
        .filter_map(|(template, value)| {
            let name = template.strip_prefix('{')?.strip_suffix('}')?;
            Some((name.to_string(), value.to_string()))
        })
        .collect()
}

/// Records one audit event per mutating request; see the module documentation.
pub async fn record_mutations(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    if !is_mutation(&method) {
        return next.run(request).await;
    }
    let request_id = request_id(request.headers());
    // Inside the nested router the URI has lost its `/api/v1` prefix; the matched route keeps it.
    let uri_path = request.uri().path();
    let full_path = if uri_path.starts_with(API_PREFIX) {
        uri_path.to_string()
    } else {
        format!("{API_PREFIX}{uri_path}")
    };
    let full_route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| full_path.clone());
    let route = full_route
        .strip_prefix(API_PREFIX)
        .unwrap_or(&full_route)
        .to_string();
    let path = full_path
        .strip_prefix(API_PREFIX)
        .unwrap_or(&full_path)
        .to_string();
    let slot = PrincipalSlot::default();
    request.extensions_mut().insert(slot.clone());

    let response = next.run(request).await;

    let principal = slot.0.lock().ok().and_then(|mut g| g.take());
    let status = response.status();
    let outcome = AuditOutcome::from_http_status(status.as_u16());
    let note = response.extensions().get::<AuditNote>().cloned();
    let (response, body) = if outcome == AuditOutcome::Ok {
        inspect_json_body(response).await
    } else {
        (response, None)
    };

    let params = path_params(&route, &path);
    let last_param = params.last().map(|(_, v)| v.clone());
    let actor = principal
        .as_ref()
        .map(AuditActor::of)
        .unwrap_or_else(AuditActor::anonymous);
    let action = note
        .as_ref()
        .and_then(|n| n.action.clone())
        .or_else(|| known_action(&method, &route).map(str::to_string))
        .unwrap_or_else(|| generic_action(&method, &route));
    let created_id = body
        .as_ref()
        .and_then(|b| b.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let target = note
        .as_ref()
        .and_then(|n| n.target.clone())
        .or_else(|| last_param.clone())
        .or_else(|| created_id.clone());

    let tenant_id = match note.as_ref().and_then(|n| n.tenant_id) {
        Some(t) => Some(t),
        None => target_tenant(
            &state,
            outcome,
            &route,
            &params,
            &action,
            created_id.as_deref(),
            principal.as_ref(),
        )
        .await
        .or_else(|| answered_tenant(outcome, body.as_ref()))
        .or(actor.tenant_id),
    };

    let mut details = Map::new();
    details.insert("method".into(), json!(method.as_str()));
    details.insert("path".into(), json!(full_path));
    if let Some(b) = &body {
        // Only these fields of the answer are kept: answers may carry secrets (a new token).
        for key in ["request_type", "command_uuid"] {
            if let Some(v) = b.get(key).filter(|v| v.is_string()) {
                details.insert(key.into(), v.clone());
            }
        }
    }
    if let Some(Value::Object(extra)) = note.map(|n| n.details) {
        details.extend(extra);
    }

    let event = AuditEvent {
        actor,
        tenant_id,
        action,
        target,
        request_id: Some(request_id.clone()).filter(|r| !r.is_empty()),
        outcome,
        http_status: Some(status.as_u16()),
        details: Value::Object(details),
    };
    match state.orchard.record_audit(event.clone()).await {
        Ok(_) => response,
        Err(e) => {
            // Never silently lost: the whole event is in the log, and the caller learns it was not recorded.
            tracing::error!(
                error = %e,
                %request_id,
                actor = %event.actor.id,
                actor_name = ?event.actor.name,
                tenant = ?event.tenant_id,
                action = %event.action,
                target = ?event.target,
                outcome = event.outcome.as_str(),
                status = status.as_u16(),
                details = %event.details,
                "audit event could not be recorded; the request is answered with 500"
            );
            let body = json!({"error": {
                "code": "audit_unavailable",
                "message": "the request could not be recorded in the audit log, so its outcome is not \
                            confirmed; quote the request id to the operators",
                "request_id": request_id,
            }});
            (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
        }
    }
}

/// The tenant a successful action touched, when the route says which: the tenant in the path, the new
/// tenant, or the device's tenant. Refused and failed requests are filed under the actor's tenant instead, so a
/// guessed id of another tenant's object never lands in that tenant's log.
async fn target_tenant(
    state: &AppState,
    outcome: AuditOutcome,
    route: &str,
    params: &[(String, String)],
    action: &str,
    created_id: Option<&str>,
    principal: Option<&Principal>,
) -> Option<TenantId> {
    if outcome != AuditOutcome::Ok {
        return None;
    }
    if action == "tenant.create" {
        return created_id.and_then(|id| TenantId::parse(id).ok());
    }
    let first_param = params.first().map(|(_, v)| v.as_str());
    if route.starts_with("/tenants/{") {
        return first_param.and_then(|id| TenantId::parse(id).ok());
    }
    if route.starts_with("/devices/{") {
        // A tenant role only reaches its own devices.
        let principal = principal?;
        if principal.tenant_id().is_some() {
            return principal.tenant_id();
        }
        let id = first_param.and_then(|id| DeviceId::parse(id).ok())?;
        return match state.orchard.device_tenant(principal, id).await {
            Ok(tenant) => tenant,
            Err(e) => {
                tracing::warn!(error = %e, "looking up the device's tenant for the audit log failed");
                None
            }
        };
    }
    None
}

/// The `tenant_id` of the object a successful request answered with (a new token, a device), if any.
fn answered_tenant(outcome: AuditOutcome, body: Option<&Value>) -> Option<TenantId> {
    if outcome != AuditOutcome::Ok {
        return None;
    }
    body?
        .get("tenant_id")
        .and_then(Value::as_str)
        .and_then(|t| TenantId::parse(t).ok())
}

/// Reads a small JSON answer to learn what was created; the response goes on unchanged.
async fn inspect_json_body(response: Response) -> (Response, Option<Value>) {
    let is_json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let small = response
        .body()
        .size_hint()
        .upper()
        .is_some_and(|n| n <= MAX_INSPECTED_BODY);
    if !is_json || !small {
        return (response, None);
    }
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, MAX_INSPECTED_BODY as usize).await {
        Ok(bytes) => {
            let value = serde_json::from_slice::<Value>(&bytes).ok();
            (Response::from_parts(parts, Body::from(bytes)), value)
        }
        Err(e) => {
            tracing::error!(error = %e, "reading a response body for the audit log failed");
            let body = json!({"error": {"code": "internal", "message": "internal error"}});
            (
                (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response(),
                None,
            )
        }
    }
}

fn invalid(who: &Authenticated, message: impl Into<String>) -> ApiError {
    ApiError::from_core(CoreError::Invalid(message.into()), who.request_id.clone())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    tenant: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
    format: Option<String>,
}

enum Format {
    Json,
    Csv,
}

fn format_of(
    who: &Authenticated,
    format: Option<&str>,
    default: Format,
) -> Result<Format, ApiError> {
    match format {
        None => Ok(default),
        Some("json") => Ok(Format::Json),
        Some("csv") => Ok(Format::Csv),
        Some(other) => Err(invalid(who, format!("format {other:?} is not json or csv"))),
    }
}

fn csv_response(filename: &str, csv: String) -> Response {
    (
        [
            (
                http::header::CONTENT_TYPE,
                "text/csv; charset=utf-8".to_string(),
            ),
            (
                http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        csv,
    )
        .into_response()
}

/// `GET /audit?tenant=&actor=&action=&from=&to=&limit=&offset=[&format=csv]`, newest first. `action` may end
/// in `*` (`device.*`); `from`/`to` are unix seconds, RFC 3339 or `YYYY-MM-DD` (whole days), both inclusive.
#[utoipa::path(
    get,
    path = "/audit",
    tag = "audit",
    params(AuditParams),
    responses((status = 200, description = "Audit events, newest first (CSV with format=csv)", content((crate::openapi::Paged<orchard_core::reporting::audit::AuditEventView> = "application/json"), (String = "text/csv"))))
)]
async fn list_audit(
    State(state): State<AppState>,
    who: Authenticated,
    q: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = q.map_err(|e| invalid(&who, e.body_text()))?;
    let format = format_of(&who, params.format.as_deref(), Format::Json)?;
    audit_answer(&state, &who, params, format).await
}

/// `GET /audit.csv` with the filters of `GET /audit`: the same events as CSV.
#[utoipa::path(
    get,
    path = "/audit.csv",
    tag = "audit",
    params(AuditParams),
    responses((status = 200, description = "Audit events as CSV (JSON with format=json)", body = String, content_type = "text/csv"))
)]
async fn export_audit_csv(
    State(state): State<AppState>,
    who: Authenticated,
    q: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = q.map_err(|e| invalid(&who, e.body_text()))?;
    let format = format_of(&who, params.format.as_deref(), Format::Csv)?;
    audit_answer(&state, &who, params, format).await
}

async fn audit_answer(
    state: &AppState,
    who: &Authenticated,
    params: AuditParams,
    format: Format,
) -> Result<Response, ApiError> {
    let tenant_id = match params.tenant.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => Some(TenantId::parse(t).map_err(|_| invalid(who, "tenant is not a tenant id"))?),
        None => None,
    };
    let bound = |s: Option<&str>, end: bool| {
        s.filter(|s| !s.is_empty())
            .map(|s| parse_time_bound(s, end))
            .transpose()
            .map_err(|e| ApiError::from_core(e, who.request_id.clone()))
    };
    let query = AuditQuery {
        tenant_id,
        actor: params.actor,
        action: params.action,
        from: bound(params.from.as_deref(), false)?,
        to: bound(params.to.as_deref(), true)?,
    };
    // An export may be long; a page of the JSON list is for screens.
    let (default_limit, max_limit) = match format {
        Format::Json => (100, 1_000),
        Format::Csv => (10_000, 100_000),
    };
    let page = Page {
        limit: params.limit.unwrap_or(default_limit).clamp(1, max_limit),
        offset: params.offset.unwrap_or(0).max(0),
    };
    let (events, total) = state
        .orchard
        .list_audit(&who.oversight()?, &query, page)
        .await
        .map_err(|e| ApiError::from_core(e, who.request_id.clone()))?;
    Ok(match format {
        Format::Json => {
            let items: Vec<AuditEventView> = events.iter().map(AuditEventView::from).collect();
            Json(
                json!({"items": items, "total": total, "limit": page.limit, "offset": page.offset}),
            )
            .into_response()
        }
        Format::Csv => csv_response("orchard-audit.csv", audit_csv(&events)),
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct UsageParams {
    /// First day of the period (YYYY-MM-DD), required.
    #[param(required = true, value_type = String, format = Date)]
    from: Option<String>,
    /// Last day of the period (YYYY-MM-DD, included), required.
    #[param(required = true, value_type = String, format = Date)]
    to: Option<String>,
    /// `json` (default) or `csv`.
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
}

/// `GET /usage?from=YYYY-MM-DD&to=YYYY-MM-DD[&format=csv]`: device-days and amounts per tenant for the days
/// `from..=to`, at the server's price (`--price-per-device-year`, `--currency`; default 400 SEK).
#[utoipa::path(
    get,
    path = "/usage",
    tag = "usage",
    params(UsageParams),
    responses((status = 200, description = "Usage per tenant (CSV with format=csv)", content((orchard_core::reporting::usage::UsageReport = "application/json"), (String = "text/csv"))))
)]
async fn usage_report(
    State(state): State<AppState>,
    who: Authenticated,
    q: Result<Query<UsageParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = q.map_err(|e| invalid(&who, e.body_text()))?;
    let format = format_of(&who, params.format.as_deref(), Format::Json)?;
    let day = |s: Option<&str>, name: &str| -> Result<_, ApiError> {
        let s = s.ok_or_else(|| invalid(&who, format!("{name} (YYYY-MM-DD) is required")))?;
        parse_day(s).map_err(|e| ApiError::from_core(e, who.request_id.clone()))
    };
    let from = day(params.from.as_deref(), "from")?;
    let to = day(params.to.as_deref(), "to")?;
    let settings = state.orchard.usage_settings().clone();
    let report = state
        .orchard
        .usage_report(&who.oversight()?, from, to, &settings)
        .await
        .map_err(|e| ApiError::from_core(e, who.request_id.clone()))?;
    Ok(match format {
        Format::Json => Json(report).into_response(),
        Format::Csv => csv_response(
            &format!("orchard-usage-{}-{}.csv", report.from, report.to),
            report.to_csv(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_come_from_the_table_or_the_route() {
        assert_eq!(
            known_action(&Method::POST, "/devices/{id}/commands"),
            Some("device.command.queue")
        );
        assert_eq!(
            generic_action(&Method::DELETE, "/tokens/{id}"),
            "tokens.delete"
        );
        assert_eq!(
            generic_action(&Method::POST, "/tenants/{id}/memberships"),
            "tenants.memberships.create"
        );
    }

    #[test]
    fn path_params_follow_the_template() {
        assert_eq!(
            path_params("/devices/{id}/commands", "/devices/abc/commands"),
            vec![("id".to_string(), "abc".to_string())]
        );
        assert!(path_params("/tenants", "/tenants").is_empty());
    }
}
