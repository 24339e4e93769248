//! Micro benchmark of `Mdm-Signature` verification: `cargo run --release -p orchard-pki --example verify_speed`.
//! Prints verifications per second on one thread (a device-sized check-in body, RSA-2048 device certificate),
//! for a first message (the certificate is checked against the CA) and a later one (the signer cache knows it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::X509;
use orchard_pki::signature::{sign_mdm_body, verify_mdm_signature, SignerCache};
use orchard_pki::{scep, CertificateAuthority, Identity};
use orchard_types::UnixTime;

fn main() {
    let now = UnixTime(1_764_460_800);
    let ca = CertificateAuthority::generate("Orchard Bench CA", now, 3650).expect("ca");
    // A device identity issued the way SCEP issues it.
    let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("key");
    let pending =
        scep::build_pkcs_req(&ca.cert_der(), &key, "BENCH-UDID", Some("c"), now).expect("req");
    let req = scep::decode_pki_message(&ca, &pending.message_der).expect("decode");
    let der = scep::issue_certificate(&ca, &req, now, 365).expect("issue");
    let device = Identity::from_parts(X509::from_der(&der).expect("der"), key).expect("identity");

    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><plist version=\"1.0\"><dict><key>Status</key>\
         <string>Idle</string><key>UDID</key><string>BENCH-UDID</string>{}</dict></plist>",
        "<key>Padding</key><string>xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx</string>".repeat(10)
    );
    let header = sign_mdm_body(body.as_bytes(), &device).expect("sign");
    println!(
        "header: {} base64 chars, body: {} bytes",
        header.len(),
        body.len()
    );

    // Warm-up, then a fixed wall-clock window.
    for _ in 0..200 {
        verify_mdm_signature(&header, body.as_bytes(), &ca, now).expect("verify");
    }
    let window = Duration::from_secs(3);
    let start = Instant::now();
    let mut count = 0u64;
    while start.elapsed() < window {
        for _ in 0..100 {
            verify_mdm_signature(&header, body.as_bytes(), &ca, now).expect("verify");
        }
        count += 100;
    }
    report("verify_mdm_signature (certificate checked)", count, start);

    // A device's later requests: its certificate is known, so only the message signature is checked.
    let cache = SignerCache::new(&ca, 1_000);
    cache
        .verify_mdm_signature(&header, body.as_bytes(), &ca, now)
        .expect("verify");
    let start = Instant::now();
    let mut count = 0u64;
    while start.elapsed() < window {
        for _ in 0..100 {
            cache
                .verify_mdm_signature(&header, body.as_bytes(), &ca, now)
                .expect("verify");
        }
        count += 100;
    }
    report(
        "SignerCache::verify_mdm_signature (certificate known)",
        count,
        start,
    );
}

fn report(what: &str, count: u64, start: Instant) {
    let per_second = count as f64 / start.elapsed().as_secs_f64();
    println!(
        "{what}: {per_second:.0} verifications/s on one thread, {:.1} µs each",
        1e6 / per_second
    );
}
