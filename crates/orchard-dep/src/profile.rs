//! The ADE profile (Apple's "cloud configuration") Orchard defines with `POST /profile`: Setup Assistant
//! options, the enrollment URL the device posts its MachineInfo to, and the Setup Assistant panes to skip
//! (validated against Apple's `other/skipkeys.yaml`).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use orchard_types::SerialNumber;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::DepError;

/// Every `skip_setup_items` value in Apple's `other/skipkeys.yaml` (deprecated ones included: older devices
/// still honour them).
pub const SKIP_SETUP_KEYS: &[&str] = &[
    "Accessibility",
    "ActionButton",
    "Android",
    "Appearance",
    "AppleID",
    "AppStore",
    "Biometric",
    "CameraButton",
    "DeviceToDeviceMigration",
    "Diagnostics",
    "DisplayTone",
    "EnableLockdownMode",
    "FileVault",
    "HomeButtonSensitivity",
    "iCloudDiagnostics",
    "iCloudStorage",
    "iMessageAndFaceTime",
    "Intelligence",
    "Keyboard",
    "Location",
    "MessagingActivationUsingPhoneNumber",
    "OnBoarding",
    "Passcode",
    "Payment",
    "Privacy",
    "Restore",
    "RestoreCompleted",
    "ScreenSaver",
    "Safety",
    "ScreenTime",
    "SIMSetup",
    "Siri",
    "SoftwareUpdate",
    "SpokenLanguage",
    "TapToSetup",
    "TermsOfAddress",
    "TOS",
    "TVHomeScreenSync",
    "TVProviderSignIn",
    "TVRoom",
    "UpdateCompleted",
    "Wallpaper",
    "WatchMigration",
    "Welcome",
    "Zoom",
];

/// Apple takes at most this many serials in one profile request.
pub const MAX_SERIALS_PER_REQUEST: usize = 1000;

/// A Setup Assistant pane to skip. [`SkipSetupItem::parse`] accepts only Apple's documented keys; reading a
/// profile back from Apple keeps any value (Apple may know newer keys than we do).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SkipSetupItem(String);

impl SkipSetupItem {
    pub fn parse(key: &str) -> Result<Self, DepError> {
        if SKIP_SETUP_KEYS.contains(&key) {
            Ok(Self(key.to_owned()))
        } else {
            Err(DepError::InvalidProfile(format!(
                "unknown skip_setup_items value {key:?} (see apple's skipkeys list)"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_known(&self) -> bool {
        SKIP_SETUP_KEYS.contains(&self.0.as_str())
    }
}

impl Serialize for SkipSetupItem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SkipSetupItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self(String::deserialize(d)?))
    }
}

/// DER certificates as base64 strings in JSON.
mod der_list {
    use super::*;

    pub fn serialize<S: Serializer>(certs: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(certs.iter().map(|der| BASE64.encode(der)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let encoded: Vec<String> = Vec::deserialize(d)?;
        encoded
            .iter()
            .map(|b64| BASE64.decode(b64.trim()).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// The ADE profile JSON of `POST /profile` and `GET /profile`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdeProfile {
    pub profile_name: String,
    /// Where the device POSTs its CMS-signed MachineInfo and receives the enrollment profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Web-view enrollment instead of `url` (the device sends `x-apple-aspen-deviceinfo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_web_url: Option<String>,
    /// Ignored since iOS 13 (always supervised).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_supervised: Option<bool>,
    /// Always true since iOS 13.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_mandatory: Option<bool>,
    /// False: the user cannot remove the MDM profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_mdm_removable: Option<bool>,
    /// Shared iPad.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_multi_user: Option<bool>,
    /// Setup Assistant waits for our `DeviceConfigured` command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub await_device_configured: Option<bool>,
    /// Setup Assistant advances through its panes by itself (carts and labs; protocol version 2+; Apple
    /// documents it for tvOS and macOS, iPads ignore what they do not support).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_advance_setup: Option<bool>,
    /// The device is set up for (rapid) Return to Service (iOS 26+; ignored by older devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_return_to_service: Option<bool>,
    /// A restored backup does not bring its old enrollment profile back (iOS 26+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub do_not_use_profile_from_backup: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_setup_items: Vec<SkipSetupItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_email_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_magic: Option<String>,
    /// tvOS/macOS only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// tvOS/macOS only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// DER certificates the device trusts for `url` (pins TLS to our server).
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "der_list")]
    pub anchor_certs: Vec<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "der_list")]
    pub supervising_host_certs: Vec<Vec<u8>>,
    /// Serials to assign while defining (at most [`MAX_SERIALS_PER_REQUEST`]; assign more afterwards).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<SerialNumber>,
}

impl AdeProfile {
    /// A profile with only its name set.
    pub fn new(profile_name: impl Into<String>) -> Self {
        Self {
            profile_name: profile_name.into(),
            url: None,
            configuration_web_url: None,
            is_supervised: None,
            is_mandatory: None,
            is_mdm_removable: None,
            is_multi_user: None,
            await_device_configured: None,
            auto_advance_setup: None,
            is_return_to_service: None,
            do_not_use_profile_from_backup: None,
            skip_setup_items: Vec::new(),
            department: None,
            support_phone_number: None,
            support_email_address: None,
            org_magic: None,
            language: None,
            region: None,
            anchor_certs: Vec::new(),
            supervising_host_certs: Vec::new(),
            devices: Vec::new(),
        }
    }

    /// What Apple would refuse, checked before sending: a name, https URLs, known skip keys, certificates that
    /// parse, and at most 1,000 serials.
    pub fn validate(&self) -> Result<(), DepError> {
        let invalid = |msg: String| Err(DepError::InvalidProfile(msg));
        let name = self.profile_name.trim();
        if name.is_empty() {
            return invalid("profile_name is required".into());
        }
        if name.chars().count() > 255 {
            return invalid("profile_name is longer than 255 characters".into());
        }
        for (field, value) in [
            ("url", &self.url),
            ("configuration_web_url", &self.configuration_web_url),
        ] {
            if let Some(url) = value {
                match reqwest::Url::parse(url) {
                    Ok(parsed) if parsed.scheme() == "https" && parsed.host_str().is_some() => {}
                    _ => return invalid(format!("{field} must be an https url, not {url:?}")),
                }
            }
        }
        if let Some(unknown) = self.skip_setup_items.iter().find(|item| !item.is_known()) {
            return invalid(format!(
                "unknown skip_setup_items value {:?} (see apple's skipkeys list)",
                unknown.as_str()
            ));
        }
        if let Some(email) = &self.support_email_address {
            if !email.contains('@') {
                return invalid(format!(
                    "support_email_address {email:?} is not an e-mail address"
                ));
            }
        }
        for (field, certs) in [
            ("anchor_certs", &self.anchor_certs),
            ("supervising_host_certs", &self.supervising_host_certs),
        ] {
            for der in certs {
                if openssl::x509::X509::from_der(der).is_err() {
                    return invalid(format!("{field} holds something that is not a certificate"));
                }
            }
        }
        if self.devices.len() > MAX_SERIALS_PER_REQUEST {
            return invalid(format!(
                "{} devices listed; at most {MAX_SERIALS_PER_REQUEST} per request: define without devices and \
                 assign them afterwards",
                self.devices.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn skip_keys_are_validated() {
        assert!(SkipSetupItem::parse("Siri").is_ok());
        assert!(SkipSetupItem::parse("siri").is_err());
        let mut profile = AdeProfile::new("Physics iPads");
        profile.url = Some("https://mdm.example.edu/dep/enroll".into());
        profile.skip_setup_items = vec![
            SkipSetupItem::parse("AppleID").unwrap(),
            SkipSetupItem::parse("Intelligence").unwrap(),
        ];
        profile.validate().unwrap();

        // A profile read back from Apple may hold a key we do not know; sending it is refused.
        let json = r#"{"profile_name":"x","skip_setup_items":["Siri","FutureKey"]}"#;
        let read: AdeProfile = serde_json::from_str(json).unwrap();
        assert_eq!(read.skip_setup_items.len(), 2);
        assert!(read.validate().is_err());
    }

    #[test]
    fn profile_validation_refuses_what_apple_would() {
        let mut p = AdeProfile::new(" ");
        assert!(p.validate().is_err());
        p.profile_name = "ok".into();
        p.url = Some("http://mdm.example.edu/".into());
        assert!(p.validate().is_err());
        p.url = Some("https://mdm.example.edu/".into());
        p.support_email_address = Some("nobody".into());
        assert!(p.validate().is_err());
        p.support_email_address = Some("it@example.edu".into());
        p.anchor_certs = vec![b"junk".to_vec()];
        assert!(p.validate().is_err());
        p.anchor_certs.clear();
        p.devices = (0..1001)
            .map(|i| SerialNumber::parse(&format!("S{i:011}")).unwrap())
            .collect();
        assert!(p.validate().is_err());
        p.devices.truncate(1000);
        p.validate().unwrap();
    }

    #[test]
    fn anchor_certs_are_base64_der_in_json() {
        let mut p = AdeProfile::new("x");
        p.anchor_certs = vec![vec![0x30, 0x03, 0x02, 0x01, 0x01]];
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["anchor_certs"][0], "MAMCAQE=");
        assert!(json.get("devices").is_none());
        let back: AdeProfile = serde_json::from_value(json).unwrap();
        assert_eq!(back, p);
    }

    /// Our list equals Apple's `other/skipkeys.yaml` (checked when the shared Apple repository sits beside the
    /// workspace, as on developer machines and in CI).
    #[test]
    fn skip_keys_match_apples_yaml() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/apple-device-management/other/skipkeys.yaml");
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("{} not found; list not cross-checked", path.display());
            return;
        };
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let mut apple: Vec<String> = yaml["payloadkeys"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|k| k["key"].as_str().unwrap().to_owned())
            .collect();
        let mut ours: Vec<String> = SKIP_SETUP_KEYS.iter().map(|s| s.to_string()).collect();
        apple.sort();
        ours.sort();
        assert_eq!(ours, apple);
    }
}
