//! Fuzzes the SCEP PKIOperation decoder with a real CA: any bytes POSTed to /scep.
#![no_main]
use std::sync::OnceLock;

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
    let _ = orchard_pki::scep::decode_pki_message(ca(), data);
});
