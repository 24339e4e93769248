//! Conformance of the declarative management JSON we build (and the status reports we read) with Apple's
//! YAML in testdata/apple/declarative (a copy of apple/device-management, see testdata/apple/README.md):
//! every key we send is defined, required keys are present, types and rangelists match. Negative tests
//! prove the checker catches unknown keys, missing required keys and wrong types.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use orchard_protocol::declarative::{
    build, declarations_token, Declaration, DeclarationItem, DeclarationItemsResponse,
    ManifestDeclarations, StatusReport, SyncTokens, TokensResponse, SUBSCRIBED_STATUS_ITEMS,
};
use serde_json::{json, Value};
use serde_yaml::Value as Yaml;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/apple/declarative")
}

fn load(rel: &str) -> Yaml {
    let path = dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap()
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "<string>" => v.is_string(),
        "<integer>" => v.is_i64() || v.is_u64(),
        "<real>" => v.is_number(),
        "<boolean>" => v.is_boolean(),
        "<array>" => v.is_array(),
        "<dictionary>" => v.is_object(),
        "<any>" => true,
        _ => true,
    }
}

/// Problems of `value` (an object) against a `payloadkeys`/`subkeys` list, with key paths.
fn check(specs: &Yaml, value: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(specs) = specs.as_sequence() else {
        return;
    };
    let Some(object) = value.as_object() else {
        problems.push(format!("{path}: not an object"));
        return;
    };
    let any_key = specs.iter().any(|s| s["key"].as_str() == Some("ANY"));
    for (key, v) in object {
        let Some(spec) = specs.iter().find(|s| s["key"].as_str() == Some(key)) else {
            if !any_key {
                problems.push(format!("{path}{key}: not defined by apple"));
            }
            continue;
        };
        let ty = spec["type"].as_str().unwrap_or("");
        if !type_ok(ty, v) {
            problems.push(format!("{path}{key}: expected {ty}, got {v}"));
        }
        if let Some(range) = spec["rangelist"].as_sequence() {
            let allowed: Vec<&str> = range.iter().filter_map(Yaml::as_str).collect();
            if let Some(s) = v.as_str() {
                if !allowed.contains(&s) {
                    problems.push(format!("{path}{key}: {s} not in {allowed:?}"));
                }
            }
        }
        let sub = &spec["subkeys"];
        match v {
            Value::Object(_) if !sub.is_null() => check(sub, v, &format!("{path}{key}."), problems),
            Value::Array(items) if !sub.is_null() => {
                let element = &sub[0];
                for (i, item) in items.iter().enumerate() {
                    let ety = element["type"].as_str().unwrap_or("");
                    if !type_ok(ety, item) {
                        problems.push(format!("{path}{key}[{i}]: expected {ety}"));
                    } else if item.is_object() {
                        check(
                            &element["subkeys"],
                            item,
                            &format!("{path}{key}[{i}]."),
                            problems,
                        );
                    }
                }
            }
            _ => {}
        }
    }
    for spec in specs {
        let key = spec["key"].as_str().unwrap_or("");
        if spec["presence"].as_str() == Some("required") && !object.contains_key(key) {
            problems.push(format!("{path}{key}: required, missing"));
        }
    }
}

fn problems(yaml: &Yaml, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check(&yaml["payloadkeys"], value, "", &mut out);
    out
}

/// Every declaration type Orchard generates, against its own YAML and the base.
fn declaration_problems(d: &Declaration) -> Vec<String> {
    let file = match d.declaration_type.as_str() {
        build::SERVER_CAPABILITIES => "declarations/management/server-capabilities.yaml",
        build::PROPERTIES => "declarations/management/properties.yaml",
        build::STATUS_SUBSCRIPTIONS => {
            "declarations/configurations/management.status-subscriptions.yaml"
        }
        build::ACTIVATION_SIMPLE => "declarations/activations/simple.yaml",
        build::ENFORCEMENT_SPECIFIC => {
            "declarations/configurations/softwareupdate.enforcement.specific.yaml"
        }
        build::SOFTWAREUPDATE_SETTINGS => {
            "declarations/configurations/softwareupdate.settings.yaml"
        }
        other => panic!("no yaml for {other}"),
    };
    let yaml = load(file);
    assert_eq!(
        yaml["payload"]["declarationtype"].as_str(),
        Some(d.declaration_type.as_str())
    );
    let json: Value = serde_json::from_slice(&d.to_json()).unwrap();
    let base = load("declarations/declarationbase.yaml");
    let mut out: Vec<String> = Vec::new();
    // The base's Payload is "any dictionary": check the envelope's four keys only.
    for spec in base["payloadkeys"].as_sequence().unwrap() {
        let key = spec["key"].as_str().unwrap();
        if spec["presence"].as_str() == Some("required") && json.get(key).is_none() {
            out.push(format!("{key}: required, missing"));
        }
    }
    for key in json.as_object().unwrap().keys() {
        if !["Type", "Identifier", "ServerToken", "Payload"].contains(&key.as_str()) {
            out.push(format!("{key}: not in the declaration base"));
        }
    }
    out.extend(problems(&yaml, &json["Payload"]));
    out
}

fn samples() -> Vec<Declaration> {
    let mut properties = serde_json::Map::new();
    properties.insert("orchard.tenant".into(), json!("physics"));
    vec![
        build::server_capabilities("orchard.server-capabilities"),
        build::properties("orchard.properties", properties),
        build::status_subscriptions("orchard.status-subscriptions", SUBSCRIBED_STATUS_ITEMS),
        build::activation_simple(
            "orchard.activation",
            &[
                "orchard.status-subscriptions".to_owned(),
                "orchard.os-update".to_owned(),
            ],
        ),
        build::enforcement_specific(
            "orchard.os-update",
            "18.2",
            Some("22C152"),
            "2026-12-11T18:00:00",
            Some("https://orchard.example/os"),
        ),
        build::softwareupdate_settings("orchard.softwareupdate-settings"),
    ]
}

#[test]
fn generated_declarations_match_apple_yaml() {
    for d in samples() {
        let p = declaration_problems(&d);
        assert!(p.is_empty(), "{}: {p:?}", d.declaration_type);
        assert!(d.identifier.len() <= 64 && d.server_token.len() <= 64);
    }
}

#[test]
fn subscribed_status_items_exist() {
    for name in SUBSCRIBED_STATUS_ITEMS {
        let yaml = load(&format!("status/{name}.yaml"));
        assert_eq!(yaml["payload"]["statusitemtype"].as_str(), Some(*name));
    }
}

#[test]
fn protocol_answers_match_apple_yaml() {
    let mut manifest = ManifestDeclarations::default();
    for d in samples() {
        manifest
            .of_kind_mut(d.kind().unwrap())
            .push(DeclarationItem {
                identifier: d.identifier.clone(),
                server_token: d.server_token.clone(),
            });
    }
    let token = declarations_token(&manifest);
    let items = DeclarationItemsResponse {
        declarations: manifest,
        declarations_token: token.clone(),
    };
    let json = serde_json::to_value(&items).unwrap();
    let p = problems(&load("protocol/declarationitemsresponse.yaml"), &json);
    assert!(p.is_empty(), "{p:?}");

    let tokens = TokensResponse {
        sync_tokens: SyncTokens {
            declarations_token: token,
            timestamp: "2026-12-04T00:00:00Z".into(),
        },
    };
    let json = serde_json::to_value(&tokens).unwrap();
    let yaml = load("protocol/tokensresponse.yaml");
    let p = problems(&yaml, &json);
    assert!(p.is_empty(), "{p:?}");
    // SyncTokens' own keys (the YAML names the subkey type only).
    assert_eq!(
        json["SyncTokens"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["DeclarationsToken", "Timestamp"]
    );
}

/// A status report as an iPad on iOS 17 sends it after applying an enforcement declaration, read back.
#[test]
fn status_report_matches_apple_yaml_and_parses() {
    let report = json!({
        "StatusItems": {
            "device": {"operating-system": {"version": "17.5", "build-version": "21F79"},
                       "model": {"identifier": "iPad13,18"}},
            "softwareupdate": {"install-state": "downloading",
                               "pending-version": {"os-version": "18.2", "build-version": "22C152"}},
            "management": {"declarations": {"activations": [], "assets": [], "management": [],
                "configurations": [{"identifier": "orchard.os-update", "server-token": "abc",
                                    "active": true, "valid": "valid"}]}}
        },
        "Errors": [{"StatusItem": "softwareupdate.failure-reason",
                    "Reasons": [{"Code": "Error.NotSupported", "Description": "no"}]}],
        "FullReport": true
    });
    let p = problems(&load("protocol/statusreport.yaml"), &report);
    assert!(p.is_empty(), "{p:?}");
    let parsed = StatusReport::parse(report.to_string().as_bytes()).unwrap();
    assert!(parsed.is_full());
    let statuses = orchard_protocol::declarative::declaration_statuses(&parsed.status_items);
    let configs = &statuses[&orchard_protocol::declarative::DeclarationKind::Configuration];
    assert_eq!(configs.len(), 1);
    assert!(configs[0].active);
    assert_eq!(configs[0].valid, "valid");
    // The install state's values are Apple's.
    let yaml = load("status/softwareupdate.install-state.yaml");
    let range: Vec<&str> = yaml["payloadkeys"][0]["rangelist"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(range.contains(&"downloading") && range.contains(&"failed"));
}

#[test]
fn checker_catches_mistakes() {
    let yaml = load("declarations/configurations/softwareupdate.enforcement.specific.yaml");
    let p = problems(&yaml, &json!({"TargetOSVersion": 18, "TargetDate": "x"}));
    assert!(
        p.iter()
            .any(|p| p.contains("TargetOSVersion: expected <string>")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|p| p.contains("TargetDate: not defined")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|p| p.contains("TargetLocalDateTime: required")),
        "{p:?}"
    );
    let yaml = load("declarations/configurations/softwareupdate.settings.yaml");
    let p = problems(&yaml, &json!({"RecommendedCadence": "Sometimes"}));
    assert!(p.iter().any(|p| p.contains("not in")), "{p:?}");
}

#[test]
fn tokens_change_exactly_with_content() {
    let a = build::enforcement_specific(
        "orchard.os-update",
        "18.2",
        None,
        "2026-12-11T18:00:00",
        None,
    );
    let same = build::enforcement_specific(
        "orchard.os-update",
        "18.2",
        None,
        "2026-12-11T18:00:00",
        None,
    );
    let later = build::enforcement_specific(
        "orchard.os-update",
        "18.2",
        None,
        "2026-12-12T18:00:00",
        None,
    );
    assert_eq!(a.server_token, same.server_token);
    assert_ne!(a.server_token, later.server_token);
    let manifest = |d: &Declaration| {
        let mut m = ManifestDeclarations::default();
        m.configurations.push(DeclarationItem {
            identifier: d.identifier.clone(),
            server_token: d.server_token.clone(),
        });
        m
    };
    assert_eq!(
        declarations_token(&manifest(&a)),
        declarations_token(&manifest(&same))
    );
    assert_ne!(
        declarations_token(&manifest(&a)),
        declarations_token(&manifest(&later))
    );
    assert_ne!(
        declarations_token(&manifest(&a)),
        declarations_token(&ManifestDeclarations::default())
    );
}
