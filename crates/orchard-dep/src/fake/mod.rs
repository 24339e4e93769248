//! A local Device Assignment server for tests, simulators and benchmarks (feature `fake`). It speaks the same
//! JSON as Apple over TLS with its own test root: real OAuth 1.0a signature checks on `/session` (timestamp
//! window, nonce reuse), expiring session tokens, an in-memory device set with a change log, fetch and sync
//! cursors with pages of up to 1,000, profile define / read / assign / remove, Activation Lock, and injected
//! failures (429 with Retry-After, 5xx, per-serial THROTTLED, expired cursors, T_C_NOT_SIGNED).
//!
//! A simulated iPad "activates" with `GET /fake/cloud-configuration?serial=…` (no OAuth; it stands in for the
//! device-side lookup at Apple): it answers the profile assigned to the serial, whose `url` the device then
//! POSTs its signed MachineInfo to.

pub mod activation;
mod state;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::X509;
use orchard_pki::CertificateAuthority;
use orchard_types::{Clock, Secret, SerialNumber, SystemClock, UnixTime};
use rand::Rng;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use state::{Cursor, CursorError, FakeState};
pub use state::{FakeStats, SessionExpiryAnswer};

use crate::client::{DepConfig, PROTOCOL_VERSION_HEADER, SESSION_HEADER};
use crate::profile::{AdeProfile, MAX_SERIALS_PER_REQUEST};
use crate::token::{mime_wrap_token_json, ServerToken};
use crate::types::{
    format_time, Account, AccountUrl, ActivationLockRequest, ActivationLockResponse,
    ActivationLockStatus, AssignStatus, CursorRequest, DefinedProfile, DeviceDetails,
    DeviceDetailsResponse, DeviceRecord, DevicesResponse, DisownResponse, ProfileDevicesRequest,
    ProfileDevicesResponse, ProfileStatus, ProfileUuid, SerialsRequest, SessionResponse, UrlLimit,
};
use crate::{oauth, DepError};

const SEVEN_DAYS: i64 = 7 * 86_400;
/// Apple's default page size when a request names no limit.
const DEFAULT_LIMIT: usize = 100;

/// How the local server behaves.
#[derive(Debug, Clone)]
pub struct FakeDepConfig {
    /// Serve HTTPS with a fresh test root (default) or plain HTTP.
    pub tls: bool,
    /// The server's "now": OAuth timestamps, session and cursor expiry, op_dates. Share a `ManualClock` with the
    /// client to move time in tests.
    pub clock: Arc<dyn Clock>,
    pub session_lifetime_seconds: i64,
    pub cursor_lifetime_seconds: i64,
    /// Accepted distance between `oauth_timestamp` and the server's clock.
    pub oauth_timestamp_tolerance_seconds: i64,
    /// Hand out a new session token in every answer and retire the old one (the client must keep the newest).
    pub rotate_session_tokens: bool,
    pub session_expiry_answer: SessionExpiryAnswer,
}

impl Default for FakeDepConfig {
    fn default() -> Self {
        Self {
            tls: true,
            clock: Arc::new(SystemClock),
            session_lifetime_seconds: 1800,
            cursor_lifetime_seconds: SEVEN_DAYS,
            oauth_timestamp_tolerance_seconds: 600,
            rotate_session_tokens: false,
            session_expiry_answer: SessionExpiryAnswer::Unauthorized,
        }
    }
}

/// What a device learns when it asks which profile is assigned to its serial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudConfiguration {
    pub profile_uuid: ProfileUuid,
    pub profile: AdeProfile,
}

struct Shared {
    state: Mutex<FakeState>,
    config: FakeDepConfig,
    token: ServerToken,
    scheme: &'static str,
    account: Account,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> UnixTime {
        self.config.clock.now()
    }
}

/// A running local DEP server. Dropping it stops the server.
pub struct FakeDepServer {
    shared: Arc<Shared>,
    base_url: String,
    root_der: Option<Vec<u8>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeDepServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDepServer")
            .field("base_url", &self.base_url)
            .finish()
    }
}

fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::thread_rng().fill(raw.as_mut_slice());
    hex::encode(raw)
}

impl FakeDepServer {
    /// Binds 127.0.0.1 on a free port and starts serving.
    pub async fn start(config: FakeDepConfig) -> Result<Self, DepError> {
        let now = config.clock.now();
        let token = ServerToken {
            consumer_key: format!("CK_{}", random_hex(32)),
            consumer_secret: Secret::new(format!("CS_{}", random_hex(32))),
            access_token: format!("AT_{}", random_hex(32)),
            access_secret: Secret::new(format!("AS_{}", random_hex(32))),
            access_token_expiry: now.plus_seconds(365 * 86_400),
        };
        let listener = TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
            .await
            .map_err(|e| DepError::Config(format!("fake dep server bind: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| DepError::Config(format!("fake dep server address: {e}")))?;
        let scheme = if config.tls { "https" } else { "http" };
        let account = Account {
            server_name: Some("Orchard Fake DEP".into()),
            server_uuid: Some(uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase()),
            admin_id: Some("admin@fake.example.edu".into()),
            org_name: Some("Fake University".into()),
            org_email: Some("it@fake.example.edu".into()),
            org_phone: Some("+49 30 0000000".into()),
            org_address: Some("1 Campus Road".into()),
            org_id: Some("1234567".into()),
            org_id_hash: Some(random_hex(16)),
            org_type: Some("edu".into()),
            org_version: Some("v2".into()),
            urls: [
                "/server/devices",
                "/devices/sync",
                "/devices",
                "/profile/devices",
            ]
            .iter()
            .map(|uri| AccountUrl {
                uri: (*uri).into(),
                http_method: vec!["POST".into()],
                limit: Some(UrlLimit {
                    default: Some(100),
                    maximum: Some(1000),
                }),
            })
            .collect(),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(FakeState {
                instance: random_hex(8),
                ..FakeState::default()
            }),
            config: config.clone(),
            token,
            scheme,
            account,
        });
        let app = router(shared.clone());
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let (task, root_der) = if config.tls {
            // The certificate must be valid by the wall clock rustls checks, whatever the configured clock says.
            let wall = SystemClock.now();
            let ca = CertificateAuthority::generate("Orchard Fake DEP Root", wall, 30)
                .map_err(|e| DepError::Crypto(e.to_string()))?;
            let identity = ca
                .issue_tls_server(
                    &["localhost".to_string()],
                    &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                    wall,
                    30,
                )
                .map_err(|e| DepError::Crypto(e.to_string()))?;
            let key_der = identity.private_key().private_key_to_pkcs8()?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut tls = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| DepError::Config(format!("tls versions: {e}")))?
                .with_no_client_auth()
                .with_single_cert(
                    vec![rustls::pki_types::CertificateDer::from(identity.cert_der())],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into()),
                )
                .map_err(|e| DepError::Config(format!("tls identity: {e}")))?;
            tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            let task = tokio::spawn(serve_tls(listener, tls, app, shutdown_rx));
            (task, Some(ca.cert_der()))
        } else {
            let task = tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = shutdown_rx.await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::warn!(error = %e, "fake dep server stopped");
                }
            });
            (task, None)
        };
        let base_url = match addr.ip() {
            IpAddr::V4(ip) => format!("{scheme}://{ip}:{}", addr.port()),
            IpAddr::V6(ip) => format!("{scheme}://[{ip}]:{}", addr.port()),
        };
        Ok(Self {
            shared,
            base_url,
            root_der,
            shutdown: Some(shutdown_tx),
            task: Some(task),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The test root that issued the server's TLS certificate (`None` for plain HTTP).
    pub fn root_certificate_der(&self) -> Option<Vec<u8>> {
        self.root_der.clone()
    }

    /// The credentials this server accepts (what decrypting its `.p7m` would give).
    pub fn server_token(&self) -> ServerToken {
        self.shared.token.clone()
    }

    /// A client configuration pointing at this server and trusting its root.
    pub fn client_config(&self) -> DepConfig {
        DepConfig {
            base_url: self.base_url.clone(),
            root_certificates_der: self.root_der.clone().into_iter().collect(),
            ..DepConfig::default()
        }
    }

    /// Serials `PREFIX000001`, `PREFIX000002`, … (zero-padded to 12 characters in all when the prefix allows).
    pub fn make_serials(prefix: &str, start: usize, count: usize) -> Vec<SerialNumber> {
        let width = 12usize.saturating_sub(prefix.len()).max(1);
        (start..start + count)
            .filter_map(|i| SerialNumber::parse(&format!("{prefix}{i:0width$}")).ok())
            .collect()
    }

    /// A plausible iPad record for `serial`.
    pub fn ipad_record(serial: &SerialNumber) -> DeviceRecord {
        let mut record = DeviceRecord::new(serial.clone());
        record.model = Some("iPad (10th generation)".into());
        record.description = Some("IPAD 10.9 WI-FI 64GB BLUE-DEU".into());
        record.color = Some("BLUE".into());
        record.os = Some("iPadOS".into());
        record.device_family = Some("iPad".into());
        record.device_assigned_by = Some("it@fake.example.edu".into());
        record.profile_status = Some(ProfileStatus::Empty);
        record
    }

    /// Adds devices (logged as `added`, or `modified` for a serial already present).
    pub fn add_devices(&self, serials: &[SerialNumber]) {
        let now = self.shared.now();
        let mut state = self.shared.lock();
        for serial in serials {
            state.add(Self::ipad_record(serial), now);
        }
    }

    pub fn add_device(&self, record: DeviceRecord) {
        let now = self.shared.now();
        self.shared.lock().add(record, now);
    }

    /// Changes a device (logged as `modified`); false if the serial is unknown.
    pub fn modify_device(
        &self,
        serial: &SerialNumber,
        change: impl FnOnce(&mut DeviceRecord),
    ) -> bool {
        let now = self.shared.now();
        self.shared.lock().modify(serial, change, now)
    }

    /// Releases a device from this MDM server (logged as `deleted`); false if the serial is unknown.
    pub fn delete_device(&self, serial: &SerialNumber) -> bool {
        let now = self.shared.now();
        self.shared.lock().delete(serial, now)
    }

    /// Appends a raw record to the change log as-is (out-of-order or duplicate `op_date`s for tests).
    pub fn inject_sync_record(&self, record: DeviceRecord) {
        self.shared.lock().events.push(record);
    }

    pub fn device(&self, serial: &SerialNumber) -> Option<DeviceRecord> {
        self.shared.lock().devices.get(serial.as_str()).cloned()
    }

    pub fn device_count(&self) -> usize {
        self.shared.lock().devices.len()
    }

    /// Every current serial, sorted.
    pub fn serials(&self) -> Vec<SerialNumber> {
        self.shared
            .lock()
            .devices
            .values()
            .map(|r| r.serial_number.clone())
            .collect()
    }

    pub fn profile(&self, profile_uuid: &ProfileUuid) -> Option<AdeProfile> {
        self.shared
            .lock()
            .profiles
            .get(profile_uuid.as_str())
            .cloned()
    }

    pub fn assigned_profile(&self, serial: &SerialNumber) -> Option<ProfileUuid> {
        self.shared.lock().assignments.get(serial.as_str()).cloned()
    }

    pub fn assignment_count(&self) -> usize {
        self.shared.lock().assignments.len()
    }

    /// The profile assigned to `serial`, as the device's activation sees it.
    pub fn cloud_configuration(&self, serial: &SerialNumber) -> Option<CloudConfiguration> {
        let state = self.shared.lock();
        let profile_uuid = state.assignments.get(serial.as_str())?.clone();
        let profile = state.profiles.get(profile_uuid.as_str())?.clone();
        Some(CloudConfiguration {
            profile_uuid,
            profile,
        })
    }

    /// The escrow key a `POST /device/activationlock` stored for `serial`.
    pub fn activation_lock_escrow_key(&self, serial: &SerialNumber) -> Option<Option<String>> {
        self.shared
            .lock()
            .activation_locks
            .get(serial.as_str())
            .cloned()
    }

    /// Every API call answers 403 T_C_NOT_SIGNED while set.
    pub fn set_terms_not_signed(&self, not_signed: bool) {
        self.shared.lock().terms_not_signed = not_signed;
    }

    /// The next `count` API calls answer 429 with `Retry-After: retry_after_seconds`.
    pub fn inject_rate_limit(&self, count: u32, retry_after_seconds: u64) {
        let mut state = self.shared.lock();
        state.rate_limit_remaining = count;
        state.rate_limit_retry_after = retry_after_seconds;
    }

    /// The next `count` API calls answer 503.
    pub fn inject_server_errors(&self, count: u32) {
        self.shared.lock().server_errors_remaining = count;
    }

    /// Each serial is answered THROTTLED `times` times in assignment and removal before it goes through.
    pub fn throttle_serials(&self, serials: &[SerialNumber], times: u32, retry_after_seconds: u64) {
        let mut state = self.shared.lock();
        for serial in serials {
            state.throttled.insert(serial.to_string(), times);
        }
        state.throttle_retry_after = retry_after_seconds;
    }

    /// Every cursor issued so far answers EXPIRED_CURSOR.
    pub fn expire_cursors(&self) {
        self.shared.lock().cursor_epoch += 1;
    }

    /// Every session token issued so far stops working.
    pub fn expire_sessions(&self) {
        self.shared.lock().sessions.clear();
    }

    pub fn stats(&self) -> FakeStats {
        self.shared.lock().stats.clone()
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeDepServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// What a simulated device does at activation: asks the local DEP server which profile is assigned to its
/// serial. `Ok(None)` when none is.
pub async fn fetch_cloud_configuration(
    base_url: &str,
    root_certificate_der: Option<&[u8]>,
    serial: &SerialNumber,
) -> Result<Option<CloudConfiguration>, DepError> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(der) = root_certificate_der {
        let cert = reqwest::Certificate::from_der(der)
            .map_err(|e| DepError::Config(format!("root certificate: {e}")))?;
        builder = builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert);
    }
    let http = builder
        .build()
        .map_err(|e| DepError::Config(format!("http client: {e}")))?;
    let mut url = Url::parse(&format!(
        "{}/fake/cloud-configuration",
        base_url.trim_end_matches('/')
    ))
    .map_err(|e| DepError::Config(format!("base url: {e}")))?;
    url.query_pairs_mut().append_pair("serial", serial.as_str());
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| DepError::Transport(e.to_string()))?;
    match response.status() {
        StatusCode::NOT_FOUND => Ok(None),
        status if status.is_success() => response
            .json::<CloudConfiguration>()
            .await
            .map(Some)
            .map_err(|e| DepError::Malformed(e.to_string())),
        status => Err(DepError::Api {
            status: status.as_u16(),
            code: response.text().await.unwrap_or_default(),
        }),
    }
}

/// Which cipher ASM encrypts a server token with (both are seen in the field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCipher {
    Aes256Cbc,
    TripleDes,
}

/// Produces a `.p7m` server token the way ASM does: the token JSON, MIME-wrapped, S/MIME-encrypted to the
/// certificate the operator uploaded.
pub fn encrypt_server_token(
    token: &ServerToken,
    cert_pem: &[u8],
    cipher: TokenCipher,
) -> Result<Vec<u8>, DepError> {
    let cert = X509::from_pem(cert_pem)
        .map_err(|e| DepError::InvalidToken(format!("certificate pem: {e}")))?;
    let mut recipients = Stack::new()?;
    recipients.push(cert)?;
    let cipher = match cipher {
        TokenCipher::Aes256Cbc => Cipher::aes_256_cbc(),
        TokenCipher::TripleDes => Cipher::des_ede3_cbc(),
    };
    let content = mime_wrap_token_json(token.to_json().expose());
    let pkcs7 = Pkcs7::encrypt(&recipients, &content, cipher, Pkcs7Flags::BINARY)?;
    Ok(pkcs7.to_smime(&[], Pkcs7Flags::empty())?)
}

// ----- HTTP -----

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/session", get(session))
        .route("/account", get(account))
        .route("/server/devices", post(fetch_devices))
        .route("/devices/sync", post(sync_devices))
        .route("/devices", post(device_details))
        .route("/profile", post(define_profile).get(get_profile))
        .route(
            "/profile/devices",
            axum::routing::put(assign_profile)
                .post(assign_profile)
                .delete(remove_profile),
        )
        .route("/device/activationlock", post(activation_lock))
        .route("/devices/disown", post(disown_devices))
        .route("/fake/cloud-configuration", get(cloud_configuration))
        .with_state(shared)
}

async fn serve_tls(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    app: Router,
    mut shutdown: oneshot::Receiver<()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "fake dep accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    app.clone().oneshot(req.map(Body::new))
                });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// An error answer: a status and Apple's plain-text error code (and `Retry-After` for 429).
struct Refusal {
    status: StatusCode,
    code: String,
    retry_after: Option<u64>,
}

fn refuse(status: StatusCode, code: &str) -> Refusal {
    Refusal {
        status,
        code: code.to_owned(),
        retry_after: None,
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.status, [(CONTENT_TYPE, "text/plain")], self.code).into_response();
        if let Some(value) = self
            .retry_after
            .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
        {
            response.headers_mut().insert(RETRY_AFTER, value);
        }
        response
    }
}

type Answer = Result<Response, Refusal>;

fn json<T: Serialize>(value: &T, rotated_session: Option<String>) -> Answer {
    let body = serde_json::to_vec(value)
        .map_err(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"))?;
    let mut response = (
        StatusCode::OK,
        [(CONTENT_TYPE, "application/json;charset=UTF8")],
        body,
    )
        .into_response();
    if let Some(token) = rotated_session.and_then(|t| HeaderValue::from_str(&t).ok()) {
        response.headers_mut().insert(SESSION_HEADER, token);
    }
    Ok(response)
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body)
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST_BODY"))
}

/// The checks every API call passes before its handler runs: protocol header, terms, injected failures,
/// session. Returns the rotated session token to send back, if rotation is on.
fn gate(shared: &Shared, headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let now = shared.now();
    let mut state = shared.lock();
    let Some(version) = protocol_version(headers) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "SERVER_PROTOCOL_VERSION_REQUIRED",
        ));
    };
    state.stats.last_protocol_version = Some(version);
    if state.terms_not_signed {
        return Err(refuse(StatusCode::FORBIDDEN, "T_C_NOT_SIGNED"));
    }
    if state.rate_limit_remaining > 0 {
        state.rate_limit_remaining -= 1;
        state.stats.rate_limited += 1;
        return Err(Refusal {
            retry_after: Some(state.rate_limit_retry_after),
            ..refuse(StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS")
        });
    }
    if state.server_errors_remaining > 0 {
        state.server_errors_remaining -= 1;
        state.stats.server_errors += 1;
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
        ));
    }
    let token = headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let valid = state
        .sessions
        .get(&token)
        .is_some_and(|expires| now.0 < *expires);
    if !valid {
        state.sessions.remove(&token);
        state.stats.session_rejections += 1;
        return Err(match shared.config.session_expiry_answer {
            SessionExpiryAnswer::Unauthorized => refuse(StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            SessionExpiryAnswer::Forbidden => refuse(StatusCode::FORBIDDEN, "FORBIDDEN"),
        });
    }
    if shared.config.rotate_session_tokens {
        let expires = state.sessions.remove(&token).unwrap_or(now.0);
        let fresh = random_hex(24);
        state.sessions.insert(fresh.clone(), expires);
        return Ok(Some(fresh));
    }
    Ok(None)
}

/// The `X-Server-Protocol-Version` a request names (`gate` refuses requests without a valid one).
fn protocol_version(headers: &HeaderMap) -> Option<u32> {
    headers
        .get(PROTOCOL_VERSION_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A device record as Apple shapes it for the protocol version the client speaks: `os` and `device_family`
/// from version 2, iPads as `iPadOS` (not `iOS`) from 7, `mdm_migration_deadline` from 8.
fn record_for_version(mut record: DeviceRecord, version: u32) -> DeviceRecord {
    if version < 2 {
        record.os = None;
        record.device_family = None;
    } else if version < 7 && record.os.as_deref() == Some("iPadOS") {
        record.os = Some("iOS".into());
    }
    if version < 8 {
        record.mdm_migration_deadline = None;
    }
    record
}

fn oauth_refusal(shared: &Shared, why: &str) -> Refusal {
    shared.lock().stats.oauth_rejected += 1;
    tracing::debug!(why, "fake dep refused /session");
    refuse(StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
}

async fn session(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Answer {
    let header = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| oauth_refusal(&shared, "no authorization header"))?;
    // HTTP/2 carries the authority in the URI, HTTP/1.1 in Host.
    let authority = uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/session");
    let url = Url::parse(&format!("{}://{authority}{path_and_query}", shared.scheme))
        .map_err(|_| oauth_refusal(&shared, "request url"))?;
    let verified = oauth::verify_authorization(
        method.as_str(),
        &url,
        header,
        &shared.token.oauth_credentials(),
    )
    .map_err(|e| oauth_refusal(&shared, &format!("{e:?}")))?;
    let now = shared.now();
    if (verified.timestamp - now.0).abs() > shared.config.oauth_timestamp_tolerance_seconds {
        return Err(oauth_refusal(&shared, "oauth_timestamp outside the window"));
    }
    let fresh_nonce = shared
        .lock()
        .seen_nonces
        .insert(format!("{}:{}", verified.timestamp, verified.nonce));
    if !fresh_nonce {
        return Err(oauth_refusal(&shared, "oauth_nonce reused"));
    }
    let token = random_hex(24);
    {
        let mut state = shared.lock();
        state.sessions.insert(
            token.clone(),
            now.0.saturating_add(shared.config.session_lifetime_seconds),
        );
        state.stats.sessions_issued += 1;
    }
    json(
        &SessionResponse {
            auth_session_token: token,
        },
        None,
    )
}

async fn account(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Answer {
    let rotated = gate(&shared, &headers)?;
    json(&shared.account, rotated)
}

fn read_cursor(shared: &Shared, state: &FakeState, raw: &str) -> Result<Cursor, Refusal> {
    Cursor::decode(
        raw,
        &state.instance,
        state.cursor_epoch,
        shared.now(),
        shared.config.cursor_lifetime_seconds,
    )
    .map_err(|e| match e {
        CursorError::Invalid => refuse(StatusCode::BAD_REQUEST, "INVALID_CURSOR"),
        CursorError::Expired => refuse(StatusCode::BAD_REQUEST, "EXPIRED_CURSOR"),
    })
}

fn page_limit(requested: Option<u32>) -> usize {
    requested
        .map(|l| l as usize)
        .unwrap_or(DEFAULT_LIMIT)
        .clamp(1, MAX_SERIALS_PER_REQUEST)
}

async fn fetch_devices(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let rotated = gate(&shared, &headers)?;
    let request: CursorRequest = parse_body(&body)?;
    let now = shared.now();
    let mut state = shared.lock();
    state.stats.fetch_requests += 1;
    let cursor = match request.cursor.as_deref() {
        None => None,
        Some(raw) => Some(read_cursor(&shared, &state, raw)?),
    };
    let page = state
        .fetch(cursor.as_ref(), page_limit(request.limit), now)
        .map_err(|error_code| refuse(StatusCode::BAD_REQUEST, error_code))?;
    let version = protocol_version(&headers).unwrap_or_default();
    json(
        &DevicesResponse {
            devices: page
                .devices
                .into_iter()
                .map(|r| record_for_version(r, version))
                .collect(),
            cursor: Some(page.cursor),
            more_to_follow: page.more_to_follow,
            fetched_until: Some(now),
        },
        rotated,
    )
}

async fn sync_devices(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let rotated = gate(&shared, &headers)?;
    let request: CursorRequest = parse_body(&body)?;
    let now = shared.now();
    let mut state = shared.lock();
    state.stats.sync_requests += 1;
    let raw = request
        .cursor
        .as_deref()
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "CURSOR_REQUIRED"))?;
    let cursor = read_cursor(&shared, &state, raw)?;
    let page = state.sync(&cursor, page_limit(request.limit), now);
    let version = protocol_version(&headers).unwrap_or_default();
    json(
        &DevicesResponse {
            devices: page
                .devices
                .into_iter()
                .map(|r| record_for_version(r, version))
                .collect(),
            cursor: Some(page.cursor),
            more_to_follow: page.more_to_follow,
            fetched_until: Some(now),
        },
        rotated,
    )
}

async fn device_details(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let rotated = gate(&shared, &headers)?;
    let request: SerialsRequest = parse_body(&body)?;
    if request.devices.is_empty() {
        return Err(refuse(StatusCode::BAD_REQUEST, "DEVICE_ID_REQUIRED"));
    }
    let version = protocol_version(&headers).unwrap_or_default();
    let state = shared.lock();
    let devices: BTreeMap<String, DeviceDetails> = request
        .devices
        .iter()
        .map(|serial| {
            let details = match state.devices.get(serial) {
                Some(record) => DeviceDetails::from(&record_for_version(record.clone(), version)),
                None => DeviceDetails {
                    serial_number: Some(serial.clone()),
                    model: None,
                    description: None,
                    color: None,
                    asset_tag: None,
                    profile_status: None,
                    profile_uuid: None,
                    profile_assign_time: None,
                    profile_push_time: None,
                    device_assigned_date: None,
                    device_assigned_by: None,
                    os: None,
                    device_family: None,
                    mdm_migration_deadline: None,
                    response_status: Some(AssignStatus::NotAccessible),
                },
            };
            (serial.clone(), details)
        })
        .collect();
    json(&DeviceDetailsResponse { devices }, rotated)
}

async fn define_profile(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let rotated = gate(&shared, &headers)?;
    let mut profile: AdeProfile = parse_body(&body)?;
    profile
        .validate()
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, &format!("INVALID_PROFILE: {e}")))?;
    let now = shared.now();
    let profile_uuid =
        ProfileUuid::parse(&uuid::Uuid::new_v4().simple().to_string().to_uppercase())
            .map_err(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"))?;
    let serials = std::mem::take(&mut profile.devices);
    let mut state = shared.lock();
    state.stats.profile_requests += 1;
    state.profiles.insert(profile_uuid.to_string(), profile);
    let devices = serials
        .iter()
        .map(|serial| {
            let status = state.assign(&profile_uuid, serial.as_str(), now);
            (serial.to_string(), status)
        })
        .collect();
    json(
        &DefinedProfile {
            profile_uuid,
            devices,
        },
        rotated,
    )
}

#[derive(Deserialize)]
struct ProfileQuery {
    profile_uuid: Option<String>,
}

async fn get_profile(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<ProfileQuery>,
) -> Answer {
    let rotated = gate(&shared, &headers)?;
    let profile_uuid = query
        .profile_uuid
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "PROFILE_UUID_REQUIRED"))?;
    let profile = shared
        .lock()
        .profiles
        .get(&profile_uuid)
        .cloned()
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "PROFILE_NOT_FOUND"))?;
    json(&profile, rotated)
}

fn profile_devices_request(body: &[u8]) -> Result<ProfileDevicesRequest, Refusal> {
    let request: ProfileDevicesRequest = parse_body(body)?;
    if request.devices.is_empty() {
        return Err(refuse(StatusCode::BAD_REQUEST, "DEVICE_ID_REQUIRED"));
    }
    if request.devices.len() > MAX_SERIALS_PER_REQUEST {
        return Err(refuse(StatusCode::BAD_REQUEST, "TOO_MANY_DEVICES"));
    }
    Ok(request)
}

async fn assign_profile(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let rotated = gate(&shared, &headers)?;
    let request = profile_devices_request(&body)?;
    let profile_uuid = request
        .profile_uuid
        .as_deref()
        .and_then(|p| ProfileUuid::parse(p).ok())
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "PROFILE_UUID_REQUIRED"))?;
    let now = shared.now();
    let mut state = shared.lock();
    state.stats.profile_requests += 1;
    if !state.profiles.contains_key(profile_uuid.as_str()) {
        return Err(refuse(StatusCode::BAD_REQUEST, "PROFILE_NOT_FOUND"));
    }
    let devices = per_serial(&mut state, &request.devices, |state, serial| {
        state.assign(&profile_uuid, serial, now)
    });
    profile_devices_answer(&state, Some(profile_uuid.to_string()), devices, rotated)
}

async fn remove_profile(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let rotated = gate(&shared, &headers)?;
    let request = profile_devices_request(&body)?;
    let now = shared.now();
    let mut state = shared.lock();
    state.stats.profile_requests += 1;
    let devices = per_serial(&mut state, &request.devices, |state, serial| {
        state.unassign(serial, now)
    });
    profile_devices_answer(&state, request.profile_uuid, devices, rotated)
}

/// `POST /devices/disown`: Apple releases the serials from the organization's MDM server for good.
async fn disown_devices(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let rotated = gate(&shared, &headers)?;
    let request = profile_devices_request(&body)?;
    let now = shared.now();
    let mut state = shared.lock();
    let devices = per_serial(&mut state, &request.devices, |state, serial| {
        state.disown(serial, now)
    });
    json(&DisownResponse { devices }, rotated)
}

/// Each serial of a profile or disown request with what `act` did to it.
fn per_serial(
    state: &mut FakeState,
    serials: &[String],
    mut act: impl FnMut(&mut FakeState, &str) -> AssignStatus,
) -> BTreeMap<String, AssignStatus> {
    serials
        .iter()
        .map(|serial| (serial.clone(), act(state, serial)))
        .collect()
}

/// The answer to assigning or removing a profile: each serial's status, and Apple's wait when one was throttled.
fn profile_devices_answer(
    state: &FakeState,
    profile_uuid: Option<String>,
    devices: BTreeMap<String, AssignStatus>,
    rotated: Option<String>,
) -> Answer {
    let throttled = devices.values().any(|s| *s == AssignStatus::Throttled);
    json(
        &ProfileDevicesResponse {
            profile_uuid,
            devices,
            retry_after_seconds: throttled.then_some(state.throttle_retry_after),
        },
        rotated,
    )
}

async fn activation_lock(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let rotated = gate(&shared, &headers)?;
    let request: ActivationLockRequest = parse_body(&body)?;
    let mut state = shared.lock();
    let serial = request.device.to_string();
    let response_status = if !state.devices.contains_key(&serial) {
        ActivationLockStatus::NotAccessible
    } else if state.activation_locks.contains_key(&serial) {
        ActivationLockStatus::DeviceAlreadyLocked
    } else {
        state
            .activation_locks
            .insert(serial.clone(), request.escrow_key);
        ActivationLockStatus::Success
    };
    json(
        &ActivationLockResponse {
            serial_number: Some(serial),
            response_status,
        },
        rotated,
    )
}

#[derive(Deserialize)]
struct SerialQuery {
    serial: String,
}

/// Device-side activation lookup (no OAuth): the assigned profile; the device's profile status moves to
/// `pushed`, as at Apple when the device downloads it.
async fn cloud_configuration(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<SerialQuery>,
) -> Answer {
    let now = shared.now();
    let not_assigned = || refuse(StatusCode::NOT_FOUND, "NOT_ASSIGNED");
    let mut state = shared.lock();
    let profile_uuid = state
        .assignments
        .get(&query.serial)
        .cloned()
        .ok_or_else(not_assigned)?;
    let profile = state
        .profiles
        .get(profile_uuid.as_str())
        .cloned()
        .ok_or_else(not_assigned)?;
    // Apple reports the fetch in the sync feed (status `pushed`, with its time).
    if let Ok(serial) = SerialNumber::parse(&query.serial) {
        state.modify(
            &serial,
            |record| {
                record.profile_status = Some(ProfileStatus::Pushed);
                record.profile_push_time = Some(now);
            },
            now,
        );
    }
    tracing::debug!(serial = %query.serial, at = %format_time(now), "device fetched its cloud configuration");
    json(
        &CloudConfiguration {
            profile_uuid,
            profile,
        },
        None,
    )
}
