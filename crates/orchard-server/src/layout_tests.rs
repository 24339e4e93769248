//! The server's layout rule, checked on the source: a feature module of `api/`, `auth/` or `device/` uses the
//! shared modules of its folder and core, never a sibling feature module, so features stay independent and
//! the route list in `api/mod.rs` is the only place that knows them all.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A folder of the server: its shared modules (anyone in the folder may use them) and the modules that wire
/// the features together (exempt). Every other file is a feature.
struct Folder {
    name: &'static str,
    shared: &'static [&'static str],
    wiring: &'static [&'static str],
}

const FOLDERS: &[Folder] = &[
    Folder {
        name: "api",
        shared: &["error", "extract", "reply"],
        wiring: &["mod", "audit_trail"],
    },
    Folder {
        name: "auth",
        shared: &["cookies", "principal"],
        wiring: &["mod"],
    },
    Folder {
        name: "device",
        shared: &["error"],
        wiring: &["mod"],
    },
    Folder {
        name: "ui",
        shared: &["i18n", "markdown", "page", "selection", "session"],
        wiring: &["mod"],
    },
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn modules_of(folder: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(src().join(folder))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// The module names a source text reaches through `prefix` (`super::x`, `super::{x, y::z}`, `crate::api::x`).
fn reached_through(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or_default();
            for item in inner.split(',') {
                let first = item.trim().split("::").next().unwrap_or_default().trim();
                if !first.is_empty() {
                    names.insert(first.to_string());
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

fn features_reaching_siblings() -> Vec<String> {
    let mut offences = Vec::new();
    for folder in FOLDERS {
        let modules = modules_of(folder.name);
        let features: BTreeSet<&str> = modules
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| !folder.shared.contains(n) && !folder.wiring.contains(n))
            .collect();
        for (name, text) in &modules {
            if folder.wiring.contains(&name.as_str()) {
                continue;
            }
            let mut reached = reached_through(text, "super::");
            reached.extend(reached_through(text, &format!("crate::{}::", folder.name)));
            for sibling in reached.iter().filter(|r| features.contains(r.as_str())) {
                if sibling != name {
                    offences.push(format!("{}/{name}.rs uses {sibling}", folder.name));
                }
            }
        }
    }
    offences
}

#[test]
fn no_feature_module_uses_a_sibling_feature() {
    let offences = features_reaching_siblings();
    assert!(
        offences.is_empty(),
        "feature modules must use only their folder's shared modules and core (move what they share into \
         a shared module):\n  {}",
        offences.join("\n  ")
    );
}

/// An API feature reaches the rest of the server only through `api::{error, extract, reply}`: the caller,
/// the state and the answers all come from there.
#[test]
fn api_features_use_only_the_shared_api_modules() {
    let folder = &FOLDERS[0];
    let mut offences = Vec::new();
    for (name, text) in modules_of(folder.name) {
        if folder.shared.contains(&name.as_str()) || folder.wiring.contains(&name.as_str()) {
            continue;
        }
        for reached in reached_through(&text, "crate::") {
            if reached != "api" {
                offences.push(format!("api/{name}.rs uses crate::{reached}"));
            }
        }
        for reached in reached_through(&text, "crate::api::")
            .into_iter()
            .chain(reached_through(&text, "super::"))
        {
            if !folder.shared.contains(&reached.as_str()) {
                offences.push(format!("api/{name}.rs uses api::{reached}"));
            }
        }
    }
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}

#[test]
fn the_check_sees_grouped_and_plain_paths() {
    let code = "use super::{error::ApiError, tokens};\nuse crate::api::dep::x;\nlet y = super::users::f();";
    let through_super = reached_through(code, "super::");
    assert!(through_super.contains("tokens") && through_super.contains("users"));
    assert!(through_super.contains("error"));
    assert!(reached_through(code, "crate::api::").contains("dep"));
}

/// The server acts as itself (`Orchard::system()`, core's `SystemCtx`) only for its own surfaces: the
/// `/metrics` gauges and the audit trail. Every handler acts for its caller's principal.
#[test]
fn only_metrics_and_the_audit_trail_act_as_the_server_itself() {
    // The web UI's form posts write the same audit trail as the API's middleware (`SignedIn::record_post`).
    const MAY_ACT_AS_SYSTEM: &[&str] = &["ops.rs", "api/audit_trail.rs", "ui/session.rs"];
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&src(), &mut files);
    let offences: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(src())
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/")
        })
        .filter(|shown| shown != "layout_tests.rs" && !MAY_ACT_AS_SYSTEM.contains(&shown.as_str()))
        .filter(|shown| {
            let text = std::fs::read_to_string(src().join(shown)).unwrap();
            text.contains(".system()") || text.contains("SystemCtx")
        })
        .collect();
    assert!(
        offences.is_empty(),
        "only {MAY_ACT_AS_SYSTEM:?} may act as the server itself; these do too: {offences:?}"
    );
}
