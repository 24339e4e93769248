//! OS compliance: per device, where it stands against its tenant's policy — current, behind, downloading,
//! installing, failed (with the reason), deadline missed — read from its declarative status
//! (`softwareupdate.*`, `device.operating-system.version`, the enforcement declaration's own status), from its
//! command-driven update (older iPads) and from inventory (`OSVersion`); and the tenant's summary
//! ("84 of 90 on 18.2, 6 behind, 1 failed").

use std::collections::HashMap;

use orchard_protocol::declarative::{declaration_statuses, item, DeclarationKind};
use orchard_store::{
    DdmChannelRecord, Device, DeviceOsUpdateRecord, OsCatalogueEntry, OsPolicyRecord,
};
use orchard_types::{DeviceId, TenantId, UnixTime};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{deadline_instant, is_behind, resolve_target, version_key, OsPolicyView};
use crate::access::principal::Principal;
use crate::declarative::set::{takes_enforcement, OS_ENFORCEMENT_ID};
use crate::{CoreError, Orchard};

/// One device against the policy.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceCompliance {
    pub device_id: String,
    pub serial_number: Option<String>,
    pub device_name: Option<String>,
    pub product_type: Option<String>,
    /// The newest OS version Orchard knows the device runs (inventory or declarative status).
    pub os_version: Option<String>,
    /// What the policy asks of this model; null when the catalogue does not know the model.
    pub target_version: Option<String>,
    /// current | behind | downloading | installing | failed | deadline_missed | no_target.
    pub state: &'static str,
    /// Why it failed (Apple's reason or error chain).
    pub reason: Option<String>,
    /// `declarations` (iOS 17+), `commands` (older iPads) or `none`.
    pub enforced_by: &'static str,
    /// `softwareupdate.install-state` as last reported.
    pub install_state: Option<String>,
    /// `softwareupdate.pending-version.os-version` as last reported.
    pub pending_version: Option<String>,
}

/// The tenant's summary.
#[derive(Debug, Clone, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ComplianceSummary {
    pub total: usize,
    pub current: usize,
    pub behind: usize,
    pub downloading: usize,
    pub installing: usize,
    pub failed: usize,
    pub deadline_missed: usize,
    pub no_target: usize,
    /// e.g. "84 of 90 on 18.2, 6 behind, 1 failed".
    pub text: String,
}

/// `GET /tenants/{id}/os-compliance`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ComplianceReport {
    /// Null while the tenant has no policy.
    pub policy: Option<OsPolicyView>,
    pub summary: ComplianceSummary,
    pub devices: Vec<DeviceCompliance>,
}

fn text_of(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

/// One device's state (pure).
pub(crate) fn device_state(
    device: &Device,
    policy: &OsPolicyRecord,
    catalogue: &[OsCatalogueEntry],
    status: Option<&Map<String, Value>>,
    update: Option<&DeviceOsUpdateRecord>,
    now: UnixTime,
) -> DeviceCompliance {
    let reported = status.and_then(|s| text_of(item(s, "device.operating-system.version")));
    let os_version = match (device.os_version.clone(), reported) {
        (Some(a), Some(b)) => Some(if version_key(&b) > version_key(&a) {
            b
        } else {
            a
        }),
        (a, b) => a.or(b),
    };
    let target = resolve_target(policy, device.product_name.as_deref(), catalogue);
    let install_state = status.and_then(|s| text_of(item(s, "softwareupdate.install-state")));
    let pending_version =
        status.and_then(|s| text_of(item(s, "softwareupdate.pending-version.os-version")));
    let declarative = takes_enforcement(os_version.as_deref());
    let mut out = DeviceCompliance {
        device_id: device.id.to_string(),
        serial_number: device.serial_number.clone(),
        device_name: device.device_name.clone(),
        product_type: device.product_name.clone(),
        os_version: os_version.clone(),
        target_version: target.as_ref().map(|t| t.version.clone()),
        state: "no_target",
        reason: None,
        enforced_by: if target.is_none() {
            "none"
        } else if declarative {
            "declarations"
        } else {
            "commands"
        },
        install_state: install_state.clone(),
        pending_version,
    };
    let Some(target) = target else {
        out.reason = Some("the catalogue lists no release for this model".into());
        return out;
    };
    if !is_behind(os_version.as_deref(), &target.version) {
        out.state = "current";
        return out;
    }
    let missed = deadline_instant(&target.deadline_local).is_some_and(|d| now > d);
    let (state, reason) = if declarative {
        declarative_state(status, install_state.as_deref())
    } else {
        match update.filter(|u| u.target_version == target.version) {
            Some(u) => match u.stage.as_str() {
                "downloading" => ("downloading", None),
                "installing" => ("installing", None),
                "failed" => ("failed", u.last_error.clone()),
                _ => ("behind", None),
            },
            None => ("behind", None),
        }
    };
    out.state = if state == "behind" && missed {
        "deadline_missed"
    } else {
        state
    };
    out.reason = reason;
    out
}

/// The state from a device's declarative status: the enforcement declaration refused, or Apple's install
/// state (and failure reason).
fn declarative_state(
    status: Option<&Map<String, Value>>,
    install_state: Option<&str>,
) -> (&'static str, Option<String>) {
    let Some(status) = status else {
        return ("behind", None);
    };
    let refused = declaration_statuses(status)
        .get(&DeclarationKind::Configuration)
        .and_then(|list| list.iter().find(|d| d.identifier == OS_ENFORCEMENT_ID))
        .filter(|d| d.valid == "invalid")
        .map(|d| {
            let reasons: Vec<String> = d
                .reasons
                .iter()
                .map(|r| match &r.description {
                    Some(text) => format!("{}: {text}", r.code),
                    None => r.code.clone(),
                })
                .collect();
            format!(
                "the device refused the update declaration: {}",
                reasons.join("; ")
            )
        });
    if let Some(why) = refused {
        return ("failed", Some(why));
    }
    match install_state {
        Some("downloading") => ("downloading", None),
        Some("prepared") | Some("installing") => ("installing", None),
        Some("failed") => {
            let reason = text_of(item(status, "softwareupdate.failure-reason.reason"))
                .unwrap_or_else(|| "the device reported a failed update".into());
            ("failed", Some(reason))
        }
        _ => ("behind", None),
    }
}

pub(crate) fn summarize(
    devices: &[DeviceCompliance],
    policy: &OsPolicyRecord,
) -> ComplianceSummary {
    let mut s = ComplianceSummary {
        total: devices.len(),
        ..ComplianceSummary::default()
    };
    for d in devices {
        match d.state {
            "current" => s.current += 1,
            "behind" => s.behind += 1,
            "downloading" => s.downloading += 1,
            "installing" => s.installing += 1,
            "failed" => s.failed += 1,
            "deadline_missed" => s.deadline_missed += 1,
            _ => s.no_target += 1,
        }
    }
    let on = match (&policy.target[..], &policy.pinned_version) {
        ("pinned", Some(v)) => format!("on {v}"),
        _ => "on their model's latest release".to_owned(),
    };
    let mut text = format!("{} of {} {on}", s.current, s.total);
    for (n, what) in [
        (s.behind, "behind"),
        (s.downloading, "downloading"),
        (s.installing, "installing"),
        (s.failed, "failed"),
        (s.deadline_missed, "past the deadline"),
        (s.no_target, "without a known release"),
    ] {
        if n > 0 {
            text.push_str(&format!(", {n} {what}"));
        }
    }
    s.text = text;
    s
}

impl Orchard {
    /// `GET /tenants/{id}/os-compliance` (everyone who sees the tenant).
    pub async fn os_compliance(
        &self,
        who: &Principal,
        tenant: TenantId,
    ) -> Result<ComplianceReport, CoreError> {
        self.store
            .get_tenant(who.scope(), tenant)
            .await?
            .ok_or(CoreError::NotFound)?;
        let Some(policy) = self.store.os_policy(who.scope(), tenant).await? else {
            return Ok(ComplianceReport {
                policy: None,
                summary: ComplianceSummary {
                    text: "no OS policy".into(),
                    ..ComplianceSummary::default()
                },
                devices: Vec::new(),
            });
        };
        let devices = self
            .store
            .enrolled_devices_of_tenant(who.scope(), tenant)
            .await?;
        let catalogue = self.store.os_catalogue().await?;
        let statuses: HashMap<DeviceId, Map<String, Value>> = self
            .store
            .ddm_device_channels_of_tenant(who.scope(), tenant)
            .await?
            .into_iter()
            .filter_map(|c: DdmChannelRecord| {
                let tree = serde_json::from_str(c.status_json.as_deref()?).ok()?;
                Some((c.device_id, tree))
            })
            .collect();
        let updates: HashMap<DeviceId, DeviceOsUpdateRecord> = self
            .store
            .device_os_updates_of_tenant(who.scope(), tenant)
            .await?
            .into_iter()
            .map(|u| (u.device_id, u))
            .collect();
        let now = self.clock.now();
        let list: Vec<DeviceCompliance> = devices
            .iter()
            .map(|d| {
                device_state(
                    d,
                    &policy,
                    &catalogue,
                    statuses.get(&d.id),
                    updates.get(&d.id),
                    now,
                )
            })
            .collect();
        Ok(ComplianceReport {
            summary: summarize(&list, &policy),
            policy: Some(OsPolicyView::from(&policy)),
            devices: list,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchard_types::{EnrollmentState, Udid};
    use serde_json::json;

    fn device(os: &str) -> Device {
        Device {
            id: DeviceId::new(),
            udid: Udid::parse("00008020-0001").unwrap_or_else(|_| Udid::parse("ABC").unwrap()),
            tenant_id: TenantId::new(),
            serial_number: None,
            state: EnrollmentState::Enrolled,
            topic: None,
            cert_fingerprint: None,
            device_name: None,
            model: None,
            model_name: None,
            product_name: Some("iPad13,18".into()),
            os_version: Some(os.into()),
            build_version: None,
            is_supervised: None,
            enrolled_at: None,
            last_seen_at: None,
            created_at: UnixTime(0),
            updated_at: UnixTime(0),
            facts_digest: None,
            plan_inputs_digest: None,
        }
    }

    fn policy(deadline: &str) -> OsPolicyRecord {
        OsPolicyRecord {
            tenant_id: TenantId::new(),
            target: "pinned".into(),
            pinned_version: Some("18.2".into()),
            pinned_build: None,
            deadline_local: deadline.into(),
            details_url: None,
            revision: 1,
            updated_at: UnixTime(0),
            updated_by: None,
        }
    }

    fn status(items: Value) -> Map<String, Value> {
        let mut tree = Map::new();
        for (k, v) in items.as_object().unwrap() {
            orchard_protocol::declarative::insert_item(&mut tree, k, v.clone());
        }
        tree
    }

    #[test]
    fn states_from_status_and_inventory() {
        let p = policy("2026-12-11T18:00:00");
        let before = deadline_instant("2026-12-01T00:00:00").unwrap();
        let after = deadline_instant("2026-12-12T00:00:00").unwrap();
        let state = |d: &Device, s: Option<&Map<String, Value>>, now| {
            device_state(d, &p, &[], s, None, now).state
        };
        assert_eq!(state(&device("18.2"), None, before), "current");
        assert_eq!(state(&device("18.10"), None, before), "current");
        assert_eq!(state(&device("18.1"), None, before), "behind");
        assert_eq!(state(&device("18.1"), None, after), "deadline_missed");
        let downloading = status(json!({"softwareupdate.install-state": "downloading"}));
        assert_eq!(
            state(&device("18.1"), Some(&downloading), after),
            "downloading"
        );
        let reached = status(json!({"device.operating-system.version": "18.2"}));
        assert_eq!(state(&device("18.1"), Some(&reached), after), "current");
        let failed = status(json!({"softwareupdate.install-state": "failed",
                                   "softwareupdate.failure-reason": {"reason": "not enough space", "count": 1}}));
        let c = device_state(&device("18.1"), &p, &[], Some(&failed), None, before);
        assert_eq!(
            (c.state, c.reason.as_deref()),
            ("failed", Some("not enough space"))
        );
    }

    #[test]
    fn the_summary_reads_like_a_sentence() {
        let p = policy("2026-12-11T18:00:00");
        let now = deadline_instant("2026-12-01T00:00:00").unwrap();
        let mut list: Vec<DeviceCompliance> = (0..84)
            .map(|_| device_state(&device("18.2"), &p, &[], None, None, now))
            .collect();
        list.extend((0..6).map(|_| device_state(&device("18.1"), &p, &[], None, None, now)));
        let failed = status(json!({"softwareupdate.install-state": "failed"}));
        list.push(device_state(
            &device("18.1"),
            &p,
            &[],
            Some(&failed),
            None,
            now,
        ));
        let s = summarize(&list, &p);
        assert_eq!(s.text, "84 of 91 on 18.2, 6 behind, 1 failed");
    }
}
