//! CMS signatures: the `Mdm-Signature` header devices send with every request, and signed enrollment profiles.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509Ref, X509StoreContext, X509};
use orchard_types::UnixTime;
use sha2::Digest as _;

use crate::{
    asn1_time_to_unix, common_name, fingerprint_sha256_hex, time_t, CertificateAuthority, Identity,
    PkiError,
};

/// A real header is ~2–3 KB (one certificate and one signature); anything far larger is not a device.
pub const MAX_MDM_SIGNATURE_HEADER_BYTES: usize = 64 * 1024;

/// The device certificate behind a verified `Mdm-Signature`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSigner {
    pub cert_der: Vec<u8>,
    /// Lowercase hex SHA-256 of `cert_der` (see [`crate::fingerprint_sha256_hex`]).
    pub fingerprint: String,
    pub not_before: UnixTime,
    pub not_after: UnixTime,
    pub subject_common_name: Option<String>,
}

/// Mdm-Signature: base64 detached CMS over exactly `body`; signer cert embedded. Verifies the signature with the
/// embedded cert WITHOUT OpenSSL's chain/purpose check (STACK.md pitfall 3: device certs carry clientAuth, which
/// the S/MIME purpose check rejects), then checks the cert was issued by `ca` and that `now` is within its
/// validity.
pub fn verify_mdm_signature(
    header_b64: &str,
    body: &[u8],
    ca: &CertificateAuthority,
    now: UnixTime,
) -> Result<VerifiedSigner, PkiError> {
    let der = decode_header(header_b64)?;
    // OpenSSL 3.0 spends ~140 µs decoding the public key of every certificate it parses (its provider decoder
    // machinery), two thirds of a full PKCS7_verify. The fast path reads the usual message shape itself and
    // uses OpenSSL only for hashing and RSA; anything unusual (BER, other key types…) goes to OpenSSL.
    match fast::verify(&der, body, ca, now) {
        fast::Outcome::Verified(signer) => Ok(signer),
        fast::Outcome::Rejected(error) => Err(error),
        fast::Outcome::NotHandled => verify_with_openssl(&der, body, ca, now),
    }
}

/// The DER of an `Mdm-Signature` header, refused when empty, oversized or not base64.
fn decode_header(header_b64: &str) -> Result<Vec<u8>, PkiError> {
    let header = header_b64.trim();
    if header.is_empty() {
        return Err(PkiError::Malformed("mdm-signature header is empty".into()));
    }
    if header.len() > MAX_MDM_SIGNATURE_HEADER_BYTES {
        return Err(PkiError::Malformed(
            "mdm-signature header is too large".into(),
        ));
    }
    BASE64
        .decode(header)
        .map_err(|e| PkiError::Malformed(format!("mdm-signature is not base64: {e}")))
}

/// Device certificates the fast path has already proved were issued by our CA, so that a device's next request
/// skips parsing its certificate and verifying the CA's signature over it — per request, the one thing that
/// changes is the message, not the certificate. What is kept is what does not depend on the time (issuer,
/// serial, key, facts); validity is checked against `now` on every request, and the binding to a device and
/// revocation stay with the caller. Only certificates the fast path itself accepted are kept, and a cached
/// answer is the fast path's answer for the same message (a message with several certificates, or one whose
/// certificate is not kept, takes the full path).
///
/// Bounded: two generations of at most `capacity / 2` entries each; when the newer fills up, the older is
/// dropped (entries still in use are promoted when read), so memory stays at ~1 KB per entry.
pub struct SignerCache {
    /// The CA the entries were proved against: a cache handed another CA is not used.
    ca_subject_der: Vec<u8>,
    ca_key: openssl::pkey::PKey<openssl::pkey::Public>,
    capacity: usize,
    generations: std::sync::Mutex<Generations>,
}

type KnownSigners = std::collections::HashMap<[u8; 32], std::sync::Arc<fast::KnownSigner>>;

#[derive(Default)]
struct Generations {
    newer: KnownSigners,
    older: KnownSigners,
}

impl SignerCache {
    /// A cache for signers issued by `ca`, holding at most about `capacity` certificates.
    pub fn new(ca: &CertificateAuthority, capacity: usize) -> Self {
        SignerCache {
            ca_subject_der: ca.subject_der.clone(),
            ca_key: ca.public_key().to_owned(),
            capacity: capacity.max(2),
            generations: std::sync::Mutex::new(Generations::default()),
        }
    }

    /// [`verify_mdm_signature`], answering from the cache when the signer certificate is known.
    pub fn verify_mdm_signature(
        &self,
        header_b64: &str,
        body: &[u8],
        ca: &CertificateAuthority,
        now: UnixTime,
    ) -> Result<VerifiedSigner, PkiError> {
        let der = decode_header(header_b64)?;
        let same_ca =
            ca.subject_der == self.ca_subject_der && ca.public_key().public_eq(&self.ca_key);
        if same_ca {
            if let Some((parsed, cert_der)) = fast::parse_with_sole_certificate(&der) {
                let key: [u8; 32] = sha2::Sha256::digest(cert_der).into();
                if let Some(known) = self.get(&key) {
                    match fast::verify_known(&parsed, cert_der, &known, body, now) {
                        fast::Outcome::Verified(signer) => return Ok(signer),
                        fast::Outcome::Rejected(error) => return Err(error),
                        fast::Outcome::NotHandled => {}
                    }
                }
            }
        }
        match fast::verify(&der, body, ca, now) {
            fast::Outcome::Verified(signer) => {
                if same_ca {
                    self.remember(&signer);
                }
                Ok(signer)
            }
            fast::Outcome::Rejected(error) => Err(error),
            fast::Outcome::NotHandled => verify_with_openssl(&der, body, ca, now),
        }
    }

    /// How many certificates are kept now.
    pub fn len(&self) -> usize {
        let generations = self.lock();
        generations.newer.len() + generations.older.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // The maps stay consistent whatever panicked while holding the lock (inserts and removals only).
        self.generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, key: &[u8; 32]) -> Option<std::sync::Arc<fast::KnownSigner>> {
        let mut generations = self.lock();
        if let Some(known) = generations.newer.get(key) {
            return Some(known.clone());
        }
        let known = generations.older.remove(key)?;
        self.insert(&mut generations, *key, known.clone());
        Some(known)
    }

    fn remember(&self, signer: &VerifiedSigner) {
        let Some(known) = fast::known_signer(signer) else {
            return;
        };
        let Ok(key) = <[u8; 32]>::try_from(hex::decode(&signer.fingerprint).unwrap_or_default())
        else {
            return;
        };
        let mut generations = self.lock();
        self.insert(&mut generations, key, std::sync::Arc::new(known));
    }

    fn insert(
        &self,
        generations: &mut Generations,
        key: [u8; 32],
        known: std::sync::Arc<fast::KnownSigner>,
    ) {
        if generations.newer.len() >= self.capacity / 2 {
            generations.older = std::mem::take(&mut generations.newer);
        }
        generations.newer.insert(key, known);
    }
}

/// The signingTime attribute of an `Mdm-Signature` (base64 detached CMS), if it carries one: devices may add it,
/// and the protocol has no nonce, so it is the only freshness a message can prove. Read only for the usual
/// message shape (DER, one signer, RSA: what iPads send); None otherwise, and None for a missing or malformed
/// attribute. Call it after [`verify_mdm_signature`] accepted the header: the attribute is signed, so only then
/// is it the signer's word.
pub fn mdm_signature_signing_time(header_b64: &str) -> Option<UnixTime> {
    let header = header_b64.trim();
    if header.is_empty() || header.len() > MAX_MDM_SIGNATURE_HEADER_BYTES {
        return None;
    }
    let der = BASE64.decode(header).ok()?;
    fast::signing_time(&der)
}

/// The general path: OpenSSL parses the CMS message and checks the signature (no chain), then our checks.
fn verify_with_openssl(
    der: &[u8],
    body: &[u8],
    ca: &CertificateAuthority,
    now: UnixTime,
) -> Result<VerifiedSigner, PkiError> {
    let mut pkcs7 = parse_signed_data(der, "mdm-signature")?;
    let signer = verify_detached(&mut pkcs7, body, ca)?;
    check_signer(&signer, ca, now)
}

/// The simulator's side: a detached CMS SignedData over `body` (signer certificate embedded), base64-encoded.
pub fn sign_mdm_body(body: &[u8], signer: &Identity) -> Result<String, PkiError> {
    let no_extra_certs = Stack::<X509>::new()?;
    let flags = Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY | Pkcs7Flags::NOSMIMECAP;
    let pkcs7 = Pkcs7::sign(
        signer.x509(),
        signer.private_key(),
        &no_extra_certs,
        body,
        flags,
    )?;
    Ok(BASE64.encode(pkcs7.to_der()?))
}

/// An attached CMS SignedData over the profile, embedding the signer and `chain` certificates (what macOS and
/// iOS show as "Verified" when the chain reaches a trusted root).
pub fn sign_profile(
    profile: &[u8],
    signer: &Identity,
    chain: &[&Identity],
) -> Result<Vec<u8>, PkiError> {
    let mut extra_certs = Stack::<X509>::new()?;
    for identity in chain {
        extra_certs.push(identity.x509().to_owned())?;
    }
    let flags = Pkcs7Flags::BINARY | Pkcs7Flags::NOSMIMECAP;
    let pkcs7 = Pkcs7::sign(
        signer.x509(),
        signer.private_key(),
        &extra_certs,
        profile,
        flags,
    )?;
    Ok(pkcs7.to_der()?)
}

/// Verifies a signed profile: signature over the embedded content, and the signer certificate chaining (through
/// the embedded certificates) to `trusted_root_der`. Validity dates are not checked (this crate never reads the
/// clock): use [`verify_signed_profile_at`] for that. Returns the profile bytes.
pub fn verify_signed_profile(der: &[u8], trusted_root_der: &[u8]) -> Result<Vec<u8>, PkiError> {
    verify_profile(der, trusted_root_der, None)
}

/// [`verify_signed_profile`] that also checks every certificate of the chain is valid at `now`.
pub fn verify_signed_profile_at(
    der: &[u8],
    trusted_root_der: &[u8],
    now: UnixTime,
) -> Result<Vec<u8>, PkiError> {
    verify_profile(der, trusted_root_der, Some(now))
}

fn verify_profile(
    der: &[u8],
    trusted_root_der: &[u8],
    now: Option<UnixTime>,
) -> Result<Vec<u8>, PkiError> {
    let root = X509::from_der(trusted_root_der)
        .map_err(|e| PkiError::Malformed(format!("trusted root: {e}")))?;
    let pkcs7 = parse_signed_data(der, "signed profile")?;
    let no_extra_certs = Stack::<X509>::new()?;
    let mut content = Vec::new();
    let empty_store = X509StoreBuilder::new()?.build();
    // Signature first, without OpenSSL's S/MIME purpose check; the chain is checked below with no purpose.
    pkcs7
        .verify(
            &no_extra_certs,
            &empty_store,
            None,
            Some(&mut content),
            Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY,
        )
        .map_err(|e| PkiError::BadSignature(format!("signed profile: {e}")))?;
    let signer = single_signer(&pkcs7)?;

    let mut store = X509StoreBuilder::new()?;
    store.add_cert(root)?;
    match now {
        Some(now) => {
            let mut param = X509VerifyParam::new()?;
            param.set_time(time_t(now)?);
            store.set_param(&param)?;
        }
        None => store.set_flags(X509VerifyFlags::NO_CHECK_TIME)?,
    }
    let store = store.build();
    let mut untrusted = Stack::<X509>::new()?;
    if let Some(certs) = pkcs7.signed().and_then(|signed| signed.certificates()) {
        for cert in certs {
            untrusted.push(cert.to_owned())?;
        }
    }
    let mut context = X509StoreContext::new()?;
    let chain_result = context.init(&store, &signer, &untrusted, |ctx| {
        let ok = ctx.verify_cert()?;
        Ok((ok, ctx.error()))
    })?;
    match chain_result {
        (true, _) => Ok(content),
        (false, error) => Err(PkiError::UntrustedSigner(format!(
            "profile signer does not chain to the trusted root: {}",
            error.error_string()
        ))),
    }
}

/// Who signed a profile made elsewhere (Apple Configurator, another MDM), as shown to people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSigner {
    /// The signer certificate's subject, e.g. `CN=Profiles, O=Example University`.
    pub subject: String,
    pub issuer: String,
    pub not_after: UnixTime,
    pub fingerprint: String,
}

/// Opens a signed profile made elsewhere: checks the CMS signature over the embedded content with the embedded
/// signer certificate and returns the content with its signer. The chain is not checked: its root is not one
/// Orchard trusts or judges (Orchard re-signs what it installs); a signature that does not verify is an error.
pub fn open_signed_profile(der: &[u8]) -> Result<(Vec<u8>, ProfileSigner), PkiError> {
    let pkcs7 = parse_signed_data(der, "signed profile")?;
    let no_extra_certs = Stack::<X509>::new()?;
    let empty_store = X509StoreBuilder::new()?.build();
    let mut content = Vec::new();
    pkcs7
        .verify(
            &no_extra_certs,
            &empty_store,
            None,
            Some(&mut content),
            Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY,
        )
        .map_err(|e| PkiError::BadSignature(format!("signed profile: {}", describe(&e))))?;
    let signer = single_signer(&pkcs7)?;
    let name = |n: &openssl::x509::X509NameRef| {
        n.entries()
            .map(|entry| {
                let key = entry.object().nid().short_name().unwrap_or("?");
                let value = String::from_utf8_lossy(entry.data().as_slice());
                format!("{key}={value}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok((
        content,
        ProfileSigner {
            subject: name(signer.subject_name()),
            issuer: name(signer.issuer_name()),
            not_after: asn1_time_to_unix(signer.not_after())?,
            fingerprint: fingerprint_sha256_hex(&signer.to_der()?),
        },
    ))
}

/// Parses DER as a PKCS#7/CMS ContentInfo that must be SignedData.
pub(crate) fn parse_signed_data(der: &[u8], what: &str) -> Result<Pkcs7, PkiError> {
    let pkcs7 = Pkcs7::from_der(der).map_err(|e| PkiError::Malformed(format!("{what}: {e}")))?;
    let is_signed = pkcs7
        .type_()
        .map(|t| t.nid() == Nid::PKCS7_SIGNED)
        .unwrap_or(false);
    if !is_signed || pkcs7.signed().is_none() {
        return Err(PkiError::Malformed(format!(
            "{what}: not a signed-data message"
        )));
    }
    Ok(pkcs7)
}

/// Verifies a detached signature over `body` with the signer certificate embedded in the message (no chain, no
/// purpose) and returns that certificate. Exactly one signer is accepted.
fn verify_detached(
    pkcs7: &mut Pkcs7,
    body: &[u8],
    ca: &CertificateAuthority,
) -> Result<X509, PkiError> {
    attach_content(pkcs7, body)?;
    let no_extra_certs = Stack::<X509>::new()?;
    pkcs7
        .verify(
            &no_extra_certs,
            ca.empty_store(),
            None,
            None,
            Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY,
        )
        .map_err(|e| PkiError::BadSignature(describe(&e)))?;
    single_signer(pkcs7)
}

/// Makes `body` the encapsulated content of a parsed SignedData (replacing whatever content it carried, or its
/// absence), so that a detached signature is verified with `PKCS7_verify(.., indata = NULL, ..)`.
///
/// Never hand OpenSSL 3.0's `PKCS7_verify` detached data as a BIO (issue 19): given a non-empty memory BIO it
/// makes a private copy of it and leaks that copy (5 allocations, ~270 bytes) whenever `PKCS7_dataInit` fails,
/// e.g. on an unknown digest algorithm; given an empty one it frees only the head of its digest BIO chain, so
/// every digest algorithm after the first leaks. With the content inside the message OpenSSL creates every BIO
/// itself and frees the whole chain on every path.
pub(crate) fn attach_content(pkcs7: &mut Pkcs7, body: &[u8]) -> Result<(), PkiError> {
    use foreign_types::ForeignTypeRef as _;

    let len = std::ffi::c_int::try_from(body.len())
        .map_err(|_| PkiError::Malformed("signed content is too large".into()))?;
    let Some(signed) = pkcs7.signed() else {
        return Err(PkiError::Malformed("not a signed-data message".into()));
    };
    let signed = signed.as_ptr();
    // SAFETY: `pkcs7` is an owned, parsed SignedData (checked just above: its `d.sign` is non-null) borrowed
    // mutably for the whole block. PKCS7_content_new frees the old inner ContentInfo and installs a new `data`
    // one that owns a fresh, empty OCTET STRING; the pointers read afterwards point into that new, non-null
    // (checked) structure, and ASN1_OCTET_STRING_set copies `body`, which outlives the call.
    unsafe {
        if openssl_sys::PKCS7_content_new(pkcs7.as_ptr(), openssl_sys::NID_pkcs7_data) != 1 {
            return Err(PkiError::Crypto(describe(&ErrorStack::get())));
        }
        let inner = (*signed).contents;
        if inner.is_null() || (*inner).d.data.is_null() {
            return Err(PkiError::Crypto(
                "signed content could not be attached".into(),
            ));
        }
        if openssl_sys::ASN1_OCTET_STRING_set((*inner).d.data, body.as_ptr(), len) != 1 {
            return Err(PkiError::Crypto(describe(&ErrorStack::get())));
        }
    }
    Ok(())
}

/// The one signer certificate of a message (embedded certificates only).
pub(crate) fn single_signer(pkcs7: &Pkcs7) -> Result<X509, PkiError> {
    let no_extra_certs = Stack::<X509>::new()?;
    let signers = pkcs7
        .signers(&no_extra_certs, Pkcs7Flags::empty())
        .map_err(|e| {
            PkiError::BadSignature(format!("signer certificate not found: {}", describe(&e)))
        })?;
    let mut signers = signers.into_iter();
    match (signers.next(), signers.next()) {
        (Some(signer), None) => Ok(signer),
        (None, _) => Err(PkiError::BadSignature("no signer".into())),
        (Some(_), Some(_)) => Err(PkiError::BadSignature("more than one signer".into())),
    }
}

fn check_signer(
    signer: &X509Ref,
    ca: &CertificateAuthority,
    now: UnixTime,
) -> Result<VerifiedSigner, PkiError> {
    ca.check_issued(signer)?;
    let not_before = asn1_time_to_unix(signer.not_before())?;
    let not_after = asn1_time_to_unix(signer.not_after())?;
    if now < not_before {
        return Err(PkiError::NotYetValid);
    }
    if now > not_after {
        return Err(PkiError::Expired);
    }
    let cert_der = signer.to_der()?;
    let fingerprint = fingerprint_sha256_hex(&cert_der);
    Ok(VerifiedSigner {
        cert_der,
        fingerprint,
        not_before,
        not_after,
        subject_common_name: common_name(signer.subject_name()),
    })
}

/// OpenSSL's error reasons joined, without the noisy file/line parts.
pub(crate) fn describe(errors: &ErrorStack) -> String {
    let reasons: Vec<&str> = errors.errors().iter().filter_map(|e| e.reason()).collect();
    if reasons.is_empty() {
        "openssl reported no reason".into()
    } else {
        reasons.join("; ")
    }
}

/// The two verification paths behind [`verify_mdm_signature`], callable one by one for the differential fuzz
/// targets (`fuzz/fuzz_targets/signature_differential.rs`, `certificate_differential.rs`): the fast path may
/// decline (`None`), but whatever it decides must be what OpenSSL decides. Not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod paths {
    use openssl::x509::X509;
    use orchard_types::UnixTime;

    use super::{fast, VerifiedSigner};
    use crate::{CertificateAuthority, PkiError};

    /// The fast path on a decoded header: `None` when it leaves the message to OpenSSL.
    pub fn fast(
        der: &[u8],
        body: &[u8],
        ca: &CertificateAuthority,
        now: UnixTime,
    ) -> Option<Result<VerifiedSigner, PkiError>> {
        match fast::verify(der, body, ca, now) {
            fast::Outcome::Verified(signer) => Some(Ok(signer)),
            fast::Outcome::Rejected(error) => Some(Err(error)),
            fast::Outcome::NotHandled => None,
        }
    }

    /// The OpenSSL path on a decoded header.
    pub fn openssl(
        der: &[u8],
        body: &[u8],
        ca: &CertificateAuthority,
        now: UnixTime,
    ) -> Result<VerifiedSigner, PkiError> {
        super::verify_with_openssl(der, body, ca, now)
    }

    /// The fast path's certificate checks (issuer, CA signature, validity, facts) on one DER certificate: `None`
    /// when it would leave the certificate to OpenSSL.
    pub fn fast_certificate(
        der: &[u8],
        ca: &CertificateAuthority,
        now: UnixTime,
    ) -> Option<Result<VerifiedSigner, PkiError>> {
        fast::check_signer(&fast::certificate(der)?, ca, now)
    }

    /// The OpenSSL path's certificate checks on one DER certificate.
    pub fn openssl_certificate(
        der: &[u8],
        ca: &CertificateAuthority,
        now: UnixTime,
    ) -> Result<VerifiedSigner, PkiError> {
        let cert = X509::from_der(der).map_err(|e| PkiError::Malformed(super::describe(&e)))?;
        super::check_signer(&cert, ca, now)
    }
}

/// `Mdm-Signature` verification without OpenSSL's parsers, for the shape devices send: DER, one signer identified
/// by issuer and serial, signed attributes with a messageDigest, RSA. Returns `NotHandled` for anything else, so
/// that the OpenSSL path decides; it only ever rejects after a definite cryptographic or trust failure, which
/// the OpenSSL path would reject too.
mod fast {
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::{PKey, PKeyRef, Public};
    use openssl::rsa::Rsa;
    use openssl::sign::Verifier;
    use x509_parser::certificate::X509Certificate;
    use x509_parser::der_parser::asn1_rs::Tag;
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    use x509_parser::x509::AttributeTypeAndValue;

    use super::VerifiedSigner;
    use crate::{fingerprint_sha256_hex, CertificateAuthority, PkiError};
    use orchard_types::UnixTime;

    pub(super) enum Outcome {
        Verified(VerifiedSigner),
        Rejected(PkiError),
        NotHandled,
    }

    // DER contents of the object identifiers involved.
    const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
    const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
    const OID_CONTENT_TYPE: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x03];
    const OID_MESSAGE_DIGEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04];
    const OID_SIGNING_TIME: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x05];
    const TAG_UTC_TIME: u8 = 0x17;
    const TAG_GENERALIZED_TIME: u8 = 0x18;
    const OID_SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
    const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
    const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
    const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
    const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    const OID_SHA1_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
    const OID_SHA256_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    const OID_SHA384_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
    const OID_SHA512_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
    const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    const OID_ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    const OID_ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];

    const TAG_INTEGER: u8 = 0x02;
    const TAG_BIT_STRING: u8 = 0x03;
    const TAG_OCTET_STRING: u8 = 0x04;
    const TAG_NULL: u8 = 0x05;
    const TAG_OID: u8 = 0x06;
    const TAG_SEQUENCE: u8 = 0x30;
    const TAG_SET: u8 = 0x31;
    const TAG_CONTEXT_0: u8 = 0xa0;
    const TAG_CONTEXT_1: u8 = 0xa1;

    /// One DER element: its tag, its contents and its whole encoding.
    #[derive(Clone, Copy)]
    struct Tlv<'a> {
        tag: u8,
        contents: &'a [u8],
        encoded: &'a [u8],
    }

    /// Reads consecutive DER elements; `None` for anything but single-byte tags and definite lengths.
    struct Reader<'a> {
        rest: &'a [u8],
    }

    impl<'a> Reader<'a> {
        fn new(bytes: &'a [u8]) -> Self {
            Self { rest: bytes }
        }

        fn is_empty(&self) -> bool {
            self.rest.is_empty()
        }

        fn next(&mut self) -> Option<Tlv<'a>> {
            let (&tag, after_tag) = self.rest.split_first()?;
            if tag & 0x1f == 0x1f {
                return None; // high tag numbers never occur here
            }
            let (&first, after_first) = after_tag.split_first()?;
            let (length, after_length) = if first < 0x80 {
                (usize::from(first), after_first)
            } else {
                let count = usize::from(first & 0x7f);
                if count == 0 || count > 4 {
                    return None; // indefinite length (BER) or absurd
                }
                let (length_bytes, after) = after_first.split_at_checked(count)?;
                let length = length_bytes
                    .iter()
                    .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
                // DER: the shortest form only (no leading zero byte, no long form below 128).
                if length_bytes.first() == Some(&0) || length < 0x80 {
                    return None;
                }
                (length, after)
            };
            let header_len = self.rest.len() - after_length.len();
            let (contents, rest) = after_length.split_at_checked(length)?;
            let encoded = self.rest.get(..header_len + length)?;
            self.rest = rest;
            Some(Tlv {
                tag,
                contents,
                encoded,
            })
        }

        fn expect(&mut self, tag: u8) -> Option<Tlv<'a>> {
            self.next().filter(|tlv| tlv.tag == tag)
        }

        /// Consumes the next element only if it has `tag`.
        fn optional(&mut self, tag: u8) -> Option<Tlv<'a>> {
            if self.rest.first() == Some(&tag) {
                self.next()
            } else {
                None
            }
        }
    }

    /// The parts of a SignedData the verification needs.
    pub(super) struct Parsed<'a> {
        certificates: Reader<'a>,
        issuer: &'a [u8],
        serial: &'a [u8],
        digest: Digest,
        signed_attributes: &'a [u8],
        message_digest: &'a [u8],
        signature: &'a [u8],
    }

    /// The OID of an AlgorithmIdentifier whose parameters are absent or NULL (all the algorithms used here).
    fn algorithm_oid(algorithm_identifier: Tlv<'_>) -> Option<&[u8]> {
        let mut fields = Reader::new(algorithm_identifier.contents);
        let oid = fields.expect(TAG_OID)?;
        if !fields.is_empty() {
            let parameters = fields.next()?;
            if parameters.tag != TAG_NULL || !parameters.contents.is_empty() || !fields.is_empty() {
                return None;
            }
        }
        Some(oid.contents)
    }

    /// The digest algorithms the fast path reads.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Digest {
        Sha1,
        Sha256,
        Sha384,
        Sha512,
    }

    impl Digest {
        fn hash(self, data: &[u8]) -> ring::digest::Digest {
            let algorithm = match self {
                Digest::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                Digest::Sha256 => &ring::digest::SHA256,
                Digest::Sha384 => &ring::digest::SHA384,
                Digest::Sha512 => &ring::digest::SHA512,
            };
            ring::digest::digest(algorithm, data)
        }

        /// RSA PKCS #1 v1.5 with this digest, as ring checks it (2048- to 8192-bit keys).
        fn rsa_pkcs1(self) -> &'static ring::signature::RsaParameters {
            match self {
                Digest::Sha1 => &ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                Digest::Sha256 => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                Digest::Sha384 => &ring::signature::RSA_PKCS1_2048_8192_SHA384,
                Digest::Sha512 => &ring::signature::RSA_PKCS1_2048_8192_SHA512,
            }
        }

        fn openssl(self) -> MessageDigest {
            match self {
                Digest::Sha1 => MessageDigest::sha1(),
                Digest::Sha256 => MessageDigest::sha256(),
                Digest::Sha384 => MessageDigest::sha384(),
                Digest::Sha512 => MessageDigest::sha512(),
            }
        }
    }

    fn digest_of(algorithm_identifier: Tlv<'_>) -> Option<Digest> {
        match algorithm_oid(algorithm_identifier)? {
            OID_SHA1 => Some(Digest::Sha1),
            OID_SHA256 => Some(Digest::Sha256),
            OID_SHA384 => Some(Digest::Sha384),
            OID_SHA512 => Some(Digest::Sha512),
            _ => None,
        }
    }

    fn parse(der: &[u8]) -> Option<Parsed<'_>> {
        let mut top = Reader::new(der);
        let content_info = top.expect(TAG_SEQUENCE)?;
        if !top.is_empty() {
            return None;
        }
        let mut content_info = Reader::new(content_info.contents);
        if content_info.expect(TAG_OID)?.contents != OID_SIGNED_DATA {
            return None;
        }
        let explicit = content_info.expect(TAG_CONTEXT_0)?;
        let mut explicit = Reader::new(explicit.contents);
        let signed_data = explicit.expect(TAG_SEQUENCE)?;
        if !explicit.is_empty() || !content_info.is_empty() {
            return None;
        }

        let mut fields = Reader::new(signed_data.contents);
        fields.expect(TAG_INTEGER)?; // version
        let digest_algorithms = fields.expect(TAG_SET)?;
        let encapsulated = fields.expect(TAG_SEQUENCE)?;
        let mut encapsulated = Reader::new(encapsulated.contents);
        if encapsulated.expect(TAG_OID)?.contents != OID_DATA || !encapsulated.is_empty() {
            return None; // not detached data: the OpenSSL path reports it
        }
        let certificates = Reader::new(fields.expect(TAG_CONTEXT_0)?.contents);
        fields.optional(TAG_CONTEXT_1); // CRLs are not used
        let signer_infos = fields.expect(TAG_SET)?;
        if !fields.is_empty() {
            return None;
        }
        let mut signer_infos = Reader::new(signer_infos.contents);
        let signer_info = signer_infos.expect(TAG_SEQUENCE)?;
        if !signer_infos.is_empty() {
            return None; // several signers
        }

        let mut info = Reader::new(signer_info.contents);
        fields_version_one(&mut info)?;
        let sid = info.expect(TAG_SEQUENCE)?; // issuerAndSerialNumber (a subjectKeyIdentifier is [0])
        let mut sid = Reader::new(sid.contents);
        let issuer = sid.expect(TAG_SEQUENCE)?.encoded;
        let serial = sid.expect(TAG_INTEGER)?.contents;
        if !sid.is_empty() {
            return None;
        }
        let digest = digest_of(info.expect(TAG_SEQUENCE)?)?;
        // RFC 5652: digestAlgorithms lists the signer's; OpenSSL digests with every one listed, so an unknown
        // entry is left to it.
        let mut listed = Reader::new(digest_algorithms.contents);
        let mut signer_digest_listed = false;
        while !listed.is_empty() {
            let algorithm = digest_of(listed.expect(TAG_SEQUENCE)?)?;
            signer_digest_listed |= algorithm == digest;
        }
        if !signer_digest_listed {
            return None;
        }
        let signed_attributes = info.expect(TAG_CONTEXT_0)?;
        let signature_algorithm = info.expect(TAG_SEQUENCE)?;
        let rsa_with_matching_hash = match algorithm_oid(signature_algorithm)? {
            OID_RSA_ENCRYPTION => true,
            OID_SHA1_WITH_RSA => digest == Digest::Sha1,
            OID_SHA256_WITH_RSA => digest == Digest::Sha256,
            OID_SHA384_WITH_RSA => digest == Digest::Sha384,
            OID_SHA512_WITH_RSA => digest == Digest::Sha512,
            _ => false,
        };
        if !rsa_with_matching_hash {
            return None;
        }
        let signature = info.expect(TAG_OCTET_STRING)?.contents;
        info.optional(TAG_CONTEXT_1); // unsigned attributes
        if !info.is_empty() {
            return None;
        }

        let message_digest = single_message_digest(signed_attributes.contents)?;
        Some(Parsed {
            certificates,
            issuer,
            serial,
            digest,
            signed_attributes: signed_attributes.encoded,
            message_digest,
            signature,
        })
    }

    /// The signingTime signed attribute of a message of the usual shape (see [`parse`]).
    pub(super) fn signing_time(der: &[u8]) -> Option<UnixTime> {
        let parsed = parse(der)?;
        let attributes = Reader::new(parsed.signed_attributes).expect(TAG_CONTEXT_0)?;
        let mut reader = Reader::new(attributes.contents);
        while !reader.is_empty() {
            let attribute = reader.expect(TAG_SEQUENCE)?;
            let mut attribute = Reader::new(attribute.contents);
            if attribute.expect(TAG_OID)?.contents != OID_SIGNING_TIME {
                continue;
            }
            let mut values = Reader::new(attribute.expect(TAG_SET)?.contents);
            let value = values.next()?;
            return der_time(value.tag, value.contents);
        }
        None
    }

    /// A DER UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as unix seconds.
    pub(super) fn der_time(tag: u8, contents: &[u8]) -> Option<UnixTime> {
        let text = std::str::from_utf8(contents).ok()?;
        let digits = text.strip_suffix('Z')?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (year, rest) = match (tag, digits.len()) {
            (TAG_UTC_TIME, 12) => {
                let yy: i32 = digits.get(..2)?.parse().ok()?;
                // RFC 5280: 50..99 are 19xx, 00..49 are 20xx.
                (
                    if yy >= 50 { 1900 + yy } else { 2000 + yy },
                    digits.get(2..)?,
                )
            }
            (TAG_GENERALIZED_TIME, 14) => (digits.get(..4)?.parse().ok()?, digits.get(4..)?),
            _ => return None,
        };
        let two = |i: usize| -> Option<u8> { rest.get(i..i + 2)?.parse().ok() };
        let month = time::Month::try_from(two(0)?).ok()?;
        let date = time::Date::from_calendar_date(year, month, two(2)?).ok()?;
        let clock = time::Time::from_hms(two(4)?, two(6)?, two(8)?).ok()?;
        Some(UnixTime(
            time::PrimitiveDateTime::new(date, clock)
                .assume_utc()
                .unix_timestamp(),
        ))
    }

    fn fields_version_one(info: &mut Reader<'_>) -> Option<()> {
        (info.expect(TAG_INTEGER)?.contents == [1]).then_some(())
    }

    /// The value of the one messageDigest attribute; the contentType attribute, if any, must say data; every
    /// attribute type may occur once.
    fn single_message_digest(attributes: &[u8]) -> Option<&[u8]> {
        let mut reader = Reader::new(attributes);
        let mut message_digest = None;
        let mut seen: Vec<&[u8]> = Vec::with_capacity(4);
        while !reader.is_empty() {
            let attribute = reader.expect(TAG_SEQUENCE)?;
            let mut attribute = Reader::new(attribute.contents);
            let kind = attribute.expect(TAG_OID)?.contents;
            let values = attribute.expect(TAG_SET)?;
            if !attribute.is_empty() || seen.contains(&kind) {
                return None;
            }
            seen.push(kind);
            let mut values = Reader::new(values.contents);
            let value = values.next()?;
            if !values.is_empty() {
                return None;
            }
            match kind {
                OID_MESSAGE_DIGEST if value.tag == TAG_OCTET_STRING => {
                    message_digest = Some(value.contents)
                }
                OID_MESSAGE_DIGEST => return None,
                OID_CONTENT_TYPE if value.tag != TAG_OID || value.contents != OID_DATA => {
                    return None
                }
                _ => {}
            }
        }
        message_digest
    }

    pub(super) fn verify(
        der: &[u8],
        body: &[u8],
        ca: &CertificateAuthority,
        now: UnixTime,
    ) -> Outcome {
        let Some(parsed) = parse(der) else {
            return Outcome::NotHandled;
        };
        let certificates = Reader::new(parsed.certificates.rest);
        let Some(cert) = find_signer(certificates, parsed.issuer, parsed.serial) else {
            return Outcome::NotHandled;
        };
        let Ok(PublicKey::RSA(rsa)) = cert.tbs_certificate.subject_pki.parsed() else {
            return Outcome::NotHandled;
        };

        match check_message(&parsed, body, rsa.modulus, rsa.exponent) {
            Some(Ok(())) => {}
            Some(Err(error)) => return Outcome::Rejected(error),
            None => return Outcome::NotHandled,
        }

        match check_signer(&cert, ca, now) {
            Some(Ok(signer)) => Outcome::Verified(signer),
            Some(Err(error)) => Outcome::Rejected(error),
            None => Outcome::NotHandled,
        }
    }

    /// The body hashes to the signed messageDigest, and the signature covers the signed attributes (DER,
    /// re-tagged from [0] IMPLICIT to SET OF as CMS specifies) under the RSA key (`modulus`, `exponent`).
    /// `None` when OpenSSL could not even try: the OpenSSL path decides.
    fn check_message(
        parsed: &Parsed<'_>,
        body: &[u8],
        modulus: &[u8],
        exponent: &[u8],
    ) -> Option<Result<(), PkiError>> {
        if parsed.digest.hash(body).as_ref() != parsed.message_digest {
            return Some(Err(PkiError::BadSignature(
                "message digest does not match the body".into(),
            )));
        }
        let (_, attributes_contents) = parsed.signed_attributes.split_first()?;
        let mut signed = Vec::with_capacity(parsed.signed_attributes.len());
        signed.push(0x31);
        signed.extend_from_slice(attributes_contents);
        match verify_rsa(parsed.digest, modulus, exponent, &signed, parsed.signature)? {
            true => Some(Ok(())),
            false => Some(Err(PkiError::BadSignature(
                "signature does not verify with the signer certificate".into(),
            ))),
        }
    }

    /// What [`verify`] proved about a signer certificate that holds at any time: the signer identifier it
    /// answers to, its RSA key (as bytes: see [`verify_known`]), and the facts returned to callers (see
    /// `super::SignerCache`).
    pub(crate) struct KnownSigner {
        issuer: Box<[u8]>,
        serial: Box<[u8]>,
        modulus: Box<[u8]>,
        exponent: Box<[u8]>,
        fingerprint: String,
        not_before: UnixTime,
        not_after: UnixTime,
        subject_common_name: Option<String>,
    }

    /// The parts of a signer [`verify`] accepted that [`verify_known`] needs; `None` if it cannot be read
    /// again the fast way (then it is simply not kept).
    pub(super) fn known_signer(signer: &VerifiedSigner) -> Option<KnownSigner> {
        let mut reader = Reader::new(&signer.cert_der);
        let cert = canonical_certificate(reader.expect(TAG_SEQUENCE)?)?;
        let Ok(PublicKey::RSA(rsa)) = cert.tbs_certificate.subject_pki.parsed() else {
            return None;
        };
        // Kept only when OpenSSL takes the key, as the full path needs it to.
        rsa_public_key(rsa.modulus, rsa.exponent)?;
        Some(KnownSigner {
            issuer: cert.tbs_certificate.issuer.as_raw().into(),
            serial: cert.tbs_certificate.raw_serial().into(),
            modulus: rsa.modulus.into(),
            exponent: rsa.exponent.into(),
            fingerprint: signer.fingerprint.clone(),
            not_before: signer.not_before,
            not_after: signer.not_after,
            subject_common_name: signer.subject_common_name.clone(),
        })
    }

    /// A message of the usual shape carrying exactly one certificate (what devices send), and that
    /// certificate's DER.
    pub(super) fn parse_with_sole_certificate(der: &[u8]) -> Option<(Parsed<'_>, &[u8])> {
        let parsed = parse(der)?;
        let mut certificates = Reader::new(parsed.certificates.rest);
        let certificate = certificates.expect(TAG_SEQUENCE)?.encoded;
        if !certificates.is_empty() {
            return None;
        }
        Some((parsed, certificate))
    }

    /// [`verify`] for a message whose sole certificate, byte for byte, is `known`'s: the same answer without
    /// reading the certificate or checking its issuer again.
    pub(super) fn verify_known(
        parsed: &Parsed<'_>,
        cert_der: &[u8],
        known: &KnownSigner,
        body: &[u8],
        now: UnixTime,
    ) -> Outcome {
        if *parsed.issuer != *known.issuer || *parsed.serial != *known.serial {
            return Outcome::NotHandled; // signed by a certificate the message does not carry
        }
        // The key is kept as bytes (~260, where a verified OpenSSL key holds ~2.6 KB): ring reads them directly.
        match check_message(parsed, body, &known.modulus, &known.exponent) {
            Some(Ok(())) => {}
            Some(Err(error)) => return Outcome::Rejected(error),
            None => return Outcome::NotHandled,
        }
        if now < known.not_before {
            return Outcome::Rejected(PkiError::NotYetValid);
        }
        if now > known.not_after {
            return Outcome::Rejected(PkiError::Expired);
        }
        Outcome::Verified(VerifiedSigner {
            cert_der: cert_der.to_vec(),
            fingerprint: known.fingerprint.clone(),
            not_before: known.not_before,
            not_after: known.not_after,
            subject_common_name: known.subject_common_name.clone(),
        })
    }

    /// The fast counterpart of `super::check_signer`: issued by `ca`, valid at `now`, and the facts we return.
    /// `None` when the certificate holds something read differently by x509-parser and OpenSSL.
    pub(super) fn check_signer(
        cert: &X509Certificate<'_>,
        ca: &CertificateAuthority,
        now: UnixTime,
    ) -> Option<Result<VerifiedSigner, PkiError>> {
        if let Err(error) = check_issued_by(cert, ca) {
            return Some(Err(error));
        }
        let validity = &cert.tbs_certificate.validity;
        let not_before = UnixTime(validity.not_before.timestamp());
        let not_after = UnixTime(validity.not_after.timestamp());
        if now < not_before {
            return Some(Err(PkiError::NotYetValid));
        }
        if now > not_after {
            return Some(Err(PkiError::Expired));
        }
        let subject_common_name = match cert.tbs_certificate.subject.iter_common_name().next() {
            None => None,
            Some(cn) => Some(plain_ascii(cn)?.to_owned()),
        };
        let cert_der = cert.as_raw().to_vec();
        let fingerprint = fingerprint_sha256_hex(&cert_der);
        Some(Ok(VerifiedSigner {
            cert_der,
            fingerprint,
            not_before,
            not_after,
            subject_common_name,
        }))
    }

    /// A name attribute's value when x509-parser and OpenSSL read it alike: printable, numeric, IA5 or UTF-8
    /// string of ASCII without NUL. OpenSSL converts the other string types (T61String, BMPString…) to UTF-8 and
    /// reads non-ASCII bytes of the 8-bit types as Latin-1, and its C strings stop at a NUL, where x509-parser
    /// gives none or other text (found by the certificate differential fuzz target): those go to OpenSSL.
    fn plain_ascii<'a>(attribute: &AttributeTypeAndValue<'a>) -> Option<&'a str> {
        let value = attribute.attr_value();
        let string_type = matches!(
            value.tag(),
            Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::NumericString
        );
        if !string_type || !value.data.iter().all(|b| (1..0x80).contains(b)) {
            return None;
        }
        attribute.as_str().ok()
    }

    /// A whole DER certificate read the fast way: `None` unless it is canonical (see `canonical_certificate`).
    #[cfg(feature = "fuzzing")]
    pub(super) fn certificate(der: &[u8]) -> Option<X509Certificate<'_>> {
        let mut reader = Reader::new(der);
        let encoded = reader.expect(TAG_SEQUENCE)?;
        if !reader.is_empty() {
            return None;
        }
        canonical_certificate(encoded)
    }

    /// The embedded certificate whose issuer and serial match the signer identifier.
    fn find_signer<'a>(
        mut certificates: Reader<'a>,
        issuer: &[u8],
        serial: &[u8],
    ) -> Option<X509Certificate<'a>> {
        while !certificates.is_empty() {
            let encoded = certificates.expect(TAG_SEQUENCE)?;
            let cert = canonical_certificate(encoded)?;
            if cert.tbs_certificate.raw_serial() == serial
                && cert.tbs_certificate.issuer.as_raw() == issuer
            {
                return Some(cert);
            }
        }
        None
    }

    /// Parses a certificate whose bytes outside the signed TBS are pinned too: strict DER headers (the reader),
    /// the outer signatureAlgorithm identical to the signed copy inside the TBS, a BIT STRING signature without
    /// unused bits. The CA signature check then covers everything, so one identity has one fingerprint.
    fn canonical_certificate(encoded: Tlv<'_>) -> Option<X509Certificate<'_>> {
        let mut parts = Reader::new(encoded.contents);
        let tbs = parts.expect(TAG_SEQUENCE)?;
        let outer_algorithm = parts.expect(TAG_SEQUENCE)?;
        let signature = parts.expect(TAG_BIT_STRING)?;
        if !parts.is_empty() || signature.contents.first() != Some(&0) {
            return None;
        }
        let mut tbs_fields = Reader::new(tbs.contents);
        tbs_fields.optional(TAG_CONTEXT_0); // version
        tbs_fields.expect(TAG_INTEGER)?; // serial
        if tbs_fields.expect(TAG_SEQUENCE)?.encoded != outer_algorithm.encoded {
            return None;
        }
        strict_structure(Reader::new(tbs.contents), 0)?;
        let (rest, cert) = X509Certificate::from_der(encoded.encoded).ok()?;
        if !rest.is_empty()
            || cert.as_raw() != encoded.encoded
            || cert.tbs_certificate.as_ref() != tbs.encoded
        {
            return None;
        }
        Some(cert)
    }

    /// Every constructed element, all the way down, is a SEQUENCE, a SET or a context/application tag whose
    /// contents are strict DER elements, end to end; no end-of-contents marker, no constructed string. x509-parser
    /// skips over some of what OpenSSL's templates refuse (an end-of-contents inside a Name, found by the
    /// certificate differential fuzz target): such certificates go to OpenSSL.
    fn strict_structure(mut reader: Reader<'_>, depth: usize) -> Option<()> {
        const MAX_DEPTH: usize = 16;
        while !reader.is_empty() {
            let element = reader.next()?;
            if element.tag == 0 {
                return None;
            }
            if element.tag & 0x20 != 0 {
                let universal = element.tag & 0xc0 == 0;
                if depth >= MAX_DEPTH
                    || (universal && element.tag != TAG_SEQUENCE && element.tag != TAG_SET)
                {
                    return None;
                }
                strict_structure(Reader::new(element.contents), depth + 1)?;
            }
        }
        Some(())
    }

    /// Issued by our CA: same issuer name bytes, and the CA key verifies the signature over the TBS bytes.
    fn check_issued_by(
        cert: &X509Certificate<'_>,
        ca: &CertificateAuthority,
    ) -> Result<(), PkiError> {
        if cert.tbs_certificate.issuer.as_raw() != ca.subject_der.as_slice() {
            return Err(PkiError::UntrustedSigner(format!(
                "certificate issued by {}, not by our ca",
                cert.tbs_certificate.issuer
            )));
        }
        let untrusted = || {
            PkiError::UntrustedSigner(
                "certificate signature does not verify with our ca key".into(),
            )
        };
        let algorithm = cert.signature_algorithm.algorithm.as_bytes();
        if cert.tbs_certificate.signature.algorithm.as_bytes() != algorithm {
            return Err(untrusted());
        }
        let digest = match algorithm {
            OID_SHA256_WITH_RSA | OID_ECDSA_SHA256 => Digest::Sha256,
            OID_SHA384_WITH_RSA | OID_ECDSA_SHA384 => Digest::Sha384,
            OID_SHA512_WITH_RSA | OID_ECDSA_SHA512 => Digest::Sha512,
            _ => return Err(untrusted()),
        };
        let signed = cert.tbs_certificate.as_ref();
        let signature = &cert.signature_value.data;
        let verified = match (algorithm, ca.rsa_public_components()) {
            (OID_SHA256_WITH_RSA | OID_SHA384_WITH_RSA | OID_SHA512_WITH_RSA, Some((n, e))) => {
                verify_rsa(digest, n, e, signed, signature)
            }
            _ => verify_bytes(digest.openssl(), ca.public_key(), &[signed], signature),
        };
        match verified {
            Some(true) => Ok(()),
            _ => Err(untrusted()),
        }
    }

    /// RSA PKCS #1 v1.5 over `message`: `Some(true)` when ring verifies it, else OpenSSL's answer. ring checks
    /// the exact encoding of a 2048- to 8192-bit key, so what it accepts OpenSSL accepts too; what it refuses
    /// (a wrong signature, but also a key outside that range, which our SCEP never issues) OpenSSL decides, so
    /// the fast path refuses nothing OpenSSL would accept. ring needs no key object: OpenSSL 3 builds, exports and validates one for every message
    /// (about two thirds of a verification's cost).
    fn verify_rsa(
        digest: Digest,
        modulus: &[u8],
        exponent: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Option<bool> {
        let key = ring::signature::RsaPublicKeyComponents {
            n: without_leading_zeros(modulus),
            e: without_leading_zeros(exponent),
        };
        if key.verify(digest.rsa_pkcs1(), message, signature).is_ok() {
            return Some(true);
        }
        let key = rsa_public_key(modulus, exponent)?;
        verify_bytes(digest.openssl(), &key, &[message], signature)
    }

    /// A DER INTEGER's unsigned magnitude, as ring reads key components.
    fn without_leading_zeros(bytes: &[u8]) -> &[u8] {
        let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        &bytes[first..]
    }

    /// An RSA public key from its components, without OpenSSL's (slow in 3.0) key decoders.
    fn rsa_public_key(modulus: &[u8], exponent: &[u8]) -> Option<PKey<Public>> {
        let n = BigNum::from_slice(modulus).ok()?;
        let e = BigNum::from_slice(exponent).ok()?;
        let rsa = Rsa::from_public_components(n, e).ok()?;
        PKey::from_rsa(rsa).ok()
    }

    /// `Some(valid)`, or `None` when OpenSSL could not even attempt the check. Failures leave the thread's
    /// OpenSSL error queue empty.
    fn verify_bytes(
        digest: MessageDigest,
        key: &PKeyRef<Public>,
        parts: &[&[u8]],
        signature: &[u8],
    ) -> Option<bool> {
        let result = (|| {
            let mut verifier = Verifier::new(digest, key)?;
            for part in parts {
                verifier.update(part)?;
            }
            verifier.verify(signature)
        })();
        match result {
            Ok(valid) => {
                if !valid {
                    drop(openssl::error::ErrorStack::get());
                }
                Some(valid)
            }
            Err(_) => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const NOW: UnixTime = UnixTime(1_764_460_800);
    const DAY: i64 = 86_400;

    fn setup() -> (CertificateAuthority, Identity) {
        let ca = CertificateAuthority::generate("Orchard Test CA", NOW, 3650).unwrap();
        let device = issue_device(&ca, NOW, 365);
        (ca, device)
    }

    /// A device identity the way SCEP issues it (clientAuth EKU), through the real SCEP issuing code.
    fn issue_device(ca: &CertificateAuthority, now: UnixTime, days: u32) -> Identity {
        let key = crate::generate_rsa_key().unwrap();
        let pending =
            crate::scep::build_pkcs_req(&ca.cert_der(), &key, "device-udid", Some("pw"), now)
                .unwrap();
        let req = crate::scep::decode_pki_message(ca, &pending.message_der).unwrap();
        let der = crate::scep::issue_certificate(ca, &req, now, days).unwrap();
        Identity::from_parts(X509::from_der(&der).unwrap(), key).unwrap()
    }

    #[test]
    fn valid_signature_passes() {
        let (ca, device) = setup();
        let body = b"<?xml version=\"1.0\"?><plist><dict/></plist>";
        let header = sign_mdm_body(body, &device).unwrap();
        let signer = verify_mdm_signature(&header, body, &ca, NOW).unwrap();
        assert_eq!(signer.cert_der, device.cert_der());
        assert_eq!(
            signer.fingerprint,
            fingerprint_sha256_hex(&device.cert_der())
        );
        assert_eq!(signer.subject_common_name.as_deref(), Some("device-udid"));
        assert_eq!(signer.not_before, NOW.plus_seconds(-3600));
        assert_eq!(signer.not_after, NOW.plus_seconds(365 * DAY));
    }

    #[test]
    fn signing_time_is_read_from_the_signed_attributes() {
        let (_, device) = setup();
        let header = sign_mdm_body(b"body", &device).unwrap();
        // OpenSSL stamps its wall clock into signingTime.
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let at = mdm_signature_signing_time(&header).expect("signing time");
        assert!((at.0 - wall).abs() < DAY, "{at:?} vs {wall}");
        assert_eq!(mdm_signature_signing_time("not base64!"), None);
        assert_eq!(mdm_signature_signing_time(""), None);
    }

    #[test]
    fn der_times_parse_strictly() {
        assert_eq!(
            fast::der_time(0x17, b"251130000000Z"),
            Some(UnixTime(1_764_460_800))
        );
        assert_eq!(
            fast::der_time(0x18, b"20251130000000Z"),
            Some(UnixTime(1_764_460_800))
        );
        // Two-digit years 50..99 are the 1900s (RFC 5280).
        assert_eq!(
            fast::der_time(0x17, b"500101000000Z"),
            Some(UnixTime(-631_152_000))
        );
        for bad in [
            &b"251130000000"[..],
            b"25113000000Z",
            b"251330000000Z",
            b"2511300000+0Z",
            b"",
        ] {
            assert_eq!(fast::der_time(0x17, bad), None, "{bad:?}");
        }
        assert_eq!(fast::der_time(0x04, b"251130000000Z"), None);
    }

    #[test]
    fn changed_body_fails() {
        let (ca, device) = setup();
        let body = b"<plist><dict><key>UDID</key><string>A</string></dict></plist>".to_vec();
        let header = sign_mdm_body(&body, &device).unwrap();
        let mut changed = body.clone();
        changed[30] ^= 1;
        let err = verify_mdm_signature(&header, &changed, &ca, NOW).unwrap_err();
        assert!(matches!(err, PkiError::BadSignature(_)), "{err:?}");
        let err = verify_mdm_signature(&header, b"", &ca, NOW).unwrap_err();
        assert!(matches!(err, PkiError::BadSignature(_)), "{err:?}");
    }

    #[test]
    fn signer_from_another_ca_fails() {
        let (ca, _) = setup();
        let other = CertificateAuthority::generate("Orchard Test CA", NOW, 3650).unwrap();
        let stranger = issue_device(&other, NOW, 365);
        let body = b"body";
        let header = sign_mdm_body(body, &stranger).unwrap();
        let err = verify_mdm_signature(&header, body, &ca, NOW).unwrap_err();
        assert!(matches!(err, PkiError::UntrustedSigner(_)), "{err:?}");
        let self_signed = Identity::generate_self_signed_rsa("device", NOW, 10).unwrap();
        let header = sign_mdm_body(body, &self_signed).unwrap();
        let err = verify_mdm_signature(&header, body, &ca, NOW).unwrap_err();
        assert!(matches!(err, PkiError::UntrustedSigner(_)), "{err:?}");
    }

    #[test]
    fn expired_and_future_certs_fail() {
        let (ca, device) = setup();
        let body = b"body";
        let header = sign_mdm_body(body, &device).unwrap();
        let later = NOW.plus_seconds(366 * DAY);
        assert_eq!(
            verify_mdm_signature(&header, body, &ca, later).unwrap_err(),
            PkiError::Expired
        );
        let earlier = NOW.plus_seconds(-2 * 3600);
        assert_eq!(
            verify_mdm_signature(&header, body, &ca, earlier).unwrap_err(),
            PkiError::NotYetValid
        );
    }

    /// The cache answers what the uncached verification answers, for every case the uncached path
    /// distinguishes, and keeps only what the fast path accepted.
    #[test]
    fn cached_verification_answers_like_the_uncached_one() {
        let (ca, device) = setup();
        let other_ca = CertificateAuthority::generate("Another CA", NOW, 3650).unwrap();
        let stranger = issue_device(&other_ca, NOW, 365);
        let cache = SignerCache::new(&ca, 100);
        let body: &[u8] = b"<plist><dict><key>Status</key><string>Idle</string></dict></plist>";
        let header = sign_mdm_body(body, &device).unwrap();
        let stranger_header = sign_mdm_body(body, &stranger).unwrap();
        // What the cache does not know yet, then knows: both answers equal the uncached one.
        for round in 0..2 {
            let cached = cache.verify_mdm_signature(&header, body, &ca, NOW);
            assert_eq!(
                cached,
                verify_mdm_signature(&header, body, &ca, NOW),
                "round {round}"
            );
            assert!(cached.is_ok());
            assert_eq!(cache.len(), 1);
        }
        let cases: [(&str, &[u8], UnixTime); 5] = [
            (&header, b"another body", NOW),
            (&header, body, NOW.plus_seconds(366 * DAY)),
            (&header, body, NOW.plus_seconds(-2 * 3600)),
            (&stranger_header, body, NOW),
            ("bm90IGNtcw==", body, NOW),
        ];
        for (h, b, at) in cases {
            let uncached = verify_mdm_signature(h, b, &ca, at);
            assert!(uncached.is_err());
            assert_eq!(cache.verify_mdm_signature(h, b, &ca, at), uncached);
        }
        assert_eq!(cache.len(), 1, "refused signers are not kept");
        // Handed another CA, the cache is not consulted: the device's certificate is not trusted there.
        assert_eq!(
            cache.verify_mdm_signature(&header, body, &other_ca, NOW),
            verify_mdm_signature(&header, body, &other_ca, NOW)
        );
        assert!(cache
            .verify_mdm_signature(&header, body, &other_ca, NOW)
            .is_err());
    }

    #[test]
    fn the_signer_cache_is_bounded() {
        let (ca, _) = setup();
        let cache = SignerCache::new(&ca, 4);
        let body: &[u8] = b"body";
        for _ in 0..5 {
            let device = issue_device(&ca, NOW, 365);
            let header = sign_mdm_body(body, &device).unwrap();
            assert!(cache.verify_mdm_signature(&header, body, &ca, NOW).is_ok());
            assert!(cache.len() <= 4);
        }
    }

    #[test]
    fn garbage_headers_fail_without_panicking() {
        let (ca, device) = setup();
        let body = b"body";
        let valid = sign_mdm_body(body, &device).unwrap();
        let valid_der = BASE64.decode(&valid).unwrap();
        let mut inputs: Vec<String> = vec![
            String::new(),
            "   ".into(),
            "not base64 at all!".into(),
            BASE64.encode(b"hello"),
            BASE64.encode([0x30, 0x80, 0x00, 0x00]),
            "A".repeat(MAX_MDM_SIGNATURE_HEADER_BYTES + 4),
            // A certs-only message: signed data without a signer.
            BASE64.encode(crate::scep::certs_only_der(&[ca.identity().x509()]).unwrap()),
        ];
        for cut in [1, 10, 100, valid_der.len() / 2, valid_der.len() - 1] {
            inputs.push(BASE64.encode(&valid_der[..cut]));
        }
        // Every single-byte change: never a panic, and never a different signer. A few bytes lie outside what
        // the signature covers (SignedData and SignerInfo versions, the eContentType and signature algorithm
        // OIDs, which OpenSSL does not cross-check) and may be changed without consequence.
        for position in 0..valid_der.len() {
            let mut flipped = valid_der.clone();
            flipped[position] ^= 0x5a;
            if let Ok(signer) = verify_mdm_signature(&BASE64.encode(&flipped), body, &ca, NOW) {
                assert_eq!(
                    signer.cert_der,
                    device.cert_der(),
                    "byte {position} changed the signer"
                );
            }
        }
        for input in &inputs {
            assert!(
                verify_mdm_signature(input, body, &ca, NOW).is_err(),
                "accepted {input:.40}"
            );
        }
        assert!(matches!(
            verify_mdm_signature("not base64 at all!", body, &ca, NOW).unwrap_err(),
            PkiError::Malformed(_)
        ));
        // The thread's OpenSSL error queue is left clean, so the next good message still verifies.
        assert!(verify_mdm_signature(&valid, body, &ca, NOW).is_ok());
    }

    #[test]
    fn profile_round_trip() {
        let ca = CertificateAuthority::generate("Orchard Test CA", NOW, 3650).unwrap();
        let signing = ca
            .issue_signing_identity("Orchard Profile Signing", NOW, 365)
            .unwrap();
        let profile = b"<?xml version=\"1.0\"?><plist version=\"1.0\"><dict/></plist>";
        let signed = sign_profile(profile, &signing, &[ca.identity()]).unwrap();
        assert_eq!(
            verify_signed_profile(&signed, &ca.cert_der()).unwrap(),
            profile
        );
        assert_eq!(
            verify_signed_profile_at(&signed, &ca.cert_der(), NOW).unwrap(),
            profile
        );
        let err = verify_signed_profile_at(&signed, &ca.cert_der(), NOW.plus_seconds(400 * DAY))
            .unwrap_err();
        assert!(matches!(err, PkiError::UntrustedSigner(_)), "{err:?}");
        let other = CertificateAuthority::generate("Other CA", NOW, 3650).unwrap();
        let err = verify_signed_profile(&signed, &other.cert_der()).unwrap_err();
        assert!(matches!(err, PkiError::UntrustedSigner(_)), "{err:?}");
        // Also when the signing certificate comes from a TLS server identity (a common real-world choice).
        let tls = ca
            .issue_tls_server(&["mdm.example.edu".into()], &[], NOW, 365)
            .unwrap();
        let signed = sign_profile(profile, &tls, &[]).unwrap();
        assert_eq!(
            verify_signed_profile(&signed, &ca.cert_der()).unwrap(),
            profile
        );
        assert!(verify_signed_profile(b"junk", &ca.cert_der()).is_err());
        let mut tampered = sign_profile(profile, &signing, &[]).unwrap();
        let at = tampered.windows(5).position(|w| w == b"plist").unwrap();
        tampered[at] = b'P';
        assert!(matches!(
            verify_signed_profile(&tampered, &ca.cert_der()).unwrap_err(),
            PkiError::BadSignature(_)
        ));
    }

    /// Both paths on one message: the fast path must be at most as permissive as OpenSSL, and agree on the signer.
    fn both_paths(
        der: &[u8],
        body: &[u8],
        ca: &CertificateAuthority,
        now: UnixTime,
    ) -> (fast::Outcome, Result<VerifiedSigner, PkiError>) {
        (
            fast::verify(der, body, ca, now),
            verify_with_openssl(der, body, ca, now),
        )
    }

    #[test]
    fn fast_path_handles_what_devices_send_and_agrees_with_openssl() {
        let (ca, device) = setup();
        let body =
            b"<plist><dict><key>MessageType</key><string>TokenUpdate</string></dict></plist>";
        let der = BASE64
            .decode(sign_mdm_body(body, &device).unwrap())
            .unwrap();
        let (fast_outcome, openssl_result) = both_paths(&der, body, &ca, NOW);
        match fast_outcome {
            fast::Outcome::Verified(signer) => assert_eq!(Ok(signer), openssl_result),
            _ => panic!("the fast path did not verify a standard message"),
        }
        // Definite rejections agree with OpenSSL.
        for (case_body, case_ca, case_now) in [
            (&b"other body"[..], &ca, NOW),
            (
                &body[..],
                &CertificateAuthority::generate("Orchard Test CA", NOW, 10).unwrap(),
                NOW,
            ),
            (&body[..], &ca, NOW.plus_seconds(400 * DAY)),
        ] {
            let (fast_outcome, openssl_result) = both_paths(&der, case_body, case_ca, case_now);
            match fast_outcome {
                fast::Outcome::Rejected(error) => assert_eq!(
                    std::mem::discriminant(&error),
                    std::mem::discriminant(&openssl_result.unwrap_err())
                ),
                _ => panic!("expected a definite rejection"),
            }
        }
        // Every single-byte change: the fast path never accepts what OpenSSL rejects, never names another
        // signer, and never rejects what OpenSSL accepts.
        for position in 0..der.len() {
            for mask in [0x01, 0x80, 0xff, 0x02, 0x40] {
                let mut changed = der.clone();
                changed[position] ^= mask;
                let (fast_outcome, openssl_result) = both_paths(&changed, body, &ca, NOW);
                match fast_outcome {
                    fast::Outcome::Verified(signer) => {
                        assert_eq!(
                            openssl_result.as_ref().ok(),
                            Some(&signer),
                            "byte {position}"
                        );
                        assert_eq!(signer.cert_der, device.cert_der());
                    }
                    fast::Outcome::Rejected(_) => {
                        assert!(
                            openssl_result.is_err(),
                            "byte {position}: openssl accepted what the fast path rejected"
                        )
                    }
                    fast::Outcome::NotHandled => {}
                }
            }
        }
    }

    /// A common name OpenSSL and x509-parser read differently (another string type, non-ASCII, NUL) is left to
    /// OpenSSL, so the signer's facts never depend on the path (found by the certificate differential target).
    #[test]
    fn unusual_common_names_are_left_to_openssl() {
        use openssl::asn1::Asn1Type;

        let ca = CertificateAuthority::generate("Orchard Test CA", NOW, 3650).unwrap();
        let body = b"body";
        for (value, kind, fast_decides) in [
            ("device", Asn1Type::UTF8STRING, true),
            ("device", Asn1Type::PRINTABLESTRING, true),
            ("device", Asn1Type::T61STRING, false),
            ("device", Asn1Type::BMPSTRING, false),
            ("gerät", Asn1Type::UTF8STRING, false),
            ("dev\0ice", Asn1Type::UTF8STRING, false),
        ] {
            let key = crate::generate_rsa_key().unwrap();
            let mut name = openssl::x509::X509Name::builder().unwrap();
            name.append_entry_by_nid_with_type(Nid::COMMONNAME, value, kind)
                .unwrap();
            let name = name.build();
            let builder = ca.leaf_builder(&name, &key, NOW, 30).unwrap();
            let device = Identity::from_parts(ca.sign_leaf(builder).unwrap(), key).unwrap();
            let der = BASE64
                .decode(sign_mdm_body(body, &device).unwrap())
                .unwrap();
            let (fast_outcome, openssl_result) = both_paths(&der, body, &ca, NOW);
            let openssl_signer = openssl_result.unwrap();
            match fast_outcome {
                fast::Outcome::Verified(signer) => {
                    assert!(fast_decides, "{value:?} as {kind:?}");
                    assert_eq!(signer, openssl_signer);
                    assert_eq!(signer.subject_common_name.as_deref(), Some(value));
                }
                fast::Outcome::NotHandled => assert!(!fast_decides, "{value:?} as {kind:?}"),
                fast::Outcome::Rejected(error) => panic!("{value:?} as {kind:?}: {error}"),
            }
        }
    }

    /// BER with indefinite lengths (as some CMS encoders stream) is left to OpenSSL, which still verifies it.
    #[test]
    fn ber_messages_fall_back_to_openssl() {
        let (ca, device) = setup();
        let body = b"body";
        let der = BASE64
            .decode(sign_mdm_body(body, &device).unwrap())
            .unwrap();
        // Re-encode the outer ContentInfo SEQUENCE with an indefinite length.
        assert_eq!(&der[..2], &[0x30, 0x82]);
        let contents_len = usize::from(der[2]) << 8 | usize::from(der[3]);
        let mut ber = vec![0x30, 0x80];
        ber.extend_from_slice(&der[4..4 + contents_len]);
        ber.extend_from_slice(&[0x00, 0x00]);
        assert!(matches!(
            fast::verify(&ber, body, &ca, NOW),
            fast::Outcome::NotHandled
        ));
        let header = BASE64.encode(&ber);
        let signer = verify_mdm_signature(&header, body, &ca, NOW).unwrap();
        assert_eq!(signer.cert_der, device.cert_der());
        assert!(verify_mdm_signature(&header, b"other", &ca, NOW).is_err());
    }
}
