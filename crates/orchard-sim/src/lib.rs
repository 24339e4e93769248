//! orchard-sim: simulated iPads that enroll in and obey a running Orchard server like real ones.
//!
//! A [`SimDevice`] downloads the enrollment profile, checks its CMS signature, gets an identity by SCEP,
//! checks in (Authenticate, TokenUpdate) and then answers commands in command sessions, changing its own
//! state the way an iPad would (locks, lost mode, profiles, apps, erase and Return to Service …). Every
//! request it sends carries an `Mdm-Signature`. A [`Fleet`] is many devices kept in a JSON state file, so
//! the same iPads can be reused across runs; [`bench`](mod@bench) measures check-in round trips against a server, and
//! [`bench_push`] the push-all benchmark (S1) with a local APNs server.
//!
//! Layout: `state` (what a device remembers, pure data), `handler` (sans-IO command handling: command
//! plist in, report plist out, state changed), `inventory` (result payloads built with
//! `orchard_protocol::results`), `profile` (opening and verifying configuration profiles), `device` (the
//! network side: enrollment, sessions, CheckOut), `fleet` (many devices and the JSON state file), `bench`,
//! `net` (rustls HTTP/1.1 clients, one per distinct trust), `apple_ca` (a stand-in for Apple's device identity
//! CA), `ade` (activation: cloud configuration, signed MachineInfo, enrollment by Automated Device
//! Enrollment), `key_pool` (pre-generated device keys, so fleets of thousands do not wait for RSA key
//! generation).

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod ade;
mod apple_ca;
pub mod bench;
pub mod bench_push;
pub mod cpu;
pub mod declarative;
mod device;
mod fleet;
pub mod handler;
mod inventory;
pub mod key_pool;
mod net;
mod profile;
pub mod state;
#[cfg(test)]
mod tests;

pub use ade::{
    Activation, DepActivation, DepEnrollment, MACHINE_INFO_CONTENT_TYPE,
    MAX_OS_UPDATES_PER_ACTIVATION,
};
pub use apple_ca::{
    AppleDeviceCa, AppleDeviceIdentity, TEST_APPLE_DEVICE_CA_CN, TEST_APPLE_ROOT_CN,
};
pub use device::{DeclarativeSync, SessionSummary, SimDevice};
pub use fleet::{ActivationSummary, Fleet};
pub use handler::{CommandOutcome, FollowUp};
pub use key_pool::KeyPool;
pub use net::{build_client, install_crypto_provider, ClientOptions};
pub use state::{
    AppleIdentityPem, DepAssignment, DeviceState, HandledCommand, InstalledApp, InstalledProfile,
    LostMode, OrganizationInfoState, PayloadSummary, ScheduledOsUpdate, SharedUserState,
};

/// How new simulated iPads are made.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// PEM trust anchor for TLS (and for the profile signature) before the profile is installed. If `None`,
    /// trust on first use: the server certificate is accepted for the profile download only, then the root
    /// from the profile's `com.apple.security.root` payload is pinned (after the profile signature checks
    /// out against that very root).
    pub ca_pem: Option<Vec<u8>>,
    /// Apple model identifier, e.g. `iPad13,18`.
    pub model: String,
    /// e.g. `18.1`.
    pub os_version: String,
    /// e.g. `22B83`.
    pub build_version: String,
}

impl Default for SimConfig {
    /// A 10th-generation Wi-Fi iPad on iPadOS 18.1.
    fn default() -> Self {
        SimConfig {
            ca_pem: None,
            model: "iPad13,18".to_owned(),
            os_version: "18.1".to_owned(),
            build_version: "22B83".to_owned(),
        }
    }
}

/// Why a simulated device could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("http request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("server answered {what} with status {status}: {body}")]
    Status {
        what: &'static str,
        status: u16,
        body: String,
    },
    #[error("unexpected content type {content_type:?} for {what}")]
    ContentType {
        what: &'static str,
        content_type: String,
    },
    #[error("protocol error: {0}")]
    Protocol(#[from] orchard_protocol::ProtocolError),
    #[error("pki error: {0}")]
    Pki(#[from] orchard_pki::PkiError),
    #[error("crypto error: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
    #[error("enrollment profile rejected: {0}")]
    Profile(String),
    #[error("scep failed: {0}")]
    Scep(String),
    #[error("device is not enrolled")]
    NotEnrolled,
    #[error("tls configuration: {0}")]
    Tls(String),
    #[error("bad command from server: {0}")]
    BadCommand(String),
    #[error("command session did not end after {0} commands")]
    SessionTooLong(usize),
    #[error("state file {path}: {reason}")]
    StateFile { path: String, reason: String },
    #[error("{failed} of {total} devices failed, first: {first}")]
    Fleet {
        failed: usize,
        total: usize,
        first: String,
    },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("benchmark: {0}")]
    Bench(String),
    #[error("device assignment: {0}")]
    Dep(#[from] orchard_dep::DepError),
    #[error("the device has no apple device identity to sign its machineinfo with")]
    NoAppleIdentity,
    /// The enrollment server answered 403 `com.apple.softwareupdate.required`: the device must update to
    /// `os_version` before it may enroll (see [`SimDevice::install_os_update`]).
    #[error("the server requires a software update to {os_version} before enrollment")]
    SoftwareUpdateRequired {
        os_version: String,
        build_version: Option<String>,
    },
    #[error("the ade profile {profile_uuid} has no enrollment url (web enrollment: {web_url:?})")]
    NoEnrollmentUrl {
        profile_uuid: String,
        web_url: Option<String>,
    },
}
