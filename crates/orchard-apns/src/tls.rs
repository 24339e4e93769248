//! rustls configuration with the `ring` provider passed explicitly (STACK.md pitfall 2), and a probe that keeps
//! the TLS reason of a failed connection, which HTTP/2 would otherwise flatten into "connection error".

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{ApnsError, PushCertificate, TrustRoots};

/// HTTP/2 over TLS is negotiated with ALPN `h2`; APNs speaks nothing else.
pub(crate) const ALPN_H2: &[u8] = b"h2";

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Leaf + intermediates and the key in the forms rustls takes.
pub(crate) fn rustls_identity(
    identity: &orchard_pki::Identity,
    chain_der: Vec<Vec<u8>>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ApnsError> {
    let key = identity
        .private_key()
        .private_key_to_pkcs8()
        .map_err(|e| ApnsError::InvalidCertificate(format!("private key: {e}")))?;
    let chain = chain_der.into_iter().map(CertificateDer::from).collect();
    Ok((chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key))))
}

pub(crate) fn root_store(roots: &TrustRoots) -> Result<RootCertStore, ApnsError> {
    let mut store = RootCertStore::empty();
    match roots {
        TrustRoots::Public => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        TrustRoots::Custom(ders) => {
            for der in ders {
                store
                    .add(CertificateDer::from(der.clone()))
                    .map_err(|e| ApnsError::Config(format!("trust root: {e}")))?;
            }
        }
    }
    Ok(store)
}

/// The client side: APNs' server certificate checked against `roots`, the push certificate as client identity.
pub(crate) fn client_config(
    certificate: &PushCertificate,
    roots: &TrustRoots,
) -> Result<ClientConfig, ApnsError> {
    let (chain, key) = rustls_identity(certificate.identity(), certificate.chain_der())?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ApnsError::Config(format!("tls versions: {e}")))?
        .with_root_certificates(root_store(roots)?)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            ApnsError::InvalidCertificate(format!("unusable as tls client identity: {e}"))
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// The first TLS-layer error seen on one connection, shared with whoever watches that connection.
pub(crate) type TlsErrorSlot = Arc<Mutex<Option<String>>>;

/// A pass-through stream that records the first `rustls::Error` surfacing as an io error. With TLS 1.3 the
/// server judges our client certificate after our handshake is done, so a refusal arrives as an alert on the
/// first read, inside HTTP/2, which keeps only the text of io errors.
pub(crate) struct TlsErrorProbe<S> {
    inner: S,
    seen: TlsErrorSlot,
}

impl<S> TlsErrorProbe<S> {
    pub(crate) fn new(inner: S, seen: TlsErrorSlot) -> Self {
        Self { inner, seen }
    }

    fn record(&self, error: &io::Error) {
        if let Some(tls) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.is_none() {
                *seen = Some(tls.to_string());
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TlsErrorProbe<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Err(e)) = &result {
            self.record(e);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TlsErrorProbe<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Err(e)) = &result {
            self.record(e);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The rustls error inside an io error, if that is what it is.
pub(crate) fn tls_error_of(error: &io::Error) -> Option<String> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map(|e| e.to_string())
}
