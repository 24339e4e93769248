//! Fuzzes the DEP MachineInfo decoder of /enroll/dep: the CMS-signed plist (signature, chain to the fixture CA as
//! "Apple's" root, then the plist) and the plist alone. Seeds are MachineInfo signed by the fixture device. A
//! MachineInfo that decodes must survive being written and decoded again unchanged.
#![no_main]
use orchard_dep::MachineInfo;
use orchard_fuzz::{machine_info_verifier, NOW};

fn round_trip(info: &MachineInfo) {
    let written = info.to_plist();
    if written.contains(&0) {
        // A string with NUL decodes (binary plists, `&#0;`) but its XML form is refused before parsing
        // (orchard-protocol's depth check): a known asymmetry, see docs/fuzzing.md.
        return;
    }
    let again = MachineInfo::from_plist(&written)
        .unwrap_or_else(|e| panic!("a decoded machineinfo does not decode once written: {e}"));
    assert_eq!(
        info, &again,
        "the machineinfo changed on a write/read round trip"
    );
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let verifier = machine_info_verifier();
    let dated = verifier.verify_at(data, NOW);
    match verifier.verify(data) {
        Ok(verified) => {
            if let Ok(dated) = &dated {
                assert_eq!(dated, &verified);
            }
            round_trip(&verified.info);
        }
        Err(_) => assert!(dated.is_err(), "accepted with dates but not without"),
    }
    if let Ok(info) = MachineInfo::from_plist(data) {
        round_trip(&info);
    }
});
