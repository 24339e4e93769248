//! Everything one simulated iPad remembers, serializable so a fleet survives between runs.
//!
//! The state is plain data: the command handler (`handler`) changes it, the network layer (`device`) only
//! reads URLs and keys from it. Binary fields are stored as base64 strings so the JSON state file stays
//! readable.

use rand::Rng;
use serde::{Deserialize, Serialize};

use orchard_types::CommandStatus;

use crate::SimConfig;

/// An apple-issued serial uses digits and consonants only (no vowels, so no accidental words).
const SERIAL_ALPHABET: &[u8] = b"0123456789BCDFGHJKLMNPQRTVWXYZ";
/// Organisationally unique identifiers Apple uses for Wi-Fi and Bluetooth interfaces.
const APPLE_OUIS: [[u8; 3]; 4] = [
    [0xf0, 0x18, 0x98],
    [0xa4, 0x83, 0xe7],
    [0x3c, 0x22, 0xfb],
    [0x88, 0x66, 0x5a],
];
/// The bypass code alphabet: base-32 without the letters that read like digits (B, I, O, S).
const BYPASS_CODE_ALPHABET: &[u8] = b"0123456789ACDEFGHJKLMNPQRTUVWXYZ";
/// Group lengths of the dashed form.
const BYPASS_CODE_GROUPS: [usize; 6] = [5, 5, 4, 4, 4, 4];

/// One iPad as the simulator remembers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    // hardware facts: they survive an erase
    pub udid: String,
    pub serial_number: String,
    /// Apple's model identifier, e.g. `iPad13,18`.
    pub product_name: String,
    /// The marketing part number, e.g. `MPQ03LL/A`.
    pub model: String,
    pub model_name: String,
    pub os_version: String,
    pub build_version: String,
    pub wifi_mac: String,
    pub bluetooth_mac: String,
    /// Storage in GB, as the device reports it.
    pub device_capacity: f64,
    pub available_device_capacity: f64,
    pub battery_level: f64,

    // what the user or MDM set
    pub device_name: String,

    // enrollment
    /// PEM of the device identity's private key, generated at enrollment with the profile's key size
    /// (empty before).
    pub key_pem: String,
    pub identity_cert_pem: Option<String>,
    /// The trust anchors the simulator was configured with (`--ca`); kept across erases because it is the
    /// operator's setting, not device state.
    pub configured_ca_pem: Option<String>,
    /// Roots the device trusts for TLS: the configured anchor plus the profile's `com.apple.security.root`.
    pub ca_pem: Option<String>,
    /// From the MDM payload; empty while not enrolled.
    pub server_url: String,
    pub check_in_url: String,
    pub topic: String,
    pub check_out_when_removed: bool,
    pub access_rights: u32,
    pub enrollment_profile: Option<InstalledProfile>,
    pub enrolled: bool,
    #[serde(with = "base64_bytes")]
    pub push_token: Vec<u8>,
    pub push_magic: String,
    #[serde(with = "base64_bytes")]
    pub unlock_token: Vec<u8>,

    // managed state
    pub installed_profiles: Vec<InstalledProfile>,
    pub installed_apps: Vec<InstalledApp>,
    pub locked: bool,
    pub lock_message: Option<String>,
    pub lock_phone_number: Option<String>,
    pub lost_mode: Option<LostMode>,
    /// The next this-many commands are answered NotNow (as a locked-after-boot iPad does).
    pub not_now_remaining: u32,
    /// Request types this device's MDM client dies on (a fault for tests): such a command is never answered,
    /// the session just ends, as when mdmd crashes running it.
    #[serde(default)]
    pub crashes_on: Vec<String>,
    /// What the App Store said about the Apps and Books licence of the InstallApplication being handled (set
    /// by [`crate::SimDevice`] just before it runs the command; `None`: nobody asked, the install proceeds).
    #[serde(default, skip)]
    pub app_licence_associated: Option<bool>,
    pub passcode_present: bool,
    pub supervised: bool,
    pub activation_lock_bypass_code: Option<String>,
    /// Find My (and with it Activation Lock) turned on by the user; reported in DeviceInformation.
    #[serde(default)]
    pub activation_lock_enabled: bool,
    /// Shared iPad (multi-user) mode.
    pub shared_ipad: bool,
    pub shared_users: Vec<SharedUserState>,
    /// The last `SharedDeviceConfiguration` settings item the device accepted (its JSON).
    #[serde(default)]
    pub shared_device_configuration: Option<String>,
    pub awaiting_configuration: bool,
    pub organization_name: Option<String>,
    pub time_zone: Option<String>,
    pub scheduled_os_update: Option<ScheduledOsUpdate>,
    pub declarative_management_syncs: u32,
    pub boot_count: u32,
    pub erase_count: u32,

    // Automated Device Enrollment (absent in state files written before it existed)
    /// The device's language as MachineInfo reports it (`LANGUAGE`).
    #[serde(default)]
    pub language: Option<String>,
    /// The Apple-issued identity the device signs its MachineInfo with (hardware: survives erases).
    #[serde(default)]
    pub apple_identity: Option<AppleIdentityPem>,
    /// The cloud configuration the device enrolled with at activation; `None` when it was not enrolled by
    /// ADE (or was erased since).
    #[serde(default)]
    pub dep: Option<DepAssignment>,
    /// How many `DeviceConfigured` commands the device acknowledged (simulator bookkeeping).
    #[serde(default)]
    pub device_configured_count: u32,
    /// The last `OrganizationInfo` setting.
    #[serde(default)]
    pub organization_info: Option<OrganizationInfoState>,
    /// The bootstrap token a supervised iPad escrows with SetBootstrapToken after enrolling (empty before, and
    /// after an erase).
    #[serde(default)]
    pub bootstrap_token: Vec<u8>,

    /// Declarative management per channel: "" is the device channel, a user's short name its user channel.
    #[serde(default)]
    pub ddm: std::collections::BTreeMap<String, crate::declarative::DdmChannelState>,
    /// The software update an enforcement declaration started (iOS 17+).
    #[serde(default)]
    pub software_update: crate::declarative::SoftwareUpdateState,

    /// Log of every command this device answered (simulator bookkeeping; survives erases).
    pub handled_commands: Vec<HandledCommand>,
}

/// A configuration profile installed on the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstalledProfile {
    pub identifier: String,
    pub uuid: String,
    pub version: i64,
    pub display_name: Option<String>,
    pub organization: Option<String>,
    pub description: Option<String>,
    /// Installed by MDM (InstallProfile) rather than by the user.
    pub managed: bool,
    pub removal_disallowed: bool,
    /// DER of the CMS signer certificates, if the profile was signed.
    #[serde(with = "base64_list")]
    pub signer_certificates: Vec<Vec<u8>>,
    pub payloads: Vec<PayloadSummary>,
}

/// One entry of a profile's `PayloadContent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayloadSummary {
    pub payload_type: String,
    pub identifier: String,
    pub uuid: String,
    pub version: i64,
    pub display_name: Option<String>,
    /// DER of a certificate payload (`com.apple.security.root` / `.pkcs1`), listed by CertificateList.
    #[serde(with = "base64_option", default)]
    pub certificate_der: Option<Vec<u8>>,
}

/// PEM of the Apple-issued device identity: certificate, PKCS#8 key and the intermediates it chains through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppleIdentityPem {
    pub cert_pem: String,
    pub key_pem: String,
    pub chain_pem: Vec<String>,
}

/// What the device kept from its cloud configuration (the ADE profile assigned to its serial).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepAssignment {
    pub profile_uuid: String,
    pub profile_name: String,
    /// Where the MachineInfo was posted.
    pub enrollment_url: String,
    /// Setup Assistant waits for `DeviceConfigured`.
    pub await_device_configured: bool,
    /// Shared iPad.
    pub is_multi_user: bool,
    pub is_mdm_removable: Option<bool>,
    pub department: Option<String>,
}

/// The `OrganizationInfo` setting as the device keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrganizationInfoState {
    pub name: String,
    pub short_name: Option<String>,
    pub address: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub magic: Option<String>,
}

/// An app on the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstalledApp {
    pub identifier: String,
    pub name: String,
    pub version: String,
    pub short_version: String,
    pub bundle_size: i64,
    pub dynamic_size: i64,
    /// Installed by MDM and therefore managed.
    pub managed: bool,
    pub itunes_store_id: Option<i64>,
    pub management_flags: i64,
    pub has_configuration: bool,
    pub device_based_vpp: bool,
}

/// Lost Mode as enabled by `EnableLostMode`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LostMode {
    pub message: Option<String>,
    pub phone_number: Option<String>,
    pub footnote: Option<String>,
    pub enabled_at: i64,
    pub sounds_played: u32,
    pub latitude: f64,
    pub longitude: f64,
}

/// A user known to a Shared iPad.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedUserState {
    pub user_name: String,
    pub full_name: Option<String>,
    pub is_logged_in: bool,
    pub has_data_to_sync: bool,
    /// Bytes.
    pub data_quota: i64,
    pub data_used: i64,
    /// The commands this user's channel answered, in order.
    #[serde(default)]
    pub handled_commands: Vec<HandledCommand>,
}

/// An OS update accepted by `ScheduleOSUpdate`; applied at the next check-in when it installs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledOsUpdate {
    pub product_key: String,
    pub version: String,
    pub build: String,
    pub install_action: String,
}

/// One command the device answered, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandledCommand {
    pub uuid: String,
    pub request_type: String,
    /// acknowledged | error | command_format_error | not_now.
    pub status: CommandStatus,
}

impl DeviceState {
    /// A factory-fresh iPad of the configured model with random hardware identifiers.
    pub fn new_random(config: &SimConfig) -> Self {
        let mut rng = rand::thread_rng();
        let supervised = true;
        DeviceState {
            udid: random_udid(&mut rng),
            serial_number: random_serial(&mut rng),
            product_name: config.model.clone(),
            model: "MPQ03LL/A".to_owned(),
            model_name: "iPad".to_owned(),
            os_version: config.os_version.clone(),
            build_version: config.build_version.clone(),
            wifi_mac: random_mac(&mut rng),
            bluetooth_mac: random_mac(&mut rng),
            device_capacity: 64.0,
            available_device_capacity: 41.27,
            battery_level: f64::from(rng.gen_range(35_u8..=100)) / 100.0,
            device_name: "iPad".to_owned(),
            key_pem: String::new(),
            identity_cert_pem: None,
            configured_ca_pem: config
                .ca_pem
                .as_ref()
                .map(|pem| String::from_utf8_lossy(pem).into_owned()),
            ca_pem: None,
            server_url: String::new(),
            check_in_url: String::new(),
            topic: String::new(),
            check_out_when_removed: false,
            access_rights: 0,
            enrollment_profile: None,
            enrolled: false,
            push_token: Vec::new(),
            push_magic: String::new(),
            unlock_token: Vec::new(),
            installed_profiles: Vec::new(),
            installed_apps: builtin_apps(),
            locked: false,
            lock_message: None,
            lock_phone_number: None,
            lost_mode: None,
            not_now_remaining: 0,
            crashes_on: Vec::new(),
            app_licence_associated: None,
            passcode_present: true,
            supervised,
            activation_lock_bypass_code: supervised.then(|| random_bypass_code(&mut rng)),
            activation_lock_enabled: false,
            shared_ipad: false,
            shared_users: Vec::new(),
            shared_device_configuration: None,
            awaiting_configuration: false,
            organization_name: None,
            time_zone: None,
            scheduled_os_update: None,
            declarative_management_syncs: 0,
            boot_count: 1,
            erase_count: 0,
            language: Some("en".to_owned()),
            apple_identity: None,
            dep: None,
            device_configured_count: 0,
            organization_info: None,
            bootstrap_token: Vec::new(),
            ddm: std::collections::BTreeMap::new(),
            software_update: crate::declarative::SoftwareUpdateState::default(),
            handled_commands: Vec::new(),
        }
    }

    /// True once Authenticate and TokenUpdate succeeded and no erase or removal happened since.
    pub fn is_enrolled(&self) -> bool {
        self.enrolled
    }

    /// What EraseDevice does: everything but the hardware identity (and the simulator's own log) is gone.
    pub fn wipe(&mut self) {
        let mut rng = rand::thread_rng();
        self.device_name = "iPad".to_owned();
        self.key_pem.clear();
        self.identity_cert_pem = None;
        self.ca_pem = None;
        self.server_url.clear();
        self.check_in_url.clear();
        self.topic.clear();
        self.check_out_when_removed = false;
        self.access_rights = 0;
        self.enrollment_profile = None;
        self.enrolled = false;
        self.push_token.clear();
        self.push_magic.clear();
        self.unlock_token.clear();
        self.bootstrap_token.clear();
        self.installed_profiles.clear();
        self.installed_apps = builtin_apps();
        self.locked = false;
        self.lock_message = None;
        self.lock_phone_number = None;
        self.lost_mode = None;
        self.not_now_remaining = 0;
        self.passcode_present = false;
        self.activation_lock_bypass_code = self.supervised.then(|| random_bypass_code(&mut rng));
        self.shared_users.clear();
        self.shared_device_configuration = None;
        // A wiped iPad comes back in Setup Assistant.
        self.awaiting_configuration = true;
        self.organization_name = None;
        self.organization_info = None;
        // The device activates again and learns its cloud configuration anew.
        self.dep = None;
        self.time_zone = None;
        self.scheduled_os_update = None;
        self.declarative_management_syncs = 0;
        self.ddm.clear();
        self.software_update = crate::declarative::SoftwareUpdateState::default();
        self.available_device_capacity = 41.27;
        self.boot_count = self.boot_count.saturating_add(1);
        self.erase_count = self.erase_count.saturating_add(1);
    }

    /// Forgets the MDM enrollment (profile removed or the server said the device is unknown), keeping the
    /// rest of the device as it is, like iOS does when the MDM profile goes away.
    pub fn unenroll(&mut self) {
        self.enrolled = false;
        self.enrollment_profile = None;
        self.key_pem.clear();
        self.identity_cert_pem = None;
        self.server_url.clear();
        self.check_in_url.clear();
        self.topic.clear();
        self.push_token.clear();
        self.push_magic.clear();
        self.unlock_token.clear();
        // Managed profiles and apps go with the MDM profile.
        self.installed_profiles.retain(|p| !p.managed);
        self.installed_apps.retain(|a| !a.managed);
        self.lost_mode = None;
        // Declarations go with the enrollment too.
        self.ddm.clear();
    }
}

/// The Apple apps a new iPad ships with that MDM inventory reports (App Store apps, unmanaged).
pub fn builtin_apps() -> Vec<InstalledApp> {
    [
        ("com.apple.Pages", "Pages", "14.2", "6510", 412_000_000_i64),
        ("com.apple.Numbers", "Numbers", "14.2", "6510", 389_000_000),
        ("com.apple.Keynote", "Keynote", "14.2", "6510", 498_000_000),
    ]
    .into_iter()
    .map(|(identifier, name, short, build, size)| InstalledApp {
        identifier: identifier.to_owned(),
        name: name.to_owned(),
        version: build.to_owned(),
        short_version: short.to_owned(),
        bundle_size: size,
        dynamic_size: 1_204_224,
        managed: false,
        itunes_store_id: None,
        management_flags: 0,
        has_configuration: false,
        device_based_vpp: false,
    })
    .collect()
}

/// A UDID in the 8-4-4-4-12 uppercase hex form.
pub fn random_udid(rng: &mut impl Rng) -> String {
    let bytes: [u8; 16] = rng.gen();
    let hex = hex::encode_upper(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A 10-character serial number of the randomized kind Apple has issued since 2021.
pub fn random_serial(rng: &mut impl Rng) -> String {
    (0..10)
        .map(|_| {
            let i = rng.gen_range(0..SERIAL_ALPHABET.len());
            char::from(SERIAL_ALPHABET.get(i).copied().unwrap_or(b'X'))
        })
        .collect()
}

fn random_mac(rng: &mut impl Rng) -> String {
    let oui = APPLE_OUIS
        .get(rng.gen_range(0..APPLE_OUIS.len()))
        .copied()
        .unwrap_or([0xf0, 0x18, 0x98]);
    let tail: [u8; 3] = rng.gen();
    oui.iter()
        .chain(tail.iter())
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A fresh Activation Lock bypass code in Apple's human form: 128 random bits as 26 characters over
/// `0123456789ACDEFGHJKLMNPQRTUVWXYZ` (no B, I, O, S), dashed as `XXXXX-XXXXX-XXXX-XXXX-XXXX-XXXX`. The same
/// encoding as the server-side codes of `orchard_dep::BypassCode`, so a server reads it with that type.
pub fn random_bypass_code(rng: &mut impl Rng) -> String {
    let raw: [u8; 16] = rng.gen();
    orchard_dep::BypassCode::from_bytes(raw).code().into_inner()
}

/// True when `code` is a bypass code in Apple's dashed human form.
pub fn is_bypass_code_format(code: &str) -> bool {
    let groups: Vec<&str> = code.split('-').collect();
    groups.iter().map(|g| g.len()).eq(BYPASS_CODE_GROUPS)
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| BYPASS_CODE_ALPHABET.contains(&b)))
        && orchard_dep::BypassCode::parse(code).is_ok()
}

/// Serde helper: `Vec<u8>` as a base64 string.
pub(crate) mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// Serde helper: `Option<Vec<u8>>` as an optional base64 string.
pub(crate) mod base64_option {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => STANDARD
                .decode(text)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// Serde helper: `Vec<Vec<u8>>` as a list of base64 strings.
pub(crate) mod base64_list {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(items: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(items.iter().map(|b| STANDARD.encode(b)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|t| STANDARD.decode(t).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_identifiers_look_like_apples() {
        let mut rng = rand::thread_rng();
        let udid = random_udid(&mut rng);
        let parts: Vec<usize> = udid.split('-').map(str::len).collect();
        assert_eq!(parts, vec![8, 4, 4, 4, 12]);
        assert!(udid
            .chars()
            .all(|c| c == '-' || c.is_ascii_digit() || ('A'..='F').contains(&c)));
        assert!(orchard_types::Udid::parse(&udid).is_ok());

        let serial = random_serial(&mut rng);
        assert_eq!(serial.len(), 10);
        assert!(serial.bytes().all(|b| SERIAL_ALPHABET.contains(&b)));

        let mac = random_mac(&mut rng);
        assert_eq!(mac.len(), 17);
        assert_eq!(mac.matches(':').count(), 5);

        let code = random_bypass_code(&mut rng);
        assert!(is_bypass_code_format(&code), "{code}");
        assert!(!is_bypass_code_format("ABCDE-ABCDE"));
    }

    #[test]
    fn state_files_from_before_ade_still_load() {
        let state = DeviceState::new_random(&SimConfig::default());
        let mut json = serde_json::to_value(&state).unwrap();
        let object = json.as_object_mut().unwrap();
        for key in [
            "language",
            "apple_identity",
            "dep",
            "device_configured_count",
            "organization_info",
        ] {
            assert!(object.remove(key).is_some(), "{key}");
        }
        let old: DeviceState = serde_json::from_value(json).unwrap();
        assert_eq!(old.udid, state.udid);
        assert_eq!(old.device_configured_count, 0);
        assert!(old.dep.is_none() && old.apple_identity.is_none());
    }

    #[test]
    fn two_devices_differ() {
        let config = SimConfig::default();
        let a = DeviceState::new_random(&config);
        let b = DeviceState::new_random(&config);
        assert_ne!(a.udid, b.udid);
        assert_ne!(a.serial_number, b.serial_number);
        assert_eq!(a.product_name, "iPad13,18");
    }

    #[test]
    fn wipe_keeps_hardware_and_forgets_everything_else() {
        let mut s = DeviceState::new_random(&SimConfig::default());
        let udid = s.udid.clone();
        s.enrolled = true;
        s.device_name = "Room 12".into();
        s.push_token = vec![1; 32];
        s.locked = true;
        s.wipe();
        assert_eq!(s.udid, udid);
        assert!(!s.enrolled);
        assert!(!s.locked);
        assert!(s.push_token.is_empty());
        assert_eq!(s.device_name, "iPad");
        assert_eq!(s.erase_count, 1);
        assert!(s.awaiting_configuration);
    }
}
