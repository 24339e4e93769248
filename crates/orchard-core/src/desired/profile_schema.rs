//! Validation of configuration profiles against Apple's schema (the YAML in `apple/mdm/profiles`, made into a
//! compact JSON schema by `build.rs` and parsed once at first use).
//!
//! Every payload is checked: unknown PayloadType, payloads not on iOS/iPadOS or not allowed on Shared iPad (or
//! its user channel) when the profile is for Shared iPad, unknown keys, wrong plist types (nested subkeys
//! too), values outside `rangelist`/`range`, required keys missing; and the profile's own top-level keys.
//! Every problem is reported, each naming its payload and key path, e.g.
//! `com.apple.wifi.managed[0].EncryptionType: "WPA4" is not one of WEP, WPA, WPA2, WPA3, Any, None`.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use plist::Value;
use serde::Deserialize;

use crate::CoreError;

static SCHEMA_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/profile_schema.json"));

/// One key of a payload (or of a dictionary inside one) as Apple's YAML describes it.
#[derive(Debug, Deserialize)]
pub(crate) struct KeySpec {
    #[serde(rename = "k")]
    pub key: String,
    /// `string`, `integer`, `boolean`, `real`, `date`, `data`, `array`, `dictionary`, `any` (and `url`,
    /// `hostname`: strings).
    #[serde(rename = "t")]
    pub ty: String,
    #[serde(rename = "r", default)]
    pub required: bool,
    #[serde(rename = "l", default)]
    pub rangelist: Vec<serde_json::Value>,
    #[serde(default)]
    pub min: Option<serde_json::Value>,
    #[serde(default)]
    pub max: Option<serde_json::Value>,
    /// `supportedOS.iOS.introduced: n/a`.
    #[serde(rename = "na", default)]
    pub not_on_ios: bool,
    /// `supportedOS.iOS.sharedipad.mode: forbidden`.
    #[serde(rename = "nosh", default)]
    pub not_on_shared_ipad: bool,
    #[serde(rename = "s", default)]
    pub subkeys: Option<Vec<KeySpec>>,
}

/// A payload type.
#[derive(Debug, Deserialize)]
pub(crate) struct PayloadSpec {
    /// Supported on iOS/iPadOS at all.
    pub ios: bool,
    /// `allowed`, `forbidden`, `required` or `ignored` on Shared iPad.
    #[serde(default)]
    pub shared_ipad: Option<String>,
    /// Whether it may be installed on a Shared iPad's user channel.
    #[serde(default)]
    pub user_channel: Option<bool>,
    pub keys: Vec<KeySpec>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Schema {
    pub top_level: Vec<KeySpec>,
    pub common: Vec<KeySpec>,
    pub payloads: HashMap<String, PayloadSpec>,
}

/// The schema, parsed once.
pub(crate) fn schema() -> Result<&'static Schema, CoreError> {
    static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| serde_json::from_str(SCHEMA_JSON).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| CoreError::Internal(format!("profile schema: {e}")))
}

impl Schema {
    pub(crate) fn payload(&self, payload_type: &str) -> Option<&PayloadSpec> {
        self.payloads.get(payload_type)
    }

    /// A payload's keys: its own, then the common ones it does not redefine.
    pub(crate) fn payload_keys<'a>(&'a self, spec: &'a PayloadSpec) -> Vec<&'a KeySpec> {
        let own: HashSet<&str> = spec.keys.iter().map(|k| k.key.as_str()).collect();
        spec.keys
            .iter()
            .chain(self.common.iter().filter(|k| !own.contains(k.key.as_str())))
            .collect()
    }
}

/// Where a profile is meant to go, which decides what is allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProfileTarget {
    /// The profile is for Shared iPads: payloads and keys Apple forbids there are errors.
    pub shared_ipad: bool,
    /// For a Shared iPad's user channel (implies `shared_ipad`).
    pub user_channel: bool,
}

/// One problem: where (payload and key path) and what.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidationError {
    /// `com.apple.wifi.managed[0].EncryptionType`, or `profile.PayloadIdentifier` for top-level keys.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The plist type's name as Apple's YAML spells it.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "array",
        Value::Dictionary(_) => "dictionary",
        Value::Boolean(_) => "boolean",
        Value::Data(_) => "data",
        Value::Date(_) => "date",
        Value::Real(_) => "real",
        Value::Integer(_) => "integer",
        Value::String(_) => "string",
        Value::Uid(_) => "uid",
        _ => "unknown",
    }
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "string" | "url" | "hostname" => matches!(v, Value::String(_)),
        "integer" => matches!(v, Value::Integer(_)),
        // A whole number is a real too (plist writers emit `<integer>` for 5.0).
        "real" => matches!(v, Value::Real(_) | Value::Integer(_)),
        "boolean" => matches!(v, Value::Boolean(_)),
        "date" => matches!(v, Value::Date(_)),
        "data" => matches!(v, Value::Data(_)),
        "array" => matches!(v, Value::Array(_)),
        "dictionary" => matches!(v, Value::Dictionary(_)),
        _ => true,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => i.as_signed().map(|i| i as f64),
        Value::Real(r) => Some(*r),
        _ => None,
    }
}

fn json_number(v: &serde_json::Value) -> Option<f64> {
    v.as_f64()
}

fn equals(v: &Value, allowed: &serde_json::Value) -> bool {
    match (v, allowed) {
        (Value::String(s), serde_json::Value::String(a)) => s == a,
        (Value::Boolean(b), serde_json::Value::Bool(a)) => b == a,
        (Value::Integer(_) | Value::Real(_), serde_json::Value::Number(_)) => {
            number(v) == json_number(allowed)
        }
        _ => false,
    }
}

/// A value as an error message quotes it.
pub(crate) fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Integer(i) => i.to_string(),
        Value::Real(r) => r.to_string(),
        Value::Boolean(b) => b.to_string(),
        other => type_name(other).to_owned(),
    }
}

fn shown_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Collects the problems of one profile.
struct Checker<'a> {
    schema: &'a Schema,
    target: ProfileTarget,
    errors: Vec<ValidationError>,
}

impl Checker<'_> {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ValidationError {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// Checks a dictionary's keys against `specs`. A spec named `ANY` lets any other key through.
    fn dictionary(&mut self, path: &str, dict: &plist::Dictionary, specs: &[&KeySpec]) {
        let open = specs.iter().any(|s| s.key == "ANY");
        for (key, value) in dict {
            let key_path = format!("{path}.{key}");
            match specs.iter().find(|s| s.key == *key) {
                Some(spec) => self.value(&key_path, value, spec),
                None if open => {}
                None => self.error(&key_path, "unknown key"),
            }
        }
        for spec in specs {
            if spec.required && spec.key != "ANY" && !dict.contains_key(&spec.key) {
                self.error(&format!("{path}.{}", spec.key), "required key is missing");
            }
        }
    }

    fn value(&mut self, path: &str, value: &Value, spec: &KeySpec) {
        if spec.not_on_ios {
            self.error(path, "not supported on iOS/iPadOS");
            return;
        }
        if spec.not_on_shared_ipad && self.target.shared_ipad {
            self.error(path, "not allowed on Shared iPad");
        }
        if !type_matches(&spec.ty, value) {
            self.error(
                path,
                format!("expected {}, found {}", spec.ty, type_name(value)),
            );
            return;
        }
        match value {
            Value::Array(items) => {
                let element = spec
                    .subkeys
                    .as_deref()
                    .and_then(|s| if s.len() == 1 { s.first() } else { None });
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    match element {
                        Some(element) => self.value(&item_path, item, element),
                        // A rangelist on the array itself constrains its elements.
                        None => self.scalar(&item_path, item, spec),
                    }
                }
            }
            Value::Dictionary(dict) => {
                if let Some(subkeys) = spec.subkeys.as_deref().filter(|s| !s.is_empty()) {
                    let specs: Vec<&KeySpec> = subkeys.iter().collect();
                    self.dictionary(path, dict, &specs);
                }
            }
            scalar => self.scalar(path, scalar, spec),
        }
    }

    /// `rangelist` and `range`: a value in either is fine (Apple lists `0` next to a range `1…180`).
    fn scalar(&mut self, path: &str, value: &Value, spec: &KeySpec) {
        if spec.rangelist.is_empty() && spec.min.is_none() && spec.max.is_none() {
            return;
        }
        if spec.rangelist.iter().any(|allowed| equals(value, allowed)) {
            return;
        }
        let in_range = match number(value) {
            Some(n) if spec.min.is_some() || spec.max.is_some() => {
                spec.min.as_ref().and_then(json_number).is_none_or(|m| n >= m)
                    && spec.max.as_ref().and_then(json_number).is_none_or(|m| n <= m)
            }
            _ => false,
        };
        if in_range {
            return;
        }
        let mut allowed: Vec<String> = spec.rangelist.iter().map(shown_json).collect();
        if spec.min.is_some() || spec.max.is_some() {
            allowed.push(format!(
                "{}…{}",
                spec.min.as_ref().map(shown_json).unwrap_or_default(),
                spec.max.as_ref().map(shown_json).unwrap_or_default()
            ));
        }
        let message = if spec.rangelist.is_empty() {
            format!("{} is outside {}", shown(value), allowed.join(", "))
        } else {
            format!("{} is not one of {}", shown(value), allowed.join(", "))
        };
        self.error(path, message);
    }

    fn payload(&mut self, index: usize, payload: &Value) {
        let Some(dict) = payload.as_dictionary() else {
            self.error(
                &format!("PayloadContent[{index}]"),
                format!("expected dictionary, found {}", type_name(payload)),
            );
            return;
        };
        let Some(payload_type) = dict.get("PayloadType").and_then(Value::as_string) else {
            self.error(
                &format!("PayloadContent[{index}].PayloadType"),
                "required key is missing",
            );
            return;
        };
        let path = format!("{payload_type}[{index}]");
        let schema = self.schema;
        let Some(spec) = schema.payload(payload_type) else {
            self.error(&path, format!("unknown PayloadType {payload_type:?}"));
            return;
        };
        if !spec.ios {
            self.error(&path, "payload type not supported on iOS/iPadOS");
            return;
        }
        if self.target.shared_ipad && spec.shared_ipad.as_deref() == Some("forbidden") {
            self.error(&path, "payload type not allowed on Shared iPad");
        }
        if self.target.user_channel && spec.user_channel == Some(false) {
            self.error(
                &path,
                "payload type not allowed on a Shared iPad's user channel",
            );
        }
        let keys = schema.payload_keys(spec);
        self.dictionary(&path, dict, &keys);
    }
}

/// Validates a whole profile (the top-level dictionary and every payload); empty when it is fine.
pub(crate) fn validate(
    profile: &plist::Dictionary,
    target: ProfileTarget,
) -> Result<Vec<ValidationError>, CoreError> {
    let schema = schema()?;
    let mut checker = Checker {
        schema,
        target,
        errors: Vec::new(),
    };
    // PayloadContent is checked payload by payload below; the rest against TopLevel.
    let top: Vec<&KeySpec> = schema
        .top_level
        .iter()
        .filter(|k| k.key != "PayloadContent")
        .collect();
    let mut rest = profile.clone();
    let content = rest.remove("PayloadContent");
    checker.dictionary("profile", &rest, &top);
    match content {
        None => checker.error("profile.PayloadContent", "required key is missing"),
        Some(Value::Array(payloads)) => {
            if payloads.is_empty() {
                checker.error("profile.PayloadContent", "a profile needs at least one payload");
            }
            let mut uuids = HashSet::new();
            let mut identifiers = HashSet::new();
            for (i, payload) in payloads.iter().enumerate() {
                checker.payload(i, payload);
                let dict = payload.as_dictionary();
                let field = |key: &str| dict.and_then(|d| d.get(key)).and_then(Value::as_string);
                let name = field("PayloadType").unwrap_or("PayloadContent");
                if let Some(uuid) = field("PayloadUUID") {
                    if !uuids.insert(uuid.to_owned()) {
                        checker.error(
                            &format!("{name}[{i}].PayloadUUID"),
                            format!("{uuid:?} is used by another payload of the profile"),
                        );
                    }
                }
                if let Some(identifier) = field("PayloadIdentifier") {
                    if !identifiers.insert(identifier.to_owned()) {
                        checker.error(
                            &format!("{name}[{i}].PayloadIdentifier"),
                            format!("{identifier:?} is used by another payload of the profile"),
                        );
                    }
                }
            }
        }
        Some(other) => checker.error(
            "profile.PayloadContent",
            format!("expected array, found {}", type_name(&other)),
        ),
    }
    Ok(checker.errors)
}
