//! Orchard's certificate authority, SCEP responder and CMS signature checks: sans-IO, it takes bytes and a time
//! (`UnixTime`) and never reads files or the clock.

pub mod backup;
pub mod push_csr;
pub mod scep;
pub mod seal;
pub mod server_ca;
pub mod signature;

use std::net::IpAddr;
use std::sync::Arc;

use openssl::asn1::{Asn1Integer, Asn1Time, Asn1TimeRef};
use openssl::bn::{BigNum, MsbOption};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, PKeyRef, Private, Public};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{X509Builder, X509Name, X509NameRef, X509Ref, X509};
use orchard_types::{Secret, UnixTime};
use sha2::{Digest, Sha256};

/// Everything that can go wrong in this crate; messages are lowercase and say why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkiError {
    #[error("malformed input: {0}")]
    Malformed(String),
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("untrusted signer: {0}")]
    UntrustedSigner(String),
    #[error("certificate is not yet valid")]
    NotYetValid,
    #[error("certificate has expired")]
    Expired,
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("crypto failure: {0}")]
    Crypto(String),
}

impl From<ErrorStack> for PkiError {
    fn from(e: ErrorStack) -> Self {
        PkiError::Crypto(e.to_string())
    }
}

/// Key size of every RSA key this crate generates (CA, server, signing, simulator identities).
const RSA_BITS: u32 = 2048;
/// Certificates start one hour in the past so a device whose clock runs a little slow still accepts them.
const BACKDATE_SECONDS: i64 = 3600;
const SECONDS_PER_DAY: i64 = 86_400;

/// Lowercase hex of the SHA-256 over the certificate DER (the form stored in the database).
pub fn fingerprint_sha256_hex(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// A certificate with its private key.
#[derive(Clone)]
pub struct Identity {
    cert: X509,
    key: PKey<Private>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("subject", &name_to_string(self.cert.subject_name()))
            .field("key", &"***")
            .finish()
    }
}

impl Identity {
    /// Loads a PEM certificate and its PEM private key (PKCS#8 or traditional); they must belong together.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, PkiError> {
        let cert = X509::from_pem(cert_pem)
            .map_err(|e| PkiError::Malformed(format!("certificate pem: {e}")))?;
        let key = PKey::private_key_from_pem(key_pem)
            .map_err(|e| PkiError::Malformed(format!("private key pem: {e}")))?;
        Self::from_parts(cert, key)
    }

    /// Pairs an already parsed certificate with its key, checking that they match.
    pub fn from_parts(cert: X509, key: PKey<Private>) -> Result<Self, PkiError> {
        let cert_key = cert.public_key()?;
        if !cert_key.public_eq(&key) {
            return Err(PkiError::Malformed(
                "private key does not match the certificate".into(),
            ));
        }
        Ok(Self { cert, key })
    }

    pub fn cert_pem(&self) -> Vec<u8> {
        // Encoding a certificate that openssl parsed or built cannot fail short of memory exhaustion.
        self.cert.to_pem().unwrap_or_default()
    }

    pub fn key_pem(&self) -> Secret<Vec<u8>> {
        Secret::new(self.key.private_key_to_pem_pkcs8().unwrap_or_default())
    }

    pub fn cert_der(&self) -> Vec<u8> {
        self.cert.to_der().unwrap_or_default()
    }

    /// A fresh RSA-2048 key with a self-signed certificate (the simulator's temporary SCEP identity).
    /// It carries a random serial number: SCEP recipient matching needs one (STACK.md pitfall 5).
    pub fn generate_self_signed_rsa(cn: &str, now: UnixTime, days: u32) -> Result<Self, PkiError> {
        let key = generate_rsa_key()?;
        let cert = self_signed_cert(&key, cn, now, days)?;
        Ok(Self { cert, key })
    }

    pub fn x509(&self) -> &X509Ref {
        &self.cert
    }

    pub fn private_key(&self) -> &PKeyRef<Private> {
        &self.key
    }

    /// Whether the key is an elliptic-curve one (the TLS identities Orchard makes are P-256).
    pub fn has_ec_key(&self) -> bool {
        self.key.id() == openssl::pkey::Id::EC
    }

    pub fn subject_common_name(&self) -> Option<String> {
        common_name(self.cert.subject_name())
    }
}

/// Orchard's own CA. It is also the SCEP RA, so its key encrypts and signs SCEP messages.
#[derive(Clone)]
pub struct CertificateAuthority {
    identity: Identity,
    /// Parsed once: decoding a public key is the slow part of OpenSSL 3 and every Mdm-Signature needs it.
    public_key: PKey<Public>,
    /// The CA subject, DER-encoded once, compared byte for byte against issuer names.
    subject_der: Vec<u8>,
    /// An RSA CA key's modulus and exponent (big-endian), which the fast signature path verifies with.
    rsa_components: Option<(Vec<u8>, Vec<u8>)>,
    /// An empty trust store: `PKCS7_verify` insists on one even when told not to verify the chain.
    empty_store: Arc<X509Store>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("identity", &self.identity)
            .finish()
    }
}

impl CertificateAuthority {
    /// A new self-signed RSA-2048 CA: basicConstraints CA, keyUsage keyCertSign + cRLSign + digitalSignature +
    /// keyEncipherment (the last two because it also signs and decrypts SCEP messages as the RA).
    pub fn generate(
        common_name: &str,
        now: UnixTime,
        validity_days: u32,
    ) -> Result<Self, PkiError> {
        let key = generate_rsa_key()?;
        let name = name_with_cn(common_name)?;
        let mut builder = certificate_builder(&name, &name, &key, now, validity_days)?;
        builder.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        builder.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .digital_signature()
                .key_encipherment()
                .build()?,
        )?;
        let ski = SubjectKeyIdentifier::new().build(&builder.x509v3_context(None, None))?;
        builder.append_extension(ski)?;
        builder.sign(&key, MessageDigest::sha256())?;
        Self::from_identity(Identity {
            cert: builder.build(),
            key,
        })
    }

    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, PkiError> {
        Self::from_identity(Identity::from_pem(cert_pem, key_pem)?)
    }

    /// Wraps an identity as the CA, caching what signature checks need.
    pub fn from_identity(identity: Identity) -> Result<Self, PkiError> {
        let public_key = identity.cert.public_key()?;
        let subject_der = identity.cert.subject_name().to_der()?;
        let rsa_components = public_key
            .rsa()
            .ok()
            .map(|rsa| (rsa.n().to_vec(), rsa.e().to_vec()));
        let empty_store = Arc::new(X509StoreBuilder::new()?.build());
        Ok(Self {
            identity,
            public_key,
            subject_der,
            rsa_components,
            empty_store,
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn cert_der(&self) -> Vec<u8> {
        self.identity.cert_der()
    }

    pub fn cert_pem(&self) -> Vec<u8> {
        self.identity.cert_pem()
    }

    pub fn public_key(&self) -> &PKeyRef<Public> {
        &self.public_key
    }

    /// The modulus and exponent of an RSA CA key (None for another key type).
    pub(crate) fn rsa_public_components(&self) -> Option<(&[u8], &[u8])> {
        self.rsa_components
            .as_ref()
            .map(|(n, e)| (n.as_slice(), e.as_slice()))
    }

    /// A TLS server identity (serverAuth) for the given DNS names and IP addresses (at least one in total).
    pub fn issue_tls_server(
        &self,
        dns_names: &[String],
        ip_addresses: &[IpAddr],
        now: UnixTime,
        validity_days: u32,
    ) -> Result<Identity, PkiError> {
        let common_name = match (dns_names.first(), ip_addresses.first()) {
            (Some(dns), _) => dns.clone(),
            // Not the bare address: OpenSSL checks a host-like subject CN against DNS name constraints, and
            // an IP-only server CA permits no DNS name. Clients match the address in the SAN.
            (None, Some(ip)) => format!("Orchard server ({ip})"),
            (None, None) => {
                return Err(PkiError::Malformed(
                    "a tls server certificate needs a dns name or an ip address".into(),
                ))
            }
        };
        // ECDSA P-256: every TLS handshake that is not resumed signs with this key, and a P-256 signature costs
        // about a tenth of an RSA-2048 one (iPads accept either; ATS asks for ECC ≥ 256 or RSA ≥ 2048 bits).
        // An ECDSA key only signs, so the key usage is digitalSignature alone.
        let key = generate_p256_key()?;
        let subject = name_with_cn(&common_name)?;
        let mut builder = self.leaf_builder(&subject, &key, now, validity_days)?;
        builder.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
        builder.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
        let mut san = SubjectAlternativeName::new();
        for dns in dns_names {
            san.dns(dns);
        }
        for ip in ip_addresses {
            san.ip(&ip.to_string());
        }
        let san = san.build(&builder.x509v3_context(Some(&self.identity.cert), None))?;
        builder.append_extension(san)?;
        self.finish_leaf(builder, key)
    }

    /// An identity that signs enrollment profiles (digitalSignature; emailProtection + codeSigning EKU so that
    /// tools checking S/MIME purposes accept it).
    pub fn issue_signing_identity(
        &self,
        common_name: &str,
        now: UnixTime,
        validity_days: u32,
    ) -> Result<Identity, PkiError> {
        let key = generate_rsa_key()?;
        let subject = name_with_cn(common_name)?;
        let mut builder = self.leaf_builder(&subject, &key, now, validity_days)?;
        builder.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
        builder.append_extension(
            ExtendedKeyUsage::new()
                .email_protection()
                .code_signing()
                .build()?,
        )?;
        self.finish_leaf(builder, key)
    }

    /// True when `cert_der` parses, names this CA as issuer and carries a valid signature by the CA key.
    /// Validity dates are not checked here.
    pub fn is_issued_by_me(&self, cert_der: &[u8]) -> bool {
        match X509::from_der(cert_der) {
            Ok(cert) => self.check_issued(&cert).is_ok(),
            Err(_) => {
                // Leave no stale error on this thread's OpenSSL error queue.
                drop(ErrorStack::get());
                false
            }
        }
    }

    /// Issuer name and signature check against this CA; the error says which of the two failed.
    pub(crate) fn check_issued(&self, cert: &X509Ref) -> Result<(), PkiError> {
        let issuer_der = cert.issuer_name().to_der()?;
        if issuer_der != self.subject_der {
            return Err(PkiError::UntrustedSigner(format!(
                "certificate issued by {}, not by our ca",
                name_to_string(cert.issuer_name())
            )));
        }
        match cert.verify(&self.public_key) {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => {
                drop(ErrorStack::get());
                Err(PkiError::UntrustedSigner(
                    "certificate signature does not verify with our ca key".into(),
                ))
            }
        }
    }

    /// A builder with subject, issuer (us), public key, random serial, validity and key identifiers.
    pub(crate) fn leaf_builder<T: openssl::pkey::HasPublic>(
        &self,
        subject: &X509NameRef,
        public_key: &PKeyRef<T>,
        now: UnixTime,
        validity_days: u32,
    ) -> Result<X509Builder, PkiError> {
        let mut builder = certificate_builder(
            subject,
            self.identity.cert.subject_name(),
            public_key,
            now,
            validity_days,
        )?;
        builder.append_extension(BasicConstraints::new().critical().build()?)?;
        let ctx = builder.x509v3_context(Some(&self.identity.cert), None);
        let ski = SubjectKeyIdentifier::new().build(&ctx)?;
        let aki = AuthorityKeyIdentifier::new().keyid(true).build(&ctx)?;
        builder.append_extension(ski)?;
        builder.append_extension(aki)?;
        Ok(builder)
    }

    pub(crate) fn sign_leaf(&self, mut builder: X509Builder) -> Result<X509, PkiError> {
        builder.sign(&self.identity.key, MessageDigest::sha256())?;
        Ok(builder.build())
    }

    fn finish_leaf(&self, builder: X509Builder, key: PKey<Private>) -> Result<Identity, PkiError> {
        let cert = self.sign_leaf(builder)?;
        Ok(Identity { cert, key })
    }

    pub(crate) fn empty_store(&self) -> &X509Store {
        &self.empty_store
    }
}

pub(crate) fn generate_rsa_key() -> Result<PKey<Private>, PkiError> {
    Ok(PKey::from_rsa(Rsa::generate(RSA_BITS)?)?)
}

fn generate_p256_key() -> Result<PKey<Private>, PkiError> {
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)?;
    Ok(PKey::from_ec_key(openssl::ec::EcKey::generate(&group)?)?)
}

/// A self-signed end-entity certificate for `key` with a random serial (SCEP temporary certificates).
pub(crate) fn self_signed_cert(
    key: &PKeyRef<Private>,
    cn: &str,
    now: UnixTime,
    days: u32,
) -> Result<X509, PkiError> {
    let name = name_with_cn(cn)?;
    let mut builder = certificate_builder(&name, &name, key, now, days)?;
    builder.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()?,
    )?;
    builder.sign(key, MessageDigest::sha256())?;
    Ok(builder.build())
}

/// Version 3, random 128-bit serial, names, key, and validity from now − 1 h to now + `validity_days`.
fn certificate_builder<T: openssl::pkey::HasPublic>(
    subject: &X509NameRef,
    issuer: &X509NameRef,
    public_key: &PKeyRef<T>,
    now: UnixTime,
    validity_days: u32,
) -> Result<X509Builder, PkiError> {
    let mut builder = X509Builder::new()?;
    builder.set_version(2)?;
    let serial = random_serial()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(subject)?;
    builder.set_issuer_name(issuer)?;
    builder.set_pubkey(public_key)?;
    let not_before = now.plus_seconds(-BACKDATE_SECONDS);
    let not_after = now.plus_seconds(i64::from(validity_days).saturating_mul(SECONDS_PER_DAY));
    let not_before = asn1_time(not_before)?;
    let not_after = asn1_time(not_after)?;
    builder.set_not_before(&not_before)?;
    builder.set_not_after(&not_after)?;
    Ok(builder)
}

/// A positive serial of exactly 128 random bits (top bit set so every serial has the same length).
fn random_serial() -> Result<Asn1Integer, PkiError> {
    let mut serial = BigNum::new()?;
    serial.rand(128, MsbOption::ONE, false)?;
    Ok(serial.to_asn1_integer()?)
}

fn name_with_cn(cn: &str) -> Result<X509Name, PkiError> {
    if cn.is_empty() {
        return Err(PkiError::Malformed("common name is empty".into()));
    }
    let mut name = X509Name::builder()?;
    name.append_entry_by_nid(Nid::COMMONNAME, cn)
        .map_err(|e| PkiError::Malformed(format!("common name: {e}")))?;
    Ok(name.build())
}

pub(crate) fn asn1_time(t: UnixTime) -> Result<Asn1Time, PkiError> {
    Ok(Asn1Time::from_unix(time_t(t)?)?)
}

/// C's `time_t` (64 bits on every platform we build for; the conversion still refuses to wrap).
pub(crate) fn time_t<T: TryFrom<i64>>(t: UnixTime) -> Result<T, PkiError> {
    T::try_from(t.0).map_err(|_| PkiError::Malformed(format!("time {} out of range", t.0)))
}

/// An ASN.1 time as Unix seconds.
pub(crate) fn asn1_time_to_unix(t: &Asn1TimeRef) -> Result<UnixTime, PkiError> {
    let mut tm = std::mem::MaybeUninit::<libc_tm::Tm>::zeroed();
    // SAFETY: `t` is a valid ASN1_TIME borrowed for the call; `tm` points to writable memory with the layout of
    // C's `struct tm` (see `libc_tm`), which ASN1_TIME_to_tm fills completely on success.
    let ok = unsafe {
        libc_tm::ASN1_TIME_to_tm(foreign_types::ForeignTypeRef::as_ptr(t), tm.as_mut_ptr())
    };
    if ok != 1 {
        drop(ErrorStack::get());
        return Err(PkiError::Malformed("certificate time is invalid".into()));
    }
    // SAFETY: ASN1_TIME_to_tm returned success, so every field was written (and the value was zeroed before).
    let tm = unsafe { tm.assume_init() };
    let month = time::Month::try_from(u8::try_from(tm.tm_mon + 1).unwrap_or(0))
        .map_err(|_| PkiError::Malformed("certificate time month".into()))?;
    let date = time::Date::from_calendar_date(
        tm.tm_year + 1900,
        month,
        u8::try_from(tm.tm_mday).unwrap_or(0),
    )
    .map_err(|e| PkiError::Malformed(format!("certificate time: {e}")))?;
    let clock = time::Time::from_hms(
        u8::try_from(tm.tm_hour).unwrap_or(99),
        u8::try_from(tm.tm_min).unwrap_or(99),
        u8::try_from(tm.tm_sec).unwrap_or(99),
    )
    .map_err(|e| PkiError::Malformed(format!("certificate time: {e}")))?;
    Ok(UnixTime(
        time::PrimitiveDateTime::new(date, clock)
            .assume_utc()
            .unix_timestamp(),
    ))
}

/// `ASN1_TIME_to_tm` and C's `struct tm`, which openssl-sys does not declare.
mod libc_tm {
    use std::os::raw::{c_char, c_int, c_long};

    /// glibc/musl/BSD layout of `struct tm` (the two trailing fields exist on all of them).
    #[repr(C)]
    pub(crate) struct Tm {
        pub tm_sec: c_int,
        pub tm_min: c_int,
        pub tm_hour: c_int,
        pub tm_mday: c_int,
        pub tm_mon: c_int,
        pub tm_year: c_int,
        pub tm_wday: c_int,
        pub tm_yday: c_int,
        pub tm_isdst: c_int,
        pub tm_gmtoff: c_long,
        pub tm_zone: *const c_char,
    }

    extern "C" {
        pub(crate) fn ASN1_TIME_to_tm(s: *const openssl_sys::ASN1_TIME, tm: *mut Tm) -> c_int;
    }
}

pub(crate) fn common_name(name: &X509NameRef) -> Option<String> {
    name.entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|entry| entry.data().to_string().ok())
}

/// `CN=…, O=…` for error messages.
pub(crate) fn name_to_string(name: &X509NameRef) -> String {
    let parts: Vec<String> = name
        .entries()
        .map(|entry| {
            let key = entry.object().nid().short_name().unwrap_or("?");
            let value = entry.data().to_string().unwrap_or_default();
            format!("{key}={value}")
        })
        .collect();
    parts.join(", ")
}

/// The validity window (notBefore, notAfter) of a DER certificate.
pub fn cert_validity(cert_der: &[u8]) -> Result<(UnixTime, UnixTime), PkiError> {
    let cert = X509::from_der(cert_der)?;
    Ok((
        asn1_time_to_unix(cert.not_before())?,
        asn1_time_to_unix(cert.not_after())?,
    ))
}

/// When the first certificate of a PEM chain (the leaf) runs out: the server's TLS certificate in the register.
pub fn pem_leaf_not_after(chain_pem: &[u8]) -> Result<UnixTime, PkiError> {
    let cert = X509::from_pem(chain_pem)?;
    asn1_time_to_unix(cert.not_after())
}

/// The serial number of a DER certificate, lowercase hex.
pub fn cert_serial_hex(cert_der: &[u8]) -> Result<String, PkiError> {
    let cert = X509::from_der(cert_der)?;
    let hex = cert.serial_number().to_bn()?.to_hex_str()?;
    Ok(hex.to_lowercase())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const NOW: UnixTime = UnixTime(1_764_460_800); // 2025-11-30T00:00:00Z

    #[test]
    fn ca_generate_and_reload() {
        let ca = CertificateAuthority::generate("Orchard Test CA", NOW, 3650).unwrap();
        let again =
            CertificateAuthority::from_pem(&ca.cert_pem(), ca.identity().key_pem().expose())
                .unwrap();
        assert_eq!(ca.cert_der(), again.cert_der());
        assert!(ca.is_issued_by_me(&ca.cert_der()));
        assert_eq!(
            ca.identity().subject_common_name().as_deref(),
            Some("Orchard Test CA")
        );
        let not_before = asn1_time_to_unix(ca.identity().x509().not_before()).unwrap();
        let not_after = asn1_time_to_unix(ca.identity().x509().not_after()).unwrap();
        assert_eq!(not_before, NOW.plus_seconds(-3600));
        assert_eq!(not_after, NOW.plus_seconds(3650 * 86_400));
        assert_eq!(fingerprint_sha256_hex(&ca.cert_der()).len(), 64);
    }

    #[test]
    fn tls_server_and_signing_identities_are_issued_by_the_ca() {
        let ca = CertificateAuthority::generate("Orchard Test CA", NOW, 3650).unwrap();
        let other = CertificateAuthority::generate("Other CA", NOW, 3650).unwrap();
        let tls = ca
            .issue_tls_server(
                &["mdm.example.edu".into()],
                &["127.0.0.1".parse().unwrap()],
                NOW,
                365,
            )
            .unwrap();
        assert!(ca.is_issued_by_me(&tls.cert_der()));
        assert_eq!(
            tls.private_key().id(),
            openssl::pkey::Id::EC,
            "TLS keys are P-256"
        );
        assert_eq!(
            tls.private_key().ec_key().unwrap().group().curve_name(),
            Some(openssl::nid::Nid::X9_62_PRIME256V1)
        );
        let reloaded_tls = Identity::from_pem(&tls.cert_pem(), tls.key_pem().expose()).unwrap();
        assert_eq!(reloaded_tls.cert_der(), tls.cert_der());
        assert!(!other.is_issued_by_me(&tls.cert_der()));
        assert!(!ca.is_issued_by_me(b"garbage"));
        let signing = ca
            .issue_signing_identity("Orchard Profile Signing", NOW, 365)
            .unwrap();
        assert!(ca.is_issued_by_me(&signing.cert_der()));
        let reloaded = Identity::from_pem(&signing.cert_pem(), signing.key_pem().expose()).unwrap();
        assert_eq!(reloaded.cert_der(), signing.cert_der());
        assert!(Identity::from_pem(&signing.cert_pem(), tls.key_pem().expose()).is_err());
        assert!(ca.issue_tls_server(&[], &[], NOW, 1).is_err());
        let serial = tls.x509().serial_number().to_bn().unwrap();
        assert_eq!(serial.num_bits(), 128);
    }

    #[test]
    fn self_signed_has_serial() {
        let id = Identity::generate_self_signed_rsa("device", NOW, 1).unwrap();
        assert!(id.x509().serial_number().to_bn().unwrap().num_bits() > 64);
        assert_eq!(
            id.x509().issuer_name().to_der().unwrap(),
            id.x509().subject_name().to_der().unwrap()
        );
    }
}
