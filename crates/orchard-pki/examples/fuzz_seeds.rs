//! Writes seed inputs for the fuzz targets (`fuzz/`): a real SCEP PKCSReq and a real Mdm-Signature, so the
//! fuzzer starts from well-formed CMS instead of guessing DER from nothing.
//! Usage: cargo run -p orchard-pki --example fuzz_seeds -- fuzz/corpus

use std::path::PathBuf;

use orchard_pki::{scep, signature, CertificateAuthority};
use orchard_types::UnixTime;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let now = UnixTime(1_800_000_000);
    let ca = CertificateAuthority::generate("seed CA", now, 30)?;
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048)?)?;
    let req = scep::build_pkcs_req(&ca.cert_der(), &key, "seed device", Some("challenge"), now)?;
    std::fs::create_dir_all(dir.join("scep_message"))?;
    std::fs::write(dir.join("scep_message/pkcsreq.der"), &req.message_der)?;
    let identity = ca.issue_signing_identity("seed device", now, 30)?;
    let header = signature::sign_mdm_body(b"body", &identity)?;
    std::fs::create_dir_all(dir.join("mdm_signature"))?;
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD.decode(header.as_bytes())?;
    std::fs::write(dir.join("mdm_signature/signature.der"), der)?;
    println!("seeds written under {}", dir.display());
    Ok(())
}
