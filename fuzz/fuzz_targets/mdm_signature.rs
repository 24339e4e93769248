//! Fuzzes Mdm-Signature verification as the server runs it (fast path, then OpenSSL): any header value, as the
//! base64 of the input and as the input itself, over the body the seeds signed. The seeds are signatures by
//! certificates the fixture CA issued, so mutations start inside the deepest checks. Whatever is accepted must
//! come from a certificate that CA issued. The signingTime reader (the freshness check after acceptance) must take
//! any header without panicking or leaking.
#![no_main]
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use orchard_fuzz::{ca, BODY, NOW};
use orchard_pki::signature::{mdm_signature_signing_time, verify_mdm_signature};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let header = BASE64.encode(data);
    let mut headers = vec![header.as_str()];
    if let Ok(text) = std::str::from_utf8(data) {
        headers.push(text);
    }
    for header in headers {
        let _ = mdm_signature_signing_time(header);
        if let Ok(signer) = verify_mdm_signature(header, BODY, ca(), NOW) {
            assert!(
                ca().is_issued_by_me(&signer.cert_der),
                "accepted a signer our CA did not issue"
            );
        }
    }
});
