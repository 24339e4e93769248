//! Fuzzes the SCEP PKIOperation decoder with the fixture CA (also the RA): any bytes POSTed to /scep. The seeds
//! are PKCSReqs (AES-256, AES-128, 3DES, DES) and a RenewalReq made for that CA, so mutations reach the
//! signed-attribute reading, the envelope decryption and the CSR checks. A request refused while decoding must
//! still be answerable: its FAILURE CertRep is built from what was read.
#![no_main]
use orchard_fuzz::ca;
use orchard_pki::scep::{self, PkiOperation};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _clear = orchard_fuzz::ClearOpensslErrors; // see its doc: keeps libFuzzer's leak check meaningful
    match scep::decode_pki_operation(ca(), data) {
        Ok(PkiOperation::Request(request)) => {
            assert!(!request.transaction_id.is_empty());
            assert!(!request.sender_nonce.is_empty());
            assert!(openssl::x509::X509::from_der(&request.signer_cert_der).is_ok());
        }
        Ok(PkiOperation::Refused { reply_to, fail, .. }) => {
            assert!(!reply_to.transaction_id.is_empty());
            assert!(!reply_to.sender_nonce.is_empty());
            scep::cert_rep_refusal(ca(), &reply_to, fail).expect("certrep for a refused request");
        }
        Err(_) => {}
    }
});
