//! Differential fuzzing of the fast path's certificate reading (x509-parser behind its strict-DER checks: issuer,
//! CA signature, validity, subject CN) against OpenSSL's, on certificates our CA really issued. The input is a
//! certificate request; the target issues it through the real SCEP issuing code (with the fixture ECDSA CA, for
//! speed), exactly as the server would for a device, so every subject a device can ask for (string types,
//! bytes, several CNs) and every key the server issues for (RSA of 2048 to 8192 bits) reaches the comparison
//! with a valid CA signature. The fast path may decline a certificate (OpenSSL then decides); when it decides,
//! it must decide what OpenSSL decides, with the same facts.
#![no_main]
use openssl::x509::X509Req;
use orchard_fuzz::{ec_ca, ISSUED_AT, NOW};
use orchard_pki::scep::{self, ContentCipher, MessageType, PkiRequest};
use orchard_pki::signature::paths;

libfuzzer_sys::fuzz_target!(|csr: &[u8]| {
    let _clear = orchard_fuzz::ClearOpensslErrors; // see its doc: keeps libFuzzer's leak check meaningful
    if X509Req::from_der(csr).is_err() {
        return;
    }
    let request = PkiRequest {
        message_type: MessageType::PkcsReq,
        transaction_id: "fuzz".into(),
        sender_nonce: vec![0; 16],
        signer_cert_der: Vec::new(),
        csr_der: csr.to_vec(),
        challenge_password: None,
        subject_common_name: None,
        content_cipher: ContentCipher::Aes256Cbc,
        signing_time: None,
    };
    let Ok(cert) = scep::issue_certificate(ec_ca(), &request, ISSUED_AT, 30) else {
        return;
    };
    // One time per input (each comparison parses the certificate twice): valid, not yet valid, or expired.
    let times = [
        NOW,
        ISSUED_AT.plus_seconds(-7200),
        ISSUED_AT.plus_seconds(31 * 86_400),
    ];
    let now = times[csr.len() % times.len()];
    let openssl = paths::openssl_certificate(&cert, ec_ca(), now);
    match (paths::fast_certificate(&cert, ec_ca(), now), openssl) {
        (None, _) => {}
        (Some(Ok(fast)), Ok(openssl)) => {
            assert_eq!(
                fast, openssl,
                "the two readers see different certificate facts"
            )
        }
        (Some(Ok(fast)), Err(error)) => panic!(
            "the fast path accepts a certificate OpenSSL refuses ({error}): {:?}",
            fast.subject_common_name
        ),
        (Some(Err(error)), Ok(_)) => {
            panic!("the fast path refuses a certificate OpenSSL accepts: {error}")
        }
        (Some(Err(fast)), Err(openssl)) => assert_eq!(
            std::mem::discriminant(&fast),
            std::mem::discriminant(&openssl),
            "refused for different reasons: {fast} / {openssl}"
        ),
    }
});
