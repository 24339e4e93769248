//! Bulk actions from the device list, and the jobs that follow them. The reader ticks iPads (or "all matching the
//! filter"), chooses an action and gets a dry-run page first: the action and how many iPads it reaches, before
//! anything is queued. Confirming queues the commands and a job in one transaction (core's `start_bulk_job`,
//! the same checks as `POST /api/v1/commands/bulk`; erasing needs the count typed in) and leads to the job's page,
//! whose progress is read from the queue: it survives a reload, htmx refreshes it while iPads answer, and without
//! JavaScript a reload shows the same.
//!
//! Both posts are CSRF-checked first and audited under the API's `device.command.bulk_queue` (the dry run with
//! `dry_run: true`), with `via: web`.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use orchard_core::commands::bulk_jobs::BulkJobView;
use orchard_core::commands::policy::{BulkTarget, MAX_BULK_DEVICES};
use orchard_core::reporting::audit_actions::AuditNote;
use orchard_store::Page;
use orchard_types::DeviceId;

use super::i18n::Texts;
use super::page::{error_page, redirect, render, Chrome};
use super::selection::{commands_of, destructive, label, ListForm};
use super::session::SignedIn;
use crate::state::AppState;

/// The bulk form as posted: repeated `device` fields, so read as pairs.
struct BulkForm {
    csrf: String,
    action: String,
    all_matching: bool,
    devices: Vec<String>,
    filter: ListForm,
    confirm_count: String,
}

impl BulkForm {
    fn of(pairs: Vec<(String, String)>) -> BulkForm {
        let filter = ListForm::from_pairs(&pairs);
        let mut form = BulkForm {
            csrf: String::new(),
            action: String::new(),
            all_matching: false,
            devices: Vec::new(),
            filter,
            confirm_count: String::new(),
        };
        for (k, v) in pairs {
            match k.as_str() {
                "csrf" => form.csrf = v,
                "action" => form.action = v,
                "all_matching" => form.all_matching = !v.is_empty(),
                "device" => form.devices.push(v),
                "confirm_count" => form.confirm_count = v,
                _ => {}
            }
        }
        form
    }
}

/// Why a bulk form cannot be carried out, in the reader's words (a 400 page).
fn refused(who: &SignedIn, key: &str) -> Response {
    let t = who.texts;
    error_page(t, StatusCode::BAD_REQUEST, t.get(key), &who.request_id)
}

/// The devices a form names: the ticked ones, or every device of the caller's scope matching the filter (read
/// through core's scoped search, so another department's iPads are never among them). Err: the page to answer.
async fn target_of(
    state: &AppState,
    who: &SignedIn,
    form: &BulkForm,
) -> Result<BulkTarget, Response> {
    let ids = if form.all_matching {
        let query = form
            .filter
            .query(who.texts, state.orchard.now())
            .map_err(|problem| {
                error_page(
                    who.texts,
                    StatusCode::BAD_REQUEST,
                    &problem,
                    &who.request_id,
                )
            })?;
        let mut ids = Vec::new();
        let mut offset = 0;
        loop {
            let (devices, _) = state
                .orchard
                .search_devices(
                    &who.principal,
                    &query,
                    Page {
                        limit: 1000,
                        offset,
                    },
                )
                .await
                .map_err(|e| who.core_error(e))?;
            let last = devices.len() < 1000;
            ids.extend(devices.iter().map(|d| d.id));
            offset += 1000;
            // One more than the bound is enough for core to refuse the request as too large.
            if last || ids.len() > MAX_BULK_DEVICES {
                break;
            }
        }
        ids
    } else {
        let mut ids = Vec::with_capacity(form.devices.len());
        for id in &form.devices {
            match DeviceId::parse(id) {
                Ok(id) => ids.push(id),
                Err(_) => return Err(refused(who, "error.form")),
            }
        }
        if ids.is_empty() {
            return Err(refused(who, "bulk.none_selected"));
        }
        ids
    };
    Ok(BulkTarget {
        device_ids: Some(ids),
        tenant_id: None,
        group_id: None,
    })
}

#[derive(Template)]
#[template(path = "bulk_preview.html")]
struct PreviewPage {
    c: Chrome,
    csrf: String,
    action: String,
    action_label: &'static str,
    summary: String,
    skipped: Option<String>,
    affected: usize,
    all_matching: bool,
    devices: Vec<String>,
    filter: Vec<(&'static str, String)>,
    /// Erasing: the count must be typed in.
    destructive: bool,
    confirm_label: String,
}

async fn audit(
    state: &AppState,
    who: &SignedIn,
    status: u16,
    note: AuditNote,
    full_path: &str,
) -> Result<(), Response> {
    who.record_post(
        state,
        "/commands/bulk",
        "/commands/bulk".into(),
        full_path.into(),
        status,
        note,
    )
    .await
}

/// `POST /ui/bulk/preview`: the dry run. Nothing is queued.
pub(super) async fn preview(
    State(state): State<AppState>,
    who: SignedIn,
    pairs: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let t = who.texts;
    let Ok(Form(pairs)) = pairs else {
        return refused(&who, "error.form");
    };
    let form = BulkForm::of(pairs);
    if let Some(refusal) = who.csrf_refusal(&form.csrf) {
        return refusal;
    }
    let Some(commands) = commands_of(&form.action) else {
        return refused(&who, "bulk.bad_action");
    };
    let target = match target_of(&state, &who, &form).await {
        Ok(target) => target,
        Err(page) => return page,
    };
    let outcome = state
        .orchard
        .bulk_job_dry_run(&who.principal, &target, &commands)
        .await;
    let mut note = AuditNote::default()
        .detail("action", form.action.clone())
        .detail("dry_run", true);
    if let Ok(o) = &outcome {
        note = note
            .detail("affected", o.affected)
            .detail("skipped", o.skipped);
    }
    let status = match &outcome {
        Ok(_) => 200,
        Err(e) => SignedIn::status_of(Err(e)),
    };
    if let Err(page) = audit(&state, &who, status, note, "/ui/bulk/preview").await {
        return page;
    }
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return who.core_error(e),
    };
    let action_label = label(t, &form.action);
    let page = PreviewPage {
        c: Chrome::of(&state, &who, "/ui/devices").await,
        csrf: who.user.csrf_token.clone(),
        summary: t.fill(
            "bulk.preview.summary",
            &[
                ("action", action_label),
                ("count", &outcome.affected.to_string()),
            ],
        ),
        skipped: (outcome.skipped > 0).then(|| {
            t.fill(
                "bulk.preview.skipped",
                &[("count", &outcome.skipped.to_string())],
            )
        }),
        affected: outcome.affected,
        destructive: destructive(&form.action),
        confirm_label: t.fill(
            "bulk.preview.type_count",
            &[("count", &outcome.affected.to_string())],
        ),
        action_label,
        action: form.action,
        all_matching: form.all_matching,
        devices: form.devices,
        filter: form.filter.filter_fields(),
    };
    render(StatusCode::OK, &page)
}

/// `POST /ui/bulk`: queues the action and its job, then shows the job.
pub(super) async fn start(
    State(state): State<AppState>,
    who: SignedIn,
    pairs: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(pairs)) = pairs else {
        return refused(&who, "error.form");
    };
    let form = BulkForm::of(pairs);
    if let Some(refusal) = who.csrf_refusal(&form.csrf) {
        return refusal;
    }
    let Some(commands) = commands_of(&form.action) else {
        return refused(&who, "bulk.bad_action");
    };
    let target = match target_of(&state, &who, &form).await {
        Ok(target) => target,
        Err(page) => return page,
    };
    // A destructive action carries the count the reader typed; others the count they were shown is not needed.
    let confirm_count = form.confirm_count.trim().parse::<usize>().ok();
    let outcome = state
        .orchard
        .start_bulk_job(
            &who.principal,
            &target,
            &form.action,
            &commands,
            confirm_count,
        )
        .await;
    let mut note = AuditNote::default().detail("action", form.action.clone());
    if let Ok(job) = &outcome {
        note = note
            .target(&job.id)
            .detail("affected", job.devices)
            .detail("skipped", job.skipped)
            .detail("queued", job.commands);
    }
    let status = SignedIn::status_of(outcome.as_ref().map(|_| ()));
    if let Err(page) = audit(&state, &who, status, note, "/ui/bulk").await {
        return page;
    }
    match outcome {
        Ok(job) => redirect(&format!("/ui/jobs/{}", job.id)),
        Err(e) => who.core_error(e),
    }
}

/// A job as its page and the list show it.
struct JobLine {
    id: String,
    action: &'static str,
    created: String,
    by: String,
    summary: String,
    progress: String,
    percent: i64,
    finished: bool,
    failed: i64,
}

fn job_line(t: Texts, job: &BulkJobView) -> JobLine {
    JobLine {
        id: job.id.clone(),
        action: label(t, &job.action),
        created: job.created_at.replace('T', " ").chars().take(16).collect(),
        by: job.created_by.clone(),
        summary: t.fill(
            "jobs.summary",
            &[
                ("devices", &job.devices.to_string()),
                ("commands", &job.commands.to_string()),
                ("skipped", &job.skipped.to_string()),
            ],
        ),
        progress: t.fill(
            "jobs.progress",
            &[
                ("done", &job.done.to_string()),
                ("failed", &job.failed.to_string()),
                ("expired", &job.expired.to_string()),
                ("waiting", &job.waiting.to_string()),
            ],
        ),
        percent: job.percent(),
        finished: job.finished(),
        failed: job.failed + job.expired,
    }
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    c: Chrome,
    job: JobLine,
}

/// `GET /ui/jobs/{id}`: a job and its progress; another department's job answers like a missing one.
pub(super) async fn job_page(
    State(state): State<AppState>,
    who: SignedIn,
    Path(id): Path<String>,
) -> Response {
    let job = match state.orchard.bulk_job(&who.principal, &id).await {
        Ok(job) => job,
        Err(e) => return who.core_error(e),
    };
    let page = JobPage {
        c: Chrome::of(&state, &who, &format!("/ui/jobs/{}", job.id)).await,
        job: job_line(who.texts, &job),
    };
    render(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    c: Chrome,
    jobs: Vec<JobLine>,
}

/// `GET /ui/jobs`: the newest jobs of the reader's scope.
pub(super) async fn jobs_page(State(state): State<AppState>, who: SignedIn) -> Response {
    let jobs = match state.orchard.recent_bulk_jobs(&who.principal).await {
        Ok(jobs) => jobs,
        Err(e) => return who.core_error(e),
    };
    let page = JobsPage {
        c: Chrome::of(&state, &who, "/ui/jobs").await,
        jobs: jobs.iter().map(|j| job_line(who.texts, j)).collect(),
    };
    render(StatusCode::OK, &page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bulk_form_reads_repeated_devices_and_the_filter() {
        let pairs = [
            ("csrf", "c"),
            ("action", "lock"),
            ("device", "a"),
            ("device", "b"),
            ("q", "ipad"),
            ("all_matching", "1"),
            ("confirm_count", "2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let f = BulkForm::of(pairs);
        assert_eq!(f.devices, vec!["a", "b"]);
        assert!(f.all_matching);
        assert_eq!(f.action, "lock");
        assert_eq!(f.confirm_count, "2");
        assert!(f
            .filter
            .filter_fields()
            .contains(&("q", "ipad".to_string())));
        assert!(commands_of("lock").is_some() && commands_of("wipe").is_none());
        assert!(destructive("erase") && !destructive("lock"));
    }
}
