//! Apple's Device Assignment service (ADE / DEP, reached through Apple School Manager): the server-token life
//! cycle, OAuth 1.0a sessions, a typed client (account, device fetch and sync, ADE profiles, device details,
//! Activation Lock), verification of the CMS-signed MachineInfo a device posts during Setup Assistant, the
//! software-update-required answer, and Activation Lock bypass codes. With feature `fake`, a local DEP server
//! that tests, simulators and benchmarks talk to over real TLS.
//!
//! No database code lives here: sync progress goes to a [`sync::DeviceSink`] the caller implements, so the
//! caller stores the records and then the cursor after every page.

pub mod activation_service;
pub mod bypass;
pub mod client;
#[cfg(feature = "fake")]
pub mod fake;
pub mod machine_info;
pub mod oauth;
pub mod profile;
pub mod sync;
pub mod token;
pub mod types;

pub use bypass::BypassCode;
pub use client::{DepClient, DepConfig, NonceSource, RandomNonce, RetryPolicy, APPLE_DEP_BASE_URL};
pub use machine_info::{
    MachineInfo, MachineInfoVerifier, SoftwareUpdateRequired, VerifiedMachineInfo,
};
pub use profile::{AdeProfile, SkipSetupItem, SKIP_SETUP_KEYS};
pub use sync::{DevicePage, DeviceSink, SyncOutcome, SyncPhase};
pub use token::{decrypt_server_token, generate_token_keypair, ServerToken};
pub use types::{
    Account, ActivationLockRequest, ActivationLockResponse, ActivationLockStatus, AssignStatus,
    AssignmentReport, DefinedProfile, DepCursor, DeviceDetails, DeviceRecord, OpType,
    ProfileStatus, ProfileUuid,
};

/// What a [`sync::DeviceSink`] may fail with (usually a database error of the caller's).
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong in this crate. Messages are lowercase; the ones an operator sees say what to do.
#[derive(Debug, thiserror::Error)]
pub enum DepError {
    #[error("invalid server token: {0}")]
    InvalidToken(String),
    #[error("the server token cannot be decrypted with this key pair: {0}")]
    TokenKeyMismatch(String),
    #[error(
        "the server token expired at {expired_at}: download a new token for this mdm server from apple school \
         manager and upload it again"
    )]
    TokenExpired { expired_at: String },
    #[error("crypto failure: {0}")]
    Crypto(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot reach the device assignment service: {0}")]
    Transport(String),
    #[error(
        "apple requires new terms and conditions to be accepted (T_C_NOT_SIGNED): an administrator must sign in \
         to apple school manager (or apple business manager) and accept the new terms, then sync again"
    )]
    TermsNotSigned,
    #[error("access denied by the device assignment service: {0}")]
    AccessDenied(String),
    #[error("the device assignment service rejected our credentials: {0}")]
    Unauthorized(String),
    #[error("the sync cursor expired (older than 7 days): a full fetch is needed")]
    ExpiredCursor,
    #[error("the fetch cursor is exhausted: continue with sync")]
    ExhaustedCursor,
    #[error("the sync cursor is invalid")]
    InvalidCursor,
    #[error("sync needs a cursor from an earlier fetch")]
    CursorRequired,
    #[error("rate limited by the device assignment service: retry after {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    #[error(
        "the device assignment service kept failing: {attempts} attempts, last answer {last_status}"
    )]
    RetriesExhausted { attempts: u32, last_status: String },
    #[error("the device assignment service answered {status}: {code}")]
    Api { status: u16, code: String },
    #[error("unexpected answer from the device assignment service: {0}")]
    Malformed(String),
    #[error("invalid ade profile: {0}")]
    InvalidProfile(String),
    #[error("invalid machineinfo: {0}")]
    MachineInfo(String),
    #[error("machineinfo signature refused: {0}")]
    MachineInfoSignature(String),
    #[error("invalid activation lock bypass code: {0}")]
    InvalidBypassCode(String),
    #[error("device sink failed: {0}")]
    Sink(#[source] SinkError),
}

impl From<openssl::error::ErrorStack> for DepError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        DepError::Crypto(e.to_string())
    }
}
