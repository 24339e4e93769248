//! Shared iPad policy: how a tenant's Shared iPads behave (temporary sessions, session timeouts, resident users
//! or quota, default Managed Apple Account domains, online-authentication grace period, passcode grace and
//! auto-lock, awaiting user configuration), set for the whole tenant and per device group. A group's settings
//! override the tenant's key by key; a device in several groups with policies takes them in the order of the
//! groups' names (the last one wins a key).
//!
//! The reconciler applies it: a change marks the tenant's devices dirty (in the change's unit of work); a pass
//! sends each Shared iPad (DeviceInformation `IsMultiUser`, never a single-user iPad) whose effective settings
//! differ from what it acknowledged one `Settings` → `SharedDeviceConfiguration` command, never a second one
//! while one waits (a guarded update). The device's answer makes the settings applied, or keeps its error; a
//! device is compliant when what it acknowledged is what its policy wants.

use std::collections::{HashMap, HashSet};

use orchard_protocol::commands::{Command, SettingsItem};
use orchard_protocol::report::CommandReport;
use orchard_store::{ReconcileDevice, SharedIpadDeviceState, SharedIpadPolicyRecord, UnitOfWork};
use orchard_types::{ChannelId, DeviceId, GroupId, QueuedBy, TenantId, UnixTime};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::access::principal::Principal;
use crate::commands::secrets::CommandTarget;
use crate::{CoreError, Orchard};

/// `PasscodePolicy.PasscodeLockGracePeriod` values Apple's YAML allows (seconds).
const PASSCODE_GRACE_PERIODS: &[i64] = &[0, 60, 300, 900, 3600, 14400];
/// Session timeouts: 0 (none) or at least this many seconds (Apple's YAML).
const MIN_SESSION_TIMEOUT: i64 = 30;
/// `PasscodePolicy.AutoLockTime`: at least this many seconds (Apple's YAML).
const MIN_AUTO_LOCK: i64 = 120;
/// A generous upper bound for every duration (one year in seconds) and count, against nonsense input.
const MAX_NUMBER: i64 = 31_536_000;
const MAX_DOMAINS: usize = 50;

/// The settings of one policy; every key optional (absent: not set by this policy). Names follow Apple's keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SharedIpadSettings {
    /// Only temporary sessions (guest), no Managed Apple Account sign-in (iOS 14.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporary_session_only: Option<bool>,
    /// Seconds of inactivity before a temporary session ends: 0 (never) or at least 30 (iOS 14.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporary_session_timeout: Option<i64>,
    /// Seconds of inactivity before a user is logged out: 0 (never) or at least 30 (iOS 14.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_session_timeout: Option<i64>,
    /// The expected number of users (the device sizes their storage from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident_users: Option<i64>,
    /// Storage per user in MB (takes precedence over resident_users on the device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_size: Option<i64>,
    /// Domains offered on the sign-in screen (iOS 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_apple_id_default_domains: Option<Vec<String>>,
    /// Days a returning user signs in offline before Apple's servers are asked again; 0: always (iOS 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_authentication_grace_period: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_language_and_locale_setup_for_new_users: Option<bool>,
    /// Seconds after locking before the passcode is needed: 0, 60, 300, 900, 3600 or 14400 (iOS 17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passcode_lock_grace_period: Option<i64>,
    /// Seconds idle before the screen locks, at least 120 (iOS 17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_lock_time: Option<i64>,
    /// New users wait in Setup Assistant until Orchard sends UserConfigured (iOS 17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub await_user_configuration: Option<bool>,
}

impl SharedIpadSettings {
    /// Every problem, each naming its field.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut range = |name: &str, value: Option<i64>, min: i64| {
            if let Some(v) = value {
                if !(min..=MAX_NUMBER).contains(&v) {
                    out.push(format!("{name} must be between {min} and {MAX_NUMBER}"));
                }
            }
        };
        range("resident_users", self.resident_users, 1);
        range("quota_size", self.quota_size, 1);
        range(
            "online_authentication_grace_period",
            self.online_authentication_grace_period,
            0,
        );
        range("auto_lock_time", self.auto_lock_time, MIN_AUTO_LOCK);
        for (name, value) in [
            ("temporary_session_timeout", self.temporary_session_timeout),
            ("user_session_timeout", self.user_session_timeout),
        ] {
            if let Some(v) = value {
                if v != 0 && !(MIN_SESSION_TIMEOUT..=MAX_NUMBER).contains(&v) {
                    out.push(format!(
                        "{name} must be 0 (no timeout) or between {MIN_SESSION_TIMEOUT} and {MAX_NUMBER} seconds"
                    ));
                }
            }
        }
        if let Some(v) = self.passcode_lock_grace_period {
            if !PASSCODE_GRACE_PERIODS.contains(&v) {
                out.push(format!(
                    "passcode_lock_grace_period must be one of {PASSCODE_GRACE_PERIODS:?}"
                ));
            }
        }
        if let Some(domains) = &self.managed_apple_id_default_domains {
            if domains.len() > MAX_DOMAINS {
                out.push(format!(
                    "managed_apple_id_default_domains: at most {MAX_DOMAINS} domains"
                ));
            }
            for d in domains {
                let ok = !d.is_empty()
                    && d.len() <= 253
                    && d.contains('.')
                    && d.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
                if !ok {
                    out.push(format!(
                        "managed_apple_id_default_domains: {d:?} is not a domain name"
                    ));
                }
            }
        }
        out
    }

    /// `self` with every key `over` sets replaced by its value.
    fn overlaid(mut self, over: &SharedIpadSettings) -> Self {
        macro_rules! take {
            ($($field:ident),*) => { $( if over.$field.is_some() { self.$field = over.$field.clone(); } )* };
        }
        take!(
            temporary_session_only,
            temporary_session_timeout,
            user_session_timeout,
            resident_users,
            quota_size,
            managed_apple_id_default_domains,
            online_authentication_grace_period,
            skip_language_and_locale_setup_for_new_users,
            passcode_lock_grace_period,
            auto_lock_time,
            await_user_configuration
        );
        self
    }

    fn is_empty(&self) -> bool {
        *self == SharedIpadSettings::default()
    }

    /// The settings as the `SharedDeviceConfiguration` item.
    pub fn to_settings_item(&self) -> SettingsItem {
        SettingsItem::SharedDeviceConfiguration {
            quota_size: self.quota_size,
            resident_users: self.resident_users,
            user_session_timeout: self.user_session_timeout,
            temporary_session_only: self.temporary_session_only,
            temporary_session_timeout: self.temporary_session_timeout,
            online_authentication_grace_period: self.online_authentication_grace_period,
            skip_language_and_locale_setup_for_new_users: self
                .skip_language_and_locale_setup_for_new_users,
            managed_apple_id_default_domains: self.managed_apple_id_default_domains.clone(),
            await_user_configuration: self.await_user_configuration,
            passcode_lock_grace_period: self.passcode_lock_grace_period,
            auto_lock_time: self.auto_lock_time,
        }
    }

    fn to_json(&self) -> Result<String, CoreError> {
        serde_json::to_string(self)
            .map_err(|e| CoreError::Internal(format!("shared ipad settings json: {e}")))
    }

    /// A digest of the settings (their JSON has a fixed key order).
    fn digest(json: &str) -> String {
        hex::encode(Sha256::digest(json.as_bytes()))
    }
}

/// One saved policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharedIpadPolicyView {
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Uuid))]
    pub group_id: Option<GroupId>,
    pub group_name: Option<String>,
    pub settings: SharedIpadSettings,
    pub revision: i64,
    pub updated_at: String,
    pub updated_by: Option<String>,
}

impl SharedIpadPolicyView {
    fn of(record: &SharedIpadPolicyRecord) -> Self {
        SharedIpadPolicyView {
            group_id: record.group_id,
            group_name: record.group_name.clone(),
            settings: serde_json::from_str(&record.settings_json).unwrap_or_default(),
            revision: record.revision,
            updated_at: record.updated_at.to_rfc3339(),
            updated_by: record.updated_by.clone(),
        }
    }
}

/// `GET /tenants/{id}/shared-ipad-policy`: the tenant's policy and its groups'.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharedIpadPolicies {
    /// The whole tenant's settings; null when none are set.
    pub tenant: Option<SharedIpadPolicyView>,
    /// Groups' settings, by group name.
    pub groups: Vec<SharedIpadPolicyView>,
}

/// One device's state against its policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharedIpadDeviceCompliance {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub device_id: DeviceId,
    /// The device reported it is a Shared iPad; single-user iPads are never sent these settings.
    pub shared_ipad: bool,
    /// `compliant`, `pending` (sent or waiting to be sent), `error` (the device refused; see `last_error`),
    /// `no_policy` (nothing applies), `not_shared_ipad`.
    pub status: &'static str,
    pub compliant: bool,
    /// The effective settings its policy wants.
    pub wanted: Option<SharedIpadSettings>,
    /// What it last acknowledged.
    pub applied: Option<SharedIpadSettings>,
    pub applied_at: Option<String>,
    pub last_error: Option<String>,
}

/// `GET /tenants/{id}/shared-ipad-compliance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharedIpadComplianceReport {
    pub shared_ipads: usize,
    pub compliant: usize,
    pub devices: Vec<SharedIpadDeviceCompliance>,
}

fn is_shared_ipad(state: &SharedIpadDeviceState) -> bool {
    state
        .device_information_json
        .as_deref()
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .and_then(|v| v["data"]["IsMultiUser"].as_bool())
        .unwrap_or(false)
}

/// The effective settings of a device of `tenant` in `groups` (None: no policy applies).
fn effective(
    policies: &[SharedIpadPolicyRecord],
    tenant: TenantId,
    groups: &HashSet<GroupId>,
) -> Option<SharedIpadSettings> {
    let mut any = false;
    let mut settings = SharedIpadSettings::default();
    // The store lists the tenant's policy first, then its groups' by name.
    for p in policies.iter().filter(|p| p.tenant_id == tenant) {
        if p.group_id.is_none_or(|g| groups.contains(&g)) {
            let own: SharedIpadSettings =
                serde_json::from_str(&p.settings_json).unwrap_or_default();
            settings = settings.overlaid(&own);
            any = true;
        }
    }
    (any && !settings.is_empty()).then_some(settings)
}

impl Orchard {
    /// `GET /tenants/{id}/shared-ipad-policy`.
    pub async fn shared_ipad_policies(
        &self,
        who: &Principal,
        tenant: TenantId,
    ) -> Result<SharedIpadPolicies, CoreError> {
        self.store
            .get_tenant(who.scope(), tenant)
            .await?
            .ok_or(CoreError::NotFound)?;
        let records = self.store.shared_ipad_policies(who.scope(), tenant).await?;
        Ok(SharedIpadPolicies {
            tenant: records
                .iter()
                .find(|r| r.group_id.is_none())
                .map(SharedIpadPolicyView::of),
            groups: records
                .iter()
                .filter(|r| r.group_id.is_some())
                .map(SharedIpadPolicyView::of)
                .collect(),
        })
    }

    /// `PUT /tenants/{id}/shared-ipad-policy` and `/tenants/{id}/groups/{group}/shared-ipad-policy` (the
    /// tenant's admins and operators): saves the settings and marks the tenant's devices for the reconciler in
    /// the same unit of work.
    pub async fn put_shared_ipad_policy(
        &self,
        who: &Principal,
        tenant: TenantId,
        group: Option<GroupId>,
        settings: SharedIpadSettings,
    ) -> Result<SharedIpadPolicyView, CoreError> {
        self.check_policy_target(who, tenant, group).await?;
        let admin = who.tenant_admin(tenant)?;
        let problems = settings.problems();
        if !problems.is_empty() {
            return Err(CoreError::Invalid(problems.join("; ")));
        }
        let now = self.clock.now();
        let devices: Vec<DeviceId> = self
            .store
            .enrolled_devices_of_tenant(admin.principal().scope(), tenant)
            .await?
            .iter()
            .map(|d| d.id)
            .collect();
        let mut unit = self.store.begin_unit().await?;
        let mut saved = unit
            .put_shared_ipad_policy(&SharedIpadPolicyRecord {
                tenant_id: tenant,
                group_id: group,
                group_name: None,
                settings_json: settings.to_json()?,
                revision: 0,
                updated_at: now,
                updated_by: Some(who.actor()),
            })
            .await?;
        unit.mark_devices_dirty(&devices, now).await?;
        self.commit_unit(unit).await?;
        self.wake_reconciler();
        if let Some(g) = group {
            saved.group_name = self
                .store
                .group_in_scope(who.scope(), g)
                .await?
                .map(|g| g.name);
        }
        tracing::info!(%tenant, group = ?group, revision = saved.revision, devices = devices.len(), actor = %who.actor(), "shared ipad policy saved");
        Ok(SharedIpadPolicyView::of(&saved))
    }

    /// `DELETE /tenants/{id}/groups/{group}/shared-ipad-policy`: the group's settings no longer apply (devices
    /// keep what they have until another policy changes it). Idempotent.
    pub async fn delete_shared_ipad_policy(
        &self,
        who: &Principal,
        tenant: TenantId,
        group: Option<GroupId>,
    ) -> Result<(), CoreError> {
        self.check_policy_target(who, tenant, group).await?;
        let admin = who.tenant_admin(tenant)?;
        let now = self.clock.now();
        let devices: Vec<DeviceId> = self
            .store
            .enrolled_devices_of_tenant(admin.principal().scope(), tenant)
            .await?
            .iter()
            .map(|d| d.id)
            .collect();
        let mut unit = self.store.begin_unit().await?;
        // Deleting what is not there changes nothing (and is no error: the result is the same).
        if unit
            .delete_shared_ipad_policy(tenant, group)
            .await?
            .is_none()
        {
            unit.rollback().await?;
            return Ok(());
        }
        unit.mark_devices_dirty(&devices, now).await?;
        self.commit_unit(unit).await?;
        self.wake_reconciler();
        Ok(())
    }

    /// The tenant (and the group, of that tenant) exist in the caller's scope; 404 otherwise.
    async fn check_policy_target(
        &self,
        who: &Principal,
        tenant: TenantId,
        group: Option<GroupId>,
    ) -> Result<(), CoreError> {
        self.store
            .get_tenant(who.scope(), tenant)
            .await?
            .ok_or(CoreError::NotFound)?;
        if let Some(g) = group {
            self.store
                .group_in_scope(who.scope(), g)
                .await?
                .filter(|g| g.tenant_id == tenant)
                .ok_or(CoreError::NotFound)?;
        }
        Ok(())
    }

    /// `GET /tenants/{id}/shared-ipad-compliance`: each enrolled device against its effective settings.
    pub async fn shared_ipad_compliance(
        &self,
        who: &Principal,
        tenant: TenantId,
    ) -> Result<SharedIpadComplianceReport, CoreError> {
        self.store
            .get_tenant(who.scope(), tenant)
            .await?
            .ok_or(CoreError::NotFound)?;
        let policies = self.store.shared_ipad_policies(who.scope(), tenant).await?;
        let states = self
            .store
            .shared_ipad_states_of_tenant(who.scope(), tenant)
            .await?;
        let ids: Vec<DeviceId> = states.iter().filter_map(|s| s.device_id).collect();
        let mut unit = self.store.begin_unit().await?;
        let memberships = unit.memberships_of(&ids).await?;
        unit.rollback().await?;
        let mut groups: HashMap<DeviceId, HashSet<GroupId>> = HashMap::new();
        for (d, g) in memberships {
            groups.entry(d).or_default().insert(g);
        }
        let no_groups = HashSet::new();
        let mut devices = Vec::with_capacity(states.len());
        for state in &states {
            let Some(device_id) = state.device_id else {
                continue;
            };
            let shared = is_shared_ipad(state);
            let wanted = shared
                .then(|| {
                    effective(
                        &policies,
                        tenant,
                        groups.get(&device_id).unwrap_or(&no_groups),
                    )
                })
                .flatten();
            let wanted_hash = wanted
                .as_ref()
                .map(|w| w.to_json().map(|j| SharedIpadSettings::digest(&j)))
                .transpose()?;
            let compliant = wanted_hash.is_some() && wanted_hash == state.applied_hash;
            let status = match (&wanted_hash, shared) {
                (_, false) => "not_shared_ipad",
                (None, true) => "no_policy",
                (Some(_), true) if compliant => "compliant",
                (Some(_), true) if state.pending_live => "pending",
                (Some(_), true) if state.last_error.is_some() => "error",
                (Some(_), true) => "pending",
            };
            devices.push(SharedIpadDeviceCompliance {
                device_id,
                shared_ipad: shared,
                status,
                compliant,
                wanted,
                applied: state
                    .applied_json
                    .as_deref()
                    .and_then(|j| serde_json::from_str(j).ok()),
                applied_at: state.applied_at.map(UnixTime::to_rfc3339),
                last_error: state.last_error.clone(),
            });
        }
        Ok(SharedIpadComplianceReport {
            shared_ipads: devices.iter().filter(|d| d.shared_ipad).count(),
            compliant: devices.iter().filter(|d| d.compliant).count(),
            devices,
        })
    }

    /// The reconciler's Shared iPad step, inside its pass's unit: each claimed Shared iPad whose effective
    /// settings differ from what it acknowledged (and that waits for no Settings command) gets one. Returns how
    /// many were queued.
    pub(crate) async fn reconcile_shared_ipads(
        &self,
        unit: &mut UnitOfWork,
        devices: &[&ReconcileDevice],
        tenants: &[TenantId],
        groups: &HashMap<DeviceId, HashSet<GroupId>>,
        now: UnixTime,
    ) -> Result<usize, CoreError> {
        let policies = unit.shared_ipad_policies_of_tenants(tenants).await?;
        if policies.is_empty() {
            return Ok(0);
        }
        let ids: Vec<DeviceId> = devices.iter().map(|d| d.id).collect();
        let states: HashMap<DeviceId, SharedIpadDeviceState> = unit
            .shared_ipad_states_of(&ids)
            .await?
            .into_iter()
            .filter_map(|s| Some((s.device_id?, s)))
            .collect();
        let no_groups = HashSet::new();
        let mut queued = 0;
        for device in devices {
            let Some(state) = states.get(&device.id).filter(|s| is_shared_ipad(s)) else {
                continue;
            };
            let Some(wanted) = effective(
                &policies,
                device.tenant_id,
                groups.get(&device.id).unwrap_or(&no_groups),
            ) else {
                continue;
            };
            let json = wanted.to_json()?;
            let hash = SharedIpadSettings::digest(&json);
            if state.applied_hash.as_deref() == Some(hash.as_str()) || state.pending_live {
                // Applied already, or a Settings command waits: its answer marks the device again.
                continue;
            }
            let dead = state.pending_command.as_deref();
            let channel = ChannelId::device(&device.udid);
            let command = self.new_command(
                &Command::Settings {
                    settings: vec![wanted.to_settings_item()],
                },
                CommandTarget {
                    device_id: device.id,
                    tenant_id: device.tenant_id,
                    channel: &channel,
                },
                QueuedBy::Reconciler,
                now,
            )?;
            if unit
                .queue_shared_ipad_settings(&command, &hash, &json, dead, now)
                .await?
            {
                queued += 1;
            }
        }
        Ok(queued)
    }

    /// Inside a report's unit: the answer to a Settings command (`refused`: the device's error when it did not
    /// acknowledge). When it was the pending Shared iPad settings command, an acknowledgement with every item
    /// acknowledged makes them applied and the device is compared again; an error is kept for the compliance
    /// view. Returns whether the device was marked again.
    pub(crate) async fn shared_ipad_settings_reported(
        &self,
        unit: &mut UnitOfWork,
        device: DeviceId,
        command: &str,
        refused: Option<String>,
        report: &CommandReport,
        now: UnixTime,
    ) -> Result<bool, CoreError> {
        let item_error = report
            .body
            .get("Settings")
            .and_then(plist::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(plist::Value::as_dictionary)
            .find(|item| {
                item.get("Status").and_then(plist::Value::as_string) != Some("Acknowledged")
            })
            .map(|item| {
                item.get("ErrorChain")
                    .and_then(plist::Value::as_array)
                    .and_then(|chain| chain.first())
                    .and_then(plist::Value::as_dictionary)
                    .and_then(|e| {
                        e.get("USEnglishDescription")
                            .or_else(|| e.get("LocalizedDescription"))
                    })
                    .and_then(plist::Value::as_string)
                    .unwrap_or("the device refused the setting")
                    .to_owned()
            });
        let error = refused.or(item_error);
        let recorded = unit
            .shared_ipad_settings_reported(device, command, error.as_deref(), now)
            .await?;
        if recorded && error.is_none() {
            unit.mark_devices_dirty(&[device], now).await?;
            return Ok(true);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_field_by_field() {
        let good = SharedIpadSettings {
            temporary_session_only: Some(true),
            temporary_session_timeout: Some(1800),
            user_session_timeout: Some(0),
            passcode_lock_grace_period: Some(300),
            auto_lock_time: Some(120),
            managed_apple_id_default_domains: Some(vec!["students.example.edu".into()]),
            ..SharedIpadSettings::default()
        };
        assert!(good.problems().is_empty(), "{:?}", good.problems());
        let bad = SharedIpadSettings {
            temporary_session_timeout: Some(10),
            passcode_lock_grace_period: Some(7),
            auto_lock_time: Some(5),
            resident_users: Some(0),
            managed_apple_id_default_domains: Some(vec!["not a domain".into()]),
            ..SharedIpadSettings::default()
        };
        let problems = bad.problems().join("\n");
        for field in [
            "temporary_session_timeout",
            "passcode_lock_grace_period",
            "auto_lock_time",
            "resident_users",
            "managed_apple_id_default_domains",
        ] {
            assert!(problems.contains(field), "{field}: {problems}");
        }
    }

    #[test]
    fn groups_override_the_tenant_key_by_key_in_name_order() {
        let tenant = TenantId::new();
        let (a, b) = (GroupId::new(), GroupId::new());
        let record = |group: Option<GroupId>, json: &str| SharedIpadPolicyRecord {
            tenant_id: tenant,
            group_id: group,
            group_name: None,
            settings_json: json.into(),
            revision: 1,
            updated_at: UnixTime(0),
            updated_by: None,
        };
        let policies = vec![
            record(
                None,
                r#"{"temporary_session_only":false,"quota_size":1024}"#,
            ),
            record(Some(a), r#"{"temporary_session_only":true}"#),
            record(Some(b), r#"{"quota_size":2048}"#),
        ];
        let none = effective(&policies, tenant, &HashSet::new()).unwrap_or_default();
        assert_eq!(none.temporary_session_only, Some(false));
        let both = effective(&policies, tenant, &HashSet::from([a, b])).unwrap_or_default();
        assert_eq!(both.temporary_session_only, Some(true));
        assert_eq!(both.quota_size, Some(2048));
        assert!(effective(&policies, TenantId::new(), &HashSet::new()).is_none());
    }
}
