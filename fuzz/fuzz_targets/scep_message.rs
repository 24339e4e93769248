//! Fuzzes the SCEP PKIOperation decoder with the fixture CA (also the RA): any bytes POSTed to /scep. The seeds
//! are PKCSReqs (AES-256, AES-128, 3DES, DES) and a RenewalReq made for that CA, so mutations reach the
//! signed-attribute reading, the envelope decryption and the CSR checks.
#![no_main]
use orchard_fuzz::ca;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(request) = orchard_pki::scep::decode_pki_message(ca(), data) {
        assert!(!request.transaction_id.is_empty());
        assert!(!request.sender_nonce.is_empty());
        assert!(openssl::x509::X509::from_der(&request.signer_cert_der).is_ok());
    }
});
