//! A stand-in for Apple's device identity PKI, for tests and the `activate` command: a self-signed root and
//! under it a device CA shaped like "Apple iPhone Device CA", which issues each simulated iPad the identity
//! it signs its MachineInfo with during Automated Device Enrollment. A server under test is configured to
//! trust [`AppleDeviceCa::root_pem`] where production trusts Apple's root.
//!
//! Device identities use P-256 keys by default (a fleet of thousands is provisioned in moments); RSA keys,
//! which Apple's own device certificates have, are available through [`AppleDeviceCa::issue_with_key`].

use std::io::Write;
use std::path::Path;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Name, X509NameBuilder, X509};
use orchard_pki::Identity;
use orchard_types::{Clock, SystemClock, UnixTime};

use crate::SimError;

/// Subject CN of the test root.
pub const TEST_APPLE_ROOT_CN: &str = "Orchard Test Apple Root CA";
/// Subject CN of the device CA, after Apple's "Apple iPhone Device CA".
pub const TEST_APPLE_DEVICE_CA_CN: &str = "Orchard Test Apple iPhone Device CA";

const ROOT_FILE: &str = "apple-root.pem";
const DEVICE_CA_FILE: &str = "apple-device-ca.pem";
const DEVICE_CA_KEY_FILE: &str = "apple-device-ca.key.pem";

const ROOT_DAYS: i64 = 20 * 365;
const DEVICE_CA_DAYS: i64 = 15 * 365;
const DEVICE_DAYS: i64 = 10 * 365;
/// Certificates start an hour in the past so that a verifier whose clock lags a little still accepts them.
const BACKDATE_SECONDS: i64 = 3600;

/// The certificates and key a simulated iPad signs its MachineInfo with: its own identity and the device CA
/// certificate (without its key) that the CMS message embeds so a verifier can reach the root.
#[derive(Clone)]
pub struct AppleDeviceIdentity {
    pub identity: Identity,
    /// DER of the intermediate certificates, device CA first.
    pub chain_der: Vec<Vec<u8>>,
}

impl std::fmt::Debug for AppleDeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppleDeviceIdentity")
            .field("identity", &self.identity)
            .field("chain", &self.chain_der.len())
            .finish()
    }
}

impl AppleDeviceIdentity {
    /// Attached CMS SignedData over `content`, signed by the device identity and embedding the chain, as a
    /// device signs its MachineInfo (`application/pkcs7-signature`).
    pub fn sign_attached(&self, content: &[u8]) -> Result<Vec<u8>, SimError> {
        let mut extra = Stack::<X509>::new()?;
        for der in &self.chain_der {
            extra.push(X509::from_der(der)?)?;
        }
        let pkcs7 = Pkcs7::sign(
            self.identity.x509(),
            self.identity.private_key(),
            &extra,
            content,
            Pkcs7Flags::BINARY | Pkcs7Flags::NOSMIMECAP,
        )?;
        Ok(pkcs7.to_der()?)
    }

    /// PEM of the certificate, key (PKCS#8) and chain, for the device's state file.
    pub(crate) fn to_pem_parts(&self) -> Result<(String, String, Vec<String>), SimError> {
        let cert = String::from_utf8_lossy(&self.identity.cert_pem()).into_owned();
        let key = String::from_utf8_lossy(self.identity.key_pem().expose()).into_owned();
        let chain = self
            .chain_der
            .iter()
            .map(|der| {
                let pem = X509::from_der(der)?.to_pem()?;
                Ok(String::from_utf8_lossy(&pem).into_owned())
            })
            .collect::<Result<Vec<_>, SimError>>()?;
        Ok((cert, key, chain))
    }

    pub(crate) fn from_pem_parts(
        cert_pem: &str,
        key_pem: &str,
        chain_pem: &[String],
    ) -> Result<Self, SimError> {
        let identity = Identity::from_pem(cert_pem.as_bytes(), key_pem.as_bytes())?;
        let chain_der = chain_pem
            .iter()
            .map(|pem| Ok(X509::from_pem(pem.as_bytes())?.to_der()?))
            .collect::<Result<Vec<_>, SimError>>()?;
        Ok(Self {
            identity,
            chain_der,
        })
    }
}

/// A test root and device CA that issue Apple-style device identities.
#[derive(Clone)]
pub struct AppleDeviceCa {
    root: X509,
    device_ca: Identity,
}

impl std::fmt::Debug for AppleDeviceCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppleDeviceCa")
            .field("device_ca", &self.device_ca)
            .finish_non_exhaustive()
    }
}

impl AppleDeviceCa {
    /// A fresh RSA-2048 root and device CA, valid from now (the root's key is thrown away: only the device CA
    /// issues).
    pub fn generate() -> Result<Self, SimError> {
        Self::generate_at(SystemClock.now())
    }

    /// [`AppleDeviceCa::generate`] with validity starting at `now`.
    pub fn generate_at(now: UnixTime) -> Result<Self, SimError> {
        let root_key = PKey::from_rsa(Rsa::generate(2048)?)?;
        let root_name = name(&[("O", "Apple Inc."), ("CN", TEST_APPLE_ROOT_CN)])?;
        let mut root = base_builder(&root_name, &root_name, &root_key, now, ROOT_DAYS)?;
        root.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        root.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        let ski = SubjectKeyIdentifier::new().build(&root.x509v3_context(None, None))?;
        root.append_extension(ski)?;
        root.sign(&root_key, MessageDigest::sha256())?;
        let root = root.build();

        let ca_key = PKey::from_rsa(Rsa::generate(2048)?)?;
        let ca_name = name(&[
            ("C", "US"),
            ("O", "Apple Inc."),
            ("OU", "Apple iPhone"),
            ("CN", TEST_APPLE_DEVICE_CA_CN),
        ])?;
        let mut ca = base_builder(&ca_name, root.subject_name(), &ca_key, now, DEVICE_CA_DAYS)?;
        ca.append_extension(BasicConstraints::new().critical().ca().pathlen(0).build()?)?;
        ca.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        let ski = SubjectKeyIdentifier::new().build(&ca.x509v3_context(Some(&root), None))?;
        ca.append_extension(ski)?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&ca.x509v3_context(Some(&root), None))?;
        ca.append_extension(aki)?;
        ca.sign(&root_key, MessageDigest::sha256())?;
        let device_ca = Identity::from_parts(ca.build(), ca_key)?;
        Ok(Self { root, device_ca })
    }

    /// The root a server under test trusts for MachineInfo signatures.
    pub fn root_pem(&self) -> Vec<u8> {
        self.root.to_pem().unwrap_or_default()
    }

    pub fn root_der(&self) -> Vec<u8> {
        self.root.to_der().unwrap_or_default()
    }

    /// The device CA certificate (DER), which every device embeds in its signed MachineInfo.
    pub fn device_ca_der(&self) -> Vec<u8> {
        self.device_ca.cert_der()
    }

    /// An identity for the iPad with this serial number and UDID, with a fresh P-256 key.
    pub fn issue(&self, serial: &str, udid: &str) -> Result<AppleDeviceIdentity, SimError> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
        self.issue_with_key(serial, udid, key)
    }

    /// An identity for the iPad with this serial number and UDID around a key of the caller's (RSA or EC).
    /// The subject names the UDID (CN) and the serial number (serialNumber), so a verifier can tie the
    /// signature to the device the MachineInfo claims to be.
    pub fn issue_with_key(
        &self,
        serial: &str,
        udid: &str,
        key: PKey<Private>,
    ) -> Result<AppleDeviceIdentity, SimError> {
        if serial.trim().is_empty() || udid.trim().is_empty() {
            return Err(SimError::InvalidArgument(
                "a device identity needs a serial number and a udid".into(),
            ));
        }
        let subject = name(&[("CN", udid), ("serialNumber", serial)])?;
        let issuer = self.device_ca.x509();
        let mut leaf = base_builder(
            &subject,
            issuer.subject_name(),
            &key,
            SystemClock.now(),
            DEVICE_DAYS,
        )?;
        leaf.append_extension(BasicConstraints::new().critical().build()?)?;
        leaf.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build()?,
        )?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&leaf.x509v3_context(Some(issuer), None))?;
        leaf.append_extension(aki)?;
        leaf.sign(self.device_ca.private_key(), MessageDigest::sha256())?;
        Ok(AppleDeviceIdentity {
            identity: Identity::from_parts(leaf.build(), key)?,
            chain_der: vec![self.device_ca.cert_der()],
        })
    }

    /// Writes `apple-root.pem`, `apple-device-ca.pem` and `apple-device-ca.key.pem` (mode 0600) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), SimError> {
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
        write_file(&dir.join(ROOT_FILE), &self.root_pem(), false)?;
        write_file(&dir.join(DEVICE_CA_FILE), &self.device_ca.cert_pem(), false)?;
        write_file(
            &dir.join(DEVICE_CA_KEY_FILE),
            self.device_ca.key_pem().expose(),
            true,
        )?;
        Ok(())
    }

    /// Reads what [`AppleDeviceCa::save`] wrote; the device CA must be issued by the root.
    pub fn load(dir: &Path) -> Result<Self, SimError> {
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read(&path).map_err(|e| file_error(&path, e))
        };
        let root = X509::from_pem(&read(ROOT_FILE)?)
            .map_err(|e| SimError::InvalidArgument(format!("{ROOT_FILE}: {e}")))?;
        let device_ca = Identity::from_pem(&read(DEVICE_CA_FILE)?, &read(DEVICE_CA_KEY_FILE)?)?;
        let root_key = root.public_key()?;
        if !device_ca.x509().verify(&root_key)? {
            return Err(SimError::InvalidArgument(format!(
                "{DEVICE_CA_FILE} is not issued by {ROOT_FILE}"
            )));
        }
        Ok(Self { root, device_ca })
    }

    /// [`AppleDeviceCa::load`] if `dir` holds a CA, otherwise a new one saved there.
    pub fn load_or_generate(dir: &Path) -> Result<Self, SimError> {
        if dir.join(ROOT_FILE).exists() {
            Self::load(dir)
        } else {
            let ca = Self::generate()?;
            ca.save(dir)?;
            Ok(ca)
        }
    }
}

fn name(entries: &[(&str, &str)]) -> Result<X509Name, SimError> {
    let mut builder = X509NameBuilder::new()?;
    for (field, value) in entries {
        builder.append_entry_by_text(field, value)?;
    }
    Ok(builder.build())
}

fn random_serial() -> Result<Asn1Integer, SimError> {
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    Ok(serial.to_asn1_integer()?)
}

fn base_builder(
    subject: &openssl::x509::X509NameRef,
    issuer: &openssl::x509::X509NameRef,
    key: &PKey<Private>,
    now: UnixTime,
    days: i64,
) -> Result<X509Builder, SimError> {
    let mut builder = X509Builder::new()?;
    builder.set_version(2)?;
    let serial = random_serial()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(subject)?;
    builder.set_issuer_name(issuer)?;
    builder.set_pubkey(key)?;
    let not_before = Asn1Time::from_unix(now.0 - BACKDATE_SECONDS)?;
    let not_after = Asn1Time::from_unix(now.0 + days * 86_400)?;
    builder.set_not_before(&not_before)?;
    builder.set_not_after(&not_after)?;
    Ok(builder)
}

fn file_error(path: &Path, e: std::io::Error) -> SimError {
    SimError::StateFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), SimError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(|e| file_error(path, e))?;
    file.write_all(contents).map_err(|e| file_error(path, e))
}
