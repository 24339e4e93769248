//! What every fuzz target shares: one fixed test PKI, checked in under `fuzz/data/`, so that the seeds written by
//! `examples/seeds.rs` and the targets that mutate them trust the same CA. A PKCSReq in the corpus decrypts with
//! the CA key the target uses, a Mdm-Signature in the corpus was made by a certificate that CA issued, and the
//! fuzzer starts from messages that reach the deepest checks.
//!
//! The keys are test keys, published in this repository and trusted by nothing else.

#![allow(clippy::panic, clippy::expect_used)] // fixtures: a broken fixture must stop the fuzzer at once

use std::path::PathBuf;
use std::sync::OnceLock;

use orchard_dep::MachineInfoVerifier;
use orchard_pki::{CertificateAuthority, Identity};
use orchard_types::UnixTime;

/// The time every target checks validity at: inside every fixture certificate's validity.
pub const NOW: UnixTime = UnixTime(1_800_000_100);
/// When the fixtures were issued (certificates start an hour before).
pub const ISSUED_AT: UnixTime = UnixTime(1_800_000_000);
/// Validity of the fixture certificates: long enough that `NOW` never needs to move.
pub const VALIDITY_DAYS: u32 = 3650;

/// The request body the Mdm-Signature seeds sign (a real check-in shape).
pub const BODY: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
<plist version=\"1.0\"><dict><key>MessageType</key><string>Idle</string>\
<key>UDID</key><string>00008103-001A2B3C4D5E6F70</string></dict></plist>\n";

/// The fixture files under `fuzz/data/`, each a PEM certificate followed by its PEM private key.
pub const CA_FILE: &str = "ca.pem";
pub const DEVICE_FILE: &str = "device.pem";
pub const PROFILE_SIGNER_FILE: &str = "profile-signer.pem";
pub const EC_CA_FILE: &str = "ec-ca.pem";

/// `fuzz/data/`, found from this crate's manifest (the fuzzer runs from anywhere).
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

fn load_identity(file: &str) -> Identity {
    let path = data_dir().join(file);
    let pem = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "fuzz fixture {}: {e} (cargo run --manifest-path fuzz/Cargo.toml --example seeds -- --new-pki)",
            path.display()
        )
    });
    // The file holds the certificate first, then the key; each PEM parser skips what is not its own.
    Identity::from_pem(&pem, &pem)
        .unwrap_or_else(|e| panic!("fuzz fixture {}: {e}", path.display()))
}

/// The RSA-2048 CA (also the SCEP RA) of every target: issues the device and the profile signer.
pub fn ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| {
        CertificateAuthority::from_identity(load_identity(CA_FILE))
            .unwrap_or_else(|e| panic!("fuzz fixture {CA_FILE}: {e}"))
    })
}

/// A device identity issued by [`ca`] through SCEP (clientAuth), RSA-2048: signs Mdm-Signatures, MachineInfo
/// and RenewalReqs, and its key signs the PKCSReq seeds.
pub fn device() -> &'static Identity {
    static DEVICE: OnceLock<Identity> = OnceLock::new();
    DEVICE.get_or_init(|| load_identity(DEVICE_FILE))
}

/// A profile-signing identity issued by [`ca`].
pub fn profile_signer() -> &'static Identity {
    static SIGNER: OnceLock<Identity> = OnceLock::new();
    SIGNER.get_or_init(|| load_identity(PROFILE_SIGNER_FILE))
}

/// An ECDSA P-256 CA: the certificate differential target signs every mutated certificate with it (fast, and the
/// fast path's ECDSA branch).
pub fn ec_ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| {
        CertificateAuthority::from_identity(load_identity(EC_CA_FILE))
            .unwrap_or_else(|e| panic!("fuzz fixture {EC_CA_FILE}: {e}"))
    })
}

/// MachineInfo verification trusting [`ca`] as "Apple's" root (the device identity signs the seeds).
pub fn machine_info_verifier() -> &'static MachineInfoVerifier {
    static VERIFIER: OnceLock<MachineInfoVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        MachineInfoVerifier::new(&[ca().cert_der()])
            .unwrap_or_else(|e| panic!("machineinfo verifier: {e}"))
    })
}

/// Empties OpenSSL's error queue of this thread when dropped; every target holds one for the length of an input.
///
/// OpenSSL keeps each queued error's file and function names as heap strings in a ring of 16 slots, and frees
/// them only when a slot is reused or the queue is cleared; reading the errors (`ErrorStack::get`) leaves them.
/// So an input that raised errors ends with more or fewer live allocations than it began with although nothing
/// leaked, libFuzzer takes that for a possible leak and runs LeakSanitizer's whole-heap scan for it (about one
/// input in ten in `scep_message`, most of the run time). Clearing the queue at the end of every input keeps its
/// allocations balanced, so the per-input leak check runs only when memory really stays behind.
pub struct ClearOpensslErrors;

impl Drop for ClearOpensslErrors {
    fn drop(&mut self) {
        // SAFETY: ERR_clear_error only touches this thread's error queue, which nothing else holds a reference into
        // between inputs (errors read earlier were copied out by the openssl crate).
        unsafe { openssl_sys::ERR_clear_error() }
    }
}
