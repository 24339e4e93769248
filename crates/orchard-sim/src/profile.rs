//! Reading configuration profiles the way iOS does: open the CMS envelope, check the signature against a
//! trusted root, read the top-level keys and the payload list. Sans-IO.

use openssl::nid::Nid;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use orchard_protocol::profile::EnrollmentProfile;

use crate::state::{InstalledProfile, PayloadSummary};
use crate::SimError;

/// Payload types whose `PayloadContent` is a certificate the device then lists in CertificateList.
const CERTIFICATE_PAYLOAD_TYPES: [&str; 3] = [
    "com.apple.security.root",
    "com.apple.security.pkcs1",
    "com.apple.security.pem",
];

/// An enrollment profile whose signature checked out.
pub(crate) struct OpenedEnrollmentProfile {
    pub profile: EnrollmentProfile,
    pub summary: InstalledProfile,
    /// The root the signature chained to (pinned for TLS from now on).
    pub trusted_root_der: Vec<u8>,
}

/// Opens a signed enrollment profile.
///
/// With anchors (configured CA certificates, DER), the signature must chain to one of them. Without anchors
/// (trust on first use), the content is read first to find its `com.apple.security.root`, and the signature
/// must then chain to that root: an attacker in the middle can still swap the whole profile, which is what
/// trust on first use means, but a profile whose signer does not belong to its own root is refused.
pub(crate) fn open_enrollment_profile(
    bytes: &[u8],
    anchors: &[Vec<u8>],
) -> Result<OpenedEnrollmentProfile, SimError> {
    if looks_like_plist(bytes) {
        return Err(SimError::Profile("enrollment profile is not signed".into()));
    }
    let (unverified_content, signers) = cms_content_unverified(bytes)
        .map_err(|e| SimError::Profile(format!("not a cms signed profile: {e}")))?;
    let unverified = EnrollmentProfile::parse(&unverified_content)?;

    let mut candidates: Vec<Vec<u8>> = anchors.to_vec();
    if anchors.is_empty() {
        match &unverified.root_ca_der {
            Some(root) => candidates.push(root.clone()),
            None => {
                return Err(SimError::Profile(
                    "no trust anchor configured and the profile carries no root certificate".into(),
                ))
            }
        }
    }
    let mut last_error = None;
    for root in &candidates {
        match orchard_pki::signature::verify_signed_profile(bytes, root) {
            Ok(content) => {
                let profile = EnrollmentProfile::parse(&content)?;
                let summary =
                    summarize_profile(&content, false, signers).map_err(SimError::Profile)?;
                return Ok(OpenedEnrollmentProfile {
                    profile,
                    summary,
                    trusted_root_der: root.clone(),
                });
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(match last_error {
        Some(e) => SimError::Profile(format!("signature does not verify: {e}")),
        None => SimError::Profile("no trust anchor to verify the profile with".into()),
    })
}

/// The content of a CMS SignedData and the DER of its embedded certificates, checking the signature
/// itself but not who signed (iOS installs MDM-pushed signed profiles from any signer; it only shows them
/// as unverified).
pub(crate) fn cms_content_unverified(der: &[u8]) -> Result<(Vec<u8>, Vec<Vec<u8>>), SimError> {
    let pkcs7 = Pkcs7::from_der(der)?;
    let no_certs = Stack::<X509>::new()?;
    let empty_store = X509StoreBuilder::new()?.build();
    let mut content = Vec::new();
    pkcs7.verify(
        &no_certs,
        &empty_store,
        None,
        Some(&mut content),
        Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY,
    )?;
    let mut signer_certs = Vec::new();
    if let Some(certs) = pkcs7.signed().and_then(|s| s.certificates()) {
        for cert in certs {
            signer_certs.push(cert.to_der()?);
        }
    }
    Ok((content, signer_certs))
}

/// A plist (XML or binary) rather than a CMS envelope.
pub(crate) fn looks_like_plist(bytes: &[u8]) -> bool {
    let trimmed = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .and_then(|start| bytes.get(start..))
        .unwrap_or_default();
    trimmed.starts_with(b"<?xml")
        || trimmed.starts_with(b"<plist")
        || trimmed.starts_with(b"bplist")
}

/// Reads what a device keeps about an installed profile from its plist content. Errors are the
/// human-readable reason iOS would put into the ErrorChain.
pub(crate) fn summarize_profile(
    content: &[u8],
    managed: bool,
    signer_certificates: Vec<Vec<u8>>,
) -> Result<InstalledProfile, String> {
    let dict = orchard_protocol::parse_dictionary(content)
        .map_err(|e| format!("the profile could not be read: {e}"))?;
    let string = |d: &plist::Dictionary, key: &str| {
        d.get(key).and_then(|v| v.as_string()).map(str::to_owned)
    };
    let integer = |d: &plist::Dictionary, key: &str| {
        d.get(key).and_then(|v| v.as_signed_integer()).unwrap_or(1)
    };
    match string(&dict, "PayloadType").as_deref() {
        Some("Configuration") => {}
        Some(other) => return Err(format!("the profile has payload type {other:?}")),
        None => return Err("the profile is missing the PayloadType field".into()),
    }
    let identifier = string(&dict, "PayloadIdentifier")
        .filter(|s| !s.is_empty())
        .ok_or("the profile is missing the PayloadIdentifier field")?;
    let uuid = string(&dict, "PayloadUUID")
        .filter(|s| !s.is_empty())
        .ok_or("the profile is missing the PayloadUUID field")?;
    let mut payloads = Vec::new();
    if let Some(content) = dict.get("PayloadContent") {
        let items = content
            .as_array()
            .ok_or("the PayloadContent field is not an array")?;
        for item in items {
            let item = item
                .as_dictionary()
                .ok_or("a payload is not a dictionary")?;
            let payload_type =
                string(item, "PayloadType").ok_or("a payload is missing the PayloadType field")?;
            let certificate_der = if CERTIFICATE_PAYLOAD_TYPES.contains(&payload_type.as_str()) {
                item.get("PayloadContent")
                    .and_then(|v| v.as_data())
                    .map(certificate_to_der)
            } else {
                None
            };
            payloads.push(PayloadSummary {
                payload_type,
                identifier: string(item, "PayloadIdentifier")
                    .ok_or("a payload is missing the PayloadIdentifier field")?,
                uuid: string(item, "PayloadUUID")
                    .ok_or("a payload is missing the PayloadUUID field")?,
                version: integer(item, "PayloadVersion"),
                display_name: string(item, "PayloadDisplayName"),
                certificate_der,
            });
        }
    }
    Ok(InstalledProfile {
        identifier,
        uuid,
        version: integer(&dict, "PayloadVersion"),
        display_name: string(&dict, "PayloadDisplayName"),
        organization: string(&dict, "PayloadOrganization"),
        description: string(&dict, "PayloadDescription"),
        managed,
        removal_disallowed: dict
            .get("PayloadRemovalDisallowed")
            .and_then(|v| v.as_boolean())
            .unwrap_or(false),
        signer_certificates,
        payloads,
    })
}

/// Certificate payloads may hold DER or PEM; the device keeps DER.
fn certificate_to_der(data: &[u8]) -> Vec<u8> {
    if data.starts_with(b"-----BEGIN") {
        if let Ok(cert) = X509::from_pem(data) {
            if let Ok(der) = cert.to_der() {
                return der;
            }
        }
    }
    data.to_vec()
}

/// Every certificate of a PEM bundle, as DER.
pub(crate) fn pem_bundle_to_der(pem: &[u8]) -> Result<Vec<Vec<u8>>, SimError> {
    X509::stack_from_pem(pem)?
        .iter()
        .map(|c| c.to_der().map_err(SimError::from))
        .collect()
}

/// One certificate as PEM text.
pub(crate) fn der_to_pem(der: &[u8]) -> Result<String, SimError> {
    let pem = X509::from_der(der)?.to_pem()?;
    Ok(String::from_utf8_lossy(&pem).into_owned())
}

/// The subject common name of a DER certificate.
pub(crate) fn common_name(der: &[u8]) -> Option<String> {
    let cert = X509::from_der(der).ok()?;
    let entry = cert.subject_name().entries_by_nid(Nid::COMMONNAME).next()?;
    entry.data().to_string().ok()
}
