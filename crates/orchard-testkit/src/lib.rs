//! Orchard's test kit (dev-only): boots the real server on a fresh SQLite or PostgreSQL database, with
//! simulated iPads, API tokens of each role and the local stand-ins for Apple's services. Every test that needs
//! a database, an `Orchard` or a running server gets it here, so each is set up one way.
//!
//! - [`database`]: a fresh database per test (SQLite in a temp dir, or a PostgreSQL database made from
//!   `ORCHARD_TEST_POSTGRES_URL` and dropped afterwards), and [`backend_tests!`], which runs one scenario on both.
//! - [`postgres_cluster`]: a PostgreSQL cluster of one test's own, for tests that crash or restart the server.
//! - [`service`] (feature `app`): an `Orchard` in-process on such a database, with PKI made in memory.
//! - [`server`] (feature `app`): the real `orchard` binary on 127.0.0.1:0, its API, its database-level commands
//!   (tokens of each role) and simulated iPads enrolled through it.
//! - [`apple`] (feature `app`): Apple's push CA with a local APNs server, the activation service and the DEP
//!   service, each with the flags that point the binary at it.
//! - [`balancer`] (feature `app`): a TCP load balancer in front of several nodes, skipping dead ones.
//! - [`webhooks`] (feature `app`): a webhook receiver that records requests and answers scripted statuses.
//! - [`oidc`] (feature `app`): the university's OpenID Connect provider, a real one in a node process.

// A test kit's failure is the test's failure: stopping with a clear message is exactly what it should do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod database;
pub mod postgres_cluster;

#[cfg(feature = "app")]
pub mod apple;
#[cfg(feature = "app")]
pub mod balancer;
#[cfg(feature = "app")]
pub mod oidc;
#[cfg(feature = "app")]
pub mod server;
#[cfg(feature = "app")]
pub mod service;
#[cfg(feature = "app")]
pub mod webhooks;

pub use database::{with_database, with_store, TestDatabase};
pub use orchard_store::Backend;

#[doc(hidden)]
pub use anyhow;

/// rustls needs one process-wide crypto provider (it panics when it cannot pick one): the kit's clients and
/// servers, and Orchard's, use `ring`.
#[cfg(feature = "app")]
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A TLS client as a device's: trusts only the roots in `ca_pem` (the server CA a profile installs), speaks
/// HTTP/1.1, keeps session tickets (rustls' default in-memory store) so a second connection resumes.
#[cfg(feature = "app")]
pub fn device_tls_config(ca_pem: &[u8]) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in openssl::x509::X509::stack_from_pem(ca_pem)? {
        roots.add(rustls::pki_types::CertificateDer::from(cert.to_der()?))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(std::sync::Arc::new(config))
}

/// What a scenario of [`backend_tests!`] may return: nothing (it panics when it fails) or a `Result`.
pub trait ScenarioOutcome {
    fn into_result(self) -> anyhow::Result<()>;
}

impl ScenarioOutcome for () {
    fn into_result(self) -> anyhow::Result<()> {
        Ok(())
    }
}

impl<E: Into<anyhow::Error>> ScenarioOutcome for Result<(), E> {
    fn into_result(self) -> anyhow::Result<()> {
        self.map_err(Into::into)
    }
}

/// Generates one test module per scenario with a `sqlite` and a `postgres` test, so every scenario runs on both
/// backends. A scenario is `async fn(Backend) -> T` in the calling module, where `T` is `()` or a `Result`
/// (whatever a test may return). The calling crate needs `tokio` (with `macros` and `rt-multi-thread`).
///
/// ```ignore
/// orchard_testkit::backend_tests! {
///     enrollment => scenario;
///     audit_and_usage => audit_scenario [workers = 4];
/// }
/// ```
/// gives the tests `enrollment::sqlite`, `enrollment::postgres`, `audit_and_usage::sqlite` …
#[macro_export]
macro_rules! backend_tests {
    ($($(#[$meta:meta])* $name:ident => $scenario:ident $([workers = $workers:literal])?;)*) => {
        $(
            $crate::backend_tests!(@one $(#[$meta])* $name, $scenario, [$($workers)? 2]);
        )*
    };
    (@one $(#[$meta:meta])* $name:ident, $scenario:ident, [$workers:literal $($default:literal)?]) => {
        $(#[$meta])*
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = $workers)]
            async fn sqlite() -> $crate::anyhow::Result<()> {
                $crate::ScenarioOutcome::into_result(super::$scenario($crate::Backend::Sqlite).await)
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = $workers)]
            async fn postgres() -> $crate::anyhow::Result<()> {
                $crate::ScenarioOutcome::into_result(super::$scenario($crate::Backend::Postgres).await)
            }
        }
    };
}
