//! Offline tests of the simulated iPad: every command through the real encoder, the device's handler and
//! the real report decoder and result parser; profile verification and the SCEP exchange against
//! orchard-pki's CA side. No server needed.

use orchard_pki::signature::sign_profile;
use orchard_pki::{CertificateAuthority, Identity};
use orchard_protocol::commands::{
    all_command_samples, Command, OsUpdate, ReturnToService, SettingsItem,
};
use orchard_protocol::profile::{sample_profile, EnrollmentProfile};
use orchard_protocol::report::{decode_report, CommandReport, ReportStatus};
use orchard_protocol::results::{parse_result, CommandResult};
use orchard_types::{CommandStatus, CommandUuid, UnixTime};

use crate::device::{finish_scep_request, start_scep_request};
use crate::handler::{access, apply_installed_os_update, FollowUp};
use crate::profile::open_enrollment_profile;
use crate::state::{is_bypass_code_format, SharedUserState};
use crate::{CommandOutcome, SimConfig, SimDevice, SimError};

const NOW: UnixTime = UnixTime(1_764_460_800);

/// An iPad as it is after enrollment, without the network: all access rights and an UnlockToken.
fn enrolled_device() -> SimDevice {
    let mut device = SimDevice::new_random(&SimConfig::default());
    device.state.access_rights = access::ALL;
    device.state.enrolled = true;
    device.state.unlock_token = vec![0x5a; 32];
    device.state.push_token = vec![0x11; 32];
    device
}

/// Sends `command` through the device and decodes its report, checking UDID and CommandUUID.
fn run(device: &mut SimDevice, command: &Command) -> (CommandReport, CommandOutcome) {
    let uuid = CommandUuid::new_random();
    let outcome = device.handle_command(&command.encode(&uuid)).unwrap();
    let report = decode_report(&outcome.report).unwrap();
    assert_eq!(report.command_uuid.as_ref(), Some(&uuid));
    assert_eq!(report.udid.as_str(), device.state.udid);
    let handled = outcome.handled.clone().unwrap();
    assert_eq!(handled.uuid, uuid.as_str());
    assert_eq!(handled.request_type, command.request_type());
    (report, outcome)
}

/// Runs a command that must be acknowledged and returns its parsed result.
fn ack(device: &mut SimDevice, command: &Command) -> CommandResult {
    let (report, outcome) = run(device, command);
    assert_eq!(
        report.status,
        ReportStatus::Acknowledged,
        "{}: {:?}",
        command.request_type(),
        report.error_chain
    );
    assert_eq!(
        outcome.handled.map(|h| h.status),
        Some(CommandStatus::Acknowledged)
    );
    parse_result(command.request_type(), &report).unwrap()
}

/// Runs a command that must fail with an ErrorChain in `domain`.
fn error(device: &mut SimDevice, command: &Command, domain: &str) {
    let (report, _) = run(device, command);
    assert_eq!(
        report.status,
        ReportStatus::Error,
        "{}",
        command.request_type()
    );
    let first = report.error_chain.first().expect("an error chain");
    assert_eq!(first.error_domain, domain);
    assert!(first.error_code != 0);
    assert!(first.localized_description.is_some());
}

fn wifi_profile(identifier: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>PayloadType</key><string>Configuration</string>
<key>PayloadVersion</key><integer>1</integer>
<key>PayloadIdentifier</key><string>{identifier}</string>
<key>PayloadUUID</key><string>5B1F3C4E-0000-4000-8000-000000000001</string>
<key>PayloadDisplayName</key><string>Campus Wi-Fi</string>
<key>PayloadContent</key><array><dict>
  <key>PayloadType</key><string>com.apple.wifi.managed</string>
  <key>PayloadVersion</key><integer>1</integer>
  <key>PayloadIdentifier</key><string>{identifier}.wifi</string>
  <key>PayloadUUID</key><string>5B1F3C4E-0000-4000-8000-000000000002</string>
  <key>SSID_STR</key><string>eduroam</string>
</dict></array>
</dict></plist>"#
    )
    .into_bytes()
}

#[test]
fn every_command_gets_a_decodable_report_and_a_parseable_result() {
    for command in all_command_samples() {
        let mut device = enrolled_device();
        device.state.shared_ipad = true;
        let (report, _) = run(&mut device, &command);
        assert!(
            matches!(
                report.status,
                ReportStatus::Acknowledged | ReportStatus::Error
            ),
            "{}: {:?}",
            command.request_type(),
            report.status
        );
        parse_result(command.request_type(), &report).unwrap();
    }
}

#[test]
fn device_information_answers_exactly_the_queries_asked() {
    let mut device = enrolled_device();
    let queries = [
        "UDID",
        "SerialNumber",
        "DeviceName",
        "OSVersion",
        "BuildVersion",
        "ProductName",
        "Model",
        "ModelName",
        "ModelNumber",
        "DeviceCapacity",
        "AvailableDeviceCapacity",
        "BatteryLevel",
        "IsSupervised",
        "IsMultiUser",
        "IsMDMLostModeEnabled",
        "AwaitingConfiguration",
        "WiFiMAC",
        "BluetoothMAC",
        "NoSuchQuery",
    ];
    let command = Command::DeviceInformation {
        queries: queries.iter().map(|q| (*q).to_owned()).collect(),
    };
    let (report, _) = run(&mut device, &command);
    let responses = report
        .body
        .get("QueryResponses")
        .and_then(|v| v.as_dictionary())
        .unwrap();
    assert_eq!(responses.len(), queries.len() - 1, "unknown query ignored");
    let CommandResult::DeviceInformation(info) =
        parse_result("DeviceInformation", &report).unwrap()
    else {
        panic!("wrong result")
    };
    let state = &device.state;
    assert_eq!(info.udid.as_deref(), Some(state.udid.as_str()));
    assert_eq!(
        info.serial_number.as_deref(),
        Some(state.serial_number.as_str())
    );
    assert_eq!(info.product_name.as_deref(), Some("iPad13,18"));
    assert_eq!(info.os_version.as_deref(), Some("18.1"));
    assert_eq!(info.model_number.as_deref(), Some("MPQ03"));
    assert_eq!(info.is_supervised, Some(true));
    assert_eq!(info.is_mdm_lost_mode_enabled, Some(false));
    assert_eq!(info.wifi_mac.as_deref(), Some(state.wifi_mac.as_str()));
    assert!(info.device_capacity.unwrap() > info.available_device_capacity.unwrap());

    let only_two = Command::DeviceInformation {
        queries: vec!["UDID".into(), "BatteryLevel".into()],
    };
    let CommandResult::DeviceInformation(info) = ack(&mut device, &only_two) else {
        panic!("wrong result")
    };
    assert!(info.udid.is_some() && info.battery_level.is_some());
    assert!(info.serial_number.is_none() && info.device_name.is_none());

    // Without the network-information right, MAC addresses are not answered.
    device.state.access_rights = access::ALL & !access::NETWORK_INFORMATION;
    let macs = Command::DeviceInformation {
        queries: vec!["WiFiMAC".into(), "UDID".into()],
    };
    let CommandResult::DeviceInformation(info) = ack(&mut device, &macs) else {
        panic!("wrong result")
    };
    assert!(info.wifi_mac.is_none() && info.udid.is_some());
}

#[test]
fn security_info_reflects_the_passcode() {
    let mut device = enrolled_device();
    let CommandResult::SecurityInfo(info) = ack(&mut device, &Command::SecurityInfo) else {
        panic!("wrong result")
    };
    assert_eq!(info.passcode_present, Some(true));
    assert_eq!(info.hardware_encryption_caps, Some(3));
    assert_eq!(
        info.management_status.and_then(|m| m.enrolled_via_dep),
        Some(true)
    );
}

#[test]
fn profiles_install_list_replace_and_remove() {
    let mut device = enrolled_device();
    let install = Command::InstallProfile {
        payload: wifi_profile("edu.example.wifi"),
    };
    ack(&mut device, &install);
    // Same identifier again: a replacement, not a second profile.
    ack(&mut device, &install);
    assert_eq!(device.state.installed_profiles.len(), 1);

    let CommandResult::ProfileList(list) =
        ack(&mut device, &Command::ProfileList { managed_only: None })
    else {
        panic!("wrong result")
    };
    let wifi = list
        .iter()
        .find(|p| p.payload_identifier.as_deref() == Some("edu.example.wifi"))
        .unwrap();
    assert_eq!(wifi.is_managed, Some(true));
    assert_eq!(wifi.payload_display_name.as_deref(), Some("Campus Wi-Fi"));
    let payloads = wifi.payload_content.as_ref().unwrap();
    assert_eq!(
        payloads.first().and_then(|p| p.payload_type.as_deref()),
        Some("com.apple.wifi.managed")
    );

    ack(
        &mut device,
        &Command::RemoveProfile {
            identifier: "edu.example.wifi".into(),
        },
    );
    assert!(device.state.installed_profiles.is_empty());
    // Unknown identifier (and removing twice) is an error.
    error(
        &mut device,
        &Command::RemoveProfile {
            identifier: "edu.example.wifi".into(),
        },
        "MCProfileErrorDomain",
    );
}

#[test]
fn garbage_profiles_fail_in_the_profile_error_domain() {
    let mut device = enrolled_device();
    for payload in [
        b"definitely not a profile".to_vec(),
        b"<plist><dict><key>PayloadType</key><string>Configuration</string></dict></plist>"
            .to_vec(),
        b"<plist><array/></plist>".to_vec(),
        Vec::new(),
    ] {
        error(
            &mut device,
            &Command::InstallProfile { payload },
            "MCProfileErrorDomain",
        );
    }
    assert!(device.state.installed_profiles.is_empty());
}

#[test]
fn signed_profiles_are_opened_and_their_signer_listed() {
    let mut device = enrolled_device();
    let signer = Identity::generate_self_signed_rsa("Profile Signer", NOW, 30).unwrap();
    let signed = sign_profile(&wifi_profile("edu.example.signed"), &signer, &[]).unwrap();
    ack(&mut device, &Command::InstallProfile { payload: signed });
    let CommandResult::ProfileList(list) = ack(
        &mut device,
        &Command::ProfileList {
            managed_only: Some(true),
        },
    ) else {
        panic!("wrong result")
    };
    let item = list.first().unwrap();
    assert_eq!(
        item.payload_identifier.as_deref(),
        Some("edu.example.signed")
    );
    let signers = item.signer_certificates.as_ref().unwrap();
    assert_eq!(
        signers.first().map(|d| d.as_ref().to_vec()),
        Some(signer.cert_der())
    );
}

#[test]
fn lock_and_clear_passcode_check_the_unlock_token() {
    let mut device = enrolled_device();
    ack(
        &mut device,
        &Command::DeviceLock {
            message: Some("Bring me to room 12".into()),
            phone_number: None,
        },
    );
    assert!(device.state.locked);
    assert_eq!(
        device.state.lock_message.as_deref(),
        Some("Bring me to room 12")
    );

    error(
        &mut device,
        &Command::ClearPasscode {
            unlock_token: Some(vec![1; 32]),
        },
        "MCKeybagErrorDomain",
    );
    error(
        &mut device,
        &Command::ClearPasscode { unlock_token: None },
        "MCKeybagErrorDomain",
    );
    assert!(device.state.passcode_present);
    let token = device.state.unlock_token.clone();
    ack(
        &mut device,
        &Command::ClearPasscode {
            unlock_token: Some(token),
        },
    );
    assert!(!device.state.passcode_present);
    assert!(!device.state.locked);
}

#[test]
fn lost_mode_gates_location_and_sound() {
    let mut device = enrolled_device();
    error(&mut device, &Command::DeviceLocation, "MCMDMErrorDomain");
    error(&mut device, &Command::PlayLostModeSound, "MCMDMErrorDomain");
    error(&mut device, &Command::DisableLostMode, "MCMDMErrorDomain");
    // Neither message nor phone number: refused.
    error(
        &mut device,
        &Command::EnableLostMode {
            message: None,
            phone_number: None,
            footnote: None,
        },
        "MCMDMErrorDomain",
    );

    ack(
        &mut device,
        &Command::EnableLostMode {
            message: Some("This iPad belongs to the library".into()),
            phone_number: Some("+41 44 632 11 11".into()),
            footnote: None,
        },
    );
    let CommandResult::DeviceLocation(location) = ack(&mut device, &Command::DeviceLocation) else {
        panic!("wrong result")
    };
    assert!(location.latitude.is_some_and(|l| (47.0..48.0).contains(&l)));
    assert!(location.longitude.is_some() && location.timestamp.is_some());
    ack(&mut device, &Command::PlayLostModeSound);
    assert_eq!(device.state.lost_mode.as_ref().unwrap().sounds_played, 1);
    let CommandResult::DeviceInformation(info) = ack(
        &mut device,
        &Command::DeviceInformation {
            queries: vec!["IsMDMLostModeEnabled".into()],
        },
    ) else {
        panic!("wrong result")
    };
    assert_eq!(info.is_mdm_lost_mode_enabled, Some(true));

    ack(&mut device, &Command::DisableLostMode);
    assert!(device.state.lost_mode.is_none());
    error(&mut device, &Command::DeviceLocation, "MCMDMErrorDomain");
}

#[test]
fn supervision_is_required_where_apple_requires_it() {
    let mut device = enrolled_device();
    device.state.supervised = false;
    for command in [
        Command::EnableLostMode {
            message: Some("x".into()),
            phone_number: None,
            footnote: None,
        },
        Command::RestartDevice { notify_user: None },
        Command::ShutDownDevice,
        Command::ActivationLockBypassCode,
        Command::AvailableOSUpdates,
        Command::DeviceConfigured,
    ] {
        error(&mut device, &command, "MCMDMErrorDomain");
    }
}

#[test]
fn access_rights_are_enforced() {
    let mut device = enrolled_device();
    device.state.access_rights = access::INSPECT_PROFILES | access::DEVICE_INFORMATION;
    error(
        &mut device,
        &Command::DeviceLock {
            message: None,
            phone_number: None,
        },
        "MCMDMErrorDomain",
    );
    assert!(!device.state.locked);
    error(
        &mut device,
        &Command::EraseDevice {
            preserve_data_plan: None,
            disallow_proximity_setup: None,
            return_to_service: None,
        },
        "MCMDMErrorDomain",
    );
    assert!(device.state.enrolled);
    ack(&mut device, &Command::ProfileList { managed_only: None });
}

#[test]
fn restart_and_shutdown_end_the_session() {
    let mut device = enrolled_device();
    let boots = device.state.boot_count;
    let (_, outcome) = run(&mut device, &Command::RestartDevice { notify_user: None });
    assert_eq!(outcome.follow_up, FollowUp::EndSession);
    let (_, outcome) = run(&mut device, &Command::ShutDownDevice);
    assert_eq!(outcome.follow_up, FollowUp::EndSession);
    assert_eq!(device.state.boot_count, boots + 2);
}

#[test]
fn settings_answer_per_item_and_rename_the_device() {
    let mut device = enrolled_device();
    let command = Command::Settings {
        settings: vec![
            SettingsItem::DeviceName {
                device_name: "Library iPad 7".into(),
            },
            SettingsItem::TimeZone {
                time_zone: "Europe/Berlin".into(),
            },
            SettingsItem::MaximumResidentUsers {
                maximum_resident_users: 4,
            },
        ],
    };
    let (report, _) = run(&mut device, &command);
    assert_eq!(report.status, ReportStatus::Acknowledged);
    let items = report
        .body
        .get("Settings")
        .and_then(|v| v.as_array())
        .unwrap();
    // One answer per item, in request order (DeviceName, TimeZone, MaximumResidentUsers).
    let statuses: Vec<&str> = items
        .iter()
        .map(|i| {
            let d = i.as_dictionary().unwrap();
            assert!(!d.contains_key("Item"), "not one of Apple's response keys");
            d.get("Status").and_then(|v| v.as_string()).unwrap()
        })
        .collect();
    // Not a Shared iPad: MaximumResidentUsers fails.
    assert_eq!(statuses, vec!["Acknowledged", "Acknowledged", "Error"]);
    assert_eq!(device.state.device_name, "Library iPad 7");
    let CommandResult::DeviceInformation(info) = ack(
        &mut device,
        &Command::DeviceInformation {
            queries: vec!["DeviceName".into(), "TimeZone".into()],
        },
    ) else {
        panic!("wrong result")
    };
    assert_eq!(info.device_name.as_deref(), Some("Library iPad 7"));
    assert_eq!(info.time_zone.as_deref(), Some("Europe/Berlin"));
}

#[test]
fn activation_lock_bypass_code_until_cleared() {
    let mut device = enrolled_device();
    let CommandResult::ActivationLockBypassCode(Some(code)) =
        ack(&mut device, &Command::ActivationLockBypassCode)
    else {
        panic!("a supervised iPad has a code")
    };
    assert!(is_bypass_code_format(&code), "{code}");
    ack(&mut device, &Command::ClearActivationLockBypassCode);
    assert_eq!(
        ack(&mut device, &Command::ActivationLockBypassCode),
        CommandResult::ActivationLockBypassCode(None)
    );
}

#[test]
fn device_configured_releases_setup_assistant() {
    let mut device = enrolled_device();
    device.state.awaiting_configuration = true;
    ack(&mut device, &Command::DeviceConfigured);
    assert!(!device.is_awaiting_configuration());
    assert_eq!(device.device_configured_count(), 1);
    // Again (the server resends after a lost answer): still acknowledged, nothing to release.
    ack(&mut device, &Command::DeviceConfigured);
    assert_eq!(device.device_configured_count(), 2);
    let CommandResult::DeviceInformation(info) = ack(
        &mut device,
        &Command::DeviceInformation {
            queries: vec!["AwaitingConfiguration".into()],
        },
    ) else {
        panic!("wrong result")
    };
    assert_eq!(info.awaiting_configuration, Some(false));
}

#[test]
fn bypass_code_is_apples_form_and_changes_with_an_erase() {
    let mut device = enrolled_device();
    let code = device.activation_lock_bypass_code().unwrap().to_owned();
    let groups: Vec<usize> = code.split('-').map(str::len).collect();
    assert_eq!(groups, vec![5, 5, 4, 4, 4, 4], "{code}");
    assert!(orchard_dep::BypassCode::parse(&code).is_ok());
    assert!(!is_bypass_code_format("ABCDE-ABCDE-ABCDE-ABCDE-ABCDE-A"));
    assert!(!is_bypass_code_format(&code.replace('-', "")));
    ack(
        &mut device,
        &Command::EraseDevice {
            preserve_data_plan: None,
            disallow_proximity_setup: None,
            return_to_service: None,
        },
    );
    let after = device.activation_lock_bypass_code().unwrap().to_owned();
    assert_ne!(after, code);
    assert!(is_bypass_code_format(&after), "{after}");
}

#[test]
fn organization_info_is_kept_whole_and_reported() {
    let mut device = enrolled_device();
    ack(
        &mut device,
        &Command::Settings {
            settings: vec![SettingsItem::OrganizationInfo {
                organization_name: "Example University".into(),
                organization_short_name: Some("EU".into()),
                address: Some("1 Campus Road".into()),
                phone: None,
                email: Some("it@example.edu".into()),
                magic: None,
            }],
        },
    );
    let kept = device.state.organization_info.clone().unwrap();
    assert_eq!(kept.short_name.as_deref(), Some("EU"));
    let CommandResult::DeviceInformation(info) = ack(
        &mut device,
        &Command::DeviceInformation {
            queries: vec!["OrganizationInfo".into()],
        },
    ) else {
        panic!("wrong result")
    };
    let org = info.organization_info.unwrap();
    assert_eq!(org.organization_name.as_deref(), Some("Example University"));
    assert_eq!(org.organization_address.as_deref(), Some("1 Campus Road"));
    assert_eq!(org.organization_email.as_deref(), Some("it@example.edu"));
    assert_eq!(org.organization_phone, None);
}

#[test]
fn shared_ipad_users() {
    let mut device = enrolled_device();
    error(&mut device, &Command::UserList, "MCMDMErrorDomain");
    device.state.shared_ipad = true;
    let user = |name: &str, logged_in: bool, unsynced: bool| SharedUserState {
        user_name: name.into(),
        full_name: Some(name.to_uppercase()),
        is_logged_in: logged_in,
        has_data_to_sync: unsynced,
        data_quota: 4 << 30,
        data_used: 1 << 20,
        handled_commands: Vec::new(),
    };
    device.state.shared_users = vec![
        user("jane@example.edu", true, false),
        user("joe@example.edu", false, true),
        user("kim@example.edu", false, false),
    ];
    let CommandResult::UserList(users) = ack(&mut device, &Command::UserList) else {
        panic!("wrong result")
    };
    assert_eq!(users.len(), 3);
    assert_eq!(users.first().and_then(|u| u.is_logged_in), Some(true));

    let delete = |name: &str, force: bool| Command::DeleteUser {
        user_name: Some(name.into()),
        force_deletion: Some(force),
        delete_all_users: None,
    };
    error(
        &mut device,
        &delete("jane@example.edu", false),
        "MCMDMErrorDomain",
    );
    error(
        &mut device,
        &delete("joe@example.edu", false),
        "MCMDMErrorDomain",
    );
    error(
        &mut device,
        &delete("nobody@example.edu", true),
        "MCMDMErrorDomain",
    );
    ack(&mut device, &delete("joe@example.edu", true));
    ack(&mut device, &Command::LogOutUser);
    assert!(device.state.shared_users.iter().all(|u| !u.is_logged_in));
    ack(&mut device, &delete("jane@example.edu", false));
    assert_eq!(device.state.shared_users.len(), 1);
    ack(
        &mut device,
        &Command::DeleteUser {
            user_name: None,
            force_deletion: None,
            delete_all_users: Some(true),
        },
    );
    assert!(device.state.shared_users.is_empty());
}

#[test]
fn os_update_is_offered_scheduled_and_installed_at_next_check_in() {
    let mut device = enrolled_device();
    let CommandResult::AvailableOSUpdates(updates) = ack(&mut device, &Command::AvailableOSUpdates)
    else {
        panic!("wrong result")
    };
    let update = updates.first().unwrap();
    let key = update.product_key.clone().unwrap();
    assert_eq!(update.version.as_deref(), Some("18.2"));

    let CommandResult::ScheduleOSUpdate(results) = ack(
        &mut device,
        &Command::ScheduleOSUpdate {
            updates: vec![
                OsUpdate {
                    product_key: Some(key.clone()),
                    product_version: None,
                    install_action: "InstallASAP".into(),
                },
                OsUpdate {
                    product_key: Some("iOSUpdateNoSuchThing".into()),
                    product_version: None,
                    install_action: "InstallASAP".into(),
                },
            ],
        },
    ) else {
        panic!("wrong result")
    };
    assert_eq!(
        results.first().and_then(|r| r.status.as_deref()),
        Some("Installing")
    );
    assert!(results
        .get(1)
        .and_then(|r| r.error_chain.as_ref())
        .is_some());

    let CommandResult::OSUpdateStatus(status) = ack(&mut device, &Command::OSUpdateStatus) else {
        panic!("wrong result")
    };
    assert_eq!(
        status.first().and_then(|s| s.product_key.as_deref()),
        Some(key.as_str())
    );

    apply_installed_os_update(&mut device.state);
    assert_eq!(device.state.os_version, "18.2");
    assert_eq!(device.state.build_version, "22C152");
    let CommandResult::AvailableOSUpdates(updates) = ack(&mut device, &Command::AvailableOSUpdates)
    else {
        panic!("wrong result")
    };
    assert!(updates.is_empty(), "nothing newer to offer");
}

#[test]
fn apps_install_list_and_remove() {
    let mut device = enrolled_device();
    let install = Command::InstallApplication {
        itunes_store_id: Some(361_309_726),
        identifier: None,
        manifest_url: None,
        management_flags: Some(1),
        purchase_method: Some(1),
        configuration: None,
        attributes: None,
        change_management_state: None,
    };
    let (report, _) = run(&mut device, &install);
    assert_eq!(report.status, ReportStatus::Acknowledged);
    let identifier = report
        .body
        .get("Identifier")
        .and_then(|v| v.as_string())
        .unwrap()
        .to_owned();
    assert_eq!(
        report.body.get("State").and_then(|v| v.as_string()),
        Some("Installing")
    );

    let CommandResult::ManagedApplicationList(managed) = ack(
        &mut device,
        &Command::ManagedApplicationList { identifiers: None },
    ) else {
        panic!("wrong result")
    };
    let status = managed.get(&identifier).unwrap();
    assert_eq!(status.status.as_deref(), Some("Managed"));
    assert_eq!(status.management_flags, Some(1));

    let CommandResult::InstalledApplicationList(all) = ack(
        &mut device,
        &Command::InstalledApplicationList {
            identifiers: None,
            managed_apps_only: None,
        },
    ) else {
        panic!("wrong result")
    };
    assert_eq!(all.len(), 4, "three built-in apps and ours");
    let CommandResult::InstalledApplicationList(only_managed) = ack(
        &mut device,
        &Command::InstalledApplicationList {
            identifiers: None,
            managed_apps_only: Some(true),
        },
    ) else {
        panic!("wrong result")
    };
    assert_eq!(only_managed.len(), 1);
    assert_eq!(
        only_managed.first().and_then(|a| a.device_based_vpp),
        Some(true)
    );

    ack(
        &mut device,
        &Command::RemoveApplication {
            identifier: identifier.clone(),
        },
    );
    error(
        &mut device,
        &Command::RemoveApplication { identifier },
        "MCInstallationErrorDomain",
    );
    // Built-in apps are not managed: MDM cannot remove them.
    error(
        &mut device,
        &Command::RemoveApplication {
            identifier: "com.apple.Pages".into(),
        },
        "MCInstallationErrorDomain",
    );
}

#[test]
fn certificate_list_shows_identity_and_profile_roots() {
    let mut device = enrolled_device();
    let ca = CertificateAuthority::generate("Orchard Test CA", NOW, 30).unwrap();
    let identity = ca.issue_signing_identity("device-1", NOW, 30).unwrap();
    device.state.identity_cert_pem = Some(String::from_utf8(identity.cert_pem()).unwrap());
    let mut profile = wifi_profile("edu.example.roots");
    let root_payload = format!(
        "<dict><key>PayloadType</key><string>com.apple.security.root</string>\
         <key>PayloadIdentifier</key><string>edu.example.roots.ca</string>\
         <key>PayloadUUID</key><string>5B1F3C4E-0000-4000-8000-000000000003</string>\
         <key>PayloadContent</key><data>{}</data></dict>",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ca.cert_der())
    );
    let text = String::from_utf8(profile.clone()).unwrap();
    profile = text
        .replacen("<array>", &format!("<array>{root_payload}"), 1)
        .into_bytes();
    ack(&mut device, &Command::InstallProfile { payload: profile });

    let CommandResult::CertificateList(certs) = ack(
        &mut device,
        &Command::CertificateList { managed_only: None },
    ) else {
        panic!("wrong result")
    };
    let names: Vec<(Option<&str>, Option<bool>)> = certs
        .iter()
        .map(|c| (c.common_name.as_deref(), c.is_identity))
        .collect();
    assert_eq!(
        names,
        vec![
            (Some("device-1"), Some(true)),
            (Some("Orchard Test CA"), Some(false))
        ]
    );
    let CommandResult::CertificateList(managed) = ack(
        &mut device,
        &Command::CertificateList {
            managed_only: Some(true),
        },
    ) else {
        panic!("wrong result")
    };
    assert_eq!(managed.len(), 1);
}

#[test]
fn declarative_management_is_acknowledged() {
    let mut device = enrolled_device();
    ack(
        &mut device,
        &Command::DeclarativeManagement {
            data: Some(
                br#"{"SyncTokens":{"DeclarationsToken":"x","Timestamp":"2025-01-01T00:00:00Z"}}"#
                    .to_vec(),
            ),
        },
    );
    assert_eq!(device.state.declarative_management_syncs, 1);
}

#[test]
fn erase_wipes_the_device_and_return_to_service_keeps_the_profile() {
    let mut device = enrolled_device();
    ack(
        &mut device,
        &Command::InstallProfile {
            payload: wifi_profile("edu.example.wifi"),
        },
    );
    ack(
        &mut device,
        &Command::DeviceLock {
            message: None,
            phone_number: None,
        },
    );
    device.state.identity_cert_pem = Some("pem".into());
    device.state.key_pem = "key".into();
    device.state.server_url = "https://mdm.example.edu/mdm/command".into();
    let udid = device.state.udid.clone();
    let serial = device.state.serial_number.clone();

    let (report, outcome) = run(
        &mut device,
        &Command::EraseDevice {
            preserve_data_plan: None,
            disallow_proximity_setup: None,
            return_to_service: None,
        },
    );
    assert_eq!(report.status, ReportStatus::Acknowledged);
    assert_eq!(
        outcome.follow_up,
        FollowUp::Erased {
            return_to_service_profile: None
        }
    );
    let s = &device.state;
    assert_eq!(
        (s.udid.as_str(), s.serial_number.as_str()),
        (udid.as_str(), serial.as_str())
    );
    assert!(!s.enrolled && !s.locked);
    assert!(s.installed_profiles.is_empty());
    assert!(s.identity_cert_pem.is_none() && s.key_pem.is_empty() && s.server_url.is_empty());
    assert!(s.push_token.is_empty() && s.unlock_token.is_empty());
    assert_eq!(s.installed_apps.len(), 3, "only the built-in apps");
    assert_eq!(s.erase_count, 1);
    assert!(s.awaiting_configuration);
    assert_eq!(s.handled_commands.len(), 3, "the simulator's log survives");

    let mut device = enrolled_device();
    let (_, outcome) = run(
        &mut device,
        &Command::EraseDevice {
            preserve_data_plan: Some(true),
            disallow_proximity_setup: Some(true),
            return_to_service: Some(ReturnToService {
                enabled: true,
                wifi_profile_data: Some(b"wifi".to_vec()),
                mdm_profile_data: Some(b"enrollment profile".to_vec()),
            }),
        },
    );
    assert_eq!(
        outcome.follow_up,
        FollowUp::Erased {
            return_to_service_profile: Some(b"enrollment profile".to_vec())
        }
    );
    assert!(!device.state.enrolled);
}

#[test]
fn removing_the_mdm_profile_unenrolls() {
    let mut device = enrolled_device();
    device.state.check_out_when_removed = true;
    device.state.enrollment_profile = crate::profile::summarize_profile(
        &wifi_profile("edu.example.orchard.enroll"),
        false,
        Vec::new(),
    )
    .ok();
    ack(
        &mut device,
        &Command::InstallProfile {
            payload: wifi_profile("edu.example.wifi"),
        },
    );
    let (report, outcome) = run(
        &mut device,
        &Command::RemoveProfile {
            identifier: "edu.example.orchard.enroll".into(),
        },
    );
    assert_eq!(report.status, ReportStatus::Acknowledged);
    assert_eq!(outcome.follow_up, FollowUp::Unenrolled { check_out: true });
    assert!(!device.state.enrolled);
    assert!(
        device.state.installed_profiles.is_empty(),
        "managed profiles go with it"
    );
}

#[test]
fn unknown_and_malformed_commands_are_format_errors() {
    let mut device = enrolled_device();
    let unknown = br#"<plist><dict><key>CommandUUID</key><string>U-1</string>
        <key>Command</key><dict><key>RequestType</key><string>MakeCoffee</string></dict></dict></plist>"#;
    let missing_key = br#"<plist><dict><key>CommandUUID</key><string>U-2</string>
        <key>Command</key><dict><key>RequestType</key><string>RemoveProfile</string></dict></dict></plist>"#;
    for (bytes, request_type) in [
        (&unknown[..], "MakeCoffee"),
        (&missing_key[..], "RemoveProfile"),
    ] {
        let outcome = device.handle_command(bytes).unwrap();
        let report = decode_report(&outcome.report).unwrap();
        assert_eq!(report.status, ReportStatus::CommandFormatError);
        let handled = outcome.handled.unwrap();
        assert_eq!(handled.status, CommandStatus::CommandFormatError);
        assert_eq!(handled.request_type, request_type);
    }
    // Nothing to answer to: no CommandUUID, or not a plist at all.
    for bytes in [
        &b"<plist><dict><key>Command</key><dict/></dict></plist>"[..],
        &b"\x00\x01garbage"[..],
        &b""[..],
    ] {
        assert!(matches!(
            device.handle_command(bytes),
            Err(SimError::BadCommand(_))
        ));
    }
    // A hostile, deeply nested command does not crash the device.
    let deep = format!(
        "<plist><dict><key>CommandUUID</key><string>U-3</string><key>Command</key>{}{}</dict></plist>",
        "<array>".repeat(5000),
        "</array>".repeat(5000)
    );
    assert!(device.handle_command(deep.as_bytes()).is_err());
}

#[test]
fn not_now_counts_down_then_commands_run_again() {
    let mut device = enrolled_device();
    device.answer_not_now(2);
    let lock = Command::DeviceLock {
        message: None,
        phone_number: None,
    };
    for remaining in [1, 0] {
        let (report, outcome) = run(&mut device, &lock);
        assert_eq!(report.status, ReportStatus::NotNow);
        assert_eq!(
            outcome.handled.map(|h| h.status),
            Some(CommandStatus::NotNow)
        );
        assert_eq!(device.state.not_now_remaining, remaining);
        assert!(!device.state.locked, "nothing ran");
    }
    ack(&mut device, &lock);
    assert!(device.state.locked);
    let log: Vec<CommandStatus> = device
        .state
        .handled_commands
        .iter()
        .map(|h| h.status)
        .collect();
    assert_eq!(
        log,
        vec![
            CommandStatus::NotNow,
            CommandStatus::NotNow,
            CommandStatus::Acknowledged
        ]
    );
}

#[test]
fn idle_report_opens_a_session() {
    let device = enrolled_device();
    let report = decode_report(&crate::handler::idle_report(&device.state).unwrap()).unwrap();
    assert_eq!(report.status, ReportStatus::Idle);
    assert_eq!(report.command_uuid, None);
    assert_eq!(report.udid.as_str(), device.state.udid);
}

// ---------------------------------------------------------------------------------------------------------
// Enrollment pieces that need no server: profile signature checks and the SCEP exchange.

fn signed_enrollment_profile(ca: &CertificateAuthority) -> (EnrollmentProfile, Vec<u8>) {
    let mut profile = sample_profile();
    profile.root_ca_der = Some(ca.cert_der());
    profile.scep.ca_fingerprint = None;
    let signer = ca
        .issue_signing_identity("Orchard profile signing", NOW, 30)
        .unwrap();
    let signed = sign_profile(&profile.to_plist(), &signer, &[ca.identity()]).unwrap();
    (profile, signed)
}

#[test]
fn enrollment_profile_verifies_against_the_anchor_or_its_own_root() {
    let ca = CertificateAuthority::generate("Orchard CA", NOW, 30).unwrap();
    let (profile, signed) = signed_enrollment_profile(&ca);

    let opened = open_enrollment_profile(&signed, &[ca.cert_der()]).unwrap();
    assert_eq!(opened.profile.mdm.server_url, profile.mdm.server_url);
    assert_eq!(opened.trusted_root_der, ca.cert_der());
    assert_eq!(opened.summary.identifier, profile.identifier);
    assert!(!opened.summary.managed);
    assert!(opened
        .summary
        .payloads
        .iter()
        .any(|p| p.payload_type == "com.apple.mdm"));

    // Trust on first use: the profile's own root.
    let opened = open_enrollment_profile(&signed, &[]).unwrap();
    assert_eq!(opened.trusted_root_der, ca.cert_der());

    // Another anchor: refused.
    let other = CertificateAuthority::generate("Someone else", NOW, 30).unwrap();
    assert!(matches!(
        open_enrollment_profile(&signed, &[other.cert_der()]),
        Err(SimError::Profile(_))
    ));
    // Trust on first use, but signed by a CA other than the root inside: refused.
    let (_, foreign) = {
        let mut p = sample_profile();
        p.root_ca_der = Some(ca.cert_der());
        let signer = other.issue_signing_identity("mallory", NOW, 30).unwrap();
        (
            p.clone(),
            sign_profile(&p.to_plist(), &signer, &[other.identity()]).unwrap(),
        )
    };
    assert!(matches!(
        open_enrollment_profile(&foreign, &[]),
        Err(SimError::Profile(_))
    ));
    // Unsigned and garbage: refused.
    assert!(matches!(
        open_enrollment_profile(&profile.to_plist(), &[ca.cert_der()]),
        Err(SimError::Profile(_))
    ));
    assert!(open_enrollment_profile(b"\x30\x03\x02\x01\x00", &[]).is_err());
    // Tampered signature bytes: refused.
    let mut tampered = signed.clone();
    if let Some(byte) = tampered.get_mut(signed.len() / 2) {
        *byte ^= 0x55;
    }
    assert!(open_enrollment_profile(&tampered, &[ca.cert_der()]).is_err());
}

#[test]
fn scep_exchange_with_the_orchard_ca() {
    use orchard_pki::scep;
    let ca = CertificateAuthority::generate("Orchard CA", NOW, 30).unwrap();
    let mut payload = sample_profile().scep;
    payload.challenge = "one-time".into();

    let (key, pending) = start_scep_request(&ca.cert_der(), &payload, "fallback", NOW).unwrap();
    let request = scep::decode_pki_message(&ca, &pending.message_der).unwrap();
    assert_eq!(
        request
            .challenge_password
            .as_ref()
            .map(|c| c.expose().as_str()),
        Some("one-time")
    );
    assert_eq!(
        request.subject_common_name.as_deref(),
        Some("Orchard device")
    );
    let issued = scep::issue_certificate(&ca, &request, NOW, 365).unwrap();
    let reply = scep::cert_rep_success(&ca, &request, &issued).unwrap();
    let cert = finish_scep_request(&pending, &key, &ca.cert_der(), &reply).unwrap();
    assert_eq!(cert.to_der().unwrap(), issued);
    assert!(ca.is_issued_by_me(&issued));

    // A failure reply is an error, not a certificate.
    let refused = scep::cert_rep_failure(&ca, &request, scep::FailInfo::BadRequest).unwrap();
    assert!(matches!(
        finish_scep_request(&pending, &key, &ca.cert_der(), &refused),
        Err(SimError::Scep(_))
    ));
    // Key sizes iOS does not support are refused before any request.
    payload.key_size = 1000;
    assert!(start_scep_request(&ca.cert_der(), &payload, "x", NOW).is_err());
}
