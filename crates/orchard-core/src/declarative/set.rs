//! The declaration set of one channel, generated from Orchard's objects (pure: inputs in, declarations out).
//! A device channel gets the server's capabilities, properties, the status subscriptions, the OS enforcement
//! of its tenant's policy (iOS 17+) and an activation of its configurations; a Shared iPad user channel gets a
//! user-scoped set (capabilities, properties naming the user, user-scope subscriptions, its activation).
//! The set is rendered once: the declaration-items answer and every declaration's JSON are bytes ready to send.

use std::collections::BTreeMap;
use std::sync::Arc;

use orchard_protocol::declarative::{
    build, declarations_token, Declaration, DeclarationItem, DeclarationItemsResponse,
    DeclarationKind, ManifestDeclarations, SUBSCRIBED_STATUS_ITEMS,
};
use serde_json::{json, Map, Value};

use crate::osupdate::OsTarget;

/// Identifiers of the declarations Orchard generates (stable: a device keeps one of each).
pub const SERVER_CAPABILITIES_ID: &str = "orchard.server-capabilities";
pub const PROPERTIES_ID: &str = "orchard.properties";
pub const STATUS_SUBSCRIPTIONS_ID: &str = "orchard.status-subscriptions";
pub const ACTIVATION_ID: &str = "orchard.activation";
pub const OS_ENFORCEMENT_ID: &str = "orchard.os-update";
pub const SOFTWAREUPDATE_SETTINGS_ID: &str = "orchard.softwareupdate-settings";

/// Status items a Shared iPad user channel may subscribe to (Apple's YAML allows them in the user scope).
pub const USER_STATUS_ITEMS: &[&str] =
    &["device.operating-system.version", "management.declarations"];

/// The first iOS with `softwareupdate.enforcement.specific`; older devices are updated by commands.
pub const ENFORCEMENT_MIN_MAJOR: u32 = 17;
/// The first iOS with `softwareupdate.settings`.
const SETTINGS_MIN_MAJOR: u32 = 18;
/// The first iOS with `management.properties`.
const PROPERTIES_MIN_MAJOR: u32 = 16;

/// What a channel's set is generated from.
#[derive(Debug, Clone)]
pub struct SetInputs<'a> {
    pub tenant_id: &'a str,
    pub device_id: &'a str,
    /// The Shared iPad user of a user channel.
    pub user_short_name: Option<&'a str>,
    /// `OSVersion` as Orchard last learnt it; unknown counts as current iOS.
    pub os_version: Option<&'a str>,
    /// The OS target of the tenant's policy for this device's model, if any.
    pub os_target: Option<&'a OsTarget>,
    /// More declarations from other features (generic assignments later), added as they are.
    pub extra: &'a [Declaration],
}

/// A channel's generated set, rendered.
#[derive(Debug)]
pub struct DeclarationSet {
    pub token: String,
    /// The `declaration-items` answer (JSON).
    pub items_json: Arc<[u8]>,
    /// Every declaration's JSON, by (kind, identifier).
    pub declarations: BTreeMap<(DeclarationKind, String), Arc<[u8]>>,
    /// The declarations themselves (for views).
    pub list: Vec<Declaration>,
}

impl DeclarationSet {
    pub fn declaration(&self, kind: DeclarationKind, identifier: &str) -> Option<Arc<[u8]>> {
        self.declarations
            .get(&(kind, identifier.to_owned()))
            .cloned()
    }
}

/// "17.5.1" → 17; None when unreadable.
pub fn major_of(version: &str) -> Option<u32> {
    version.split('.').next()?.trim().parse().ok()
}

/// Whether a device on `os_version` takes declarations for OS updates (unknown: assume current iOS).
pub fn takes_enforcement(os_version: Option<&str>) -> bool {
    os_version
        .and_then(major_of)
        .is_none_or(|major| major >= ENFORCEMENT_MIN_MAJOR)
}

/// Generates a channel's declarations.
pub fn generate(inputs: &SetInputs<'_>) -> Vec<Declaration> {
    let major = inputs.os_version.and_then(major_of).unwrap_or(u32::MAX);
    let mut out = vec![build::server_capabilities(SERVER_CAPABILITIES_ID)];
    let mut properties = Map::new();
    properties.insert("orchard.tenant".into(), json!(inputs.tenant_id));
    properties.insert("orchard.device".into(), json!(inputs.device_id));
    let mut configurations = vec![STATUS_SUBSCRIPTIONS_ID.to_owned()];
    match inputs.user_short_name {
        Some(user) => {
            properties.insert("orchard.user".into(), Value::String(user.to_owned()));
            out.push(build::status_subscriptions(
                STATUS_SUBSCRIPTIONS_ID,
                USER_STATUS_ITEMS,
            ));
        }
        None => {
            out.push(build::status_subscriptions(
                STATUS_SUBSCRIPTIONS_ID,
                SUBSCRIBED_STATUS_ITEMS,
            ));
            if let Some(target) = inputs.os_target.filter(|_| major >= ENFORCEMENT_MIN_MAJOR) {
                out.push(build::enforcement_specific(
                    OS_ENFORCEMENT_ID,
                    &target.version,
                    target.build.as_deref(),
                    &target.deadline_local,
                    target.details_url.as_deref(),
                ));
                configurations.push(OS_ENFORCEMENT_ID.to_owned());
                if major >= SETTINGS_MIN_MAJOR {
                    out.push(build::softwareupdate_settings(SOFTWAREUPDATE_SETTINGS_ID));
                    configurations.push(SOFTWAREUPDATE_SETTINGS_ID.to_owned());
                }
            }
        }
    }
    if major >= PROPERTIES_MIN_MAJOR {
        out.push(build::properties(PROPERTIES_ID, properties));
    }
    for extra in inputs.extra {
        if extra.kind() == Some(DeclarationKind::Configuration) {
            configurations.push(extra.identifier.clone());
        }
        out.push(extra.clone());
    }
    out.push(build::activation_simple(ACTIVATION_ID, &configurations));
    out
}

/// Renders a set: the manifest, its token and every declaration's bytes.
pub fn render(list: Vec<Declaration>) -> DeclarationSet {
    let mut manifest = ManifestDeclarations::default();
    let mut declarations = BTreeMap::new();
    for d in &list {
        let Some(kind) = d.kind() else { continue };
        manifest.of_kind_mut(kind).push(DeclarationItem {
            identifier: d.identifier.clone(),
            server_token: d.server_token.clone(),
        });
        declarations.insert((kind, d.identifier.clone()), Arc::from(d.to_json()));
    }
    let token = declarations_token(&manifest);
    let items = DeclarationItemsResponse {
        declarations: manifest,
        declarations_token: token.clone(),
    };
    DeclarationSet {
        token,
        items_json: Arc::from(serde_json::to_vec(&items).unwrap_or_default()),
        declarations,
        list,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(version: &str, deadline: &str) -> OsTarget {
        OsTarget {
            version: version.into(),
            build: None,
            deadline_local: deadline.into(),
            details_url: None,
        }
    }

    fn inputs<'a>(os: &'a str, t: Option<&'a OsTarget>, user: Option<&'a str>) -> SetInputs<'a> {
        SetInputs {
            tenant_id: "t",
            device_id: "d",
            user_short_name: user,
            os_version: Some(os),
            os_target: t,
            extra: &[],
        }
    }

    fn ids(list: &[Declaration]) -> Vec<&str> {
        list.iter().map(|d| d.identifier.as_str()).collect()
    }

    #[test]
    fn enforcement_only_from_ios_17_and_settings_from_18() {
        let t = target("18.2", "2026-12-11T18:00:00");
        assert!(!ids(&generate(&inputs("16.7", Some(&t), None))).contains(&OS_ENFORCEMENT_ID));
        let ios17 = generate(&inputs("17.5", Some(&t), None));
        assert!(ids(&ios17).contains(&OS_ENFORCEMENT_ID));
        assert!(!ids(&ios17).contains(&SOFTWAREUPDATE_SETTINGS_ID));
        let ios18 = generate(&inputs("18.1", Some(&t), None));
        assert!(ids(&ios18).contains(&SOFTWAREUPDATE_SETTINGS_ID));
        let activation = ios18
            .iter()
            .find(|d| d.identifier == ACTIVATION_ID)
            .unwrap();
        assert_eq!(
            activation.payload["StandardConfigurations"],
            json!([
                STATUS_SUBSCRIPTIONS_ID,
                OS_ENFORCEMENT_ID,
                SOFTWAREUPDATE_SETTINGS_ID
            ])
        );
        assert!(!ids(&generate(&inputs("18.1", None, None))).contains(&OS_ENFORCEMENT_ID));
    }

    #[test]
    fn user_channels_get_a_user_scoped_set() {
        let t = target("18.2", "2026-12-11T18:00:00");
        let set = generate(&inputs("18.1", Some(&t), Some("jane")));
        assert!(!ids(&set).contains(&OS_ENFORCEMENT_ID));
        let props = set.iter().find(|d| d.identifier == PROPERTIES_ID).unwrap();
        assert_eq!(props.payload["orchard.user"], json!("jane"));
        let subs = set
            .iter()
            .find(|d| d.identifier == STATUS_SUBSCRIPTIONS_ID)
            .unwrap();
        assert_eq!(
            subs.payload["StatusItems"].as_array().unwrap().len(),
            USER_STATUS_ITEMS.len()
        );
    }

    #[test]
    fn the_token_changes_exactly_with_the_set() {
        let a = target("18.2", "2026-12-11T18:00:00");
        let b = target("18.2", "2026-12-12T18:00:00");
        let token = |t: &OsTarget| render(generate(&inputs("18.1", Some(t), None))).token;
        assert_eq!(token(&a), token(&a.clone()));
        assert_ne!(token(&a), token(&b));
        let rendered = render(generate(&inputs("18.1", Some(&a), None)));
        assert!(rendered
            .declaration(DeclarationKind::Configuration, OS_ENFORCEMENT_ID)
            .is_some());
        assert!(rendered
            .declaration(DeclarationKind::Activation, OS_ENFORCEMENT_ID)
            .is_none());
    }
}
