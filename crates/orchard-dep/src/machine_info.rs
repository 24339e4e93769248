//! MachineInfo (Apple's `other/machineinfo.yaml`): the CMS-signed plist a device POSTs to the ADE profile's
//! `url` (or sends base64 in `x-apple-aspen-deviceinfo` to `configuration_web_url`) before it gets its
//! enrollment profile. The signature and the signer's chain to a configured root set (Apple's device CA in
//! production, a test root in tests) are verified before a byte of the plist is trusted. Also the 403
//! `com.apple.softwareupdate.required` answer (`mdm/errors/softwareupdate.required.yaml`).

use std::cmp::Ordering;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509StoreContext, X509};
use orchard_pki::Identity;
use orchard_types::{SerialNumber, Udid, UnixTime};
use serde::Serialize;

use crate::DepError;

/// A signed MachineInfo is a few KiB (plist, one or two certificates, a signature).
pub const MAX_SIGNED_MACHINE_INFO_BYTES: usize = 256 * 1024;

/// The device facts a MachineInfo carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineInfo {
    pub udid: Udid,
    pub serial: SerialNumber,
    /// e.g. `iPad13,1`.
    pub product: String,
    /// Build version, e.g. `21A329`.
    pub version: String,
    /// e.g. `17.0` (iOS 17 and later).
    pub os_version: Option<String>,
    pub supplemental_build_version: Option<String>,
    pub supplemental_os_version_extra: Option<String>,
    pub imei: Option<String>,
    pub meid: Option<String>,
    pub language: Option<String>,
    /// The device can be sent to a required software update (iOS 17+).
    pub mdm_can_request_software_update: bool,
    pub software_update_device_id: Option<String>,
    pub pairing_token: Option<Vec<u8>>,
}

fn required_string(dict: &plist::Dictionary, key: &'static str) -> Result<String, DepError> {
    optional_string(dict, key)?
        .ok_or_else(|| DepError::MachineInfo(format!("required key {key} is missing")))
}

fn optional_string(
    dict: &plist::Dictionary,
    key: &'static str,
) -> Result<Option<String>, DepError> {
    match dict.get(key) {
        None => Ok(None),
        Some(plist::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(DepError::MachineInfo(format!("{key} is not a string"))),
    }
}

impl MachineInfo {
    /// Parses the plist (XML or binary), bounded in size and depth before the plist parser sees it.
    pub fn from_plist(bytes: &[u8]) -> Result<Self, DepError> {
        let dict = orchard_protocol::parse_dictionary(bytes)
            .map_err(|e| DepError::MachineInfo(e.to_string()))?;
        let udid = Udid::parse(&required_string(&dict, "UDID")?)
            .map_err(|e| DepError::MachineInfo(e.to_string()))?;
        let serial = SerialNumber::parse(&required_string(&dict, "SERIAL")?)
            .map_err(|e| DepError::MachineInfo(e.to_string()))?;
        let mdm_can_request_software_update = match dict.get("MDM_CAN_REQUEST_SOFTWARE_UPDATE") {
            None => false,
            Some(plist::Value::Boolean(b)) => *b,
            Some(_) => {
                return Err(DepError::MachineInfo(
                    "MDM_CAN_REQUEST_SOFTWARE_UPDATE is not a boolean".into(),
                ))
            }
        };
        let pairing_token = match dict.get("PAIRING_TOKEN") {
            None => None,
            Some(plist::Value::Data(d)) => Some(d.clone()),
            Some(_) => return Err(DepError::MachineInfo("PAIRING_TOKEN is not data".into())),
        };
        Ok(Self {
            udid,
            serial,
            product: required_string(&dict, "PRODUCT")?,
            version: required_string(&dict, "VERSION")?,
            os_version: optional_string(&dict, "OS_VERSION")?,
            supplemental_build_version: optional_string(&dict, "SUPPLEMENTAL_BUILD_VERSION")?,
            supplemental_os_version_extra: optional_string(&dict, "SUPPLEMENTAL_OS_VERSION_EXTRA")?,
            imei: optional_string(&dict, "IMEI")?,
            meid: optional_string(&dict, "MEID")?,
            language: optional_string(&dict, "LANGUAGE")?,
            mdm_can_request_software_update,
            software_update_device_id: optional_string(&dict, "SOFTWARE_UPDATE_DEVICE_ID")?,
            pairing_token,
        })
    }

    /// The XML plist a device would send (simulators sign it with [`sign_machine_info`]).
    pub fn to_plist(&self) -> Vec<u8> {
        let mut dict = plist::Dictionary::new();
        let mut put = |key: &str, value: Option<&String>| {
            if let Some(v) = value {
                dict.insert(key.into(), plist::Value::String(v.clone()));
            }
        };
        put("UDID", Some(&self.udid.to_string()));
        put("SERIAL", Some(&self.serial.to_string()));
        put("PRODUCT", Some(&self.product));
        put("VERSION", Some(&self.version));
        put("OS_VERSION", self.os_version.as_ref());
        put(
            "SUPPLEMENTAL_BUILD_VERSION",
            self.supplemental_build_version.as_ref(),
        );
        put(
            "SUPPLEMENTAL_OS_VERSION_EXTRA",
            self.supplemental_os_version_extra.as_ref(),
        );
        put("IMEI", self.imei.as_ref());
        put("MEID", self.meid.as_ref());
        put("LANGUAGE", self.language.as_ref());
        put(
            "SOFTWARE_UPDATE_DEVICE_ID",
            self.software_update_device_id.as_ref(),
        );
        if self.mdm_can_request_software_update {
            dict.insert(
                "MDM_CAN_REQUEST_SOFTWARE_UPDATE".into(),
                plist::Value::Boolean(true),
            );
        }
        if let Some(token) = &self.pairing_token {
            dict.insert("PAIRING_TOKEN".into(), plist::Value::Data(token.clone()));
        }
        let mut out = Vec::new();
        // Writing a dictionary of strings, booleans and data into a Vec cannot fail.
        let _ = plist::Value::Dictionary(dict).to_writer_xml(&mut out);
        out
    }

    /// True when the device reports an OS version below `minimum` (e.g. "17.4"). `None` when it reports none
    /// (before iOS 17) or a version that does not read as numbers.
    pub fn os_version_below(&self, minimum: &str) -> Option<bool> {
        let os = self.os_version.as_deref()?;
        compare_os_versions(os, minimum).map(|o| o == Ordering::Less)
    }

    /// Whether to answer [`SoftwareUpdateRequired`]: the OS is below `minimum` and the device says it can be
    /// sent to a required update (a device that cannot would be stuck in Setup Assistant).
    pub fn requires_update_to(&self, minimum: &str) -> bool {
        self.mdm_can_request_software_update && self.os_version_below(minimum) == Some(true)
    }
}

/// Compares dotted numeric versions ("17.4" < "17.10", "17" == "17.0"); a supplemental suffix after a space
/// ("16.1 (a)") is ignored. `None` if a component is not a number.
pub fn compare_os_versions(a: &str, b: &str) -> Option<Ordering> {
    fn parts(v: &str) -> Option<Vec<u64>> {
        v.split_whitespace()
            .next()?
            .split('.')
            .map(|p| p.parse::<u64>().ok())
            .collect()
    }
    let (mut a, mut b) = (parts(a)?, parts(b)?);
    let len = a.len().max(b.len());
    a.resize(len, 0);
    b.resize(len, 0);
    Some(a.cmp(&b))
}

/// A MachineInfo whose signature and chain were verified, with the certificate that signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedMachineInfo {
    pub info: MachineInfo,
    pub signer_cert_der: Vec<u8>,
    pub signer_common_name: Option<String>,
}

/// Verifies signed MachineInfo against a fixed set of trusted roots.
///
/// Validity dates are not checked by [`MachineInfoVerifier::verify`]: the device identities Apple issued chain
/// through long-lived device CAs whose own validity has been seen to end while devices still sign with them,
/// and a MachineInfo proves the device, not the moment. [`MachineInfoVerifier::verify_at`] checks them too.
#[derive(Clone)]
pub struct MachineInfoVerifier {
    roots: Vec<X509>,
}

impl std::fmt::Debug for MachineInfoVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineInfoVerifier")
            .field("roots", &self.roots.len())
            .finish()
    }
}

impl MachineInfoVerifier {
    /// `trusted_roots_der`: Apple's root (and device CA) certificates in production; a test root in tests.
    pub fn new(trusted_roots_der: &[Vec<u8>]) -> Result<Self, DepError> {
        if trusted_roots_der.is_empty() {
            return Err(DepError::Config(
                "machineinfo verification needs at least one trusted root".into(),
            ));
        }
        let roots = trusted_roots_der
            .iter()
            .map(|der| X509::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DepError::Config(format!("trusted root is not a certificate: {e}")))?;
        Ok(Self { roots })
    }

    /// Verifies an attached CMS SignedData over a MachineInfo plist (the request body, `application/pkcs7-signature`).
    pub fn verify(&self, signed: &[u8]) -> Result<VerifiedMachineInfo, DepError> {
        self.verify_inner(signed, None)
    }

    /// [`MachineInfoVerifier::verify`] that also requires every certificate of the chain to be valid at `now`.
    pub fn verify_at(&self, signed: &[u8], now: UnixTime) -> Result<VerifiedMachineInfo, DepError> {
        self.verify_inner(signed, Some(now))
    }

    /// The `x-apple-aspen-deviceinfo` header of web-view enrollment: base64 of the same signed MachineInfo.
    pub fn verify_header(&self, header_b64: &str) -> Result<VerifiedMachineInfo, DepError> {
        let header = header_b64.trim();
        if header.len() > MAX_SIGNED_MACHINE_INFO_BYTES * 4 / 3 + 4 {
            return Err(DepError::MachineInfo("header is too large".into()));
        }
        let der = BASE64
            .decode(header)
            .map_err(|e| DepError::MachineInfo(format!("header is not base64: {e}")))?;
        self.verify(&der)
    }

    fn verify_inner(
        &self,
        signed: &[u8],
        now: Option<UnixTime>,
    ) -> Result<VerifiedMachineInfo, DepError> {
        let result = self.check(signed, now);
        if result.is_err() {
            // Leave no stale entries on this thread's OpenSSL error queue.
            drop(ErrorStack::get());
        }
        result
    }

    fn check(&self, signed: &[u8], now: Option<UnixTime>) -> Result<VerifiedMachineInfo, DepError> {
        if signed.len() > MAX_SIGNED_MACHINE_INFO_BYTES {
            return Err(DepError::MachineInfo(
                "signed machineinfo is too large".into(),
            ));
        }
        let refuse = |what: &str| DepError::MachineInfoSignature(what.to_owned());
        let pkcs7 = Pkcs7::from_der(signed).map_err(|_| refuse("body is not a der cms message"))?;
        let is_signed = pkcs7
            .type_()
            .map(|t| t.nid() == Nid::PKCS7_SIGNED)
            .unwrap_or(false);
        if !is_signed || pkcs7.signed().is_none() {
            return Err(refuse("body is not cms signed-data"));
        }
        let no_extra = Stack::<X509>::new()?;
        let empty_store = X509StoreBuilder::new()?.build();
        let mut content = Vec::new();
        // Signature over the embedded content with the embedded signer certificate; the chain is checked
        // below without OpenSSL's S/MIME purpose rules (STACK.md pitfall 3).
        pkcs7
            .verify(
                &no_extra,
                &empty_store,
                None,
                Some(&mut content),
                Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY,
            )
            .map_err(|_| refuse("the signature does not verify over the content"))?;
        let signers = pkcs7
            .signers(&no_extra, Pkcs7Flags::empty())
            .map_err(|_| refuse("signer certificate not found in the message"))?;
        if signers.len() != 1 {
            return Err(refuse("exactly one signer is expected"));
        }
        let signer = signers
            .get(0)
            .ok_or_else(|| refuse("signer certificate not found in the message"))?
            .to_owned();

        let mut store = X509StoreBuilder::new()?;
        for root in &self.roots {
            store.add_cert(root.clone())?;
        }
        match now {
            Some(now) => {
                let mut param = X509VerifyParam::new()?;
                param.set_time(now.0);
                store.set_param(&param)?;
            }
            None => store.set_flags(X509VerifyFlags::NO_CHECK_TIME)?,
        }
        let store = store.build();
        let mut untrusted = Stack::<X509>::new()?;
        if let Some(certs) = pkcs7.signed().and_then(|s| s.certificates()) {
            for cert in certs {
                untrusted.push(cert.to_owned())?;
            }
        }
        let mut context = X509StoreContext::new()?;
        let (ok, error) = context.init(&store, &signer, &untrusted, |ctx| {
            let ok = ctx.verify_cert()?;
            Ok((ok, ctx.error()))
        })?;
        if !ok {
            return Err(DepError::MachineInfoSignature(format!(
                "the signer does not chain to a trusted root: {}",
                error.error_string()
            )));
        }
        let info = MachineInfo::from_plist(&content)?;
        let signer_common_name = signer
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .next()
            .and_then(|e| e.data().to_string().ok());
        Ok(VerifiedMachineInfo {
            info,
            signer_cert_der: signer.to_der()?,
            signer_common_name,
        })
    }
}

/// The device's side: MachineInfo as an attached CMS SignedData by `signer`, embedding `chain` (what a
/// simulated iPad posts).
pub fn sign_machine_info(
    info: &MachineInfo,
    signer: &Identity,
    chain: &[&Identity],
) -> Result<Vec<u8>, DepError> {
    orchard_pki::signature::sign_profile(&info.to_plist(), signer, chain)
        .map_err(|e| DepError::Crypto(e.to_string()))
}

/// A beta program the device enrolls in for the required update (iOS 17.5+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredBetaProgram {
    pub description: String,
    /// The ASM seeding service token.
    pub token: String,
}

/// The 403 answer that sends a device in Setup Assistant to a software update before it may enroll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftwareUpdateRequired {
    /// The OS version to update to, e.g. "17.4" (a supplemental version like "16.1 (a)" is allowed).
    pub os_version: String,
    pub build_version: Option<String>,
    /// Shown to the user if the device can.
    pub message: Option<String>,
    /// Logged by the device only.
    pub description: Option<String>,
    pub require_beta_program: Option<RequiredBetaProgram>,
}

#[derive(Serialize)]
struct SoftwareUpdateRequiredJson<'a> {
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    details: SoftwareUpdateDetails<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SoftwareUpdateDetails<'a> {
    #[serde(rename = "OSVersion")]
    os_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    build_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    require_beta_program: Option<BetaJson<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct BetaJson<'a> {
    description: &'a str,
    token: &'a str,
}

impl SoftwareUpdateRequired {
    pub const HTTP_STATUS: u16 = 403;
    pub const CODE: &'static str = "com.apple.softwareupdate.required";
    pub const CONTENT_TYPE: &'static str = "application/json";

    pub fn new(os_version: impl Into<String>) -> Self {
        Self {
            os_version: os_version.into(),
            build_version: None,
            message: None,
            description: None,
            require_beta_program: None,
        }
    }

    /// The JSON body (send with [`Self::HTTP_STATUS`] and [`Self::CONTENT_TYPE`]).
    pub fn to_json(&self) -> Vec<u8> {
        let body = SoftwareUpdateRequiredJson {
            code: Self::CODE,
            description: self.description.as_deref(),
            message: self.message.as_deref(),
            details: SoftwareUpdateDetails {
                os_version: &self.os_version,
                build_version: self.build_version.as_deref(),
                require_beta_program: self.require_beta_program.as_ref().map(|b| BetaJson {
                    description: &b.description,
                    token: &b.token,
                }),
            },
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use orchard_pki::CertificateAuthority;

    const NOW: UnixTime = UnixTime(1_764_460_800);

    fn sample() -> MachineInfo {
        MachineInfo {
            udid: Udid::parse("00008103-001A2B3C4D5E6F70").unwrap(),
            serial: SerialNumber::parse("DMPXK0ABCDEF").unwrap(),
            product: "iPad13,1".into(),
            version: "21E236".into(),
            os_version: Some("17.4.1".into()),
            supplemental_build_version: Some("21E236".into()),
            supplemental_os_version_extra: None,
            imei: None,
            meid: None,
            language: Some("de".into()),
            mdm_can_request_software_update: true,
            software_update_device_id: Some("J307AP".into()),
            pairing_token: None,
        }
    }

    /// An "Apple" root, a device CA under it, and a device identity under that: the shape of Apple's chain
    /// (device → Apple iPhone Device CA → root), with the device CA embedded in the CMS message.
    struct Pki {
        root: CertificateAuthority,
        device_ca: Identity,
        device: Identity,
    }

    /// A certificate for a fresh key, signed by `issuer`; a CA certificate when `ca`.
    fn issue(issuer: &Identity, cn: &str, ca: bool) -> Identity {
        use openssl::asn1::Asn1Time;
        use openssl::bn::{BigNum, MsbOption};
        use openssl::hash::MessageDigest;
        use openssl::pkey::PKey;
        use openssl::rsa::Rsa;
        use openssl::x509::extension::{BasicConstraints, KeyUsage};
        use openssl::x509::{X509Builder, X509Name};

        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509Name::builder().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        let mut serial = BigNum::new().unwrap();
        serial.rand(64, MsbOption::ONE, false).unwrap();
        b.set_serial_number(&serial.to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(issuer.x509().subject_name()).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::from_unix(NOW.0 - 3600).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(NOW.0 + 3650 * 86_400).unwrap())
            .unwrap();
        if ca {
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
            b.append_extension(KeyUsage::new().critical().key_cert_sign().build().unwrap())
                .unwrap();
        } else {
            b.append_extension(BasicConstraints::new().critical().build().unwrap())
                .unwrap();
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .digital_signature()
                    .build()
                    .unwrap(),
            )
            .unwrap();
        }
        b.sign(issuer.private_key(), MessageDigest::sha256())
            .unwrap();
        Identity::from_parts(b.build(), key).unwrap()
    }

    fn pki() -> Pki {
        let root = CertificateAuthority::generate("Test Apple Root CA", NOW, 3650).unwrap();
        let device_ca = issue(root.identity(), "Test Apple iPhone Device CA", true);
        let device = issue(&device_ca, "00008103-001A2B3C4D5E6F70", false);
        Pki {
            root,
            device_ca,
            device,
        }
    }

    #[test]
    fn plist_round_trips() {
        let info = sample();
        assert_eq!(MachineInfo::from_plist(&info.to_plist()).unwrap(), info);
        assert!(MachineInfo::from_plist(b"<plist><dict></dict></plist>").is_err());
    }

    #[test]
    fn good_signature_is_accepted() {
        let pki = pki();
        let signed = sign_machine_info(&sample(), &pki.device, &[&pki.device_ca]).unwrap();
        let verifier = MachineInfoVerifier::new(&[pki.root.cert_der()]).unwrap();
        let verified = verifier.verify(&signed).unwrap();
        assert_eq!(verified.info, sample());
        assert_eq!(verified.signer_cert_der, pki.device.cert_der());
        assert_eq!(
            verified.signer_common_name.as_deref(),
            Some("00008103-001A2B3C4D5E6F70")
        );
        verifier.verify_at(&signed, NOW).unwrap();
        let header = BASE64.encode(&signed);
        assert_eq!(verifier.verify_header(&header).unwrap().info, sample());
    }

    #[test]
    fn tampered_body_is_refused() {
        let pki = pki();
        let signed = sign_machine_info(&sample(), &pki.device, &[&pki.device_ca]).unwrap();
        let verifier = MachineInfoVerifier::new(&[pki.root.cert_der()]).unwrap();
        // Change the serial inside the embedded plist without re-signing.
        let needle = b"DMPXK0ABCDEF";
        let at = signed
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        let mut tampered = signed.clone();
        tampered[at] = b'X';
        let err = verifier.verify(&tampered).unwrap_err();
        assert!(matches!(err, DepError::MachineInfoSignature(_)), "{err}");
        // A truncated message is refused too.
        assert!(verifier.verify(&signed[..signed.len() / 2]).is_err());
        assert!(verifier.verify(b"").is_err());
        assert!(openssl::error::ErrorStack::get().errors().is_empty());
    }

    #[test]
    fn foreign_root_is_refused() {
        let pki = pki();
        let other = CertificateAuthority::generate("Someone Else", NOW, 3650).unwrap();
        let imposter = other
            .issue_signing_identity("fake device", NOW, 365)
            .unwrap();
        let verifier = MachineInfoVerifier::new(&[pki.root.cert_der()]).unwrap();
        let signed = sign_machine_info(&sample(), &imposter, &[]).unwrap();
        let err = verifier.verify(&signed).unwrap_err();
        assert!(err.to_string().contains("trusted root"), "{err}");
        // A self-signed certificate that embeds the foreign CA as "chain" does not help.
        let signed = sign_machine_info(&sample(), &imposter, &[other.identity()]).unwrap();
        assert!(verifier.verify(&signed).is_err());
        // Without its device CA embedded, the genuine device certificate does not reach the root.
        let no_intermediate = sign_machine_info(&sample(), &pki.device, &[]).unwrap();
        assert!(verifier.verify(&no_intermediate).is_err());
        // The genuine chain is refused by a verifier that trusts another root.
        let genuine = sign_machine_info(&sample(), &pki.device, &[&pki.device_ca]).unwrap();
        let wrong_verifier = MachineInfoVerifier::new(&[other.cert_der()]).unwrap();
        assert!(wrong_verifier.verify(&genuine).is_err());
    }

    #[test]
    fn expired_chain_only_refused_when_dates_are_checked() {
        let pki = pki();
        let signed = sign_machine_info(&sample(), &pki.device, &[&pki.device_ca]).unwrap();
        let verifier = MachineInfoVerifier::new(&[pki.root.cert_der()]).unwrap();
        let much_later = NOW.plus_seconds(20 * 365 * 86_400);
        assert!(verifier.verify(&signed).is_ok());
        assert!(verifier.verify_at(&signed, much_later).is_err());
    }

    #[test]
    fn software_update_required_body() {
        let mut answer = SoftwareUpdateRequired::new("17.4");
        answer.build_version = Some("21E219".into());
        answer.message = Some("Please update".into());
        let json: serde_json::Value = serde_json::from_slice(&answer.to_json()).unwrap();
        assert_eq!(json["code"], "com.apple.softwareupdate.required");
        assert_eq!(json["details"]["OSVersion"], "17.4");
        assert_eq!(json["details"]["BuildVersion"], "21E219");
        assert_eq!(json["message"], "Please update");
        assert!(json.get("description").is_none());
        answer.require_beta_program = Some(RequiredBetaProgram {
            description: "iOS Beta".into(),
            token: "tok".into(),
        });
        let json: serde_json::Value = serde_json::from_slice(&answer.to_json()).unwrap();
        assert_eq!(json["details"]["RequireBetaProgram"]["Token"], "tok");
    }

    #[test]
    fn os_versions_compare_numerically() {
        assert_eq!(compare_os_versions("17.4", "17.10"), Some(Ordering::Less));
        assert_eq!(compare_os_versions("17", "17.0"), Some(Ordering::Equal));
        assert_eq!(
            compare_os_versions("16.1 (a)", "16.1"),
            Some(Ordering::Equal)
        );
        assert_eq!(compare_os_versions("x", "1"), None);
        let info = sample(); // 17.4.1, can update
        assert!(info.requires_update_to("17.5"));
        assert!(!info.requires_update_to("17.4"));
        let old = MachineInfo {
            mdm_can_request_software_update: false,
            ..sample()
        };
        assert!(!old.requires_update_to("18.0"));
        assert_eq!(old.os_version_below("18.0"), Some(true));
    }
}
