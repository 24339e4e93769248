//! Differential fuzzing of Mdm-Signature verification: the hand-written fast path and the OpenSSL path must agree
//! on every input. When the fast path decides (it may leave a message to OpenSSL), both refuse, or both accept
//! with the same signer. A fast-path acceptance that OpenSSL refuses is a forged device request; a fast-path
//! refusal of what OpenSSL accepts is a device locked out. The public entry point must answer what the two paths
//! answer.
#![no_main]
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use orchard_fuzz::{ca, BODY, NOW};
use orchard_pki::signature::{paths, verify_mdm_signature};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let fast = paths::fast(data, BODY, ca(), NOW);
    let openssl = paths::openssl(data, BODY, ca(), NOW);
    let expected = match (&fast, &openssl) {
        (None, _) => openssl.clone(),
        (Some(Ok(fast_signer)), Ok(openssl_signer)) => {
            assert_eq!(
                fast_signer, openssl_signer,
                "the two paths name different signers"
            );
            openssl.clone()
        }
        (Some(Ok(signer)), Err(error)) => panic!(
            "FORGERY: the fast path accepted a message OpenSSL refuses ({error}); signer {:?}",
            signer.subject_common_name
        ),
        (Some(Err(error)), Ok(_)) => {
            panic!("the fast path refused a message OpenSSL accepts: {error}")
        }
        (Some(Err(error)), Err(_)) => Err(error.clone()),
    };
    if !data.is_empty() {
        let public = verify_mdm_signature(&BASE64.encode(data), BODY, ca(), NOW);
        assert_eq!(
            public.is_ok(),
            expected.is_ok(),
            "verify_mdm_signature disagrees with its paths"
        );
        if let (Ok(public), Ok(expected)) = (public, expected) {
            assert_eq!(public, expected);
        }
    }
});
