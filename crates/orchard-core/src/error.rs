//! The core's one error type. Each variant says which surface answer it deserves; the server maps them.

use orchard_store::StoreError;

/// Why a device request was refused. The server turns each into a status that is never 401 (a 401 makes an
/// Apple device remove its MDM profile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRejection {
    /// The body is not a well-formed check-in or report plist (400).
    MalformedBody(String),
    /// The Mdm-Signature header is missing or not a CMS signature over the body (400).
    BadSignature(String),
    /// The signer certificate was not issued by us, is not one we issued, or is outside its validity (403).
    UntrustedIdentity(String),
    /// The certificate belongs to another UDID than the message names (403).
    IdentityMismatch,
    /// The message names a topic other than ours (400).
    WrongTopic,
    /// We do not know this device or it is not enrolled (403 with `com.apple.unrecognized.device`).
    UnrecognizedDevice,
    /// A check-in message we understand but do not support (400).
    Unsupported(String),
}

impl DeviceRejection {
    /// A short reason for the log (never includes raw bodies).
    pub fn reason(&self) -> String {
        match self {
            DeviceRejection::MalformedBody(r) => format!("malformed body: {r}"),
            DeviceRejection::BadSignature(r) => format!("bad mdm-signature: {r}"),
            DeviceRejection::UntrustedIdentity(r) => format!("untrusted identity: {r}"),
            DeviceRejection::IdentityMismatch => "certificate belongs to another device".into(),
            DeviceRejection::WrongTopic => "topic does not match ours".into(),
            DeviceRejection::UnrecognizedDevice => "unknown or unenrolled device".into(),
            DeviceRejection::Unsupported(r) => format!("unsupported: {r}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("device rejected: {}", .0.reason())]
    Device(DeviceRejection),
    #[error("not found")]
    NotFound,
    /// The thing exists but can no longer be used (an expired or used-up enrollment link).
    #[error("gone: {0}")]
    Gone(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// Well-formed input that breaks the rules of its content (a profile payload against Apple's schema):
    /// every problem, each naming where it is.
    #[error("{} validation errors, first: {}", .0.len(), .0.first().map(|e| e.to_string()).unwrap_or_default())]
    Unprocessable(Vec<crate::desired::profile_schema::ValidationError>),
    /// A dangerous action without (or with a wrong) confirmation; the message says what to confirm.
    #[error("confirmation required: {0}")]
    ConfirmationRequired(String),
    #[error("unauthenticated")]
    Unauthenticated,
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("storage error: {0}")]
    Store(StoreError),
    #[error("pki error: {0}")]
    Pki(#[from] orchard_pki::PkiError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => CoreError::Conflict(m),
            StoreError::NotFound => CoreError::NotFound,
            other => CoreError::Store(other),
        }
    }
}

impl From<DeviceRejection> for CoreError {
    fn from(r: DeviceRejection) -> Self {
        CoreError::Device(r)
    }
}
