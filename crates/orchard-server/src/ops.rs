//! Operations outside the API: `/healthz` (liveness), `/readyz` (readiness: the database answers) and
//! `/metrics` for the operators' monitoring (in the OpenAPI document too; the families are listed in
//! `docs/metrics.md`): this node's counters, the database's figures and the credential register. Metrics carry
//! counts and days, never names (DEP tokens are labelled by id); when a metrics token is configured, `/metrics`
//! answers only `Authorization: Bearer <that token>`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::exposition::Exposition;
use crate::state::AppState;

/// Who may read `/metrics`: anyone (scrapers on a trusted network), or only holders of a bearer token.
#[derive(Clone, Default)]
pub struct MetricsAccess {
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for MetricsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsAccess")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl MetricsAccess {
    /// `/metrics` only with `Authorization: Bearer <token>` (an empty token means open).
    pub fn bearer(token: &str) -> Self {
        Self {
            token: (!token.is_empty()).then(|| Arc::from(token)),
        }
    }
}

/// Equal without an early exit, so the time taken does not tell how much of a guess was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses `/metrics` without the configured bearer token (403: a scraper is not a person to challenge).
pub(crate) async fn require_metrics_token(
    State(access): State<MetricsAccess>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(token) = &access.token else {
        return next.run(request).await;
    };
    if request.uri().path() != "/metrics" {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if same_secret(presented.as_bytes(), token.as_bytes()) {
        request.extensions_mut().insert(TrustedScraper);
        next.run(request).await
    } else {
        (StatusCode::FORBIDDEN, "metrics need the metrics token").into_response()
    }
}

/// `/healthz`, `/readyz` and `/metrics` for the operators' monitoring, outside the API; in the OpenAPI
/// document too.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// Liveness: answers while the server runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    security(()),
    responses((status = 200, description = "The server is up", body = String, content_type = "text/plain"))
)]
async fn healthz() -> &'static str {
    "ok"
}

/// How long `/readyz` waits for the database before answering 503.
const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Readiness: the server can serve, that is its database answers. A load balancer or Kubernetes sends no
/// traffic to a node answering 503 (its process stays up: liveness is `/healthz`).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Ready: the database answers", body = String, content_type = "text/plain"),
        (status = 503, description = "Not ready: the database does not answer", body = String, content_type = "text/plain")
    )
)]
async fn readyz(State(state): State<AppState>) -> Response {
    let system = state.orchard.system();
    // A database that is gone makes the pool retry until its own timeout (30 s): a probe wants an answer sooner.
    let check =
        tokio::time::timeout(READINESS_TIMEOUT, state.orchard.database_ready(&system)).await;
    match check {
        Ok(Ok(())) => (StatusCode::OK, "ok").into_response(),
        Err(_) => {
            tracing::warn!("readiness check: the database did not answer in time");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check: the database does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

/// Set on a `/metrics` request that presented the configured metrics token: the scraper may see per-department
/// series (labelled by tenant id). The open endpoint shows departments' credentials only in aggregate, so nobody
/// who can reach it learns which departments exist.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TrustedScraper;

/// The credential register as gauges. Central IT's credentials one by one (kind, owner `central_it`, the
/// register's id); the departments' (Apps and Books tokens, device identities) per tenant id for a
/// [`TrustedScraper`], otherwise summarized as owner `departments` (the soonest expiry, the sums). Never a name.
fn credential_metrics(
    out: &mut String,
    register: &orchard_core::credentials::CredentialRegister,
    trusted: bool,
) {
    use std::collections::BTreeMap;

    use orchard_core::credentials::{Credential, CredentialKind};

    let labels = |c: &Credential| match c.tenant() {
        None => format!(
            "kind=\"{}\",owner=\"central_it\",credential=\"{}\"",
            c.kind.as_str(),
            c.id
        ),
        Some(tenant) => format!(
            "kind=\"{}\",owner=\"{tenant}\",credential=\"{}\"",
            c.kind.as_str(),
            c.id
        ),
    };
    let summarized = |c: &Credential| c.tenant().is_some() && !trusted;
    out.push_str("# HELP orchard_credential_days_left Days until a credential of the register expires (negative: expired; device identities: the soonest; owner departments: the soonest of all departments).\n");
    out.push_str("# TYPE orchard_credential_days_left gauge\n");
    let mut soonest: BTreeMap<&'static str, i64> = BTreeMap::new();
    for c in &register.credentials {
        let Some(days) = c.days_left else { continue };
        if summarized(c) {
            let entry = soonest.entry(c.kind.as_str()).or_insert(days);
            *entry = (*entry).min(days);
        } else {
            out.push_str(&format!(
                "orchard_credential_days_left{{{}}} {days}\n",
                labels(c)
            ));
        }
    }
    for (kind, days) in &soonest {
        out.push_str(&format!(
            "orchard_credential_days_left{{kind=\"{kind}\",owner=\"departments\",credential=\"soonest\"}} {days}\n"
        ));
    }
    out.push_str("# HELP orchard_credentials Credentials of the register by kind and state (ok, warning, expired, missing).\n");
    out.push_str("# TYPE orchard_credentials gauge\n");
    let mut states: BTreeMap<(&'static str, String), i64> = BTreeMap::new();
    for c in &register.credentials {
        let state = serde_json::to_value(c.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *states.entry((c.kind.as_str(), state)).or_insert(0) += 1;
    }
    for ((kind, state), n) in &states {
        out.push_str(&format!(
            "orchard_credentials{{kind=\"{kind}\",state=\"{state}\"}} {n}\n"
        ));
    }
    out.push_str("# HELP orchard_credential_identities_expiring Device identities not yet expired that run out within a warning threshold.\n");
    out.push_str("# TYPE orchard_credential_identities_expiring gauge\n");
    let mut summed: BTreeMap<i64, i64> = BTreeMap::new();
    for c in register
        .credentials
        .iter()
        .filter(|c| c.kind == CredentialKind::DeviceIdentities)
    {
        let Some(agg) = &c.identities else { continue };
        for within in &agg.expiring_within {
            if summarized(c) {
                *summed.entry(within.days).or_insert(0) += within.count;
            } else {
                out.push_str(&format!(
                    "orchard_credential_identities_expiring{{{},within_days=\"{}\"}} {}\n",
                    labels(c),
                    within.days,
                    within.count
                ));
            }
        }
    }
    for (days, count) in &summed {
        out.push_str(&format!(
            "orchard_credential_identities_expiring{{kind=\"device_identities\",owner=\"departments\",credential=\"all\",within_days=\"{days}\"}} {count}\n"
        ));
    }
}

/// Prometheus text metrics: counts and days only, no names (not of tenants, not of DEP tokens, which are
/// labelled by id). Open to scrapers unless a metrics token is configured.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security(()),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
async fn metrics(
    State(state): State<AppState>,
    trusted: Option<axum::Extension<TrustedScraper>>,
) -> Response {
    // The gauges are the server's own figures (counts and days, no tenant's data), read for no principal.
    let system = state.orchard.system();
    let mut out = String::new();
    match state.orchard.push_certificate_status() {
        Some(s) => {
            out.push_str("# HELP orchard_push_certificate_days_left Days until the MDM push certificate expires.\n");
            out.push_str("# TYPE orchard_push_certificate_days_left gauge\n");
            out.push_str(&format!(
                "orchard_push_certificate_days_left {}\n",
                s.days_left
            ));
            out.push_str("# HELP orchard_push_certificate_expiry_warning 1 within 60 days of expiry or expired.\n");
            out.push_str("# TYPE orchard_push_certificate_expiry_warning gauge\n");
            out.push_str(&format!(
                "orchard_push_certificate_expiry_warning {}\n",
                u8::from(s.expiry_warning)
            ));
            out.push_str("# HELP orchard_push_stopped 1 when pushes are stopped (certificate expired or refused).\n");
            out.push_str("# TYPE orchard_push_stopped gauge\n");
            out.push_str(&format!(
                "orchard_push_stopped {}\n",
                u8::from(s.pushes_stopped.is_some())
            ));
        }
        None => {
            out.push_str(
                "# HELP orchard_push_certificate_present 0 until a push certificate is uploaded.\n",
            );
            out.push_str("# TYPE orchard_push_certificate_present gauge\n");
            out.push_str("orchard_push_certificate_present 0\n");
        }
    }
    if let Ok(tokens) = state.orchard.dep_token_days_left(&system).await {
        if !tokens.is_empty() {
            out.push_str(
                "# HELP orchard_dep_token_days_left Days until a DEP (ASM) server token expires.\n",
            );
            out.push_str("# TYPE orchard_dep_token_days_left gauge\n");
            for (id, _name, days) in &tokens {
                out.push_str(&format!(
                    "orchard_dep_token_days_left{{token=\"{id}\"}} {days}\n"
                ));
            }
            out.push_str(&format!(
                "# HELP orchard_dep_token_expiry_warning 1 within {} days of expiry or expired.\n",
                orchard_core::dep::DEP_TOKEN_WARNING_DAYS
            ));
            out.push_str("# TYPE orchard_dep_token_expiry_warning gauge\n");
            for (id, _name, days) in &tokens {
                out.push_str(&format!(
                    "orchard_dep_token_expiry_warning{{token=\"{id}\"}} {}\n",
                    u8::from(*days <= orchard_core::dep::DEP_TOKEN_WARNING_DAYS)
                ));
            }
        }
    }
    // Per department (labelled by tenant id) only for a scraper that presented the metrics token: on the open
    // endpoint a tenant id would tell anyone who can reach it which departments exist. The open endpoint has
    // the departments' tokens in aggregate (orchard_credential_days_left, owner "departments").
    let apps_tokens = match trusted {
        Some(_) => state.orchard.apps_token_expiry_days(&system).await,
        None => Ok(Vec::new()),
    };
    if let Ok(tokens) = apps_tokens {
        if !tokens.is_empty() {
            // Labelled by tenant id (an opaque id, like a DEP token's): never the token, org or location.
            out.push_str("# HELP orchard_apps_token_days_left Days until a department's Apps and Books content token expires (negative: expired).\n");
            out.push_str("# TYPE orchard_apps_token_days_left gauge\n");
            for (tenant, days) in &tokens {
                out.push_str(&format!(
                    "orchard_apps_token_days_left{{tenant=\"{tenant}\"}} {days}\n"
                ));
            }
            out.push_str(&format!(
                "# HELP orchard_apps_token_expiry_warning 1 within {} days of expiry or expired.\n",
                orchard_core::apps::APPS_TOKEN_WARNING_DAYS
            ));
            out.push_str("# TYPE orchard_apps_token_expiry_warning gauge\n");
            for (tenant, days) in &tokens {
                out.push_str(&format!(
                    "orchard_apps_token_expiry_warning{{tenant=\"{tenant}\"}} {}\n",
                    u8::from(*days <= orchard_core::apps::APPS_TOKEN_WARNING_DAYS)
                ));
            }
        }
    }
    if let Ok(f) = state.orchard.identity_expiry_figures(&system).await {
        let days = state
            .orchard
            .identity_renewal_settings()
            .renewal_window_days;
        out.push_str(
            "# HELP orchard_device_identities Enrolled devices with an identity certificate.\n",
        );
        out.push_str("# TYPE orchard_device_identities gauge\n");
        out.push_str(&format!("orchard_device_identities {}\n", f.devices));
        out.push_str(&format!("# HELP orchard_device_identities_expiring Enrolled devices whose identity runs out within the renewal window ({days} days).\n"));
        out.push_str("# TYPE orchard_device_identities_expiring gauge\n");
        out.push_str(&format!(
            "orchard_device_identities_expiring {}\n",
            f.expiring
        ));
        out.push_str("# HELP orchard_device_identities_expired Enrolled devices whose identity has run out (lost to management).\n");
        out.push_str("# TYPE orchard_device_identities_expired gauge\n");
        out.push_str(&format!(
            "orchard_device_identities_expired {}\n",
            f.expired
        ));
        out.push_str("# HELP orchard_device_identity_renewals_failed Devices whose last identity renewal failed.\n");
        out.push_str("# TYPE orchard_device_identity_renewals_failed gauge\n");
        out.push_str(&format!(
            "orchard_device_identity_renewals_failed {}\n",
            f.renewal_failed
        ));
        if let Some(earliest) = f.earliest_not_after {
            out.push_str("# HELP orchard_device_identity_earliest_expiry_timestamp_seconds When the first enrolled device's identity runs out (unix seconds).\n");
            out.push_str(
                "# TYPE orchard_device_identity_earliest_expiry_timestamp_seconds gauge\n",
            );
            out.push_str(&format!(
                "orchard_device_identity_earliest_expiry_timestamp_seconds {}\n",
                earliest.0
            ));
        }
    }
    if let Ok(register) = state.orchard.credential_register_for_system(&system).await {
        credential_metrics(&mut out, &register, trusted.is_some());
    }
    if let Ok(n) = state.orchard.pending_push_count(&system).await {
        out.push_str("# HELP orchard_pushes_pending Channels that owe a push.\n");
        out.push_str("# TYPE orchard_pushes_pending gauge\n");
        out.push_str(&format!("orchard_pushes_pending {n}\n"));
    }
    out.push_str(
        "# HELP orchard_push_pacing_rate Pushes per second this node's dispatcher paces at now (adaptive pacing, \
         or the fixed push.rate).\n",
    );
    out.push_str("# TYPE orchard_push_pacing_rate gauge\n");
    out.push_str(&format!(
        "orchard_push_pacing_rate {:.1}\n",
        state.orchard.push_pacing_rate()
    ));
    out.push_str(
        "# HELP orchard_device_requests_in_flight Device requests (check-ins and command sessions) whose \
         signature verified, being served on this node now: adaptive pacing's congestion signal.\n",
    );
    out.push_str("# TYPE orchard_device_requests_in_flight gauge\n");
    out.push_str(&format!(
        "orchard_device_requests_in_flight {}\n",
        state.orchard.device_requests_in_flight()
    ));
    out.push_str(
        "# HELP orchard_device_requests_served_total Device requests whose signature verified that this node \
         served since it started.\n",
    );
    out.push_str("# TYPE orchard_device_requests_served_total counter\n");
    out.push_str(&format!(
        "orchard_device_requests_served_total {}\n",
        state.orchard.device_requests_served()
    ));
    let mut exposition = Exposition::new(&mut out);
    node_metrics(&mut exposition, &state.orchard.metrics().snapshot());
    match state.orchard.operational_figures(&system).await {
        Ok(figures) => database_metrics(&mut exposition, &figures, trusted.is_some()),
        Err(e) => tracing::warn!(error = %e, "metrics: reading the database figures failed"),
    }
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}

/// This node's counters since it started (Prometheus sums the nodes).
fn node_metrics(e: &mut Exposition<'_>, m: &orchard_core::observability::MetricsSnapshot) {
    e.family(
        "orchard_http_requests_total",
        "counter",
        "HTTP requests answered by this node, by route template (unmatched: no route) and status.",
    );
    for ((route, status), n) in &m.http_requests {
        e.sample(
            "orchard_http_requests_total",
            &[("route", route), ("status", &status.to_string())],
            n,
        );
    }
    e.family(
        "orchard_http_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to its answer, by route template.",
    );
    for (route, h) in &m.http_durations {
        for (upper, n) in h.cumulative() {
            e.sample(
                "orchard_http_request_duration_seconds_bucket",
                &[("route", route), ("le", &upper.to_string())],
                n,
            );
        }
        e.sample(
            "orchard_http_request_duration_seconds_bucket",
            &[("route", route), ("le", "+Inf")],
            h.count,
        );
        e.sample(
            "orchard_http_request_duration_seconds_sum",
            &[("route", route)],
            h.sum_seconds,
        );
        e.sample(
            "orchard_http_request_duration_seconds_count",
            &[("route", route)],
            h.count,
        );
    }
    e.family(
        "orchard_checkins_total",
        "counter",
        "Signed check-in messages decoded by this node, by MessageType.",
    );
    for (message_type, n) in &m.checkins {
        e.sample(
            "orchard_checkins_total",
            &[("message_type", message_type)],
            n,
        );
    }
    e.family(
        "orchard_command_results_total",
        "counter",
        "Command results stored by this node, by RequestType and status.",
    );
    for ((request_type, status), n) in &m.command_results {
        e.sample(
            "orchard_command_results_total",
            &[("request_type", request_type), ("status", status)],
            n,
        );
    }
    e.family(
        "orchard_push_results_total",
        "counter",
        "Pushes this node sent, by APNs reason (Success: delivered; Unreachable: APNs not reached; Other: an undocumented reason).",
    );
    for (reason, n) in &m.push_results {
        e.sample("orchard_push_results_total", &[("reason", reason)], n);
    }
    let count = |outcomes: &[(&'static str, u64)], which: Option<&str>| -> u64 {
        outcomes
            .iter()
            .filter(|(o, _)| which.is_none_or(|w| w == *o))
            .map(|(_, n)| n)
            .sum()
    };
    for (name, what, outcomes) in [
        ("dep", "DEP (ASM) token", &m.dep_syncs),
        ("apps", "Apps and Books location", &m.apps_syncs),
    ] {
        e.family(
            &format!("orchard_{name}_syncs_total"),
            "counter",
            &format!("{what} syncs this node ran (scheduled or asked for)."),
        );
        e.sample(
            &format!("orchard_{name}_syncs_total"),
            &[],
            count(outcomes, None),
        );
        e.family(
            &format!("orchard_{name}_sync_errors_total"),
            "counter",
            &format!("{what} syncs this node ran that failed."),
        );
        e.sample(
            &format!("orchard_{name}_sync_errors_total"),
            &[],
            count(outcomes, Some("error")),
        );
    }
    e.family(
        "orchard_jobs_runs_total",
        "counter",
        "Background job steps on this node, by job and outcome (idle, more, not_claimed: another node holds it or it is not due, failed).",
    );
    for ((job, outcome), n) in &m.job_runs {
        e.sample(
            "orchard_jobs_runs_total",
            &[("job", job), ("outcome", outcome)],
            n,
        );
    }
}

/// Figures read from the database at scrape time (the same on every node), and this node's pool. Departments'
/// Apps and Books syncs per tenant id only for a [`TrustedScraper`]; the open endpoint has them in aggregate.
fn database_metrics(
    e: &mut Exposition<'_>,
    f: &orchard_core::observability::OperationalFigures,
    trusted: bool,
) {
    let age = |t: orchard_types::UnixTime| (f.now.0 - t.0).max(0);
    e.family(
        "orchard_command_queue_depth",
        "gauge",
        "Commands waiting for a device, by status (queued, sent, not_now).",
    );
    for q in &f.queue {
        e.sample(
            "orchard_command_queue_depth",
            &[("status", &q.status)],
            q.commands,
        );
    }
    e.family(
        "orchard_command_queue_oldest_age_seconds",
        "gauge",
        "How long the longest-waiting command of each status has been queued (no sample when there is none).",
    );
    for q in &f.queue {
        if let Some(t) = q.oldest_queued_at {
            e.sample(
                "orchard_command_queue_oldest_age_seconds",
                &[("status", &q.status)],
                age(t),
            );
        }
    }
    e.family(
        "orchard_job_lease_holder",
        "gauge",
        "1 for the node that holds a cluster-leased background job's lease now.",
    );
    for job in &f.jobs {
        let held = job.lease_until.is_some_and(|until| until > f.now);
        if let (Some(node), true) = (&job.lease_owner, held) {
            e.sample(
                "orchard_job_lease_holder",
                &[("job", &job.name), ("node", node)],
                1,
            );
        }
    }
    e.family(
        "orchard_job_last_run_timestamp_seconds",
        "gauge",
        "When a cluster-leased background job last finished (unix seconds).",
    );
    for job in &f.jobs {
        if let Some(t) = job.last_finished_at {
            e.sample(
                "orchard_job_last_run_timestamp_seconds",
                &[("job", &job.name)],
                t.0,
            );
        }
    }
    e.family(
        "orchard_job_last_run_failed",
        "gauge",
        "1 when a cluster-leased background job's last run failed.",
    );
    for job in &f.jobs {
        e.sample(
            "orchard_job_last_run_failed",
            &[("job", &job.name)],
            u8::from(job.last_error.is_some()),
        );
    }
    e.family(
        "orchard_dep_last_sync_timestamp_seconds",
        "gauge",
        "When a DEP (ASM) token last synced successfully (unix seconds), by token id.",
    );
    for t in &f.dep_tokens {
        if let Some(at) = t.last_sync_at {
            e.sample(
                "orchard_dep_last_sync_timestamp_seconds",
                &[("token", &t.token)],
                at.0,
            );
        }
    }
    e.family(
        "orchard_dep_sync_lag_seconds",
        "gauge",
        "Seconds since a DEP (ASM) token last synced successfully, by token id.",
    );
    for t in &f.dep_tokens {
        if let Some(at) = t.last_sync_at {
            e.sample(
                "orchard_dep_sync_lag_seconds",
                &[("token", &t.token)],
                age(at),
            );
        }
    }
    e.family(
        "orchard_dep_sync_failing",
        "gauge",
        "1 when a DEP (ASM) token's last sync failed, by token id.",
    );
    for t in &f.dep_tokens {
        e.sample(
            "orchard_dep_sync_failing",
            &[("token", &t.token)],
            u8::from(t.failing),
        );
    }
    e.family(
        "orchard_apps_sync_lag_max_seconds",
        "gauge",
        "Seconds since the Apps and Books location synced longest ago last synced successfully (all departments).",
    );
    let synced = || f.apps_tokens.iter().filter_map(|t| t.last_sync_at);
    if let Some(oldest) = synced().min() {
        e.sample("orchard_apps_sync_lag_max_seconds", &[], age(oldest));
    }
    e.family(
        "orchard_apps_sync_failing",
        "gauge",
        "Departments whose last Apps and Books sync failed.",
    );
    e.sample(
        "orchard_apps_sync_failing",
        &[],
        f.apps_tokens.iter().filter(|t| t.failing).count(),
    );
    if trusted {
        e.family(
            "orchard_apps_last_sync_timestamp_seconds",
            "gauge",
            "When a department's Apps and Books location last synced successfully (unix seconds), by tenant id.",
        );
        for t in &f.apps_tokens {
            if let Some(at) = t.last_sync_at {
                e.sample(
                    "orchard_apps_last_sync_timestamp_seconds",
                    &[("tenant", &t.tenant.to_string())],
                    at.0,
                );
            }
        }
        e.family(
            "orchard_apps_sync_lag_seconds",
            "gauge",
            "Seconds since a department's Apps and Books location last synced successfully, by tenant id.",
        );
        for t in &f.apps_tokens {
            if let Some(at) = t.last_sync_at {
                e.sample(
                    "orchard_apps_sync_lag_seconds",
                    &[("tenant", &t.tenant.to_string())],
                    age(at),
                );
            }
        }
    }
    e.family(
        "orchard_db_pool_connections",
        "gauge",
        "This node's database connections: in_use, idle, and max (the pool's limit).",
    );
    for (state, n) in [
        ("in_use", f.pool.in_use),
        ("idle", f.pool.idle),
        ("max", f.pool.max),
    ] {
        e.sample("orchard_db_pool_connections", &[("state", state)], n);
    }
}

#[cfg(test)]
mod tests {
    use orchard_core::observability::{AppsSyncFigures, OperationalFigures};
    use orchard_store::{JobRunRecord, PoolFigures};
    use orchard_types::{TenantId, UnixTime};

    use super::*;

    fn figures(tenant: TenantId) -> OperationalFigures {
        OperationalFigures {
            now: UnixTime(1_000_000),
            queue: Vec::new(),
            jobs: Vec::new(),
            dep_tokens: Vec::new(),
            apps_tokens: vec![AppsSyncFigures {
                tenant,
                last_sync_at: Some(UnixTime(999_400)),
                failing: true,
            }],
            pool: PoolFigures {
                in_use: 1,
                idle: 2,
                max: 10,
            },
        }
    }

    #[test]
    fn a_lease_is_shown_while_it_is_held() {
        let job = |name: &str, owner: Option<&str>, until: Option<i64>| JobRunRecord {
            name: name.into(),
            lease_owner: owner.map(Into::into),
            lease_until: until.map(UnixTime),
            last_started_at: Some(UnixTime(999_000)),
            last_finished_at: Some(UnixTime(999_010)),
            last_error: None,
            runs: 3,
        };
        let mut f = figures(TenantId::new());
        f.jobs = vec![
            job("dep-sync", Some("node-a"), Some(1_000_060)),
            // A node that died: its lease ran out and nobody holds the job.
            job("apps-sync", Some("node-b"), Some(999_999)),
            job("identity-renewal", None, None),
        ];
        let mut out = String::new();
        database_metrics(&mut Exposition::new(&mut out), &f, false);
        let holders: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("orchard_job_lease_holder{"))
            .collect();
        assert_eq!(
            holders,
            vec!["orchard_job_lease_holder{job=\"dep-sync\",node=\"node-a\"} 1"]
        );
        assert!(out.contains("orchard_job_last_run_failed{job=\"identity-renewal\"} 0\n"));
    }

    #[test]
    fn departments_syncs_are_per_tenant_only_for_the_token_holder() {
        let tenant = TenantId::new();
        let mut open = String::new();
        database_metrics(&mut Exposition::new(&mut open), &figures(tenant), false);
        assert!(!open.contains(&tenant.to_string()), "{open}");
        assert!(
            open.contains("orchard_apps_sync_lag_max_seconds 600\n"),
            "{open}"
        );
        assert!(open.contains("orchard_apps_sync_failing 1\n"), "{open}");

        let mut trusted = String::new();
        database_metrics(&mut Exposition::new(&mut trusted), &figures(tenant), true);
        assert!(
            trusted.contains(&format!(
                "orchard_apps_sync_lag_seconds{{tenant=\"{tenant}\"}} 600\n"
            )),
            "{trusted}"
        );
    }
}
