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
    let header = header_b64.trim();
    if header.is_empty() {
        return Err(PkiError::Malformed("mdm-signature header is empty".into()));
    }
    if header.len() > MAX_MDM_SIGNATURE_HEADER_BYTES {
        return Err(PkiError::Malformed(
            "mdm-signature header is too large".into(),
        ));
    }
    let der = BASE64
        .decode(header)
        .map_err(|e| PkiError::Malformed(format!("mdm-signature is not base64: {e}")))?;
    let pkcs7 = parse_signed_data(&der, "mdm-signature")?;
    let signer = verify_detached(&pkcs7, body, ca)?;
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
    pkcs7: &Pkcs7,
    body: &[u8],
    ca: &CertificateAuthority,
) -> Result<X509, PkiError> {
    let no_extra_certs = Stack::<X509>::new()?;
    pkcs7
        .verify(
            &no_extra_certs,
            ca.empty_store(),
            Some(body),
            None,
            Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY,
        )
        .map_err(|e| PkiError::BadSignature(describe(&e)))?;
    single_signer(pkcs7)
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
}
