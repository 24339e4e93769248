//! The iPad's command handler, sans-IO: a command plist goes in, the report plist comes out, and the device
//! state changes as a real iPad's would.
//!
//! Order of checks per command, as on a device: an unidentifiable command (no `CommandUUID`) cannot be
//! answered at all; a device that is "locked after boot" answers NotNow; an unknown or malformed command is
//! a CommandFormatError; a command the MDM has no access right for, or that needs supervision, Lost Mode,
//! a Shared iPad … is an Error with an ErrorChain; everything else is executed and Acknowledged with its
//! result keys. The error codes and domains imitate the device's (`MCProfileErrorDomain`,
//! `MCMDMErrorDomain` …); servers must treat them as opaque.

use orchard_protocol::commands::{
    decode_command, Command, OsUpdate, ReturnToService, SettingsItem,
};
use orchard_protocol::report::{CommandReport, ErrorChainItem, ReportStatus};
use orchard_protocol::results::OsUpdateResult;
use orchard_types::{CommandStatus, CommandUuid, Udid, UnixTime};
use plist::{Dictionary, Value};

use crate::inventory;
use crate::profile::{cms_content_unverified, looks_like_plist, summarize_profile};
use crate::state::{
    DeviceState, HandledCommand, InstalledApp, InstalledProfile, LostMode, OrganizationInfoState,
    ScheduledOsUpdate,
};
use crate::SimError;

/// `AccessRights` bits of the MDM payload.
pub mod access {
    pub const INSPECT_PROFILES: u32 = 1;
    pub const INSTALL_REMOVE_PROFILES: u32 = 2;
    pub const LOCK_AND_PASSCODE: u32 = 4;
    pub const ERASE: u32 = 8;
    pub const DEVICE_INFORMATION: u32 = 16;
    pub const NETWORK_INFORMATION: u32 = 32;
    pub const INSPECT_APPS: u32 = 256;
    pub const SECURITY_QUERIES: u32 = 1024;
    pub const SETTINGS: u32 = 2048;
    pub const APP_MANAGEMENT: u32 = 4096;
    pub const ALL: u32 = 8191;
}

/// What the device does after sending the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowUp {
    /// Send the report and take the next command from the reply.
    Continue,
    /// Send the report, then stop (restart, shut down): the reply is not read.
    EndSession,
    /// The device was erased (the state already is); with Return to Service it re-enrolls with the
    /// enclosed enrollment profile after the report went out.
    Erased {
        return_to_service_profile: Option<Vec<u8>>,
    },
    /// The MDM profile was removed by command; the device sends CheckOut if the profile asked for it.
    Unenrolled { check_out: bool },
    /// InstallProfile of a new version of the enrollment profile (same identifier): as iOS does, the device
    /// installs it now — SCEP with its challenge, then Authenticate and TokenUpdate with the new identity —
    /// and reports the command with the identity it then holds (an error report if the install failed).
    ReplaceEnrollment { profile: Vec<u8> },
}

/// The result of handling one command.
#[derive(Debug, Clone)]
pub struct CommandOutcome {
    /// The report plist to PUT to the ServerURL.
    pub report: Vec<u8>,
    /// What was answered.
    pub handled: Option<HandledCommand>,
    pub follow_up: FollowUp,
}

/// How the device answers a command.
enum Answer {
    Acknowledged(Dictionary),
    Error(ErrorChainItem),
    CommandFormatError,
    NotNow,
}

impl Answer {
    fn ack() -> Self {
        Answer::Acknowledged(Dictionary::new())
    }

    fn ack_with(key: &str, value: Value) -> Self {
        let mut body = Dictionary::new();
        body.insert(key.to_owned(), value);
        Answer::Acknowledged(body)
    }

    fn error(domain: &str, code: i64, description: impl Into<String>) -> Self {
        Answer::Error(error_item(domain, code, description))
    }
}

fn error_item(domain: &str, code: i64, description: impl Into<String>) -> ErrorChainItem {
    let description = description.into();
    ErrorChainItem {
        error_code: code,
        error_domain: domain.to_owned(),
        localized_description: Some(description.clone()),
        us_english_description: Some(description),
    }
}

const PROFILE_DOMAIN: &str = "MCProfileErrorDomain";
const MDM_DOMAIN: &str = "MCMDMErrorDomain";
const INSTALLATION_DOMAIN: &str = "MCInstallationErrorDomain";
const KEYBAG_DOMAIN: &str = "MCKeybagErrorDomain";

const PROFILE_MALFORMED: i64 = 1000;
const PROFILE_NOT_INSTALLED: i64 = 1001;
const PROFILE_REMOVAL_FORBIDDEN: i64 = 4002;
const NOT_AUTHORIZED: i64 = 12009;
const NEEDS_SUPERVISION: i64 = 12021;
const APP_NOT_MANAGED: i64 = 12024;
/// An Apps and Books install (PurchaseMethod 1) for a serial that holds no licence for the app: the device
/// cannot get the app from the App Store and refuses the command.
const APP_LICENCE_NOT_FOUND: i64 = 12064;
const NOT_IN_LOST_MODE: i64 = 12067;
const UPDATE_NOT_AVAILABLE: i64 = 12035;
const EMPTY_DEVICE_NAME: i64 = 12001;
const NEEDS_SHARED_IPAD: i64 = 12081;
const USER_NOT_FOUND: i64 = 12082;
const USER_LOGGED_IN: i64 = 12083;
const BAD_UNLOCK_TOKEN: i64 = 6;
const NOT_ON_SHARED_IPAD: i64 = 12080;
const NOT_ON_USER_CHANNEL: i64 = 12084;

/// The update every simulated iPad is offered (one version ahead of 18.1).
pub const OFFERED_UPDATE_VERSION: &str = "18.2";
pub const OFFERED_UPDATE_BUILD: &str = "22C152";
pub const OFFERED_UPDATE_PRODUCT_KEY: &str = "iOSUpdate22C152";

/// The body of the Idle report that opens a session.
pub fn idle_report(state: &DeviceState) -> Result<Vec<u8>, SimError> {
    Ok(CommandReport {
        udid: udid_of(state)?,
        user: None,
        status: ReportStatus::Idle,
        command_uuid: None,
        error_chain: Vec::new(),
        body: Dictionary::new(),
    }
    .encode())
}

fn udid_of(state: &DeviceState) -> Result<Udid, SimError> {
    Udid::parse(&state.udid).map_err(|e| SimError::InvalidArgument(format!("udid: {e}")))
}

/// The Idle report that opens a session on a Shared iPad user's channel.
pub fn user_idle_report(
    state: &DeviceState,
    user: &orchard_protocol::checkin::SharedIpadUser,
) -> Result<Vec<u8>, SimError> {
    Ok(CommandReport {
        udid: udid_of(state)?,
        user: Some(user.clone()),
        status: ReportStatus::Idle,
        command_uuid: None,
        error_chain: Vec::new(),
        body: Dictionary::new(),
    }
    .encode())
}

/// Handles one command a Shared iPad user's channel received: what Apple's YAML allows there (declarative
/// management, DeviceInformation, ProfileList) is answered for that user; device-channel commands (UserList,
/// LogOutUser, DeleteUser, Settings, …) are refused as the device refuses them on the wrong channel.
pub fn handle_user_command(
    state: &mut DeviceState,
    user: &orchard_protocol::checkin::SharedIpadUser,
    command_plist: &[u8],
) -> Result<CommandOutcome, SimError> {
    let envelope = orchard_protocol::parse_dictionary(command_plist)
        .map_err(|e| SimError::BadCommand(e.to_string()))?;
    let uuid_text = envelope
        .get("CommandUUID")
        .and_then(Value::as_string)
        .ok_or_else(|| SimError::BadCommand("no CommandUUID".into()))?;
    let uuid = CommandUuid::parse(uuid_text)
        .map_err(|e| SimError::BadCommand(format!("CommandUUID: {e}")))?;
    let answer = match decode_command(command_plist) {
        Ok((_, Command::DeclarativeManagement { .. })) => {
            state.declarative_management_syncs =
                state.declarative_management_syncs.saturating_add(1);
            Answer::ack()
        }
        Ok((_, Command::ProfileList { .. })) => {
            Answer::ack_with("ProfileList", Value::Array(Vec::new()))
        }
        Ok((_, command)) => Answer::error(
            MDM_DOMAIN,
            NOT_ON_USER_CHANNEL,
            format!(
                "{} is not available on a user channel.",
                command.request_type()
            ),
        ),
        Err(_) => Answer::CommandFormatError,
    };
    let request_type = envelope
        .get("Command")
        .and_then(Value::as_dictionary)
        .and_then(|c| c.get("RequestType"))
        .and_then(Value::as_string)
        .unwrap_or_default()
        .to_owned();
    let (status, report_status, error_chain, body) = match answer {
        Answer::Acknowledged(body) => (
            CommandStatus::Acknowledged,
            ReportStatus::Acknowledged,
            Vec::new(),
            body,
        ),
        Answer::Error(item) => (
            CommandStatus::Error,
            ReportStatus::Error,
            vec![item],
            Dictionary::new(),
        ),
        Answer::CommandFormatError | Answer::NotNow => (
            CommandStatus::CommandFormatError,
            ReportStatus::CommandFormatError,
            Vec::new(),
            Dictionary::new(),
        ),
    };
    let report = CommandReport {
        udid: udid_of(state)?,
        user: Some(user.clone()),
        status: report_status,
        command_uuid: Some(uuid.clone()),
        error_chain,
        body,
    }
    .encode();
    Ok(CommandOutcome {
        report,
        handled: Some(HandledCommand {
            uuid: uuid.as_str().to_owned(),
            request_type,
            status,
        }),
        follow_up: FollowUp::Continue,
    })
}

/// Handles one command plist as the server sent it. Fails only when the command cannot be answered at all
/// (not a plist, or no usable `CommandUUID`); every other problem becomes a report.
pub fn handle_command(
    state: &mut DeviceState,
    command_plist: &[u8],
    now: UnixTime,
) -> Result<CommandOutcome, SimError> {
    let envelope = orchard_protocol::parse_dictionary(command_plist)
        .map_err(|e| SimError::BadCommand(e.to_string()))?;
    let uuid_text = envelope
        .get("CommandUUID")
        .and_then(Value::as_string)
        .ok_or_else(|| SimError::BadCommand("no CommandUUID".into()))?;
    let uuid = CommandUuid::parse(uuid_text)
        .map_err(|e| SimError::BadCommand(format!("CommandUUID: {e}")))?;
    let request_type = envelope
        .get("Command")
        .and_then(Value::as_dictionary)
        .and_then(|c| c.get("RequestType"))
        .and_then(Value::as_string)
        .unwrap_or_default()
        .to_owned();

    let (answer, follow_up) = if state.not_now_remaining > 0 {
        state.not_now_remaining -= 1;
        (Answer::NotNow, FollowUp::Continue)
    } else {
        match decode_command(command_plist) {
            Ok((_, command)) => execute(state, command, now),
            Err(_) => (Answer::CommandFormatError, FollowUp::Continue),
        }
    };

    let (status, report_status, error_chain, body) = match answer {
        Answer::Acknowledged(body) => (
            CommandStatus::Acknowledged,
            ReportStatus::Acknowledged,
            Vec::new(),
            body,
        ),
        Answer::Error(item) => (
            CommandStatus::Error,
            ReportStatus::Error,
            vec![item],
            Dictionary::new(),
        ),
        Answer::CommandFormatError => (
            CommandStatus::CommandFormatError,
            ReportStatus::CommandFormatError,
            Vec::new(),
            Dictionary::new(),
        ),
        Answer::NotNow => (
            CommandStatus::NotNow,
            ReportStatus::NotNow,
            Vec::new(),
            Dictionary::new(),
        ),
    };
    let report = CommandReport {
        udid: udid_of(state)?,
        user: None,
        status: report_status,
        command_uuid: Some(uuid.clone()),
        error_chain,
        body,
    }
    .encode();
    Ok(CommandOutcome {
        report,
        handled: Some(HandledCommand {
            uuid: uuid.as_str().to_owned(),
            request_type,
            status,
        }),
        follow_up,
    })
}

/// The access right a command needs (0: none).
fn required_right(command: &Command) -> u32 {
    use access::*;
    match command {
        Command::ProfileList { .. } | Command::CertificateList { .. } => INSPECT_PROFILES,
        Command::InstallProfile { .. } | Command::RemoveProfile { .. } => INSTALL_REMOVE_PROFILES,
        Command::DeviceLock { .. } | Command::ClearPasscode { .. } => LOCK_AND_PASSCODE,
        Command::EraseDevice { .. } => ERASE,
        Command::DeviceInformation { .. } => DEVICE_INFORMATION,
        Command::InstalledApplicationList { .. } => INSPECT_APPS,
        Command::SecurityInfo => SECURITY_QUERIES,
        Command::Settings { .. } => SETTINGS,
        Command::InstallApplication { .. }
        | Command::RemoveApplication { .. }
        | Command::ManagedApplicationList { .. } => APP_MANAGEMENT,
        _ => 0,
    }
}

/// Commands that only a supervised iPad accepts.
fn needs_supervision(command: &Command) -> bool {
    matches!(
        command,
        Command::EnableLostMode { .. }
            | Command::DisableLostMode
            | Command::DeviceLocation
            | Command::PlayLostModeSound
            | Command::RestartDevice { .. }
            | Command::ShutDownDevice
            | Command::ActivationLockBypassCode
            | Command::ClearActivationLockBypassCode
            | Command::DeviceConfigured
            | Command::AvailableOSUpdates
            | Command::ScheduleOSUpdate { .. }
            | Command::OSUpdateStatus
    )
}

fn execute(state: &mut DeviceState, command: Command, now: UnixTime) -> (Answer, FollowUp) {
    // Zero rights means the device never installed an MDM profile (offline state-machine tests): the
    // simulator then allows everything rather than refusing every command.
    let right = required_right(&command);
    if state.access_rights != 0 && right != 0 && state.access_rights & right == 0 {
        return (
            Answer::error(
                MDM_DOMAIN,
                NOT_AUTHORIZED,
                "The MDM server is not authorized to perform this command.",
            ),
            FollowUp::Continue,
        );
    }
    if needs_supervision(&command) && !state.supervised {
        return (
            Answer::error(
                MDM_DOMAIN,
                NEEDS_SUPERVISION,
                format!("{} requires a supervised device.", command.request_type()),
            ),
            FollowUp::Continue,
        );
    }
    let continue_with = |answer: Answer| (answer, FollowUp::Continue);
    match command {
        Command::DeviceInformation { queries } => continue_with(Answer::ack_with(
            "QueryResponses",
            Value::Dictionary(inventory::query_responses(state, &queries)),
        )),
        Command::SecurityInfo => continue_with(Answer::ack_with(
            "SecurityInfo",
            inventory::security_info(state),
        )),
        Command::InstalledApplicationList {
            identifiers,
            managed_apps_only,
        } => continue_with(Answer::ack_with(
            "InstalledApplicationList",
            inventory::installed_applications(
                state,
                identifiers.as_deref(),
                managed_apps_only.unwrap_or(false),
            ),
        )),
        Command::ProfileList { managed_only } => continue_with(Answer::ack_with(
            "ProfileList",
            inventory::profile_list(state, managed_only.unwrap_or(false)),
        )),
        Command::CertificateList { managed_only } => continue_with(Answer::ack_with(
            "CertificateList",
            inventory::certificate_list(state, managed_only.unwrap_or(false)),
        )),
        Command::InstallProfile { payload } => {
            let replaces_enrollment = is_enrollment_replacement(state, &payload);
            let answer = install_profile(state, &payload);
            match (&answer, replaces_enrollment) {
                (Answer::Acknowledged(_), true) => {
                    (answer, FollowUp::ReplaceEnrollment { profile: payload })
                }
                _ => continue_with(answer),
            }
        }
        Command::RemoveProfile { identifier } => remove_profile(state, &identifier),
        Command::DeviceLock {
            message,
            phone_number,
        } => {
            state.locked = true;
            state.lock_message = message;
            state.lock_phone_number = phone_number;
            continue_with(Answer::ack())
        }
        Command::EraseDevice {
            return_to_service, ..
        } => erase(state, return_to_service),
        Command::EnableLostMode {
            message,
            phone_number,
            footnote,
        } => continue_with(enable_lost_mode(
            state,
            message,
            phone_number,
            footnote,
            now,
        )),
        Command::DisableLostMode => continue_with(match state.lost_mode.take() {
            Some(_) => Answer::ack(),
            None => not_in_lost_mode(),
        }),
        Command::DeviceLocation => continue_with(match &state.lost_mode {
            Some(lost) => Answer::Acknowledged(inventory::device_location(lost, now)),
            None => not_in_lost_mode(),
        }),
        Command::PlayLostModeSound => continue_with(match &mut state.lost_mode {
            Some(lost) => {
                lost.sounds_played = lost.sounds_played.saturating_add(1);
                Answer::ack()
            }
            None => not_in_lost_mode(),
        }),
        Command::ClearPasscode { unlock_token } => {
            continue_with(clear_passcode(state, unlock_token))
        }
        Command::RestartDevice { .. } => {
            state.boot_count = state.boot_count.saturating_add(1);
            (Answer::ack(), FollowUp::EndSession)
        }
        Command::ShutDownDevice => {
            // Someone presses the power button later; the next poll is the device booting again.
            state.boot_count = state.boot_count.saturating_add(1);
            (Answer::ack(), FollowUp::EndSession)
        }
        Command::Settings { settings } => continue_with(apply_settings(state, &settings)),
        // Apple's YAML forbids both on a Shared iPad.
        Command::ActivationLockBypassCode | Command::ClearActivationLockBypassCode
            if state.shared_ipad =>
        {
            continue_with(Answer::error(
                MDM_DOMAIN,
                NOT_ON_SHARED_IPAD,
                format!(
                    "{} is not available on a Shared iPad.",
                    command.request_type()
                ),
            ))
        }
        Command::ActivationLockBypassCode => {
            continue_with(match &state.activation_lock_bypass_code {
                Some(code) => {
                    Answer::ack_with("ActivationLockBypassCode", Value::String(code.clone()))
                }
                // After ClearActivationLockBypassCode the device has nothing left to report.
                None => Answer::ack(),
            })
        }
        Command::ClearActivationLockBypassCode => {
            state.activation_lock_bypass_code = None;
            continue_with(Answer::ack())
        }
        Command::DeviceConfigured => {
            // Setup Assistant goes on; later TokenUpdates and DeviceInformation no longer report
            // AwaitingConfiguration. A device that was not waiting acknowledges too.
            state.awaiting_configuration = false;
            state.device_configured_count = state.device_configured_count.saturating_add(1);
            continue_with(Answer::ack())
        }
        Command::UserList => continue_with(if state.shared_ipad {
            Answer::ack_with("Users", inventory::user_list(state))
        } else {
            needs_shared_ipad("UserList")
        }),
        Command::LogOutUser => continue_with(if state.shared_ipad {
            for user in &mut state.shared_users {
                user.is_logged_in = false;
            }
            Answer::ack()
        } else {
            needs_shared_ipad("LogOutUser")
        }),
        Command::DeleteUser {
            user_name,
            force_deletion,
            delete_all_users,
        } => continue_with(delete_user(
            state,
            user_name.as_deref(),
            force_deletion.unwrap_or(false),
            delete_all_users.unwrap_or(false),
        )),
        Command::AvailableOSUpdates => continue_with(Answer::ack_with(
            "AvailableOSUpdates",
            inventory::available_os_updates(state),
        )),
        Command::ScheduleOSUpdate { updates } => continue_with(schedule_os_update(state, &updates)),
        Command::OSUpdateStatus => continue_with(Answer::ack_with(
            "OSUpdateStatus",
            inventory::os_update_status(state),
        )),
        Command::InstallApplication {
            itunes_store_id,
            identifier,
            manifest_url,
            management_flags,
            purchase_method,
            configuration,
            ..
        } => continue_with(install_application(
            state,
            AppRequest {
                itunes_store_id,
                identifier,
                manifest_url,
                management_flags: management_flags.unwrap_or(0),
                device_based_vpp: purchase_method == Some(1),
                has_configuration: configuration.is_some(),
            },
        )),
        Command::RemoveApplication { identifier } => {
            continue_with(remove_application(state, &identifier))
        }
        Command::ManagedApplicationList { identifiers } => continue_with(Answer::ack_with(
            "ManagedApplicationList",
            inventory::managed_application_list(state, identifiers.as_deref()),
        )),
        Command::DeclarativeManagement { .. } => {
            state.declarative_management_syncs =
                state.declarative_management_syncs.saturating_add(1);
            continue_with(Answer::ack())
        }
    }
}

fn not_in_lost_mode() -> Answer {
    Answer::error(
        MDM_DOMAIN,
        NOT_IN_LOST_MODE,
        "The device is not in Lost Mode.",
    )
}

fn needs_shared_ipad(request_type: &str) -> Answer {
    Answer::error(
        MDM_DOMAIN,
        NEEDS_SHARED_IPAD,
        format!("{request_type} is only available on a Shared iPad."),
    )
}

/// Whether `payload` is a new version of the installed enrollment profile that brings its own SCEP payload
/// (an identity renewal), which the device must install over the network.
fn is_enrollment_replacement(state: &DeviceState, payload: &[u8]) -> bool {
    let Some(installed) = &state.enrollment_profile else {
        return false;
    };
    let content = if looks_like_plist(payload) {
        payload.to_vec()
    } else {
        match cms_content_unverified(payload) {
            Ok((content, _)) => content,
            Err(_) => return false,
        }
    };
    orchard_protocol::profile::EnrollmentProfile::parse(&content)
        .is_ok_and(|p| p.identifier == installed.identifier)
}

/// The Error report of a command whose profile could not be installed (after the fact: the enrollment
/// profile's network install failed).
pub fn install_failed_report(
    state: &DeviceState,
    uuid: &str,
    description: &str,
) -> Result<Vec<u8>, SimError> {
    let uuid =
        CommandUuid::parse(uuid).map_err(|e| SimError::BadCommand(format!("CommandUUID: {e}")))?;
    Ok(CommandReport {
        udid: udid_of(state)?,
        user: None,
        status: ReportStatus::Error,
        command_uuid: Some(uuid),
        error_chain: vec![error_item(
            INSTALLATION_DOMAIN,
            4001,
            format!("The profile could not be installed: {description}"),
        )],
        body: Dictionary::new(),
    }
    .encode())
}

fn install_profile(state: &mut DeviceState, payload: &[u8]) -> Answer {
    match install_profile_bytes(state, payload) {
        Ok(_) => Answer::ack(),
        Err(reason) => Answer::error(
            PROFILE_DOMAIN,
            PROFILE_MALFORMED,
            format!("The profile could not be installed: {reason}"),
        ),
    }
}

/// Installs a profile (plain or signed) as MDM installs it, by InstallProfile or from a declaration's
/// ProfileURL; its PayloadIdentifier, or why it could not be installed.
pub(crate) fn install_profile_bytes(
    state: &mut DeviceState,
    payload: &[u8],
) -> Result<String, String> {
    let (content, signers) = if looks_like_plist(payload) {
        (payload.to_vec(), Vec::new())
    } else {
        cms_content_unverified(payload)
            .map_err(|_| "the profile is neither a plist nor a signed profile".to_owned())?
    };
    let profile = summarize_profile(&content, true, signers)?;
    let identifier = profile.identifier.clone();
    let enrollment_identifier = state
        .enrollment_profile
        .as_ref()
        .map(|p| p.identifier.as_str());
    if enrollment_identifier == Some(profile.identifier.as_str()) {
        // Replacing the MDM profile by InstallProfile is how a server renews the identity; the simulator
        // keeps its enrollment and records the new version.
        // It stays user-installed (unmanaged).
        state.enrollment_profile = Some(InstalledProfile {
            managed: false,
            ..profile
        });
        return Ok(identifier);
    }
    // Same identifier = replacement.
    state
        .installed_profiles
        .retain(|p| p.identifier != profile.identifier);
    state.installed_profiles.push(profile);
    Ok(identifier)
}

fn remove_profile(state: &mut DeviceState, identifier: &str) -> (Answer, FollowUp) {
    if state
        .enrollment_profile
        .as_ref()
        .is_some_and(|p| p.identifier == identifier)
    {
        let check_out = state.check_out_when_removed;
        state.unenroll();
        return (Answer::ack(), FollowUp::Unenrolled { check_out });
    }
    let Some(index) = state
        .installed_profiles
        .iter()
        .position(|p| p.identifier == identifier)
    else {
        return (
            Answer::error(
                PROFILE_DOMAIN,
                PROFILE_NOT_INSTALLED,
                format!("The profile “{identifier}” is not installed."),
            ),
            FollowUp::Continue,
        );
    };
    if state
        .installed_profiles
        .get(index)
        .is_some_and(|p| !p.managed)
    {
        return (
            Answer::error(
                PROFILE_DOMAIN,
                PROFILE_REMOVAL_FORBIDDEN,
                format!("The profile “{identifier}” was not installed by MDM."),
            ),
            FollowUp::Continue,
        );
    }
    state.installed_profiles.remove(index);
    (Answer::ack(), FollowUp::Continue)
}

fn erase(
    state: &mut DeviceState,
    return_to_service: Option<ReturnToService>,
) -> (Answer, FollowUp) {
    let return_to_service_profile = return_to_service
        .filter(|rts| rts.enabled)
        .and_then(|rts| rts.mdm_profile_data);
    state.wipe();
    (
        Answer::ack(),
        FollowUp::Erased {
            return_to_service_profile,
        },
    )
}

fn enable_lost_mode(
    state: &mut DeviceState,
    message: Option<String>,
    phone_number: Option<String>,
    footnote: Option<String>,
    now: UnixTime,
) -> Answer {
    if message.is_none() && phone_number.is_none() {
        return Answer::error(
            MDM_DOMAIN,
            NOT_IN_LOST_MODE,
            "Lost Mode needs a message or a phone number.",
        );
    }
    // A campus somewhere (ETH Zurich main building), with a little per-device jitter.
    let jitter = f64::from(state.udid.bytes().map(u32::from).sum::<u32>() % 100) / 100_000.0;
    state.lost_mode = Some(LostMode {
        message,
        phone_number,
        footnote,
        enabled_at: now.0,
        sounds_played: 0,
        latitude: 47.376_3 + jitter,
        longitude: 8.547_7 - jitter,
    });
    Answer::ack()
}

fn clear_passcode(state: &mut DeviceState, unlock_token: Option<Vec<u8>>) -> Answer {
    match unlock_token {
        Some(token) if !state.unlock_token.is_empty() && token == state.unlock_token => {
            state.passcode_present = false;
            state.locked = false;
            state.lock_message = None;
            state.lock_phone_number = None;
            Answer::ack()
        }
        _ => Answer::error(
            KEYBAG_DOMAIN,
            BAD_UNLOCK_TOKEN,
            "The unlock token is invalid.",
        ),
    }
}

/// `Settings` answers per item: `Settings = [{Item, Status[, ErrorChain]}]`; the command itself is
/// Acknowledged even when an item fails, as on a device.
fn apply_settings(state: &mut DeviceState, settings: &[SettingsItem]) -> Answer {
    let mut results = Vec::with_capacity(settings.len());
    for item in settings {
        let outcome: Result<(), ErrorChainItem> = match item {
            SettingsItem::DeviceName { device_name } => {
                if !state.supervised {
                    Err(error_item(
                        MDM_DOMAIN,
                        NEEDS_SUPERVISION,
                        "Setting the device name requires a supervised device.",
                    ))
                } else if device_name.trim().is_empty() {
                    Err(error_item(
                        MDM_DOMAIN,
                        EMPTY_DEVICE_NAME,
                        "The device name is empty.",
                    ))
                } else {
                    state.device_name = device_name.clone();
                    Ok(())
                }
            }
            SettingsItem::OrganizationInfo {
                organization_name,
                organization_short_name,
                address,
                phone,
                email,
                magic,
            } => {
                state.organization_name = Some(organization_name.clone());
                state.organization_info = Some(OrganizationInfoState {
                    name: organization_name.clone(),
                    short_name: organization_short_name.clone(),
                    address: address.clone(),
                    phone: phone.clone(),
                    email: email.clone(),
                    magic: magic.clone(),
                });
                Ok(())
            }
            SettingsItem::TimeZone { time_zone } => {
                state.time_zone = Some(time_zone.clone());
                Ok(())
            }
            SettingsItem::SharedDeviceConfiguration { .. }
            | SettingsItem::MaximumResidentUsers { .. }
                if !state.shared_ipad =>
            {
                Err(error_item(
                    MDM_DOMAIN,
                    NEEDS_SHARED_IPAD,
                    "This setting is only available on a Shared iPad.",
                ))
            }
            SettingsItem::SharedDeviceConfiguration { .. } => {
                state.shared_device_configuration = serde_json::to_string(item).ok();
                Ok(())
            }
            SettingsItem::ApplicationConfiguration {
                identifier,
                configuration,
            } => match state
                .installed_apps
                .iter_mut()
                .find(|a| &a.identifier == identifier && a.managed)
            {
                Some(app) => {
                    app.has_configuration = configuration.is_some();
                    Ok(())
                }
                None => Err(error_item(
                    MDM_DOMAIN,
                    APP_NOT_MANAGED,
                    format!("The app “{identifier}” is not managed."),
                )),
            },
            // Accepted and remembered nowhere: nothing else the simulator answers depends on them.
            _ => Ok(()),
        };
        // One answer per item, in the order of the request, with Apple's response keys only (Status,
        // ErrorChain, Identifier): the item is known by its position.
        let mut entry = Dictionary::new();
        match outcome {
            Ok(()) => {
                entry.insert("Status".into(), Value::String("Acknowledged".into()));
            }
            Err(e) => {
                entry.insert("Status".into(), Value::String("Error".into()));
                entry.insert(
                    "ErrorChain".into(),
                    Value::Array(vec![error_chain_value(&e)]),
                );
            }
        }
        if let SettingsItem::ApplicationConfiguration { identifier, .. }
        | SettingsItem::ApplicationAttributes { identifier, .. } = item
        {
            entry.insert("Identifier".into(), Value::String(identifier.clone()));
        }
        results.push(Value::Dictionary(entry));
    }
    Answer::ack_with("Settings", Value::Array(results))
}

fn error_chain_value(item: &ErrorChainItem) -> Value {
    plist::to_value(item).unwrap_or_else(|_| Value::Dictionary(Dictionary::new()))
}

fn delete_user(
    state: &mut DeviceState,
    user_name: Option<&str>,
    force: bool,
    delete_all: bool,
) -> Answer {
    if !state.shared_ipad {
        return needs_shared_ipad("DeleteUser");
    }
    if delete_all {
        // Logged-in users and users with unsynced data stay unless forced.
        state
            .shared_users
            .retain(|u| u.is_logged_in || (u.has_data_to_sync && !force));
        return Answer::ack();
    }
    let Some(name) = user_name else {
        return Answer::CommandFormatError;
    };
    let Some(index) = state.shared_users.iter().position(|u| u.user_name == name) else {
        return Answer::error(
            MDM_DOMAIN,
            USER_NOT_FOUND,
            format!("The user “{name}” does not exist."),
        );
    };
    let Some(user) = state.shared_users.get(index) else {
        return Answer::error(
            MDM_DOMAIN,
            USER_NOT_FOUND,
            format!("The user “{name}” does not exist."),
        );
    };
    if user.is_logged_in {
        return Answer::error(
            MDM_DOMAIN,
            USER_LOGGED_IN,
            format!("The user “{name}” is logged in."),
        );
    }
    if user.has_data_to_sync && !force {
        return Answer::error(
            MDM_DOMAIN,
            USER_LOGGED_IN,
            format!("The user “{name}” has data that is not synced yet."),
        );
    }
    state.shared_users.remove(index);
    Answer::ack()
}

fn schedule_os_update(state: &mut DeviceState, updates: &[OsUpdate]) -> Answer {
    let offered = inventory::offered_update(state);
    let mut results = Vec::with_capacity(updates.len());
    for update in updates {
        let offer = offered.as_ref().filter(|offer| {
            update.product_key.as_deref() == Some(offer.product_key.as_str())
                || update.product_version.as_deref() == Some(offer.version.as_str())
        });
        let product_key = update
            .product_key
            .clone()
            .or_else(|| offer.map(|o| o.product_key.clone()))
            .unwrap_or_default();
        let mut result = OsUpdateResult {
            product_key: Some(product_key),
            install_action: Some(update.install_action.clone()),
            ..OsUpdateResult::default()
        };
        match offer {
            Some(offer) => {
                let status = match update.install_action.as_str() {
                    "DownloadOnly" | "NotifyOnly" => "Downloading",
                    "InstallLater" => "Idle",
                    _ => "Installing",
                };
                result.status = Some(status.to_owned());
                state.scheduled_os_update = Some(ScheduledOsUpdate {
                    product_key: offer.product_key.clone(),
                    version: offer.version.clone(),
                    build: offer.build.clone(),
                    install_action: update.install_action.clone(),
                });
            }
            None => {
                result.status = Some("Idle".to_owned());
                result.error_chain = Some(vec![error_item(
                    MDM_DOMAIN,
                    UPDATE_NOT_AVAILABLE,
                    "The requested update is not available for this device.",
                )]);
            }
        }
        results.push(result);
    }
    Answer::ack_with(
        "UpdateResults",
        plist::to_value(&results).unwrap_or_else(|_| Value::Array(Vec::new())),
    )
}

/// An update scheduled to install is installed by the time the device checks in again (it restarted).
pub fn apply_installed_os_update(state: &mut DeviceState) {
    let installs = state.scheduled_os_update.as_ref().is_some_and(|u| {
        !matches!(
            u.install_action.as_str(),
            "DownloadOnly" | "NotifyOnly" | "InstallLater"
        )
    });
    if installs {
        if let Some(update) = state.scheduled_os_update.take() {
            state.os_version = update.version;
            state.build_version = update.build;
            state.boot_count = state.boot_count.saturating_add(1);
        }
    }
}

struct AppRequest {
    itunes_store_id: Option<i64>,
    identifier: Option<String>,
    manifest_url: Option<String>,
    management_flags: i64,
    device_based_vpp: bool,
    has_configuration: bool,
}

fn install_application(state: &mut DeviceState, request: AppRequest) -> Answer {
    if request.device_based_vpp && state.app_licence_associated == Some(false) {
        return Answer::error(
            MDM_DOMAIN,
            APP_LICENCE_NOT_FOUND,
            format!(
                "Could not find a license for app {} on this device.",
                request.itunes_store_id.unwrap_or_default()
            ),
        );
    }
    // The bundle id: given, or what the App Store (or the manifest) would resolve to.
    let identifier = match (
        &request.identifier,
        request.itunes_store_id,
        &request.manifest_url,
    ) {
        (Some(id), _, _) if !id.trim().is_empty() => id.clone(),
        (_, Some(store_id), _) => format!("com.appstore.app{store_id}"),
        (_, _, Some(url)) => format!(
            "com.enterprise.app{:08x}",
            url.bytes()
                .fold(0_u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        ),
        _ => return Answer::CommandFormatError,
    };
    let name = identifier
        .rsplit('.')
        .next()
        .unwrap_or(identifier.as_str())
        .to_owned();
    match state
        .installed_apps
        .iter_mut()
        .find(|a| a.identifier == identifier)
    {
        // Re-sending updates (or takes over) the app.
        Some(app) => {
            app.managed = true;
            app.management_flags = request.management_flags;
            app.has_configuration = request.has_configuration;
            app.device_based_vpp = request.device_based_vpp;
            if request.itunes_store_id.is_some() {
                app.itunes_store_id = request.itunes_store_id;
            }
        }
        None => state.installed_apps.push(InstalledApp {
            identifier: identifier.clone(),
            name,
            version: "1".to_owned(),
            short_version: "1.0".to_owned(),
            bundle_size: 24_117_248,
            dynamic_size: 4_096,
            managed: true,
            itunes_store_id: request.itunes_store_id,
            management_flags: request.management_flags,
            has_configuration: request.has_configuration,
            device_based_vpp: request.device_based_vpp,
        }),
    }
    let mut body = Dictionary::new();
    body.insert("Identifier".into(), Value::String(identifier));
    // The download runs in the background; ManagedApplicationList shows it Managed.
    body.insert("State".into(), Value::String("Installing".into()));
    Answer::Acknowledged(body)
}

fn remove_application(state: &mut DeviceState, identifier: &str) -> Answer {
    match state
        .installed_apps
        .iter()
        .position(|a| a.identifier == identifier && a.managed)
    {
        Some(index) => {
            state.installed_apps.remove(index);
            Answer::ack()
        }
        None => Answer::error(
            INSTALLATION_DOMAIN,
            APP_NOT_MANAGED,
            format!("The app “{identifier}” is not managed."),
        ),
    }
}
