//! Device groups of a tenant. Static groups hold the devices people put in (by id, serial list or CSV; serials
//! the tenant does not have are reported back). Smart groups hold the tenant's enrolled devices whose
//! inventory matches a typed filter — model, OS version compared as versions (18.10 > 18.9 > 18.2 > 18),
//! device-name pattern, supervised, Shared iPad, an installed app (optionally its version), last seen,
//! enrollment template, identity expiry. Membership is materialised and recomputed in the unit of work of
//! whatever changed it (an inventory report, the definition, an enrollment or check-out), with a history of
//! joins and leaves; every change marks the device for the reconciler.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use orchard_store::{
    DeviceGroupFacts, DeviceStanding, FactSections, GroupHistoryRecord, GroupKind,
    GroupMemberRecord, GroupRecord, UnitOfWork,
};
use orchard_types::{DeviceId, GroupId, TenantId, UnixTime};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::profile_schema::ValidationError;
use crate::access::capability::SystemCtx;
use crate::access::principal::Principal;
use crate::reporting::audit::parse_time_bound;
use crate::{CoreError, Orchard};

/// The longest group name.
const MAX_NAME: usize = 200;
/// The most conditions a smart filter may have.
const MAX_CONDITIONS: usize = 50;
/// The most devices or serials one membership request may name.
pub const MAX_MEMBERS_PER_REQUEST: usize = 10_000;

/// A dotted version compared component by component: numbers as numbers, anything else as text after them;
/// missing components count as 0, so 18 = 18.0 < 18.2 < 18.9 < 18.10.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct Version {
    text: String,
    parts: Vec<VersionPart>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum VersionPart {
    Number(u64),
    Text(String),
}

impl From<Version> for String {
    fn from(v: Version) -> String {
        v.text
    }
}

impl Version {
    /// Parses any dotted version (app versions may carry letters: `2.0b3`).
    pub fn parse_lenient(s: &str) -> Option<Version> {
        let text = s.trim();
        if text.is_empty() || text.len() > 64 {
            return None;
        }
        let mut parts: Vec<VersionPart> = text
            .split('.')
            .map(|p| match p.parse::<u64>() {
                Ok(n) => VersionPart::Number(n),
                Err(_) => VersionPart::Text(p.to_owned()),
            })
            .collect();
        while parts.len() > 1 && parts.last() == Some(&VersionPart::Number(0)) {
            parts.pop();
        }
        Some(Version {
            text: text.to_owned(),
            parts,
        })
    }

    /// Parses an OS version: numbers only (`18`, `18.2`, `18.2.1`).
    pub fn parse_os(s: &str) -> Option<Version> {
        let text = s.trim();
        let numeric = !text.is_empty()
            && text.split('.').count() <= 4
            && text
                .split('.')
                .all(|p| !p.is_empty() && p.len() <= 6 && p.bytes().all(|b| b.is_ascii_digit()));
        if numeric {
            Version::parse_lenient(text)
        } else {
            None
        }
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.parts.len().max(other.parts.len());
        for i in 0..n {
            let a = self.parts.get(i).unwrap_or(&VersionPart::Number(0));
            let b = other.parts.get(i).unwrap_or(&VersionPart::Number(0));
            match a.cmp(b) {
                Ordering::Equal => {}
                unequal => return unequal,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// How a version is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionOp {
    Lt,
    Le,
    Eq,
    Ne,
    Ge,
    Gt,
}

impl VersionOp {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "lt" => VersionOp::Lt,
            "le" => VersionOp::Le,
            "eq" => VersionOp::Eq,
            "ne" => VersionOp::Ne,
            "ge" => VersionOp::Ge,
            "gt" => VersionOp::Gt,
            _ => return None,
        })
    }

    fn holds(self, ordering: Ordering) -> bool {
        match self {
            VersionOp::Lt => ordering == Ordering::Less,
            VersionOp::Le => ordering != Ordering::Greater,
            VersionOp::Eq => ordering == Ordering::Equal,
            VersionOp::Ne => ordering != Ordering::Equal,
            VersionOp::Ge => ordering != Ordering::Less,
            VersionOp::Gt => ordering == Ordering::Greater,
        }
    }
}

/// One condition of a smart filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The model identifier (`iPad13,18`), model name (`iPad`) or product name, case-insensitively; or
    /// (`prefix`) the model identifier or product name starting with the value (`iPad13,`).
    Model {
        value: String,
        prefix: bool,
    },
    OsVersion {
        op: VersionOp,
        version: Version,
    },
    /// A pattern over the device name: `*` any run, `?` one character, case-insensitive.
    DeviceName {
        pattern: String,
    },
    Supervised(bool),
    SharedIpad(bool),
    /// An app with this bundle id is installed (optionally in a version that compares so); `installed:
    /// false` matches devices without it.
    InstalledApp {
        bundle_id: String,
        version: Option<(VersionOp, Version)>,
        installed: bool,
    },
    LastSeenBefore(UnixTime),
    LastSeenAfter(UnixTime),
    EnrollmentTemplate(String),
    IdentityExpiresBefore(UnixTime),
}

/// A smart group's filter: all or any of its conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmartFilter {
    pub any: bool,
    pub conditions: Vec<Condition>,
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> ValidationError {
    ValidationError {
        path: path.into(),
        message: message.into(),
    }
}

impl SmartFilter {
    /// Whether the filter reads only what a device reports in its inventory (a report that repeats its facts
    /// cannot change its answer). Last seen, the enrollment template and the identity's expiry change without
    /// an inventory change, so a device of a tenant with such a filter is evaluated on every report.
    pub fn reads_only_reported_facts(&self) -> bool {
        self.conditions.iter().all(|c| {
            !matches!(
                c,
                Condition::LastSeenBefore(_)
                    | Condition::LastSeenAfter(_)
                    | Condition::EnrollmentTemplate(_)
                    | Condition::IdentityExpiresBefore(_)
            )
        })
    }

    /// Validates a filter as the API takes it; every problem names its field (`filter.conditions[2].value`).
    pub fn from_json(json: &Value) -> Result<SmartFilter, CoreError> {
        let mut errors = Vec::new();
        let Some(object) = json.as_object() else {
            return Err(CoreError::Unprocessable(vec![problem(
                "filter",
                "must be an object with \"conditions\"",
            )]));
        };
        for key in object.keys() {
            if key != "match" && key != "conditions" {
                errors.push(problem(
                    format!("filter.{key}"),
                    "unknown key (expected \"match\" and \"conditions\")",
                ));
            }
        }
        let any = match object.get("match").map(Value::as_str) {
            None | Some(Some("all")) => false,
            Some(Some("any")) => true,
            Some(_) => {
                errors.push(problem("filter.match", "must be \"all\" or \"any\""));
                false
            }
        };
        let mut conditions = Vec::new();
        match object.get("conditions").and_then(Value::as_array) {
            None => errors.push(problem(
                "filter.conditions",
                "required: a list of conditions",
            )),
            Some(list) if list.is_empty() => {
                errors.push(problem("filter.conditions", "needs at least one condition"))
            }
            Some(list) if list.len() > MAX_CONDITIONS => errors.push(problem(
                "filter.conditions",
                format!("at most {MAX_CONDITIONS} conditions"),
            )),
            Some(list) => {
                for (i, c) in list.iter().enumerate() {
                    match condition(&format!("filter.conditions[{i}]"), c) {
                        Ok(c) => conditions.push(c),
                        Err(mut e) => errors.append(&mut e),
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(SmartFilter { any, conditions })
        } else {
            Err(CoreError::Unprocessable(errors))
        }
    }

    /// Which inventory sections evaluating this filter reads.
    pub fn sections(&self) -> FactSections {
        let mut s = FactSections::default();
        for c in &self.conditions {
            match c {
                Condition::SharedIpad(_) => s.device_information = true,
                Condition::InstalledApp { .. } => s.installed_applications = true,
                _ => {}
            }
        }
        s
    }

    /// Whether the device matches (a device not enrolled matches no smart group).
    pub fn matches(&self, facts: &DeviceFacts<'_>) -> bool {
        if !facts.raw.enrolled {
            return false;
        }
        if self.any {
            self.conditions.iter().any(|c| c.holds(facts))
        } else {
            self.conditions.iter().all(|c| c.holds(facts))
        }
    }
}

/// Reads a condition: `{"field": …, "op": …, "value": …}` (and `version_op`/`version` for apps).
fn condition(path: &str, json: &Value) -> Result<Condition, Vec<ValidationError>> {
    let Some(object) = json.as_object() else {
        return Err(vec![problem(
            path,
            "must be an object with field, op and value",
        )]);
    };
    let allowed = ["field", "op", "value", "version_op", "version"];
    let mut errors: Vec<ValidationError> = object
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| problem(format!("{path}.{k}"), "unknown key"))
        .collect();
    let field = object.get("field").and_then(Value::as_str).unwrap_or("");
    let op = object.get("op").and_then(Value::as_str);
    let value = object.get("value");
    let text = |errors: &mut Vec<ValidationError>| -> Option<String> {
        match value.and_then(Value::as_str).map(str::trim) {
            Some(s) if !s.is_empty() && s.len() <= 200 => Some(s.to_owned()),
            _ => {
                errors.push(problem(
                    format!("{path}.value"),
                    "must be a text of 1 to 200 characters",
                ));
                None
            }
        }
    };
    let flag = |errors: &mut Vec<ValidationError>| -> Option<bool> {
        if op.is_some_and(|o| o != "is") {
            errors.push(problem(format!("{path}.op"), "must be \"is\""));
        }
        match value.and_then(Value::as_bool) {
            Some(b) => Some(b),
            None => {
                errors.push(problem(format!("{path}.value"), "must be true or false"));
                None
            }
        }
    };
    let time = |errors: &mut Vec<ValidationError>| -> Option<UnixTime> {
        let parsed = value.and_then(|v| match v {
            Value::String(s) => parse_time_bound(s, false).ok(),
            Value::Number(n) => n.as_i64().map(UnixTime),
            _ => None,
        });
        if parsed.is_none() {
            errors.push(problem(
                format!("{path}.value"),
                "must be a time: RFC 3339, a day (YYYY-MM-DD) or unix seconds",
            ));
        }
        parsed
    };
    let result = match field {
        "model" => {
            let prefix = match op {
                None | Some("is") => false,
                Some("prefix") => true,
                Some(_) => {
                    errors.push(problem(
                        format!("{path}.op"),
                        "must be \"is\" or \"prefix\"",
                    ));
                    false
                }
            };
            text(&mut errors).map(|value| Condition::Model { value, prefix })
        }
        "os_version" => {
            let op = op.and_then(VersionOp::parse);
            if op.is_none() {
                errors.push(problem(
                    format!("{path}.op"),
                    "must be one of lt, le, eq, ne, ge, gt",
                ));
            }
            let version = value.and_then(Value::as_str).and_then(Version::parse_os);
            if version.is_none() {
                errors.push(problem(
                    format!("{path}.value"),
                    "must be an OS version such as \"18.2\" or \"17.6.1\"",
                ));
            }
            op.zip(version)
                .map(|(op, version)| Condition::OsVersion { op, version })
        }
        "device_name" => {
            if op.is_some_and(|o| o != "matches") {
                errors.push(problem(format!("{path}.op"), "must be \"matches\""));
            }
            text(&mut errors).map(|pattern| Condition::DeviceName { pattern })
        }
        "supervised" => flag(&mut errors).map(Condition::Supervised),
        "shared_ipad" => flag(&mut errors).map(Condition::SharedIpad),
        "installed_app" => {
            let installed = match op {
                None | Some("installed") => true,
                Some("not_installed") => false,
                Some(_) => {
                    errors.push(problem(
                        format!("{path}.op"),
                        "must be \"installed\" or \"not_installed\"",
                    ));
                    true
                }
            };
            let bundle_id = text(&mut errors);
            let version = match (
                object.get("version_op").map(Value::as_str),
                object.get("version").map(Value::as_str),
            ) {
                (None, None) => None,
                (Some(Some(o)), Some(Some(v))) => {
                    let o = VersionOp::parse(o);
                    let v = Version::parse_lenient(v);
                    if o.is_none() {
                        errors.push(problem(
                            format!("{path}.version_op"),
                            "must be one of lt, le, eq, ne, ge, gt",
                        ));
                    }
                    if v.is_none() {
                        errors.push(problem(format!("{path}.version"), "must be a version"));
                    }
                    o.zip(v)
                }
                _ => {
                    errors.push(problem(
                        format!("{path}.version"),
                        "version and version_op go together, both as text",
                    ));
                    None
                }
            };
            bundle_id.map(|bundle_id| Condition::InstalledApp {
                bundle_id,
                version,
                installed,
            })
        }
        "last_seen" => match op {
            Some("before") => time(&mut errors).map(Condition::LastSeenBefore),
            Some("after") => time(&mut errors).map(Condition::LastSeenAfter),
            _ => {
                errors.push(problem(
                    format!("{path}.op"),
                    "must be \"before\" or \"after\"",
                ));
                None
            }
        },
        "enrollment_template" => {
            if op.is_some_and(|o| o != "is") {
                errors.push(problem(format!("{path}.op"), "must be \"is\""));
            }
            let id = text(&mut errors);
            if id
                .as_deref()
                .is_some_and(|t| uuid::Uuid::parse_str(t).is_err())
            {
                errors.push(problem(format!("{path}.value"), "must be a template id"));
            }
            id.map(Condition::EnrollmentTemplate)
        }
        "identity_expires" => {
            if op != Some("before") {
                errors.push(problem(format!("{path}.op"), "must be \"before\""));
            }
            time(&mut errors).map(Condition::IdentityExpiresBefore)
        }
        other => {
            errors.push(problem(
                format!("{path}.field"),
                format!(
                    "{other:?} is not a filter field: model, os_version, device_name, supervised, shared_ipad, \
                     installed_app, last_seen, enrollment_template, identity_expires"
                ),
            ));
            None
        }
    };
    match result {
        Some(c) if errors.is_empty() => Ok(c),
        _ => Err(errors),
    }
}

/// `*` and `?` glob, case-insensitive, without backtracking blow-up (iterative with one restart point).
fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// One device's facts with its inventory sections parsed once.
pub struct DeviceFacts<'a> {
    raw: &'a DeviceGroupFacts,
    os_version: Option<Version>,
    shared_ipad: Option<bool>,
    /// (bundle id, version) of the installed apps.
    apps: Vec<(String, Option<String>)>,
}

impl<'a> DeviceFacts<'a> {
    pub fn new(raw: &'a DeviceGroupFacts) -> Self {
        let parse = |json: &Option<String>| {
            json.as_deref()
                .and_then(|j| serde_json::from_str::<Value>(j).ok())
        };
        let shared_ipad =
            parse(&raw.device_information_json).and_then(|v| v["data"]["IsMultiUser"].as_bool());
        let apps = parse(&raw.installed_applications_json)
            .and_then(|v| v["data"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|app| {
                let id = app["Identifier"].as_str()?.to_owned();
                let version = app["ShortVersion"]
                    .as_str()
                    .or_else(|| app["Version"].as_str())
                    .map(str::to_owned);
                Some((id, version))
            })
            .collect();
        DeviceFacts {
            raw,
            os_version: raw.os_version.as_deref().and_then(Version::parse_lenient),
            shared_ipad,
            apps,
        }
    }
}

impl Condition {
    fn holds(&self, f: &DeviceFacts<'_>) -> bool {
        let raw = f.raw;
        match self {
            Condition::Model { value, prefix } => {
                let v = value.to_lowercase();
                if *prefix {
                    [&raw.model, &raw.product_name].iter().any(|m| {
                        m.as_deref()
                            .is_some_and(|m| m.to_lowercase().starts_with(&v))
                    })
                } else {
                    [&raw.model, &raw.model_name, &raw.product_name]
                        .iter()
                        .any(|m| m.as_deref().is_some_and(|m| m.to_lowercase() == v))
                }
            }
            Condition::OsVersion { op, version } => f
                .os_version
                .as_ref()
                .is_some_and(|v| op.holds(v.cmp(version))),
            Condition::DeviceName { pattern } => raw
                .device_name
                .as_deref()
                .is_some_and(|n| glob_matches(pattern, n)),
            Condition::Supervised(want) => raw.supervised == Some(*want),
            Condition::SharedIpad(want) => f.shared_ipad.unwrap_or(false) == *want,
            Condition::InstalledApp {
                bundle_id,
                version,
                installed,
            } => {
                let found = f.apps.iter().any(|(id, v)| {
                    id == bundle_id
                        && version.as_ref().is_none_or(|(op, want)| {
                            v.as_deref()
                                .and_then(Version::parse_lenient)
                                .is_some_and(|have| op.holds(have.cmp(want)))
                        })
                });
                found == *installed
            }
            Condition::LastSeenBefore(t) => raw.last_seen_at.is_some_and(|s| s < *t),
            Condition::LastSeenAfter(t) => raw.last_seen_at.is_some_and(|s| s >= *t),
            Condition::EnrollmentTemplate(id) => raw.dep_template_id.as_deref() == Some(id),
            Condition::IdentityExpiresBefore(t) => raw.identity_not_after.is_some_and(|n| n < *t),
        }
    }
}

/// A group as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupView {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// `static` or `smart`.
    pub kind: &'static str,
    /// A smart group's filter as given.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub filter: Option<Value>,
    pub member_count: i64,
    pub created_at: String,
    pub created_by: Option<String>,
    pub updated_at: String,
}

impl From<&GroupRecord> for GroupView {
    fn from(g: &GroupRecord) -> Self {
        GroupView {
            id: g.id.to_string(),
            tenant_id: g.tenant_id.to_string(),
            name: g.name.clone(),
            kind: g.kind.as_str(),
            filter: g
                .filter_json
                .as_deref()
                .and_then(|f| serde_json::from_str(f).ok()),
            member_count: g.member_count,
            created_at: g.created_at.to_rfc3339(),
            created_by: g.created_by.clone(),
            updated_at: g.updated_at.to_rfc3339(),
        }
    }
}

/// A member of a group.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupMemberView {
    pub device_id: String,
    pub serial_number: Option<String>,
    pub device_name: Option<String>,
    pub joined_at: String,
}

impl From<&GroupMemberRecord> for GroupMemberView {
    fn from(m: &GroupMemberRecord) -> Self {
        GroupMemberView {
            device_id: m.device_id.to_string(),
            serial_number: m.serial_number.clone(),
            device_name: m.device_name.clone(),
            joined_at: m.joined_at.to_rfc3339(),
        }
    }
}

/// A join or a leave.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupHistoryView {
    pub device_id: String,
    /// `joined` or `left`.
    pub event: String,
    /// `added`, `removed`, `matched`, `unmatched`, `definition`, `inventory`, `enrollment`, `checked_out`.
    pub reason: String,
    pub at: String,
}

impl From<&GroupHistoryRecord> for GroupHistoryView {
    fn from(h: &GroupHistoryRecord) -> Self {
        GroupHistoryView {
            device_id: h.device_id.to_string(),
            event: h.event.clone(),
            reason: h.reason.clone(),
            at: h.at.to_rfc3339(),
        }
    }
}

/// A new group.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GroupInput {
    pub name: String,
    /// `static` or `smart`.
    pub kind: String,
    /// A smart group's filter: `{"match": "all"|"any", "conditions": [{"field", "op", "value"}…]}`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub filter: Option<Value>,
}

/// A change of a group: a new name, a smart group's new filter.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GroupUpdate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub filter: Option<Value>,
}

/// Devices to add to or remove from a static group: by id and/or serial number.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MembersInput {
    #[serde(default)]
    pub device_ids: Vec<String>,
    #[serde(default)]
    pub serials: Vec<String>,
}

/// What a membership change did.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MembersOutcome {
    /// Devices whose membership changed.
    pub changed: usize,
    /// Devices named that were members already (add) or were not members (remove).
    pub unchanged: usize,
    /// Serial numbers the tenant has no device for.
    pub unknown_serials: Vec<String>,
    /// Device ids the tenant has no device for (another tenant's look the same).
    pub unknown_device_ids: Vec<String>,
}

/// The serial numbers of a CSV upload: the first column of every row, a header row (`serial`,
/// `serial_number`, `serial number`) skipped, blank rows ignored, quotes removed.
pub fn serials_from_csv(text: &str) -> Result<Vec<String>, CoreError> {
    let mut serials = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let first = line
            .split([',', ';', '\t'])
            .next()
            .unwrap_or_default()
            .trim()
            .trim_matches('"')
            .trim();
        if first.is_empty() {
            continue;
        }
        if i == 0
            && matches!(
                first.to_lowercase().as_str(),
                "serial" | "serial_number" | "serial number" | "serialnumber"
            )
        {
            continue;
        }
        if first.len() > 64 || !first.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(CoreError::Unprocessable(vec![problem(
                format!("csv line {}", i + 1),
                format!("{first:?} is not a serial number (letters and digits)"),
            )]));
        }
        serials.push(first.to_owned());
    }
    if serials.len() > MAX_MEMBERS_PER_REQUEST {
        return Err(CoreError::Invalid(format!(
            "at most {MAX_MEMBERS_PER_REQUEST} serial numbers per upload"
        )));
    }
    Ok(serials)
}

fn check_name(name: &str) -> Result<String, CoreError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.len() > MAX_NAME {
        return Err(CoreError::Unprocessable(vec![problem(
            "name",
            format!("must be 1 to {MAX_NAME} characters"),
        )]));
    }
    Ok(trimmed.to_owned())
}

/// Evaluates a filter over the tenant's enrolled devices.
fn evaluate(filter: &SmartFilter, facts: &[DeviceGroupFacts]) -> BTreeSet<DeviceId> {
    facts
        .iter()
        .filter(|f| filter.matches(&DeviceFacts::new(f)))
        .map(|f| f.device_id)
        .collect()
}

/// When re-evaluating a device's groups marks it for the reconciler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MarkDevice {
    /// Whatever the groups say: something the plans read may have changed (an enrollment, a check-out, a
    /// report that changed a plan input).
    Always,
    /// Only when the device joins or leaves a group: a report that changed facts but no plan input.
    OnGroupChange,
}

impl Orchard {
    /// The tenant (in the caller's scope), or NotFound.
    pub(crate) async fn seen_tenant(
        &self,
        who: &Principal,
        tenant: TenantId,
    ) -> Result<(), CoreError> {
        self.store
            .get_tenant(who.scope(), tenant)
            .await?
            .ok_or(CoreError::NotFound)?;
        Ok(())
    }

    /// A group of the tenant the caller sees, or NotFound (another tenant's group too).
    pub(crate) async fn seen_group(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: GroupId,
    ) -> Result<GroupRecord, CoreError> {
        self.seen_tenant(who, tenant).await?;
        self.store
            .get_group(who.scope(), tenant, id)
            .await?
            .ok_or(CoreError::NotFound)
    }

    /// `GET /tenants/{id}/groups`.
    pub async fn list_groups(
        &self,
        who: &Principal,
        tenant: TenantId,
    ) -> Result<Vec<GroupView>, CoreError> {
        self.seen_tenant(who, tenant).await?;
        Ok(self
            .store
            .list_groups(who.scope(), tenant)
            .await?
            .iter()
            .map(GroupView::from)
            .collect())
    }

    /// `GET /tenants/{id}/groups/{group}`.
    pub async fn group_detail(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: GroupId,
    ) -> Result<GroupView, CoreError> {
        Ok(GroupView::from(&self.seen_group(who, tenant, id).await?))
    }

    /// Creates a group (the tenant's admins and operators); a smart group gets its members at once.
    pub async fn create_group(
        &self,
        who: &Principal,
        tenant: TenantId,
        input: GroupInput,
    ) -> Result<GroupView, CoreError> {
        self.seen_tenant(who, tenant).await?;
        who.tenant_admin(tenant)?;
        let name = check_name(&input.name)?;
        let kind = GroupKind::parse(&input.kind).ok_or_else(|| {
            CoreError::Unprocessable(vec![problem("kind", "must be \"static\" or \"smart\"")])
        })?;
        let (filter_json, members) = match (kind, &input.filter) {
            (GroupKind::Static, None) => (None, BTreeSet::new()),
            (GroupKind::Static, Some(_)) => {
                return Err(CoreError::Unprocessable(vec![problem(
                    "filter",
                    "a static group has no filter (its members are added by hand)",
                )]))
            }
            (GroupKind::Smart, None) => {
                return Err(CoreError::Unprocessable(vec![problem(
                    "filter",
                    "required for a smart group",
                )]))
            }
            (GroupKind::Smart, Some(json)) => {
                let filter = SmartFilter::from_json(json)?;
                let facts = self
                    .store
                    .tenant_group_facts(tenant, filter.sections())
                    .await?;
                (Some(json.to_string()), evaluate(&filter, &facts))
            }
        };
        let now = self.clock.now();
        let record = GroupRecord {
            id: GroupId::new(),
            tenant_id: tenant,
            name,
            kind,
            filter_json,
            created_at: now,
            created_by: Some(who.actor()),
            updated_at: now,
            member_count: members.len() as i64,
        };
        let mut unit = self.store.begin_unit().await?;
        unit.create_group(&record, &members, "matched").await?;
        if kind == GroupKind::Smart {
            // Its members were matched against facts read before this unit; a report since then that repeated
            // its facts would not be matched again without this.
            unit.forget_tenant_facts_digests(tenant).await?;
        }
        self.commit_unit(unit).await?;
        self.wake_reconciler();
        tracing::info!(group = %record.id, %tenant, kind = kind.as_str(), members = members.len(), actor = %who.actor(), "group created");
        Ok(GroupView::from(&record))
    }

    /// Renames a group or replaces a smart group's filter (members recomputed in the same unit).
    pub async fn update_group(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: GroupId,
        update: GroupUpdate,
    ) -> Result<GroupView, CoreError> {
        let group = self.seen_group(who, tenant, id).await?;
        who.tenant_admin(tenant)?;
        let name = match &update.name {
            Some(n) => check_name(n)?,
            None => group.name.clone(),
        };
        let (filter_json, members) = match (group.kind, &update.filter) {
            (_, None) => (None, None),
            (GroupKind::Static, Some(_)) => {
                return Err(CoreError::Unprocessable(vec![problem(
                    "filter",
                    "a static group has no filter (its members are added by hand)",
                )]))
            }
            (GroupKind::Smart, Some(json)) => {
                let filter = SmartFilter::from_json(json)?;
                let facts = self
                    .store
                    .tenant_group_facts(tenant, filter.sections())
                    .await?;
                (Some(json.to_string()), Some(evaluate(&filter, &facts)))
            }
        };
        let now = self.clock.now();
        let mut unit = self.store.begin_unit().await?;
        unit.update_group(id, &name, filter_json.as_deref(), members.as_ref(), now)
            .await?;
        if filter_json.is_some() {
            // As for a new smart group (see `create_group`).
            unit.forget_tenant_facts_digests(tenant).await?;
        }
        self.commit_unit(unit).await?;
        self.wake_reconciler();
        self.group_detail(who, tenant, id).await
    }

    /// Deletes a group no assignment names (Conflict otherwise: change the assignment first).
    pub async fn delete_group(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: GroupId,
    ) -> Result<(), CoreError> {
        self.seen_group(who, tenant, id).await?;
        who.tenant_admin(tenant)?;
        let naming = self.store.assignments_naming_group(id).await?;
        if !naming.is_empty() {
            return Err(CoreError::Conflict(format!(
                "assignments name this group: {}",
                naming.join(", ")
            )));
        }
        let mut unit = self.store.begin_unit().await?;
        unit.delete_group(id, self.clock.now()).await?;
        self.commit_unit(unit).await?;
        self.wake_reconciler();
        Ok(())
    }

    /// A page of a group's members.
    pub async fn group_members(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: GroupId,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<GroupMemberView>, i64), CoreError> {
        let group = self.seen_group(who, tenant, id).await?;
        let members = self.store.list_group_members(id, limit, offset).await?;
        Ok((
            members.iter().map(GroupMemberView::from).collect(),
            group.member_count,
        ))
    }

    /// Joins and leaves, newest first (optionally of one device).
    pub async fn group_history(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: GroupId,
        device: Option<DeviceId>,
        limit: i64,
    ) -> Result<Vec<GroupHistoryView>, CoreError> {
        self.seen_group(who, tenant, id).await?;
        Ok(self
            .store
            .group_history(id, device, limit.clamp(1, 1000))
            .await?
            .iter()
            .map(GroupHistoryView::from)
            .collect())
    }

    /// Adds (or with `remove` removes) devices of a static group by id and serial; ids and serials the tenant
    /// does not have are reported back, not dropped silently.
    pub async fn change_group_members(
        &self,
        who: &Principal,
        tenant: TenantId,
        id: GroupId,
        input: MembersInput,
        remove: bool,
    ) -> Result<MembersOutcome, CoreError> {
        let group = self.seen_group(who, tenant, id).await?;
        who.tenant_admin(tenant)?;
        if group.kind == GroupKind::Smart {
            return Err(CoreError::Conflict(
                "a smart group's members come from its filter".into(),
            ));
        }
        if input.device_ids.len() + input.serials.len() > MAX_MEMBERS_PER_REQUEST {
            return Err(CoreError::Invalid(format!(
                "at most {MAX_MEMBERS_PER_REQUEST} devices per request"
            )));
        }
        let mut unknown_device_ids = Vec::new();
        let mut named = Vec::new();
        for raw in &input.device_ids {
            match DeviceId::parse(raw.trim()) {
                Ok(d) => named.push(d),
                Err(_) => unknown_device_ids.push(raw.clone()),
            }
        }
        let found = self.store.tenant_devices_among(tenant, &named).await?;
        unknown_device_ids.extend(
            named
                .iter()
                .filter(|d| !found.contains(d))
                .map(ToString::to_string),
        );
        let mut devices = found;
        let serials: Vec<String> = input.serials.iter().map(|s| s.trim().to_owned()).collect();
        let by_serial = self
            .store
            .tenant_devices_by_serial(tenant, &serials)
            .await?;
        let mut unknown_serials = Vec::new();
        for s in &serials {
            match by_serial.iter().find(|(serial, _)| serial == s) {
                Some((_, d)) => {
                    devices.insert(*d);
                }
                None if !s.is_empty() => unknown_serials.push(s.clone()),
                None => {}
            }
        }
        let now = self.clock.now();
        let mut unit = self.store.begin_unit().await?;
        let changed = if remove {
            unit.remove_group_members(id, &devices, now).await?
        } else {
            unit.add_group_members(id, &devices, now).await?
        };
        self.commit_unit(unit).await?;
        self.wake_reconciler();
        Ok(MembersOutcome {
            changed: changed.len(),
            unchanged: devices.len() - changed.len(),
            unknown_serials,
            unknown_device_ids,
        })
    }

    /// Inside a use case's unit: re-evaluates the device's smart groups (after its inventory changed, it
    /// enrolled or checked out) and marks it for the reconciler as `mark` says. Returns whether it marked.
    /// `read` is the device's standing when the caller has read it already (with the mark `mark` asks first:
    /// a DeviceInformation answer reads it with its facts update, see [`Orchard::apply_result`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn device_inventory_changed(
        &self,
        unit: &mut UnitOfWork,
        device: DeviceId,
        tenant: TenantId,
        reason: &str,
        mark: MarkDevice,
        read: Option<DeviceStanding>,
        now: UnixTime,
    ) -> Result<bool, CoreError> {
        // One statement reads the tenant's smart groups, the device's current groups and its facts, and (for
        // `Always`) marks the device; the memberships are written only on change, and mark it if not yet marked.
        let marked_first = mark == MarkDevice::Always;
        let DeviceStanding {
            groups: standing,
            facts: column_facts,
            smart_groups_revision,
        } = match read {
            Some(read) => read,
            None => {
                unit.read_device_standing(device, tenant, marked_first.then_some(now))
                    .await?
            }
        };
        let filters: Vec<(GroupId, SmartFilter)> = standing
            .iter()
            .filter(|g| g.smart && g.tenant_id == tenant)
            .filter_map(|g| {
                let json: Value = serde_json::from_str(g.filter_json.as_deref()?).ok()?;
                match SmartFilter::from_json(&json) {
                    Ok(f) => Some((g.id, f)),
                    Err(e) => {
                        tracing::warn!(group = %g.id, error = %e, "stored smart filter unreadable; group skipped");
                        None
                    }
                }
            })
            .collect();
        if let Some(revision) = smart_groups_revision {
            let smart = standing
                .iter()
                .filter(|g| g.smart && g.tenant_id == tenant)
                .count();
            self.smart_groups
                .keep(tenant, revision, &filters, smart - filters.len());
        }
        if !filters.iter().all(|(_, f)| f.reads_only_reported_facts()) {
            unit.forget_facts_digest(device).await?;
        }
        let mut matching = BTreeSet::new();
        if !filters.is_empty() {
            let mut sections = FactSections::default();
            for (_, f) in &filters {
                let s = f.sections();
                sections.device_information |= s.device_information;
                sections.installed_applications |= s.installed_applications;
            }
            let raw = if sections == FactSections::default() {
                column_facts
            } else {
                unit.device_group_facts(device, sections).await?
            };
            if let Some(raw) = raw {
                let facts = DeviceFacts::new(&raw);
                matching = filters
                    .iter()
                    .filter(|(_, f)| f.matches(&facts))
                    .map(|(id, _)| *id)
                    .collect();
            }
        }
        // Leave every group of another tenant (the device moved) and the smart groups it no longer matches;
        // static groups of its own tenant are kept.
        let leave: Vec<GroupId> = standing
            .iter()
            .filter(|g| {
                g.member && (g.tenant_id != tenant || (g.smart && !matching.contains(&g.id)))
            })
            .map(|g| g.id)
            .collect();
        let join: Vec<GroupId> = matching
            .iter()
            .filter(|id| !standing.iter().any(|g| g.member && g.id == **id))
            .copied()
            .collect();
        let moved = !leave.is_empty() || !join.is_empty();
        if moved {
            unit.change_device_groups(device, &leave, &join, reason, now)
                .await?;
            if !marked_first {
                unit.mark_devices_dirty(&[device], now).await?;
            }
        }
        Ok(marked_first || moved)
    }

    /// Re-evaluates one device's smart groups and marks it for the reconciler in a unit of its own: what an
    /// inventory report does inside its unit, for the system's own use (and the desired-state benchmark, which
    /// measures the reconciler's cost per report through it). Unknown devices are NotFound.
    pub async fn reevaluate_device_groups(
        &self,
        _system: &SystemCtx,
        device: DeviceId,
    ) -> Result<(), CoreError> {
        let now = self.clock.now();
        let mut unit = self.store.begin_unit().await?;
        let Some(tenant) = unit.device_tenant(device).await? else {
            unit.rollback().await?;
            return Err(CoreError::NotFound);
        };
        self.device_inventory_changed(
            &mut unit,
            device,
            tenant,
            "reevaluated",
            MarkDevice::Always,
            None,
            now,
        )
        .await?;
        self.commit_unit(unit).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(s: &str) -> Version {
        Version::parse_os(s).expect(s)
    }

    #[test]
    fn os_versions_compare_as_versions() {
        assert!(v("18.10") > v("18.9"));
        assert!(v("18.9") > v("18.2"));
        assert!(v("18.2") > v("18"));
        assert_eq!(v("18").cmp(&v("18.0")), Ordering::Equal);
        assert!(v("17.6.1") < v("18"));
        assert!(Version::parse_os("18.x").is_none());
        assert!(Version::parse_os("").is_none());
        assert!(
            Version::parse_lenient("2.0b3").expect("lenient")
                > Version::parse_lenient("2.0").expect("2.0")
        );
    }

    #[test]
    fn globs_match_names() {
        assert!(glob_matches("PHYS-*", "phys-cart-12"));
        assert!(glob_matches("*cart?", "Music cart7"));
        assert!(!glob_matches("PHYS-*", "MUS-1"));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b*c", "aXXbYY"));
    }

    #[test]
    fn filters_name_the_bad_field() {
        let bad = json!({"conditions": [
            {"field": "os_version", "op": "older", "value": "18.2"},
            {"field": "os_version", "op": "lt", "value": "eighteen"},
            {"field": "colour", "value": "red"},
            {"field": "supervised", "value": "yes"},
            {"field": "last_seen", "op": "before", "value": "yesterday"}
        ]});
        let Err(CoreError::Unprocessable(errors)) = SmartFilter::from_json(&bad) else {
            panic!("refused")
        };
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "filter.conditions[0].op",
                "filter.conditions[1].value",
                "filter.conditions[2].field",
                "filter.conditions[3].value",
                "filter.conditions[4].value"
            ]
        );
        assert!(SmartFilter::from_json(&json!({"conditions": []})).is_err());
    }

    fn facts(os: &str, name: &str) -> DeviceGroupFacts {
        DeviceGroupFacts {
            device_id: DeviceId::new(),
            tenant_id: TenantId::new(),
            enrolled: true,
            model: Some("MPQ03LL/A".into()),
            model_name: Some("iPad".into()),
            product_name: Some("iPad13,18".into()),
            os_version: Some(os.into()),
            device_name: Some(name.into()),
            supervised: Some(true),
            last_seen_at: Some(UnixTime(1_000)),
            dep_template_id: None,
            identity_not_after: Some(UnixTime(5_000)),
            device_information_json: Some(r#"{"type":"DeviceInformation","data":{"IsMultiUser":true}}"#.into()),
            installed_applications_json: Some(
                r#"{"type":"InstalledApplicationList","data":[{"Identifier":"com.example.notes","ShortVersion":"2.10"}]}"#.into(),
            ),
        }
    }

    #[test]
    fn conditions_evaluate_over_inventory() {
        let filter = SmartFilter::from_json(&json!({"conditions": [
            {"field": "os_version", "op": "lt", "value": "18.2"},
            {"field": "model", "op": "prefix", "value": "iPad13,"},
            {"field": "device_name", "op": "matches", "value": "PHYS-*"},
            {"field": "supervised", "op": "is", "value": true},
            {"field": "shared_ipad", "op": "is", "value": true},
            {"field": "installed_app", "value": "com.example.notes", "version_op": "gt", "version": "2.9"},
            {"field": "last_seen", "op": "before", "value": 2000},
            {"field": "identity_expires", "op": "before", "value": 6000}
        ]}))
        .expect("valid");
        let older = facts("18.1", "phys-1");
        let newer = facts("18.10", "phys-2");
        assert!(filter.matches(&DeviceFacts::new(&older)));
        assert!(!filter.matches(&DeviceFacts::new(&newer)));
        let mut gone = facts("18.1", "phys-3");
        gone.enrolled = false;
        assert!(!filter.matches(&DeviceFacts::new(&gone)));
        let any = SmartFilter::from_json(&json!({"match": "any", "conditions": [
            {"field": "os_version", "op": "ge", "value": "18.10"},
            {"field": "installed_app", "op": "not_installed", "value": "com.example.notes"}
        ]}))
        .expect("valid");
        assert!(any.matches(&DeviceFacts::new(&newer)));
        assert!(!any.matches(&DeviceFacts::new(&older)));
    }
}
