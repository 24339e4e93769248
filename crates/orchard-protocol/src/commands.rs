//! MDM commands: the typed form the API accepts (JSON `{"type": "<RequestType>", snake_case fields}`), the
//! plist the device receives (`{CommandUUID, Command: {RequestType, …}}` with Apple's key names from
//! `mdm/commands/*.yaml`), and the exact inverse for the simulator. `None` fields are left out of the plist.

use orchard_types::{CommandUuid, RequestType};
use plist::{Dictionary, Value};
use serde::{Deserialize, Serialize};

use crate::fields::{base64_bytes, base64_opt, DictBuilder, Fields};
use crate::{dictionary_to_xml, parse_dictionary, ProtocolError};

/// `EraseDevice.ReturnToService`: the device erases, then rejoins Wi-Fi and re-enrolls by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnToService {
    pub enabled: bool,
    /// A Wi-Fi profile (needed on iPads without Ethernet).
    #[serde(default, with = "base64_opt", skip_serializing_if = "Option::is_none")]
    pub wifi_profile_data: Option<Vec<u8>>,
    /// An enrollment profile (needed unless the device enrolls through ADE without a web URL).
    #[serde(default, with = "base64_opt", skip_serializing_if = "Option::is_none")]
    pub mdm_profile_data: Option<Vec<u8>>,
}

/// `ScheduleOSUpdate.Updates[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_version: Option<String>,
    /// Default, DownloadOnly, InstallASAP, NotifyOnly, InstallLater or InstallForceRestart.
    pub install_action: String,
}

/// `InstallApplication.Attributes` / `Settings[ApplicationAttributes].Attributes`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AppAttributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpn_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_filter_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_proxy_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub associated_domains: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub associated_domains_enable_direct_downloads: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap_to_pay_screen_lock: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cellular_slice_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hideable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockable: Option<bool>,
}

impl AppAttributes {
    fn to_dictionary(&self) -> Dictionary {
        DictBuilder::new()
            .opt_string("VPNUUID", self.vpn_uuid.as_ref())
            .opt_string("ContentFilterUUID", self.content_filter_uuid.as_ref())
            .opt_string("DNSProxyUUID", self.dns_proxy_uuid.as_ref())
            .opt_string("RelayUUID", self.relay_uuid.as_ref())
            .opt_strings("AssociatedDomains", self.associated_domains.as_ref())
            .opt_bool(
                "AssociatedDomainsEnableDirectDownloads",
                self.associated_domains_enable_direct_downloads,
            )
            .opt_bool("Removable", self.removable)
            .opt_bool("TapToPayScreenLock", self.tap_to_pay_screen_lock)
            .opt_string("CellularSliceUUID", self.cellular_slice_uuid.as_ref())
            .opt_bool("Hideable", self.hideable)
            .opt_bool("Lockable", self.lockable)
            .build()
    }

    fn from_dictionary(d: &Dictionary) -> Result<Self, ProtocolError> {
        let f = Fields(d);
        Ok(Self {
            vpn_uuid: f.opt_string("VPNUUID")?,
            content_filter_uuid: f.opt_string("ContentFilterUUID")?,
            dns_proxy_uuid: f.opt_string("DNSProxyUUID")?,
            relay_uuid: f.opt_string("RelayUUID")?,
            associated_domains: f.opt_strings("AssociatedDomains")?,
            associated_domains_enable_direct_downloads: f
                .opt_bool("AssociatedDomainsEnableDirectDownloads")?,
            removable: f.opt_bool("Removable")?,
            tap_to_pay_screen_lock: f.opt_bool("TapToPayScreenLock")?,
            cellular_slice_uuid: f.opt_string("CellularSliceUUID")?,
            hideable: f.opt_bool("Hideable")?,
            lockable: f.opt_bool("Lockable")?,
        })
    }
}

/// One entry of `Settings.Settings[]`, tagged by Apple's `Item` (JSON: `"item"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "item")]
pub enum SettingsItem {
    DeviceName {
        device_name: String,
    },
    OrganizationInfo {
        organization_name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        organization_short_name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phone: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        magic: Option<String>,
    },
    /// Shared iPad settings.
    SharedDeviceConfiguration {
        /// Per-user quota in MB.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quota_size: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resident_users: Option<i64>,
        /// Seconds of inactivity before a user session ends.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_session_timeout: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        temporary_session_only: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        temporary_session_timeout: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        online_authentication_grace_period: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        skip_language_and_locale_setup_for_new_users: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        managed_apple_id_default_domains: Option<Vec<String>>,
        /// `AwaitUserConfiguration.Enabled`: hold new users in Setup Assistant until `UserConfigured`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        await_user_configuration: Option<bool>,
        /// `PasscodePolicy.PasscodeLockGracePeriod` (seconds).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passcode_lock_grace_period: Option<i64>,
        /// `PasscodePolicy.AutoLockTime` (seconds).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auto_lock_time: Option<i64>,
    },
    MDMOptions {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        activation_lock_allowed_while_supervised: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bootstrap_token_allowed: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt_user_to_allow_bootstrap_token_for_authentication: Option<bool>,
    },
    TimeZone {
        time_zone: String,
    },
    Wallpaper {
        /// PNG or JPEG.
        #[serde(with = "base64_bytes")]
        image: Vec<u8>,
        /// 1 lock screen, 2 home screen, 3 both.
        r#where: i64,
    },
    DataRoaming {
        enabled: bool,
    },
    PersonalHotspot {
        enabled: bool,
    },
    Bluetooth {
        enabled: bool,
    },
    DiagnosticSubmission {
        enabled: bool,
    },
    AppAnalytics {
        enabled: bool,
    },
    MaximumResidentUsers {
        maximum_resident_users: i64,
    },
    PasscodeLockGracePeriod {
        passcode_lock_grace_period: i64,
    },
    SoftwareUpdateSettings {
        recommendation_cadence: i64,
    },
    ApplicationConfiguration {
        identifier: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        configuration: Option<Dictionary>,
    },
    ApplicationAttributes {
        identifier: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attributes: Option<AppAttributes>,
    },
}

impl SettingsItem {
    /// Apple's `Item` value.
    pub fn item_name(&self) -> &'static str {
        match self {
            SettingsItem::DeviceName { .. } => "DeviceName",
            SettingsItem::OrganizationInfo { .. } => "OrganizationInfo",
            SettingsItem::SharedDeviceConfiguration { .. } => "SharedDeviceConfiguration",
            SettingsItem::MDMOptions { .. } => "MDMOptions",
            SettingsItem::TimeZone { .. } => "TimeZone",
            SettingsItem::Wallpaper { .. } => "Wallpaper",
            SettingsItem::DataRoaming { .. } => "DataRoaming",
            SettingsItem::PersonalHotspot { .. } => "PersonalHotspot",
            SettingsItem::Bluetooth { .. } => "Bluetooth",
            SettingsItem::DiagnosticSubmission { .. } => "DiagnosticSubmission",
            SettingsItem::AppAnalytics { .. } => "AppAnalytics",
            SettingsItem::MaximumResidentUsers { .. } => "MaximumResidentUsers",
            SettingsItem::PasscodeLockGracePeriod { .. } => "PasscodeLockGracePeriod",
            SettingsItem::SoftwareUpdateSettings { .. } => "SoftwareUpdateSettings",
            SettingsItem::ApplicationConfiguration { .. } => "ApplicationConfiguration",
            SettingsItem::ApplicationAttributes { .. } => "ApplicationAttributes",
        }
    }

    /// The `{Item: …, …}` dictionary.
    pub fn to_dictionary(&self) -> Dictionary {
        let b = DictBuilder::new().string("Item", self.item_name());
        let b = match self {
            SettingsItem::DeviceName { device_name } => b.string("DeviceName", device_name),
            SettingsItem::OrganizationInfo {
                organization_name,
                organization_short_name,
                address,
                phone,
                email,
                magic,
            } => b.dict(
                "OrganizationInfo",
                DictBuilder::new()
                    .string("OrganizationName", organization_name)
                    .opt_string("OrganizationShortName", organization_short_name.as_ref())
                    .opt_string("OrganizationAddress", address.as_ref())
                    .opt_string("OrganizationPhone", phone.as_ref())
                    .opt_string("OrganizationEmail", email.as_ref())
                    .opt_string("OrganizationMagic", magic.as_ref())
                    .build(),
            ),
            SettingsItem::SharedDeviceConfiguration {
                quota_size,
                resident_users,
                user_session_timeout,
                temporary_session_only,
                temporary_session_timeout,
                online_authentication_grace_period,
                skip_language_and_locale_setup_for_new_users,
                managed_apple_id_default_domains,
                await_user_configuration,
                passcode_lock_grace_period,
                auto_lock_time,
            } => {
                let passcode_policy =
                    (passcode_lock_grace_period.is_some() || auto_lock_time.is_some()).then(|| {
                        DictBuilder::new()
                            .opt_int("PasscodeLockGracePeriod", *passcode_lock_grace_period)
                            .opt_int("AutoLockTime", *auto_lock_time)
                            .build()
                    });
                b.opt_int("QuotaSize", *quota_size)
                    .opt_int("ResidentUsers", *resident_users)
                    .opt_int("UserSessionTimeout", *user_session_timeout)
                    .opt_bool("TemporarySessionOnly", *temporary_session_only)
                    .opt_int("TemporarySessionTimeout", *temporary_session_timeout)
                    .opt_int(
                        "OnlineAuthenticationGracePeriod",
                        *online_authentication_grace_period,
                    )
                    .opt_bool(
                        "SkipLanguageAndLocaleSetupForNewUsers",
                        *skip_language_and_locale_setup_for_new_users,
                    )
                    .opt_strings(
                        "ManagedAppleIDDefaultDomains",
                        managed_apple_id_default_domains.as_ref(),
                    )
                    .opt_dict(
                        "AwaitUserConfiguration",
                        await_user_configuration
                            .map(|e| DictBuilder::new().bool("Enabled", e).build()),
                    )
                    .opt_dict("PasscodePolicy", passcode_policy)
            }
            SettingsItem::MDMOptions {
                activation_lock_allowed_while_supervised,
                bootstrap_token_allowed,
                prompt_user_to_allow_bootstrap_token_for_authentication,
            } => b.dict(
                "MDMOptions",
                DictBuilder::new()
                    .opt_bool(
                        "ActivationLockAllowedWhileSupervised",
                        *activation_lock_allowed_while_supervised,
                    )
                    .opt_bool("BootstrapTokenAllowed", *bootstrap_token_allowed)
                    .opt_bool(
                        "PromptUserToAllowBootstrapTokenForAuthentication",
                        *prompt_user_to_allow_bootstrap_token_for_authentication,
                    )
                    .build(),
            ),
            SettingsItem::TimeZone { time_zone } => b.string("TimeZone", time_zone),
            SettingsItem::Wallpaper { image, r#where } => {
                b.data("Image", image).int("Where", *r#where)
            }
            SettingsItem::DataRoaming { enabled }
            | SettingsItem::PersonalHotspot { enabled }
            | SettingsItem::Bluetooth { enabled }
            | SettingsItem::DiagnosticSubmission { enabled }
            | SettingsItem::AppAnalytics { enabled } => b.bool("Enabled", *enabled),
            SettingsItem::MaximumResidentUsers {
                maximum_resident_users,
            } => b.int("MaximumResidentUsers", *maximum_resident_users),
            SettingsItem::PasscodeLockGracePeriod {
                passcode_lock_grace_period,
            } => b.int("PasscodeLockGracePeriod", *passcode_lock_grace_period),
            SettingsItem::SoftwareUpdateSettings {
                recommendation_cadence,
            } => b.int("RecommendationCadence", *recommendation_cadence),
            SettingsItem::ApplicationConfiguration {
                identifier,
                configuration,
            } => b
                .string("Identifier", identifier)
                .opt_dict("Configuration", configuration.clone()),
            SettingsItem::ApplicationAttributes {
                identifier,
                attributes,
            } => b.string("Identifier", identifier).opt_dict(
                "Attributes",
                attributes.as_ref().map(AppAttributes::to_dictionary),
            ),
        };
        b.build()
    }

    /// Inverse of [`SettingsItem::to_dictionary`].
    pub fn from_dictionary(d: &Dictionary) -> Result<Self, ProtocolError> {
        let f = Fields(d);
        let item = f.string("Item")?;
        Ok(match item.as_str() {
            "DeviceName" => SettingsItem::DeviceName {
                device_name: f.string("DeviceName")?,
            },
            "OrganizationInfo" => {
                let o = Fields(f.dict("OrganizationInfo")?);
                SettingsItem::OrganizationInfo {
                    organization_name: o.string("OrganizationName")?,
                    organization_short_name: o.opt_string("OrganizationShortName")?,
                    address: o.opt_string("OrganizationAddress")?,
                    phone: o.opt_string("OrganizationPhone")?,
                    email: o.opt_string("OrganizationEmail")?,
                    magic: o.opt_string("OrganizationMagic")?,
                }
            }
            "SharedDeviceConfiguration" => {
                let policy = f.opt_dict("PasscodePolicy")?.map(Fields);
                SettingsItem::SharedDeviceConfiguration {
                    quota_size: f.opt_int("QuotaSize")?,
                    resident_users: f.opt_int("ResidentUsers")?,
                    user_session_timeout: f.opt_int("UserSessionTimeout")?,
                    temporary_session_only: f.opt_bool("TemporarySessionOnly")?,
                    temporary_session_timeout: f.opt_int("TemporarySessionTimeout")?,
                    online_authentication_grace_period: f
                        .opt_int("OnlineAuthenticationGracePeriod")?,
                    skip_language_and_locale_setup_for_new_users: f
                        .opt_bool("SkipLanguageAndLocaleSetupForNewUsers")?,
                    managed_apple_id_default_domains: f
                        .opt_strings("ManagedAppleIDDefaultDomains")?,
                    await_user_configuration: f
                        .opt_dict("AwaitUserConfiguration")?
                        .map(|d| Fields(d).bool("Enabled"))
                        .transpose()?,
                    passcode_lock_grace_period: policy
                        .map(|p| p.opt_int("PasscodeLockGracePeriod"))
                        .transpose()?
                        .flatten(),
                    auto_lock_time: policy
                        .map(|p| p.opt_int("AutoLockTime"))
                        .transpose()?
                        .flatten(),
                }
            }
            "MDMOptions" => {
                let o = Fields(f.dict("MDMOptions")?);
                SettingsItem::MDMOptions {
                    activation_lock_allowed_while_supervised: o
                        .opt_bool("ActivationLockAllowedWhileSupervised")?,
                    bootstrap_token_allowed: o.opt_bool("BootstrapTokenAllowed")?,
                    prompt_user_to_allow_bootstrap_token_for_authentication: o
                        .opt_bool("PromptUserToAllowBootstrapTokenForAuthentication")?,
                }
            }
            "TimeZone" => SettingsItem::TimeZone {
                time_zone: f.string("TimeZone")?,
            },
            "Wallpaper" => SettingsItem::Wallpaper {
                image: f.data("Image")?,
                r#where: f
                    .opt_int("Where")?
                    .ok_or(ProtocolError::MissingKey("Where"))?,
            },
            "DataRoaming" => SettingsItem::DataRoaming {
                enabled: f.bool("Enabled")?,
            },
            "PersonalHotspot" => SettingsItem::PersonalHotspot {
                enabled: f.bool("Enabled")?,
            },
            "Bluetooth" => SettingsItem::Bluetooth {
                enabled: f.bool("Enabled")?,
            },
            "DiagnosticSubmission" => SettingsItem::DiagnosticSubmission {
                enabled: f.bool("Enabled")?,
            },
            "AppAnalytics" => SettingsItem::AppAnalytics {
                enabled: f.bool("Enabled")?,
            },
            "MaximumResidentUsers" => SettingsItem::MaximumResidentUsers {
                maximum_resident_users: f
                    .opt_int("MaximumResidentUsers")?
                    .ok_or(ProtocolError::MissingKey("MaximumResidentUsers"))?,
            },
            "PasscodeLockGracePeriod" => SettingsItem::PasscodeLockGracePeriod {
                passcode_lock_grace_period: f
                    .opt_int("PasscodeLockGracePeriod")?
                    .ok_or(ProtocolError::MissingKey("PasscodeLockGracePeriod"))?,
            },
            "SoftwareUpdateSettings" => SettingsItem::SoftwareUpdateSettings {
                recommendation_cadence: f
                    .opt_int("RecommendationCadence")?
                    .ok_or(ProtocolError::MissingKey("RecommendationCadence"))?,
            },
            "ApplicationConfiguration" => SettingsItem::ApplicationConfiguration {
                identifier: f.string("Identifier")?,
                configuration: f.opt_dict("Configuration")?.cloned(),
            },
            "ApplicationAttributes" => SettingsItem::ApplicationAttributes {
                identifier: f.string("Identifier")?,
                attributes: f
                    .opt_dict("Attributes")?
                    .map(AppAttributes::from_dictionary)
                    .transpose()?,
            },
            other => {
                return Err(ProtocolError::InvalidValue {
                    key: "Item",
                    reason: format!("unsupported settings item {other:?}"),
                })
            }
        })
    }
}

/// A command for a device. API JSON: `{"type": "<RequestType>", snake_case fields…}`; binary fields are base64
/// strings in JSON.
// InstallApplication is much larger than the other variants; commands are short-lived values built once per
// request, so boxing its fields would only make the public API clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Command {
    DeviceInformation {
        queries: Vec<String>,
    },
    SecurityInfo,
    InstalledApplicationList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identifiers: Option<Vec<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        managed_apps_only: Option<bool>,
    },
    ProfileList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        managed_only: Option<bool>,
    },
    CertificateList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        managed_only: Option<bool>,
    },
    InstallProfile {
        /// The profile (plain, signed or encrypted).
        #[serde(with = "base64_bytes")]
        payload: Vec<u8>,
    },
    RemoveProfile {
        /// The profile's top-level PayloadIdentifier.
        identifier: String,
    },
    DeviceLock {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phone_number: Option<String>,
    },
    EraseDevice {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        preserve_data_plan: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disallow_proximity_setup: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        return_to_service: Option<ReturnToService>,
    },
    EnableLostMode {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phone_number: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        footnote: Option<String>,
    },
    DisableLostMode,
    DeviceLocation,
    PlayLostModeSound,
    ClearPasscode {
        /// Filled by core from the stored UnlockToken, never from (or into) API JSON.
        #[serde(skip)]
        unlock_token: Option<Vec<u8>>,
    },
    RestartDevice {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notify_user: Option<bool>,
    },
    ShutDownDevice,
    Settings {
        settings: Vec<SettingsItem>,
    },
    ActivationLockBypassCode,
    ClearActivationLockBypassCode,
    DeviceConfigured,
    UserList,
    LogOutUser,
    DeleteUser {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        force_deletion: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delete_all_users: Option<bool>,
    },
    AvailableOSUpdates,
    ScheduleOSUpdate {
        updates: Vec<OsUpdate>,
    },
    OSUpdateStatus,
    InstallApplication {
        /// Apple's `iTunesStoreID` (the App Store adamId).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        itunes_store_id: Option<i64>,
        /// Bundle id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identifier: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        manifest_url: Option<String>,
        /// 1 = remove with the MDM profile, 4 = no backup, 5 = both.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        management_flags: Option<i64>,
        /// `Options.PurchaseMethod`: 1 = Apps and Books license (device-assigned VPP).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        purchase_method: Option<i64>,
        /// Managed app configuration.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        configuration: Option<Dictionary>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attributes: Option<AppAttributes>,
        /// "Managed" takes over a user-installed app.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        change_management_state: Option<String>,
    },
    RemoveApplication {
        identifier: String,
    },
    ManagedApplicationList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identifiers: Option<Vec<String>>,
    },
    DeclarativeManagement {
        /// The DDM `SyncTokens` JSON.
        #[serde(default, with = "base64_opt", skip_serializing_if = "Option::is_none")]
        data: Option<Vec<u8>>,
    },
}

impl Command {
    /// Apple's `RequestType`, typed (what the queue stores).
    pub fn kind(&self) -> RequestType {
        match self {
            Command::DeviceInformation { .. } => RequestType::DeviceInformation,
            Command::SecurityInfo => RequestType::SecurityInfo,
            Command::InstalledApplicationList { .. } => RequestType::InstalledApplicationList,
            Command::ProfileList { .. } => RequestType::ProfileList,
            Command::CertificateList { .. } => RequestType::CertificateList,
            Command::InstallProfile { .. } => RequestType::InstallProfile,
            Command::RemoveProfile { .. } => RequestType::RemoveProfile,
            Command::DeviceLock { .. } => RequestType::DeviceLock,
            Command::EraseDevice { .. } => RequestType::EraseDevice,
            Command::EnableLostMode { .. } => RequestType::EnableLostMode,
            Command::DisableLostMode => RequestType::DisableLostMode,
            Command::DeviceLocation => RequestType::DeviceLocation,
            Command::PlayLostModeSound => RequestType::PlayLostModeSound,
            Command::ClearPasscode { .. } => RequestType::ClearPasscode,
            Command::RestartDevice { .. } => RequestType::RestartDevice,
            Command::ShutDownDevice => RequestType::ShutDownDevice,
            Command::Settings { .. } => RequestType::Settings,
            Command::ActivationLockBypassCode => RequestType::ActivationLockBypassCode,
            Command::ClearActivationLockBypassCode => RequestType::ClearActivationLockBypassCode,
            Command::DeviceConfigured => RequestType::DeviceConfigured,
            Command::UserList => RequestType::UserList,
            Command::LogOutUser => RequestType::LogOutUser,
            Command::DeleteUser { .. } => RequestType::DeleteUser,
            Command::AvailableOSUpdates => RequestType::AvailableOSUpdates,
            Command::ScheduleOSUpdate { .. } => RequestType::ScheduleOSUpdate,
            Command::OSUpdateStatus => RequestType::OSUpdateStatus,
            Command::InstallApplication { .. } => RequestType::InstallApplication,
            Command::RemoveApplication { .. } => RequestType::RemoveApplication,
            Command::ManagedApplicationList { .. } => RequestType::ManagedApplicationList,
            Command::DeclarativeManagement { .. } => RequestType::DeclarativeManagement,
        }
    }

    /// Apple's `RequestType` as it is spelled in the command plist.
    pub fn request_type(&self) -> &'static str {
        self.kind().as_str()
    }

    /// The `Command` dictionary: `{RequestType, …parameters}` with Apple's key names.
    pub fn to_command_dict(&self) -> Dictionary {
        let b = DictBuilder::new().string("RequestType", self.request_type());
        let b = match self {
            Command::DeviceInformation { queries } => b.strings("Queries", queries),
            Command::InstalledApplicationList {
                identifiers,
                managed_apps_only,
            } => b
                .opt_strings("Identifiers", identifiers.as_ref())
                .opt_bool("ManagedAppsOnly", *managed_apps_only),
            Command::ProfileList { managed_only } | Command::CertificateList { managed_only } => {
                b.opt_bool("ManagedOnly", *managed_only)
            }
            Command::InstallProfile { payload } => b.data("Payload", payload),
            Command::RemoveProfile { identifier } | Command::RemoveApplication { identifier } => {
                b.string("Identifier", identifier)
            }
            Command::DeviceLock {
                message,
                phone_number,
            } => b
                .opt_string("Message", message.as_ref())
                .opt_string("PhoneNumber", phone_number.as_ref()),
            Command::EraseDevice {
                preserve_data_plan,
                disallow_proximity_setup,
                return_to_service,
            } => b
                .opt_bool("PreserveDataPlan", *preserve_data_plan)
                .opt_bool("DisallowProximitySetup", *disallow_proximity_setup)
                .opt_dict(
                    "ReturnToService",
                    return_to_service.as_ref().map(|r| {
                        DictBuilder::new()
                            .bool("Enabled", r.enabled)
                            .opt_data("WiFiProfileData", r.wifi_profile_data.as_ref())
                            .opt_data("MDMProfileData", r.mdm_profile_data.as_ref())
                            .build()
                    }),
                ),
            Command::EnableLostMode {
                message,
                phone_number,
                footnote,
            } => b
                .opt_string("Message", message.as_ref())
                .opt_string("PhoneNumber", phone_number.as_ref())
                .opt_string("Footnote", footnote.as_ref()),
            Command::ClearPasscode { unlock_token } => {
                b.opt_data("UnlockToken", unlock_token.as_ref())
            }
            Command::RestartDevice { notify_user } => b.opt_bool("NotifyUser", *notify_user),
            Command::Settings { settings } => b.value(
                "Settings",
                Value::Array(
                    settings
                        .iter()
                        .map(|s| Value::Dictionary(s.to_dictionary()))
                        .collect(),
                ),
            ),
            Command::DeleteUser {
                user_name,
                force_deletion,
                delete_all_users,
            } => b
                .opt_string("UserName", user_name.as_ref())
                .opt_bool("ForceDeletion", *force_deletion)
                .opt_bool("DeleteAllUsers", *delete_all_users),
            Command::ScheduleOSUpdate { updates } => b.value(
                "Updates",
                Value::Array(
                    updates
                        .iter()
                        .map(|u| {
                            Value::Dictionary(
                                DictBuilder::new()
                                    .opt_string("ProductKey", u.product_key.as_ref())
                                    .opt_string("ProductVersion", u.product_version.as_ref())
                                    .string("InstallAction", &u.install_action)
                                    .build(),
                            )
                        })
                        .collect(),
                ),
            ),
            Command::InstallApplication {
                itunes_store_id,
                identifier,
                manifest_url,
                management_flags,
                purchase_method,
                configuration,
                attributes,
                change_management_state,
            } => b
                .opt_int("iTunesStoreID", *itunes_store_id)
                .opt_string("Identifier", identifier.as_ref())
                .opt_string("ManifestURL", manifest_url.as_ref())
                .opt_int("ManagementFlags", *management_flags)
                .opt_dict(
                    "Options",
                    purchase_method.map(|p| DictBuilder::new().int("PurchaseMethod", p).build()),
                )
                .opt_dict("Configuration", configuration.clone())
                .opt_dict(
                    "Attributes",
                    attributes.as_ref().map(AppAttributes::to_dictionary),
                )
                .opt_string("ChangeManagementState", change_management_state.as_ref()),
            Command::ManagedApplicationList { identifiers } => {
                b.opt_strings("Identifiers", identifiers.as_ref())
            }
            Command::DeclarativeManagement { data } => b.opt_data("Data", data.as_ref()),
            Command::SecurityInfo
            | Command::DisableLostMode
            | Command::DeviceLocation
            | Command::PlayLostModeSound
            | Command::ShutDownDevice
            | Command::ActivationLockBypassCode
            | Command::ClearActivationLockBypassCode
            | Command::DeviceConfigured
            | Command::UserList
            | Command::LogOutUser
            | Command::AvailableOSUpdates
            | Command::OSUpdateStatus => b,
        };
        b.build()
    }

    /// The full plist the device receives: `{CommandUUID, Command}` (XML).
    pub fn encode(&self, uuid: &CommandUuid) -> Vec<u8> {
        dictionary_to_xml(
            DictBuilder::new()
                .string("CommandUUID", uuid.as_str())
                .dict("Command", self.to_command_dict())
                .build(),
        )
    }

    /// The `Command` dictionary alone (XML): a body that many queued commands share, each getting its own
    /// envelope when it is handed out ([`envelope_for_body`]).
    pub fn encode_body(&self) -> Vec<u8> {
        dictionary_to_xml(self.to_command_dict())
    }

    /// Inverse of [`Command::to_command_dict`].
    pub fn from_command_dict(d: &Dictionary) -> Result<Self, ProtocolError> {
        let f = Fields(d);
        let request_type = f.string("RequestType")?;
        Ok(match request_type.as_str() {
            "DeviceInformation" => Command::DeviceInformation {
                queries: f.strings("Queries")?,
            },
            "SecurityInfo" => Command::SecurityInfo,
            "InstalledApplicationList" => Command::InstalledApplicationList {
                identifiers: f.opt_strings("Identifiers")?,
                managed_apps_only: f.opt_bool("ManagedAppsOnly")?,
            },
            "ProfileList" => Command::ProfileList {
                managed_only: f.opt_bool("ManagedOnly")?,
            },
            "CertificateList" => Command::CertificateList {
                managed_only: f.opt_bool("ManagedOnly")?,
            },
            "InstallProfile" => Command::InstallProfile {
                payload: f.data("Payload")?,
            },
            "RemoveProfile" => Command::RemoveProfile {
                identifier: f.string("Identifier")?,
            },
            "DeviceLock" => Command::DeviceLock {
                message: f.opt_string("Message")?,
                phone_number: f.opt_string("PhoneNumber")?,
            },
            "EraseDevice" => Command::EraseDevice {
                preserve_data_plan: f.opt_bool("PreserveDataPlan")?,
                disallow_proximity_setup: f.opt_bool("DisallowProximitySetup")?,
                return_to_service: f
                    .opt_dict("ReturnToService")?
                    .map(|r| {
                        let r = Fields(r);
                        Ok::<_, ProtocolError>(ReturnToService {
                            enabled: r.bool("Enabled")?,
                            wifi_profile_data: r.opt_data("WiFiProfileData")?,
                            mdm_profile_data: r.opt_data("MDMProfileData")?,
                        })
                    })
                    .transpose()?,
            },
            "EnableLostMode" => Command::EnableLostMode {
                message: f.opt_string("Message")?,
                phone_number: f.opt_string("PhoneNumber")?,
                footnote: f.opt_string("Footnote")?,
            },
            "DisableLostMode" => Command::DisableLostMode,
            "DeviceLocation" => Command::DeviceLocation,
            "PlayLostModeSound" => Command::PlayLostModeSound,
            "ClearPasscode" => Command::ClearPasscode {
                unlock_token: f.opt_data("UnlockToken")?,
            },
            "RestartDevice" => Command::RestartDevice {
                notify_user: f.opt_bool("NotifyUser")?,
            },
            "ShutDownDevice" => Command::ShutDownDevice,
            "Settings" => Command::Settings {
                settings: f
                    .opt_dicts("Settings")?
                    .ok_or(ProtocolError::MissingKey("Settings"))?
                    .into_iter()
                    .map(SettingsItem::from_dictionary)
                    .collect::<Result<_, _>>()?,
            },
            "ActivationLockBypassCode" => Command::ActivationLockBypassCode,
            "ClearActivationLockBypassCode" => Command::ClearActivationLockBypassCode,
            "DeviceConfigured" => Command::DeviceConfigured,
            "UserList" => Command::UserList,
            "LogOutUser" => Command::LogOutUser,
            "DeleteUser" => Command::DeleteUser {
                user_name: f.opt_string("UserName")?,
                force_deletion: f.opt_bool("ForceDeletion")?,
                delete_all_users: f.opt_bool("DeleteAllUsers")?,
            },
            "AvailableOSUpdates" => Command::AvailableOSUpdates,
            "ScheduleOSUpdate" => Command::ScheduleOSUpdate {
                updates: f
                    .opt_dicts("Updates")?
                    .ok_or(ProtocolError::MissingKey("Updates"))?
                    .into_iter()
                    .map(|u| {
                        let u = Fields(u);
                        Ok(OsUpdate {
                            product_key: u.opt_string("ProductKey")?,
                            product_version: u.opt_string("ProductVersion")?,
                            install_action: u.string("InstallAction")?,
                        })
                    })
                    .collect::<Result<_, ProtocolError>>()?,
            },
            "OSUpdateStatus" => Command::OSUpdateStatus,
            "InstallApplication" => Command::InstallApplication {
                itunes_store_id: f.opt_int("iTunesStoreID")?,
                identifier: f.opt_string("Identifier")?,
                manifest_url: f.opt_string("ManifestURL")?,
                management_flags: f.opt_int("ManagementFlags")?,
                purchase_method: f
                    .opt_dict("Options")?
                    .map(|o| Fields(o).opt_int("PurchaseMethod"))
                    .transpose()?
                    .flatten(),
                configuration: f.opt_dict("Configuration")?.cloned(),
                attributes: f
                    .opt_dict("Attributes")?
                    .map(AppAttributes::from_dictionary)
                    .transpose()?,
                change_management_state: f.opt_string("ChangeManagementState")?,
            },
            "RemoveApplication" => Command::RemoveApplication {
                identifier: f.string("Identifier")?,
            },
            "ManagedApplicationList" => Command::ManagedApplicationList {
                identifiers: f.opt_strings("Identifiers")?,
            },
            "DeclarativeManagement" => Command::DeclarativeManagement {
                data: f.opt_data("Data")?,
            },
            other => {
                return Err(ProtocolError::InvalidValue {
                    key: "RequestType",
                    reason: format!("unsupported request type {other:?}"),
                })
            }
        })
    }
}

/// Decodes what [`Command::encode`] produced (the simulator's side). Never panics, whatever the input.
pub fn decode_command(bytes: &[u8]) -> Result<(CommandUuid, Command), ProtocolError> {
    let dict = parse_dictionary(bytes)?;
    let f = Fields(&dict);
    let uuid_text = f.string("CommandUUID")?;
    let uuid = CommandUuid::parse(&uuid_text).map_err(|e| ProtocolError::InvalidValue {
        key: "CommandUUID",
        reason: e.to_string(),
    })?;
    let command = Command::from_command_dict(f.dict("Command")?)?;
    Ok((uuid, command))
}

/// One fully populated sample of every command variant (every optional field set, every settings item),
/// for round-trip and conformance tests. Kept in the library so the YAML conformance test and the simulator's
/// tests use the same list; adding a variant without a sample fails the `samples_cover_every_variant` test.
#[doc(hidden)]
pub fn all_command_samples() -> Vec<Command> {
    let mut config = Dictionary::new();
    config.insert(
        "ServerURL".into(),
        Value::String("https://example.edu".into()),
    );
    config.insert("Seats".into(), Value::Integer(30.into()));
    let attributes = AppAttributes {
        vpn_uuid: Some("VPN-1".into()),
        content_filter_uuid: Some("CF-1".into()),
        dns_proxy_uuid: Some("DNS-1".into()),
        relay_uuid: Some("RELAY-1".into()),
        associated_domains: Some(vec!["applinks:example.edu".into()]),
        associated_domains_enable_direct_downloads: Some(true),
        removable: Some(false),
        tap_to_pay_screen_lock: Some(true),
        cellular_slice_uuid: Some("SLICE-1".into()),
        hideable: Some(false),
        lockable: Some(true),
    };
    vec![
        Command::DeviceInformation {
            queries: vec![
                "UDID".into(),
                "SerialNumber".into(),
                "OSVersion".into(),
                "WiFiMAC".into(),
            ],
        },
        Command::SecurityInfo,
        Command::InstalledApplicationList {
            identifiers: Some(vec!["com.apple.Pages".into()]),
            managed_apps_only: Some(true),
        },
        Command::ProfileList {
            managed_only: Some(true),
        },
        Command::CertificateList {
            managed_only: Some(false),
        },
        Command::InstallProfile {
            payload: b"<plist/>".to_vec(),
        },
        Command::RemoveProfile {
            identifier: "edu.example.wifi".into(),
        },
        Command::DeviceLock {
            message: Some("Return to the library".into()),
            phone_number: Some("+41 44 000 00 00".into()),
        },
        Command::EraseDevice {
            preserve_data_plan: Some(true),
            disallow_proximity_setup: Some(true),
            return_to_service: Some(ReturnToService {
                enabled: true,
                wifi_profile_data: Some(vec![1, 2, 3]),
                mdm_profile_data: Some(vec![4, 5, 6]),
            }),
        },
        Command::EnableLostMode {
            message: Some("Lost".into()),
            phone_number: Some("123".into()),
            footnote: Some("IT desk".into()),
        },
        Command::DisableLostMode,
        Command::DeviceLocation,
        Command::PlayLostModeSound,
        Command::ClearPasscode {
            unlock_token: Some(vec![7; 32]),
        },
        Command::RestartDevice {
            notify_user: Some(true),
        },
        Command::ShutDownDevice,
        Command::Settings {
            settings: all_settings_samples(),
        },
        Command::ActivationLockBypassCode,
        Command::ClearActivationLockBypassCode,
        Command::DeviceConfigured,
        Command::UserList,
        Command::LogOutUser,
        Command::DeleteUser {
            user_name: Some("jane@example.edu".into()),
            force_deletion: Some(true),
            delete_all_users: Some(false),
        },
        Command::AvailableOSUpdates,
        Command::ScheduleOSUpdate {
            updates: vec![
                OsUpdate {
                    product_key: Some("iOSUpdate22B83".into()),
                    product_version: None,
                    install_action: "InstallASAP".into(),
                },
                OsUpdate {
                    product_key: None,
                    product_version: Some("18.1".into()),
                    install_action: "Default".into(),
                },
            ],
        },
        Command::OSUpdateStatus,
        Command::InstallApplication {
            itunes_store_id: Some(361309726),
            identifier: Some("com.apple.Pages".into()),
            manifest_url: Some("https://example.edu/app.plist".into()),
            management_flags: Some(1),
            purchase_method: Some(1),
            configuration: Some(config.clone()),
            attributes: Some(attributes.clone()),
            change_management_state: Some("Managed".into()),
        },
        Command::RemoveApplication {
            identifier: "com.apple.Pages".into(),
        },
        Command::ManagedApplicationList {
            identifiers: Some(vec!["com.apple.Pages".into()]),
        },
        Command::DeclarativeManagement {
            data: Some(br#"{"SyncTokens":{}}"#.to_vec()),
        },
    ]
}

/// One fully populated sample of every settings item.
#[doc(hidden)]
pub fn all_settings_samples() -> Vec<SettingsItem> {
    let mut config = Dictionary::new();
    config.insert("Key".into(), Value::String("value".into()));
    vec![
        SettingsItem::DeviceName {
            device_name: "Cart 3 / iPad 12".into(),
        },
        SettingsItem::OrganizationInfo {
            organization_name: "Example University".into(),
            organization_short_name: Some("EU".into()),
            address: Some("1 Campus Road".into()),
            phone: Some("+41 44 000 00 00".into()),
            email: Some("it@example.edu".into()),
            magic: Some("magic".into()),
        },
        SettingsItem::SharedDeviceConfiguration {
            quota_size: Some(4096),
            resident_users: Some(8),
            user_session_timeout: Some(3600),
            temporary_session_only: Some(false),
            temporary_session_timeout: Some(600),
            online_authentication_grace_period: Some(7),
            skip_language_and_locale_setup_for_new_users: Some(true),
            managed_apple_id_default_domains: Some(vec!["example.edu".into()]),
            await_user_configuration: Some(true),
            passcode_lock_grace_period: Some(300),
            auto_lock_time: Some(120),
        },
        SettingsItem::MDMOptions {
            activation_lock_allowed_while_supervised: Some(false),
            bootstrap_token_allowed: Some(true),
            prompt_user_to_allow_bootstrap_token_for_authentication: Some(false),
        },
        SettingsItem::TimeZone {
            time_zone: "Europe/Zurich".into(),
        },
        SettingsItem::Wallpaper {
            image: vec![0x89, b'P', b'N', b'G'],
            r#where: 3,
        },
        SettingsItem::DataRoaming { enabled: false },
        SettingsItem::PersonalHotspot { enabled: false },
        SettingsItem::Bluetooth { enabled: true },
        SettingsItem::DiagnosticSubmission { enabled: false },
        SettingsItem::AppAnalytics { enabled: false },
        SettingsItem::MaximumResidentUsers {
            maximum_resident_users: 10,
        },
        SettingsItem::PasscodeLockGracePeriod {
            passcode_lock_grace_period: 60,
        },
        SettingsItem::SoftwareUpdateSettings {
            recommendation_cadence: 1,
        },
        SettingsItem::ApplicationConfiguration {
            identifier: "com.apple.Pages".into(),
            configuration: Some(config),
        },
        SettingsItem::ApplicationAttributes {
            identifier: "com.apple.Pages".into(),
            attributes: Some(AppAttributes {
                removable: Some(false),
                ..AppAttributes::default()
            }),
        },
    ]
}

/// The plist the device receives for a command made of a shared body ([`Command::encode_body`]): the same
/// bytes [`Command::encode`] gives for that command and `uuid`. The body is Orchard's own (read back from the
/// database, not from a device), so it is parsed without the bounds on device input.
pub fn envelope_for_body(uuid: &CommandUuid, body: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let command = plist::Value::from_reader_xml(body)
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?
        .into_dictionary()
        .ok_or_else(|| ProtocolError::Malformed("a command body is not a dictionary".into()))?;
    Ok(dictionary_to_xml(
        DictBuilder::new()
            .string("CommandUUID", uuid.as_str())
            .dict("Command", command)
            .build(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn uuid() -> CommandUuid {
        CommandUuid::parse("0F2A6B0C-1D2E-4F50-8A9B-0C1D2E3F4A5B").unwrap()
    }

    #[test]
    fn a_shared_body_makes_the_same_envelope_as_the_command() {
        let uuid = CommandUuid::new_random();
        for command in [
            Command::InstallProfile {
                payload: b"<plist>profile</plist>".to_vec(),
            },
            Command::RemoveProfile {
                identifier: "edu.example.wifi".into(),
            },
            Command::DeviceLock {
                message: Some("Ring the office".into()),
                phone_number: None,
            },
        ] {
            let envelope = envelope_for_body(&uuid, &command.encode_body()).unwrap();
            assert_eq!(envelope, command.encode(&uuid));
        }
        assert!(envelope_for_body(&uuid, b"<plist><string>no</string></plist>").is_err());
        assert!(envelope_for_body(&uuid, b"not a plist").is_err());
    }

    #[test]
    fn samples_cover_every_variant() {
        let names: BTreeSet<_> = all_command_samples()
            .iter()
            .map(|c| c.request_type())
            .collect();
        assert_eq!(names.len(), 30, "one sample per Command variant");
        // The queue's typed request types are exactly the commands Orchard can build.
        let kinds: BTreeSet<_> = all_command_samples().iter().map(|c| c.kind()).collect();
        let all: BTreeSet<_> = RequestType::ALL.iter().copied().collect();
        assert_eq!(kinds, all);
        let items: BTreeSet<_> = all_settings_samples()
            .iter()
            .map(|s| s.item_name())
            .collect();
        assert_eq!(items.len(), 16, "one sample per SettingsItem variant");
    }

    #[test]
    fn every_variant_round_trips_through_the_plist() {
        for command in all_command_samples() {
            let (u, decoded) = decode_command(&command.encode(&uuid())).unwrap();
            assert_eq!(u, uuid());
            assert_eq!(decoded, command, "{}", command.request_type());
        }
    }

    #[test]
    fn minimal_variants_round_trip_and_omit_none() {
        let minimal = Command::EraseDevice {
            preserve_data_plan: None,
            disallow_proximity_setup: None,
            return_to_service: None,
        };
        let dict = minimal.to_command_dict();
        assert_eq!(dict.len(), 1, "only RequestType");
        let (_, decoded) = decode_command(&minimal.encode(&uuid())).unwrap();
        assert_eq!(decoded, minimal);
    }

    #[test]
    fn apple_key_names_are_exact() {
        let install = all_command_samples()
            .into_iter()
            .find(|c| c.request_type() == "InstallApplication")
            .unwrap()
            .to_command_dict();
        for key in [
            "iTunesStoreID",
            "Identifier",
            "ManifestURL",
            "ManagementFlags",
            "Options",
        ] {
            assert!(install.contains_key(key), "{key}");
        }
        let options = install
            .get("Options")
            .and_then(Value::as_dictionary)
            .unwrap();
        assert_eq!(
            options
                .get("PurchaseMethod")
                .and_then(Value::as_signed_integer),
            Some(1)
        );

        let lock = Command::DeviceLock {
            message: Some("m".into()),
            phone_number: Some("p".into()),
        }
        .to_command_dict();
        assert_eq!(lock.get("Message").and_then(Value::as_string), Some("m"));
        assert_eq!(
            lock.get("PhoneNumber").and_then(Value::as_string),
            Some("p")
        );

        let clear = Command::ClearPasscode {
            unlock_token: Some(vec![1]),
        }
        .to_command_dict();
        assert_eq!(
            clear.get("UnlockToken").and_then(Value::as_data),
            Some(&[1u8][..])
        );

        let settings = Command::Settings {
            settings: vec![SettingsItem::DeviceName {
                device_name: "x".into(),
            }],
        }
        .to_command_dict();
        let first = settings
            .get("Settings")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_dictionary)
            .unwrap();
        assert_eq!(
            first.get("Item").and_then(Value::as_string),
            Some("DeviceName")
        );
        assert_eq!(
            first.get("DeviceName").and_then(Value::as_string),
            Some("x")
        );
    }

    #[test]
    fn api_json_shape() {
        let json = serde_json::json!({
            "type": "InstallApplication",
            "itunes_store_id": 361309726,
            "management_flags": 1,
            "purchase_method": 1
        });
        let command: Command = serde_json::from_value(json).unwrap();
        assert_eq!(command.request_type(), "InstallApplication");

        let profile: Command = serde_json::from_value(
            serde_json::json!({"type": "InstallProfile", "payload": "AQID"}),
        )
        .unwrap();
        assert_eq!(
            profile,
            Command::InstallProfile {
                payload: vec![1, 2, 3]
            }
        );
        assert_eq!(
            serde_json::to_value(&profile).unwrap(),
            serde_json::json!({"type": "InstallProfile", "payload": "AQID"})
        );

        let settings: Command = serde_json::from_value(serde_json::json!({
            "type": "Settings",
            "settings": [{"item": "DeviceName", "device_name": "iPad 1"}]
        }))
        .unwrap();
        assert_eq!(
            settings,
            Command::Settings {
                settings: vec![SettingsItem::DeviceName {
                    device_name: "iPad 1".into()
                }]
            }
        );

        // The unlock token never comes from (or goes into) API JSON.
        let clear: Command = serde_json::from_value(
            serde_json::json!({"type": "ClearPasscode", "unlock_token": "AQID"}),
        )
        .unwrap();
        assert_eq!(clear, Command::ClearPasscode { unlock_token: None });
        let with_token = Command::ClearPasscode {
            unlock_token: Some(vec![1]),
        };
        assert_eq!(
            serde_json::to_value(&with_token).unwrap(),
            serde_json::json!({"type": "ClearPasscode"})
        );

        for command in all_command_samples() {
            let text = serde_json::to_string(&command).unwrap();
            let back: Command = serde_json::from_str(&text).unwrap();
            if let Command::ClearPasscode { .. } = command {
                continue;
            }
            assert_eq!(back, command, "{text}");
        }
    }

    #[test]
    fn decode_rejects_garbage_without_panicking() {
        assert!(decode_command(b"<plist><dict/></plist>").is_err());
        let unknown = b"<plist><dict><key>CommandUUID</key><string>A</string><key>Command</key><dict><key>RequestType</key><string>Nope</string></dict></dict></plist>";
        assert!(matches!(
            decode_command(unknown),
            Err(ProtocolError::InvalidValue {
                key: "RequestType",
                ..
            })
        ));
    }
}
