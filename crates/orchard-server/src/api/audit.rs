//! `/audit` and `/audit.csv`: reading the audit log back (operators and helpdesk all; a tenant admin its
//! tenant's events), as JSON pages or a CSV export.

use axum::response::{IntoResponse, Response};
use axum::Json;
use orchard_core::reporting::audit::{audit_csv, parse_time_bound, AuditEventView, AuditQuery};
use orchard_store::Page;
use orchard_types::TenantId;
use serde::Deserialize;

use super::error::ApiError;
use orchard_core::access::capability::OversightCtx;

use super::extract::{AppState, Overseer, QueryString, State};
use super::reply::{csv_response, Paged, Reply, ReportFormat};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    tenant: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
    format: Option<String>,
}

/// `GET /audit?tenant=&actor=&action=&from=&to=&limit=&offset=[&format=csv]`, newest first. `action` may end
/// in `*` (`device.*`); `from`/`to` are unix seconds, RFC 3339 or `YYYY-MM-DD` (whole days), both inclusive.
#[utoipa::path(
    get,
    path = "/audit",
    tag = "audit",
    params(AuditParams),
    responses((status = 200, description = "Audit events, newest first (CSV with format=csv)", content((Paged<orchard_core::reporting::audit::AuditEventView> = "application/json"), (String = "text/csv"))))
)]
pub(super) async fn list_audit(
    State(state): State<AppState>,
    Overseer(overseer): Overseer,
    QueryString(params): QueryString<AuditParams>,
) -> Reply {
    let format = ReportFormat::parse(params.format.as_deref(), ReportFormat::Json)?;
    audit_answer(&state, &overseer, params, format).await
}

/// `GET /audit.csv` with the filters of `GET /audit`: the same events as CSV.
#[utoipa::path(
    get,
    path = "/audit.csv",
    tag = "audit",
    params(AuditParams),
    responses((status = 200, description = "Audit events as CSV (JSON with format=json)", body = String, content_type = "text/csv"))
)]
pub(super) async fn export_audit_csv(
    State(state): State<AppState>,
    Overseer(overseer): Overseer,
    QueryString(params): QueryString<AuditParams>,
) -> Reply {
    let format = ReportFormat::parse(params.format.as_deref(), ReportFormat::Csv)?;
    audit_answer(&state, &overseer, params, format).await
}

async fn audit_answer(
    state: &AppState,
    overseer: &OversightCtx,
    params: AuditParams,
    format: ReportFormat,
) -> Result<Response, ApiError> {
    let tenant_id = match params.tenant.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => {
            Some(TenantId::parse(t).map_err(|_| ApiError::invalid("tenant is not a tenant id"))?)
        }
        None => None,
    };
    let bound = |s: Option<&str>, end: bool| -> Result<_, ApiError> {
        Ok(s.filter(|s| !s.is_empty())
            .map(|s| parse_time_bound(s, end))
            .transpose()?)
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
        ReportFormat::Json => (100, 1_000),
        ReportFormat::Csv => (10_000, 100_000),
    };
    let page = Page {
        limit: params.limit.unwrap_or(default_limit).clamp(1, max_limit),
        offset: params.offset.unwrap_or(0).max(0),
    };
    let (events, total) = state.orchard.list_audit(overseer, &query, page).await?;
    Ok(match format {
        ReportFormat::Json => Json(Paged {
            items: events.iter().map(AuditEventView::from).collect(),
            total,
            limit: page.limit,
            offset: page.offset,
        })
        .into_response(),
        ReportFormat::Csv => csv_response("orchard-audit.csv", audit_csv(&events)),
    })
}
