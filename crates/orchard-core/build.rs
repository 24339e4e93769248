//! Turns Apple's configuration-profile YAML (vendored in `apple/mdm/profiles`, MIT) into the compact JSON
//! schema `desired::profile_schema` validates against, so the server neither ships nor parses YAML at run time.
//!
//! Kept per key: name, type, required, `rangelist`, `range`, subkeys, and whether iOS/iPadOS and Shared iPad
//! support it; per payload type additionally its Shared iPad channels. Everything else (titles, prose,
//! defaults) is dropped.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Map, Value as Json};
use serde_yaml::Value as Yaml;

fn main() {
    let dir = Path::new("apple/mdm/profiles");
    println!("cargo:rerun-if-changed=apple/mdm/profiles");
    let mut payloads = BTreeMap::new();
    let mut top_level = Json::Null;
    let mut common = Json::Null;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| fail(&format!("reading {}: {e}", dir.display())))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    entries.sort();
    for path in entries {
        println!("cargo:rerun-if-changed={}", path.display());
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| fail(&format!("reading {}: {e}", path.display())));
        // A few files nest an anchor inside itself (a recursive structure serde_yaml cannot expand): those
        // aliases become empty lists, which the validator reads as "any keys" at that depth.
        let doc: Yaml = serde_yaml::from_str(&text)
            .or_else(|_| serde_yaml::from_str(&without_aliases(&text)))
            .unwrap_or_else(|e| fail(&format!("parsing {}: {e}", path.display())));
        let Some(payload_type) = doc["payload"]["payloadtype"].as_str() else {
            continue;
        };
        let keys = keys(doc.get("payloadkeys"));
        match payload_type {
            "TopLevel" => top_level = keys,
            "CommonPayloadKeys" => common = keys,
            _ => {
                let ios = &doc["payload"]["supportedOS"]["iOS"];
                let on_ios = !ios.is_null() && ios["introduced"].as_str() != Some("n/a");
                let mut entry = Map::new();
                entry.insert("ios".into(), json!(on_ios));
                if let Some(mode) = ios["sharedipad"]["mode"].as_str() {
                    entry.insert("shared_ipad".into(), json!(mode));
                }
                if let Some(user) = ios["sharedipad"]["userchannel"].as_bool() {
                    entry.insert("user_channel".into(), json!(user));
                }
                entry.insert("keys".into(), keys);
                payloads.insert(payload_type.to_owned(), Json::Object(entry));
            }
        }
    }
    let schema = json!({"top_level": top_level, "common": common, "payloads": payloads});
    let out = Path::new(&std::env::var("OUT_DIR").unwrap_or_else(|_| fail("OUT_DIR unset")))
        .join("profile_schema.json");
    std::fs::write(&out, schema.to_string())
        .unwrap_or_else(|e| fail(&format!("writing {}: {e}", out.display())));
}

fn without_aliases(text: &str) -> String {
    text.lines()
        .map(|line| match line.find(": *") {
            Some(at) => format!("{}: []", &line[..at]),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn fail(message: &str) -> ! {
    eprintln!("orchard-core build: {message}");
    std::process::exit(1)
}

/// A `payloadkeys`/`subkeys` list as compact key specs.
fn keys(list: Option<&Yaml>) -> Json {
    let items = list
        .and_then(Yaml::as_sequence)
        .cloned()
        .unwrap_or_default();
    Json::Array(items.iter().filter_map(key).collect())
}

fn key(item: &Yaml) -> Option<Json> {
    let name = item["key"].as_str()?;
    let mut spec = Map::new();
    spec.insert("k".into(), json!(name));
    let ty = item["type"]
        .as_str()
        .unwrap_or("<any>")
        .trim_matches(|c| c == '<' || c == '>');
    spec.insert("t".into(), json!(ty));
    if item["presence"].as_str() == Some("required") {
        spec.insert("r".into(), json!(true));
    }
    if let Some(list) = item["rangelist"].as_sequence() {
        let values: Vec<Json> = list.iter().filter_map(scalar).collect();
        if !values.is_empty() {
            spec.insert("l".into(), Json::Array(values));
        }
    }
    if let Some(min) = scalar(&item["range"]["min"]) {
        spec.insert("min".into(), min);
    }
    if let Some(max) = scalar(&item["range"]["max"]) {
        spec.insert("max".into(), max);
    }
    let ios = &item["supportedOS"]["iOS"];
    if ios["introduced"].as_str() == Some("n/a") {
        spec.insert("na".into(), json!(true));
    }
    if ios["sharedipad"]["mode"].as_str() == Some("forbidden") {
        spec.insert("nosh".into(), json!(true));
    }
    if item.get("subkeys").is_some() {
        spec.insert("s".into(), keys(item.get("subkeys")));
    }
    Some(Json::Object(spec))
}

fn scalar(v: &Yaml) -> Option<Json> {
    match v {
        Yaml::Bool(b) => Some(json!(b)),
        Yaml::Number(n) => n
            .as_i64()
            .map(|i| json!(i))
            .or_else(|| n.as_f64().map(|f| json!(f))),
        Yaml::String(s) => Some(json!(s)),
        _ => None,
    }
}
