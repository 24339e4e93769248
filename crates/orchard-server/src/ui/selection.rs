//! What the device list and its bulk actions share: the list's filter as a form sends it (the list, its CSV
//! export and "all matching the filter" of a bulk action read the same fields into the same store query), and the
//! catalogue of bulk actions (their commands, the role each needs, whether it destroys data).

use orchard_core::access::roles::Ability;
use orchard_core::device::checkin::initial_inventory_commands;
use orchard_protocol::commands::Command;
use orchard_store::{DeviceQuery, DeviceSort};
use orchard_types::{EnrollmentState, UnixTime};
use serde::Deserialize;

use super::i18n::Texts;
use super::page::{may, url_encode};
use super::session::SignedIn;

/// The list's filters as the form sends them (every field optional; empty means unset).
#[derive(Debug, Default, Deserialize)]
pub(super) struct ListForm {
    #[serde(default)]
    pub(super) q: String,
    #[serde(default)]
    pub(super) model: String,
    #[serde(default)]
    pub(super) os_version: String,
    #[serde(default)]
    pub(super) state: String,
    /// Devices not seen for at least this many days.
    #[serde(default)]
    pub(super) not_seen_days: String,
    /// Devices whose identity certificate expires within this many days (the dashboard links here).
    #[serde(default)]
    pub(super) identity_expires_days: String,
    #[serde(default)]
    pub(super) sort: String,
    #[serde(default)]
    pub(super) order: String,
    #[serde(default)]
    pub(super) offset: String,
}

fn some(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

impl ListForm {
    /// The filter fields of a posted form (the bulk form carries the list's filter for "all matching").
    pub(super) fn from_pairs(pairs: &[(String, String)]) -> ListForm {
        let mut f = ListForm::default();
        for (k, v) in pairs {
            let field = match k.as_str() {
                "q" => &mut f.q,
                "model" => &mut f.model,
                "os_version" => &mut f.os_version,
                "state" => &mut f.state,
                "not_seen_days" => &mut f.not_seen_days,
                "identity_expires_days" => &mut f.identity_expires_days,
                _ => continue,
            };
            *field = v.clone();
        }
        f
    }

    /// The filter fields as (name, value) pairs, for hidden fields of a form that carries the filter on.
    pub(super) fn filter_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("q", self.q.clone()),
            ("model", self.model.clone()),
            ("os_version", self.os_version.clone()),
            ("state", self.state.clone()),
            ("not_seen_days", self.not_seen_days.clone()),
            ("identity_expires_days", self.identity_expires_days.clone()),
        ]
    }

    /// The store query, or the reader's words for the first field that does not fit.
    pub(super) fn query(&self, t: Texts, now: UnixTime) -> Result<DeviceQuery, String> {
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

    pub(super) fn offset(&self) -> i64 {
        self.offset.trim().parse::<i64>().unwrap_or(0).max(0)
    }

    /// The filters as a query string (for paging links and the CSV export), without the offset.
    pub(super) fn query_string(&self) -> String {
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

/// An action the device list offers for many iPads.
pub(super) struct BulkChoice {
    pub key: &'static str,
    pub label: &'static str,
}

/// The bulk actions, the role each needs, and whether it destroys data (then the count is typed to confirm).
const ACTIONS: [(&str, Ability, bool); 5] = [
    ("inventory", Ability::Query, false),
    ("lock", Ability::Administer, false),
    ("restart", Ability::Administer, false),
    ("shutdown", Ability::Administer, false),
    ("erase", Ability::Administer, true),
];

pub(super) fn label(t: Texts, action: &str) -> &'static str {
    match action {
        "inventory" => t.get("bulk.action.inventory"),
        "lock" => t.get("bulk.action.lock"),
        "restart" => t.get("bulk.action.restart"),
        "shutdown" => t.get("bulk.action.shutdown"),
        _ => t.get("bulk.action.erase"),
    }
}

/// The actions the reader's role may start (the server checks again when they do).
pub(super) fn actions_for(who: &SignedIn) -> Vec<BulkChoice> {
    ACTIONS
        .iter()
        .filter(|(_, ability, _)| may(who, *ability))
        .map(|(key, _, _)| BulkChoice {
            key,
            label: label(who.texts, key),
        })
        .collect()
}

/// The commands of an action, or None for one that does not exist.
pub(super) fn commands_of(action: &str) -> Option<Vec<Command>> {
    Some(match action {
        "inventory" => initial_inventory_commands(),
        "lock" => vec![Command::DeviceLock {
            message: None,
            phone_number: None,
        }],
        "restart" => vec![Command::RestartDevice { notify_user: None }],
        "shutdown" => vec![Command::ShutDownDevice],
        "erase" => vec![Command::EraseDevice {
            preserve_data_plan: None,
            disallow_proximity_setup: None,
            return_to_service: None,
        }],
        _ => return None,
    })
}

pub(super) fn destructive(action: &str) -> bool {
    ACTIONS.iter().any(|(key, _, d)| *key == action && *d)
}
