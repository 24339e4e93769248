//! Fuzzes the enrollment-profile decoder the simulated iPad uses: a signed profile (verified against the fixture
//! CA, signature and chain, with and without dates) and the plist inside it. A profile that decodes must survive
//! being written and decoded again unchanged.
#![no_main]
use orchard_fuzz::{ca, NOW};
use orchard_pki::signature::{verify_signed_profile, verify_signed_profile_at};
use orchard_protocol::profile::EnrollmentProfile;

fn decode(bytes: &[u8]) {
    if let Ok(profile) = EnrollmentProfile::parse(bytes) {
        let written = profile.to_plist();
        if written.contains(&0) {
            // A string with NUL decodes (binary plists, `&#0;`) but its XML form is refused before parsing
            // (orchard-protocol's depth check): a known asymmetry, see docs/fuzzing.md.
            return;
        }
        let again = EnrollmentProfile::parse(&written)
            .unwrap_or_else(|e| panic!("a decoded profile does not decode once written: {e}"));
        assert_eq!(
            profile, again,
            "the profile changed on a write/read round trip"
        );
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _clear = orchard_fuzz::ClearOpensslErrors; // see its doc: keeps libFuzzer's leak check meaningful
    let root = ca().cert_der();
    let dated = verify_signed_profile_at(data, &root, NOW);
    match verify_signed_profile(data, &root) {
        Ok(content) => {
            if let Ok(dated) = dated {
                assert_eq!(dated, content);
            }
            decode(&content);
        }
        Err(_) => assert!(dated.is_err(), "accepted with dates but not without"),
    }
    decode(data);
});
