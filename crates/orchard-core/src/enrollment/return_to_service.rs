//! Return to Service (iOS 17+): an EraseDevice whose ReturnToService asks the device to come back by itself
//! after the erase. Orchard supplies the MDMProfileData — a fresh enrollment profile whose one-time SCEP
//! challenge is bound to that device and its tenant (purpose `return_to_service`) — so the erased iPad enrolls
//! anew into the same device record (same `DeviceId`, tenant and history); the tenant may add a Wi-Fi profile.
//! Apple requires Activation Lock to be off, so Orchard refuses before queueing when the device's last
//! inventory says it is on (or does not say).

use orchard_protocol::commands::{Command, ReturnToService};
use orchard_store::{Device, DeviceGrantPurpose, Scope};

use crate::{CoreError, Orchard};

/// How long the Return to Service challenge stays usable: the erase may wait in the queue while the device is
/// away, and the device enrolls within minutes of the erase.
const RETURN_TO_SERVICE_CHALLENGE_SECONDS: i64 = 30 * 86_400;

/// The inventory keys that say Activation Lock (or Find My, which turns it on) is enabled.
const ACTIVATION_LOCK_KEYS: &[&str] = &[
    "IsActivationLockEnabled",
    "is_activation_lock_enabled",
    "IsDeviceLocatorServiceEnabled",
    "is_device_locator_service_enabled",
];

impl Orchard {
    /// An EraseDevice with ReturnToService enabled gets Orchard's enrollment profile for the device; every
    /// other command is returned unchanged.
    pub(crate) async fn prepare_return_to_service(
        &self,
        scope: Scope,
        device: &Device,
        command: Command,
    ) -> Result<Command, CoreError> {
        let Command::EraseDevice {
            preserve_data_plan,
            disallow_proximity_setup,
            return_to_service: Some(rts),
        } = command
        else {
            return Ok(command);
        };
        if !rts.enabled {
            return Ok(Command::EraseDevice {
                preserve_data_plan,
                disallow_proximity_setup,
                return_to_service: Some(rts),
            });
        }
        if rts.mdm_profile_data.is_some() {
            // Another MDM's profile would hand the device to whoever made it.
            return Err(CoreError::Invalid(
                "return_to_service.mdm_profile_data is made by Orchard: leave it out".into(),
            ));
        }
        self.check_activation_lock_off(scope, device).await?;
        let issued = match &device.cert_fingerprint {
            Some(fp) => self.store.find_issued_certificate(fp).await?,
            None => None,
        };
        let link_id = issued.and_then(|c| c.link_id).ok_or_else(|| {
            CoreError::Conflict(
                "the device has no enrollment Orchard could return it to service with".into(),
            )
        })?;
        let now = self.clock.now();
        let profile = self
            .device_enrollment_profile(
                device.id,
                device.tenant_id,
                link_id,
                DeviceGrantPurpose::ReturnToService,
                now.plus_seconds(RETURN_TO_SERVICE_CHALLENGE_SECONDS),
            )
            .await?;
        tracing::info!(device = %device.id, tenant = %device.tenant_id, wifi = rts.wifi_profile_data.is_some(), "return to service: enrollment profile minted for the erase");
        Ok(Command::EraseDevice {
            preserve_data_plan,
            disallow_proximity_setup,
            return_to_service: Some(ReturnToService {
                enabled: true,
                wifi_profile_data: rts.wifi_profile_data,
                mdm_profile_data: Some(profile),
            }),
        })
    }

    /// Refuses (409) unless the device's last DeviceInformation says Activation Lock and Find My are off.
    async fn check_activation_lock_off(
        &self,
        scope: Scope,
        device: &Device,
    ) -> Result<(), CoreError> {
        let info = self
            .store
            .get_inventory(scope, device.id)
            .await?
            .into_iter()
            .find(|s| s.section == "device_information")
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s.json).ok());
        let flags: Vec<bool> = info
            .as_ref()
            .map(|v| {
                ACTIVATION_LOCK_KEYS
                    .iter()
                    .filter_map(|k| find_bool(v, k))
                    .collect()
            })
            .unwrap_or_default();
        if flags.is_empty() {
            return Err(CoreError::Conflict(
                "return to service needs Activation Lock off, and the device has not reported it yet: \
                 query DeviceInformation (IsActivationLockEnabled) first"
                    .into(),
            ));
        }
        if flags.iter().any(|on| *on) {
            return Err(CoreError::Conflict(
                "return to service needs Activation Lock off: the device reports Activation Lock (or Find My) \
                 enabled; clear it first (POST /devices/{id}/activation-lock/clear)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The boolean under `key` anywhere in `value` (inventory sections nest Apple's dictionaries).
fn find_bool(value: &serde_json::Value, key: &str) -> Option<bool> {
    match value {
        serde_json::Value::Object(map) => map
            .get(key)
            .and_then(serde_json::Value::as_bool)
            .or_else(|| map.values().find_map(|v| find_bool(v, key))),
        serde_json::Value::Array(items) => items.iter().find_map(|v| find_bool(v, key)),
        _ => None,
    }
}
