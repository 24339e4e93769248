//! The department dashboard (`/ui`): how many iPads, how many enrolled and waiting (and how many serials Apple's
//! sync assigned to the department that have not enrolled yet), how many not seen for N
//! days, which iOS versions they run and how many are behind the newest one seen, and the recent actions (for
//! those who may read the audit log). Central IT sees the same over every department.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use orchard_core::reporting::audit::AuditQuery;
use orchard_store::{DeviceQuery, Page};
use orchard_types::EnrollmentState;
use serde::Deserialize;

use super::page::{render, Chrome};
use super::session::SignedIn;
use crate::state::AppState;

/// "Not seen for N days" unless the reader asks for another N.
const DEFAULT_DAYS: i64 = 7;
/// OS versions listed.
const VERSIONS: i64 = 12;
/// Recent actions listed.
const RECENT: i64 = 10;

struct Version {
    version: String,
    count: i64,
    behind: bool,
}

/// A certificate or token that runs out soon, as the dashboard lists it.
struct Expiring {
    what: String,
    when: String,
    /// `amber` within the warning period, `red` when expired.
    level: &'static str,
}

struct Recent {
    at: String,
    actor: String,
    action: String,
    outcome: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    c: Chrome,
    total: i64,
    enrolled: i64,
    pending: i64,
    /// Serials Apple's sync assigned to the department that have not enrolled yet.
    asm_waiting: i64,
    not_seen: i64,
    not_seen_text: String,
    not_seen_link: String,
    behind_text: String,
    versions: Vec<Version>,
    recent: Option<Vec<Recent>>,
    /// Device identities of the reader's scope that expire within [`EXPIRY_DAYS`].
    identities_expiring: i64,
    identities_text: String,
    identities_link: String,
    /// Central IT's credentials close to expiry (operators only).
    expiring: Vec<Expiring>,
}

/// "Expiring soon" means within this many days (the first warning threshold of the credential register).
const EXPIRY_DAYS: i64 = 60;

#[derive(Deserialize)]
pub(super) struct DashboardQuery {
    days: Option<i64>,
}

/// Orders dotted version numbers numerically (`17.10` after `17.9`).
fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// `GET /ui`.
pub(super) async fn dashboard(
    State(state): State<AppState>,
    who: SignedIn,
    query: Result<Query<DashboardQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let t = who.texts;
    let days = query
        .ok()
        .and_then(|Query(q)| q.days)
        .unwrap_or(DEFAULT_DAYS)
        .clamp(1, 3650);
    let orchard = &state.orchard;
    let now = orchard.now();
    let counted = async {
        Ok::<_, orchard_core::CoreError>((
            orchard
                .device_counts(
                    &who.principal,
                    &DeviceQuery::default(),
                    now.plus_seconds(-days * 86_400),
                )
                .await?,
            orchard
                .os_version_counts(
                    &who.principal,
                    &DeviceQuery {
                        state: Some(EnrollmentState::Enrolled),
                        ..DeviceQuery::default()
                    },
                    VERSIONS,
                )
                .await?,
        ))
    };
    let identities_expiring = match orchard
        .device_counts(
            &who.principal,
            &DeviceQuery {
                state: Some(EnrollmentState::Enrolled),
                identity_expires_before: Some(now.plus_seconds(EXPIRY_DAYS * 86_400)),
                ..DeviceQuery::default()
            },
            now,
        )
        .await
    {
        Ok(c) => c.total,
        Err(e) => return who.core_error(e),
    };
    // Central IT's own credentials close to expiry, from the credential register (the push certificate, DEP
    // server tokens, the CAs, the profile signer, the TLS certificate).
    let mut expiring = Vec::new();
    if who.principal.operator().is_ok() {
        use orchard_core::credentials::{CredentialKind, CredentialState};
        let register = match who.principal.oversight() {
            Ok(overseer) => match orchard.credential_register(&overseer).await {
                Ok(r) => r,
                Err(e) => return who.core_error(e),
            },
            Err(e) => return who.core_error(e),
        };
        for c in register.credentials.iter().filter(|c| {
            c.tenant().is_none()
                && matches!(c.state, CredentialState::Warning | CredentialState::Expired)
        }) {
            let what = match c.kind {
                CredentialKind::PushCertificate => t.get("dashboard.expiring.push").to_string(),
                CredentialKind::DepToken => t.fill("dashboard.expiring.dep", &[("name", &c.name)]),
                _ => c.name.clone(),
            };
            let days = c.days_left.unwrap_or(-1);
            let date: String = c
                .expires_at
                .as_deref()
                .unwrap_or_default()
                .chars()
                .take(10)
                .collect();
            expiring.push(Expiring {
                what,
                when: t.fill(
                    "dashboard.expiring.days",
                    &[("days", &days.to_string()), ("date", &date)],
                ),
                level: if c.state == CredentialState::Expired {
                    "red"
                } else {
                    "amber"
                },
            });
        }
    }
    let (counts, by_version) = match counted.await {
        Ok(c) => c,
        Err(e) => return who.core_error(e),
    };
    let asm_waiting = match orchard.count_dep_waiting_to_enroll(&who.principal).await {
        Ok(n) => n,
        Err(e) => return who.core_error(e),
    };
    let newest = by_version
        .iter()
        .filter_map(|(v, _)| v.as_deref())
        .max_by_key(|v| version_key(v))
        .unwrap_or("")
        .to_string();
    let versions: Vec<Version> = by_version
        .iter()
        .map(|(v, n)| Version {
            version: v
                .clone()
                .unwrap_or_else(|| t.get("dashboard.unknown_version").to_string()),
            count: *n,
            behind: v.as_deref() != Some(newest.as_str()),
        })
        .collect();
    let behind: i64 = versions.iter().filter(|v| v.behind).map(|v| v.count).sum();
    // Recent actions: the audit log, for those who may read it.
    let recent = match who.principal.oversight() {
        Ok(overseer) => orchard
            .list_audit(
                &overseer,
                &AuditQuery::default(),
                Page {
                    limit: RECENT,
                    offset: 0,
                },
            )
            .await
            .ok()
            .map(|(events, _)| {
                events
                    .into_iter()
                    .map(|e| Recent {
                        at: e
                            .at
                            .to_rfc3339()
                            .replace('T', " ")
                            .chars()
                            .take(16)
                            .collect(),
                        actor: e.actor_name.unwrap_or(e.actor),
                        action: e.action,
                        outcome: e.outcome,
                    })
                    .collect()
            }),
        Err(_) => None,
    };
    let page = DashboardPage {
        c: Chrome::of(&state, &who, "/ui").await,
        total: counts.total,
        enrolled: counts.enrolled,
        pending: counts.pending,
        asm_waiting,
        not_seen: counts.enrolled_not_seen,
        not_seen_text: t.fill("dashboard.not_seen", &[("days", &days.to_string())]),
        not_seen_link: format!("/ui/devices?state=enrolled&not_seen_days={days}&sort=last_seen"),
        behind_text: t.fill(
            "dashboard.behind",
            &[("newest", &newest), ("count", &behind.to_string())],
        ),
        versions,
        recent,
        identities_expiring,
        identities_text: t.fill(
            "dashboard.identities_expiring",
            &[("days", &EXPIRY_DAYS.to_string())],
        ),
        identities_link: format!("/ui/devices?state=enrolled&identity_expires_days={EXPIRY_DAYS}"),
        expiring,
    };
    render(StatusCode::OK, &page)
}
