//! Conformance of the plists we build with Apple's device-management schema (YAML in testdata/apple, a copy
//! of apple/device-management at iOS 18.1; format described by its docs/schema.yaml).
//!
//! For every Command variant (fully populated), every Settings item, the enrollment profile's payloads and
//! every check-in message, the checker walks the plist against `payloadkeys`/`subkeys` and reports: keys the
//! YAML does not define, `presence: required` keys that are missing, values whose plist type differs from
//! the YAML `type`, values outside a `rangelist`, and query names that are not defined queries. The result
//! types' Apple key names are checked against `responsekeys`. Negative tests prove the checker catches
//! misspelled keys, wrong types, missing required keys and out-of-range values.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use orchard_protocol::checkin::{
    Authenticate, CheckOut, CheckinMessage, DeclarativeManagementCheckin, GetBootstrapToken,
    GetToken, SetBootstrapToken, SharedIpadUser, TokenUpdate,
};
use orchard_protocol::commands::{
    all_command_samples, all_settings_samples, Command, SettingsItem,
};
use orchard_protocol::profile::sample_profile;
use orchard_protocol::results;
use orchard_types::{ApnsTopic, PushMagic, SerialNumber, Udid, SHARED_IPAD_USER_ID};
use plist::{Dictionary, Value};
use serde_yaml::Value as Yaml;

fn apple_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/apple")
}

/// One entry of `payloadkeys`/`subkeys`/`responsekeys`.
#[derive(Debug, Clone)]
struct KeySpec {
    key: String,
    ty: String,
    required: bool,
    rangelist: Vec<Yaml>,
    subkeys: Vec<KeySpec>,
    /// `supportedOS.iOS.introduced: n/a`: the key exists for other platforms only.
    not_on_ios: bool,
}

fn specs(list: Option<&Yaml>) -> Vec<KeySpec> {
    list.and_then(Yaml::as_sequence)
        .map(|items| {
            items
                .iter()
                .map(|item| KeySpec {
                    key: item["key"].as_str().unwrap_or_default().to_owned(),
                    ty: item["type"].as_str().unwrap_or_default().to_owned(),
                    required: item["presence"].as_str() == Some("required"),
                    rangelist: item["rangelist"].as_sequence().cloned().unwrap_or_default(),
                    subkeys: specs(item.get("subkeys")),
                    not_on_ios: item["supportedOS"]["iOS"]["introduced"].as_str() == Some("n/a"),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn load(path: &Path) -> Yaml {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every command YAML, by `payload.requesttype`.
fn command_yamls() -> BTreeMap<String, Yaml> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(apple_dir().join("mdm/commands")).unwrap() {
        let doc = load(&entry.unwrap().path());
        if let Some(rt) = doc["payload"]["requesttype"].as_str() {
            out.insert(rt.to_owned(), doc);
        }
    }
    out
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "<string>" => matches!(v, Value::String(_)),
        "<integer>" => matches!(v, Value::Integer(_)),
        "<real>" => matches!(v, Value::Real(_)),
        "<boolean>" => matches!(v, Value::Boolean(_)),
        "<data>" => matches!(v, Value::Data(_)),
        "<date>" => matches!(v, Value::Date(_)),
        "<array>" => matches!(v, Value::Array(_)),
        "<dictionary>" => matches!(v, Value::Dictionary(_)),
        "<any>" => true,
        _ => false,
    }
}

fn in_rangelist(range: &[Yaml], v: &Value) -> bool {
    range.iter().any(|allowed| match (allowed, v) {
        (Yaml::String(a), Value::String(s)) => a == s,
        (Yaml::Number(a), Value::Integer(i)) => a.as_i64().is_some() && a.as_i64() == i.as_signed(),
        (Yaml::Number(a), Value::Real(r)) => a.as_f64() == Some(*r),
        _ => false,
    })
}

/// Checks a dictionary against the key specs of its level; `ignore` names keys of our envelope.
fn check_dict(
    dict: &Dictionary,
    specs: &[KeySpec],
    path: &str,
    ignore: &[&str],
    check_required: bool,
    errors: &mut Vec<String>,
) {
    if let [wildcard] = specs {
        if wildcard.key.starts_with("ANY") {
            for (k, v) in dict {
                check_value(v, wildcard, &format!("{path}.{k}"), check_required, errors);
            }
            return;
        }
    }
    for (k, v) in dict {
        if ignore.contains(&k.as_str()) {
            continue;
        }
        match specs.iter().find(|s| &s.key == k) {
            Some(spec) => check_value(v, spec, &format!("{path}.{k}"), check_required, errors),
            None => errors.push(format!("{path}.{k}: key not defined by Apple's YAML")),
        }
    }
    if check_required {
        for spec in specs.iter().filter(|s| s.required) {
            if !dict.contains_key(&spec.key) {
                errors.push(format!("{path}.{}: required key missing", spec.key));
            }
        }
    }
}

fn check_value(
    v: &Value,
    spec: &KeySpec,
    path: &str,
    check_required: bool,
    errors: &mut Vec<String>,
) {
    if spec.not_on_ios {
        errors.push(format!("{path}: {NOT_ON_IOS}"));
    }
    if !type_matches(&spec.ty, v) {
        errors.push(format!("{path}: expected {}, got {v:?}", spec.ty));
        return;
    }
    if !spec.rangelist.is_empty() && !in_rangelist(&spec.rangelist, v) {
        errors.push(format!(
            "{path}: {v:?} not in rangelist {:?}",
            spec.rangelist
        ));
    }
    if spec.subkeys.is_empty() {
        return;
    }
    match v {
        Value::Dictionary(d) => check_dict(d, &spec.subkeys, path, &[], check_required, errors),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                if let [element] = spec.subkeys.as_slice() {
                    check_value(item, element, &item_path, check_required, errors);
                    continue;
                }
                // Heterogeneous arrays (Settings) hold dictionaries chosen by their `Item` value.
                let item_name = item
                    .as_dictionary()
                    .and_then(|d| d.get("Item"))
                    .and_then(Value::as_string);
                match item_name.and_then(|name| spec.subkeys.iter().find(|s| s.key == name)) {
                    Some(element) => check_value(item, element, &item_path, check_required, errors),
                    None => errors.push(format!(
                        "{item_path}: no element definition for Item {item_name:?}"
                    )),
                }
            }
        }
        // A string with subkeys enumerates its allowed values (DeviceInformation query names).
        Value::String(s) if !spec.subkeys.iter().any(|k| &k.key == s) => {
            errors.push(format!("{path}: {s:?} is not one of the defined values"));
        }
        _ => {}
    }
}

const NOT_ON_IOS: &str = "not available on iOS";

/// Keys Apple defines for macOS only that the contract deliberately exposes (a Mac ignores nothing, an iPad
/// ignores them); anything else macOS-only in our output is a bug.
const ALLOWED_NOT_ON_IOS: &[&str] = &[
    "RestartDevice.NotifyUser",
    "Settings.Settings[3].MDMOptions.BootstrapTokenAllowed",
    "Settings.Settings[3].MDMOptions.PromptUserToAllowBootstrapTokenForAuthentication",
];

fn check_command_dict(dict: &Dictionary, yamls: &BTreeMap<String, Yaml>) -> Vec<String> {
    let request_type = dict
        .get("RequestType")
        .and_then(Value::as_string)
        .unwrap_or_default();
    let Some(doc) = yamls.get(request_type) else {
        return vec![format!("no YAML with requesttype {request_type:?}")];
    };
    let mut errors = Vec::new();
    check_dict(
        dict,
        &specs(doc.get("payloadkeys")),
        request_type,
        &["RequestType"],
        true,
        &mut errors,
    );
    errors
}

fn check_command(command: &Command, yamls: &BTreeMap<String, Yaml>) -> Vec<String> {
    check_command_dict(&command.to_command_dict(), yamls)
}

#[test]
fn every_command_variant_matches_apple_yaml() {
    let yamls = command_yamls();
    let samples = all_command_samples();
    assert_eq!(samples.len(), 30);
    let mut errors = Vec::new();
    for command in &samples {
        errors.extend(check_command(command, &yamls));
    }
    errors.retain(|e| {
        !ALLOWED_NOT_ON_IOS
            .iter()
            .any(|allowed| e == &format!("{allowed}: {NOT_ON_IOS}"))
    });
    assert!(
        errors.is_empty(),
        "schema violations:\n{}",
        errors.join("\n")
    );
}

#[test]
fn every_settings_item_matches_apple_yaml() {
    let yamls = command_yamls();
    let settings_specs = specs(yamls["Settings"].get("payloadkeys"));
    let item_specs = &settings_specs
        .iter()
        .find(|s| s.key == "Settings")
        .unwrap()
        .subkeys;
    let mut errors = Vec::new();
    for item in all_settings_samples() {
        let spec = item_specs
            .iter()
            .find(|s| s.key == item.item_name())
            .unwrap_or_else(|| panic!("no YAML definition for settings item {}", item.item_name()));
        check_value(
            &Value::Dictionary(item.to_dictionary()),
            spec,
            item.item_name(),
            true,
            &mut errors,
        );
    }
    errors.retain(|e| {
        !e.starts_with("MDMOptions.MDMOptions.")
            || !e.ends_with(NOT_ON_IOS)
            || e.contains("ActivationLock")
    });
    assert!(
        errors.is_empty(),
        "schema violations:\n{}",
        errors.join("\n")
    );
}

#[test]
fn checker_catches_wrong_keys_types_ranges_and_missing_required_keys() {
    let yamls = command_yamls();
    let lock = Command::DeviceLock {
        message: Some("m".into()),
        phone_number: Some("p".into()),
    };
    assert!(check_command(&lock, &yamls).is_empty());

    let mut misspelled = lock.to_command_dict();
    misspelled.insert("Mesage".into(), Value::String("m".into()));
    let errors = check_command_dict(&misspelled, &yamls);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("Mesage") && e.contains("not defined")),
        "{errors:?}"
    );

    let mut wrong_type = lock.to_command_dict();
    wrong_type.insert("Message".into(), Value::Integer(1.into()));
    let errors = check_command_dict(&wrong_type, &yamls);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("Message") && e.contains("expected <string>")),
        "{errors:?}"
    );

    let clear = Command::ClearPasscode { unlock_token: None };
    let errors = check_command(&clear, &yamls);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("UnlockToken") && e.contains("required")),
        "{errors:?}"
    );

    let install = Command::InstallApplication {
        itunes_store_id: Some(1),
        identifier: None,
        manifest_url: None,
        management_flags: Some(2),
        purchase_method: None,
        configuration: None,
        attributes: None,
        change_management_state: None,
    };
    let errors = check_command(&install, &yamls);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("ManagementFlags") && e.contains("rangelist")),
        "{errors:?}"
    );

    let queries = Command::DeviceInformation {
        queries: vec!["SerialNumbr".into()],
    };
    let errors = check_command(&queries, &yamls);
    assert!(
        errors.iter().any(|e| e.contains("SerialNumbr")),
        "{errors:?}"
    );

    // A settings item with a misspelled inner key.
    let mut item = SettingsItem::DeviceName {
        device_name: "x".into(),
    }
    .to_dictionary();
    item.insert("DeviceNam".into(), Value::String("x".into()));
    let mut settings = Dictionary::new();
    settings.insert("RequestType".into(), Value::String("Settings".into()));
    settings.insert(
        "Settings".into(),
        Value::Array(vec![Value::Dictionary(item)]),
    );
    let errors = check_command_dict(&settings, &yamls);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("DeviceNam") && e.contains("not defined")),
        "{errors:?}"
    );
}

/// Payload-specific keys plus the keys common to every payload.
fn payload_specs(file: &str) -> Vec<KeySpec> {
    let dir = apple_dir().join("mdm/profiles");
    let mut all = specs(load(&dir.join("CommonPayloadKeys.yaml")).get("payloadkeys"));
    all.extend(specs(load(&dir.join(file)).get("payloadkeys")));
    all
}

#[test]
fn enrollment_profile_matches_apple_yaml() {
    let dir = apple_dir().join("mdm/profiles");
    let dict = sample_profile().to_dictionary();
    let mut errors = Vec::new();
    check_dict(
        &dict,
        &specs(load(&dir.join("TopLevel.yaml")).get("payloadkeys")),
        "Configuration",
        &[],
        true,
        &mut errors,
    );
    let payloads = dict
        .get("PayloadContent")
        .and_then(Value::as_array)
        .unwrap();
    let mut seen = Vec::new();
    for payload in payloads {
        let payload = payload.as_dictionary().unwrap();
        let payload_type = payload
            .get("PayloadType")
            .and_then(Value::as_string)
            .unwrap();
        seen.push(payload_type.to_owned());
        let file = format!("{payload_type}.yaml");
        check_dict(
            payload,
            &payload_specs(&file),
            payload_type,
            &[],
            true,
            &mut errors,
        );
    }
    assert_eq!(
        seen,
        [
            "com.apple.security.root",
            "com.apple.security.scep",
            "com.apple.mdm"
        ]
    );
    assert!(
        errors.is_empty(),
        "schema violations:\n{}",
        errors.join("\n")
    );

    // Negative: a misspelled MDM key is caught.
    let mut mdm = payloads[2].as_dictionary().unwrap().clone();
    mdm.insert("CheckinURL".into(), Value::String("https://x".into()));
    let mut errors = Vec::new();
    check_dict(
        &mdm,
        &payload_specs("com.apple.mdm.yaml"),
        "com.apple.mdm",
        &[],
        true,
        &mut errors,
    );
    assert!(
        errors.iter().any(|e| e.contains("CheckinURL")),
        "{errors:?}"
    );
}

#[test]
fn checkin_messages_use_apple_keys() {
    // The check-in YAMLs mark macOS/user-enrollment keys as required, so only definitions, types and iOS
    // availability are checked here, not presence. The messages are shaped as an iPad sends them.
    let dir = apple_dir().join("mdm/checkin");
    let mut by_type = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let doc = load(&entry.unwrap().path());
        let keys = specs(doc.get("payloadkeys"));
        let message_type = keys
            .iter()
            .find(|k| k.key == "MessageType")
            .and_then(|k| k.rangelist.first())
            .and_then(Yaml::as_str)
            .unwrap()
            .to_owned();
        by_type.insert(message_type, keys);
    }
    let topic = ApnsTopic::parse("com.apple.mgmt.External.x").unwrap();
    let udid = Udid::parse("U1").unwrap();
    let user = Some(SharedIpadUser {
        user_id: SHARED_IPAD_USER_ID.into(),
        user_short_name: "jane".into(),
        // UserLongName is macOS-only; a Shared iPad never sends it.
        user_long_name: None,
    });
    let messages = [
        CheckinMessage::Authenticate(Authenticate {
            topic: topic.clone(),
            udid: udid.clone(),
            serial_number: Some(SerialNumber::parse("S").unwrap()),
            os_version: Some("18.1".into()),
            build_version: Some("22B83".into()),
            product_name: Some("iPad13,18".into()),
            // Model, ModelName and DeviceName are macOS-only check-in keys (read when a Mac sends them).
            model: None,
            model_name: None,
            device_name: None,
            imei: Some("i".into()),
            meid: Some("m".into()),
        }),
        CheckinMessage::TokenUpdate(TokenUpdate {
            topic: topic.clone(),
            udid: udid.clone(),
            token: vec![1],
            push_magic: PushMagic::parse("PM").unwrap(),
            unlock_token: Some(vec![2]),
            awaiting_configuration: true,
            user: user.clone(),
        }),
        CheckinMessage::CheckOut(CheckOut {
            topic,
            udid: udid.clone(),
            user: None,
        }),
        CheckinMessage::DeclarativeManagement(DeclarativeManagementCheckin {
            udid: udid.clone(),
            endpoint: "status".into(),
            data: Some(b"{}".to_vec()),
            user: user.clone(),
        }),
        CheckinMessage::GetToken(GetToken {
            udid: udid.clone(),
            token_service_type: "com.apple.maid".into(),
            token_parameters: None,
            user,
        }),
        CheckinMessage::GetBootstrapToken(GetBootstrapToken {
            udid: udid.clone(),
            awaiting_configuration: false,
        }),
        CheckinMessage::SetBootstrapToken(SetBootstrapToken {
            udid,
            bootstrap_token: vec![3],
            awaiting_configuration: false,
        }),
    ];
    let mut errors = Vec::new();
    for message in &messages {
        let keys = &by_type[message.message_type()];
        // Bootstrap-token messages are macOS-only in the 18.1 YAML, which therefore omits the UDID an iPad
        // sends with them (iOS 26).
        let ignore: &[&str] = match message {
            CheckinMessage::GetBootstrapToken(_) | CheckinMessage::SetBootstrapToken(_) => {
                &["UDID"]
            }
            _ => &[],
        };
        check_dict(
            &message.to_dictionary(),
            keys,
            message.message_type(),
            ignore,
            false,
            &mut errors,
        );
    }
    assert!(
        errors.is_empty(),
        "schema violations:\n{}",
        errors.join("\n")
    );
}

/// Finds the specs at a path of keys inside `responsekeys` (array element levels are stepped through).
fn response_specs(doc: &Yaml, path: &[&str]) -> Vec<KeySpec> {
    let mut level = specs(doc.get("responsekeys"));
    for key in path {
        let spec = level
            .iter()
            .find(|s| s.key == *key)
            .unwrap_or_else(|| panic!("no response key {key}"))
            .clone();
        level = spec.subkeys;
        // Arrays describe their element in a single subkey; step into it.
        if spec.ty == "<array>" {
            level = level.first().map(|e| e.subkeys.clone()).unwrap_or_default();
        }
        if let [wildcard] = level.as_slice() {
            if wildcard.key.starts_with("ANY") && wildcard.ty == "<dictionary>" {
                level = wildcard.subkeys.clone();
            }
        }
    }
    level
}

#[test]
fn result_types_use_apple_response_keys() {
    let yamls = command_yamls();
    let cases: Vec<(&str, &[&str], &[&str])> = vec![
        (
            "DeviceInformation",
            &["QueryResponses"],
            results::DeviceInformation::APPLE_KEYS,
        ),
        (
            "DeviceInformation",
            &["QueryResponses", "OrganizationInfo"],
            results::OrganizationInfo::APPLE_KEYS,
        ),
        (
            "DeviceInformation",
            &["QueryResponses", "MDMOptions"],
            results::MdmOptions::APPLE_KEYS,
        ),
        (
            "SecurityInfo",
            &["SecurityInfo"],
            results::SecurityInfo::APPLE_KEYS,
        ),
        (
            "SecurityInfo",
            &["SecurityInfo", "ManagementStatus"],
            results::ManagementStatus::APPLE_KEYS,
        ),
        (
            "InstalledApplicationList",
            &["InstalledApplicationList"],
            results::InstalledApplication::APPLE_KEYS,
        ),
        (
            "ProfileList",
            &["ProfileList"],
            results::ProfileListItem::APPLE_KEYS,
        ),
        (
            "ProfileList",
            &["ProfileList", "PayloadContent"],
            results::ProfilePayloadItem::APPLE_KEYS,
        ),
        (
            "CertificateList",
            &["CertificateList"],
            results::CertificateListItem::APPLE_KEYS,
        ),
        ("DeviceLocation", &[], results::DeviceLocation::APPLE_KEYS),
        ("UserList", &["Users"], results::SharedUser::APPLE_KEYS),
        (
            "AvailableOSUpdates",
            &["AvailableOSUpdates"],
            results::AvailableOsUpdate::APPLE_KEYS,
        ),
        (
            "ScheduleOSUpdate",
            &["UpdateResults"],
            results::OsUpdateResult::APPLE_KEYS,
        ),
        (
            "OSUpdateStatus",
            &["OSUpdateStatus"],
            results::OsUpdateStatusItem::APPLE_KEYS,
        ),
        (
            "ManagedApplicationList",
            &["ManagedApplicationList"],
            results::ManagedApplicationStatus::APPLE_KEYS,
        ),
    ];
    let mut errors = Vec::new();
    for (request_type, path, keys) in cases {
        let defined = response_specs(&yamls[request_type], path);
        for key in keys {
            if !defined.iter().any(|s| s.key == *key) {
                errors.push(format!(
                    "{request_type} {path:?}: {key} is not a response key"
                ));
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
