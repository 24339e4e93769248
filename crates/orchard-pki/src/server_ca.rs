//! The server CA: the certificate authority enrolled iPads trust for Orchard's TLS and profile signatures.
//!
//! Every iPad installs it as a trusted root, so it must not be able to vouch for anyone else: it carries a
//! critical NameConstraints extension that permits exactly the server's DNS names and IP addresses (RFC 5280
//! §4.2.1.10; a DNS constraint also covers names below it), excludes every address family it does not list,
//! and a path length of 0. Device identities are issued by a separate, unconstrained device CA that iPads are
//! never asked to trust (issue 10, finding 8).

use std::net::IpAddr;

use openssl::asn1::Asn1Object;
use openssl::hash::MessageDigest;
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectKeyIdentifier};
use openssl::x509::X509Extension;
use x509_parser::extensions::{GeneralName, ParsedExtension};

use crate::{
    certificate_builder, generate_rsa_key, name_with_cn, CertificateAuthority, Identity, PkiError,
};

/// id-ce-nameConstraints.
const NAME_CONSTRAINTS_OID: &str = "2.5.29.30";

/// DER of one TLV with a definite length.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// GeneralSubtree ::= SEQUENCE { base GeneralName, minimum [0] DEFAULT 0, maximum [1] OPTIONAL }, with the
/// defaults left out as DER requires.
fn subtree(general_name: Vec<u8>) -> Vec<u8> {
    tlv(0x30, &general_name)
}

/// dNSName [2] IA5String.
fn dns_name(name: &str) -> Vec<u8> {
    tlv(0x82, name.as_bytes())
}

/// iPAddress [7] OCTET STRING: the address followed by its mask.
fn ip_range(address: &[u8], prefix_bits: usize) -> Vec<u8> {
    let mut content = address.to_vec();
    let mut mask = vec![0u8; address.len()];
    for (i, byte) in mask.iter_mut().enumerate() {
        let bits = prefix_bits.saturating_sub(i * 8).min(8);
        *byte = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
    }
    content.extend_from_slice(&mask);
    tlv(0x87, &content)
}

/// The NameConstraints value: `dns_names` and `ip_addresses` permitted; IPv4 or IPv6 excluded entirely when
/// none of that family is listed, and DNS names limited to the reserved `invalid` domain when none is.
pub(crate) fn name_constraints_der(dns_names: &[String], ip_addresses: &[IpAddr]) -> Vec<u8> {
    let mut permitted = Vec::new();
    let mut excluded = Vec::new();
    for name in dns_names {
        permitted.extend(subtree(dns_name(name)));
    }
    if dns_names.is_empty() {
        // RFC 2606's `invalid` never resolves: with it as the only permitted name, no DNS name passes.
        permitted.extend(subtree(dns_name("invalid")));
    }
    for ip in ip_addresses {
        permitted.extend(match ip {
            IpAddr::V4(v4) => subtree(ip_range(&v4.octets(), 32)),
            IpAddr::V6(v6) => subtree(ip_range(&v6.octets(), 128)),
        });
    }
    if !ip_addresses.iter().any(IpAddr::is_ipv4) {
        excluded.extend(subtree(ip_range(&[0; 4], 0)));
    }
    if !ip_addresses.iter().any(IpAddr::is_ipv6) {
        excluded.extend(subtree(ip_range(&[0; 16], 0)));
    }
    let mut content = tlv(0xa0, &permitted);
    if !excluded.is_empty() {
        content.extend(tlv(0xa1, &excluded));
    }
    tlv(0x30, &content)
}

impl CertificateAuthority {
    /// A new self-signed RSA-2048 server CA for exactly these names (at least one name in total): basic
    /// constraints CA with path length 0, keyUsage keyCertSign + cRLSign, and the name constraints above.
    pub fn generate_server_ca(
        common_name: &str,
        dns_names: &[String],
        ip_addresses: &[IpAddr],
        now: orchard_types::UnixTime,
        validity_days: u32,
    ) -> Result<Self, PkiError> {
        if dns_names.is_empty() && ip_addresses.is_empty() {
            return Err(PkiError::Malformed(
                "a server ca needs a dns name or an ip address to be constrained to".into(),
            ));
        }
        if let Some(bad) = dns_names
            .iter()
            .find(|n| n.is_empty() || !n.is_ascii() || n.starts_with('.') || n.contains('*'))
        {
            return Err(PkiError::Malformed(format!(
                "{bad:?} is not a dns name a server ca can be constrained to"
            )));
        }
        let key = generate_rsa_key()?;
        let name = name_with_cn(common_name)?;
        let mut builder = certificate_builder(&name, &name, &key, now, validity_days)?;
        builder.append_extension(BasicConstraints::new().critical().ca().pathlen(0).build()?)?;
        builder.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .digital_signature()
                .build()?,
        )?;
        let constraints = openssl::asn1::Asn1OctetString::new_from_bytes(&name_constraints_der(
            dns_names,
            ip_addresses,
        ))?;
        let oid = Asn1Object::from_str(NAME_CONSTRAINTS_OID)?;
        builder.append_extension(X509Extension::new_from_der(&oid, true, &constraints)?)?;
        let ski = SubjectKeyIdentifier::new().build(&builder.x509v3_context(None, None))?;
        builder.append_extension(ski)?;
        builder.sign(&key, MessageDigest::sha256())?;
        Self::from_identity(Identity {
            cert: builder.build(),
            key,
        })
    }

    /// True when this CA's name constraints permit every one of `dns_names` and `ip_addresses` (so a TLS
    /// certificate for them that it issues is valid). A CA without name constraints permits nothing here:
    /// it is not a server CA and must be replaced.
    pub fn permits_server_names(&self, dns_names: &[String], ip_addresses: &[IpAddr]) -> bool {
        let der = self.cert_der();
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
            return false;
        };
        let Some(constraints) = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::NameConstraints(nc) => Some(nc),
                _ => None,
            })
        else {
            return false;
        };
        let permitted = constraints.permitted_subtrees.as_deref().unwrap_or(&[]);
        let dns_ok = dns_names.iter().all(|name| {
            permitted.iter().any(|s| match &s.base {
                GeneralName::DNSName(base) => dns_within(name, base),
                _ => false,
            })
        });
        let ip_ok = ip_addresses.iter().all(|ip| {
            let octets = match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            permitted.iter().any(|s| match &s.base {
                GeneralName::IPAddress(range) if range.len() == octets.len() * 2 => {
                    let (address, mask) = range.split_at(octets.len());
                    octets
                        .iter()
                        .zip(address)
                        .zip(mask)
                        .all(|((o, a), m)| o & m == a & m)
                }
                _ => false,
            })
        });
        dns_ok && ip_ok
    }
}

/// RFC 5280's dNSName constraint match: equal, or `base` preceded by one or more labels.
fn dns_within(name: &str, base: &str) -> bool {
    let (name, base) = (name.to_ascii_lowercase(), base.to_ascii_lowercase());
    name == base || name.ends_with(&format!(".{base}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::verify::X509VerifyFlags;
    use openssl::x509::{X509Ref, X509StoreContext, X509VerifyResult};
    use orchard_types::UnixTime;

    const NOW: UnixTime = UnixTime(1_790_000_000);

    fn names() -> (Vec<String>, Vec<IpAddr>) {
        (
            vec!["localhost".into(), "mdm.example.edu".into()],
            vec![IpAddr::from([127, 0, 0, 1])],
        )
    }

    /// OpenSSL's chain verification of `leaf` under `ca` alone, as a TLS client with that root would do it.
    fn verify(ca: &CertificateAuthority, leaf: &X509Ref) -> X509VerifyResult {
        let mut store = X509StoreBuilder::new().unwrap();
        store.add_cert(ca.identity().x509().to_owned()).unwrap();
        store.set_flags(X509VerifyFlags::X509_STRICT).unwrap();
        let mut param = openssl::x509::verify::X509VerifyParam::new().unwrap();
        param.set_time(NOW.0 + 86_400);
        store.set_param(&param).unwrap();
        let store = store.build();
        let mut ctx = X509StoreContext::new().unwrap();
        let chain = Stack::new().unwrap();
        ctx.init(&store, leaf, &chain, |c| {
            c.verify_cert()?;
            Ok(c.error())
        })
        .unwrap()
    }

    #[test]
    fn certificates_for_the_server_names_verify() {
        let (dns, ips) = names();
        let ca =
            CertificateAuthority::generate_server_ca("Orchard Server CA", &dns, &ips, NOW, 3650)
                .unwrap();
        let tls = ca.issue_tls_server(&dns, &ips, NOW, 397).unwrap();
        assert_eq!(verify(&ca, tls.x509()), X509VerifyResult::OK);
        let sub = ca
            .issue_tls_server(&["eu.mdm.example.edu".into()], &[], NOW, 397)
            .unwrap();
        assert_eq!(verify(&ca, sub.x509()), X509VerifyResult::OK);
        let signer = ca
            .issue_signing_identity("Orchard Profile Signing", NOW, 397)
            .unwrap();
        assert_eq!(verify(&ca, signer.x509()), X509VerifyResult::OK);
    }

    #[test]
    fn certificates_for_any_other_site_are_refused() {
        let (dns, ips) = names();
        let ca =
            CertificateAuthority::generate_server_ca("Orchard Server CA", &dns, &ips, NOW, 3650)
                .unwrap();
        let cases: Vec<(Vec<String>, Vec<IpAddr>)> = vec![
            (vec!["www.apple.com".into()], vec![]),
            (vec!["example.edu".into()], vec![]),
            (vec!["evilmdm.example.edu".into()], vec![]),
            (vec!["mdm.example.edu.evil.com".into()], vec![]),
            (vec![], vec![IpAddr::from([10, 0, 0, 1])]),
            (vec![], vec!["2001:db8::1".parse().unwrap()]),
            (
                vec!["mdm.example.edu".into()],
                vec![IpAddr::from([17, 1, 1, 1])],
            ),
        ];
        for (dns, ips) in cases {
            let leaf = ca.issue_tls_server(&dns, &ips, NOW, 397).unwrap();
            assert_eq!(
                verify(&ca, leaf.x509()).as_raw(),
                openssl_sys::X509_V_ERR_PERMITTED_VIOLATION,
                "{dns:?} {ips:?}"
            );
            assert!(!ca.permits_server_names(&dns, &ips), "{dns:?} {ips:?}");
        }
    }

    #[test]
    fn a_server_ca_permits_its_own_names_only() {
        let (dns, ips) = names();
        let ca =
            CertificateAuthority::generate_server_ca("Orchard Server CA", &dns, &ips, NOW, 3650)
                .unwrap();
        assert!(ca.permits_server_names(&dns, &ips));
        assert!(ca.permits_server_names(&["MDM.example.edu".into()], &[]));
        assert!(!ca.permits_server_names(&["other.example.edu".into()], &[]));
        let unconstrained = CertificateAuthority::generate("Orchard Device CA", NOW, 3650).unwrap();
        assert!(!unconstrained.permits_server_names(&dns, &ips));
    }

    #[test]
    fn only_ips_or_only_names_exclude_the_other_kind() {
        let ip_only = CertificateAuthority::generate_server_ca(
            "x",
            &[],
            &[IpAddr::from([192, 0, 2, 7])],
            NOW,
            30,
        )
        .unwrap();
        let leaf = ip_only
            .issue_tls_server(&["www.apple.com".into()], &[], NOW, 30)
            .unwrap();
        assert_ne!(verify(&ip_only, leaf.x509()), X509VerifyResult::OK);
        let ok = ip_only
            .issue_tls_server(&[], &[IpAddr::from([192, 0, 2, 7])], NOW, 30)
            .unwrap();
        assert_eq!(verify(&ip_only, ok.x509()), X509VerifyResult::OK);
        assert!(CertificateAuthority::generate_server_ca("x", &[], &[], NOW, 30).is_err());
        assert!(CertificateAuthority::generate_server_ca(
            "x",
            &["*.example.edu".into()],
            &[],
            NOW,
            30
        )
        .is_err());
    }

    #[test]
    fn long_constraint_lists_encode_with_long_form_lengths() {
        let dns: Vec<String> = (0..40)
            .map(|i| format!("node{i}.mdm.example.edu"))
            .collect();
        let der = name_constraints_der(&dns, &[]);
        assert_eq!(der[0], 0x30);
        assert_eq!(der[1], 0x82, "two length bytes");
        let ca = CertificateAuthority::generate_server_ca("x", &dns, &[], NOW, 30).unwrap();
        assert!(ca.permits_server_names(&dns, &[]));
    }
}
