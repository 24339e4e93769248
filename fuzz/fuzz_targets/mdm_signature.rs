//! Fuzzes Mdm-Signature verification: any header value (as base64 of the fuzz input) over a fixed body.
#![no_main]
use std::sync::OnceLock;

use base64::Engine;
use orchard_pki::CertificateAuthority;
use orchard_types::UnixTime;

fn ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| {
        CertificateAuthority::generate("fuzz CA", UnixTime(1_800_000_000), 30)
            .unwrap_or_else(|e| panic!("fuzz setup: {e}"))
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let header = base64::engine::general_purpose::STANDARD.encode(data);
    let _ = orchard_pki::signature::verify_mdm_signature(&header, b"body", ca(), UnixTime(1_800_000_100));
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = orchard_pki::signature::verify_mdm_signature(s, b"body", ca(), UnixTime(1_800_000_100));
    }
});
