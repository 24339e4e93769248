//! Automated Device Enrollment from the iPad's side: at activation the device asks Apple (here the local DEP
//! server) for the cloud configuration assigned to its serial number; with one, it POSTs its MachineInfo,
//! signed with its Apple-issued identity, to the profile's `url` and installs the enrollment profile that
//! comes back (SCEP, Authenticate, TokenUpdate). A 403 `com.apple.softwareupdate.required` sends it to a
//! software update first. With `await_device_configured` it stays in Setup Assistant, reporting
//! `AwaitingConfiguration`, until the server sends `DeviceConfigured`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use orchard_dep::fake::{fetch_cloud_configuration, CloudConfiguration, FakeDepServer};
use orchard_dep::machine_info::compare_os_versions;
use orchard_dep::{MachineInfo, SoftwareUpdateRequired};
use orchard_types::{SerialNumber, Udid};
use serde::Deserialize;

use crate::apple_ca::AppleDeviceIdentity;
use crate::device::{body_excerpt, header_text, PROFILE_CONTENT_TYPE};
use crate::handler::{OFFERED_UPDATE_BUILD, OFFERED_UPDATE_VERSION};
use crate::net::{build_client, ClientOptions};
use crate::profile::der_to_pem;
use crate::state::{random_bypass_code, AppleIdentityPem, DepAssignment};
use crate::{SimDevice, SimError};

/// Content type of the signed MachineInfo a device POSTs to the ADE profile's `url`.
pub const MACHINE_INFO_CONTENT_TYPE: &str = "application/pkcs7-signature";
/// Header carrying the base64 signed MachineInfo in web-view enrollment (`configuration_web_url`).
pub const DEVICE_INFO_HEADER: &str = "x-apple-aspen-deviceinfo";
/// [`SimDevice::activate_updating`] gives up after this many required updates in a row (a server that keeps
/// asking for newer versions would otherwise hold the device forever).
pub const MAX_OS_UPDATES_PER_ACTIVATION: u32 = 4;
/// The board identifier an iPad (10th generation) reports as `SOFTWARE_UPDATE_DEVICE_ID`.
pub(crate) const SOFTWARE_UPDATE_DEVICE_ID: &str = "J271AP";

/// Where a device asks for its cloud configuration: the local DEP server standing in for Apple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepActivation {
    pub base_url: String,
    /// DER of the root that issued the DEP server's TLS certificate (`None` for plain HTTP).
    pub root_der: Option<Vec<u8>>,
}

impl DepActivation {
    pub fn new(base_url: impl Into<String>, root_der: Option<Vec<u8>>) -> Self {
        Self {
            base_url: base_url.into(),
            root_der,
        }
    }

    /// Activation against a running local DEP server.
    pub fn for_server(server: &FakeDepServer) -> Self {
        Self::new(server.base_url(), server.root_certificate_der())
    }
}

/// How an activation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// No ADE profile is assigned to the serial: Setup Assistant goes on without MDM.
    NotAssigned,
    /// Enrolled by ADE.
    Enrolled(DepEnrollment),
}

/// What an ADE enrollment produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepEnrollment {
    pub profile_uuid: String,
    /// Where the MachineInfo went (`url`, or `configuration_web_url` for web-view enrollment).
    pub enrollment_url: String,
    /// The device stays in Setup Assistant until `DeviceConfigured` (and said so in its TokenUpdate).
    pub awaiting_configuration: bool,
    /// Shared iPad.
    pub multi_user: bool,
    /// OS versions installed because the server required them, in order ([`SimDevice::activate_updating`]).
    pub os_updates: Vec<String>,
}

/// The documented 403 body (`mdm/errors/softwareupdate.required.yaml`).
#[derive(Deserialize)]
struct SoftwareUpdateBody {
    code: String,
    details: Option<SoftwareUpdateDetails>,
}

#[derive(Deserialize)]
struct SoftwareUpdateDetails {
    #[serde(rename = "OSVersion")]
    os_version: Option<String>,
    #[serde(rename = "BuildVersion")]
    build_version: Option<String>,
}

/// Reads a 403 body as the software-update-required answer; `None` if it is some other refusal.
fn software_update_required(body: &[u8]) -> Option<Result<SimError, SimError>> {
    let parsed: SoftwareUpdateBody = serde_json::from_slice(body).ok()?;
    if parsed.code != SoftwareUpdateRequired::CODE {
        return None;
    }
    let details = parsed.details;
    let build_version = details.as_ref().and_then(|d| d.build_version.clone());
    Some(
        match details
            .and_then(|d| d.os_version)
            .filter(|v| !v.trim().is_empty())
        {
            Some(os_version) => Ok(SimError::SoftwareUpdateRequired {
                os_version,
                build_version,
            }),
            None => Err(SimError::Status {
                what: "ade enrollment (software update required without details.OSVersion)",
                status: SoftwareUpdateRequired::HTTP_STATUS,
                body: body_excerpt(body),
            }),
        },
    )
}

/// A plausible build number for a version the simulator was not told the build of: iPadOS N is build
/// family N+4 ("18.2" → "22C100"), the minor version is the letter.
pub(crate) fn synthetic_build(os_version: &str) -> String {
    if os_version == OFFERED_UPDATE_VERSION {
        return OFFERED_UPDATE_BUILD.to_owned();
    }
    let mut parts = os_version
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0).min(25);
    let patch = parts.next().unwrap_or(0);
    let letter = char::from(b'A' + u8::try_from(minor).unwrap_or(0));
    format!("{}{letter}{}", major + 4, 100 + patch)
}

impl SimDevice {
    /// Gives the device its Apple-issued identity (see [`crate::AppleDeviceCa::issue`]); kept in the state
    /// file and across erases, as it belongs to the hardware.
    pub fn set_apple_identity(&mut self, identity: &AppleDeviceIdentity) -> Result<(), SimError> {
        let (cert_pem, key_pem, chain_pem) = identity.to_pem_parts()?;
        self.state.apple_identity = Some(AppleIdentityPem {
            cert_pem,
            key_pem,
            chain_pem,
        });
        Ok(())
    }

    /// The device's Apple-issued identity.
    pub fn apple_identity(&self) -> Result<AppleDeviceIdentity, SimError> {
        let pem = self
            .state
            .apple_identity
            .as_ref()
            .ok_or(SimError::NoAppleIdentity)?;
        AppleDeviceIdentity::from_pem_parts(&pem.cert_pem, &pem.key_pem, &pem.chain_pem)
    }

    /// The MachineInfo this device would post now (`other/machineinfo.yaml`).
    pub fn machine_info(&self) -> Result<MachineInfo, SimError> {
        let state = &self.state;
        Ok(MachineInfo {
            udid: Udid::parse(&state.udid)
                .map_err(|e| SimError::InvalidArgument(format!("udid: {e}")))?,
            serial: SerialNumber::parse(&state.serial_number)
                .map_err(|e| SimError::InvalidArgument(format!("serial number: {e}")))?,
            product: state.product_name.clone(),
            version: state.build_version.clone(),
            os_version: Some(state.os_version.clone()),
            supplemental_build_version: Some(state.build_version.clone()),
            supplemental_os_version_extra: None,
            // A Wi-Fi iPad has neither.
            imei: None,
            meid: None,
            language: state.language.clone(),
            mdm_can_request_software_update: true,
            software_update_device_id: Some(SOFTWARE_UPDATE_DEVICE_ID.to_owned()),
            pairing_token: None,
        })
    }

    /// The MachineInfo as the device sends it: an attached CMS SignedData by its Apple identity, embedding
    /// the device CA certificate.
    pub fn signed_machine_info(&self) -> Result<Vec<u8>, SimError> {
        let info = self.machine_info()?;
        self.apple_identity()?.sign_attached(&info.to_plist())
    }

    /// Activation with Automated Device Enrollment, as in Setup Assistant: fetch the cloud configuration
    /// for this serial; without one → [`Activation::NotAssigned`]. Otherwise post the signed MachineInfo to
    /// the profile's `url` and install the enrollment profile the server answers (the configured CA and
    /// the profile's `anchor_certs` are trusted for TLS and for the profile signature).
    ///
    /// Errors: [`SimError::SoftwareUpdateRequired`] for the documented 403 (see
    /// [`SimDevice::install_os_update`] and [`SimDevice::activate_updating`]), [`SimError::Status`] for any
    /// other answer but 200, [`SimError::ContentType`] for a 200 that is not a profile. On any error the
    /// device is left as it was before the call.
    pub async fn activate(&mut self, dep: &DepActivation) -> Result<Activation, SimError> {
        if self.state.enrolled {
            return Err(SimError::InvalidArgument(
                "the device is already enrolled: ade enrollment happens in setup assistant, erase it first"
                    .into(),
            ));
        }
        // Signed first: a device without its identity fails before it talks to anyone.
        let signed = self.signed_machine_info()?;
        let serial = SerialNumber::parse(&self.state.serial_number)
            .map_err(|e| SimError::InvalidArgument(format!("serial number: {e}")))?;
        let Some(config) =
            fetch_cloud_configuration(&dep.base_url, dep.root_der.as_deref(), &serial).await?
        else {
            // Setup Assistant finishes without MDM: nobody would ever send DeviceConfigured.
            self.state.awaiting_configuration = false;
            return Ok(Activation::NotAssigned);
        };
        self.enroll_with_cloud_configuration(&config, signed).await
    }

    /// [`SimDevice::activate`] that installs each OS update the server requires (at most `max_updates`,
    /// and only ever upwards) and tries again, as a device in Setup Assistant does.
    pub async fn activate_updating(
        &mut self,
        dep: &DepActivation,
        max_updates: u32,
    ) -> Result<Activation, SimError> {
        let mut installed = Vec::new();
        loop {
            match self.activate(dep).await {
                Ok(Activation::Enrolled(mut enrollment)) => {
                    enrollment.os_updates = installed;
                    return Ok(Activation::Enrolled(enrollment));
                }
                Err(SimError::SoftwareUpdateRequired {
                    os_version,
                    build_version,
                }) if installed.len() < max_updates as usize
                    && compare_os_versions(&self.state.os_version, &os_version)
                        == Some(std::cmp::Ordering::Less) =>
                {
                    self.install_os_update(&os_version, build_version.as_deref());
                    installed.push(os_version);
                }
                other => return other,
            }
        }
    }

    async fn enroll_with_cloud_configuration(
        &mut self,
        config: &CloudConfiguration,
        signed_machine_info: Vec<u8>,
    ) -> Result<Activation, SimError> {
        let profile = &config.profile;
        let anchors = profile.anchor_certs.clone();
        let (enrollment_url, request) = match (&profile.url, &profile.configuration_web_url) {
            (Some(url), _) => {
                let client = self.ade_client(url, &anchors)?;
                let request = client
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, MACHINE_INFO_CONTENT_TYPE)
                    .body(signed_machine_info);
                (url.clone(), request)
            }
            (None, Some(web_url)) => {
                // Web-view enrollment: the page would normally ask the user to sign in first; the simulator
                // takes a profile if the server hands one out straight away.
                let client = self.ade_client(web_url, &anchors)?;
                let request = client
                    .get(web_url)
                    .header(DEVICE_INFO_HEADER, BASE64.encode(&signed_machine_info));
                (web_url.clone(), request)
            }
            (None, None) => {
                return Err(SimError::NoEnrollmentUrl {
                    profile_uuid: config.profile_uuid.as_str().to_owned(),
                    web_url: None,
                })
            }
        };
        let response = request.send().await?;
        let status = response.status().as_u16();
        let content_type = header_text(&response, reqwest::header::CONTENT_TYPE);
        let body = response.bytes().await?;
        if status == SoftwareUpdateRequired::HTTP_STATUS {
            if let Some(answer) = software_update_required(&body) {
                return Err(answer.unwrap_or_else(|e| e));
            }
        }
        if status != 200 {
            return Err(SimError::Status {
                what: "ade enrollment",
                status,
                body: body_excerpt(&body),
            });
        }
        if !content_type.starts_with(PROFILE_CONTENT_TYPE) {
            return Err(SimError::ContentType {
                what: "ade enrollment",
                content_type,
            });
        }

        let await_configuration = profile.await_device_configured.unwrap_or(false);
        let multi_user = profile.is_multi_user.unwrap_or(false);
        let before = self.state.clone();
        // The cloud configuration takes effect before the profile installs: the TokenUpdate of the
        // enrollment already reports AwaitingConfiguration, and a Shared iPad sends no UnlockToken.
        self.state.supervised = true;
        self.state.shared_ipad = multi_user;
        self.state.awaiting_configuration = await_configuration;
        self.state.dep = Some(DepAssignment {
            profile_uuid: config.profile_uuid.as_str().to_owned(),
            profile_name: profile.profile_name.clone(),
            enrollment_url: enrollment_url.clone(),
            await_device_configured: await_configuration,
            is_multi_user: multi_user,
            is_mdm_removable: profile.is_mdm_removable,
            department: profile.department.clone(),
        });
        if let Err(e) = self.enroll_with_profile_anchored(&body, &anchors).await {
            self.state = before;
            return Err(e);
        }
        // Supervision begins: the device makes the Activation Lock bypass code it will report.
        self.state.activation_lock_bypass_code = Some(random_bypass_code(&mut rand::thread_rng()));
        Ok(Activation::Enrolled(DepEnrollment {
            profile_uuid: config.profile_uuid.as_str().to_owned(),
            enrollment_url,
            awaiting_configuration: await_configuration,
            multi_user,
            os_updates: Vec::new(),
        }))
    }

    /// The client for the enrollment URL: it trusts the configured CA and the ADE profile's `anchor_certs`
    /// (a real device would also trust its system roots, which never vouch for a test server).
    fn ade_client(&self, url: &str, anchors_der: &[Vec<u8>]) -> Result<reqwest::Client, SimError> {
        let mut trust = self.state.configured_ca_pem.clone().unwrap_or_default();
        for der in anchors_der {
            trust.push_str(&der_to_pem(der)?);
        }
        if trust.trim().is_empty() && url.starts_with("https:") {
            return Err(SimError::Tls(format!(
                "nothing to trust for {url}: configure the simulator's ca or put the server's root into the ade \
                 profile's anchor_certs"
            )));
        }
        build_client(&ClientOptions {
            ca_pem: (!trust.trim().is_empty()).then(|| trust.into_bytes()),
            keep_alive: false,
            ..ClientOptions::default()
        })
    }

    /// Installs an OS update right away (what the device does when enrollment requires one): new version
    /// and build (a plausible build is made up when none is given), and a restart.
    pub fn install_os_update(&mut self, os_version: &str, build_version: Option<&str>) {
        self.state.os_version = os_version.to_owned();
        self.state.build_version = build_version
            .map(str::to_owned)
            .unwrap_or_else(|| synthetic_build(os_version));
        self.state.scheduled_os_update = None;
        self.state.boot_count = self.state.boot_count.saturating_add(1);
    }

    /// Still held in Setup Assistant, waiting for `DeviceConfigured`.
    pub fn is_awaiting_configuration(&self) -> bool {
        self.state.awaiting_configuration
    }

    /// The name the device shows (and reports in DeviceInformation).
    pub fn device_name(&self) -> &str {
        &self.state.device_name
    }

    /// The Activation Lock bypass code the device would report, if it has one.
    pub fn activation_lock_bypass_code(&self) -> Option<&str> {
        self.state.activation_lock_bypass_code.as_deref()
    }

    /// How many `DeviceConfigured` commands the device acknowledged.
    pub fn device_configured_count(&self) -> u32 {
        self.state.device_configured_count
    }

    /// The cloud configuration the device enrolled with, if it enrolled by ADE.
    pub fn dep_assignment(&self) -> Option<&DepAssignment> {
        self.state.dep.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_update_answer_is_read() {
        let mut answer = SoftwareUpdateRequired::new("18.2");
        answer.build_version = Some("22C152".into());
        match software_update_required(&answer.to_json()) {
            Some(Ok(SimError::SoftwareUpdateRequired {
                os_version,
                build_version,
            })) => {
                assert_eq!(os_version, "18.2");
                assert_eq!(build_version.as_deref(), Some("22C152"));
            }
            other => panic!("{other:?}"),
        }
        assert!(software_update_required(br#"{"code":"FORBIDDEN"}"#).is_none());
        assert!(software_update_required(b"not json").is_none());
        assert!(matches!(
            software_update_required(br#"{"code":"com.apple.softwareupdate.required"}"#),
            Some(Err(SimError::Status { status: 403, .. }))
        ));
    }

    #[test]
    fn synthetic_builds_look_like_apples() {
        assert_eq!(synthetic_build("18.2"), OFFERED_UPDATE_BUILD);
        assert_eq!(synthetic_build("17.4"), "21E100");
        assert_eq!(synthetic_build("18.3.1"), "22D101");
        assert_eq!(synthetic_build("26.0"), "30A100");
    }
}
