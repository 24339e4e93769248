//! Planned-maintenance notices in the UI: every page's frame shows the notices in force or announced
//! ([`super::page::Chrome`]), in the reader's language; operators publish and withdraw them on `/ui/maintenance`. The posts
//! are checked like every form (CSRF first, then core's operator capability) and recorded in the audit log with
//! the API's action names (`maintenance_notice.publish`, `maintenance_notice.withdraw`).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use orchard_core::reporting::audit_actions::AuditNote;
use orchard_core::tenancy::maintenance::NewMaintenanceNotice;
use orchard_core::CoreError;
use orchard_types::MaintenanceNoticeId;
use serde::Deserialize;

use super::page::{error_page, redirect, render, Chrome, NoticeLine};
use super::session::SignedIn;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "maintenance.html")]
struct MaintenancePage {
    c: Chrome,
    notices: Vec<NoticeLine>,
    published: bool,
    withdrawn: bool,
}

/// `GET /ui/maintenance` (operators).
pub(super) async fn maintenance_page(
    State(state): State<AppState>,
    who: SignedIn,
    query: axum::extract::RawQuery,
) -> Response {
    if let Err(e) = who.principal.operator() {
        return who.core_error(e);
    }
    let notices = match state.orchard.maintenance_notices(&who.principal).await {
        Ok(n) => n,
        Err(e) => return who.core_error(e),
    };
    let q = query.0.unwrap_or_default();
    let page = MaintenancePage {
        c: Chrome::of(&state, &who, "/ui/maintenance").await,
        notices: notices
            .iter()
            .map(|n| NoticeLine::of(who.texts, n))
            .collect(),
        published: q.split('&').any(|p| p == "done=published"),
        withdrawn: q.split('&').any(|p| p == "done=withdrawn"),
    };
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub(super) struct PublishForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    starts_at: String,
    #[serde(default)]
    ends_at: String,
    #[serde(default)]
    text_sv: String,
    #[serde(default)]
    text_en: String,
}

/// A browser's `datetime-local` value (`2026-12-05T06:00`) is read as UTC, as the form says; a full RFC 3339
/// time is taken as it is.
fn utc(value: &str) -> String {
    let v = value.trim();
    let has_zone = v.ends_with('Z')
        || v.ends_with('z')
        || v.get(19..).is_some_and(|tail| tail.contains(['+', '-']));
    match (has_zone, v.len()) {
        (true, _) => v.to_string(),
        (false, 16) => format!("{v}:00Z"),
        (false, _) => format!("{v}Z"),
    }
}

fn form_refused(who: &SignedIn) -> Response {
    let t = who.texts;
    error_page(
        t,
        StatusCode::BAD_REQUEST,
        t.get("error.form"),
        &who.request_id,
    )
}

/// `POST /ui/maintenance`: publish.
pub(super) async fn publish(
    State(state): State<AppState>,
    who: SignedIn,
    form: Result<Form<PublishForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return form_refused(&who);
    };
    if let Some(refused) = who.csrf_refusal(&form.csrf) {
        return refused;
    }
    let new = NewMaintenanceNotice {
        starts_at: utc(&form.starts_at),
        ends_at: utc(&form.ends_at),
        text_sv: form.text_sv,
        text_en: form.text_en,
    };
    let outcome = match who.principal.operator() {
        Ok(operator) => state
            .orchard
            .publish_maintenance_notice(&operator, &new)
            .await
            .map(|n| n.id),
        Err(e) => Err(e),
    };
    let mut note = AuditNote::default();
    if let Ok(id) = &outcome {
        note = note.target(id);
    }
    let status = SignedIn::status_of(outcome.as_ref().map(|_| ()));
    if let Err(page) = who
        .record_post(
            &state,
            "/maintenance",
            "/maintenance".into(),
            "/ui/maintenance".into(),
            status,
            note,
        )
        .await
    {
        return page;
    }
    match outcome {
        Ok(_) => redirect("/ui/maintenance?done=published"),
        Err(CoreError::Invalid(reason)) => {
            let t = who.texts;
            error_page(
                t,
                StatusCode::UNPROCESSABLE_ENTITY,
                &t.fill("maintenance.invalid", &[("reason", &reason)]),
                &who.request_id,
            )
        }
        Err(e) => who.core_error(e),
    }
}

#[derive(Deserialize)]
pub(super) struct WithdrawForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/maintenance/{id}/withdraw`.
pub(super) async fn withdraw(
    State(state): State<AppState>,
    who: SignedIn,
    Path(id): Path<String>,
    form: Result<Form<WithdrawForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return form_refused(&who);
    };
    if let Some(refused) = who.csrf_refusal(&form.csrf) {
        return refused;
    }
    let outcome = match (who.principal.operator(), MaintenanceNoticeId::parse(&id)) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(_)) => Err(CoreError::NotFound),
        (Ok(operator), Ok(notice)) => {
            state
                .orchard
                .withdraw_maintenance_notice(&operator, notice)
                .await
        }
    };
    let status = match SignedIn::status_of(outcome.as_ref().copied()) {
        201 => 204,
        other => other,
    };
    // The API withdraws with DELETE: the same method gives the same action name (`maintenance_notice.withdraw`).
    if let Err(page) = who
        .record_request(
            &state,
            "DELETE",
            "/maintenance/{id}",
            format!("/maintenance/{id}"),
            format!("/ui/maintenance/{id}/withdraw"),
            status,
            AuditNote::default().target(&id),
        )
        .await
    {
        return page;
    }
    match outcome {
        Ok(()) => redirect("/ui/maintenance?done=withdrawn"),
        Err(e) => who.core_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn form_times_are_read_as_utc() {
        assert_eq!(utc("2026-12-05T06:00"), "2026-12-05T06:00:00Z");
        assert_eq!(utc("2026-12-05T06:00:30"), "2026-12-05T06:00:30Z");
        assert_eq!(utc("2026-12-05T06:00:00Z"), "2026-12-05T06:00:00Z");
        assert_eq!(
            utc("2026-12-05T06:00:00+01:00"),
            "2026-12-05T06:00:00+01:00"
        );
        assert_eq!(utc(" 2026-12-05T06:00 "), "2026-12-05T06:00:00Z");
    }
}
