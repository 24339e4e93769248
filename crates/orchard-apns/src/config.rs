//! How the client reaches APNs: base URL, trust roots, connection count, expiration, retries and backoff.

use std::time::Duration;

use openssl::x509::X509;

use crate::ApnsError;

/// Apple's production push service.
pub const PRODUCTION_URL: &str = "https://api.push.apple.com";
/// Apple's development push service (only for profiles with `UseDevelopmentAPNS`).
pub const SANDBOX_URL: &str = "https://api.sandbox.push.apple.com";

/// Which certificate authorities the client trusts for the APNs server certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustRoots {
    /// Mozilla's root programme, bundled at build time (Apple's APNs servers chain to USERTrust RSA in it).
    Public,
    /// Only these roots (DER): a local APNs server in tests, or a pinned authority.
    Custom(Vec<Vec<u8>>),
}

impl TrustRoots {
    /// Custom roots from one or more PEM certificates.
    pub fn from_pem(pem: &[u8]) -> Result<Self, ApnsError> {
        let certs = X509::stack_from_pem(pem)
            .map_err(|e| ApnsError::Config(format!("trust roots pem: {e}")))?;
        if certs.is_empty() {
            return Err(ApnsError::Config(
                "trust roots pem holds no certificate".into(),
            ));
        }
        let der = certs
            .iter()
            .map(|c| c.to_der())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApnsError::Config(format!("trust roots: {e}")))?;
        Ok(Self::Custom(der))
    }
}

/// Exponential backoff: `initial`, doubling up to `max`, with up to 25 % random jitter subtracted so that
/// many waiters do not retry in lockstep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before retry number `attempt` (1 = first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let full = self.initial.saturating_mul(1 << exponent).min(self.max);
        let jitter = rand::random::<f64>() * 0.25;
        full.mul_f64(1.0 - jitter)
    }
}

/// How one push is retried inside [`crate::ApnsClient::push`] before an outcome is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (at least 1).
    pub max_attempts: u32,
    /// Waits between attempts after 429, 5xx, timeouts and connection failures.
    pub backoff: Backoff,
    /// A `Retry-After` longer than this is not waited out inside `push`: the outcome is
    /// [`crate::PushOutcome::Retry`] and the caller schedules the push again.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            backoff: Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(10),
            },
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// Everything the client needs besides the certificate and the clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApnsConfig {
    /// `https://host[:port]`, no path: [`PRODUCTION_URL`], [`SANDBOX_URL`] or a local server.
    pub base_url: String,
    pub trust_roots: TrustRoots,
    /// Long-lived HTTP/2 connections (each carries up to the server's stream limit, 1,000 at Apple).
    pub connections: usize,
    /// `apns-expiration` = now + this: APNs keeps the push this long for a device that is offline.
    pub expiration_ttl: Duration,
    /// `apns-priority`: 10 (immediately) or 5 (power-friendly).
    pub priority: u8,
    /// One request, from sending to the full answer.
    pub request_timeout: Duration,
    /// TCP + TLS + HTTP/2 handshake of one connection; also how long a push waits for a connection.
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
    /// Between reconnection attempts after a connection failed or lived only briefly.
    pub reconnect: Backoff,
    /// HTTP/2 PING interval on every connection, idle or not: keeps NAT state alive and finds dead peers.
    pub keep_alive_interval: Option<Duration>,
}

impl ApnsConfig {
    /// Apple's production service with the public roots.
    pub fn production() -> Self {
        Self::with_base_url(PRODUCTION_URL, TrustRoots::Public)
    }

    /// Apple's sandbox (development) service.
    pub fn sandbox() -> Self {
        Self::with_base_url(SANDBOX_URL, TrustRoots::Public)
    }

    /// Any server with the given roots (a local APNs server in tests); other settings are the defaults.
    pub fn with_base_url(base_url: &str, trust_roots: TrustRoots) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            trust_roots,
            connections: 2,
            expiration_ttl: Duration::from_secs(7 * 86_400),
            priority: 10,
            request_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            reconnect: Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(60),
            },
            keep_alive_interval: Some(Duration::from_secs(60)),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ApnsError> {
        if self.connections == 0 || self.connections > 64 {
            return Err(ApnsError::Config(
                "connections must be between 1 and 64".into(),
            ));
        }
        if self.priority != 5 && self.priority != 10 {
            return Err(ApnsError::Config("priority must be 5 or 10".into()));
        }
        if self.retry.max_attempts == 0 {
            return Err(ApnsError::Config(
                "retry.max_attempts must be at least 1".into(),
            ));
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(ApnsError::Config("timeouts must not be zero".into()));
        }
        if self.reconnect.initial.is_zero() {
            // A zero reconnect backoff could spin on a server that accepts and drops at once.
            return Err(ApnsError::Config(
                "reconnect.initial must not be zero".into(),
            ));
        }
        Ok(())
    }
}

impl Default for ApnsConfig {
    fn default() -> Self {
        Self::production()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_max_with_bounded_jitter() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let first = backoff.delay(1);
            assert!(first <= Duration::from_millis(100) && first >= Duration::from_millis(75));
            let third = backoff.delay(3);
            assert!(third <= Duration::from_millis(400) && third >= Duration::from_millis(300));
            assert!(backoff.delay(50) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn validation() {
        assert!(ApnsConfig::production().validate().is_ok());
        let mut config = ApnsConfig::sandbox();
        config.connections = 0;
        assert!(config.validate().is_err());
        let mut config = ApnsConfig::sandbox();
        config.priority = 7;
        assert!(config.validate().is_err());
        assert!(TrustRoots::from_pem(b"nope").is_err());
    }
}
