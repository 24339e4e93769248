//! The audit log and the usage report as pages, for those who may read them (department admins and helpdesk
//! for their department, central IT for all): the same core calls, scope and filters as `GET /api/v1/audit` and
//! `GET /api/v1/usage`, whose CSV exports the pages link to (the session cookie is accepted by the API).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use orchard_core::reporting::audit::{parse_time_bound, AuditQuery};
use orchard_core::reporting::usage::{format_day, parse_day, utc_day, UsageReport};
use orchard_store::Page;
use serde::Deserialize;

use super::page::{render, url_encode, Chrome};
use super::session::SignedIn;
use crate::state::AppState;

/// Events on one page of the audit log.
const AUDIT_PAGE: i64 = 50;

struct AuditLine {
    at: String,
    actor: String,
    role: String,
    action: String,
    target: String,
    outcome: String,
    status: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    c: Chrome,
    events: Vec<AuditLine>,
    actor: String,
    action: String,
    from: String,
    to: String,
    shown: String,
    newer: Option<String>,
    older: Option<String>,
    csv: String,
    problem: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct AuditForm {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    offset: i64,
}

impl AuditForm {
    fn query_string(&self, offset: i64) -> String {
        format!(
            "actor={}&action={}&from={}&to={}&offset={offset}",
            url_encode(&self.actor),
            url_encode(&self.action),
            url_encode(&self.from),
            url_encode(&self.to)
        )
    }
}

/// `GET /ui/audit`.
pub(super) async fn audit_page(
    State(state): State<AppState>,
    who: SignedIn,
    query: Result<Query<AuditForm>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let t = who.texts;
    let overseer = match who.principal.oversight() {
        Ok(o) => o,
        Err(e) => return who.core_error(e),
    };
    let form = query.map(|Query(q)| q).unwrap_or_default();
    let bound = |s: &str, end: bool| -> Result<_, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        parse_time_bound(s, end)
            .map(Some)
            .map_err(|_| t.get("audit.bad_time").to_string())
    };
    let mut problem = None;
    let query = match (bound(&form.from, false), bound(&form.to, true)) {
        (Ok(from), Ok(to)) => AuditQuery {
            tenant_id: None,
            actor: Some(form.actor.clone()),
            action: Some(form.action.clone()),
            from,
            to,
        },
        (Err(p), _) | (_, Err(p)) => {
            problem = Some(p);
            AuditQuery::default()
        }
    };
    let offset = form.offset.max(0);
    let page = Page {
        limit: AUDIT_PAGE,
        offset,
    };
    let (events, total) = match state.orchard.list_audit(&overseer, &query, page).await {
        Ok(found) => found,
        Err(orchard_core::CoreError::Invalid(reason)) => {
            problem = Some(reason);
            (Vec::new(), 0)
        }
        Err(e) => return who.core_error(e),
    };
    let shown = if events.is_empty() {
        t.get("audit.none").to_string()
    } else {
        t.fill(
            "audit.shown",
            &[
                ("first", &(offset + 1).to_string()),
                ("last", &(offset + events.len() as i64).to_string()),
                ("total", &total.to_string()),
            ],
        )
    };
    let page = AuditPage {
        c: Chrome::of(
            &state,
            &who,
            &format!("/ui/audit?{}", form.query_string(offset)),
        )
        .await,
        events: events
            .iter()
            .map(|e| AuditLine {
                at: e
                    .at
                    .to_rfc3339()
                    .replace('T', " ")
                    .chars()
                    .take(19)
                    .collect(),
                actor: e.actor_name.clone().unwrap_or_else(|| e.actor.clone()),
                role: e.actor_role.clone().unwrap_or_default(),
                action: e.action.clone(),
                target: e.target.clone().unwrap_or_default(),
                outcome: e.outcome.clone(),
                status: e.status.map(|s| s.to_string()).unwrap_or_default(),
            })
            .collect(),
        newer: (offset > 0).then(|| {
            format!(
                "/ui/audit?{}",
                form.query_string((offset - AUDIT_PAGE).max(0))
            )
        }),
        older: (offset + AUDIT_PAGE < total)
            .then(|| format!("/ui/audit?{}", form.query_string(offset + AUDIT_PAGE))),
        csv: format!(
            "/api/v1/audit.csv?actor={}&action={}&from={}&to={}",
            url_encode(&form.actor),
            url_encode(&form.action),
            url_encode(&form.from),
            url_encode(&form.to)
        ),
        actor: form.actor,
        action: form.action,
        from: form.from,
        to: form.to,
        shown,
        problem,
    };
    render(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "usage.html")]
struct UsagePage {
    c: Chrome,
    from: String,
    to: String,
    report: Option<UsageReport>,
    csv: String,
    problem: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct UsageForm {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// `GET /ui/usage`: by default the current month up to today (UTC).
pub(super) async fn usage_page(
    State(state): State<AppState>,
    who: SignedIn,
    query: Result<Query<UsageForm>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let t = who.texts;
    let overseer = match who.principal.oversight() {
        Ok(o) => o,
        Err(e) => return who.core_error(e),
    };
    let form = query.map(|Query(q)| q).unwrap_or_default();
    let today = utc_day(state.orchard.now());
    let from = if form.from.trim().is_empty() {
        format_day(today.replace_day(1).unwrap_or(today))
    } else {
        form.from.trim().to_string()
    };
    let to = if form.to.trim().is_empty() {
        format_day(today)
    } else {
        form.to.trim().to_string()
    };
    let mut problem = None;
    let report = match (parse_day(&from), parse_day(&to)) {
        (Ok(f), Ok(l)) => {
            let settings = state.orchard.usage_settings().clone();
            match state.orchard.usage_report(&overseer, f, l, &settings).await {
                Ok(r) => Some(r),
                Err(orchard_core::CoreError::Invalid(reason)) => {
                    problem = Some(reason);
                    None
                }
                Err(e) => return who.core_error(e),
            }
        }
        _ => {
            problem = Some(t.get("usage.bad_day").to_string());
            None
        }
    };
    let page = UsagePage {
        c: Chrome::of(
            &state,
            &who,
            &format!(
                "/ui/usage?from={}&to={}",
                url_encode(&from),
                url_encode(&to)
            ),
        )
        .await,
        csv: format!(
            "/api/v1/usage?from={}&to={}&format=csv",
            url_encode(&from),
            url_encode(&to)
        ),
        from,
        to,
        report,
        problem,
    };
    render(StatusCode::OK, &page)
}
