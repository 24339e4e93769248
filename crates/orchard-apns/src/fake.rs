//! A local APNs server (feature `fake`) for tests, the device simulator and benchmarks.
//!
//! It speaks HTTP/2 over TLS on 127.0.0.1 like Apple's service: it requires a client certificate chained to a
//! configured CA (Apple's role) and pushes whose `apns-topic` equals that certificate's UID, checks
//! `apns-push-type: mdm` and the `{"mdm":"…"}` body, records each push and hands it to subscribers so a simulated
//! iPad wakes on push instead of polling. Latency and errors (410, 429 + Retry-After, 5xx, dropped connections)
//! can be injected per token or for all tokens.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Name, X509};
use orchard_pki::{CertificateAuthority, Identity};
use orchard_types::{ApnsTopic, Clock, PushMagic, SystemClock, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::tls;
use crate::{ApnsConfig, ApnsError, DeviceToken, PushCertificate, TrustRoots};

/// Apple refuses MDM payloads above 4 KiB; ours are ~60 bytes.
const MAX_PAYLOAD_BYTES: usize = 4096;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pushes kept for lagging `subscribe()` receivers; older ones are skipped (`RecvError::Lagged`).
const BROADCAST_CAPACITY: usize = 16_384;

/// One push the server accepted (answered 200).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakePush {
    pub token: DeviceToken,
    pub topic: ApnsTopic,
    pub push_magic: PushMagic,
    pub received_at: UnixTime,
    /// The `apns-id` answered (the request's own, or a fresh UUID).
    pub apns_id: String,
    pub expiration: Option<i64>,
    pub priority: Option<u8>,
}

/// An error the server answers instead of delivering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 410 Unregistered, once per injection (see [`FakeApnsServer::mark_unregistered`] for a dead token).
    Unregistered,
    /// 429 TooManyRequests, with `Retry-After: <seconds>` when given.
    TooManyRequests { retry_after_seconds: Option<u64> },
    /// 500 InternalServerError.
    InternalServerError,
    /// 503 ServiceUnavailable.
    ServiceUnavailable,
    /// Close the TCP connection without answering: every stream on it fails.
    DropConnection,
    /// Any status and reason.
    Status { status: u16, reason: String },
}

/// Which pushes a fault or a latency applies to. Token rules win over the global ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultScope {
    AllTokens,
    Token(DeviceToken),
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FakeStats {
    /// TLS handshakes that succeeded (a reconnecting client adds one per connection).
    pub connections: u64,
    /// TLS handshakes refused or failed (e.g. a client certificate from another CA).
    pub tls_failures: u64,
    /// Connections closed by an injected [`Fault::DropConnection`].
    pub dropped_connections: u64,
    pub requests: u64,
    pub delivered: u64,
    /// Requests answered with an error status (injected or from a failed check).
    pub rejected: u64,
}

/// How to run the server.
#[derive(Clone)]
pub struct FakeApnsConfig {
    /// PEM of the CA(s) a client certificate must chain to: the stand-in for Apple's push CA.
    pub client_ca_pem: Vec<u8>,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`; Apple allows 1,000 for certificate connections.
    pub max_concurrent_streams: u32,
    /// Pushes kept for [`FakeApnsServer::pushes`]; counting and subscribers go on past it.
    pub record_limit: usize,
    /// Source of `received_at`.
    pub clock: Arc<dyn Clock>,
}

impl FakeApnsConfig {
    pub fn new(client_ca_pem: &[u8]) -> Self {
        Self {
            client_ca_pem: client_ca_pem.to_vec(),
            max_concurrent_streams: 1000,
            record_limit: 1_000_000,
            clock: Arc::new(SystemClock),
        }
    }
}

/// The running server; dropping it (or [`FakeApnsServer::shutdown`]) stops it and closes every connection.
pub struct FakeApnsServer {
    state: Arc<State>,
    url: String,
    address: SocketAddr,
    root_pem: Vec<u8>,
    root_der: Vec<u8>,
    _shutdown: watch::Sender<()>,
    accept_task: JoinHandle<()>,
}

struct State {
    record_limit: usize,
    clock: Arc<dyn Clock>,
    /// False while no fault, latency or unregistered token is configured: the fast path skips the lock.
    rules_active: AtomicBool,
    rules: Mutex<Rules>,
    pushes: Mutex<Vec<FakePush>>,
    broadcast: broadcast::Sender<FakePush>,
    token_subscribers_active: AtomicBool,
    token_subscribers: Mutex<HashMap<DeviceToken, mpsc::UnboundedSender<FakePush>>>,
    /// `apns-id`s are this random prefix plus a counter: unique without a random number per push.
    apns_id_prefix: u64,
    apns_id_counter: AtomicU64,
    connections: AtomicU64,
    tls_failures: AtomicU64,
    dropped_connections: AtomicU64,
    requests: AtomicU64,
    delivered: AtomicU64,
    rejected: AtomicU64,
}

#[derive(Default)]
struct Rules {
    /// Token → when it was unregistered (the 410 `timestamp`).
    unregistered: HashMap<DeviceToken, UnixTime>,
    global_faults: VecDeque<ArmedFault>,
    token_faults: HashMap<DeviceToken, VecDeque<ArmedFault>>,
    global_latency: Option<Duration>,
    token_latency: HashMap<DeviceToken, Duration>,
}

struct ArmedFault {
    fault: Fault,
    /// `None`: until cleared.
    remaining: Option<u32>,
}

/// Per connection: the topic of the client certificate and the switch of a dropped connection.
struct ConnectionContext {
    topic: Option<String>,
    drop: Notify,
}

/// An answer other than 200.
struct Rejection {
    status: StatusCode,
    reason: String,
    retry_after_seconds: Option<u64>,
    timestamp_ms: Option<i64>,
}

impl Rejection {
    fn new(status: StatusCode, reason: &str) -> Self {
        Self {
            status,
            reason: reason.to_owned(),
            retry_after_seconds: None,
            timestamp_ms: None,
        }
    }
}

/// What the handler should do with a checked request.
enum Verdict {
    Deliver(FakePush),
    Reject(Rejection),
    DropConnection,
}

impl FakeApnsServer {
    /// Starts a server on 127.0.0.1 with a fresh TLS root of its own, trusting client certificates chained to
    /// `client_ca_pem`.
    pub async fn start(client_ca_pem: &[u8]) -> Result<Self, ApnsError> {
        Self::start_with(FakeApnsConfig::new(client_ca_pem)).await
    }

    pub async fn start_with(config: FakeApnsConfig) -> Result<Self, ApnsError> {
        // Certificate validity is checked by rustls against the real time, whatever the configured clock says.
        let now = SystemClock.now();
        let root = CertificateAuthority::generate("Orchard fake APNs root", now, 30)
            .map_err(|e| ApnsError::Io(format!("fake apns root: {e}")))?;
        let server_identity = root
            .issue_tls_server(
                &["localhost".to_owned()],
                &[Ipv4Addr::LOCALHOST.into()],
                now,
                30,
            )
            .map_err(|e| ApnsError::Io(format!("fake apns server certificate: {e}")))?;
        let acceptor = TlsAcceptor::from(Arc::new(server_tls_config(
            &server_identity,
            &config.client_ca_pem,
        )?));

        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| ApnsError::Io(format!("bind 127.0.0.1:0: {e}")))?;
        let address = listener
            .local_addr()
            .map_err(|e| ApnsError::Io(e.to_string()))?;

        let (broadcast, _) = broadcast::channel(BROADCAST_CAPACITY);
        let state = Arc::new(State {
            record_limit: config.record_limit,
            clock: config.clock,
            rules_active: AtomicBool::new(false),
            rules: Mutex::new(Rules::default()),
            pushes: Mutex::new(Vec::new()),
            broadcast,
            token_subscribers_active: AtomicBool::new(false),
            token_subscribers: Mutex::new(HashMap::new()),
            apns_id_prefix: rand::random(),
            apns_id_counter: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            tls_failures: AtomicU64::new(0),
            dropped_connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        });
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.max_concurrent_streams)
            .auto_date_header(false);
        let (shutdown, shutdown_rx) = watch::channel(());
        let accept_task = tokio::spawn(accept_loop(
            listener,
            acceptor,
            state.clone(),
            http2,
            shutdown_rx,
        ));
        Ok(Self {
            state,
            url: format!("https://{address}"),
            address,
            root_pem: root.cert_pem(),
            root_der: root.cert_der(),
            _shutdown: shutdown,
            accept_task,
        })
    }

    /// `https://127.0.0.1:<port>`: the client's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The root of the server's TLS certificate, for the client's trust roots.
    pub fn root_cert_pem(&self) -> &[u8] {
        &self.root_pem
    }

    pub fn root_cert_der(&self) -> &[u8] {
        &self.root_der
    }

    /// A client configuration for this server (defaults otherwise).
    pub fn client_config(&self) -> ApnsConfig {
        ApnsConfig::with_base_url(&self.url, TrustRoots::Custom(vec![self.root_der.clone()]))
    }

    /// Every push delivered so far (up to the record limit), in arrival order.
    pub fn pushes(&self) -> Vec<FakePush> {
        lock(&self.state.pushes).clone()
    }

    pub fn pushes_for(&self, token: &DeviceToken) -> Vec<FakePush> {
        lock(&self.state.pushes)
            .iter()
            .filter(|push| &push.token == token)
            .cloned()
            .collect()
    }

    pub fn delivered_count(&self) -> u64 {
        self.state.delivered.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> FakeStats {
        let s = &self.state;
        FakeStats {
            connections: s.connections.load(Ordering::Relaxed),
            tls_failures: s.tls_failures.load(Ordering::Relaxed),
            dropped_connections: s.dropped_connections.load(Ordering::Relaxed),
            requests: s.requests.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
        }
    }

    /// Every delivered push from now on. A receiver that falls more than 16,384 pushes behind skips the oldest;
    /// a simulator with many devices should use [`FakeApnsServer::subscribe_token`] per device instead.
    pub fn subscribe(&self) -> broadcast::Receiver<FakePush> {
        self.state.broadcast.subscribe()
    }

    /// The pushes delivered to one token from now on (replaces an earlier subscription for the same token).
    pub fn subscribe_token(&self, token: &DeviceToken) -> mpsc::UnboundedReceiver<FakePush> {
        let (sender, receiver) = mpsc::unbounded_channel();
        lock(&self.state.token_subscribers).insert(token.clone(), sender);
        self.state
            .token_subscribers_active
            .store(true, Ordering::Release);
        receiver
    }

    /// From now on pushes to `token` get 410 Unregistered (the device was wiped or the app removed).
    pub fn mark_unregistered(&self, token: &DeviceToken) {
        let now = self.state.clock.now();
        self.update_rules(|rules| {
            rules.unregistered.insert(token.clone(), now);
        });
    }

    /// Undoes [`FakeApnsServer::mark_unregistered`] (the device sent a new TokenUpdate).
    pub fn mark_registered(&self, token: &DeviceToken) {
        self.update_rules(|rules| {
            rules.unregistered.remove(token);
        });
    }

    /// Answers the next `times` matching pushes with `fault`.
    pub fn inject(&self, scope: FaultScope, fault: Fault, times: u32) {
        self.arm(scope, fault, Some(times));
    }

    /// Answers every matching push with `fault` until [`FakeApnsServer::clear_faults`].
    pub fn inject_always(&self, scope: FaultScope, fault: Fault) {
        self.arm(scope, fault, None);
    }

    /// Delays every matching push by `latency` (`None` removes the delay).
    pub fn set_latency(&self, scope: FaultScope, latency: Option<Duration>) {
        self.update_rules(|rules| match (scope, latency) {
            (FaultScope::AllTokens, latency) => rules.global_latency = latency,
            (FaultScope::Token(token), Some(latency)) => {
                rules.token_latency.insert(token, latency);
            }
            (FaultScope::Token(token), None) => {
                rules.token_latency.remove(&token);
            }
        });
    }

    /// Removes every injected fault and latency (unregistered tokens stay unregistered).
    pub fn clear_faults(&self) {
        self.update_rules(|rules| {
            rules.global_faults.clear();
            rules.token_faults.clear();
            rules.global_latency = None;
            rules.token_latency.clear();
        });
    }

    /// Stops accepting and closes every connection.
    pub async fn shutdown(self) {
        self.accept_task.abort();
        // Dropping `self` drops the shutdown sender, which ends every connection task.
    }

    fn arm(&self, scope: FaultScope, fault: Fault, remaining: Option<u32>) {
        if remaining == Some(0) {
            return;
        }
        let armed = ArmedFault { fault, remaining };
        self.update_rules(|rules| match scope {
            FaultScope::AllTokens => rules.global_faults.push_back(armed),
            FaultScope::Token(token) => rules
                .token_faults
                .entry(token)
                .or_default()
                .push_back(armed),
        });
    }

    fn update_rules(&self, change: impl FnOnce(&mut Rules)) {
        let mut rules = lock(&self.state.rules);
        change(&mut rules);
        self.state
            .rules_active
            .store(rules.is_active(), Ordering::Release);
    }
}

impl Drop for FakeApnsServer {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl std::fmt::Debug for FakeApnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApnsServer")
            .field("url", &self.url)
            .finish()
    }
}

impl State {
    fn next_apns_id(&self) -> String {
        let counter = self.apns_id_counter.fetch_add(1, Ordering::Relaxed);
        let id = uuid::Uuid::from_u64_pair(self.apns_id_prefix, counter);
        let mut buffer = uuid::Uuid::encode_buffer();
        id.hyphenated().encode_upper(&mut buffer).to_owned()
    }
}

impl Rules {
    fn is_active(&self) -> bool {
        !self.unregistered.is_empty()
            || !self.global_faults.is_empty()
            || !self.token_faults.is_empty()
            || self.global_latency.is_some()
            || !self.token_latency.is_empty()
    }

    fn latency_for(&self, token: &DeviceToken) -> Option<Duration> {
        self.token_latency
            .get(token)
            .copied()
            .or(self.global_latency)
    }

    /// The fault for this push, counting it down; token faults first.
    fn take_fault(&mut self, token: &DeviceToken) -> Option<Fault> {
        if let Some(queue) = self.token_faults.get_mut(token) {
            let fault = take_from(queue);
            if queue.is_empty() {
                self.token_faults.remove(token);
            }
            if fault.is_some() {
                return fault;
            }
        }
        take_from(&mut self.global_faults)
    }
}

fn take_from(queue: &mut VecDeque<ArmedFault>) -> Option<Fault> {
    let front = queue.front_mut()?;
    let fault = front.fault.clone();
    if let Some(remaining) = front.remaining.as_mut() {
        *remaining = remaining.saturating_sub(1);
        if *remaining == 0 {
            queue.pop_front();
        }
    }
    Some(fault)
}

fn server_tls_config(identity: &Identity, client_ca_pem: &[u8]) -> Result<ServerConfig, ApnsError> {
    let roots = TrustRoots::from_pem(client_ca_pem)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(tls::root_store(&roots)?),
        tls::provider(),
    )
    .build()
    .map_err(|e| ApnsError::Config(format!("client certificate verifier: {e}")))?;
    let (chain, key) = tls::rustls_identity(identity, vec![identity.cert_der()])?;
    let mut config = ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ApnsError::Config(format!("tls versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| ApnsError::Config(format!("server certificate: {e}")))?;
    config.alpn_protocols = vec![tls::ALPN_H2.to_vec()];
    Ok(config)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<State>,
    http2: http2::Builder<TokioExecutor>,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((tcp, _)) => {
                tokio::spawn(serve_connection(
                    tcp,
                    acceptor.clone(),
                    state.clone(),
                    http2.clone(),
                    shutdown.clone(),
                ));
            }
            Err(e) => {
                // E.g. out of file descriptors: wait instead of spinning.
                tracing::warn!(error = %e, "fake apns: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    state: Arc<State>,
    http2: http2::Builder<TokioExecutor>,
    mut shutdown: watch::Receiver<()>,
) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "fake apns: cannot set TCP_NODELAY");
    }
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "fake apns: tls handshake refused");
            state.tls_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Err(_) => {
            state.tls_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    state.connections.fetch_add(1, Ordering::Relaxed);
    let topic = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|der| topic_of_der(der));
    let context = Arc::new(ConnectionContext {
        topic,
        drop: Notify::new(),
    });
    let service_context = context.clone();
    // Boxed: hyper moves each stream's future into a task of its own; a pointer moves cheaper than the
    // whole state machine.
    let service = service_fn(move |request| {
        Box::pin(handle(request, state.clone(), service_context.clone()))
    });
    let connection = http2.serve_connection(TokioIo::new(tls), service);
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "fake apns: connection ended");
            }
        }
        // Returning drops the TLS stream: the client sees the TCP connection close without an answer.
        _ = context.drop.notified() => {}
        _ = shutdown.changed() => {}
    }
}

/// The subject UID of a DER certificate.
fn topic_of_der(der: &[u8]) -> Option<String> {
    let cert = X509::from_der(der).ok()?;
    let entry = cert.subject_name().entries_by_nid(Nid::USERID).next()?;
    entry.data().to_string().ok()
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<State>,
    connection: Arc<ConnectionContext>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let verdict = match check(request, &state, &connection).await {
        Ok(push) => apply_rules(push, &state).await,
        Err(rejection) => Verdict::Reject(rejection),
    };
    let response = match verdict {
        Verdict::Deliver(push) => {
            let response = ok_response(&push.apns_id);
            deliver(push, &state);
            response
        }
        Verdict::Reject(rejection) => {
            state.rejected.fetch_add(1, Ordering::Relaxed);
            error_response(&rejection)
        }
        Verdict::DropConnection => {
            state.dropped_connections.fetch_add(1, Ordering::Relaxed);
            connection.drop.notify_one();
            // The connection task now drops the connection, so this answer never leaves; the wait only keeps
            // the stream from answering first, and is bounded so that its task still ends.
            tokio::time::sleep(Duration::from_secs(1)).await;
            error_response(&Rejection::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
            ))
        }
    };
    Ok(response)
}

/// Checks a request the way APNs does and returns the push it carries.
async fn check(
    request: Request<Incoming>,
    state: &State,
    connection: &ConnectionContext,
) -> Result<FakePush, Rejection> {
    if request.method() != Method::POST {
        return Err(Rejection::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
        ));
    }
    let token_hex = request
        .uri()
        .path()
        .strip_prefix("/3/device/")
        .ok_or_else(|| Rejection::new(StatusCode::NOT_FOUND, "BadPath"))?;
    if token_hex.is_empty() {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "MissingDeviceToken",
        ));
    }
    let token = DeviceToken::from_hex(token_hex)
        .map_err(|_| Rejection::new(StatusCode::BAD_REQUEST, "BadDeviceToken"))?;
    let headers = request.headers();
    let header = |name: &'static str| headers.get(HeaderName::from_static(name));

    let topic = header("apns-topic")
        .ok_or_else(|| Rejection::new(StatusCode::BAD_REQUEST, "MissingTopic"))?
        .to_str()
        .map_err(|_| Rejection::new(StatusCode::BAD_REQUEST, "BadTopic"))?;
    let Some(certificate_topic) = connection.topic.as_deref() else {
        return Err(Rejection::new(StatusCode::FORBIDDEN, "BadCertificate"));
    };
    if topic != certificate_topic {
        return Err(Rejection::new(StatusCode::FORBIDDEN, "TopicDisallowed"));
    }
    let topic =
        ApnsTopic::parse(topic).map_err(|_| Rejection::new(StatusCode::BAD_REQUEST, "BadTopic"))?;
    if header("apns-push-type").map(HeaderValue::as_bytes) != Some(b"mdm") {
        return Err(Rejection::new(StatusCode::BAD_REQUEST, "InvalidPushType"));
    }
    let priority = match header("apns-priority") {
        None => None,
        Some(value) => match value.to_str().ok().and_then(|s| s.parse::<u8>().ok()) {
            Some(p @ (5 | 10)) => Some(p),
            _ => return Err(Rejection::new(StatusCode::BAD_REQUEST, "BadPriority")),
        },
    };
    let expiration = match header("apns-expiration") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| Rejection::new(StatusCode::BAD_REQUEST, "BadExpirationDate"))?,
        ),
    };
    let apns_id = match header("apns-id") {
        None => state.next_apns_id(),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .map(|id| id.hyphenated().to_string().to_uppercase())
            .ok_or_else(|| Rejection::new(StatusCode::BAD_REQUEST, "BadMessageId"))?,
    };

    let body = Limited::new(request.into_body(), MAX_PAYLOAD_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                Rejection::new(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge")
            } else {
                Rejection::new(StatusCode::BAD_REQUEST, "BadPayload")
            }
        })?
        .to_bytes();
    if body.is_empty() {
        return Err(Rejection::new(StatusCode::BAD_REQUEST, "PayloadEmpty"));
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct MdmPayload {
        mdm: String,
    }
    let payload: MdmPayload = serde_json::from_slice(&body)
        .map_err(|_| Rejection::new(StatusCode::BAD_REQUEST, "BadPayload"))?;
    let push_magic = PushMagic::parse(&payload.mdm)
        .map_err(|_| Rejection::new(StatusCode::BAD_REQUEST, "BadPayload"))?;

    Ok(FakePush {
        token,
        topic,
        push_magic,
        received_at: state.clock.now(),
        apns_id,
        expiration,
        priority,
    })
}

/// Injected latency, faults and unregistered tokens, in that order.
async fn apply_rules(push: FakePush, state: &State) -> Verdict {
    if !state.rules_active.load(Ordering::Acquire) {
        return Verdict::Deliver(push);
    }
    let (latency, fault, unregistered_at) = {
        let mut rules = lock(&state.rules);
        let latency = rules.latency_for(&push.token);
        let fault = rules.take_fault(&push.token);
        let unregistered_at = rules.unregistered.get(&push.token).copied();
        state
            .rules_active
            .store(rules.is_active(), Ordering::Release);
        (latency, fault, unregistered_at)
    };
    if let Some(latency) = latency {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Some(Fault::DropConnection) => return Verdict::DropConnection,
        Some(fault) => return Verdict::Reject(rejection_for(fault, state.clock.now())),
        None => {}
    }
    if let Some(at) = unregistered_at {
        let mut rejection = Rejection::new(StatusCode::GONE, "Unregistered");
        rejection.timestamp_ms = Some(at.0.saturating_mul(1000));
        return Verdict::Reject(rejection);
    }
    Verdict::Deliver(push)
}

fn rejection_for(fault: Fault, now: UnixTime) -> Rejection {
    match fault {
        Fault::Unregistered => {
            let mut rejection = Rejection::new(StatusCode::GONE, "Unregistered");
            rejection.timestamp_ms = Some(now.0.saturating_mul(1000));
            rejection
        }
        Fault::TooManyRequests {
            retry_after_seconds,
        } => {
            let mut rejection = Rejection::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests");
            rejection.retry_after_seconds = retry_after_seconds;
            rejection
        }
        Fault::InternalServerError => {
            Rejection::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError")
        }
        Fault::ServiceUnavailable => {
            Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
        }
        Fault::Status { status, reason } => Rejection::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &reason,
        ),
        Fault::DropConnection => {
            Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
        }
    }
}

fn deliver(push: FakePush, state: &State) {
    state.delivered.fetch_add(1, Ordering::Relaxed);
    if state.token_subscribers_active.load(Ordering::Acquire) {
        let subscribers = lock(&state.token_subscribers);
        if let Some(sender) = subscribers.get(&push.token) {
            // A simulated device that went away is not an error of the push.
            sender.send(push.clone()).ok();
        }
    }
    if state.broadcast.receiver_count() > 0 {
        state.broadcast.send(push.clone()).ok();
    }
    if state.record_limit > 0 {
        let mut pushes = lock(&state.pushes);
        if pushes.len() < state.record_limit {
            pushes.push(push);
        }
    }
}

fn ok_response(apns_id: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    if let Ok(value) = HeaderValue::from_str(apns_id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("apns-id"), value);
    }
    response
}

fn error_response(rejection: &Rejection) -> Response<Full<Bytes>> {
    let body = match rejection.timestamp_ms {
        Some(timestamp) => {
            serde_json::json!({ "reason": rejection.reason, "timestamp": timestamp })
        }
        None => serde_json::json!({ "reason": rejection.reason }),
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = rejection.status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(seconds) = rejection.retry_after_seconds {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fresh MDM topic `com.apple.mgmt.External.<uuid>`.
pub fn random_topic() -> Result<ApnsTopic, ApnsError> {
    let topic = format!(
        "com.apple.mgmt.External.{}",
        uuid::Uuid::new_v4().hyphenated()
    );
    ApnsTopic::parse(&topic).map_err(|e| ApnsError::Config(e.to_string()))
}

/// Issues a push certificate the way Apple's portal shapes them (subject `UID=<topic>, CN=APSP:<uuid>, C=US`,
/// EKU clientAuth, RSA 2048), signed by `issuer` (the stand-in for Apple's CA), valid from `not_before` to
/// `not_after` (use a past `not_after` for an expired certificate).
pub fn issue_push_certificate(
    issuer: &CertificateAuthority,
    topic: &ApnsTopic,
    not_before: UnixTime,
    not_after: UnixTime,
) -> Result<PushCertificate, ApnsError> {
    let crypto = |e: openssl::error::ErrorStack| ApnsError::InvalidCertificate(e.to_string());
    let key = PKey::from_rsa(Rsa::generate(2048).map_err(crypto)?).map_err(crypto)?;
    let certificate = issue_push_certificate_for_key(issuer, topic, &key, not_before, not_after)?;
    let identity = Identity::from_parts(certificate, key)
        .map_err(|e| ApnsError::InvalidCertificate(e.to_string()))?;
    PushCertificate::from_identity(identity, Vec::new())
}

/// What Apple's portal does with a CSR: the push certificate of [`issue_push_certificate`] for a key someone
/// else holds (the CSR's public key), without a private key.
pub fn issue_push_certificate_for_key<T: openssl::pkey::HasPublic>(
    issuer: &CertificateAuthority,
    topic: &ApnsTopic,
    key: &openssl::pkey::PKeyRef<T>,
    not_before: UnixTime,
    not_after: UnixTime,
) -> Result<openssl::x509::X509, ApnsError> {
    let crypto = |e: openssl::error::ErrorStack| ApnsError::InvalidCertificate(e.to_string());
    let mut name = X509Name::builder().map_err(crypto)?;
    name.append_entry_by_nid(Nid::USERID, topic.as_str())
        .map_err(crypto)?;
    let common_name = format!(
        "APSP:{}",
        topic.as_str().rsplit('.').next().unwrap_or(topic.as_str())
    );
    name.append_entry_by_nid(Nid::COMMONNAME, &common_name)
        .map_err(crypto)?;
    name.append_entry_by_nid(Nid::COUNTRYNAME, "US")
        .map_err(crypto)?;
    let name = name.build();

    let issuer_cert = issuer.identity().x509();
    let mut builder = X509Builder::new().map_err(crypto)?;
    builder.set_version(2).map_err(crypto)?;
    let mut serial = BigNum::new().map_err(crypto)?;
    serial.rand(128, MsbOption::ONE, false).map_err(crypto)?;
    let serial = serial.to_asn1_integer().map_err(crypto)?;
    builder.set_serial_number(&serial).map_err(crypto)?;
    builder.set_subject_name(&name).map_err(crypto)?;
    builder
        .set_issuer_name(issuer_cert.subject_name())
        .map_err(crypto)?;
    builder.set_pubkey(key).map_err(crypto)?;
    let not_before = Asn1Time::from_unix(not_before.0).map_err(crypto)?;
    let not_after = Asn1Time::from_unix(not_after.0).map_err(crypto)?;
    builder.set_not_before(&not_before).map_err(crypto)?;
    builder.set_not_after(&not_after).map_err(crypto)?;
    builder
        .append_extension(BasicConstraints::new().critical().build().map_err(crypto)?)
        .map_err(crypto)?;
    builder
        .append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build()
                .map_err(crypto)?,
        )
        .map_err(crypto)?;
    builder
        .append_extension(
            ExtendedKeyUsage::new()
                .client_auth()
                .build()
                .map_err(crypto)?,
        )
        .map_err(crypto)?;
    let ski = SubjectKeyIdentifier::new()
        .build(&builder.x509v3_context(Some(issuer_cert), None))
        .map_err(crypto)?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&builder.x509v3_context(Some(issuer_cert), None))
        .map_err(crypto)?;
    builder.append_extension(ski).map_err(crypto)?;
    builder.append_extension(aki).map_err(crypto)?;
    builder
        .sign(issuer.identity().private_key(), MessageDigest::sha256())
        .map_err(crypto)?;
    Ok(builder.build())
}
