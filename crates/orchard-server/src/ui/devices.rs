//! The device list (search, the API's filters, sort, paging, columns the reader chooses — kept in a cookie, and
//! followed by the CSV export —, selection for bulk actions) and a device's page (inventory,
//! installed apps, command history with Apple's error text, the troubleshooting checklist and its summary for a
//! service-desk ticket, and the actions the reader's role allows).

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use orchard_core::access::roles::Ability;
use orchard_core::device::checklist::{apple_error_text, checklist, CheckItem};
use orchard_core::device::views::{DeviceDetail, DeviceView};
use orchard_store::{DeviceQuery, Page};
use orchard_types::{DeviceId, UnixTime};
use serde::Deserialize;

use super::i18n::Texts;
use super::page::{add_cookie, error_page, local_path, may, redirect, render, Chrome};
use super::selection::ListForm;
use super::session::SignedIn;
use crate::auth::cookies::cookie;
use crate::state::AppState;

/// Devices per page of the list.
const PAGE_SIZE: i64 = 50;
/// The most rows one CSV export holds.
const CSV_MAX_ROWS: i64 = 20_000;
/// Commands shown on a device's page (and read by the checklist).
const HISTORY_ROWS: i64 = 50;

/// The cookie keeping the columns a person chose for the device list (a browser's choice, like the language).
pub const COLUMNS_COOKIE: &str = "orchard_columns";

/// A column of the device list the reader may show or hide; the name always shows (it links to the iPad). The CSV
/// export has the same columns, after the device id and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Column {
    Serial,
    Model,
    Os,
    Build,
    State,
    Supervised,
    LastSeen,
    Enrolled,
    Udid,
}

impl Column {
    pub(super) const ALL: [Column; 9] = [
        Column::Serial,
        Column::Model,
        Column::Os,
        Column::Build,
        Column::State,
        Column::Supervised,
        Column::LastSeen,
        Column::Enrolled,
        Column::Udid,
    ];
    /// What the list shows until the reader chooses.
    const DEFAULT: [Column; 5] = [
        Column::Serial,
        Column::Model,
        Column::Os,
        Column::State,
        Column::LastSeen,
    ];

    pub(super) fn key(self) -> &'static str {
        match self {
            Column::Serial => "serial",
            Column::Model => "model",
            Column::Os => "os",
            Column::Build => "build",
            Column::State => "state",
            Column::Supervised => "supervised",
            Column::LastSeen => "last_seen",
            Column::Enrolled => "enrolled",
            Column::Udid => "udid",
        }
    }

    fn label(self, t: Texts) -> &'static str {
        match self {
            Column::Serial => t.get("devices.col.serial"),
            Column::Model => t.get("devices.col.model"),
            Column::Os => t.get("devices.col.os"),
            Column::Build => t.get("devices.col.build"),
            Column::State => t.get("devices.col.state"),
            Column::Supervised => t.get("devices.col.supervised"),
            Column::LastSeen => t.get("devices.col.last_seen"),
            Column::Enrolled => t.get("devices.col.enrolled"),
            Column::Udid => t.get("devices.col.udid"),
        }
    }

    fn csv_header(self) -> &'static str {
        match self {
            Column::Serial => "serial_number",
            Column::Model => "model",
            Column::Os => "os_version",
            Column::Build => "build_version",
            Column::State => "enrollment_state",
            Column::Supervised => "supervised",
            Column::LastSeen => "last_seen_at",
            Column::Enrolled => "enrolled_at",
            Column::Udid => "udid",
        }
    }

    /// The cell as the page shows it.
    fn cell(self, t: Texts, d: &DeviceView) -> String {
        match self {
            Column::Serial => d.serial_number.clone().unwrap_or_default(),
            Column::Model => d
                .product_name
                .clone()
                .or_else(|| d.model_name.clone())
                .or_else(|| d.model.clone())
                .unwrap_or_default(),
            Column::Os => d.os_version.clone().unwrap_or_default(),
            Column::Build => d.build_version.clone().unwrap_or_default(),
            Column::State => state_label(t, d.enrollment_state),
            Column::Supervised => match d.is_supervised {
                Some(true) => t.get("common.yes").to_string(),
                Some(false) => t.get("common.no").to_string(),
                None => String::new(),
            },
            Column::LastSeen => date(d.last_seen_at.as_deref()),
            Column::Enrolled => date(d.enrolled_at.as_deref()),
            Column::Udid => d.udid.clone(),
        }
    }

    /// The cell as the CSV export has it (machine-readable: identifiers, RFC 3339 times).
    fn csv_cell(self, d: &DeviceView) -> String {
        match self {
            Column::Serial => d.serial_number.clone().unwrap_or_default(),
            Column::Model => d.model.clone().unwrap_or_default(),
            Column::Os => d.os_version.clone().unwrap_or_default(),
            Column::Build => d.build_version.clone().unwrap_or_default(),
            Column::State => d.enrollment_state.to_string(),
            Column::Supervised => d.is_supervised.map(|b| b.to_string()).unwrap_or_default(),
            Column::LastSeen => d.last_seen_at.clone().unwrap_or_default(),
            Column::Enrolled => d.enrolled_at.clone().unwrap_or_default(),
            Column::Udid => d.udid.clone(),
        }
    }
}

/// The columns the reader chose (the cookie: keys joined by dots, `name` alone for none), in the list's order;
/// the default without a choice. Unknown keys are ignored.
pub(super) fn chosen_columns(headers: &HeaderMap) -> Vec<Column> {
    match cookie(headers, COLUMNS_COOKIE) {
        None => Column::DEFAULT.to_vec(),
        Some(value) => {
            let keys: Vec<&str> = value.split('.').collect();
            Column::ALL
                .into_iter()
                .filter(|c| keys.contains(&c.key()))
                .collect()
        }
    }
}

/// The cookie value of a choice of columns.
pub(super) fn columns_cookie_value(columns: &[Column]) -> String {
    std::iter::once("name")
        .chain(columns.iter().map(|c| c.key()))
        .collect::<Vec<_>>()
        .join(".")
}

/// A row of the list: the iPad's name (a link) and the chosen columns' cells.
struct Row {
    id: String,
    name: String,
    cells: Vec<String>,
}

/// A column as the list's header and the column chooser show it.
struct ColumnChoice {
    key: &'static str,
    label: &'static str,
    shown: bool,
}

fn date(t: Option<&str>) -> String {
    // RFC 3339 in UTC: the date and the minute are what a person reads.
    t.map(|s| {
        s.replace('T', " ")
            .trim_end_matches('Z')
            .chars()
            .take(16)
            .collect()
    })
    .unwrap_or_default()
}

fn state_label(t: Texts, state: &str) -> String {
    let key = format!("state.{state}");
    if t.has(&key) {
        t.get(&key).to_string()
    } else {
        state.to_string()
    }
}

fn row(t: Texts, d: &DeviceView, columns: &[Column]) -> Row {
    Row {
        id: d.id.to_string(),
        name: d.device_name.clone().unwrap_or_else(|| d.udid.clone()),
        cells: columns.iter().map(|c| c.cell(t, d)).collect(),
    }
}

#[derive(Template)]
#[template(path = "devices.html")]
struct DeviceListPage {
    c: Chrome,
    f: ListForm,
    /// The shown columns' headers.
    headers: Vec<&'static str>,
    /// Every column, shown or not, for the chooser.
    choices: Vec<ColumnChoice>,
    /// The bulk actions the reader's role may start (none: no selection boxes).
    bulk_actions: Vec<super::selection::BulkChoice>,
    /// "All N iPads matching the filter".
    bulk_all_text: String,
    csrf: String,
    /// This list's address (the column chooser comes back here).
    here: String,
    rows: Vec<Row>,
    showing: String,
    previous: Option<String>,
    next: Option<String>,
    csv: String,
    problem: Option<String>,
}

/// `GET /ui/devices`.
pub(super) async fn device_list(
    State(state): State<AppState>,
    who: SignedIn,
    headers: HeaderMap,
    form: Result<Query<ListForm>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let t = who.texts;
    let columns = chosen_columns(&headers);
    let f = form.map(|Query(f)| f).unwrap_or_default();
    let here = format!("/ui/devices?{}", f.query_string());
    let (query, problem) = match f.query(t, state.orchard.now()) {
        Ok(q) => (q, None),
        Err(problem) => (DeviceQuery::default(), Some(problem)),
    };
    let offset = f.offset();
    let page = Page {
        limit: PAGE_SIZE,
        offset,
    };
    let (devices, total) = match state
        .orchard
        .search_devices(&who.principal, &query, page)
        .await
    {
        Ok(found) => found,
        Err(e) => return who.core_error(e),
    };
    let rows: Vec<Row> = devices
        .iter()
        .map(|d| row(t, &DeviceView::from(d), &columns))
        .collect();
    let qs = f.query_string();
    let link = |o: i64| {
        format!(
            "/ui/devices?{qs}{}offset={o}",
            if qs.is_empty() { "" } else { "&" }
        )
    };
    let first = if rows.is_empty() { 0 } else { offset + 1 };
    let last = offset + rows.len() as i64;
    let showing = t.fill(
        "devices.showing",
        &[
            ("first", &first.to_string()),
            ("last", &last.to_string()),
            ("total", &total.to_string()),
        ],
    );
    let page = DeviceListPage {
        c: Chrome::of(&state, &who, &here).await,
        headers: columns.iter().map(|c| c.label(t)).collect(),
        choices: Column::ALL
            .into_iter()
            .map(|c| ColumnChoice {
                key: c.key(),
                label: c.label(t),
                shown: columns.contains(&c),
            })
            .collect(),
        bulk_actions: super::selection::actions_for(&who),
        bulk_all_text: t.fill("bulk.all", &[("total", &total.to_string())]),
        csrf: who.user.csrf_token.clone(),
        here: here.clone(),
        showing,
        previous: (offset > 0).then(|| link((offset - PAGE_SIZE).max(0))),
        next: (offset + PAGE_SIZE < total).then(|| link(offset + PAGE_SIZE)),
        csv: format!("/ui/devices.csv?{qs}"),
        rows,
        f,
        problem,
    };
    let status = if page.problem.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    render(status, &page)
}

/// `GET /ui/devices.csv`: the filtered list as CSV (every matching device, up to a bound).
pub(super) async fn device_csv(
    State(state): State<AppState>,
    who: SignedIn,
    headers: HeaderMap,
    form: Result<Query<ListForm>, axum::extract::rejection::QueryRejection>,
) -> Response {
    use orchard_core::reporting::audit::csv_line;
    let t = who.texts;
    let columns = chosen_columns(&headers);
    let f = form.map(|Query(f)| f).unwrap_or_default();
    let query = match f.query(t, state.orchard.now()) {
        Ok(q) => q,
        Err(problem) => return error_page(t, StatusCode::BAD_REQUEST, &problem, &who.request_id),
    };
    let mut out = csv_line(
        ["id", "name"]
            .into_iter()
            .chain(columns.iter().map(|c| c.csv_header())),
    );
    let mut offset = 0;
    while offset < CSV_MAX_ROWS {
        let page = Page {
            limit: 1000,
            offset,
        };
        let devices = match state
            .orchard
            .search_devices(&who.principal, &query, page)
            .await
        {
            Ok((devices, _)) => devices,
            Err(e) => return who.core_error(e),
        };
        for d in &devices {
            let v = DeviceView::from(d);
            out.push_str(&csv_line(
                [v.id.to_string(), v.device_name.clone().unwrap_or_default()]
                    .into_iter()
                    .chain(columns.iter().map(|c| c.csv_cell(&v))),
            ));
        }
        if devices.len() < 1000 {
            break;
        }
        offset += 1000;
    }
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"devices.csv\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        out,
    )
        .into_response()
}

/// A fact of the device's summary.
struct Fact {
    label: &'static str,
    value: String,
}

/// A checklist item in the reader's words.
struct Check {
    level: &'static str,
    level_label: &'static str,
    title: &'static str,
    text: String,
    todo: Option<String>,
}

struct App {
    name: String,
    identifier: String,
    version: String,
}

struct CommandRow {
    request_type: String,
    status: String,
    failed: bool,
    queued_at: String,
    completed_at: String,
    queued_by: String,
    error: String,
}

#[derive(Template)]
#[template(path = "device.html")]
struct DevicePage {
    c: Chrome,
    id: String,
    name: String,
    serial: String,
    facts: Vec<Fact>,
    checks: Vec<Check>,
    summary: String,
    apps: Vec<App>,
    commands: Vec<CommandRow>,
    inventory: Vec<(String, String)>,
    can_query: bool,
    can_administer: bool,
    /// A bypass code is escrowed, so Apple can be asked to clear Activation Lock.
    bypass_code_escrowed: bool,
    done: Option<String>,
    csrf: String,
}

#[derive(Deserialize)]
pub(super) struct DevicePageQuery {
    done: Option<String>,
}

fn text_of(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn info<'a>(detail: &'a DeviceDetail, key: &str) -> Option<&'a serde_json::Value> {
    detail.inventory.get("device_information")?.get(key)
}

fn bytes_gb(v: Option<&serde_json::Value>) -> Option<String> {
    // DeviceCapacity and AvailableDeviceCapacity are reported in GB (decimal) by iPadOS.
    v.and_then(|v| v.as_f64()).map(|gb| format!("{gb:.1} GB"))
}

fn check_text(t: Texts, item: &CheckItem) -> Check {
    let base = format!("check.{}.{}", item.check, item.level.as_str());
    // Times as a person reads them (the facts carry RFC 3339).
    let readable: BTreeMap<&str, String> = item
        .facts
        .iter()
        .map(|(k, v)| {
            (
                *k,
                if *k == "date" {
                    format!("{} UTC", date(Some(v)))
                } else {
                    v.clone()
                },
            )
        })
        .collect();
    let facts: Vec<(&str, &str)> = readable.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // A more specific wording for a sub-state (`check.identity.red.expired`) when the catalogue has one.
    let specific = item
        .facts
        .get("state")
        .map(|s| format!("{base}.{s}"))
        .filter(|k| t.has(k));
    let text = t.fill(specific.as_deref().unwrap_or(&base), &facts);
    let todo_key = format!("{base}.todo");
    Check {
        level: item.level.as_str(),
        level_label: match item.level.as_str() {
            "green" => t.get("check.level.green"),
            "amber" => t.get("check.level.amber"),
            _ => t.get("check.level.red"),
        },
        title: title_of(t, item.check),
        text,
        todo: t.has(&todo_key).then(|| t.fill(&todo_key, &facts)),
    }
}

fn title_of(t: Texts, check: &str) -> &'static str {
    match check {
        "last_checkin" => t.get("check.last_checkin.title"),
        "push_token" => t.get("check.push_token.title"),
        "pending_commands" => t.get("check.pending_commands.title"),
        "failed_commands" => t.get("check.failed_commands.title"),
        "identity" => t.get("check.identity.title"),
        _ => t.get("check.setup.title"),
    }
}

/// The text a department pastes into a service-desk ticket: what the device is and how each check came out.
fn ticket_summary(t: Texts, name: &str, facts: &[Fact], checks: &[Check], now: UnixTime) -> String {
    let mut out = format!("{}: {name}\n", t.get("summary.device"));
    for f in facts {
        if !f.value.is_empty() {
            out.push_str(&format!("{}: {}\n", f.label, f.value));
        }
    }
    out.push_str(&format!(
        "\n{} ({}):\n",
        t.get("checklist.title"),
        date(Some(&now.to_rfc3339()))
    ));
    for c in checks {
        out.push_str(&format!("[{}] {}: {}\n", c.level_label, c.title, c.text));
    }
    out
}

/// `GET /ui/devices/{id}`: another tenant's id answers exactly like an id that does not exist (core's scope).
pub(super) async fn device_page(
    State(state): State<AppState>,
    who: SignedIn,
    Path(id): Path<String>,
    query: Result<Query<DevicePageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let t = who.texts;
    let Ok(id) = DeviceId::parse(&id) else {
        return who.core_error(orchard_core::CoreError::NotFound);
    };
    let detail = match state.orchard.device_detail(&who.principal, id).await {
        Ok(d) => d,
        Err(e) => return who.core_error(e),
    };
    let history = match state
        .orchard
        .command_history(
            &who.principal,
            id,
            Page {
                limit: HISTORY_ROWS,
                offset: 0,
            },
        )
        .await
    {
        Ok(h) => h,
        Err(e) => return who.core_error(e),
    };
    let activation_lock = match state.orchard.activation_lock_view(&who.principal, id).await {
        Ok(v) => v,
        Err(e) => return who.core_error(e),
    };
    let now = state.orchard.now();
    let d = &detail.device;
    let name = d.device_name.clone().unwrap_or_else(|| d.udid.clone());
    let serial = d.serial_number.clone().unwrap_or_default();
    let yes_no = |b: Option<bool>| match b {
        Some(true) => t.get("common.yes").to_string(),
        Some(false) => t.get("common.no").to_string(),
        None => String::new(),
    };
    let facts = vec![
        Fact {
            label: t.get("device.model"),
            value: Column::Model.cell(t, d),
        },
        Fact {
            label: t.get("device.serial"),
            value: serial.clone(),
        },
        Fact {
            label: t.get("device.udid"),
            value: d.udid.clone(),
        },
        Fact {
            label: t.get("device.os"),
            value: match (&d.os_version, &d.build_version) {
                (Some(v), Some(b)) => format!("{v} ({b})"),
                (Some(v), None) => v.clone(),
                _ => String::new(),
            },
        },
        Fact {
            label: t.get("device.state"),
            value: state_label(t, d.enrollment_state),
        },
        Fact {
            label: t.get("device.supervised"),
            value: yes_no(d.is_supervised),
        },
        Fact {
            label: t.get("device.battery"),
            value: info(&detail, "BatteryLevel")
                .and_then(|v| v.as_f64())
                .map(|b| format!("{:.0} %", b * 100.0))
                .unwrap_or_default(),
        },
        Fact {
            label: t.get("device.storage"),
            value: match (
                bytes_gb(info(&detail, "AvailableDeviceCapacity")),
                bytes_gb(info(&detail, "DeviceCapacity")),
            ) {
                (Some(free), Some(all)) => {
                    t.fill("device.storage_value", &[("free", &free), ("total", &all)])
                }
                _ => String::new(),
            },
        },
        Fact {
            label: t.get("device.lost_mode"),
            value: yes_no(info(&detail, "IsMDMLostModeEnabled").and_then(|v| v.as_bool())),
        },
        Fact {
            label: t.get("device.last_seen"),
            value: date(d.last_seen_at.as_deref()),
        },
        Fact {
            label: t.get("device.enrolled"),
            value: date(d.enrolled_at.as_deref()),
        },
        Fact {
            label: t.get("device.identity_expiry"),
            value: date(detail.identity.not_after.as_deref()),
        },
        Fact {
            label: t.get("device.bypass_code"),
            value: match &activation_lock.escrowed_at {
                Some(at) if activation_lock.bypass_code_escrowed => {
                    t.fill("device.bypass_code.escrowed", &[("date", &date(Some(at)))])
                }
                _ => t.get("device.bypass_code.none").to_string(),
            },
        },
    ];
    let checks: Vec<Check> = checklist(&detail, &history, now)
        .iter()
        .map(|item| check_text(t, item))
        .collect();
    let summary = ticket_summary(t, &name, &facts, &checks, now);
    let apps = detail
        .inventory
        .get("installed_applications")
        .and_then(|v| v.as_array())
        .map(|apps| {
            let mut apps: Vec<App> = apps
                .iter()
                .map(|a| App {
                    name: a.get("Name").map(text_of).unwrap_or_default(),
                    identifier: a.get("Identifier").map(text_of).unwrap_or_default(),
                    version: a
                        .get("ShortVersion")
                        .or_else(|| a.get("Version"))
                        .map(text_of)
                        .unwrap_or_default(),
                })
                .collect();
            apps.sort_by_key(|a| a.name.to_lowercase());
            apps
        })
        .unwrap_or_default();
    let commands = history
        .iter()
        .map(|c| CommandRow {
            request_type: c.request_type.clone(),
            status: {
                let key = format!("status.{}", c.status);
                if t.has(&key) {
                    t.get(&key).to_string()
                } else {
                    c.status.to_string()
                }
            },
            failed: matches!(
                c.status,
                "error" | "command_format_error" | "failed" | "expired"
            ),
            queued_at: date(Some(&c.queued_at)),
            completed_at: date(c.completed_at.as_deref()),
            queued_by: c
                .queued_by
                .as_deref()
                .map(|q| q.splitn(3, ':').nth(2).unwrap_or(q).to_string())
                .unwrap_or_default(),
            error: apple_error_text(c.error_chain.as_ref()).unwrap_or_default(),
        })
        .collect();
    let inventory: Vec<(String, String)> = detail
        .inventory
        .get("device_information")
        .and_then(|v| v.as_object())
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), text_of(v)))
                .collect::<BTreeMap<_, _>>()
        })
        .unwrap_or_default()
        .into_iter()
        .collect();
    let done = query.ok().and_then(|Query(q)| q.done).and_then(|action| {
        let key = format!("action.done.{action}");
        t.has(&key).then(|| t.get(&key).to_string())
    });
    let page = DevicePage {
        c: Chrome::of(&state, &who, &format!("/ui/devices/{id}")).await,
        id: id.to_string(),
        name,
        serial,
        facts,
        checks,
        summary,
        apps,
        commands,
        inventory,
        can_query: may(&who, Ability::Query),
        can_administer: may(&who, Ability::Administer),
        bypass_code_escrowed: activation_lock.bypass_code_escrowed,
        done,
        csrf: who.user.csrf_token.clone(),
    };
    render(StatusCode::OK, &page)
}

/// The column chooser's form: one box per column (`col_{key}`), checked or absent.
#[derive(Deserialize)]
pub(super) struct ColumnsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    back: String,
    col_serial: Option<String>,
    col_model: Option<String>,
    col_os: Option<String>,
    col_build: Option<String>,
    col_state: Option<String>,
    col_supervised: Option<String>,
    col_last_seen: Option<String>,
    col_enrolled: Option<String>,
    col_udid: Option<String>,
}

impl ColumnsForm {
    fn chosen(&self) -> Vec<Column> {
        Column::ALL
            .into_iter()
            .filter(|c| {
                match c {
                    Column::Serial => &self.col_serial,
                    Column::Model => &self.col_model,
                    Column::Os => &self.col_os,
                    Column::Build => &self.col_build,
                    Column::State => &self.col_state,
                    Column::Supervised => &self.col_supervised,
                    Column::LastSeen => &self.col_last_seen,
                    Column::Enrolled => &self.col_enrolled,
                    Column::Udid => &self.col_udid,
                }
                .is_some()
            })
            .collect()
    }
}

/// How long a choice of columns is kept (a year; choosing again renews it).
const COLUMNS_COOKIE_SECONDS: i64 = 365 * 86_400;

/// `POST /ui/devices/columns`: keeps the chosen columns in a cookie and goes back to the list.
pub(super) async fn save_columns(
    who: SignedIn,
    form: Result<axum::Form<ColumnsForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let t = who.texts;
    let Ok(axum::Form(form)) = form else {
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
    let back = local_path(Some(form.back.as_str()));
    let back = if back.starts_with("/ui/devices") {
        back
    } else {
        "/ui/devices"
    };
    add_cookie(
        redirect(back),
        COLUMNS_COOKIE,
        &columns_cookie_value(&form.chosen()),
        COLUMNS_COOKIE_SECONDS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn chosen_columns_come_from_the_cookie_in_the_lists_order() {
        let mut h = HeaderMap::new();
        assert_eq!(chosen_columns(&h), Column::DEFAULT.to_vec());
        h.insert(
            axum::http::header::COOKIE,
            HeaderValue::from_static("orchard_columns=name.udid.serial.bogus"),
        );
        assert_eq!(chosen_columns(&h), vec![Column::Serial, Column::Udid]);
        h.insert(
            axum::http::header::COOKIE,
            HeaderValue::from_static("orchard_columns=name"),
        );
        assert!(chosen_columns(&h).is_empty(), "the name alone");
        assert_eq!(
            columns_cookie_value(&[Column::Os, Column::LastSeen]),
            "name.os.last_seen"
        );
        assert_eq!(columns_cookie_value(&[]), "name");
    }
}
