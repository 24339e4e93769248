//! Inputs the fuzz campaign found, replayed against the SCEP decoder (see docs/fuzzing.md, "Findings").

use std::path::PathBuf;

use orchard_pki::scep::{self, FailInfo, PkiOperation};
use orchard_pki::CertificateAuthority;

/// The fuzz targets' CA (`fuzz/data/ca.pem`: certificate, then key): the inputs were encrypted to it.
fn fuzz_ca() -> Result<CertificateAuthority, Box<dyn std::error::Error>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/data/ca.pem");
    let pem = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(CertificateAuthority::from_pem(&pem, &pem)?)
}

/// scep_cert_rep, 2026-12-05 (after 4.56 M runs): a PKCSReq whose self-signed signer certificate has a signature
/// AlgorithmIdentifier with a constructed end-of-contents as parameters. OpenSSL reads it inside the SignedData
/// and the request's signature verifies, but the certificate's DER as OpenSSL writes it does not parse again, so
/// the server issued a certificate and then could not build the CertRep (or even hash the signer's key): an
/// error instead of an answer. It is refused as a CertRep FAILURE (badMessageCheck) before anything is issued.
#[test]
fn a_signer_certificate_that_does_not_read_back_is_refused_with_a_certrep() {
    let input = include_bytes!("data/scep-signer-not-der.der");
    let ca = fuzz_ca().expect("fuzz ca");
    match scep::decode_pki_operation(&ca, input)
        .expect("answerable: it has a transactionID and a nonce")
    {
        PkiOperation::Refused {
            fail,
            reason,
            reply_to,
        } => {
            assert_eq!(fail, FailInfo::BadMessageCheck, "{reason}");
            assert!(reason.contains("signer certificate"), "{reason}");
            // The refusal itself can be built (it is encrypted to nobody: a FAILURE carries no certificate).
            scep::cert_rep_refusal(&ca, &reply_to, fail).expect("refusal certrep");
        }
        PkiOperation::Request(request) => panic!(
            "accepted a request whose signer certificate ({} bytes) does not parse",
            request.signer_cert_der.len()
        ),
    }
}
