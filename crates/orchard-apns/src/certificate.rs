//! The MDM push certificate: parsed from PEM or PKCS#12, with its topic (subject UID) and validity.

use std::fmt;
use std::sync::OnceLock;

use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::PKey;
use openssl::provider::Provider;
use openssl::x509::X509;
use orchard_pki::Identity;
use orchard_types::{ApnsTopic, Secret, UnixTime};

use crate::ApnsError;

/// Every MDM topic starts with this (`com.apple.mgmt.External.<uuid>` for certificates from the portal).
pub const MDM_TOPIC_PREFIX: &str = "com.apple.mgmt.";

const SECONDS_PER_DAY: i64 = 86_400;

/// The MDM push certificate with its key: the TLS client identity for APNs and the source of the topic.
#[derive(Clone)]
pub struct PushCertificate {
    identity: Identity,
    /// Intermediate certificates that came with the leaf (sent in the TLS handshake after the leaf).
    chain: Vec<X509>,
    topic: ApnsTopic,
    not_before: UnixTime,
    not_after: UnixTime,
    fingerprint_sha256: String,
}

impl fmt::Debug for PushCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushCertificate")
            .field("topic", &self.topic)
            .field("not_after", &self.not_after)
            .field("fingerprint_sha256", &self.fingerprint_sha256)
            .field("key", &"***")
            .finish()
    }
}

impl PushCertificate {
    /// From PEM: `cert_pem` holds the push certificate first, optionally followed by intermediates; `key_pem`
    /// its private key (PKCS#8 or traditional). One combined PEM file may be passed as both arguments.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, ApnsError> {
        let mut certs = X509::stack_from_pem(cert_pem)
            .map_err(|e| ApnsError::InvalidCertificate(format!("certificate pem: {e}")))?
            .into_iter();
        let leaf = certs.next().ok_or_else(|| {
            ApnsError::InvalidCertificate("no certificate found in the pem".into())
        })?;
        let key = PKey::private_key_from_pem(key_pem)
            .map_err(|e| ApnsError::InvalidCertificate(format!("private key pem: {e}")))?;
        let identity = Identity::from_parts(leaf, key)
            .map_err(|e| ApnsError::InvalidCertificate(e.to_string()))?;
        Self::from_identity(identity, certs.collect())
    }

    /// From a PKCS#12 (.p12/.pfx) file with its password. Files written by older Keychain Access or OpenSSL
    /// versions use RC2-40, which OpenSSL 3 only decrypts with its legacy provider: it is loaded on demand.
    pub fn from_pkcs12(der: &[u8], password: &str) -> Result<Self, ApnsError> {
        if password.contains('\0') {
            // openssl's parse2 would panic on an interior nul; no real password contains one.
            return Err(ApnsError::Pkcs12(
                "the password contains a nul character".into(),
            ));
        }
        let pkcs12 = Pkcs12::from_der(der)
            .map_err(|e| ApnsError::Pkcs12(format!("not a pkcs#12 file: {e}")))?;
        let parsed = match pkcs12.parse2(password) {
            Ok(parsed) => parsed,
            Err(first_error) => {
                if !load_legacy_provider() {
                    return Err(pkcs12_error(&first_error));
                }
                pkcs12.parse2(password).map_err(|e| pkcs12_error(&e))?
            }
        };
        let cert = parsed
            .cert
            .ok_or_else(|| ApnsError::Pkcs12("the file holds no certificate".into()))?;
        let key = parsed
            .pkey
            .ok_or_else(|| ApnsError::Pkcs12("the file holds no private key".into()))?;
        let identity = Identity::from_parts(cert, key)
            .map_err(|e| ApnsError::InvalidCertificate(e.to_string()))?;
        let chain = parsed
            .ca
            .map(|stack| stack.into_iter().collect())
            .unwrap_or_default();
        Self::from_identity(identity, chain)
    }

    /// From an identity already loaded (leaf + matching key) and its intermediates.
    pub fn from_identity(identity: Identity, chain: Vec<X509>) -> Result<Self, ApnsError> {
        let topic = topic_of(&identity)?;
        let cert_der = identity.cert_der();
        let (not_before, not_after) = orchard_pki::cert_validity(&cert_der)
            .map_err(|e| ApnsError::InvalidCertificate(format!("validity: {e}")))?;
        Ok(Self {
            fingerprint_sha256: orchard_pki::fingerprint_sha256_hex(&cert_der),
            identity,
            chain,
            topic,
            not_before,
            not_after,
        })
    }

    /// The APNs topic: the subject UID, `com.apple.mgmt.External.<uuid>`. Enrolled devices are bound to it.
    pub fn topic(&self) -> &ApnsTopic {
        &self.topic
    }

    pub fn not_before(&self) -> UnixTime {
        self.not_before
    }

    pub fn not_after(&self) -> UnixTime {
        self.not_after
    }

    /// Whole days until notAfter (rounded down); negative once expired.
    pub fn days_left(&self, now: UnixTime) -> i64 {
        self.not_after
            .0
            .saturating_sub(now.0)
            .div_euclid(SECONDS_PER_DAY)
    }

    /// Ok while `now` lies inside the validity window; otherwise the error says which end and when.
    pub fn check_valid_at(&self, now: UnixTime) -> Result<(), ApnsError> {
        if now > self.not_after {
            return Err(ApnsError::CertificateExpired {
                topic: self.topic.to_string(),
                not_after: self.not_after.to_rfc3339(),
            });
        }
        if now < self.not_before {
            return Err(ApnsError::CertificateNotYetValid {
                topic: self.topic.to_string(),
                not_before: self.not_before.to_rfc3339(),
            });
        }
        Ok(())
    }

    /// Lowercase hex SHA-256 of the certificate DER.
    pub fn fingerprint_sha256(&self) -> &str {
        &self.fingerprint_sha256
    }

    pub fn subject_common_name(&self) -> Option<String> {
        self.identity.subject_common_name()
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Intermediates that came with the certificate.
    pub fn chain(&self) -> &[X509] {
        &self.chain
    }

    /// Leaf then intermediates, PEM (what to store).
    pub fn cert_pem(&self) -> Vec<u8> {
        let mut pem = self.identity.cert_pem();
        for cert in &self.chain {
            pem.extend(cert.to_pem().unwrap_or_default());
        }
        pem
    }

    /// The private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> Secret<Vec<u8>> {
        self.identity.key_pem()
    }

    /// Leaf then intermediates, DER each (the TLS client chain).
    pub(crate) fn chain_der(&self) -> Vec<Vec<u8>> {
        let mut all = vec![self.identity.cert_der()];
        all.extend(self.chain.iter().filter_map(|c| c.to_der().ok()));
        all
    }
}

/// Reads the subject UID and checks that it is an MDM topic.
fn topic_of(identity: &Identity) -> Result<ApnsTopic, ApnsError> {
    let uid = identity
        .x509()
        .subject_name()
        .entries_by_nid(Nid::USERID)
        .next()
        .ok_or_else(|| {
            ApnsError::InvalidCertificate(
                "the certificate subject has no UID: it is not an mdm push certificate".into(),
            )
        })?;
    let uid = uid
        .data()
        .to_string()
        .map_err(|e| ApnsError::InvalidCertificate(format!("subject uid: {e}")))?;
    if !uid.starts_with(MDM_TOPIC_PREFIX) {
        return Err(ApnsError::InvalidCertificate(format!(
            "subject uid {uid:?} is not an mdm topic (expected {MDM_TOPIC_PREFIX}…): is this an app push \
             certificate?"
        )));
    }
    ApnsTopic::parse(&uid).map_err(|e| ApnsError::InvalidCertificate(format!("topic: {e}")))
}

/// Loads OpenSSL 3's legacy provider once for the process and keeps it loaded (STACK.md pitfall 4). The
/// default provider stays available next to it. False when the module is not installed.
fn load_legacy_provider() -> bool {
    static LEGACY: OnceLock<Option<Provider>> = OnceLock::new();
    LEGACY
        .get_or_init(|| match Provider::try_load(None, "legacy", true) {
            Ok(provider) => Some(provider),
            Err(e) => {
                tracing::warn!(error = %e, "openssl legacy provider unavailable; rc2-40 pkcs#12 files cannot be read");
                None
            }
        })
        .is_some()
}

fn pkcs12_error(e: &openssl::error::ErrorStack) -> ApnsError {
    let text = e.to_string();
    if text.contains("mac verify failure") {
        ApnsError::Pkcs12("wrong password (mac verify failure)".into())
    } else {
        ApnsError::Pkcs12(format!(
            "wrong password, damaged file or unsupported encryption: {text}"
        ))
    }
}
