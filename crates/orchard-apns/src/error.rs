//! The one error type of this crate.

use std::time::Duration;

/// Everything that can go wrong outside of an answer from APNs; messages are lowercase and say what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApnsError {
    /// The file is not a usable MDM push certificate (unparsable, no key, key mismatch, no MDM topic).
    #[error("invalid push certificate: {0}")]
    InvalidCertificate(String),
    /// The PKCS#12 file could not be opened (wrong password, damaged, unsupported encryption).
    #[error("cannot open the pkcs#12 file: {0}")]
    Pkcs12(String),
    #[error(
        "the push certificate for topic {topic} expired at {not_after}: pushes are stopped; renew it in the apple \
         push certificates portal with the same apple account so the topic stays the same"
    )]
    CertificateExpired { topic: String, not_after: String },
    #[error("the push certificate for topic {topic} is not valid before {not_before}")]
    CertificateNotYetValid { topic: String, not_before: String },
    #[error("invalid device token: {0}")]
    InvalidDeviceToken(String),
    #[error("invalid apns configuration: {0}")]
    Config(String),
    #[error("no tokio runtime: the apns client must be created from inside one")]
    NoRuntime,
    /// The TLS layer failed: APNs (or the local server) refused our certificate, or we refused theirs.
    #[error("tls failure talking to apns: {0}")]
    Tls(String),
    #[error("connection to apns failed: {0}")]
    Connection(String),
    #[error("apns did not answer within {0:?}")]
    Timeout(Duration),
    #[error("io failure: {0}")]
    Io(String),
}
