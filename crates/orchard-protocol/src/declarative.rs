//! Declarative device management (DDM) wire formats, sans-IO: the endpoints a device names in a
//! `DeclarativeManagement` check-in, the JSON the server answers (`SyncTokens`, the declaration items, one
//! declaration), the status report a device uploads, and the `Data` of the `DeclarativeManagement` command.
//! Keys follow Apple's `declarative/protocol/*.yaml` and `declarations/declarationbase.yaml`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ProtocolError;

/// The longest declaration Identifier and ServerToken Apple allows (bytes).
pub const MAX_IDENTIFIER_BYTES: usize = 64;
/// The largest status report we accept (JSON bytes). Real reports are a few KiB; a full report with every
/// declaration of a well-managed iPad stays far below this.
pub const MAX_STATUS_REPORT_BYTES: usize = 512 * 1024;

/// The four kinds of declaration, as the `declaration/<kind>/<identifier>` endpoint names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeclarationKind {
    Activation,
    Configuration,
    Asset,
    Management,
}

impl DeclarationKind {
    /// The endpoint's path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            DeclarationKind::Activation => "activation",
            DeclarationKind::Configuration => "configuration",
            DeclarationKind::Asset => "asset",
            DeclarationKind::Management => "management",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "activation" => DeclarationKind::Activation,
            "configuration" => DeclarationKind::Configuration,
            "asset" => DeclarationKind::Asset,
            "management" => DeclarationKind::Management,
            _ => return None,
        })
    }

    /// The kind a declaration type belongs to: `com.apple.activation.*` is an activation, and so on.
    pub fn of_type(declaration_type: &str) -> Option<Self> {
        let rest = declaration_type.strip_prefix("com.apple.")?;
        let kind = rest.split('.').next()?;
        Self::parse(kind)
    }
}

/// What a `DeclarativeManagement` check-in asks for (its `Endpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tokens,
    DeclarationItems,
    Declaration {
        kind: DeclarationKind,
        identifier: String,
    },
    Status,
}

impl Endpoint {
    pub fn parse(endpoint: &str) -> Result<Self, ProtocolError> {
        let invalid = |reason: &str| ProtocolError::InvalidValue {
            key: "Endpoint",
            reason: reason.to_owned(),
        };
        Ok(match endpoint {
            "tokens" => Endpoint::Tokens,
            "declaration-items" => Endpoint::DeclarationItems,
            "status" => Endpoint::Status,
            other => {
                let rest = other
                    .strip_prefix("declaration/")
                    .ok_or_else(|| invalid("unknown endpoint"))?;
                let (kind, identifier) = rest
                    .split_once('/')
                    .ok_or_else(|| invalid("declaration endpoint without identifier"))?;
                let kind = DeclarationKind::parse(kind)
                    .ok_or_else(|| invalid("unknown declaration kind"))?;
                if identifier.is_empty() || identifier.len() > MAX_IDENTIFIER_BYTES {
                    return Err(invalid("declaration identifier empty or too long"));
                }
                Endpoint::Declaration {
                    kind,
                    identifier: identifier.to_owned(),
                }
            }
        })
    }

    /// The `Endpoint` string a device sends.
    pub fn as_path(&self) -> String {
        match self {
            Endpoint::Tokens => "tokens".to_owned(),
            Endpoint::DeclarationItems => "declaration-items".to_owned(),
            Endpoint::Status => "status".to_owned(),
            Endpoint::Declaration { kind, identifier } => {
                format!("declaration/{}/{identifier}", kind.as_str())
            }
        }
    }
}

/// `SynchronizationTokens`: the answer of `tokens` and the `Data` of the `DeclarativeManagement` command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SyncTokens {
    pub declarations_token: String,
    /// ISO 8601 (UTC, `Z`): when the declaration set last changed.
    pub timestamp: String,
}

impl SyncTokens {
    /// The `Data` of a `DeclarativeManagement` command: the device compares it with what it has and syncs.
    pub fn to_command_data(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_command_data(data: &[u8]) -> Result<Self, ProtocolError> {
        serde_json::from_slice(data).map_err(|e| ProtocolError::Malformed(e.to_string()))
    }
}

/// The `tokens` endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TokensResponse {
    pub sync_tokens: SyncTokens,
}

/// One declaration in the manifest: the device fetches it when it lacks this ServerToken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeclarationItem {
    pub identifier: String,
    pub server_token: String,
}

/// The four lists of the manifest (all required, possibly empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ManifestDeclarations {
    pub activations: Vec<DeclarationItem>,
    pub configurations: Vec<DeclarationItem>,
    pub assets: Vec<DeclarationItem>,
    pub management: Vec<DeclarationItem>,
}

impl ManifestDeclarations {
    pub fn of_kind_mut(&mut self, kind: DeclarationKind) -> &mut Vec<DeclarationItem> {
        match kind {
            DeclarationKind::Activation => &mut self.activations,
            DeclarationKind::Configuration => &mut self.configurations,
            DeclarationKind::Asset => &mut self.assets,
            DeclarationKind::Management => &mut self.management,
        }
    }

    /// Every item with its kind.
    pub fn all(&self) -> impl Iterator<Item = (DeclarationKind, &DeclarationItem)> {
        let tag = |kind: DeclarationKind| move |item| (kind, item);
        self.activations
            .iter()
            .map(tag(DeclarationKind::Activation))
            .chain(
                self.configurations
                    .iter()
                    .map(tag(DeclarationKind::Configuration)),
            )
            .chain(self.assets.iter().map(tag(DeclarationKind::Asset)))
            .chain(self.management.iter().map(tag(DeclarationKind::Management)))
    }
}

/// The `declaration-items` endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeclarationItemsResponse {
    pub declarations: ManifestDeclarations,
    pub declarations_token: String,
}

/// One declaration (`declarationbase.yaml`): the answer of `declaration/<kind>/<identifier>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Declaration {
    #[serde(rename = "Type")]
    pub declaration_type: String,
    pub identifier: String,
    pub server_token: String,
    pub payload: Map<String, Value>,
}

impl Declaration {
    pub fn kind(&self) -> Option<DeclarationKind> {
        DeclarationKind::of_type(&self.declaration_type)
    }
}

/// A reason in a status error or a declaration's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StatusReason {
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Map<String, Value>>,
}

/// A status item the device could not report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StatusError {
    pub status_item: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<StatusReason>>,
}

/// The status report a device uploads to the `status` endpoint (`statusreport.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StatusReport {
    /// Nested by the dotted item name: `device.operating-system.version` is
    /// `{"device": {"operating-system": {"version": "…"}}}`.
    pub status_items: Map<String, Value>,
    #[serde(default)]
    pub errors: Vec<StatusError>,
    /// iOS 17: the complete current status (the daily safety sync): replaces what the server kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_report: Option<bool>,
}

/// Status items whose value is a dictionary as a whole: an incremental report replaces them, never merges
/// into them (stale keys of an old pending version must not survive).
pub const DICTIONARY_ITEMS: &[&str] = &[
    "softwareupdate.pending-version",
    "softwareupdate.failure-reason",
    "management.client-capabilities",
    "mdm.app",
];

impl StatusReport {
    /// Decodes the `Data` of a `status` check-in; bounded in size (serde_json bounds nesting itself).
    pub fn parse(data: &[u8]) -> Result<Self, ProtocolError> {
        if data.len() > MAX_STATUS_REPORT_BYTES {
            return Err(ProtocolError::TooLarge);
        }
        serde_json::from_slice(data)
            .map_err(|e| ProtocolError::Malformed(format!("status report: {e}")))
    }

    pub fn is_full(&self) -> bool {
        self.full_report == Some(true)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A report holding the given items (dotted names), as a device builds one.
    pub fn from_items<'a>(
        items: impl IntoIterator<Item = (&'a str, Value)>,
        full_report: bool,
    ) -> Self {
        let mut status_items = Map::new();
        for (name, value) in items {
            insert_item(&mut status_items, name, value);
        }
        StatusReport {
            status_items,
            errors: Vec::new(),
            full_report: Some(full_report),
        }
    }
}

/// Puts `value` at the dotted `name` in a nested status tree.
pub fn insert_item(tree: &mut Map<String, Value>, name: &str, value: Value) {
    let mut node = tree;
    let mut parts = name.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            node.insert(part.to_owned(), value);
            return;
        }
        let child = node
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !child.is_object() {
            *child = Value::Object(Map::new());
        }
        let Value::Object(next) = child else { return };
        node = next;
    }
}

/// The value at the dotted `name` in a nested status tree.
pub fn item<'a>(tree: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let mut parts = name.split('.');
    let mut value = tree.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// Merges an incremental report's items into the stored tree: dictionaries merge key by key down to the
/// items, [`DICTIONARY_ITEMS`] are replaced whole, arrays of objects with an `identifier` (declarations,
/// apps, certificates) merge element by element with `"_removed": true` deleting one, any other value
/// replaces the stored one.
pub fn merge_status(stored: &mut Map<String, Value>, incoming: Map<String, Value>) {
    merge_at(stored, incoming, "");
}

fn merge_at(stored: &mut Map<String, Value>, incoming: Map<String, Value>, prefix: &str) {
    for (key, value) in incoming {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let whole = DICTIONARY_ITEMS.contains(&path.as_str());
        match (stored.get_mut(&key), value) {
            (Some(Value::Object(old)), Value::Object(new)) if !whole => merge_at(old, new, &path),
            (Some(Value::Array(old)), Value::Array(new)) if is_keyed(old) && is_keyed(&new) => {
                merge_keyed_array(old, new);
            }
            (_, value) => {
                stored.insert(key, value);
            }
        }
    }
}

fn is_keyed(items: &[Value]) -> bool {
    items.iter().all(|v| v.get("identifier").is_some())
}

fn merge_keyed_array(stored: &mut Vec<Value>, incoming: Vec<Value>) {
    for element in incoming {
        let id = element.get("identifier").cloned();
        let removed = element.get("_removed") == Some(&Value::Bool(true));
        let at = stored
            .iter()
            .position(|s| s.get("identifier") == id.as_ref());
        match (at, removed) {
            (Some(i), true) => {
                stored.remove(i);
            }
            (Some(i), false) => {
                if let Some(slot) = stored.get_mut(i) {
                    *slot = element;
                }
            }
            (None, false) => stored.push(element),
            (None, true) => {}
        }
    }
}

/// One declaration's status as the device reports it in `management.declarations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeclarationStatus {
    pub identifier: String,
    #[serde(rename = "server-token", default)]
    pub server_token: String,
    #[serde(default)]
    pub active: bool,
    /// `unknown`, `invalid` or `valid`.
    #[serde(default)]
    pub valid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<DeclarationStatusReason>,
}

/// A reason in a declaration's status (`statusreason.yaml`: lower-case keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeclarationStatusReason {
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Map<String, Value>>,
}

/// The per-declaration statuses in a status tree (`management.declarations`), by kind.
pub fn declaration_statuses(
    tree: &Map<String, Value>,
) -> BTreeMap<DeclarationKind, Vec<DeclarationStatus>> {
    let mut out = BTreeMap::new();
    let Some(Value::Object(declarations)) = item(tree, "management.declarations") else {
        return out;
    };
    for (key, kind) in [
        ("activations", DeclarationKind::Activation),
        ("configurations", DeclarationKind::Configuration),
        ("assets", DeclarationKind::Asset),
        ("management", DeclarationKind::Management),
    ] {
        let statuses: Vec<DeclarationStatus> = declarations
            .get(key)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|v| serde_json::from_value(v.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        out.insert(kind, statuses);
    }
    out
}

/// The status items Orchard subscribes every device to (OS currency needs the software update ones).
pub const SUBSCRIBED_STATUS_ITEMS: &[&str] = &[
    "device.identifier.serial-number",
    "device.identifier.udid",
    "device.model.family",
    "device.model.identifier",
    "device.model.marketing-name",
    "device.operating-system.build-version",
    "device.operating-system.family",
    "device.operating-system.marketing-name",
    "device.operating-system.version",
    "management.declarations",
    "softwareupdate.failure-reason",
    "softwareupdate.install-reason",
    "softwareupdate.install-state",
    "softwareupdate.pending-version",
];

impl Declaration {
    /// A declaration whose ServerToken is the SHA-256 of its whole content (type, identifier and payload), so
    /// it changes exactly when any part of the declaration does.
    pub fn new(declaration_type: &str, identifier: &str, payload: Map<String, Value>) -> Self {
        let mut d = Declaration {
            declaration_type: declaration_type.to_owned(),
            identifier: identifier.to_owned(),
            server_token: String::new(),
            payload,
        };
        d.server_token = content_hash(&d);
        d
    }

    /// The JSON the `declaration/…` endpoint answers.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn content_hash(d: &Declaration) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(d.declaration_type.as_bytes());
    hasher.update([0]);
    hasher.update(d.identifier.as_bytes());
    hasher.update([0]);
    hasher.update(serde_json::to_vec(&d.payload).unwrap_or_default());
    hex::encode(hasher.finalize())
}

/// The DeclarationsToken of a set: the SHA-256 over every (kind, identifier, ServerToken) in a fixed order,
/// so it changes exactly when a declaration is added, removed or changed.
pub fn declarations_token(manifest: &ManifestDeclarations) -> String {
    use sha2::{Digest, Sha256};
    let mut items: Vec<(DeclarationKind, &DeclarationItem)> = manifest.all().collect();
    items.sort_by(|a, b| (a.0, &a.1.identifier).cmp(&(b.0, &b.1.identifier)));
    let mut hasher = Sha256::new();
    for (kind, item) in items {
        hasher.update(kind.as_str().as_bytes());
        hasher.update([0]);
        hasher.update(item.identifier.as_bytes());
        hasher.update([0]);
        hasher.update(item.server_token.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// Builders of the declaration types Orchard generates, each with the keys of Apple's YAML.
pub mod build {
    use serde_json::{json, Map, Value};

    use super::Declaration;

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    pub const SERVER_CAPABILITIES: &str = "com.apple.management.server-capabilities";
    pub const PROPERTIES: &str = "com.apple.management.properties";
    pub const STATUS_SUBSCRIPTIONS: &str =
        "com.apple.configuration.management.status-subscriptions";
    pub const ACTIVATION_SIMPLE: &str = "com.apple.activation.simple";
    pub const ENFORCEMENT_SPECIFIC: &str =
        "com.apple.configuration.softwareupdate.enforcement.specific";
    pub const SOFTWAREUPDATE_SETTINGS: &str = "com.apple.configuration.softwareupdate.settings";
    pub const LEGACY_PROFILE: &str = "com.apple.configuration.legacy";

    /// `management.server-capabilities`: the protocol version the server speaks.
    pub fn server_capabilities(identifier: &str) -> Declaration {
        Declaration::new(
            SERVER_CAPABILITIES,
            identifier,
            object(json!({"Version": "1.0", "SupportedFeatures": {}})),
        )
    }

    /// `management.properties`: key/values predicates can use.
    pub fn properties(identifier: &str, properties: Map<String, Value>) -> Declaration {
        Declaration::new(PROPERTIES, identifier, properties)
    }

    /// `management.status-subscriptions`.
    pub fn status_subscriptions(identifier: &str, items: &[&str]) -> Declaration {
        let items: Vec<Value> = items.iter().map(|name| json!({"Name": name})).collect();
        Declaration::new(
            STATUS_SUBSCRIPTIONS,
            identifier,
            object(json!({"StatusItems": items})),
        )
    }

    /// `activation.simple` activating `configurations`.
    pub fn activation_simple(identifier: &str, configurations: &[String]) -> Declaration {
        Declaration::new(
            ACTIVATION_SIMPLE,
            identifier,
            object(json!({"StandardConfigurations": configurations})),
        )
    }

    /// `softwareupdate.enforcement.specific`: install `os_version` (optionally exactly `build`) by
    /// `local_date_time` (`yyyy-mm-ddThh:mm:ss`, the device's local time).
    pub fn enforcement_specific(
        identifier: &str,
        os_version: &str,
        build: Option<&str>,
        local_date_time: &str,
        details_url: Option<&str>,
    ) -> Declaration {
        let mut payload = Map::new();
        payload.insert("TargetOSVersion".into(), json!(os_version));
        if let Some(build) = build {
            payload.insert("TargetBuildVersion".into(), json!(build));
        }
        payload.insert("TargetLocalDateTime".into(), json!(local_date_time));
        if let Some(url) = details_url {
            payload.insert("DetailsURL".into(), json!(url));
        }
        Declaration::new(ENFORCEMENT_SPECIFIC, identifier, payload)
    }

    /// `configuration.legacy`: the device downloads the profile at `profile_url` (https, hosted by the MDM
    /// server) and installs it; removing the declaration removes the profile. The URL names the profile's
    /// version, so a new version is a new ServerToken and the device fetches it again.
    pub fn legacy_profile(identifier: &str, profile_url: &str) -> Declaration {
        Declaration::new(
            LEGACY_PROFILE,
            identifier,
            object(json!({"ProfileURL": profile_url})),
        )
    }

    /// `softwareupdate.settings` (iOS 18): notify the user and download enforced updates ahead of the
    /// deadline, so the install at the deadline is quick.
    pub fn softwareupdate_settings(identifier: &str) -> Declaration {
        Declaration::new(
            SOFTWAREUPDATE_SETTINGS,
            identifier,
            object(json!({"Notifications": true, "AutomaticActions": {"Download": "AlwaysOn"}})),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn endpoints_round_trip_and_bad_ones_are_named() {
        for path in [
            "tokens",
            "declaration-items",
            "status",
            "declaration/configuration/orchard.os-update",
        ] {
            assert_eq!(Endpoint::parse(path).unwrap().as_path(), path);
        }
        for bad in [
            "",
            "declarations",
            "declaration/configuration",
            "declaration/widget/x",
            "declaration/activation/",
        ] {
            let err = Endpoint::parse(bad).unwrap_err();
            assert!(err.to_string().contains("Endpoint"), "{bad}: {err}");
        }
        let long = format!("declaration/asset/{}", "x".repeat(65));
        assert!(Endpoint::parse(&long).is_err());
    }

    #[test]
    fn kind_of_a_type() {
        assert_eq!(
            DeclarationKind::of_type("com.apple.configuration.softwareupdate.enforcement.specific"),
            Some(DeclarationKind::Configuration)
        );
        assert_eq!(
            DeclarationKind::of_type("com.apple.management.properties"),
            Some(DeclarationKind::Management)
        );
        assert_eq!(DeclarationKind::of_type("org.example.thing"), None);
    }

    #[test]
    fn items_nest_by_dots_and_read_back() {
        let report = StatusReport::from_items(
            [
                ("device.operating-system.version", json!("17.5")),
                ("softwareupdate.install-state", json!("downloading")),
            ],
            true,
        );
        assert_eq!(
            Value::Object(report.status_items.clone()),
            json!({"device": {"operating-system": {"version": "17.5"}},
                   "softwareupdate": {"install-state": "downloading"}})
        );
        assert_eq!(
            item(&report.status_items, "softwareupdate.install-state"),
            Some(&json!("downloading"))
        );
        let parsed = StatusReport::parse(&report.to_json()).unwrap();
        assert!(parsed.is_full());
    }

    #[test]
    fn incremental_reports_merge() {
        let mut stored = StatusReport::from_items(
            [
                ("device.operating-system.version", json!("17.5")),
                ("device.model.identifier", json!("iPad13,18")),
                (
                    "softwareupdate.pending-version",
                    json!({"os-version": "18.1", "build-version": "22B83"}),
                ),
                (
                    "management.declarations.configurations",
                    json!([{"identifier": "a", "active": true}, {"identifier": "b", "active": true}]),
                ),
            ],
            true,
        )
        .status_items;
        let incoming = StatusReport::from_items(
            [
                ("device.operating-system.version", json!("18.1")),
                ("softwareupdate.pending-version", json!({"os-version": "18.2"})),
                (
                    "management.declarations.configurations",
                    json!([{"identifier": "a", "active": false}, {"identifier": "b", "_removed": true},
                           {"identifier": "c", "active": true}]),
                ),
            ],
            false,
        )
        .status_items;
        merge_status(&mut stored, incoming);
        assert_eq!(
            item(&stored, "device.operating-system.version"),
            Some(&json!("18.1"))
        );
        assert_eq!(
            item(&stored, "device.model.identifier"),
            Some(&json!("iPad13,18"))
        );
        assert_eq!(
            item(&stored, "softwareupdate.pending-version"),
            Some(&json!({"os-version": "18.2"}))
        );
        assert_eq!(
            item(&stored, "management.declarations.configurations"),
            Some(
                &json!([{"identifier": "a", "active": false}, {"identifier": "c", "active": true}])
            )
        );
    }

    #[test]
    fn hostile_reports_are_errors() {
        assert!(StatusReport::parse(b"not json").is_err());
        assert!(StatusReport::parse(br#"{"Errors": []}"#).is_err());
        let deep = format!(
            "{{\"StatusItems\": {}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(StatusReport::parse(deep.as_bytes()).is_err());
        let big = vec![b' '; MAX_STATUS_REPORT_BYTES + 1];
        assert_eq!(StatusReport::parse(&big), Err(ProtocolError::TooLarge));
    }

    #[test]
    fn command_data_is_sync_tokens() {
        let tokens = SyncTokens {
            declarations_token: "abc".into(),
            timestamp: "2026-12-04T00:00:00Z".into(),
        };
        let data = tokens.to_command_data();
        assert_eq!(
            serde_json::from_slice::<Value>(&data).unwrap(),
            json!({"DeclarationsToken": "abc", "Timestamp": "2026-12-04T00:00:00Z"})
        );
        assert_eq!(SyncTokens::from_command_data(&data).unwrap(), tokens);
    }
}
