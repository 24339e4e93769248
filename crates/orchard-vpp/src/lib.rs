//! Apple's Apps and Books for Organizations API (the "VPP" API, version 2): content tokens, a typed async client
//! (service and client configuration, assets, associate / disassociate / revoke by serial, assignments, event
//! status) with Apple's error numbers as typed errors and 429/503 `Retry-After` honoured within bounds. With
//! feature `fake`, a local Apps and Books server that tests, simulators and benchmarks reach over real TLS.
//!
//! No database code lives here: the caller stores what the client reads.

pub mod client;
#[cfg(feature = "fake")]
pub mod fake;
pub mod token;
pub mod types;

pub use client::{RetryPolicy, VppClient, VppConfig, APPLE_VPP_BASE_URL};
pub use token::ContentToken;
pub use types::{
    AdamId, ApiError, Asset, AssetsPage, Assignment, AssignmentFilter, AssignmentsPage,
    ClientConfig, EventId, EventKind, EventStatus, EventStatusKind, Limits, MdmInfo, PricingParam,
    ServiceConfig, SubmittedEvent,
};

/// Apple's error numbers that Orchard acts on (the full list is in service config's `errorCodes`).
pub mod error_numbers {
    pub const MISSING_ARGUMENT: i64 = 9600;
    pub const LOGIN_REQUIRED: i64 = 9601;
    pub const INVALID_ARGUMENT: i64 = 9602;
    pub const INTERNAL_ERROR: i64 = 9603;
    pub const RESULT_NOT_FOUND: i64 = 9604;
    pub const LICENSE_IRREVOCABLE: i64 = 9607;
    /// Also what an associate answers when an asset has no licence left to give.
    pub const LICENSE_NOT_FOUND: i64 = 9610;
    pub const LICENSE_ALREADY_ASSIGNED: i64 = 9616;
    pub const LICENSE_NOT_ASSOCIATED: i64 = 9619;
    pub const TOKEN_EXPIRED: i64 = 9621;
    pub const INVALID_TOKEN: i64 = 9622;
    pub const TOKEN_REVOKED: i64 = 9625;
    pub const INELIGIBLE_DEVICE_ASSIGNMENT: i64 = 9628;
    pub const TOO_MANY_ALREADY_ASSIGNED: i64 = 9630;
}

/// Everything that can go wrong in this crate. Messages are lowercase; the ones an operator sees say what to do.
#[derive(Debug, thiserror::Error)]
pub enum VppError {
    #[error("invalid content token: {0}")]
    InvalidContentToken(String),
    #[error(
        "the content token expired{}: download a new token for this location from apple school manager \
         (settings > apps and books) and upload it again",
        .expired_at.as_deref().map(|t| format!(" at {t}")).unwrap_or_default()
    )]
    TokenExpired { expired_at: Option<String> },
    #[error(
        "the content token was revoked (9625): someone downloaded a newer token for this location; upload that one"
    )]
    TokenRevoked,
    #[error("apple refused the content token ({number}: {message}): upload a current token for this location")]
    InvalidToken { number: i64, message: String },
    #[error("apple answered error {number}: {message}")]
    Apple { number: i64, message: String },
    #[error("rate limited by apps and books; retry after {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    #[error("apps and books kept failing after {attempts} attempts (last: {last_status})")]
    RetriesExhausted { attempts: u32, last_status: String },
    #[error("event {event_id} still pending after {polls} status polls")]
    EventPending { event_id: String, polls: u32 },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot reach apps and books: {0}")]
    Transport(String),
    #[error("malformed answer from apps and books: {0}")]
    Malformed(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl VppError {
    /// Maps one of Apple's error bodies to the typed error.
    pub fn from_api(error: &ApiError) -> Self {
        use error_numbers::*;
        let message = error.error_message.clone().unwrap_or_default();
        match error.error_number {
            TOKEN_EXPIRED => VppError::TokenExpired { expired_at: None },
            TOKEN_REVOKED => VppError::TokenRevoked,
            LOGIN_REQUIRED | INVALID_TOKEN => VppError::InvalidToken {
                number: error.error_number,
                message,
            },
            number => VppError::Apple { number, message },
        }
    }

    /// True when the token itself is no good (expired, revoked, refused): nothing works until a new one comes.
    pub fn is_token_problem(&self) -> bool {
        matches!(
            self,
            VppError::TokenExpired { .. } | VppError::TokenRevoked | VppError::InvalidToken { .. }
        )
    }
}
