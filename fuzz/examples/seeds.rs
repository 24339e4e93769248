//! Writes the seed inputs of every fuzz target into `fuzz/corpus/<target>/seed-*`, made with the fixed test PKI of
//! `fuzz/data/` (the one the targets load), so seeds decrypt, verify and chain inside the targets.
//!
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds              # seeds from the checked-in PKI
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds -- --new-pki # first make a new PKI (then the
//!                                                                         # corpus of the crypto targets is stale)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use openssl::asn1::{Asn1Time, Asn1Type};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, PKeyRef, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Name, X509NameRef, X509ReqBuilder, X509};
use orchard_dep::machine_info::sign_machine_info;
use orchard_dep::MachineInfo;
use orchard_fuzz::{ca, data_dir, device, profile_signer, BODY, ISSUED_AT, NOW, VALIDITY_DAYS};
use orchard_pki::scep::{self, ContentCipher};
use orchard_pki::signature::{sign_mdm_body, sign_profile};
use orchard_pki::{CertificateAuthority, Identity};
use orchard_protocol::profile::sample_profile;
use orchard_types::{SerialNumber, Udid};

const DEVICE_UDID: &str = "00008103-001A2B3C4D5E6F70";

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn write_identity(file: &str, identity: &Identity) {
    let mut pem = identity.cert_pem();
    pem.extend_from_slice(identity.key_pem().expose());
    std::fs::write(data_dir().join(file), pem).unwrap();
}

fn rsa_key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

/// A certificate signed by `issuer_key` with the given subject, for any key; CA when `is_ca`.
fn certificate(
    subject: &X509NameRef,
    issuer: &X509NameRef,
    key: &PKeyRef<Private>,
    issuer_key: &PKeyRef<Private>,
    is_ca: bool,
) -> X509 {
    let mut builder = X509Builder::new().unwrap();
    builder.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(128, MsbOption::ONE, false).unwrap();
    builder
        .set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    builder.set_subject_name(subject).unwrap();
    builder.set_issuer_name(issuer).unwrap();
    builder.set_pubkey(key).unwrap();
    builder
        .set_not_before(&Asn1Time::from_unix(ISSUED_AT.0 - 3600).unwrap())
        .unwrap();
    builder
        .set_not_after(
            &Asn1Time::from_unix(ISSUED_AT.0 + i64::from(VALIDITY_DAYS) * 86_400).unwrap(),
        )
        .unwrap();
    if is_ca {
        builder
            .append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        builder
            .append_extension(KeyUsage::new().critical().key_cert_sign().build().unwrap())
            .unwrap();
        let ski = SubjectKeyIdentifier::new()
            .build(&builder.x509v3_context(None, None))
            .unwrap();
        builder.append_extension(ski).unwrap();
    } else {
        builder
            .append_extension(BasicConstraints::new().critical().build().unwrap())
            .unwrap();
        builder
            .append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap())
            .unwrap();
    }
    builder.sign(issuer_key, MessageDigest::sha256()).unwrap();
    builder.build()
}

fn name(entries: &[(Nid, &str, Asn1Type)]) -> X509Name {
    let mut name = X509Name::builder().unwrap();
    for (nid, value, kind) in entries {
        name.append_entry_by_nid_with_type(*nid, value, *kind)
            .unwrap();
    }
    name.build()
}

/// Makes the fixed test PKI: an RSA CA, a device identity issued through the real SCEP code, a profile signer,
/// and an ECDSA CA.
fn new_pki() {
    std::fs::create_dir_all(data_dir()).unwrap();
    let ca = CertificateAuthority::generate("Orchard Fuzz CA", ISSUED_AT, VALIDITY_DAYS).unwrap();
    let key = rsa_key();
    let pending = scep::build_pkcs_req(
        &ca.cert_der(),
        &key,
        DEVICE_UDID,
        Some("challenge"),
        ISSUED_AT,
    )
    .unwrap();
    let request = scep::decode_pki_message(&ca, &pending.message_der).unwrap();
    let issued = scep::issue_certificate(&ca, &request, ISSUED_AT, VALIDITY_DAYS).unwrap();
    let device = Identity::from_parts(X509::from_der(&issued).unwrap(), key).unwrap();
    let signer = ca
        .issue_signing_identity("Orchard Fuzz Profile Signing", ISSUED_AT, VALIDITY_DAYS)
        .unwrap();
    let ec_key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let ec_name = name(&[(Nid::COMMONNAME, "Orchard Fuzz EC CA", Asn1Type::UTF8STRING)]);
    let ec_cert = certificate(&ec_name, &ec_name, &ec_key, &ec_key, true);
    let ec_ca = Identity::from_parts(ec_cert, ec_key).unwrap();

    write_identity(orchard_fuzz::CA_FILE, ca.identity());
    write_identity(orchard_fuzz::DEVICE_FILE, &device);
    write_identity(orchard_fuzz::PROFILE_SIGNER_FILE, &signer);
    write_identity(orchard_fuzz::EC_CA_FILE, &ec_ca);
    println!("new fuzz PKI written under {}", data_dir().display());
}

struct Seeds {
    root: PathBuf,
    written: usize,
}

impl Seeds {
    fn put(&mut self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        self.written += 1;
    }
}

/// One DER element: (contents, whole encoding, rest). Seeds only: single-byte tags, definite lengths.
fn tlv(bytes: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let (len, header) = match bytes[1] {
        short @ 0..=0x7f => (usize::from(short), 2),
        long => {
            let count = usize::from(long & 0x7f);
            let len = bytes[2..2 + count]
                .iter()
                .fold(0, |acc, &b| (acc << 8) | usize::from(b));
            (len, 2 + count)
        }
    };
    (
        &bytes[header..header + len],
        &bytes[..header + len],
        &bytes[header + len..],
    )
}

fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match contents.len() {
        len @ 0..=0x7f => out.push(len as u8),
        len @ 0x80..=0xff => out.extend_from_slice(&[0x81, len as u8]),
        len => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(contents);
    out
}

/// The same SignedData with SHA-1 added to digestAlgorithms.
fn with_second_digest_algorithm(message: &[u8]) -> Vec<u8> {
    const SHA1: &[u8] = &[
        0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00,
    ];
    let (content_info, _, _) = tlv(message);
    let (oid, _, rest) = tlv(content_info);
    let (explicit, _, _) = tlv(rest);
    let (signed_data, _, _) = tlv(explicit);
    let (version, _, rest) = tlv(signed_data);
    let (digest_algorithms, _, rest) = tlv(rest);
    let mut signed_data = der(0x02, version);
    signed_data.extend(der(0x31, &[digest_algorithms, SHA1].concat()));
    signed_data.extend_from_slice(rest);
    let mut content_info = der(0x06, oid);
    content_info.extend(der(0xa0, &der(0x30, &signed_data)));
    der(0x30, &content_info)
}

/// The outer SEQUENCE with an indefinite length (BER): the fast path leaves such messages to OpenSSL.
fn as_ber(message: &[u8]) -> Vec<u8> {
    let (contents, _, _) = tlv(message);
    [&[0x30, 0x80][..], contents, &[0, 0]].concat()
}

fn binary_plist(xml: &[u8]) -> Vec<u8> {
    let value = plist::Value::from_reader_xml(xml).unwrap();
    let mut out = Vec::new();
    value.to_writer_binary(&mut out).unwrap();
    out
}

fn plist_seeds(seeds: &mut Seeds) {
    let protocol =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/orchard-protocol/testdata");
    for (target, file) in [
        ("checkin", "Authenticate.1.plist"),
        ("checkin", "Authenticate.2.plist"),
        ("checkin", "TokenUpdate.1.plist"),
        ("checkin", "TokenUpdate.2.plist"),
        ("command_report", "DeviceInformation.1.plist"),
    ] {
        let xml = std::fs::read(protocol.join(file)).unwrap();
        seeds.put(target, file, &xml);
        seeds.put(target, &format!("{file}.binary"), &binary_plist(&xml));
    }
    seeds.put("checkin", "idle.plist", BODY);
}

fn signature_seeds(seeds: &mut Seeds) {
    let decode = |header: String| BASE64.decode(header).unwrap();
    let by_device = decode(sign_mdm_body(BODY, device()).unwrap());
    let by_signer = decode(sign_mdm_body(BODY, profile_signer()).unwrap());
    let stranger_ca = CertificateAuthority::generate("Orchard Fuzz CA", ISSUED_AT, 30).unwrap();
    let stranger = stranger_ca
        .issue_signing_identity("stranger", ISSUED_AT, 30)
        .unwrap();
    let by_stranger = decode(sign_mdm_body(BODY, &stranger).unwrap());
    let leak = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/orchard-pki/tests/data/mdm-signature-leak.der"),
    )
    .unwrap();
    for target in ["mdm_signature", "signature_differential", "signer_cache"] {
        seeds.put(target, "device.der", &by_device);
        seeds.put(target, "profile-signer.der", &by_signer);
        seeds.put(target, "device-ber.der", &as_ber(&by_device));
        seeds.put(
            target,
            "device-two-digests.der",
            &with_second_digest_algorithm(&by_device),
        );
        seeds.put(target, "stranger.der", &by_stranger);
        seeds.put(target, "issue-19-leak.der", &leak);
    }
}

/// Certificate requests as a device could send them: the certificate differential target issues each one.
fn certificate_seeds(seeds: &mut Seeds) {
    let rsa = rsa_key();
    let ec = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let subjects = [
        (
            "utf8-cn",
            name(&[(Nid::COMMONNAME, DEVICE_UDID, Asn1Type::UTF8STRING)]),
        ),
        (
            "printable-o-cn",
            name(&[
                (
                    Nid::ORGANIZATIONNAME,
                    "Example University",
                    Asn1Type::PRINTABLESTRING,
                ),
                (Nid::COMMONNAME, "device", Asn1Type::PRINTABLESTRING),
            ]),
        ),
        (
            "bmp-cn",
            name(&[(Nid::COMMONNAME, "device", Asn1Type::BMPSTRING)]),
        ),
        (
            "ia5-cn",
            name(&[(Nid::COMMONNAME, "device", Asn1Type::IA5STRING)]),
        ),
        (
            "t61-cn",
            name(&[(Nid::COMMONNAME, "device", Asn1Type::T61STRING)]),
        ),
        (
            "utf8-non-ascii-cn",
            name(&[(Nid::COMMONNAME, "Gerät 7", Asn1Type::UTF8STRING)]),
        ),
        (
            "two-cns",
            name(&[
                (Nid::COMMONNAME, "first", Asn1Type::UTF8STRING),
                (Nid::COMMONNAME, "second", Asn1Type::UTF8STRING),
            ]),
        ),
        (
            "no-cn",
            name(&[(Nid::ORGANIZATIONNAME, "Example", Asn1Type::UTF8STRING)]),
        ),
    ];
    for (label, subject) in subjects {
        for (key_label, key) in [("rsa", &rsa), ("ec", &ec)] {
            let mut builder = X509ReqBuilder::new().unwrap();
            builder.set_version(0).unwrap();
            builder.set_subject_name(&subject).unwrap();
            builder.set_pubkey(key).unwrap();
            builder.sign(key, MessageDigest::sha256()).unwrap();
            let csr = builder.build().to_der().unwrap();
            seeds.put(
                "certificate_differential",
                &format!("{label}-{key_label}.csr"),
                &csr,
            );
        }
    }
}

fn scep_seeds(seeds: &mut Seeds) {
    let ca_der = ca().cert_der();
    let key = device().private_key();
    let mut requests = Vec::new();
    for (label, cipher) in [
        ("aes256", ContentCipher::Aes256Cbc),
        ("aes128", ContentCipher::Aes128Cbc),
        ("des3", ContentCipher::Des3Cbc),
        ("des", ContentCipher::DesCbc),
    ] {
        let pending = scep::build_pkcs_req_with_cipher(
            &ca_der,
            key,
            DEVICE_UDID,
            Some("challenge"),
            NOW,
            cipher,
        )
        .unwrap();
        requests.push((format!("pkcsreq-{label}.der"), pending.message_der));
    }
    let pending = scep::build_pkcs_req(&ca_der, key, DEVICE_UDID, None, NOW).unwrap();
    requests.push(("pkcsreq-no-challenge.der".into(), pending.message_der));
    // Renewal for the same key, so that the round trip target's client can read the answer; and for a new one.
    let renewal = scep::build_renewal_req(&ca_der, key, device(), DEVICE_UDID, NOW).unwrap();
    requests.push(("renewalreq.der".into(), renewal.message_der));
    let renewal = scep::build_renewal_req(&ca_der, &rsa_key(), device(), DEVICE_UDID, NOW).unwrap();
    requests.push(("renewalreq-new-key.der".into(), renewal.message_der));
    for (label, message) in &requests {
        // Every seed must get through decoding inside the targets.
        scep::decode_pki_message(ca(), message).unwrap();
        seeds.put("scep_message", label, message);
        seeds.put("scep_cert_rep", label, message);
    }
}

fn profile_seeds(seeds: &mut Seeds) {
    let mut profile = sample_profile();
    profile.root_ca_der = Some(ca().cert_der());
    let xml = profile.to_plist();
    let signed = sign_profile(&xml, profile_signer(), &[ca().identity()]).unwrap();
    orchard_pki::signature::verify_signed_profile_at(&signed, &ca().cert_der(), NOW).unwrap();
    seeds.put("enrollment_profile", "signed.der", &signed);
    seeds.put("enrollment_profile", "profile.plist", &xml);
    seeds.put("enrollment_profile", "profile.binary", &binary_plist(&xml));
}

fn machine_info_seeds(seeds: &mut Seeds) {
    let info = MachineInfo {
        udid: Udid::parse(DEVICE_UDID).unwrap(),
        serial: SerialNumber::parse("DMPXK0ABCDEF").unwrap(),
        product: "iPad13,1".into(),
        version: "21E236".into(),
        os_version: Some("17.4.1".into()),
        supplemental_build_version: Some("21E236".into()),
        supplemental_os_version_extra: Some("(a)".into()),
        imei: Some("35 000000 000000 0".into()),
        meid: None,
        language: Some("de".into()),
        mdm_can_request_software_update: true,
        software_update_device_id: Some("J307AP".into()),
        pairing_token: Some(vec![1, 2, 3, 4]),
    };
    let signed = sign_machine_info(&info, device(), &[]).unwrap();
    let verified = orchard_fuzz::machine_info_verifier()
        .verify_at(&signed, NOW)
        .unwrap();
    assert_eq!(verified.info, info);
    let with_chain = sign_machine_info(&info, device(), &[ca().identity()]).unwrap();
    seeds.put("machine_info", "signed.der", &signed);
    seeds.put("machine_info", "signed-with-chain.der", &with_chain);
    seeds.put("machine_info", "machineinfo.plist", &info.to_plist());
    seeds.put(
        "machine_info",
        "machineinfo.binary",
        &binary_plist(&info.to_plist()),
    );
}

fn main() {
    if std::env::args().any(|a| a == "--new-pki") {
        new_pki();
    }
    let mut seeds = Seeds {
        root: fuzz_dir().join("corpus"),
        written: 0,
    };
    plist_seeds(&mut seeds);
    signature_seeds(&mut seeds);
    certificate_seeds(&mut seeds);
    scep_seeds(&mut seeds);
    profile_seeds(&mut seeds);
    machine_info_seeds(&mut seeds);
    println!(
        "{} seeds written under {}",
        seeds.written,
        seeds.root.display()
    );
}
