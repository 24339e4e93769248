//! The request for an MDM push certificate: a fresh RSA-2048 key with its PKCS#10 CSR, and the vendor-signed
//! push certificate request that the Apple Push Certificates Portal (identity.apple.com) accepts.
//!
//! The vendor-signed request is what Apple's "MDM Vendor CSR Signing" process and tools such as micromdm's
//! `mdmctl mdmcert vendor -sign` produce: an XML plist with three strings — `PushCertRequestCSR` (base64 of the
//! CSR DER), `PushCertCertificateChain` (PEM: the MDM vendor certificate, then Apple's WWDR intermediate, then
//! the Apple Root CA) and `PushCertSignature` (base64 of an RSA PKCS#1 v1.5 SHA-256 signature over the CSR DER
//! by the vendor key) — and the whole plist base64-encoded. Sans-IO: bytes in, bytes out.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, PKeyRef, Private};
use openssl::sign::Signer;
use openssl::x509::{X509Name, X509Req, X509};
use orchard_types::{Secret, UnixTime};
use sha2::{Digest, Sha256};

use crate::{cert_validity, generate_rsa_key, PkiError};

/// The plist key holding base64 of the push CSR's DER.
pub const KEY_CSR: &str = "PushCertRequestCSR";
/// The plist key holding the PEM chain: vendor certificate, WWDR intermediate, Apple Root CA.
pub const KEY_CHAIN: &str = "PushCertCertificateChain";
/// The plist key holding base64 of the vendor's signature over the CSR DER.
pub const KEY_SIGNATURE: &str = "PushCertSignature";

/// Who the push CSR names. Apple replaces the subject in the certificate it issues (UID = topic), so this
/// only helps a person recognise the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushCsrSubject {
    pub common_name: String,
    pub organization: Option<String>,
    /// Two-letter country code.
    pub country: Option<String>,
    pub email: Option<String>,
}

/// A freshly generated push key and its CSR. The key never leaves the caller unsealed.
pub struct GeneratedPushCsr {
    /// PKCS#8 PEM of the new private key.
    pub key_pem: Secret<Vec<u8>>,
    pub csr_der: Vec<u8>,
    pub csr_pem: Vec<u8>,
    /// Lowercase hex SHA-256 of the key's SubjectPublicKeyInfo DER: how the certificate Apple returns is
    /// matched to this key later (see [`cert_public_key_sha256_hex`]).
    pub public_key_sha256: String,
}

impl std::fmt::Debug for GeneratedPushCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedPushCsr")
            .field("public_key_sha256", &self.public_key_sha256)
            .field("key_pem", &self.key_pem)
            .finish()
    }
}

/// The three parts of a vendor-signed push certificate request, as decoded from the portal upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushCertificateRequest {
    pub csr_der: Vec<u8>,
    pub certificate_chain_pem: String,
    pub signature: Vec<u8>,
}

/// Generates an RSA-2048 key and a PKCS#10 CSR signed with it (SHA-256).
pub fn generate_push_csr(subject: &PushCsrSubject) -> Result<GeneratedPushCsr, PkiError> {
    let key = generate_rsa_key()?;
    let name = subject_name(subject)?;
    let mut builder = X509Req::builder()?;
    builder.set_version(0)?;
    builder.set_subject_name(&name)?;
    builder.set_pubkey(&key)?;
    builder.sign(&key, MessageDigest::sha256())?;
    let csr = builder.build();
    Ok(GeneratedPushCsr {
        key_pem: Secret::new(key.private_key_to_pem_pkcs8()?),
        csr_der: csr.to_der()?,
        csr_pem: csr.to_pem()?,
        public_key_sha256: public_key_sha256_hex(&key)?,
    })
}

fn subject_name(subject: &PushCsrSubject) -> Result<X509Name, PkiError> {
    let invalid = |what: &str| PkiError::Malformed(format!("push csr subject: invalid {what}"));
    let mut name = X509Name::builder()?;
    if let Some(country) = subject.country.as_deref().filter(|c| !c.is_empty()) {
        if country.len() != 2 || !country.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(invalid("country (two letters)"));
        }
        name.append_entry_by_nid(Nid::COUNTRYNAME, &country.to_ascii_uppercase())
            .map_err(|_| invalid("country"))?;
    }
    if let Some(org) = subject.organization.as_deref().filter(|o| !o.is_empty()) {
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, org)
            .map_err(|_| invalid("organization"))?;
    }
    if subject.common_name.is_empty() {
        return Err(invalid("common name (empty)"));
    }
    name.append_entry_by_nid(Nid::COMMONNAME, &subject.common_name)
        .map_err(|_| invalid("common name"))?;
    if let Some(email) = subject.email.as_deref().filter(|e| !e.is_empty()) {
        name.append_entry_by_nid(Nid::PKCS9_EMAILADDRESS, email)
            .map_err(|_| invalid("email"))?;
    }
    Ok(name.build())
}

/// Lowercase hex SHA-256 of a key's SubjectPublicKeyInfo DER.
pub fn public_key_sha256_hex<T: openssl::pkey::HasPublic>(
    key: &PKeyRef<T>,
) -> Result<String, PkiError> {
    Ok(hex::encode(Sha256::digest(key.public_key_to_der()?)))
}

/// The SubjectPublicKeyInfo hash of the first certificate in a PEM (or a DER certificate): the same value as
/// [`GeneratedPushCsr::public_key_sha256`] when the certificate was issued for that CSR.
pub fn cert_public_key_sha256_hex(cert: &[u8]) -> Result<String, PkiError> {
    let cert = parse_certificate(cert)?;
    let key = cert.public_key()?;
    public_key_sha256_hex(&key)
}

/// A certificate as PEM: a PEM input is returned as given (with any certificates that follow it), a DER
/// certificate (Apple's portal also hands out `.cer`) is converted.
pub fn certificate_to_pem(cert: &[u8]) -> Result<Vec<u8>, PkiError> {
    let parsed = parse_certificate(cert)?;
    if looks_like_pem(cert) {
        Ok(cert.to_vec())
    } else {
        Ok(parsed.to_pem()?)
    }
}

/// A PEM (first certificate of a bundle) or DER certificate.
fn parse_certificate(bytes: &[u8]) -> Result<X509, PkiError> {
    let parsed = if looks_like_pem(bytes) {
        X509::stack_from_pem(bytes)
            .ok()
            .and_then(|stack| stack.into_iter().next())
    } else {
        X509::from_der(bytes).ok()
    };
    parsed.ok_or_else(|| {
        drop(openssl::error::ErrorStack::get());
        PkiError::Malformed("not a pem or der certificate".into())
    })
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Signs the push CSR with the MDM vendor identity and packs the request the portal expects: the returned
/// string is base64 of the XML plist, ready to upload.
///
/// `vendor_chain_pem` is a PEM bundle holding the vendor certificate (the one matching `vendor_key_pem`) and
/// the certificates above it as the operator supplies them (Apple's WWDR intermediate and the Apple Root CA);
/// the vendor certificate is put first, the others follow in the order given. `vendor_key_pem` must be
/// unencrypted PEM (PKCS#8 or traditional). An expired or not yet valid vendor certificate is refused at
/// `now`, since the portal would refuse it.
pub fn vendor_sign_push_csr(
    csr_der: &[u8],
    vendor_chain_pem: &[u8],
    vendor_key_pem: &[u8],
    now: UnixTime,
) -> Result<String, PkiError> {
    let request = build_vendor_request(csr_der, vendor_chain_pem, vendor_key_pem, now)?;
    encode_push_certificate_request(&request)
}

/// The parts of the vendor-signed request, before encoding (see [`vendor_sign_push_csr`]).
pub fn build_vendor_request(
    csr_der: &[u8],
    vendor_chain_pem: &[u8],
    vendor_key_pem: &[u8],
    now: UnixTime,
) -> Result<PushCertificateRequest, PkiError> {
    // The CSR must be one, with a valid self-signature: the portal checks it and a bad one wastes a round trip.
    let csr = X509Req::from_der(csr_der)
        .map_err(|e| PkiError::Malformed(format!("push csr der: {e}")))?;
    let csr_key = csr.public_key()?;
    if !csr.verify(&csr_key)? {
        return Err(PkiError::BadSignature(
            "the push csr is not signed by its own key".into(),
        ));
    }
    let vendor_key = load_unencrypted_key(vendor_key_pem)?;
    let chain = X509::stack_from_pem(vendor_chain_pem)
        .map_err(|e| PkiError::Malformed(format!("vendor certificate chain pem: {e}")))?;
    let vendor_position = chain
        .iter()
        .position(|c| c.public_key().is_ok_and(|k| k.public_eq(&vendor_key)))
        .ok_or_else(|| {
            PkiError::Malformed(
                "no certificate in the vendor chain matches the vendor private key".into(),
            )
        })?;
    let mut ordered = Vec::with_capacity(chain.len());
    let mut rest = Vec::with_capacity(chain.len());
    for (i, cert) in chain.into_iter().enumerate() {
        if i == vendor_position {
            ordered.push(cert);
        } else {
            rest.push(cert);
        }
    }
    ordered.extend(rest);
    if let Some(vendor_cert) = ordered.first() {
        let (not_before, not_after) = cert_validity(&vendor_cert.to_der()?)?;
        if now > not_after {
            return Err(PkiError::Expired);
        }
        if now < not_before {
            return Err(PkiError::NotYetValid);
        }
    }
    let mut certificate_chain_pem = String::new();
    for cert in &ordered {
        certificate_chain_pem.push_str(&String::from_utf8_lossy(&cert.to_pem()?));
    }
    let mut signer = Signer::new(MessageDigest::sha256(), &vendor_key)?;
    signer.update(csr_der)?;
    let signature = signer.sign_to_vec()?;
    Ok(PushCertificateRequest {
        csr_der: csr_der.to_vec(),
        certificate_chain_pem,
        signature,
    })
}

/// Loads a PEM private key without ever prompting for a passphrase (OpenSSL's default callback would read
/// the terminal): an encrypted key is an error.
fn load_unencrypted_key(pem: &[u8]) -> Result<PKey<Private>, PkiError> {
    PKey::private_key_from_pem_callback(pem, |_buf| Ok(0)).map_err(|_| {
        PkiError::Malformed(
            "vendor private key: not an unencrypted pem private key (decrypt it first)".into(),
        )
    })
}

/// Base64 of the XML plist `{PushCertRequestCSR, PushCertCertificateChain, PushCertSignature}`.
pub fn encode_push_certificate_request(
    request: &PushCertificateRequest,
) -> Result<String, PkiError> {
    let mut dict = plist::Dictionary::new();
    dict.insert(KEY_CSR.into(), STANDARD.encode(&request.csr_der).into());
    dict.insert(
        KEY_CHAIN.into(),
        request.certificate_chain_pem.clone().into(),
    );
    dict.insert(
        KEY_SIGNATURE.into(),
        STANDARD.encode(&request.signature).into(),
    );
    let mut xml = Vec::new();
    plist::Value::Dictionary(dict)
        .to_writer_xml(&mut xml)
        .map_err(|e| PkiError::Crypto(format!("writing the request plist: {e}")))?;
    Ok(STANDARD.encode(xml))
}

/// Reads a request back (base64 of the XML plist; surrounding whitespace and line breaks are ignored).
pub fn decode_push_certificate_request(encoded: &str) -> Result<PushCertificateRequest, PkiError> {
    let compact: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
    let xml = STANDARD
        .decode(compact)
        .map_err(|_| PkiError::Malformed("push certificate request is not base64".into()))?;
    let value = plist::Value::from_reader_xml(xml.as_slice())
        .map_err(|e| PkiError::Malformed(format!("push certificate request plist: {e}")))?;
    let dict = value.as_dictionary().ok_or_else(|| {
        PkiError::Malformed("push certificate request is not a dictionary".into())
    })?;
    let string = |key: &str| {
        dict.get(key)
            .and_then(plist::Value::as_string)
            .ok_or_else(|| PkiError::Malformed(format!("push certificate request lacks {key}")))
    };
    let base64_field = |key: &str| {
        string(key).and_then(|s| {
            STANDARD
                .decode(s.trim())
                .map_err(|_| PkiError::Malformed(format!("{key} is not base64")))
        })
    };
    Ok(PushCertificateRequest {
        csr_der: base64_field(KEY_CSR)?,
        certificate_chain_pem: string(KEY_CHAIN)?.to_string(),
        signature: base64_field(KEY_SIGNATURE)?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use openssl::sign::Verifier;
    use x509_parser::prelude::FromDer;

    use super::*;
    use crate::{CertificateAuthority, Identity};

    const NOW: UnixTime = UnixTime(1_800_000_000);

    fn subject() -> PushCsrSubject {
        PushCsrSubject {
            common_name: "Orchard MDM Push".into(),
            organization: Some("Orchard University".into()),
            country: Some("ch".into()),
            email: Some("mdm@example.edu".into()),
        }
    }

    fn entry(name: &openssl::x509::X509NameRef, nid: Nid) -> String {
        name.entries_by_nid(nid)
            .next()
            .unwrap()
            .data()
            .to_string()
            .unwrap()
    }

    /// A stand-in for Apple's WWDR chain and a vendor identity issued under it.
    fn vendor() -> (CertificateAuthority, Identity) {
        let wwdr = CertificateAuthority::generate("Test WWDR", NOW, 3650).unwrap();
        let vendor = wwdr
            .issue_signing_identity("MDM Vendor: Orchard", NOW, 365)
            .unwrap();
        (wwdr, vendor)
    }

    #[test]
    fn csr_verifies_with_its_key_and_names_the_subject() {
        let generated = generate_push_csr(&subject()).unwrap();
        let csr = X509Req::from_der(&generated.csr_der).unwrap();
        assert_eq!(
            X509Req::from_pem(&generated.csr_pem)
                .unwrap()
                .to_der()
                .unwrap(),
            generated.csr_der
        );
        let key = PKey::private_key_from_pem(generated.key_pem.expose()).unwrap();
        assert_eq!(key.bits(), 2048);
        assert!(key.rsa().is_ok());
        assert!(csr.verify(&key).unwrap());
        assert!(csr.public_key().unwrap().public_eq(&key));
        // sha256WithRSAEncryption
        let (_, parsed) = x509_parser::certification_request::X509CertificationRequest::from_der(
            &generated.csr_der,
        )
        .unwrap();
        assert_eq!(
            parsed.signature_algorithm.algorithm.to_id_string(),
            "1.2.840.113549.1.1.11"
        );
        let name = csr.subject_name();
        assert_eq!(entry(name, Nid::COMMONNAME), "Orchard MDM Push");
        assert_eq!(entry(name, Nid::ORGANIZATIONNAME), "Orchard University");
        assert_eq!(entry(name, Nid::COUNTRYNAME), "CH");
        assert_eq!(entry(name, Nid::PKCS9_EMAILADDRESS), "mdm@example.edu");
        assert_eq!(
            generated.public_key_sha256,
            public_key_sha256_hex(&key).unwrap()
        );
        assert!(!format!("{generated:?}").contains("PRIVATE"));
    }

    #[test]
    fn every_csr_has_its_own_key() {
        let a = generate_push_csr(&subject()).unwrap();
        let b = generate_push_csr(&subject()).unwrap();
        assert_ne!(a.public_key_sha256, b.public_key_sha256);
    }

    #[test]
    fn bad_subjects_are_refused() {
        let mut s = subject();
        s.country = Some("CHE".into());
        assert!(matches!(generate_push_csr(&s), Err(PkiError::Malformed(_))));
        let mut s = subject();
        s.common_name.clear();
        assert!(matches!(generate_push_csr(&s), Err(PkiError::Malformed(_))));
    }

    #[test]
    fn certificate_for_the_csr_key_has_the_same_public_key_hash() {
        let generated = generate_push_csr(&subject()).unwrap();
        let key = PKey::private_key_from_pem(generated.key_pem.expose()).unwrap();
        let cert = crate::self_signed_cert(&key, "push", NOW, 365).unwrap();
        assert_eq!(
            cert_public_key_sha256_hex(&cert.to_pem().unwrap()).unwrap(),
            generated.public_key_sha256
        );
        assert_eq!(
            cert_public_key_sha256_hex(&cert.to_der().unwrap()).unwrap(),
            generated.public_key_sha256
        );
        let other = Identity::generate_self_signed_rsa("other", NOW, 1).unwrap();
        assert_ne!(
            cert_public_key_sha256_hex(&other.cert_der()).unwrap(),
            generated.public_key_sha256
        );
        assert!(cert_public_key_sha256_hex(b"garbage").is_err());
        let pem = cert.to_pem().unwrap();
        assert_eq!(certificate_to_pem(&pem).unwrap(), pem);
        assert_eq!(certificate_to_pem(&cert.to_der().unwrap()).unwrap(), pem);
        assert!(certificate_to_pem(b"-----BEGIN CERTIFICATE-----\nnope").is_err());
    }

    #[test]
    fn vendor_signature_verifies_and_the_plist_decodes_back() {
        let generated = generate_push_csr(&subject()).unwrap();
        let (wwdr, vendor) = vendor();
        let root = CertificateAuthority::generate("Test Apple Root", NOW, 3650).unwrap();
        // The operator's bundle in any order: intermediate, vendor, root.
        let mut bundle = wwdr.cert_pem();
        bundle.extend(vendor.cert_pem());
        bundle.extend(root.cert_pem());
        let encoded =
            vendor_sign_push_csr(&generated.csr_der, &bundle, vendor.key_pem().expose(), NOW)
                .unwrap();

        // Base64 of an XML plist with exactly the three string keys.
        let xml = STANDARD.decode(&encoded).unwrap();
        assert!(xml.starts_with(b"<?xml"));
        let value = plist::Value::from_reader_xml(xml.as_slice()).unwrap();
        let dict = value.as_dictionary().unwrap();
        let mut keys: Vec<&str> = dict.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, [KEY_CHAIN, KEY_CSR, KEY_SIGNATURE]);
        assert!(dict.values().all(|v| v.as_string().is_some()));

        let request = decode_push_certificate_request(&encoded).unwrap();
        assert_eq!(request.csr_der, generated.csr_der);
        // The vendor certificate first, then the others in the order given.
        let chain = X509::stack_from_pem(request.certificate_chain_pem.as_bytes()).unwrap();
        let ders: Vec<Vec<u8>> = chain.iter().map(|c| c.to_der().unwrap()).collect();
        assert_eq!(ders, [vendor.cert_der(), wwdr.cert_der(), root.cert_der()]);
        // The signature is SHA-256 with RSA over the CSR DER, by the vendor certificate's key.
        let vendor_public = chain[0].public_key().unwrap();
        let mut verifier = Verifier::new(MessageDigest::sha256(), &vendor_public).unwrap();
        verifier.update(&request.csr_der).unwrap();
        assert!(verifier.verify(&request.signature).unwrap());
        let mut tampered = request.csr_der.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let mut verifier = Verifier::new(MessageDigest::sha256(), &vendor_public).unwrap();
        verifier.update(&tampered).unwrap();
        assert!(!verifier.verify(&request.signature).unwrap());

        // Encoding the decoded parts again gives the same upload.
        assert_eq!(encode_push_certificate_request(&request).unwrap(), encoded);
    }

    #[test]
    fn vendor_signing_refuses_what_the_portal_would() {
        let generated = generate_push_csr(&subject()).unwrap();
        let (wwdr, vendor) = vendor();
        let chain = vendor.cert_pem();
        // A key that matches no certificate in the chain.
        let stranger = Identity::generate_self_signed_rsa("stranger", NOW, 1).unwrap();
        let err = vendor_sign_push_csr(
            &generated.csr_der,
            &wwdr.cert_pem(),
            stranger.key_pem().expose(),
            NOW,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("matches the vendor private key"),
            "{err}"
        );
        // An expired vendor certificate.
        assert_eq!(
            vendor_sign_push_csr(
                &generated.csr_der,
                &chain,
                vendor.key_pem().expose(),
                UnixTime(NOW.0 + 400 * 86_400)
            ),
            Err(PkiError::Expired)
        );
        // An encrypted vendor key is an error, never a prompt.
        let encrypted = vendor
            .private_key()
            .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"pw")
            .unwrap();
        assert!(matches!(
            vendor_sign_push_csr(&generated.csr_der, &chain, &encrypted, NOW),
            Err(PkiError::Malformed(_))
        ));
        // Not a CSR, or a CSR whose self-signature is broken.
        assert!(vendor_sign_push_csr(b"nope", &chain, vendor.key_pem().expose(), NOW).is_err());
        let mut broken = generated.csr_der.clone();
        let last = broken.len() - 1;
        broken[last] ^= 1;
        assert!(vendor_sign_push_csr(&broken, &chain, vendor.key_pem().expose(), NOW).is_err());
        assert!(
            vendor_sign_push_csr(&generated.csr_der, b"", vendor.key_pem().expose(), NOW).is_err()
        );
    }

    #[test]
    fn decoding_rejects_what_is_not_a_request() {
        assert!(decode_push_certificate_request("not base64!").is_err());
        assert!(decode_push_certificate_request(&STANDARD.encode(b"<plist>")).is_err());
        let mut dict = plist::Dictionary::new();
        dict.insert(KEY_CSR.into(), "AAAA".into());
        let mut xml = Vec::new();
        plist::Value::Dictionary(dict)
            .to_writer_xml(&mut xml)
            .unwrap();
        let err = decode_push_certificate_request(&STANDARD.encode(xml)).unwrap_err();
        assert!(err.to_string().contains(KEY_CHAIN), "{err}");
    }
}
