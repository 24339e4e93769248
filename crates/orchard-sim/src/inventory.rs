//! What the iPad reports about itself: the result payloads of inventory commands, built with
//! `orchard_protocol::results` types from the device state and serialized with `plist::to_value`.

use std::collections::BTreeMap;

use orchard_protocol::results::{
    AvailableOsUpdate, CertificateListItem, DeviceInformation, InstalledApplication,
    ManagedApplicationStatus, ManagementStatus, MdmOptions, OrganizationInfo, OsUpdateStatusItem,
    ProfileListItem, ProfilePayloadItem, SecurityInfo, SharedUser,
};
use orchard_types::UnixTime;
use plist::{Dictionary, Value};
use serde::Serialize;

use crate::handler::{
    access, OFFERED_UPDATE_BUILD, OFFERED_UPDATE_PRODUCT_KEY, OFFERED_UPDATE_VERSION,
};
use crate::profile::common_name;
use crate::state::{DeviceState, InstalledProfile, LostMode};

/// Queries that reveal network addresses: answered only with the network-information access right.
const NETWORK_QUERIES: [&str; 3] = ["WiFiMAC", "BluetoothMAC", "EthernetMAC"];

/// Serializes a result type; our own types always serialize, so failure degrades to an empty value
/// rather than a panic.
fn to_value<T: Serialize>(value: &T) -> Value {
    plist::to_value(value).unwrap_or_else(|_| Value::Dictionary(Dictionary::new()))
}

/// `QueryResponses`: exactly the requested queries the device knows (unknown queries are ignored, as on an
/// iPad).
pub(crate) fn query_responses(state: &DeviceState, queries: &[String]) -> Dictionary {
    let all = to_value(&device_information(state));
    let Value::Dictionary(all) = all else {
        return Dictionary::new();
    };
    let network_allowed =
        state.access_rights == 0 || state.access_rights & access::NETWORK_INFORMATION != 0;
    let mut answer = Dictionary::new();
    for query in queries {
        if NETWORK_QUERIES.contains(&query.as_str()) && !network_allowed {
            continue;
        }
        if let Some(value) = all.get(query) {
            answer.insert(query.clone(), value.clone());
        }
    }
    answer
}

/// Everything this iPad can answer in DeviceInformation.
fn device_information(state: &DeviceState) -> DeviceInformation {
    let shared = state.shared_ipad;
    DeviceInformation {
        udid: Some(state.udid.clone()),
        serial_number: Some(state.serial_number.clone()),
        device_name: Some(state.device_name.clone()),
        os_version: Some(state.os_version.clone()),
        build_version: Some(state.build_version.clone()),
        product_name: Some(state.product_name.clone()),
        model: Some(state.model.clone()),
        model_name: Some(state.model_name.clone()),
        model_number: Some(
            state
                .model
                .split('/')
                .next()
                .unwrap_or_default()
                .chars()
                .take(5)
                .collect(),
        ),
        device_capacity: Some(state.device_capacity),
        available_device_capacity: Some(state.available_device_capacity),
        battery_level: Some(state.battery_level),
        has_battery: Some(true),
        is_supervised: Some(state.supervised),
        is_multi_user: Some(shared),
        is_mdm_lost_mode_enabled: Some(state.lost_mode.is_some()),
        awaiting_configuration: Some(state.awaiting_configuration),
        is_activation_lock_enabled: Some(state.activation_lock_enabled),
        is_activation_lock_supported: Some(true),
        is_device_locator_service_enabled: Some(state.activation_lock_enabled),
        is_do_not_disturb_in_effect: Some(false),
        is_cloud_backup_enabled: Some(false),
        itunes_store_account_is_active: Some(false),
        wifi_mac: Some(state.wifi_mac.clone()),
        bluetooth_mac: Some(state.bluetooth_mac.clone()),
        time_zone: Some(
            state
                .time_zone
                .clone()
                .unwrap_or_else(|| "Europe/Zurich".to_owned()),
        ),
        eas_device_identifier: Some(state.serial_number.chars().rev().collect()),
        push_token: (!state.push_token.is_empty()).then(|| state.push_token.clone().into()),
        diagnostic_submission_enabled: Some(false),
        app_analytics_enabled: Some(false),
        software_update_device_id: Some(crate::ade::SOFTWARE_UPDATE_DEVICE_ID.to_owned()),
        organization_info: match (&state.organization_info, &state.organization_name) {
            (Some(info), _) => Some(OrganizationInfo {
                organization_name: Some(info.name.clone()),
                organization_address: info.address.clone(),
                organization_phone: info.phone.clone(),
                organization_email: info.email.clone(),
                organization_magic: info.magic.clone(),
            }),
            (None, Some(name)) => Some(OrganizationInfo {
                organization_name: Some(name.clone()),
                ..OrganizationInfo::default()
            }),
            (None, None) => None,
        },
        mdm_options: Some(MdmOptions {
            activation_lock_allowed_while_supervised: Some(false),
            ..MdmOptions::default()
        }),
        // Shared iPad facts exist only in that mode.
        quota_size: shared.then_some(4096),
        resident_users: shared
            .then_some(i64::try_from(state.shared_users.len()).unwrap_or(i64::MAX)),
        estimated_resident_users: shared.then_some(10),
        maximum_resident_users: shared.then_some(10),
        active_managed_users: shared.then(|| {
            state
                .shared_users
                .iter()
                .filter(|u| u.is_logged_in)
                .map(|u| u.user_name.clone())
                .collect()
        }),
        ..DeviceInformation::default()
    }
}

/// `SecurityInfo`.
pub(crate) fn security_info(state: &DeviceState) -> Value {
    to_value(&SecurityInfo {
        // 1 = block-level, 2 = file-level encryption: every iPad has both.
        hardware_encryption_caps: Some(3),
        passcode_present: Some(state.passcode_present),
        passcode_compliant: Some(true),
        passcode_compliant_with_profiles: Some(true),
        passcode_lock_grace_period_enforced: state.passcode_present.then_some(0),
        auto_lock_time: state.shared_ipad.then_some(120),
        management_status: Some(ManagementStatus {
            enrolled_via_dep: Some(state.supervised),
            is_user_enrollment: Some(false),
            is_activation_lock_manageable: Some(state.supervised),
            ..ManagementStatus::default()
        }),
        ..SecurityInfo::default()
    })
}

/// `InstalledApplicationList`, optionally filtered.
pub(crate) fn installed_applications(
    state: &DeviceState,
    identifiers: Option<&[String]>,
    managed_only: bool,
) -> Value {
    let items: Vec<InstalledApplication> = state
        .installed_apps
        .iter()
        .filter(|app| !managed_only || app.managed)
        .filter(|app| identifiers.is_none_or(|ids| ids.contains(&app.identifier)))
        .map(|app| InstalledApplication {
            identifier: Some(app.identifier.clone()),
            name: Some(app.name.clone()),
            version: Some(app.version.clone()),
            short_version: Some(app.short_version.clone()),
            bundle_size: Some(app.bundle_size),
            dynamic_size: Some(app.dynamic_size),
            external_version_identifier: app.itunes_store_id.map(|_| 866_183_093),
            is_validated: Some(false),
            installing: Some(false),
            app_store_vendable: Some(app.itunes_store_id.is_some() || !app.managed),
            device_based_vpp: Some(app.device_based_vpp),
            beta_app: Some(false),
            ad_hoc_code_signed: Some(false),
            has_update_available: Some(false),
            download_failed: Some(false),
            download_waiting: Some(false),
            download_paused: Some(false),
            download_cancelled: Some(false),
            is_app_clip: Some(false),
            ..InstalledApplication::default()
        })
        .collect();
    to_value(&items)
}

fn profile_item(profile: &InstalledProfile) -> ProfileListItem {
    ProfileListItem {
        payload_uuid: Some(profile.uuid.clone()),
        payload_identifier: Some(profile.identifier.clone()),
        payload_version: Some(profile.version),
        payload_display_name: profile.display_name.clone(),
        payload_organization: profile.organization.clone(),
        payload_description: profile.description.clone(),
        payload_removal_disallowed: Some(profile.removal_disallowed),
        has_removal_passcode: Some(false),
        is_encrypted: Some(false),
        is_managed: Some(profile.managed),
        signer_certificates: (!profile.signer_certificates.is_empty()).then(|| {
            profile
                .signer_certificates
                .iter()
                .map(|der| der.clone().into())
                .collect()
        }),
        payload_content: Some(
            profile
                .payloads
                .iter()
                .map(|p| ProfilePayloadItem {
                    payload_type: Some(p.payload_type.clone()),
                    payload_version: Some(p.version),
                    payload_identifier: Some(p.identifier.clone()),
                    payload_uuid: Some(p.uuid.clone()),
                    payload_display_name: p.display_name.clone(),
                    ..ProfilePayloadItem::default()
                })
                .collect(),
        ),
        ..ProfileListItem::default()
    }
}

/// `ProfileList`: the enrollment profile first, then the profiles MDM installed.
pub(crate) fn profile_list(state: &DeviceState, managed_only: bool) -> Value {
    let items: Vec<ProfileListItem> = state
        .enrollment_profile
        .iter()
        .chain(state.installed_profiles.iter())
        .filter(|p| !managed_only || p.managed)
        .map(profile_item)
        .collect();
    to_value(&items)
}

/// `CertificateList`: the device identity, and every certificate payload of installed profiles.
pub(crate) fn certificate_list(state: &DeviceState, managed_only: bool) -> Value {
    let mut items = Vec::new();
    if !managed_only {
        if let Some(der) = state
            .identity_cert_pem
            .as_deref()
            .and_then(|pem| openssl::x509::X509::from_pem(pem.as_bytes()).ok())
            .and_then(|cert| cert.to_der().ok())
        {
            items.push(CertificateListItem {
                common_name: common_name(&der),
                is_identity: Some(true),
                data: Some(der.into()),
            });
        }
    }
    for profile in state
        .enrollment_profile
        .iter()
        .chain(state.installed_profiles.iter())
        .filter(|p| !managed_only || p.managed)
    {
        for der in profile
            .payloads
            .iter()
            .filter_map(|p| p.certificate_der.as_ref())
        {
            items.push(CertificateListItem {
                common_name: common_name(der),
                is_identity: Some(false),
                data: Some(der.clone().into()),
            });
        }
    }
    to_value(&items)
}

/// `DeviceLocation`: top-level report keys.
pub(crate) fn device_location(lost: &LostMode, now: UnixTime) -> Dictionary {
    let location = orchard_protocol::results::DeviceLocation {
        latitude: Some(lost.latitude),
        longitude: Some(lost.longitude),
        horizontal_accuracy: Some(65.0),
        vertical_accuracy: Some(10.0),
        altitude: Some(408.0),
        speed: Some(0.0),
        course: Some(-1.0),
        timestamp: Some(now.to_rfc3339()),
    };
    match to_value(&location) {
        Value::Dictionary(d) => d,
        _ => Dictionary::new(),
    }
}

/// `Users` of a Shared iPad.
pub(crate) fn user_list(state: &DeviceState) -> Value {
    let users: Vec<SharedUser> = state
        .shared_users
        .iter()
        .map(|u| SharedUser {
            user_name: Some(u.user_name.clone()),
            full_name: u.full_name.clone(),
            is_logged_in: Some(u.is_logged_in),
            has_data_to_sync: Some(u.has_data_to_sync),
            data_quota: Some(u.data_quota),
            data_used: Some(u.data_used),
            ..SharedUser::default()
        })
        .collect();
    to_value(&users)
}

/// The update Apple would offer this device, if it runs something older.
pub(crate) struct OfferedUpdate {
    pub product_key: String,
    pub version: String,
    pub build: String,
}

pub(crate) fn offered_update(state: &DeviceState) -> Option<OfferedUpdate> {
    (version_key(&state.os_version) < version_key(OFFERED_UPDATE_VERSION)).then(|| OfferedUpdate {
        product_key: OFFERED_UPDATE_PRODUCT_KEY.to_owned(),
        version: OFFERED_UPDATE_VERSION.to_owned(),
        build: OFFERED_UPDATE_BUILD.to_owned(),
    })
}

/// "18.1.2" → [18, 1, 2] for ordering; unreadable parts count as 0.
fn version_key(version: &str) -> Vec<u32> {
    version
        .split('.')
        .map(|part| part.parse().unwrap_or(0))
        .collect()
}

/// `AvailableOSUpdates`.
pub(crate) fn available_os_updates(state: &DeviceState) -> Value {
    let updates: Vec<AvailableOsUpdate> = offered_update(state)
        .into_iter()
        .map(|offer| AvailableOsUpdate {
            human_readable_name: Some(format!("iPadOS {}", offer.version)),
            product_name: Some(format!("iPadOS {}", offer.version)),
            product_key: Some(offer.product_key),
            version: Some(offer.version),
            build: Some(offer.build),
            download_size: Some(1_284_325_376),
            install_size: Some(4_613_734_400),
            is_critical: Some(false),
            is_config_data_update: Some(false),
            is_firmware_update: Some(false),
            is_major_os_update: Some(false),
            restart_required: Some(true),
            allows_install_later: Some(true),
            is_security_response: Some(false),
            ..AvailableOsUpdate::default()
        })
        .collect();
    to_value(&updates)
}

/// `OSUpdateStatus`: the scheduled update, if any.
pub(crate) fn os_update_status(state: &DeviceState) -> Value {
    let items: Vec<OsUpdateStatusItem> = state
        .scheduled_os_update
        .iter()
        .map(|update| {
            let status = match update.install_action.as_str() {
                "DownloadOnly" | "NotifyOnly" | "InstallLater" => "Idle",
                _ => "Installing",
            };
            OsUpdateStatusItem {
                product_key: Some(update.product_key.clone()),
                is_downloaded: Some(true),
                download_percent_complete: Some(1.0),
                status: Some(status.to_owned()),
                ..OsUpdateStatusItem::default()
            }
        })
        .collect();
    to_value(&items)
}

/// `ManagedApplicationList`: the managed apps, optionally filtered.
pub(crate) fn managed_application_list(
    state: &DeviceState,
    identifiers: Option<&[String]>,
) -> Value {
    let apps: BTreeMap<String, ManagedApplicationStatus> = state
        .installed_apps
        .iter()
        .filter(|app| app.managed)
        .filter(|app| identifiers.is_none_or(|ids| ids.contains(&app.identifier)))
        .map(|app| {
            (
                app.identifier.clone(),
                ManagedApplicationStatus {
                    status: Some("Managed".to_owned()),
                    management_flags: Some(app.management_flags),
                    has_configuration: Some(app.has_configuration),
                    has_feedback: Some(false),
                    is_validated: Some(false),
                    external_version_identifier: app.itunes_store_id.map(|_| 866_183_093),
                    ..ManagedApplicationStatus::default()
                },
            )
        })
        .collect();
    to_value(&apps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically() {
        assert!(version_key("18.1") < version_key("18.2"));
        assert!(version_key("18.1.1") < version_key("18.2"));
        assert!(version_key("9.3") < version_key("18.2"));
        assert!(version_key("18.2") >= version_key("18.2"));
    }
}
