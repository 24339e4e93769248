//! TLS serving: a small accept loop over tokio-rustls that hands each connection to hyper (HTTP/1.1 with
//! keep-alive and HTTP/2 by ALPN), within [`ConnectionLimits`] (handshake, header, body and idle timeouts and a
//! per-address connection cap). Owning the loop lets it pass the peer address (and later the peer certificate,
//! mTLS) to handlers.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Body as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// A rustls server config from PEM certificate chain and key, using the `ring` provider explicitly (two
/// providers in one binary make rustls panic otherwise: STACK.md pitfall 2).
pub fn tls_server_config(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<rustls::ServerConfig, String> {
    let certs = rustls_pemfile::certs(&mut &cert_chain_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls certificate: {e}"))?;
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| format!("tls key: {e}"))?
        .ok_or_else(|| "tls key: no private key found".to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls identity: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Stateless session tickets (keys rotated every 6 hours, tickets live 12): a returning iPad resumes its TLS
    // session without the certificate signature and chain check, whatever the number of devices (the default
    // session cache holds 256). Each node has its own keys, so a ticket from another node falls back to a full
    // handshake. No 0-RTT: early data could be replayed.
    cfg.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| format!("tls tickets: {e}"))?;
    Ok(cfg)
}

/// Abuse limits of the listener: how long a client may take for each part of a request, how long an idle
/// connection is kept, and how many connections one address may hold. Without them a slow client (headers
/// byte by byte, a body that never ends, or silence) holds a connection and its memory for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// TCP accepted → TLS handshake done.
    pub handshake_timeout: Duration,
    /// First byte of a request → all of its headers (HTTP/1.1; HTTP/2 frames are bounded by the idle timeout).
    pub header_read_timeout: Duration,
    /// Headers received → the whole body received.
    pub body_read_timeout: Duration,
    /// No byte in either direction and no request being answered: the connection is closed.
    pub idle_timeout: Duration,
    /// Connections one address may hold at once (0: no limit). A campus NAT puts many iPads behind one
    /// address, so the default is generous.
    pub max_connections_per_ip: usize,
    /// At shutdown, how long the requests being answered may take to finish before their connections are
    /// dropped (systemd's stop timeout is 90 s by default).
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_connections_per_ip: 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, within `limits`. Each request carries
/// [`ConnectInfo`] with the peer's address (for per-source limits such as sign-in throttling).
///
/// Shutdown is graceful: the listener closes (a load balancer sends new connections to other nodes), idle
/// connections close, and the requests being answered finish (within `limits.shutdown_grace`) before this
/// returns, so a device's report in flight is stored and answered, not cut off.
/// When a request's wait began, for adaptive push pacing: for the first request of a connection, when its TCP
/// connection was accepted; for later ones, when the request arrived. An iPad woken by a push opens a
/// connection for its session, and a saturated node makes it wait in the queue for the TLS handshake, before
/// any request exists: measured from the request alone, a node drowning in handshakes looks idle to the pacer,
/// which then pushes faster still (S1 at 50,000 iPads: p50 100 s, 350 MiB). Only requests whose device
/// signature verifies feed the pacer, so connections nobody completes change nothing.
#[derive(Debug, Clone, Copy)]
pub struct RequestArrival(pub std::time::Instant);

pub async fn serve_tls(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let per_ip = PerIpConnections::default();
    // Every connection's task holds a clone of `open`: once all are gone, `all_closed` ends.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    let (stopping, stop_seen) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Refused before the handshake, so an address over its share costs us no crypto.
        // Counted like sign-in failures: IPv6 by its /64, which one host usually holds whole.
        let source = orchard_core::limits::source_key(peer.ip());
        let Some(slot) = per_ip.try_acquire(source, limits.max_connections_per_ip) else {
            tracing::debug!(%peer, "connection refused: too many connections from this address");
            drop(tcp);
            continue;
        };
        let accepted = std::time::Instant::now();
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let open = open.clone();
        let mut stop_seen = stop_seen.clone();
        tokio::spawn(async move {
            let _open = open;
            let _slot = slot;
            let tls =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "tls handshake timed out");
                        return;
                    }
                };
            let activity = Arc::new(Activity::new());
            let service_activity = activity.clone();
            let first_request = Arc::new(std::sync::atomic::AtomicBool::new(true));
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    let in_flight = service_activity.request_started();
                    let arrival = if first_request.swap(false, std::sync::atomic::Ordering::Relaxed)
                    {
                        accepted
                    } else {
                        std::time::Instant::now()
                    };
                    let mut req = req.map(|body| {
                        if body.is_end_stream() {
                            axum::body::Body::new(body)
                        } else {
                            axum::body::Body::new(DeadlineBody::new(body, limits.body_read_timeout))
                        }
                    });
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req.extensions_mut().insert(RequestArrival(arrival));
                    async move {
                        let answer = app.oneshot(req).await;
                        // The request is answered when its response body has been written (or dropped).
                        answer.map(|response| {
                            response.map(|body| {
                                axum::body::Body::new(AnsweringBody {
                                    inner: body,
                                    _in_flight: in_flight,
                                })
                            })
                        })
                    }
                });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(connection);
            tokio::select! {
                r = connection.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                _ = activity.idle_for(limits.idle_timeout) => {
                    // Say goodbye the protocol's way (HTTP/2 GOAWAY, TLS close_notify), so a client's pool
                    // learns the connection is gone instead of sending its next request into a dead socket;
                    // a client that does not take the hint is dropped after a short grace.
                    tracing::debug!(%peer, "closing idle connection");
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(limits.handshake_timeout, connection.as_mut()).await;
                }
                _ = async { drop(stop_seen.wait_for(|stop| *stop).await) } => {
                    // Shutdown: the request being answered (if any) finishes, then the connection closes.
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.as_mut().await;
                }
            }
        });
    }
    drop(listener);
    drop(open);
    let _ = stopping.send(true);
    if tokio::time::timeout(limits.shutdown_grace, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_seconds = limits.shutdown_grace.as_secs(),
            "requests still unanswered after the shutdown grace; their connections are dropped"
        );
    }
}

/// Open connections per address.
#[derive(Debug, Default, Clone)]
struct PerIpConnections(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection's place in [`PerIpConnections`]; given back when dropped.
struct ConnectionSlot {
    map: PerIpConnections,
    ip: IpAddr,
}

impl PerIpConnections {
    fn try_acquire(&self, ip: IpAddr, max: usize) -> Option<ConnectionSlot> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let open = map.entry(ip).or_insert(0);
        if max != 0 && *open >= max {
            if *open == 0 {
                map.remove(&ip);
            }
            return None;
        }
        *open += 1;
        Some(ConnectionSlot {
            map: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut map = self.map.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = map.get_mut(&self.ip) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// When a connection last began or finished answering a request, and how many it is answering now. Idleness is
/// measured in requests, not bytes: an HTTP/2 client sending PINGs or window updates, or an HTTP/1.1 client
/// trickling header bytes, is still idle.
struct Activity {
    started: tokio::time::Instant,
    last_boundary_millis: AtomicU64,
    in_flight: AtomicUsize,
}

/// A request being answered (until its response body is written); the connection is not idle meanwhile.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.mark_boundary();
    }
}

impl Activity {
    fn new() -> Self {
        Self {
            started: tokio::time::Instant::now(),
            last_boundary_millis: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn mark_boundary(&self) {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_boundary_millis.store(elapsed, Ordering::Release);
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.mark_boundary();
        InFlight(self.clone())
    }

    /// Resolves once the connection has answered no request for `limit`. A request being answered (a slow
    /// handler, a long download) is never cut off here; its body has its own deadline.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = Duration::from_millis(self.last_boundary_millis.load(Ordering::Acquire));
            let deadline = self.started + last + limit;
            if tokio::time::Instant::now() >= deadline {
                if self.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                // Still answering: look again a full period later.
                self.mark_boundary();
                continue;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A response body that keeps its request counted as being answered until it is written or dropped.
struct AnsweringBody {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for AnsweringBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that must arrive completely within a time from the request's start; after that it ends
/// with an error (the handler's extractor refuses the request and the connection is not reused).
struct DeadlineBody {
    inner: hyper::body::Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    fn new(inner: hyper::body::Incoming, within: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(within)),
        }
    }
}

/// Why a request body ended early.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("request body not received in time")]
    TimedOut,
    #[error(transparent)]
    Connection(#[from] hyper::Error),
}

impl hyper::body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BodyError::from)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyError::TimedOut)));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
