//! Profiles as data: reading an uploaded .mobileconfig (XML or binary plist, or CMS-signed: unwrapped, its
//! signature checked and its signer kept), building one from JSON (typed by Apple's schema: a JSON string
//! becomes `<data>` or `<date>` where the key wants one), finding the secrets inside (Wi-Fi, VPN, EAP, mail
//! and proxy passwords, shared secrets, SCEP challenges, PKCS#12 identities), showing a profile with them
//! replaced by [`SEALED_MARKER`], and carrying a previous version's secrets into a new one where the new one
//! says [`SEALED_MARKER`].

use base64::Engine as _;
use plist::{Dictionary, Value};
use serde_json::{Map, Value as Json};

use super::profile_schema::{schema, type_name, KeySpec, ValidationError};
use crate::CoreError;

/// What every answer shows instead of a secret; sent back in a new version, it keeps the previous secret.
pub const SEALED_MARKER: &str = "<sealed>";

/// An uploaded profile, opened.
pub(crate) struct Opened {
    pub profile: Dictionary,
    /// The signer of a signed upload.
    pub signer: Option<orchard_pki::signature::ProfileSigner>,
}

fn looks_like_plist(bytes: &[u8]) -> bool {
    let trimmed = bytes
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(bytes)
        .trim_ascii_start();
    trimmed.starts_with(b"<?xml")
        || trimmed.starts_with(b"<plist")
        || trimmed.starts_with(b"<!DOCTYPE")
        || bytes.starts_with(b"bplist00")
}

fn parse_plist(bytes: &[u8]) -> Result<Dictionary, CoreError> {
    orchard_protocol::parse_dictionary(bytes)
        .map_err(|e| CoreError::Invalid(format!("the profile is not a usable plist: {e}")))
}

/// Opens an upload: a plist as it is, a CMS SignedData unwrapped after its signature verified.
pub(crate) fn open_upload(bytes: &[u8]) -> Result<Opened, CoreError> {
    if bytes.is_empty() {
        return Err(CoreError::Invalid("the profile is empty".into()));
    }
    if looks_like_plist(bytes) {
        return Ok(Opened {
            profile: parse_plist(bytes)?,
            signer: None,
        });
    }
    use orchard_pki::PkiError;
    let (content, signer) =
        orchard_pki::signature::open_signed_profile(bytes).map_err(|e| match e {
            PkiError::BadSignature(m) => {
                CoreError::Invalid(format!("the profile's signature does not verify: {m}"))
            }
            other => CoreError::Invalid(format!(
                "the upload is neither a plist nor a signed profile (CMS SignedData): {other}"
            )),
        })?;
    Ok(Opened {
        profile: parse_plist(&content)?,
        signer: Some(signer),
    })
}

/// Whether a value at `key` is a secret: passwords, passphrases, shared secrets, SCEP challenges, tokens for
/// registration, and (at a payload's top) the identity of a PKCS#12 payload. Only strings and data are.
fn is_secret(payload_type: Option<&str>, key: &str, value: &Value) -> bool {
    if !matches!(value, Value::String(_) | Value::Data(_)) {
        return false;
    }
    let lower = key.to_ascii_lowercase();
    lower.ends_with("password")
        || lower.ends_with("passphrase")
        || lower.ends_with("sharedsecret")
        || lower == "challenge"
        || lower == "registrationtoken"
        || lower == "pin"
        || (key == "PayloadContent" && payload_type == Some("com.apple.security.pkcs12"))
}

/// A plist value as JSON for people: data as base64, dates as RFC 3339, secrets as [`SEALED_MARKER`].
/// Returns how many secrets were hidden.
fn to_json(value: &Value, payload_type: Option<&str>, hidden: &mut i64) -> Json {
    match value {
        Value::Dictionary(dict) => {
            // At a payload's top (the dictionary carries its PayloadType) secrets are judged by that type.
            let own_type = dict
                .get("PayloadType")
                .and_then(Value::as_string)
                .filter(|_| payload_type.is_none());
            let mut out = Map::new();
            for (key, v) in dict {
                let shown = if is_secret(own_type, key, v) && v.as_string() != Some(SEALED_MARKER) {
                    *hidden += 1;
                    Json::String(SEALED_MARKER.into())
                } else {
                    to_json(v, own_type.or(payload_type).or(Some("")), hidden)
                };
                out.insert(key.clone(), shown);
            }
            Json::Object(out)
        }
        Value::Array(items) => Json::Array(
            items
                .iter()
                .map(|v| to_json(v, payload_type, hidden))
                .collect(),
        ),
        Value::Boolean(b) => Json::Bool(*b),
        Value::Data(d) => Json::String(base64::engine::general_purpose::STANDARD.encode(d)),
        Value::Date(d) => Json::String(d.to_xml_format()),
        Value::Real(r) => serde_json::Number::from_f64(*r).map_or(Json::Null, Json::Number),
        Value::Integer(i) => i
            .as_signed()
            .map(|i| Json::Number(i.into()))
            .or_else(|| i.as_unsigned().map(|u| Json::Number(u.into())))
            .unwrap_or(Json::Null),
        Value::String(s) => Json::String(s.clone()),
        _ => Json::Null,
    }
}

/// The profile as people see it (every secret replaced) and how many secrets it hides.
pub(crate) fn redacted(profile: &Dictionary) -> (Json, i64) {
    let mut hidden = 0;
    // The top-level dictionary is the profile, not a payload: its PayloadType ("Configuration") is no payload
    // type, so start below it.
    let mut out = Map::new();
    for (key, v) in profile {
        let shown = if is_secret(None, key, v) {
            hidden += 1;
            Json::String(SEALED_MARKER.into())
        } else {
            match (key.as_str(), v) {
                ("PayloadContent", Value::Array(items)) => Json::Array(
                    items
                        .iter()
                        .map(|item| to_json(item, None, &mut hidden))
                        .collect(),
                ),
                _ => to_json(v, Some(""), &mut hidden),
            }
        };
        out.insert(key.clone(), shown);
    }
    (Json::Object(out), hidden)
}

/// A profile described in JSON (the API's and the CLI's way to build one without a .mobileconfig).
#[derive(Debug, Clone, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProfileJson {
    /// The profile's name in Orchard (and its PayloadDisplayName).
    pub name: String,
    /// The profile's PayloadIdentifier (reverse DNS). Required for a new profile; a new version may leave it
    /// out, and if given it must be the profile's.
    #[serde(default)]
    pub identifier: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub organization: Option<String>,
    /// PayloadRemovalDisallowed (supervised devices).
    #[serde(default)]
    pub removal_disallowed: Option<bool>,
    /// Validate for Shared iPad (payloads Apple forbids there are errors).
    #[serde(default)]
    pub shared_ipad: bool,
    /// Validate for a Shared iPad's user channel.
    #[serde(default)]
    pub user_channel: bool,
    /// The payload dictionaries: `PayloadType` and the payload's keys. `PayloadVersion` (1),
    /// `PayloadUUID` and `PayloadIdentifier` are filled in when missing. Strings become `<data>` (base64) or
    /// `<date>` (RFC 3339) where Apple's schema wants those; `"<sealed>"` keeps the previous version's secret.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub payloads: Vec<Json>,
}

/// Converts a JSON value to plist, typed by `spec` where there is one.
fn from_json(
    path: &str,
    value: &Json,
    spec: Option<&KeySpec>,
    errors: &mut Vec<ValidationError>,
) -> Option<Value> {
    let ty = spec.map(|s| s.ty.as_str()).unwrap_or("any");
    let error = |errors: &mut Vec<ValidationError>, message: String| {
        errors.push(ValidationError {
            path: path.to_owned(),
            message,
        });
        None
    };
    match value {
        Json::Null => error(errors, "null is not a plist value".into()),
        Json::Bool(b) => Some(Value::Boolean(*b)),
        Json::Number(n) => {
            if ty == "real" {
                n.as_f64().map(Value::Real)
            } else if let Some(i) = n.as_i64() {
                Some(Value::Integer(i.into()))
            } else if let Some(u) = n.as_u64() {
                Some(Value::Integer(u.into()))
            } else {
                n.as_f64().map(Value::Real)
            }
        }
        Json::String(s) if s == SEALED_MARKER => Some(Value::String(s.clone())),
        Json::String(s) => match ty {
            "data" => match base64::engine::general_purpose::STANDARD.decode(s.trim()) {
                Ok(bytes) => Some(Value::Data(bytes)),
                Err(_) => error(errors, "expected data (base64)".into()),
            },
            "date" => match plist::Date::from_xml_format(s) {
                Ok(date) => Some(Value::Date(date)),
                Err(_) => error(
                    errors,
                    "expected a date (RFC 3339, e.g. 2027-01-31T00:00:00Z)".into(),
                ),
            },
            _ => Some(Value::String(s.clone())),
        },
        Json::Array(items) => {
            let element = spec.and_then(|s| s.subkeys.as_deref()).and_then(|s| {
                if s.len() == 1 {
                    s.first()
                } else {
                    None
                }
            });
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                if let Some(v) = from_json(&format!("{path}[{i}]"), item, element, errors) {
                    out.push(v);
                }
            }
            Some(Value::Array(out))
        }
        Json::Object(map) => {
            let subkeys = spec.and_then(|s| s.subkeys.as_deref()).unwrap_or(&[]);
            let mut out = Dictionary::new();
            for (key, v) in map {
                let sub = subkeys.iter().find(|s| s.key == *key);
                if let Some(v) = from_json(&format!("{path}.{key}"), v, sub, errors) {
                    out.insert(key.clone(), v);
                }
            }
            Some(Value::Dictionary(out))
        }
    }
}

/// Builds a profile plist from JSON. The top-level PayloadUUID is left for the version to set.
pub(crate) fn build_from_json(
    input: &ProfileJson,
    identifier: &str,
) -> Result<Dictionary, CoreError> {
    let schema = schema()?;
    let mut errors = Vec::new();
    let mut payloads = Vec::with_capacity(input.payloads.len());
    for (i, payload) in input.payloads.iter().enumerate() {
        let Json::Object(map) = payload else {
            errors.push(ValidationError {
                path: format!("payloads[{i}]"),
                message: "expected an object".into(),
            });
            continue;
        };
        let payload_type = map.get("PayloadType").and_then(Json::as_str);
        let path = format!("{}[{i}]", payload_type.unwrap_or("payloads"));
        let spec = payload_type.and_then(|t| schema.payload(t));
        let keys: Vec<&KeySpec> = spec.map(|s| schema.payload_keys(s)).unwrap_or_default();
        let mut dict = Dictionary::new();
        for (key, v) in map {
            let key_spec = keys.iter().find(|k| k.key == *key).copied();
            if let Some(v) = from_json(&format!("{path}.{key}"), v, key_spec, &mut errors) {
                dict.insert(key.clone(), v);
            }
        }
        if !dict.contains_key("PayloadVersion") {
            dict.insert("PayloadVersion".into(), Value::Integer(1.into()));
        }
        if !dict.contains_key("PayloadUUID") {
            dict.insert("PayloadUUID".into(), Value::String(new_payload_uuid()));
        }
        if !dict.contains_key("PayloadIdentifier") {
            let suffix = payload_type.unwrap_or("payload");
            dict.insert(
                "PayloadIdentifier".into(),
                Value::String(format!("{identifier}.{suffix}.{i}")),
            );
        }
        payloads.push(Value::Dictionary(dict));
    }
    if !errors.is_empty() {
        return Err(CoreError::Unprocessable(errors));
    }
    let mut profile = Dictionary::new();
    profile.insert("PayloadType".into(), Value::String("Configuration".into()));
    profile.insert("PayloadVersion".into(), Value::Integer(1.into()));
    profile.insert(
        "PayloadIdentifier".into(),
        Value::String(identifier.to_owned()),
    );
    profile.insert(
        "PayloadDisplayName".into(),
        Value::String(input.name.trim().to_owned()),
    );
    if let Some(d) = &input.description {
        profile.insert("PayloadDescription".into(), Value::String(d.clone()));
    }
    if let Some(o) = &input.organization {
        profile.insert("PayloadOrganization".into(), Value::String(o.clone()));
    }
    if let Some(r) = input.removal_disallowed {
        profile.insert("PayloadRemovalDisallowed".into(), Value::Boolean(r));
    }
    profile.insert("PayloadContent".into(), Value::Array(payloads));
    Ok(profile)
}

/// A fresh PayloadUUID in Apple's spelling (uppercase).
pub(crate) fn new_payload_uuid() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase()
}

/// The previous version's payload that corresponds to `payload`: same PayloadIdentifier, else same position.
fn previous_payload<'a>(
    previous: &'a Dictionary,
    payload: &Dictionary,
    index: usize,
) -> Option<&'a Dictionary> {
    let items = previous.get("PayloadContent")?.as_array()?;
    let identifier = payload.get("PayloadIdentifier").and_then(Value::as_string);
    items
        .iter()
        .filter_map(Value::as_dictionary)
        .find(|p| {
            identifier.is_some()
                && p.get("PayloadIdentifier").and_then(Value::as_string) == identifier
        })
        .or_else(|| items.get(index).and_then(Value::as_dictionary))
}

fn fill(
    value: &mut Value,
    previous: Option<&Value>,
    path: &str,
    errors: &mut Vec<ValidationError>,
) {
    match value {
        Value::String(s) if s == SEALED_MARKER => match previous {
            Some(p) if p.as_string() != Some(SEALED_MARKER) => *value = p.clone(),
            _ => errors.push(ValidationError {
                path: path.to_owned(),
                message: format!(
                    "{SEALED_MARKER:?} keeps the previous version's secret, and it has none here"
                ),
            }),
        },
        Value::Dictionary(dict) => {
            let previous = previous.and_then(Value::as_dictionary);
            for (key, v) in dict.iter_mut() {
                fill(
                    v,
                    previous.and_then(|p| p.get(key)),
                    &format!("{path}.{key}"),
                    errors,
                );
            }
        }
        Value::Array(items) => {
            let previous = previous.and_then(Value::as_array);
            for (i, v) in items.iter_mut().enumerate() {
                fill(
                    v,
                    previous.and_then(|p| p.get(i)),
                    &format!("{path}[{i}]"),
                    errors,
                );
            }
        }
        _ => {}
    }
}

/// Replaces every [`SEALED_MARKER`] of `profile` by the secret at the same place in `previous` (payloads
/// matched by PayloadIdentifier). A marker with nothing to keep is an error naming its key.
pub(crate) fn keep_sealed_secrets(
    profile: &mut Dictionary,
    previous: Option<&Dictionary>,
) -> Vec<ValidationError> {
    let mut errors = Vec::new();
    for (key, value) in profile.iter_mut() {
        if key == "PayloadContent" {
            if let Value::Array(items) = value {
                for (i, item) in items.iter_mut().enumerate() {
                    let Value::Dictionary(payload) = item else {
                        continue;
                    };
                    let name = payload
                        .get("PayloadType")
                        .and_then(Value::as_string)
                        .unwrap_or("PayloadContent")
                        .to_owned();
                    let before = previous
                        .and_then(|p| previous_payload(p, payload, i))
                        .cloned()
                        .map(Value::Dictionary);
                    let mut whole = Value::Dictionary(std::mem::take(payload));
                    fill(
                        &mut whole,
                        before.as_ref(),
                        &format!("{name}[{i}]"),
                        &mut errors,
                    );
                    if let Value::Dictionary(d) = whole {
                        *payload = d;
                    }
                }
            }
            continue;
        }
        fill(
            value,
            previous.and_then(|p| p.get(key)),
            &format!("profile.{key}"),
            &mut errors,
        );
    }
    errors
}

/// The profile's payload types, in order.
pub(crate) fn payload_types(profile: &Dictionary) -> Vec<String> {
    profile
        .get("PayloadContent")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|p| p.as_dictionary()?.get("PayloadType")?.as_string())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The profile as XML plist bytes.
pub(crate) fn to_xml(profile: &Dictionary) -> Result<Vec<u8>, CoreError> {
    let mut out = Vec::new();
    Value::Dictionary(profile.clone())
        .to_writer_xml(&mut out)
        .map_err(|e| CoreError::Internal(format!("writing a profile: {e}")))?;
    Ok(out)
}

/// A value's description for messages about the top level.
pub(crate) fn describe(value: &Value) -> &'static str {
    type_name(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn json_profile() -> ProfileJson {
        serde_json::from_value(serde_json::json!({
            "name": "Campus Wi-Fi",
            "identifier": "edu.example.wifi",
            "payloads": [
                {"PayloadType": "com.apple.wifi.managed", "SSID_STR": "eduroam", "EncryptionType": "WPA2",
                 "Password": "hunter2-wifi", "AutoJoin": true},
                {"PayloadType": "com.apple.security.pkcs12", "Password": "p12-pass",
                 "PayloadContent": "AQIDBA=="}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn json_is_typed_by_the_schema_and_secrets_are_redacted() {
        let profile = build_from_json(&json_profile(), "edu.example.wifi").unwrap();
        let payloads = profile["PayloadContent"].as_array().unwrap();
        let p12 = payloads[1].as_dictionary().unwrap();
        assert_eq!(p12["PayloadContent"], Value::Data(vec![1, 2, 3, 4]));
        let (shown, hidden) = redacted(&profile);
        assert_eq!(hidden, 3);
        let text = shown.to_string();
        for secret in ["hunter2-wifi", "p12-pass", "AQIDBA=="] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(shown["PayloadContent"][0]["Password"], SEALED_MARKER);
        assert_eq!(shown["PayloadContent"][0]["SSID_STR"], "eduroam");
        assert_eq!(shown["PayloadContent"][1]["PayloadContent"], SEALED_MARKER);
    }

    #[test]
    fn the_marker_keeps_the_previous_secret_and_fails_without_one() {
        let previous = build_from_json(&json_profile(), "edu.example.wifi").unwrap();
        let mut next_json = json_profile();
        next_json.payloads[0]["Password"] = serde_json::json!(SEALED_MARKER);
        next_json.payloads[1]["PayloadContent"] = serde_json::json!(SEALED_MARKER);
        // Same payload identifiers as before (filled in from the identifier and position).
        let mut next = build_from_json(&next_json, "edu.example.wifi").unwrap();
        assert!(keep_sealed_secrets(&mut next, Some(&previous)).is_empty());
        let payloads = next["PayloadContent"].as_array().unwrap();
        assert_eq!(
            payloads[0].as_dictionary().unwrap()["Password"],
            Value::String("hunter2-wifi".into())
        );
        assert_eq!(
            payloads[1].as_dictionary().unwrap()["PayloadContent"],
            Value::Data(vec![1, 2, 3, 4])
        );
        let mut orphan = build_from_json(&next_json, "edu.example.wifi").unwrap();
        let errors = keep_sealed_secrets(&mut orphan, None);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].path, "com.apple.wifi.managed[0].Password");
    }

    #[test]
    fn uploads_are_plists_or_signed_and_nothing_else() {
        let profile = build_from_json(&json_profile(), "edu.example.wifi").unwrap();
        let xml = to_xml(&profile).unwrap();
        assert!(open_upload(&xml).unwrap().signer.is_none());
        let mut binary = Vec::new();
        Value::Dictionary(profile)
            .to_writer_binary(&mut binary)
            .unwrap();
        assert!(open_upload(&binary).is_ok());
        assert!(matches!(
            open_upload(b"garbage"),
            Err(CoreError::Invalid(_))
        ));
        assert!(matches!(open_upload(b""), Err(CoreError::Invalid(_))));
    }
}
