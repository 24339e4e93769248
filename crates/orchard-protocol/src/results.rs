//! Typed command results, read from an acknowledged [`CommandReport`]'s body (server) or serialized into one
//! with `plist::to_value` (simulator). Serde names are Apple's keys from each command YAML's `responsekeys`.
//!
//! Every field is optional and read leniently: a key a device leaves out, or sends with an unexpected type,
//! becomes `None` instead of failing the whole inventory; unknown extra keys are ignored.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::report::{CommandReport, ErrorChainItem, ReportStatus};
use crate::ProtocolError;

/// Reads a field through a generic plist value, so a type mismatch yields `None` for that field only.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = plist::Value::deserialize(deserializer)?;
    Ok(plist::from_value(&value).ok())
}

/// Declares a result struct whose fields are all `Option`, each renamed to its Apple key, read leniently and
/// left out when `None`; `APPLE_KEYS` lists the keys for the YAML conformance test.
macro_rules! apple_struct {
    ($(#[$meta:meta])* $name:ident { $($(#[$field_meta:meta])* $field:ident: $ty:ty = $key:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
        pub struct $name {
            $(
                $(#[$field_meta])*
                #[serde(rename = $key, default, deserialize_with = "lenient", skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl $name {
            /// Apple's key names of this type's fields.
            pub const APPLE_KEYS: &'static [&'static str] = &[$($key),*];
        }
    };
}

apple_struct!(
    /// `QueryResponses.OrganizationInfo`.
    OrganizationInfo {
        organization_name: String = "OrganizationName",
        organization_address: String = "OrganizationAddress",
        organization_phone: String = "OrganizationPhone",
        organization_email: String = "OrganizationEmail",
        organization_magic: String = "OrganizationMagic",
    }
);

apple_struct!(
    /// `QueryResponses.MDMOptions`.
    MdmOptions {
        activation_lock_allowed_while_supervised: bool = "ActivationLockAllowedWhileSupervised",
        bootstrap_token_allowed: bool = "BootstrapTokenAllowed",
        prompt_user_to_allow_bootstrap_token_for_authentication: bool = "PromptUserToAllowBootstrapTokenForAuthentication",
    }
);

apple_struct!(
    /// `DeviceInformation` → `QueryResponses`: the answers to the queries an iPad supports.
    DeviceInformation {
        udid: String = "UDID",
        serial_number: String = "SerialNumber",
        device_name: String = "DeviceName",
        os_version: String = "OSVersion",
        build_version: String = "BuildVersion",
        supplemental_build_version: String = "SupplementalBuildVersion",
        supplemental_os_version_extra: String = "SupplementalOSVersionExtra",
        product_name: String = "ProductName",
        model: String = "Model",
        model_name: String = "ModelName",
        model_number: String = "ModelNumber",
        device_capacity: f64 = "DeviceCapacity",
        available_device_capacity: f64 = "AvailableDeviceCapacity",
        battery_level: f64 = "BatteryLevel",
        has_battery: bool = "HasBattery",
        is_supervised: bool = "IsSupervised",
        is_multi_user: bool = "IsMultiUser",
        is_mdm_lost_mode_enabled: bool = "IsMDMLostModeEnabled",
        awaiting_configuration: bool = "AwaitingConfiguration",
        is_activation_lock_enabled: bool = "IsActivationLockEnabled",
        is_activation_lock_supported: bool = "IsActivationLockSupported",
        is_device_locator_service_enabled: bool = "IsDeviceLocatorServiceEnabled",
        is_do_not_disturb_in_effect: bool = "IsDoNotDisturbInEffect",
        is_cloud_backup_enabled: bool = "IsCloudBackupEnabled",
        last_cloud_backup_date: plist::Date = "LastCloudBackupDate",
        itunes_store_account_is_active: bool = "iTunesStoreAccountIsActive",
        itunes_store_account_hash: String = "iTunesStoreAccountHash",
        wifi_mac: String = "WiFiMAC",
        bluetooth_mac: String = "BluetoothMAC",
        ethernet_mac: String = "EthernetMAC",
        imei: String = "IMEI",
        meid: String = "MEID",
        iccid: String = "ICCID",
        modem_firmware_version: String = "ModemFirmwareVersion",
        cellular_technology: i64 = "CellularTechnology",
        phone_number: String = "PhoneNumber",
        current_carrier_network: String = "CurrentCarrierNetwork",
        sim_carrier_network: String = "SIMCarrierNetwork",
        subscriber_carrier_network: String = "SubscriberCarrierNetwork",
        carrier_settings_version: String = "CarrierSettingsVersion",
        data_roaming_enabled: bool = "DataRoamingEnabled",
        voice_roaming_enabled: bool = "VoiceRoamingEnabled",
        personal_hotspot_enabled: bool = "PersonalHotspotEnabled",
        is_roaming: bool = "IsRoaming",
        time_zone: String = "TimeZone",
        device_id: String = "DeviceID",
        eas_device_identifier: String = "EASDeviceIdentifier",
        provisioning_udid: String = "ProvisioningUDID",
        host_name: String = "HostName",
        local_host_name: String = "LocalHostName",
        maximum_resident_users: i64 = "MaximumResidentUsers",
        estimated_resident_users: i64 = "EstimatedResidentUsers",
        quota_size: i64 = "QuotaSize",
        resident_users: i64 = "ResidentUsers",
        user_session_timeout: i64 = "UserSessionTimeout",
        temporary_session_timeout: i64 = "TemporarySessionTimeout",
        temporary_session_only: bool = "TemporarySessionOnly",
        managed_apple_id_default_domains: Vec<String> = "ManagedAppleIDDefaultDomains",
        online_authentication_grace_period: i64 = "OnlineAuthenticationGracePeriod",
        skip_language_and_locale_setup_for_new_users: bool = "SkipLanguageAndLocaleSetupForNewUsers",
        active_managed_users: Vec<String> = "ActiveManagedUsers",
        push_token: plist::Data = "PushToken",
        diagnostic_submission_enabled: bool = "DiagnosticSubmissionEnabled",
        app_analytics_enabled: bool = "AppAnalyticsEnabled",
        software_update_device_id: String = "SoftwareUpdateDeviceID",
        supports_ios_app_installs: bool = "SupportsiOSAppInstalls",
        organization_info: OrganizationInfo = "OrganizationInfo",
        mdm_options: MdmOptions = "MDMOptions",
    }
);

apple_struct!(
    /// `SecurityInfo.ManagementStatus`.
    ManagementStatus {
        enrolled_via_dep: bool = "EnrolledViaDEP",
        user_approved_enrollment: bool = "UserApprovedEnrollment",
        is_user_enrollment: bool = "IsUserEnrollment",
        is_activation_lock_manageable: bool = "IsActivationLockManageable",
    }
);

apple_struct!(
    /// `SecurityInfo` → `SecurityInfo`.
    SecurityInfo {
        hardware_encryption_caps: i64 = "HardwareEncryptionCaps",
        passcode_present: bool = "PasscodePresent",
        passcode_compliant: bool = "PasscodeCompliant",
        passcode_compliant_with_profiles: bool = "PasscodeCompliantWithProfiles",
        passcode_lock_grace_period: i64 = "PasscodeLockGracePeriod",
        passcode_lock_grace_period_enforced: i64 = "PasscodeLockGracePeriodEnforced",
        auto_lock_time: i64 = "AutoLockTime",
        management_status: ManagementStatus = "ManagementStatus",
        fde_enabled: bool = "FDE_Enabled",
        system_integrity_protection_enabled: bool = "SystemIntegrityProtectionEnabled",
        is_recovery_lock_enabled: bool = "IsRecoveryLockEnabled",
    }
);

apple_struct!(
    /// `InstalledApplicationList` → `InstalledApplicationList[]`.
    InstalledApplication {
        identifier: String = "Identifier",
        name: String = "Name",
        version: String = "Version",
        short_version: String = "ShortVersion",
        external_version_identifier: i64 = "ExternalVersionIdentifier",
        distributor_identifier: String = "DistributorIdentifier",
        bundle_size: i64 = "BundleSize",
        dynamic_size: i64 = "DynamicSize",
        is_validated: bool = "IsValidated",
        installing: bool = "Installing",
        app_store_vendable: bool = "AppStoreVendable",
        device_based_vpp: bool = "DeviceBasedVPP",
        beta_app: bool = "BetaApp",
        ad_hoc_code_signed: bool = "AdHocCodeSigned",
        has_update_available: bool = "HasUpdateAvailable",
        download_failed: bool = "DownloadFailed",
        download_waiting: bool = "DownloadWaiting",
        download_paused: bool = "DownloadPaused",
        download_cancelled: bool = "DownloadCancelled",
        is_app_clip: bool = "IsAppClip",
        source: String = "Source",
    }
);

apple_struct!(
    /// `ProfileList[].PayloadContent[]`.
    ProfilePayloadItem {
        payload_type: String = "PayloadType",
        payload_version: i64 = "PayloadVersion",
        payload_identifier: String = "PayloadIdentifier",
        payload_uuid: String = "PayloadUUID",
        payload_display_name: String = "PayloadDisplayName",
        payload_description: String = "PayloadDescription",
        payload_organization: String = "PayloadOrganization",
    }
);

apple_struct!(
    /// `ProfileList` → `ProfileList[]`.
    ProfileListItem {
        payload_uuid: String = "PayloadUUID",
        payload_identifier: String = "PayloadIdentifier",
        payload_version: i64 = "PayloadVersion",
        payload_display_name: String = "PayloadDisplayName",
        payload_organization: String = "PayloadOrganization",
        payload_description: String = "PayloadDescription",
        payload_removal_disallowed: bool = "PayloadRemovalDisallowed",
        has_removal_passcode: bool = "HasRemovalPasscode",
        is_encrypted: bool = "IsEncrypted",
        is_managed: bool = "IsManaged",
        source: String = "Source",
        signer_certificates: Vec<plist::Data> = "SignerCertificates",
        payload_content: Vec<ProfilePayloadItem> = "PayloadContent",
    }
);

apple_struct!(
    /// `CertificateList` → `CertificateList[]`.
    CertificateListItem {
        common_name: String = "CommonName",
        is_identity: bool = "IsIdentity",
        /// The certificate (DER).
        data: plist::Data = "Data",
    }
);

apple_struct!(
    /// `DeviceLocation`: keys at the top level of the report.
    DeviceLocation {
        latitude: f64 = "Latitude",
        longitude: f64 = "Longitude",
        horizontal_accuracy: f64 = "HorizontalAccuracy",
        vertical_accuracy: f64 = "VerticalAccuracy",
        altitude: f64 = "Altitude",
        speed: f64 = "Speed",
        course: f64 = "Course",
        timestamp: String = "Timestamp",
    }
);

apple_struct!(
    /// `UserList` → `Users[]` (Shared iPad).
    SharedUser {
        user_name: String = "UserName",
        full_name: String = "FullName",
        uid: i64 = "UID",
        user_guid: String = "UserGUID",
        is_logged_in: bool = "IsLoggedIn",
        has_data_to_sync: bool = "HasDataToSync",
        data_quota: i64 = "DataQuota",
        data_used: i64 = "DataUsed",
        mobile_account: bool = "MobileAccount",
        has_secure_token: bool = "HasSecureToken",
    }
);

apple_struct!(
    /// `AvailableOSUpdates` → `AvailableOSUpdates[]`.
    AvailableOsUpdate {
        product_key: String = "ProductKey",
        human_readable_name: String = "HumanReadableName",
        human_readable_name_locale: String = "HumanReadableNameLocale",
        metadata_url: String = "MetadataURL",
        product_name: String = "ProductName",
        version: String = "Version",
        build: String = "Build",
        download_size: i64 = "DownloadSize",
        install_size: i64 = "InstallSize",
        app_identifiers_to_close: Vec<String> = "AppIdentifiersToClose",
        is_critical: bool = "IsCritical",
        is_config_data_update: bool = "IsConfigDataUpdate",
        is_firmware_update: bool = "IsFirmwareUpdate",
        is_major_os_update: bool = "IsMajorOSUpdate",
        restart_required: bool = "RestartRequired",
        allows_install_later: bool = "AllowsInstallLater",
        deferred_until: plist::Date = "DeferredUntil",
        requires_bootstrap_token: bool = "RequiresBootstrapToken",
        is_security_response: bool = "IsSecurityResponse",
        supplemental_build_version: String = "SupplementalBuildVersion",
        supplemental_os_version_extra: String = "SupplementalOSVersionExtra",
    }
);

apple_struct!(
    /// `ScheduleOSUpdate` → `UpdateResults[]`.
    OsUpdateResult {
        product_key: String = "ProductKey",
        install_action: String = "InstallAction",
        status: String = "Status",
        error_chain: Vec<ErrorChainItem> = "ErrorChain",
    }
);

apple_struct!(
    /// `OSUpdateStatus` → `OSUpdateStatus[]`.
    OsUpdateStatusItem {
        product_key: String = "ProductKey",
        is_downloaded: bool = "IsDownloaded",
        download_percent_complete: f64 = "DownloadPercentComplete",
        status: String = "Status",
        max_deferrals: i64 = "MaxDeferrals",
        deferrals_remaining: i64 = "DeferralsRemaining",
        next_scheduled_install: plist::Date = "NextScheduledInstall",
        past_notifications: Vec<plist::Date> = "PastNotifications",
    }
);

apple_struct!(
    /// `ManagedApplicationList` → `ManagedApplicationList.<bundle id>`.
    ManagedApplicationStatus {
        status: String = "Status",
        management_flags: i64 = "ManagementFlags",
        unused_redemption_code: String = "UnusedRedemptionCode",
        has_configuration: bool = "HasConfiguration",
        has_feedback: bool = "HasFeedback",
        is_validated: bool = "IsValidated",
        external_version_identifier: i64 = "ExternalVersionIdentifier",
    }
);

/// The typed result of one acknowledged command.
// DeviceInformation dwarfs the other variants; results are parsed once per report and dropped, so the size
// does not matter and the variants stay plain (contract API).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum CommandResult {
    DeviceInformation(DeviceInformation),
    SecurityInfo(SecurityInfo),
    InstalledApplicationList(Vec<InstalledApplication>),
    ProfileList(Vec<ProfileListItem>),
    CertificateList(Vec<CertificateListItem>),
    DeviceLocation(DeviceLocation),
    ActivationLockBypassCode(Option<String>),
    UserList(Vec<SharedUser>),
    AvailableOSUpdates(Vec<AvailableOsUpdate>),
    ScheduleOSUpdate(Vec<OsUpdateResult>),
    OSUpdateStatus(Vec<OsUpdateStatusItem>),
    ManagedApplicationList(BTreeMap<String, ManagedApplicationStatus>),
    /// Commands whose acknowledgement carries nothing (and reports that are not `Acknowledged`).
    Empty,
}

impl CommandResult {
    /// The variant name (= the request type, or `Empty`).
    pub fn kind(&self) -> &'static str {
        match self {
            CommandResult::DeviceInformation(_) => "DeviceInformation",
            CommandResult::SecurityInfo(_) => "SecurityInfo",
            CommandResult::InstalledApplicationList(_) => "InstalledApplicationList",
            CommandResult::ProfileList(_) => "ProfileList",
            CommandResult::CertificateList(_) => "CertificateList",
            CommandResult::DeviceLocation(_) => "DeviceLocation",
            CommandResult::ActivationLockBypassCode(_) => "ActivationLockBypassCode",
            CommandResult::UserList(_) => "UserList",
            CommandResult::AvailableOSUpdates(_) => "AvailableOSUpdates",
            CommandResult::ScheduleOSUpdate(_) => "ScheduleOSUpdate",
            CommandResult::OSUpdateStatus(_) => "OSUpdateStatus",
            CommandResult::ManagedApplicationList(_) => "ManagedApplicationList",
            CommandResult::Empty => "Empty",
        }
    }

    /// The payload as a plist value with Apple's keys (`None` for `Empty`).
    fn payload_value(&self) -> Result<Option<plist::Value>, plist::Error> {
        Ok(Some(match self {
            CommandResult::DeviceInformation(v) => plist::to_value(v)?,
            CommandResult::SecurityInfo(v) => plist::to_value(v)?,
            CommandResult::InstalledApplicationList(v) => plist::to_value(v)?,
            CommandResult::ProfileList(v) => plist::to_value(v)?,
            CommandResult::CertificateList(v) => plist::to_value(v)?,
            CommandResult::DeviceLocation(v) => plist::to_value(v)?,
            CommandResult::ActivationLockBypassCode(Some(code)) => {
                plist::Value::String(code.clone())
            }
            CommandResult::ActivationLockBypassCode(None) | CommandResult::Empty => {
                return Ok(None)
            }
            CommandResult::UserList(v) => plist::to_value(v)?,
            CommandResult::AvailableOSUpdates(v) => plist::to_value(v)?,
            CommandResult::ScheduleOSUpdate(v) => plist::to_value(v)?,
            CommandResult::OSUpdateStatus(v) => plist::to_value(v)?,
            CommandResult::ManagedApplicationList(v) => plist::to_value(v)?,
        }))
    }
}

/// Turns a plist value into JSON for the API: data as base64 strings, dates as RFC 3339 strings,
/// non-finite reals as null.
pub fn plist_to_json(value: &plist::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        plist::Value::Array(items) => J::Array(items.iter().map(plist_to_json).collect()),
        plist::Value::Dictionary(d) => J::Object(
            d.iter()
                .map(|(k, v)| (k.clone(), plist_to_json(v)))
                .collect(),
        ),
        plist::Value::Boolean(b) => J::Bool(*b),
        plist::Value::Data(bytes) => J::String(STANDARD.encode(bytes)),
        plist::Value::Date(date) => J::String(date.to_xml_format()),
        plist::Value::Real(r) => serde_json::Number::from_f64(*r).map_or(J::Null, J::Number),
        plist::Value::Integer(i) => match (i.as_signed(), i.as_unsigned()) {
            (Some(s), _) => J::from(s),
            (None, Some(u)) => J::from(u),
            (None, None) => J::Null,
        },
        plist::Value::String(s) => J::String(s.clone()),
        plist::Value::Uid(uid) => J::from(uid.get()),
        _ => J::Null,
    }
}

/// API JSON: `{"type": "<kind>", "data": <Apple-keyed payload or null>}`; data fields are base64 strings.
impl Serialize for CommandResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let data = self
            .payload_value()
            .map_err(serde::ser::Error::custom)?
            .map_or(serde_json::Value::Null, |v| plist_to_json(&v));
        let mut s = serializer.serialize_struct("CommandResult", 2)?;
        s.serialize_field("type", self.kind())?;
        s.serialize_field("data", &data)?;
        s.end()
    }
}

fn convert<T: DeserializeOwned>(
    key: &'static str,
    value: &plist::Value,
) -> Result<T, ProtocolError> {
    plist::from_value(value).map_err(|e| ProtocolError::InvalidValue {
        key,
        reason: e.to_string(),
    })
}

fn required<'a>(
    report: &'a CommandReport,
    key: &'static str,
) -> Result<&'a plist::Value, ProtocolError> {
    report.body.get(key).ok_or(ProtocolError::MissingKey(key))
}

/// Parses the result of an acknowledged command from its report. Reports that are not `Acknowledged`, and
/// commands without a typed result, give [`CommandResult::Empty`].
pub fn parse_result(
    request_type: &str,
    report: &CommandReport,
) -> Result<CommandResult, ProtocolError> {
    if report.status != ReportStatus::Acknowledged {
        return Ok(CommandResult::Empty);
    }
    Ok(match request_type {
        "DeviceInformation" => CommandResult::DeviceInformation(convert(
            "QueryResponses",
            required(report, "QueryResponses")?,
        )?),
        "SecurityInfo" => {
            CommandResult::SecurityInfo(convert("SecurityInfo", required(report, "SecurityInfo")?)?)
        }
        "InstalledApplicationList" => CommandResult::InstalledApplicationList(convert(
            "InstalledApplicationList",
            required(report, "InstalledApplicationList")?,
        )?),
        "ProfileList" => {
            CommandResult::ProfileList(convert("ProfileList", required(report, "ProfileList")?)?)
        }
        "CertificateList" => CommandResult::CertificateList(convert(
            "CertificateList",
            required(report, "CertificateList")?,
        )?),
        "DeviceLocation" => CommandResult::DeviceLocation(convert(
            "DeviceLocation",
            &plist::Value::Dictionary(report.body.clone()),
        )?),
        "ActivationLockBypassCode" => CommandResult::ActivationLockBypassCode(
            match report.body.get("ActivationLockBypassCode") {
                None => None,
                Some(plist::Value::String(code)) if code.is_empty() => None,
                Some(plist::Value::String(code)) => Some(code.clone()),
                Some(_) => {
                    return Err(ProtocolError::InvalidValue {
                        key: "ActivationLockBypassCode",
                        reason: "expected a string".into(),
                    })
                }
            },
        ),
        "UserList" => CommandResult::UserList(convert("Users", required(report, "Users")?)?),
        "AvailableOSUpdates" => CommandResult::AvailableOSUpdates(convert(
            "AvailableOSUpdates",
            required(report, "AvailableOSUpdates")?,
        )?),
        "ScheduleOSUpdate" => CommandResult::ScheduleOSUpdate(convert(
            "UpdateResults",
            required(report, "UpdateResults")?,
        )?),
        "OSUpdateStatus" => CommandResult::OSUpdateStatus(convert(
            "OSUpdateStatus",
            required(report, "OSUpdateStatus")?,
        )?),
        "ManagedApplicationList" => CommandResult::ManagedApplicationList(convert(
            "ManagedApplicationList",
            required(report, "ManagedApplicationList")?,
        )?),
        _ => CommandResult::Empty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::decode_report;
    use orchard_types::{CommandUuid, Udid};

    const DEVICE_INFORMATION: &[u8] = include_bytes!("../testdata/DeviceInformation.1.plist");

    fn report_with(body: plist::Dictionary) -> CommandReport {
        CommandReport {
            udid: Udid::parse("U1").unwrap(),
            user: None,
            status: ReportStatus::Acknowledged,
            command_uuid: Some(CommandUuid::parse("C1").unwrap()),
            error_chain: Vec::new(),
            body,
        }
    }

    fn body(key: &str, value: plist::Value) -> plist::Dictionary {
        let mut d = plist::Dictionary::new();
        d.insert(key.into(), value);
        d
    }

    #[test]
    fn golden_device_information() {
        let report = decode_report(DEVICE_INFORMATION).unwrap();
        let CommandResult::DeviceInformation(info) =
            parse_result("DeviceInformation", &report).unwrap()
        else {
            panic!("wrong kind")
        };
        assert_eq!(
            info.udid.as_deref(),
            Some("66ADE930-5FDF-5EC4-8429-15640684C489")
        );
        assert_eq!(info.host_name.as_deref(), Some("fruit.example.com"));
        assert_eq!(info.serial_number, None);
    }

    #[test]
    fn device_information_round_trips_through_a_report() {
        let info = DeviceInformation {
            udid: Some("U1".into()),
            serial_number: Some("SER".into()),
            os_version: Some("18.1".into()),
            device_capacity: Some(64.0),
            battery_level: Some(0.5),
            is_supervised: Some(true),
            is_mdm_lost_mode_enabled: Some(false),
            wifi_mac: Some("aa:bb".into()),
            push_token: Some(vec![1, 2].into()),
            organization_info: Some(OrganizationInfo {
                organization_name: Some("EU".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let value = plist::to_value(&info).unwrap();
        let dict = value.as_dictionary().unwrap();
        for key in [
            "UDID",
            "OSVersion",
            "IsMDMLostModeEnabled",
            "WiFiMAC",
            "PushToken",
            "OrganizationInfo",
        ] {
            assert!(dict.contains_key(key), "{key}");
        }
        assert!(!dict.contains_key("DeviceName"), "None is left out");
        let report = decode_report(&report_with(body("QueryResponses", value)).encode()).unwrap();
        assert_eq!(
            parse_result("DeviceInformation", &report).unwrap(),
            CommandResult::DeviceInformation(info)
        );
    }

    #[test]
    fn wrong_field_types_become_none_and_integers_widen_to_reals() {
        let mut q = plist::Dictionary::new();
        q.insert("UDID".into(), plist::Value::Integer(5.into()));
        q.insert("DeviceCapacity".into(), plist::Value::Integer(64.into()));
        q.insert("SomethingNew".into(), plist::Value::Boolean(true));
        let r = report_with(body("QueryResponses", plist::Value::Dictionary(q)));
        let CommandResult::DeviceInformation(info) = parse_result("DeviceInformation", &r).unwrap()
        else {
            panic!("wrong kind")
        };
        assert_eq!(info.udid, None);
        assert_eq!(info.device_capacity, Some(64.0));
    }

    #[test]
    fn every_result_kind_reads_its_key() {
        let one_dict = |k: &str, v: plist::Value| {
            plist::Value::Array(vec![plist::Value::Dictionary(body(k, v))])
        };
        let s = |v: &str| plist::Value::String(v.into());
        let cases: Vec<(&str, plist::Dictionary)> = vec![
            (
                "SecurityInfo",
                body(
                    "SecurityInfo",
                    plist::Value::Dictionary(body("PasscodePresent", plist::Value::Boolean(true))),
                ),
            ),
            (
                "InstalledApplicationList",
                body(
                    "InstalledApplicationList",
                    one_dict("Identifier", s("com.a")),
                ),
            ),
            (
                "ProfileList",
                body("ProfileList", one_dict("PayloadIdentifier", s("p"))),
            ),
            (
                "CertificateList",
                body(
                    "CertificateList",
                    one_dict("Data", plist::Value::Data(vec![1])),
                ),
            ),
            ("DeviceLocation", body("Latitude", plist::Value::Real(47.3))),
            (
                "ActivationLockBypassCode",
                body("ActivationLockBypassCode", s("AAAA-BBBB")),
            ),
            ("UserList", body("Users", one_dict("UserName", s("jane")))),
            (
                "AvailableOSUpdates",
                body("AvailableOSUpdates", one_dict("ProductKey", s("k"))),
            ),
            (
                "ScheduleOSUpdate",
                body("UpdateResults", one_dict("Status", s("Idle"))),
            ),
            (
                "OSUpdateStatus",
                body(
                    "OSUpdateStatus",
                    one_dict("DownloadPercentComplete", plist::Value::Real(0.5)),
                ),
            ),
            (
                "ManagedApplicationList",
                body(
                    "ManagedApplicationList",
                    plist::Value::Dictionary(body(
                        "com.a",
                        plist::Value::Dictionary(body("Status", s("Managed"))),
                    )),
                ),
            ),
        ];
        for (request_type, b) in cases {
            let result = parse_result(request_type, &report_with(b)).unwrap();
            assert_eq!(result.kind(), request_type);
            let json = serde_json::to_value(&result).unwrap();
            assert_eq!(json["type"], request_type);
            assert!(!json["data"].is_null(), "{request_type}");
        }
        let r = report_with(body(
            "CertificateList",
            one_dict("Data", plist::Value::Data(vec![1, 2, 3])),
        ));
        let json = serde_json::to_value(parse_result("CertificateList", &r).unwrap()).unwrap();
        assert_eq!(json["data"][0]["Data"], "AQID");
    }

    #[test]
    fn missing_result_keys_and_non_acknowledged_reports() {
        let r = report_with(plist::Dictionary::new());
        assert_eq!(
            parse_result("UserList", &r),
            Err(ProtocolError::MissingKey("Users"))
        );
        assert_eq!(
            parse_result("ActivationLockBypassCode", &r),
            Ok(CommandResult::ActivationLockBypassCode(None))
        );
        assert_eq!(parse_result("DeviceLock", &r), Ok(CommandResult::Empty));
        let mut not_now = report_with(plist::Dictionary::new());
        not_now.status = ReportStatus::NotNow;
        assert_eq!(parse_result("UserList", &not_now), Ok(CommandResult::Empty));
        assert_eq!(
            serde_json::to_value(CommandResult::Empty).unwrap(),
            serde_json::json!({"type": "Empty", "data": null})
        );
        let bad = report_with(body("ProfileList", plist::Value::String("x".into())));
        assert!(matches!(
            parse_result("ProfileList", &bad),
            Err(ProtocolError::InvalidValue {
                key: "ProfileList",
                ..
            })
        ));
    }
}
