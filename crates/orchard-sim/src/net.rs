//! HTTP clients for simulated devices: rustls with only the roots a device trusts, HTTP/1.1 keep-alive.
//!
//! One client holds a connection pool, so devices that trust the same roots share one client (a fleet of
//! a thousand iPads then needs a handful of TLS sessions per server, not a thousand clients).

use std::time::Duration;

use crate::SimError;

/// What a client trusts and how it connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// PEM bundle of trusted roots; nothing else is trusted (no built-in web roots: a device trusts what its
    /// profile installed).
    pub ca_pem: Option<Vec<u8>>,
    /// Accept any server certificate. Only for the trust-on-first-use download of the enrollment profile,
    /// whose signature is then checked against the root inside it.
    pub danger_accept_any_server_cert: bool,
    /// Reuse connections (keep-alive). `false` opens a new TCP+TLS connection for every request.
    pub keep_alive: bool,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            ca_pem: None,
            danger_accept_any_server_cert: false,
            keep_alive: true,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Installs rustls' `ring` provider as the process default (STACK.md pitfall 2: if two providers are ever
/// linked, rustls refuses to pick one). Idempotent; later calls are no-ops.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds a reqwest client that speaks HTTP/1.1 over rustls and trusts exactly `options.ca_pem`.
pub fn build_client(options: &ClientOptions) -> Result<reqwest::Client, SimError> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .http1_only()
        .tcp_nodelay(true)
        .user_agent("MDM/1.0")
        .timeout(options.request_timeout)
        .connect_timeout(options.connect_timeout)
        .danger_accept_invalid_certs(options.danger_accept_any_server_cert);
    if options.keep_alive {
        builder = builder
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(90));
    } else {
        // An empty pool alone is not enough: hyper hands a finished connection straight to a request that
        // is waiting for one. `Connection: close` makes both ends drop it after every response.
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::CONNECTION,
            reqwest::header::HeaderValue::from_static("close"),
        );
        builder = builder.pool_max_idle_per_host(0).default_headers(headers);
    }
    if let Some(pem) = &options.ca_pem {
        let roots = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| SimError::Tls(format!("unreadable ca pem: {e}")))?;
        if roots.is_empty() {
            return Err(SimError::Tls("ca pem holds no certificate".into()));
        }
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
    }
    builder.build().map_err(SimError::Http)
}

/// A TLS configuration for devices that each open their own connection per session, as iPads do: it trusts
/// `ca_pem` and keeps no session tickets, so every session is a full handshake (what a fleet costs a freshly
/// started server, whose ticket keys are new). Built once and shared; see [`session_client`].
pub fn session_tls_config(ca_pem: &[u8]) -> Result<rustls::ClientConfig, SimError> {
    install_crypto_provider();
    let tls = |e: &dyn std::fmt::Display| SimError::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for cert in openssl::x509::X509::stack_from_pem(ca_pem).map_err(|e| tls(&e))? {
        roots
            .add(rustls::pki_types::CertificateDer::from(
                cert.to_der().map_err(|e| tls(&e))?,
            ))
            .map_err(|e| tls(&e))?;
    }
    if roots.is_empty() {
        return Err(SimError::Tls("ca pem holds no certificate".into()));
    }
    // iPadOS offers TLS_AES_128_GCM_SHA256 first, where rustls' default order starts with AES-256/SHA-384: a
    // server that follows the client's order then negotiates what it would with an iPad.
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let provider = std::sync::Arc::new(provider);
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client of its own for one device session over `tls` (from [`session_tls_config`]): its pool holds only
/// this session's connection, which closes when the client is dropped.
pub fn session_client(
    tls: &rustls::ClientConfig,
    options: &ClientOptions,
) -> Result<reqwest::Client, SimError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .http1_only()
        .tcp_nodelay(true)
        .user_agent("MDM/1.0")
        .timeout(options.request_timeout)
        .connect_timeout(options.connect_timeout)
        .build()
        .map_err(SimError::Http)
}

/// A client that trusts no root: every HTTPS request fails until roots are known. Used before enrollment
/// when no anchor was configured. Building it only fails if the TLS backend cannot start at all; then
/// reqwest's default client (web roots, which never vouch for an Orchard server) is the harmless fallback.
pub(crate) fn untrusting_client() -> reqwest::Client {
    build_client(&ClientOptions::default()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_build_with_and_without_roots() {
        assert!(build_client(&ClientOptions::default()).is_ok());
        let garbage = ClientOptions {
            ca_pem: Some(b"not a pem".to_vec()),
            ..ClientOptions::default()
        };
        assert!(matches!(build_client(&garbage), Err(SimError::Tls(_))));
    }

    #[test]
    fn device_sessions_offer_the_suites_in_ipados_order() {
        let ca = orchard_pki::CertificateAuthority::generate(
            "Sim Test CA",
            orchard_types::UnixTime(1_764_460_800),
            30,
        )
        .unwrap();
        let config = session_tls_config(&ca.cert_pem()).unwrap();
        let offered: Vec<rustls::CipherSuite> = config
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            offered[..3],
            [
                rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
                rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
                rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            ]
        );
    }
}
