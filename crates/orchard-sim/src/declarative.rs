//! Declarative device management on a simulated iPad, sans-IO: what the device keeps per channel (its
//! declarations, the token it synced, the status it last reported), how it applies declarations (activations
//! decide which configurations are active; types it does not know, or that need a newer iOS, are invalid
//! with a reason, as on an iPad), the status reports it builds (a FullReport first, then only what changed,
//! restricted to the items it is subscribed to) and the software update an enforcement declaration starts,
//! moved on only by explicit steps ([`advance_software_update`]), never by a clock.

use std::collections::BTreeMap;

use orchard_protocol::declarative::{
    build, insert_item, Declaration, DeclarationKind, StatusReport,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::state::DeviceState;

/// What one channel (the device, or a Shared iPad user) keeps of declarative management.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DdmChannelState {
    /// The DeclarationsToken of the set it last synced.
    pub declarations_token: Option<String>,
    /// The declarations it holds, by `kind/identifier`.
    pub declarations: BTreeMap<String, Declaration>,
    /// The flat status items (dotted names) it last reported.
    pub reported: BTreeMap<String, Value>,
    /// Whether it sent its first (full) report.
    pub full_report_sent: bool,
    /// How many syncs it ran (simulator bookkeeping).
    pub syncs: u32,
    /// Profiles installed from `configuration.legacy` declarations, by declaration identifier.
    #[serde(default)]
    pub legacy_profiles: BTreeMap<String, LegacyProfileState>,
}

/// What a `configuration.legacy` declaration did on the device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LegacyProfileState {
    /// The declaration's ServerToken when it was applied (a new token is fetched again).
    pub server_token: String,
    /// The PayloadIdentifier of the profile it installed.
    pub profile_identifier: Option<String>,
    /// Why the profile could not be downloaded or installed.
    pub error: Option<String>,
}

/// The legacy profiles a channel must install (declaration identifier, token, ProfileURL: new, changed,
/// or just activated) and the declarations whose profile must go (removed or no longer active).
pub fn legacy_profile_work(
    state: &DeviceState,
    channel_name: &str,
) -> (Vec<(String, String, String)>, Vec<String>) {
    let Some(channel) = state.ddm.get(channel_name) else {
        return (Vec::new(), Vec::new());
    };
    let active = activated(channel);
    let wanted: Vec<&Declaration> = channel
        .declarations
        .values()
        .filter(|d| d.declaration_type == build::LEGACY_PROFILE && active.contains(&d.identifier))
        .collect();
    let install = wanted
        .iter()
        .filter(|d| {
            channel
                .legacy_profiles
                .get(&d.identifier)
                .is_none_or(|l| l.server_token != d.server_token)
        })
        .filter_map(|d| {
            let url = d.payload.get("ProfileURL")?.as_str()?.to_owned();
            Some((d.identifier.clone(), d.server_token.clone(), url))
        })
        .collect();
    let remove = channel
        .legacy_profiles
        .keys()
        .filter(|id| !wanted.iter().any(|d| &d.identifier == *id))
        .cloned()
        .collect();
    (install, remove)
}

/// Records what installing a declaration's profile did.
pub fn legacy_profile_applied(
    state: &mut DeviceState,
    channel_name: &str,
    declaration: &str,
    server_token: &str,
    outcome: Result<String, String>,
) {
    let channel = state.ddm.entry(channel_name.to_owned()).or_default();
    let entry = channel
        .legacy_profiles
        .entry(declaration.to_owned())
        .or_default();
    entry.server_token = server_token.to_owned();
    match outcome {
        Ok(identifier) => {
            entry.profile_identifier = Some(identifier);
            entry.error = None;
        }
        Err(reason) => entry.error = Some(reason),
    }
}

/// A declaration whose profile must go: the profile it installed is removed, as iOS does.
pub fn legacy_profile_removed(state: &mut DeviceState, channel_name: &str, declaration: &str) {
    let removed = state
        .ddm
        .get_mut(channel_name)
        .and_then(|c| c.legacy_profiles.remove(declaration))
        .and_then(|l| l.profile_identifier);
    if let Some(identifier) = removed {
        state
            .installed_profiles
            .retain(|p| p.identifier != identifier);
    }
}

/// The software update an enforcement declaration started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SoftwareUpdateState {
    /// none | downloading | prepared | installing | failed.
    pub install_state: String,
    pub pending_version: Option<String>,
    pub pending_build: Option<String>,
    pub failure_reason: Option<String>,
}

fn key(kind: DeclarationKind, identifier: &str) -> String {
    format!("{}/{identifier}", kind.as_str())
}

fn major(version: &str) -> u32 {
    version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

fn version_key(version: &str) -> Vec<u32> {
    version.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// The first iOS that knows a declaration type (None: unknown to any iPad).
fn introduced(declaration_type: &str) -> Option<u32> {
    Some(match declaration_type {
        build::SERVER_CAPABILITIES | build::STATUS_SUBSCRIPTIONS | build::ACTIVATION_SIMPLE => 15,
        build::PROPERTIES => 16,
        build::ENFORCEMENT_SPECIFIC => 17,
        build::SOFTWAREUPDATE_SETTINGS => 18,
        build::LEGACY_PROFILE | "com.apple.configuration.passcode.settings" => 15,
        _ => return None,
    })
}

/// One declaration's status (`management.declarations` element).
fn declaration_status(state: &DeviceState, channel: &DdmChannelState, d: &Declaration) -> Value {
    let os_major = major(&state.os_version);
    let known = introduced(&d.declaration_type);
    let legacy_error = (d.declaration_type == build::LEGACY_PROFILE)
        .then(|| channel.legacy_profiles.get(&d.identifier))
        .flatten()
        .and_then(|l| l.error.clone());
    let valid = known.is_some_and(|m| os_major >= m) && legacy_error.is_none();
    let active = valid
        && match d.kind() {
            Some(DeclarationKind::Configuration) => activated(channel).contains(&d.identifier),
            _ => true,
        };
    let mut status = json!({
        "identifier": d.identifier,
        "server-token": d.server_token,
        "active": active,
        "valid": if valid { "valid" } else { "invalid" },
    });
    if !valid {
        let (code, description) = match (known, legacy_error) {
            (_, Some(reason)) => ("Error.ConfigurationCannotBeApplied", reason),
            (None, None) => (
                "Error.UnknownDeclarationType",
                "The declaration type is not supported.".to_owned(),
            ),
            (Some(_), None) => (
                "Error.UnsupportedOS",
                "The declaration type needs a newer OS version.".to_owned(),
            ),
        };
        status["reasons"] = json!([{"code": code, "description": description}]);
    }
    status
}

/// The configurations referenced by the channel's valid activations.
fn activated(channel: &DdmChannelState) -> Vec<String> {
    channel
        .declarations
        .values()
        .filter(|d| d.declaration_type == build::ACTIVATION_SIMPLE)
        .flat_map(|d| {
            d.payload
                .get("StandardConfigurations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// The active enforcement declaration's target, if the device is below it.
fn enforcement_target(state: &DeviceState) -> Option<(String, Option<String>)> {
    let channel = state.ddm.get("")?;
    if major(&state.os_version) < 17 {
        return None;
    }
    let active = activated(channel);
    channel
        .declarations
        .values()
        .filter(|d| d.declaration_type == build::ENFORCEMENT_SPECIFIC)
        .filter(|d| active.contains(&d.identifier))
        .filter_map(|d| {
            let version = d.payload.get("TargetOSVersion")?.as_str()?.to_owned();
            let build = d
                .payload
                .get("TargetBuildVersion")
                .and_then(Value::as_str)
                .map(str::to_owned);
            Some((version, build))
        })
        .filter(|(v, _)| version_key(&state.os_version) < version_key(v))
        .max_by_key(|(v, _)| version_key(v))
}

/// Applies a synced set to a channel: keeps exactly `declarations`; the device channel's enforcement target
/// becomes its pending update.
pub fn apply_declarations(
    state: &mut DeviceState,
    channel_name: &str,
    token: &str,
    declarations: Vec<Declaration>,
) {
    let channel = state.ddm.entry(channel_name.to_owned()).or_default();
    channel.declarations = declarations
        .into_iter()
        .filter_map(|d| Some((key(d.kind()?, &d.identifier), d)))
        .collect();
    channel.declarations_token = Some(token.to_owned());
    channel.syncs = channel.syncs.saturating_add(1);
    if channel_name.is_empty() {
        refresh_pending_update(state);
    }
}

fn refresh_pending_update(state: &mut DeviceState) {
    match enforcement_target(state) {
        Some((version, build)) => {
            let update = &mut state.software_update;
            if update.pending_version.as_deref() != Some(version.as_str()) {
                update.pending_version = Some(version);
                update.pending_build = build;
                update.install_state = "none".into();
                update.failure_reason = None;
            }
        }
        None => {
            let update = &mut state.software_update;
            if update.install_state != "failed" {
                *update = SoftwareUpdateState {
                    install_state: "none".into(),
                    ..SoftwareUpdateState::default()
                };
            }
        }
    }
}

/// One step of the pending update: none → downloading → prepared → installing → installed (the OS version
/// changes and nothing is pending). Returns the install state after the step, or None with nothing pending.
pub fn advance_software_update(state: &mut DeviceState) -> Option<String> {
    let pending = state.software_update.pending_version.clone()?;
    let next = match state.software_update.install_state.as_str() {
        "downloading" => "prepared",
        "prepared" => "installing",
        "installing" => {
            state.os_version = pending;
            state.build_version = state
                .software_update
                .pending_build
                .clone()
                .unwrap_or_else(|| crate::ade::synthetic_build(&state.os_version));
            state.boot_count = state.boot_count.saturating_add(1);
            state.software_update = SoftwareUpdateState {
                install_state: "none".into(),
                ..SoftwareUpdateState::default()
            };
            return Some("none".into());
        }
        _ => "downloading",
    };
    state.software_update.install_state = next.to_owned();
    Some(next.to_owned())
}

/// The pending update fails (no space, say).
pub fn fail_software_update(state: &mut DeviceState, reason: &str) {
    state.software_update.install_state = "failed".into();
    state.software_update.failure_reason = Some(reason.to_owned());
}

/// Every status item the channel could report now (dotted names).
fn current_items(
    state: &DeviceState,
    channel: &DdmChannelState,
    user: bool,
) -> BTreeMap<String, Value> {
    let mut items = BTreeMap::new();
    let mut put = |name: &str, value: Value| {
        items.insert(name.to_owned(), value);
    };
    put("device.operating-system.version", json!(state.os_version));
    if !user {
        put(
            "device.identifier.serial-number",
            json!(state.serial_number),
        );
        put("device.identifier.udid", json!(state.udid));
        put("device.model.family", json!("iPad"));
        put("device.model.identifier", json!(state.product_name));
        put("device.model.marketing-name", json!(state.model_name));
        put(
            "device.operating-system.build-version",
            json!(state.build_version),
        );
        put("device.operating-system.family", json!("iPadOS"));
        put(
            "device.operating-system.marketing-name",
            json!(format!("iPadOS {}", state.os_version)),
        );
        if major(&state.os_version) >= 17 {
            let update = &state.software_update;
            put(
                "softwareupdate.install-state",
                json!(if update.install_state.is_empty() {
                    "none"
                } else {
                    &update.install_state
                }),
            );
            if let Some(version) = &update.pending_version {
                let mut pending = json!({"os-version": version});
                if let Some(build) = &update.pending_build {
                    pending["build-version"] = json!(build);
                }
                put("softwareupdate.pending-version", pending);
            }
            if let Some(reason) = &update.failure_reason {
                put(
                    "softwareupdate.failure-reason",
                    json!({"reason": reason, "count": 1, "timestamp": "2026-12-04T00:00:00Z"}),
                );
            }
        }
    }
    let mut declarations =
        json!({"activations": [], "configurations": [], "assets": [], "management": []});
    for d in channel.declarations.values() {
        let list = match d.kind() {
            Some(DeclarationKind::Activation) => "activations",
            Some(DeclarationKind::Configuration) => "configurations",
            Some(DeclarationKind::Asset) => "assets",
            Some(DeclarationKind::Management) => "management",
            None => continue,
        };
        if let Some(array) = declarations[list].as_array_mut() {
            array.push(declaration_status(state, channel, d));
        }
    }
    put("management.declarations", declarations);
    items
}

/// The items the channel is subscribed to (its status-subscriptions declarations); the declarations' own
/// status is always reported.
fn subscribed(channel: &DdmChannelState) -> Vec<String> {
    let mut names: Vec<String> = channel
        .declarations
        .values()
        .filter(|d| d.declaration_type == build::STATUS_SUBSCRIPTIONS)
        .flat_map(|d| {
            d.payload
                .get("StatusItems")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|i| i.get("Name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    names.push("management.declarations".into());
    names
}

/// The status report the channel sends now: the first one full, later ones only what changed since the
/// last report (None when nothing did). Remembers what it reported.
pub fn status_report(state: &mut DeviceState, channel_name: &str) -> Option<StatusReport> {
    let user = !channel_name.is_empty();
    let channel = state.ddm.get(channel_name).cloned().unwrap_or_default();
    let wanted = subscribed(&channel);
    let items: BTreeMap<String, Value> = current_items(state, &channel, user)
        .into_iter()
        .filter(|(name, _)| wanted.contains(name))
        .collect();
    let full = !channel.full_report_sent;
    let mut changed: Vec<(String, Value)> = items
        .iter()
        .filter(|(name, value)| full || channel.reported.get(*name) != Some(value))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    if !full {
        // Declarations gone since the last report are marked removed, as an iPad's incremental report does.
        if let (Some(before), Some(now)) = (
            channel.reported.get("management.declarations"),
            items.get("management.declarations"),
        ) {
            if let Some((_, value)) = changed
                .iter_mut()
                .find(|(n, _)| n == "management.declarations")
            {
                for list in ["activations", "configurations", "assets", "management"] {
                    let ids_now: Vec<&Value> = now[list]
                        .as_array()
                        .map(|a| a.iter().filter_map(|d| d.get("identifier")).collect())
                        .unwrap_or_default();
                    let gone: Vec<Value> = before[list]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|d| d.get("identifier"))
                                .filter(|id| !ids_now.contains(id))
                                .map(|id| json!({"identifier": id, "_removed": true}))
                                .collect()
                        })
                        .unwrap_or_default();
                    if let Some(array) = value[list].as_array_mut() {
                        array.extend(gone);
                    }
                }
            }
        }
    }
    if changed.is_empty() {
        return None;
    }
    let mut tree = Map::new();
    for (name, value) in &changed {
        insert_item(&mut tree, name, value.clone());
    }
    let entry = state.ddm.entry(channel_name.to_owned()).or_default();
    entry.reported = items;
    entry.full_report_sent = true;
    Some(StatusReport {
        status_items: tree,
        errors: Vec::new(),
        full_report: Some(full),
    })
}

/// Which declarations of a manifest the channel must fetch (new, or with another ServerToken).
pub fn to_fetch(
    state: &DeviceState,
    channel_name: &str,
    manifest: &orchard_protocol::declarative::ManifestDeclarations,
) -> Vec<(DeclarationKind, String)> {
    let held = state.ddm.get(channel_name);
    manifest
        .all()
        .filter(|(kind, item)| {
            held.and_then(|c| c.declarations.get(&key(*kind, &item.identifier)))
                .is_none_or(|d| d.server_token != item.server_token)
        })
        .map(|(kind, item)| (kind, item.identifier.clone()))
        .collect()
}

/// A declaration the channel already holds with this token.
pub fn held(
    state: &DeviceState,
    channel_name: &str,
    kind: DeclarationKind,
    identifier: &str,
) -> Option<Declaration> {
    state
        .ddm
        .get(channel_name)?
        .declarations
        .get(&key(kind, identifier))
        .cloned()
}
