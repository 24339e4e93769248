//! Operations outside the API: `/healthz` (liveness), `/readyz` (readiness: the database answers) and
//! `/metrics` for the operators' monitoring (in the OpenAPI
//! document too). Metrics carry counts and days, never names (DEP tokens are labelled by id); when a metrics
//! token is configured, `/metrics` answers only `Authorization: Bearer <that token>`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}
