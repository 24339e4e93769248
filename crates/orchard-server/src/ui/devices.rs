//! The device list (search, the API's filters, sort, paging, CSV export) and a device's page (inventory,
//! installed apps, command history with Apple's error text, the troubleshooting checklist and its summary for a
//! service-desk ticket, and the actions the reader's role allows).

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use orchard_core::access::roles::Ability;
use orchard_core::device::checklist::{apple_error_text, checklist, CheckItem};
use orchard_core::device::views::{DeviceDetail, DeviceView};
use orchard_store::{DeviceQuery, DeviceSort, Page};
use orchard_types::{DeviceId, EnrollmentState, UnixTime};
use serde::Deserialize;

use super::i18n::Texts;
use super::page::{error_page, may, render, url_encode, Chrome};
use super::session::SignedIn;
use crate::state::AppState;

/// Devices per page of the list.
const PAGE_SIZE: i64 = 50;
/// The most rows one CSV export holds.
const CSV_MAX_ROWS: i64 = 20_000;
/// Commands shown on a device's page (and read by the checklist).
const HISTORY_ROWS: i64 = 50;

/// The list's filters as the form sends them (every field optional; empty means unset).
#[derive(Debug, Default, Deserialize)]
pub(super) struct ListForm {
    #[serde(default)]
    q: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    os_version: String,
    #[serde(default)]
    state: String,
    /// Devices not seen for at least this many days.
    #[serde(default)]
    not_seen_days: String,
    /// Devices whose identity certificate expires within this many days (the dashboard links here).
    #[serde(default)]
    identity_expires_days: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    order: String,
    #[serde(default)]
    offset: String,
}

fn some(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

impl ListForm {
    /// The store query, or the reader's words for the first field that does not fit.
    fn query(&self, t: Texts, now: UnixTime) -> Result<DeviceQuery, String> {
        let state = match some(&self.state) {
            None => None,
            Some(s) => Some(
                EnrollmentState::parse(&s).ok_or_else(|| t.get("devices.bad_state").to_string())?,
            ),
        };
        let last_seen_before = match some(&self.not_seen_days) {
            None => None,
            Some(d) => match d.parse::<i64>() {
                Ok(days) if (0..=3650).contains(&days) => Some(now.plus_seconds(-days * 86_400)),
                _ => return Err(t.get("devices.bad_days").to_string()),
            },
        };
        let identity_expires_before = match some(&self.identity_expires_days) {
            None => None,
            Some(d) => match d.parse::<i64>() {
                Ok(days) if (0..=3650).contains(&days) => Some(now.plus_seconds(days * 86_400)),
                _ => return Err(t.get("devices.bad_days").to_string()),
            },
        };
        let sort = match some(&self.sort) {
            None => DeviceSort::default(),
            Some(s) => {
                DeviceSort::parse(&s).ok_or_else(|| t.get("devices.bad_sort").to_string())?
            }
        };
        if self.q.chars().count() > 200 {
            return Err(t.get("devices.bad_q").to_string());
        }
        Ok(DeviceQuery {
            model: some(&self.model),
            os_version: some(&self.os_version),
            state,
            last_seen_before,
            identity_expires_before,
            text: some(&self.q),
            sort,
            descending: self.order == "desc",
            ..DeviceQuery::default()
        })
    }

    fn offset(&self) -> i64 {
        self.offset.trim().parse::<i64>().unwrap_or(0).max(0)
    }

    /// The filters as a query string (for paging links and the CSV export), without the offset.
    fn query_string(&self) -> String {
        [
            ("q", &self.q),
            ("model", &self.model),
            ("os_version", &self.os_version),
            ("state", &self.state),
            ("not_seen_days", &self.not_seen_days),
            ("identity_expires_days", &self.identity_expires_days),
            ("sort", &self.sort),
            ("order", &self.order),
        ]
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| format!("{k}={}", url_encode(v.trim())))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// A row of the list.
struct Row {
    id: String,
    name: String,
    serial: String,
    model: String,
    os: String,
    state: String,
    last_seen: String,
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

fn row(t: Texts, d: &DeviceView) -> Row {
    Row {
        id: d.id.to_string(),
        name: d.device_name.clone().unwrap_or_else(|| d.udid.clone()),
        serial: d.serial_number.clone().unwrap_or_default(),
        model: d
            .product_name
            .clone()
            .or_else(|| d.model_name.clone())
            .or_else(|| d.model.clone())
            .unwrap_or_default(),
        os: d.os_version.clone().unwrap_or_default(),
        state: state_label(t, d.enrollment_state),
        last_seen: date(d.last_seen_at.as_deref()),
    }
}

#[derive(Template)]
#[template(path = "devices.html")]
struct DeviceListPage {
    c: Chrome,
    f: ListForm,
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
    form: Result<Query<ListForm>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let t = who.texts;
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
        .map(|d| row(t, &DeviceView::from(d)))
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
    form: Result<Query<ListForm>, axum::extract::rejection::QueryRejection>,
) -> Response {
    use orchard_core::reporting::audit::csv_line;
    let t = who.texts;
    let f = form.map(|Query(f)| f).unwrap_or_default();
    let query = match f.query(t, state.orchard.now()) {
        Ok(q) => q,
        Err(problem) => return error_page(t, StatusCode::BAD_REQUEST, &problem, &who.request_id),
    };
    let mut out = csv_line([
        "id",
        "name",
        "serial_number",
        "model",
        "os_version",
        "enrollment_state",
        "last_seen_at",
        "enrolled_at",
    ]);
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
            out.push_str(&csv_line([
                v.id.to_string(),
                v.device_name.unwrap_or_default(),
                v.serial_number.unwrap_or_default(),
                v.model.unwrap_or_default(),
                v.os_version.unwrap_or_default(),
                v.enrollment_state.to_string(),
                v.last_seen_at.unwrap_or_default(),
                v.enrolled_at.unwrap_or_default(),
            ]));
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
            value: row(t, d).model,
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
        done,
        csrf: who.user.csrf_token.clone(),
    };
    render(StatusCode::OK, &page)
}
