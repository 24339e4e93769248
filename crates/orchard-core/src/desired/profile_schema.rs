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
            if spec.required
                && spec.key != "ANY"
                && !spec.not_on_ios
                && !dict.contains_key(&spec.key)
            {
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
                let element =
                    spec.subkeys
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
                spec.min
                    .as_ref()
                    .and_then(json_number)
                    .is_none_or(|m| n >= m)
                    && spec
                        .max
                        .as_ref()
                        .and_then(json_number)
                        .is_none_or(|m| n <= m)
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
                checker.error(
                    "profile.PayloadContent",
                    "a profile needs at least one payload",
                );
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// A valid value for a key, built from its spec alone.
    fn example(spec: &KeySpec) -> Value {
        if let Some(first) = spec.rangelist.first() {
            return match first {
                serde_json::Value::String(s) => Value::String(s.clone()),
                serde_json::Value::Bool(b) => Value::Boolean(*b),
                serde_json::Value::Number(n) if spec.ty == "real" => {
                    Value::Real(n.as_f64().unwrap())
                }
                serde_json::Value::Number(n) => Value::Integer(n.as_i64().unwrap().into()),
                other => panic!("rangelist value {other}"),
            };
        }
        match spec.ty.as_str() {
            "integer" => Value::Integer(
                spec.min
                    .as_ref()
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(1)
                    .into(),
            ),
            "real" => Value::Real(spec.min.as_ref().and_then(json_number).unwrap_or(1.0)),
            "boolean" => Value::Boolean(true),
            "date" => Value::Date(std::time::SystemTime::UNIX_EPOCH.into()),
            "data" => Value::Data(vec![1, 2, 3]),
            "array" => Value::Array(Vec::new()),
            "dictionary" => Value::Dictionary(required_keys(
                spec.subkeys
                    .as_deref()
                    .unwrap_or(&[])
                    .iter()
                    .collect::<Vec<_>>()
                    .as_slice(),
            )),
            _ => Value::String("example".into()),
        }
    }

    fn required_keys(specs: &[&KeySpec]) -> plist::Dictionary {
        let mut dict = plist::Dictionary::new();
        for spec in specs {
            if spec.required && !spec.not_on_ios && spec.key != "ANY" {
                dict.insert(spec.key.clone(), example(spec));
            }
        }
        dict
    }

    fn valid_payload(schema: &Schema, payload_type: &str, i: usize) -> plist::Dictionary {
        let spec = schema.payload(payload_type).unwrap();
        let mut dict = required_keys(&schema.payload_keys(spec));
        dict.insert("PayloadType".into(), Value::String(payload_type.into()));
        dict.insert("PayloadVersion".into(), Value::Integer(1.into()));
        dict.insert(
            "PayloadIdentifier".into(),
            Value::String(format!("edu.example.p{i}")),
        );
        dict.insert("PayloadUUID".into(), Value::String(format!("UUID-{i}")));
        dict
    }

    fn profile_of(payloads: Vec<plist::Dictionary>) -> plist::Dictionary {
        let mut profile = plist::Dictionary::new();
        profile.insert("PayloadType".into(), Value::String("Configuration".into()));
        profile.insert("PayloadVersion".into(), Value::Integer(1.into()));
        profile.insert(
            "PayloadIdentifier".into(),
            Value::String("edu.example".into()),
        );
        profile.insert("PayloadUUID".into(), Value::String("TOP".into()));
        profile.insert(
            "PayloadContent".into(),
            Value::Array(payloads.into_iter().map(Value::Dictionary).collect()),
        );
        profile
    }

    fn ios_types(schema: &Schema) -> Vec<String> {
        let mut types: Vec<String> = schema
            .payloads
            .iter()
            .filter(|(_, p)| p.ios)
            .map(|(t, _)| t.clone())
            .collect();
        types.sort();
        types
    }

    fn errors_of(payload: plist::Dictionary) -> Vec<ValidationError> {
        validate(&profile_of(vec![payload]), ProfileTarget::default()).unwrap()
    }

    #[test]
    fn a_valid_example_of_every_ios_payload_type_passes() {
        let schema = schema().unwrap();
        let types = ios_types(schema);
        assert!(types.len() > 40, "only {} iOS payload types", types.len());
        for (i, t) in types.iter().enumerate() {
            let errors = errors_of(valid_payload(schema, t, i));
            assert!(errors.is_empty(), "{t}: {errors:?}");
        }
        // All of them in one profile too.
        let all = types
            .iter()
            .enumerate()
            .map(|(i, t)| valid_payload(schema, t, i))
            .collect();
        assert_eq!(
            validate(&profile_of(all), ProfileTarget::default()).unwrap(),
            vec![]
        );
    }

    #[test]
    fn every_key_of_every_payload_with_a_wrong_type_is_named() {
        let schema = schema().unwrap();
        let mut checked = 0;
        for (i, t) in ios_types(schema).iter().enumerate() {
            let spec = schema.payload(t).unwrap();
            for key in schema.payload_keys(spec) {
                if key.not_on_ios || key.ty == "any" || key.key == "ANY" || key.key == "PayloadType"
                {
                    continue;
                }
                let wrong = match key.ty.as_str() {
                    "string" | "url" | "hostname" => Value::Integer(7.into()),
                    _ => Value::String("wrong".into()),
                };
                let mut payload = valid_payload(schema, t, i);
                payload.insert(key.key.clone(), wrong);
                let errors = errors_of(payload);
                let path = format!("{t}[0].{}", key.key);
                assert!(
                    errors
                        .iter()
                        .any(|e| e.path == path && e.message.starts_with("expected ")),
                    "{path}: {errors:?}"
                );
                checked += 1;
            }
        }
        assert!(checked > 700, "only {checked} keys checked");
    }

    #[test]
    fn unknown_keys_missing_required_keys_and_values_outside_the_rangelist_are_named() {
        let schema = schema().unwrap();
        for (i, t) in ios_types(schema).iter().enumerate() {
            let mut payload = valid_payload(schema, t, i);
            payload.insert("OrchardNoSuchKey".into(), Value::Boolean(true));
            let errors = errors_of(payload);
            let open = schema
                .payload_keys(schema.payload(t).unwrap())
                .iter()
                .any(|k| k.key == "ANY");
            if !open {
                assert!(
                    errors.contains(&ValidationError {
                        path: format!("{t}[0].OrchardNoSuchKey"),
                        message: "unknown key".into()
                    }),
                    "{t}: {errors:?}"
                );
            }
            for key in schema.payload_keys(schema.payload(t).unwrap()) {
                if key.key == "PayloadType" {
                    continue;
                }
                if key.required && !key.not_on_ios && key.key != "ANY" {
                    let mut payload = valid_payload(schema, t, i);
                    payload.remove(&key.key);
                    let errors = errors_of(payload);
                    assert!(
                        errors
                            .iter()
                            .any(|e| e.path == format!("{t}[0].{}", key.key)
                                && e.message == "required key is missing"),
                        "{t}.{}: {errors:?}",
                        key.key
                    );
                }
                if key.ty == "string" && !key.rangelist.is_empty() && !key.not_on_ios {
                    let mut payload = valid_payload(schema, t, i);
                    payload.insert(key.key.clone(), Value::String("NOT-IN-LIST".into()));
                    let errors = errors_of(payload);
                    assert!(
                        errors
                            .iter()
                            .any(|e| e.path == format!("{t}[0].{}", key.key)
                                && e.message.starts_with("\"NOT-IN-LIST\" is not one of")),
                        "{t}.{}: {errors:?}",
                        key.key
                    );
                }
            }
        }
    }

    #[test]
    fn the_wifi_example_reads_as_people_expect() {
        let schema = schema().unwrap();
        let mut wifi = valid_payload(schema, "com.apple.wifi.managed", 0);
        wifi.insert("SSID_STR".into(), Value::String("eduroam".into()));
        wifi.insert("EncryptionType".into(), Value::String("WPA4".into()));
        let errors = errors_of(wifi);
        assert_eq!(
            errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["com.apple.wifi.managed[0].EncryptionType: \"WPA4\" is not one of WEP, WPA, WPA2, WPA3, Any, None"]
        );
    }

    #[test]
    fn nested_keys_ranges_unknown_types_and_platforms_are_checked() {
        let schema = schema().unwrap();
        // Nested: an EAP configuration with a wrong type deep inside.
        let mut wifi = valid_payload(schema, "com.apple.wifi.managed", 0);
        let mut eap = plist::Dictionary::new();
        eap.insert(
            "AcceptEAPTypes".into(),
            Value::Array(vec![Value::String("25".into())]),
        );
        wifi.insert("EAPClientConfiguration".into(), Value::Dictionary(eap));
        let errors = errors_of(wifi);
        assert!(
            errors
                .iter()
                .any(|e| e.path
                    == "com.apple.wifi.managed[0].EAPClientConfiguration.AcceptEAPTypes[0]"),
            "{errors:?}"
        );
        // Unknown payload type.
        let mut odd = plist::Dictionary::new();
        odd.insert(
            "PayloadType".into(),
            Value::String("com.example.nothing".into()),
        );
        let errors = errors_of(odd);
        assert_eq!(errors[0].path, "com.example.nothing[0]");
        assert!(errors[0].message.contains("unknown PayloadType"));
        // macOS only.
        let mac = schema
            .payloads
            .iter()
            .find(|(_, p)| !p.ios)
            .map(|(t, _)| t.clone())
            .unwrap();
        let mut payload = plist::Dictionary::new();
        payload.insert("PayloadType".into(), Value::String(mac.clone()));
        let errors = errors_of(payload);
        assert_eq!(
            errors[0].message, "payload type not supported on iOS/iPadOS",
            "{mac}"
        );
        // Shared iPad: a payload Apple forbids there.
        let forbidden = ios_types(schema)
            .into_iter()
            .find(|t| schema.payload(t).unwrap().shared_ipad.as_deref() == Some("forbidden"))
            .unwrap();
        let profile = profile_of(vec![valid_payload(schema, &forbidden, 0)]);
        assert!(validate(&profile, ProfileTarget::default())
            .unwrap()
            .is_empty());
        let errors = validate(
            &profile,
            ProfileTarget {
                shared_ipad: true,
                user_channel: false,
            },
        )
        .unwrap();
        assert_eq!(errors[0].message, "payload type not allowed on Shared iPad");
        // User channel: Wi-Fi is device-channel only on Shared iPad.
        let profile = profile_of(vec![valid_payload(schema, "com.apple.wifi.managed", 0)]);
        let errors = validate(
            &profile,
            ProfileTarget {
                shared_ipad: true,
                user_channel: true,
            },
        )
        .unwrap();
        assert_eq!(
            errors[0].message,
            "payload type not allowed on a Shared iPad's user channel"
        );
    }

    #[test]
    fn top_level_keys_are_checked() {
        let schema = schema().unwrap();
        let mut profile = profile_of(vec![valid_payload(schema, "com.apple.wifi.managed", 0)]);
        profile.insert("PayloadType".into(), Value::String("Configurations".into()));
        profile.insert("Surprise".into(), Value::Boolean(true));
        profile.remove("PayloadUUID");
        let errors: Vec<String> = validate(&profile, ProfileTarget::default())
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            errors.contains(
                &"profile.PayloadType: \"Configurations\" is not one of Configuration".to_string()
            ),
            "{errors:?}"
        );
        assert!(
            errors.contains(&"profile.Surprise: unknown key".to_string()),
            "{errors:?}"
        );
        assert!(
            errors.contains(&"profile.PayloadUUID: required key is missing".to_string()),
            "{errors:?}"
        );
    }
}
