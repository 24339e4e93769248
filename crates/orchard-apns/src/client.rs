//! The APNs provider client: a few long-lived HTTP/2 connections, each owned by a task that reconnects with
//! backoff, and `push`, which takes a ready connection, sends one request, classifies the answer and retries
//! what is worth retrying before it reports a [`PushOutcome`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use http::uri::{Authority, Parts, Scheme};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use orchard_types::{ApnsTopic, Clock, PushMagic, UnixTime};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsConnector;

use crate::tls::{self, TlsErrorProbe, TlsErrorSlot};
use crate::{ApnsConfig, ApnsError, DeviceToken, PushCertificate};

type RequestBody = Full<Bytes>;
type Sender = http2::SendRequest<RequestBody>;
/// Boxed: hyper spawns one task per request whose future type embeds the connection's IO type by value, so an
/// unboxed TLS stream (several KB) would be allocated and copied with every push.
type ClientIo = TokioIo<Box<TlsErrorProbe<tokio_rustls::client::TlsStream<TcpStream>>>>;
type Connection = http2::Connection<ClientIo, RequestBody, TokioExecutor>;

const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
const APNS_ID: HeaderName = HeaderName::from_static("apns-id");
const PUSH_TYPE_MDM: HeaderValue = HeaderValue::from_static("mdm");

/// A connection that stayed up this long was healthy: its loss resets the reconnect backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// APNs error bodies are a few dozen bytes of JSON; anything longer is cut.
const MAX_ERROR_BODY: usize = 4096;
/// Reason strings come from the server: bounded before they reach logs and the database.
const MAX_REASON_CHARS: usize = 200;

/// What became of one push, for the caller to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// 200: APNs took the push and delivers it when the device is reachable (until `apns-expiration`).
    Delivered { apns_id: Option<String> },
    /// 410 Unregistered, or 400 BadDeviceToken / DeviceTokenNotForTopic: the channel's token is dead; stop
    /// pushing to it until the device sends a new TokenUpdate. `unregistered_at` is APNs' timestamp (410).
    BadToken {
        status: u16,
        reason: String,
        unregistered_at: Option<UnixTime>,
    },
    /// 403 (BadCertificate, Forbidden …), 400 TopicDisallowed / BadTopic, or our certificate is expired: stop
    /// pushing with this certificate and alert the operator. `status` is `None` when we did not ask APNs.
    CertificateProblem { status: Option<u16>, reason: String },
    /// 429 or 5xx still after the client's own retries, or a `Retry-After` longer than the policy waits out:
    /// push again after `after`.
    Retry {
        after: Duration,
        status: u16,
        reason: String,
    },
    /// Any other answer (e.g. 400 BadPriority, 413): APNs refused the request itself; repeating it will not help.
    Rejected { status: u16, reason: String },
    /// APNs could not be reached (connection, TLS, timeout) after the retries: push again later.
    Failed(ApnsError),
}

impl PushOutcome {
    pub fn is_delivered(&self) -> bool {
        matches!(self, PushOutcome::Delivered { .. })
    }

    /// The token must be marked dead until the next TokenUpdate.
    pub fn is_token_dead(&self) -> bool {
        matches!(self, PushOutcome::BadToken { .. })
    }

    /// No push with this certificate can succeed: stop and alert.
    pub fn is_certificate_problem(&self) -> bool {
        matches!(self, PushOutcome::CertificateProblem { .. })
    }
}

/// A snapshot for health checks and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientStatus {
    /// Configured connections.
    pub connections: usize,
    /// Connections up right now.
    pub ready: usize,
    /// The last reason a connection failed or ended, if any did.
    pub last_connection_error: Option<ApnsError>,
}

/// The APNs client. Cheap to clone (one shared pool); dropping the last clone closes its connections.
#[derive(Clone)]
pub struct ApnsClient {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// Dropped with the last client clone; the connection tasks see it and stop.
    _shutdown: watch::Sender<()>,
}

/// Where to connect, parsed once from the base URL.
struct Endpoint {
    scheme: Scheme,
    authority: Authority,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
}

/// State shared by `push` callers and the connection tasks.
struct Shared {
    certificate: PushCertificate,
    config: ApnsConfig,
    clock: Arc<dyn Clock>,
    endpoint: Endpoint,
    http2: http2::Builder<TokioExecutor>,
    topic_header: HeaderValue,
    priority_header: HeaderValue,
    /// `apns-expiration` in seconds from now.
    ttl_seconds: i64,
    slots: Box<[RwLock<SlotState>]>,
    /// Round-robin start for picking a connection, so load spreads over all of them.
    next_slot: AtomicUsize,
    /// Woken whenever a slot changes state (for pushes waiting for a connection).
    state_changed: Notify,
    last_connection_error: Mutex<Option<(Instant, ApnsError)>>,
}

enum SlotState {
    Connecting,
    Ready(Sender),
    /// Failed or ended; the task waits out its backoff before connecting again.
    Down(ApnsError),
}

/// The answer to one attempt.
enum Attempt {
    Final(PushOutcome),
    /// 429 or 5xx.
    Throttled {
        status: u16,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// No answer at all.
    Unreachable(ApnsError),
}

/// The parts of a push request that stay the same across its attempts.
struct PreparedPush {
    uri: Uri,
    body: Bytes,
    expiration: HeaderValue,
}

impl ApnsClient {
    /// Checks the certificate (an expired one is refused here, before any connection) and the configuration,
    /// then starts `config.connections` connection tasks on the current Tokio runtime. Returns without waiting
    /// for them: pushes wait up to `connect_timeout` for the first connection.
    pub fn new(
        certificate: PushCertificate,
        config: ApnsConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ApnsError> {
        config.validate()?;
        certificate.check_valid_at(clock.now())?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ApnsError::NoRuntime)?;
        let endpoint = Endpoint::parse(&config.base_url)?;
        let connector = TlsConnector::from(Arc::new(tls::client_config(
            &certificate,
            &config.trust_roots,
        )?));
        let topic_header = HeaderValue::from_str(certificate.topic().as_str())
            .map_err(|e| ApnsError::InvalidCertificate(format!("topic header: {e}")))?;
        let priority_header = HeaderValue::from(u16::from(config.priority));
        let ttl_seconds = i64::try_from(config.expiration_ttl.as_secs()).unwrap_or(i64::MAX);

        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2.timer(TokioTimer::new());
        if let Some(interval) = config.keep_alive_interval {
            http2
                .keep_alive_interval(interval)
                .keep_alive_timeout(config.connect_timeout)
                .keep_alive_while_idle(true);
        }

        let slots = (0..config.connections)
            .map(|_| RwLock::new(SlotState::Connecting))
            .collect();
        let shared = Arc::new(Shared {
            certificate,
            clock,
            endpoint,
            http2,
            topic_header,
            priority_header,
            ttl_seconds,
            slots,
            next_slot: AtomicUsize::new(0),
            state_changed: Notify::new(),
            last_connection_error: Mutex::new(None),
            config,
        });
        let (shutdown, shutdown_rx) = watch::channel(());
        for index in 0..shared.slots.len() {
            runtime.spawn(maintain_connection(
                shared.clone(),
                index,
                connector.clone(),
                shutdown_rx.clone(),
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                _shutdown: shutdown,
            }),
        })
    }

    /// Sends `{"mdm":"<push_magic>"}` to `token`. Retries 429/5xx (honouring `Retry-After`), timeouts and
    /// connection failures with exponential backoff up to the retry policy, then reports. Never panics.
    pub async fn push(&self, token: &DeviceToken, push_magic: &PushMagic) -> PushOutcome {
        let shared = &*self.inner.shared;
        let now = shared.clock.now();
        if let Err(e) = shared.certificate.check_valid_at(now) {
            return PushOutcome::CertificateProblem {
                status: None,
                reason: e.to_string(),
            };
        }
        let prepared = match shared.prepare(token, push_magic, now) {
            Ok(prepared) => prepared,
            Err(e) => return PushOutcome::Failed(e),
        };
        let started = Instant::now();
        let policy = shared.config.retry;
        let mut attempt = 1;
        loop {
            let (retry_after, outcome_if_exhausted) = match shared.attempt(&prepared).await {
                Attempt::Final(outcome) => return outcome,
                Attempt::Throttled {
                    status,
                    reason,
                    retry_after,
                } => {
                    let after = retry_after.unwrap_or_else(|| policy.backoff.delay(attempt));
                    let outcome = PushOutcome::Retry {
                        after,
                        status,
                        reason,
                    };
                    if after > policy.max_retry_after {
                        return outcome;
                    }
                    (retry_after, outcome)
                }
                Attempt::Unreachable(error) => {
                    (None, PushOutcome::Failed(shared.explain(error, started)))
                }
            };
            if attempt >= policy.max_attempts {
                return outcome_if_exhausted;
            }
            let delay = policy
                .backoff
                .delay(attempt)
                .max(retry_after.unwrap_or_default());
            tracing::debug!(token = %token, attempt, ?delay, outcome = ?outcome_if_exhausted, "apns push retry");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    pub fn topic(&self) -> &ApnsTopic {
        self.inner.shared.certificate.topic()
    }

    pub fn certificate(&self) -> &PushCertificate {
        &self.inner.shared.certificate
    }

    pub fn config(&self) -> &ApnsConfig {
        &self.inner.shared.config
    }

    pub fn status(&self) -> ClientStatus {
        let shared = &self.inner.shared;
        let ready = shared
            .slots
            .iter()
            .filter(|slot| matches!(&*read(slot), SlotState::Ready(s) if !s.is_closed()))
            .count();
        let last_connection_error = shared
            .last_connection_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, e)| e.clone());
        ClientStatus {
            connections: shared.slots.len(),
            ready,
            last_connection_error,
        }
    }
}

impl std::fmt::Debug for ApnsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsClient")
            .field("base_url", &self.inner.shared.config.base_url)
            .field("topic", self.topic())
            .finish()
    }
}

impl Endpoint {
    fn parse(base_url: &str) -> Result<Self, ApnsError> {
        let uri: Uri = base_url
            .parse()
            .map_err(|e| ApnsError::Config(format!("base url {base_url:?}: {e}")))?;
        if uri.scheme() != Some(&Scheme::HTTPS) {
            return Err(ApnsError::Config(format!(
                "base url {base_url:?} must start with https://"
            )));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(ApnsError::Config(format!(
                "base url {base_url:?} must not have a path or query"
            )));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| ApnsError::Config(format!("base url {base_url:?} has no host")))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(443);
        let server_name = ServerName::try_from(host.clone())
            .map_err(|e| ApnsError::Config(format!("base url host {host:?}: {e}")))?;
        Ok(Self {
            scheme: Scheme::HTTPS,
            authority,
            host,
            port,
            server_name,
        })
    }
}

impl Shared {
    fn prepare(
        &self,
        token: &DeviceToken,
        push_magic: &PushMagic,
        now: UnixTime,
    ) -> Result<PreparedPush, ApnsError> {
        let path = token.request_path()?;
        let mut parts = Parts::default();
        parts.scheme = Some(self.endpoint.scheme.clone());
        parts.authority = Some(self.endpoint.authority.clone());
        parts.path_and_query = Some(path);
        let uri = Uri::from_parts(parts).map_err(|e| ApnsError::Config(e.to_string()))?;
        Ok(PreparedPush {
            uri,
            body: mdm_payload(push_magic),
            expiration: HeaderValue::from(now.plus_seconds(self.ttl_seconds).0),
        })
    }

    fn request(&self, prepared: &PreparedPush) -> Request<RequestBody> {
        let mut request = Request::new(Full::new(prepared.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = prepared.uri.clone();
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(APNS_PUSH_TYPE, PUSH_TYPE_MDM);
        headers.insert(APNS_TOPIC, self.topic_header.clone());
        headers.insert(APNS_PRIORITY, self.priority_header.clone());
        headers.insert(APNS_EXPIRATION, prepared.expiration.clone());
        *request.headers_mut() = headers;
        request
    }

    async fn attempt(&self, prepared: &PreparedPush) -> Attempt {
        let mut sender = match self.ready_sender().await {
            Ok(sender) => sender,
            Err(e) => return Attempt::Unreachable(e),
        };
        let request = self.request(prepared);
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| ApnsError::Connection(error_chain(&e)))?;
            let status = response.status();
            let headers = response.headers();
            let apns_id = headers
                .get(APNS_ID)
                .and_then(|v| v.to_str().ok())
                .map(|s| bounded(s.to_owned()));
            let retry_after = headers.get(RETRY_AFTER).and_then(parse_retry_after);
            if status == StatusCode::OK {
                // APNs answers 200 without a body; dropping the body of a finished stream costs nothing.
                return Ok((status, apns_id, retry_after, Bytes::new()));
            }
            // A broken error body only loses the reason; the status still says what happened.
            let body = Limited::new(response.into_body(), MAX_ERROR_BODY)
                .collect()
                .await
                .map(|collected| collected.to_bytes())
                .unwrap_or_default();
            Ok::<_, ApnsError>((status, apns_id, retry_after, body))
        };
        match tokio::time::timeout(self.config.request_timeout, exchange).await {
            Err(_) => Attempt::Unreachable(ApnsError::Timeout(self.config.request_timeout)),
            Ok(Err(e)) => Attempt::Unreachable(e),
            Ok(Ok((status, apns_id, retry_after, body))) => {
                classify(status, apns_id, retry_after, &body)
            }
        }
    }

    /// A sender of a live connection, trying each slot from a rotating start; waits (up to the connect timeout)
    /// while some connection is being established; fails at once when every connection is down.
    async fn ready_sender(&self) -> Result<Sender, ApnsError> {
        let deadline = tokio::time::Instant::now() + self.config.connect_timeout;
        loop {
            // Registered before looking, so a state change between the look and the wait is not missed.
            let changed = self.state_changed.notified();
            let count = self.slots.len();
            let start = self.next_slot.fetch_add(1, Ordering::Relaxed) % count;
            let mut someone_connecting = false;
            let mut down_error = None;
            for slot in self.slots.iter().cycle().skip(start).take(count) {
                match &*read(slot) {
                    SlotState::Ready(sender) if !sender.is_closed() => return Ok(sender.clone()),
                    SlotState::Ready(_) | SlotState::Connecting => someone_connecting = true,
                    SlotState::Down(error) => down_error = Some(error.clone()),
                }
            }
            if !someone_connecting {
                return Err(down_error
                    .unwrap_or_else(|| ApnsError::Connection("no connection to apns".into())));
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(ApnsError::Timeout(self.config.connect_timeout));
            }
        }
    }

    /// Prefers the connection task's reason (e.g. the TLS alert) recorded since the push started over the
    /// request's own error, which HTTP/2 reduces to "connection closed".
    fn explain(&self, error: ApnsError, push_started: Instant) -> ApnsError {
        let last = self
            .last_connection_error
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match &*last {
            Some((at, connection_error)) if *at >= push_started => connection_error.clone(),
            _ => error,
        }
    }

    fn set_state(&self, index: usize, state: SlotState) {
        if let Some(slot) = self.slots.get(index) {
            *slot.write().unwrap_or_else(|p| p.into_inner()) = state;
        }
        self.state_changed.notify_waiters();
    }

    fn mark_down(&self, index: usize, error: ApnsError) {
        tracing::warn!(connection = index, error = %error, "apns connection down");
        *self
            .last_connection_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), error.clone()));
        self.set_state(index, SlotState::Down(error));
    }

    async fn connect(
        &self,
        connector: &TlsConnector,
    ) -> Result<(Sender, Connection, TlsErrorSlot), ApnsError> {
        let endpoint = &self.endpoint;
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| {
                ApnsError::Connection(format!(
                    "connect to {}:{}: {e}",
                    endpoint.host, endpoint.port
                ))
            })?;
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "apns: cannot set TCP_NODELAY");
        }
        let tls = connector
            .connect(endpoint.server_name.clone(), tcp)
            .await
            .map_err(|e| match tls::tls_error_of(&e) {
                Some(reason) => ApnsError::Tls(reason),
                None => ApnsError::Connection(format!("tls handshake: {e}")),
            })?;
        if tls.get_ref().1.alpn_protocol() != Some(tls::ALPN_H2) {
            return Err(ApnsError::Connection(
                "the server did not negotiate http/2 (alpn h2)".into(),
            ));
        }
        let seen = TlsErrorSlot::default();
        let io = TokioIo::new(Box::new(TlsErrorProbe::new(tls, seen.clone())));
        // With TLS 1.3 the server checks our certificate after our side of the handshake is done: a refusal
        // arrives as an alert while HTTP/2 starts, so prefer the alert (when it was read) to "broken pipe".
        let (sender, connection) = self.http2.handshake(io).await.map_err(|e| {
            match seen.lock().unwrap_or_else(|p| p.into_inner()).take() {
                Some(reason) => ApnsError::Tls(reason),
                None => ApnsError::Connection(format!("http/2 handshake: {}", error_chain(&e))),
            }
        })?;
        Ok((sender, connection, seen))
    }
}

/// Owns connection `index`: connects, publishes the sender, drives the connection until it ends, and
/// reconnects after a backoff that grows while connections fail or die young (never a tight loop).
async fn maintain_connection(
    shared: Arc<Shared>,
    index: usize,
    connector: TlsConnector,
    mut shutdown: watch::Receiver<()>,
) {
    let mut failures: u32 = 0;
    loop {
        shared.set_state(index, SlotState::Connecting);
        let connected = tokio::select! {
            result = tokio::time::timeout(shared.config.connect_timeout, shared.connect(&connector)) => result,
            _ = shutdown.changed() => break,
        };
        let error = match connected {
            Err(_) => ApnsError::Timeout(shared.config.connect_timeout),
            Ok(Err(e)) => e,
            Ok(Ok((sender, connection, tls_seen))) => {
                tracing::debug!(connection = index, "apns connection up");
                shared.set_state(index, SlotState::Ready(sender));
                let up_since = Instant::now();
                let ended = tokio::select! {
                    ended = connection => ended,
                    _ = shutdown.changed() => break,
                };
                if up_since.elapsed() >= STABLE_CONNECTION {
                    failures = 0;
                }
                let tls_reason = tls_seen.lock().unwrap_or_else(|p| p.into_inner()).take();
                match (tls_reason, ended) {
                    (Some(reason), _) => ApnsError::Tls(reason),
                    (None, Ok(())) => ApnsError::Connection("apns closed the connection".into()),
                    (None, Err(e)) => ApnsError::Connection(error_chain(&e)),
                }
            }
        };
        failures = failures.saturating_add(1);
        shared.mark_down(index, error);
        let delay = shared.config.reconnect.delay(failures);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => break,
        }
    }
    shared.set_state(
        index,
        SlotState::Down(ApnsError::Connection("client shut down".into())),
    );
}

fn classify(
    status: StatusCode,
    apns_id: Option<String>,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Attempt {
    #[derive(serde::Deserialize, Default)]
    struct ErrorBody {
        reason: Option<String>,
        /// Milliseconds since the epoch at which the token stopped being valid (410 only).
        timestamp: Option<i64>,
    }
    if status == StatusCode::OK {
        return Attempt::Final(PushOutcome::Delivered { apns_id });
    }
    let error_body: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let reason = bounded(
        error_body
            .reason
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("unknown").to_owned()),
    );
    let code = status.as_u16();
    let outcome = match (code, reason.as_str()) {
        (410, _) => PushOutcome::BadToken {
            status: code,
            reason,
            unregistered_at: error_body.timestamp.map(|ms| UnixTime(ms.div_euclid(1000))),
        },
        (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => PushOutcome::BadToken {
            status: code,
            reason,
            unregistered_at: None,
        },
        (400, "TopicDisallowed" | "BadTopic") | (403, _) => PushOutcome::CertificateProblem {
            status: Some(code),
            reason,
        },
        (429, _) | (500..=599, _) => {
            return Attempt::Throttled {
                status: code,
                reason,
                retry_after,
            }
        }
        _ => PushOutcome::Rejected {
            status: code,
            reason,
        },
    };
    Attempt::Final(outcome)
}

/// `Retry-After` in seconds (APNs and our local server send seconds; an HTTP date falls back to the backoff).
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    value
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// `{"mdm":"<PushMagic>"}`. PushMagic is printable ASCII (checked when parsed), so escaping `"` and `\` is all
/// JSON needs; building it by hand keeps the hot path at one allocation.
fn mdm_payload(push_magic: &PushMagic) -> Bytes {
    let magic = push_magic.as_str();
    let mut out = Vec::with_capacity(magic.len() + 12);
    out.extend_from_slice(b"{\"mdm\":\"");
    for byte in magic.bytes() {
        if byte == b'"' || byte == b'\\' {
            out.push(b'\\');
        }
        out.push(byte);
    }
    out.extend_from_slice(b"\"}");
    Bytes::from(out)
}

fn bounded(text: String) -> String {
    if text.chars().count() <= MAX_REASON_CHARS {
        text
    } else {
        text.chars().take(MAX_REASON_CHARS).collect()
    }
}

/// An error and its sources, `a: b: c`.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn read(slot: &RwLock<SlotState>) -> std::sync::RwLockReadGuard<'_, SlotState> {
    slot.read().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_exact_json() {
        let magic = PushMagic::parse("5D1F-AB\"x\\y").unwrap();
        let body = mdm_payload(&magic);
        assert_eq!(&body[..], br#"{"mdm":"5D1F-AB\"x\\y"}"#);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["mdm"], "5D1F-AB\"x\\y");
    }

    #[test]
    fn answers_are_classified() {
        let final_of = |code: u16, body: &[u8]| match classify(
            StatusCode::from_u16(code).unwrap(),
            None,
            None,
            body,
        ) {
            Attempt::Final(outcome) => outcome,
            Attempt::Throttled { .. } => panic!("throttled"),
            Attempt::Unreachable(_) => panic!("unreachable"),
        };
        assert!(final_of(200, b"").is_delivered());
        assert_eq!(
            final_of(
                410,
                br#"{"reason":"Unregistered","timestamp":1700000000123}"#
            ),
            PushOutcome::BadToken {
                status: 410,
                reason: "Unregistered".into(),
                unregistered_at: Some(UnixTime(1_700_000_000))
            }
        );
        assert!(final_of(400, br#"{"reason":"BadDeviceToken"}"#).is_token_dead());
        assert!(final_of(400, br#"{"reason":"TopicDisallowed"}"#).is_certificate_problem());
        assert!(final_of(403, b"not json").is_certificate_problem());
        assert_eq!(
            final_of(400, br#"{"reason":"BadPriority"}"#),
            PushOutcome::Rejected {
                status: 400,
                reason: "BadPriority".into()
            }
        );
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, None, None, b""),
            Attempt::Throttled { status: 503, .. }
        ));
        let long = format!(r#"{{"reason":"{}"}}"#, "x".repeat(10_000));
        match final_of(400, long.as_bytes()) {
            PushOutcome::Rejected { reason, .. } => assert_eq!(reason.len(), MAX_REASON_CHARS),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn base_urls() {
        let endpoint = Endpoint::parse("https://api.push.apple.com").unwrap();
        assert_eq!(
            (endpoint.host.as_str(), endpoint.port),
            ("api.push.apple.com", 443)
        );
        let endpoint = Endpoint::parse("https://127.0.0.1:2197/").unwrap();
        assert_eq!((endpoint.host.as_str(), endpoint.port), ("127.0.0.1", 2197));
        assert!(Endpoint::parse("http://api.push.apple.com").is_err());
        assert!(Endpoint::parse("https://api.push.apple.com/3/device").is_err());
        assert!(Endpoint::parse("not a url").is_err());
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("3")),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
    }
}
