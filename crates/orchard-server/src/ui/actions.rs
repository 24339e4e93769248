//! A device's actions from its page: update inventory, lock (message, phone number), Lost Mode (enable with
//! message, phone number and footnote; locate; play a sound; disable), restart, shut down, clear the passcode
//! and erase, optionally with Return to Service (the last two confirmed by typing the serial number). The page shows only what the reader's role allows; the post is checked again here
//! and in core: the CSRF token first, then core's scope and role table (another tenant's device answers like a
//! missing one, a viewer is refused), then the confirmation of dangerous commands.
//!
//! Each post is one audit event with the same action name as the API's `POST /devices/{id}/commands`
//! (`device.command.queue`), refused ones included, with `via: web` in its details.
//!
//! Clearing Activation Lock is no command to the iPad: Orchard asks Apple's activation service with the escrowed
//! bypass code (core's `clear_activation_lock`, operators and the tenant's admins), recorded as the API's
//! `device.activation_lock.clear`; Apple's refusal is a 502 page with Apple's reason.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use orchard_core::device::checkin::initial_inventory_commands;
use orchard_core::reporting::audit_actions::AuditNote;
use orchard_protocol::commands::{Command, ReturnToService};
use orchard_types::DeviceId;
use serde::Deserialize;

use super::page::{error_page, redirect};
use super::session::SignedIn;
use crate::state::AppState;

/// The longest lock message and phone number taken (the Lock Screen shows a few lines).
const MAX_LOCK_TEXT: usize = 200;

#[derive(Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    footnote: String,
    #[serde(default)]
    confirm_serial: String,
    /// Erase with Return to Service: the iPad comes back through Setup Assistant enrolled again.
    #[serde(default)]
    return_to_service: Option<String>,
}

fn optional(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// The commands an action queues, or None for an action that does not exist.
fn commands_of(action: &str, form: &ActionForm) -> Option<Vec<Command>> {
    Some(match action {
        "inventory" => initial_inventory_commands(),
        "lock" => vec![Command::DeviceLock {
            message: optional(&form.message),
            phone_number: optional(&form.phone),
        }],
        "restart" => vec![Command::RestartDevice { notify_user: None }],
        "shutdown" => vec![Command::ShutDownDevice],
        "lost_mode" => vec![Command::EnableLostMode {
            message: optional(&form.message),
            phone_number: optional(&form.phone),
            footnote: optional(&form.footnote),
        }],
        "lost_mode_locate" => vec![Command::DeviceLocation],
        "lost_mode_sound" => vec![Command::PlayLostModeSound],
        "lost_mode_disable" => vec![Command::DisableLostMode],
        "clear_passcode" => vec![Command::ClearPasscode { unlock_token: None }],
        "erase" => vec![Command::EraseDevice {
            preserve_data_plan: None,
            disallow_proximity_setup: None,
            return_to_service: form.return_to_service.as_ref().map(|_| ReturnToService {
                enabled: true,
                wifi_profile_data: None,
                mdm_profile_data: None,
            }),
        }],
        _ => return None,
    })
}

/// `POST /ui/devices/{id}/actions/{action}`.
pub(super) async fn device_action(
    State(state): State<AppState>,
    who: SignedIn,
    Path((id, action)): Path<(String, String)>,
    form: Result<Form<ActionForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let t = who.texts;
    let Ok(Form(form)) = form else {
        return error_page(
            t,
            StatusCode::BAD_REQUEST,
            t.get("error.form"),
            &who.request_id,
        );
    };
    if let Some(refused) = who.csrf_refusal(&form.csrf) {
        return refused;
    }
    // A malformed id names nothing, like another tenant's.
    let Ok(device_id) = DeviceId::parse(&id) else {
        return who.core_error(orchard_core::CoreError::NotFound);
    };
    let Some(commands) = commands_of(&action, &form) else {
        return who.core_error(orchard_core::CoreError::NotFound);
    };
    if [&form.message, &form.phone, &form.footnote]
        .iter()
        .any(|f| f.chars().count() > MAX_LOCK_TEXT)
    {
        return error_page(
            t,
            StatusCode::BAD_REQUEST,
            t.get("action.too_long"),
            &who.request_id,
        );
    }
    // Apple refuses Lost Mode without a message or a phone number: say so here, in the reader's language.
    if action == "lost_mode" && optional(&form.message).is_none() && optional(&form.phone).is_none()
    {
        return error_page(
            t,
            StatusCode::BAD_REQUEST,
            t.get("action.lost_mode.needs_text"),
            &who.request_id,
        );
    }
    let confirm = optional(&form.confirm_serial);
    let mut queued = Vec::new();
    let mut outcome = Ok(());
    for command in commands {
        match state
            .orchard
            .queue_confirmed_command(&who.principal, device_id, command, confirm.as_deref())
            .await
        {
            Ok(record) => queued.push(record),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    let status = SignedIn::status_of(outcome.as_ref().copied());
    let mut note = AuditNote::default().detail("action", action.clone());
    if let Some(first) = queued.first() {
        note = note
            .detail("request_type", first.request_type.as_str())
            .detail("command_uuid", first.uuid.to_string());
    }
    if let Err(page) = who
        .record_post(
            &state,
            "/devices/{id}/commands",
            format!("/devices/{id}/commands"),
            format!("/ui/devices/{id}/actions/{action}"),
            status,
            note,
        )
        .await
    {
        return page;
    }
    match outcome {
        Ok(()) => redirect(&format!("/ui/devices/{device_id}?done={action}")),
        Err(e) => who.core_error(e),
    }
}

#[derive(Deserialize)]
pub(super) struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/devices/{id}/activation-lock/clear`.
pub(super) async fn clear_activation_lock(
    State(state): State<AppState>,
    who: SignedIn,
    Path(id): Path<String>,
    form: Result<Form<CsrfOnly>, axum::extract::rejection::FormRejection>,
) -> Response {
    let t = who.texts;
    let Ok(Form(form)) = form else {
        return error_page(
            t,
            StatusCode::BAD_REQUEST,
            t.get("error.form"),
            &who.request_id,
        );
    };
    if let Some(refused) = who.csrf_refusal(&form.csrf) {
        return refused;
    }
    let outcome = match DeviceId::parse(&id) {
        // A malformed id names nothing, like another tenant's.
        Err(_) => Err(orchard_core::CoreError::NotFound),
        Ok(device_id) => {
            state
                .orchard
                .clear_activation_lock(&who.principal, device_id)
                .await
        }
    };
    let (status, mut note) = match &outcome {
        Ok(o) if o.cleared => (200, AuditNote::default().tenant(Some(o.tenant_id))),
        Ok(o) => (502, AuditNote::default().tenant(Some(o.tenant_id))),
        Err(e) => (SignedIn::status_of(Err(e)), AuditNote::default()),
    };
    note = note.target(&id);
    if let Ok(o) = &outcome {
        note = note
            .detail("cleared", o.cleared)
            .detail("attempts", o.attempts.len());
    }
    note.action = Some("device.activation_lock.clear".into());
    if let Err(page) = who
        .record_post(
            &state,
            "/devices/{id}/activation-lock/clear",
            format!("/devices/{id}/activation-lock/clear"),
            format!("/ui/devices/{id}/activation-lock/clear"),
            status,
            note,
        )
        .await
    {
        return page;
    }
    match outcome {
        Ok(o) => match o.failure_reason() {
            None => redirect(&format!("/ui/devices/{}?done=activation_lock", o.device_id)),
            Some(reason) => error_page(
                t,
                StatusCode::BAD_GATEWAY,
                &t.fill("action.activation_lock.refused", &[("reason", &reason)]),
                &who.request_id,
            ),
        },
        Err(e) => who.core_error(e),
    }
}
