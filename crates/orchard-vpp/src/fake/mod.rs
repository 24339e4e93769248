//! A local Apps and Books server for tests, simulators and benchmarks (feature `fake`). It serves Apple's paths
//! under `/mdm/v2` with the real JSON shapes over TLS with its own test root: bearer content tokens checked
//! (missing 9601, unknown 9622, revoked 9625, expired 9621), client config with `mdmInfo` claims (a location can
//! start claimed by another MDM), paged assets and assignments, associate / disassociate / revoke as
//! asynchronous events that complete after a configured number of status polls (not wall-clock time), licence
//! counts that run out (9610), assets that cannot go to devices (9628), per-serial failures, and injected
//! 429/503 answers with `Retry-After`.
//!
//! A simulated iPad asks `GET /fake/licence?serialNumber=…&adamId=…` (no token; it stands in for the App Store
//! checking the device's licence when it installs) whether a licence is associated to its serial.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use orchard_pki::CertificateAuthority;
use orchard_types::{Clock, SystemClock, UnixTime};
use rand::Rng;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use crate::client::VppConfig;
use crate::error_numbers::*;
use crate::token::ContentToken;
use crate::types::{
    format_apple_time, AdamId, ApiError, Asset, AssetRef, AssetsPage, Assignment, AssignmentsPage,
    ClientConfig, ClientConfigRequest, ErrorInfo, EventKind, EventStatus, EventStatusKind, Limits,
    ManageAssetsRequest, MdmInfo, Paging, PricingParam, ServiceConfig, SubmittedEvent,
};
use crate::VppError;

/// How the local server behaves.
#[derive(Debug, Clone)]
pub struct FakeVppConfig {
    /// Serve HTTPS with a fresh test root (default) or plain HTTP.
    pub tls: bool,
    /// The server's "now" (token expiry). Share a `ManualClock` with Orchard to move time in tests.
    pub clock: Arc<dyn Clock>,
    /// Status polls answered PENDING before an event completes (0: the first poll sees it done).
    pub pending_polls: u32,
    /// What service config announces and what requests are checked against.
    pub limits: Limits,
    /// Items per page of assets and assignments.
    pub page_size: usize,
}

impl Default for FakeVppConfig {
    fn default() -> Self {
        Self {
            tls: true,
            clock: Arc::new(SystemClock),
            pending_polls: 1,
            limits: Limits::default(),
            page_size: 100,
        }
    }
}

/// What the server has seen, for assertions and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeVppStats {
    pub requests: u64,
    pub associate_requests: u64,
    pub disassociate_requests: u64,
    pub revoke_requests: u64,
    pub status_polls: u64,
    pub claims: u64,
    pub faults_served: u64,
    /// The most serials one associate / disassociate / revoke carried.
    pub max_serials_in_request: usize,
    /// The most assets one associate / disassociate carried.
    pub max_assets_in_request: usize,
}

#[derive(Debug, Clone)]
struct FakeAsset {
    total: i64,
    device_assignable: bool,
    revocable: bool,
    product_type: String,
}

#[derive(Debug, Clone)]
struct FakeEvent {
    kind: EventKind,
    request: ManageAssetsRequest,
    polls: u32,
    outcome: Option<EventStatus>,
}

#[derive(Debug)]
struct Location {
    name: String,
    uid: String,
    expires_at: UnixTime,
    revoked: bool,
    mdm_info: Option<MdmInfo>,
    assets: BTreeMap<AssetRef, FakeAsset>,
    associations: BTreeSet<(AssetRef, String)>,
    events: HashMap<String, FakeEvent>,
    version: u64,
}

impl Location {
    fn assigned(&self, asset: &AssetRef) -> i64 {
        self.associations.iter().filter(|(a, _)| a == asset).count() as i64
    }
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    status: StatusCode,
    retry_after: Option<u64>,
}

#[derive(Default)]
struct FakeState {
    /// Keyed by the bearer text (the whole content token).
    locations: HashMap<String, Location>,
    /// One entry per coming API request: `None` lets it through.
    faults: VecDeque<Option<Fault>>,
    failing_serials: BTreeMap<String, i64>,
    stats: FakeVppStats,
}

struct Shared {
    state: Mutex<FakeState>,
    config: FakeVppConfig,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn now(&self) -> UnixTime {
        self.config.clock.now()
    }
}

/// A running local Apps and Books server. Dropping it stops the server.
pub struct FakeVppServer {
    shared: Arc<Shared>,
    base_url: String,
    root_der: Option<Vec<u8>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeVppServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeVppServer")
            .field("base_url", &self.base_url)
            .finish()
    }
}

fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::thread_rng().fill(raw.as_mut_slice());
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

impl FakeVppServer {
    /// Binds 127.0.0.1 on a free port and starts serving.
    pub async fn start(config: FakeVppConfig) -> Result<Self, VppError> {
        let listener = TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
            .await
            .map_err(|e| VppError::Config(format!("fake vpp server bind: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| VppError::Config(format!("fake vpp server address: {e}")))?;
        let scheme = if config.tls { "https" } else { "http" };
        let shared = Arc::new(Shared {
            state: Mutex::new(FakeState::default()),
            config: config.clone(),
        });
        let app = router(shared.clone());
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let (task, root_der) = if config.tls {
            // Valid by the wall clock rustls checks, whatever the configured clock says.
            let wall = SystemClock.now();
            let crypto = |e: String| VppError::Config(format!("fake vpp tls: {e}"));
            let ca = CertificateAuthority::generate("Orchard Fake Apps and Books Root", wall, 30)
                .map_err(|e| crypto(e.to_string()))?;
            let identity = ca
                .issue_tls_server(
                    &["localhost".to_string()],
                    &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                    wall,
                    30,
                )
                .map_err(|e| crypto(e.to_string()))?;
            let key_der = identity
                .private_key()
                .private_key_to_pkcs8()
                .map_err(|e| crypto(e.to_string()))?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut tls = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| crypto(e.to_string()))?
                .with_no_client_auth()
                .with_single_cert(
                    vec![rustls::pki_types::CertificateDer::from(identity.cert_der())],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into()),
                )
                .map_err(|e| crypto(e.to_string()))?;
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
                    tracing::warn!(error = %e, "fake vpp server stopped");
                }
            });
            (task, None)
        };
        Ok(Self {
            shared,
            base_url: format!("{scheme}://{addr}"),
            root_der,
            shutdown: Some(shutdown_tx),
            task: Some(task),
        })
    }

    /// `https://127.0.0.1:PORT` (the API lives under `/mdm/v2`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// What Orchard's `--vpp-base-url` should be.
    pub fn api_base_url(&self) -> String {
        format!("{}/mdm/v2", self.base_url)
    }

    pub fn root_certificate_der(&self) -> Option<Vec<u8>> {
        self.root_der.clone()
    }

    /// A client configuration pointing at this server, trusting its root, polling without pauses and retrying
    /// quickly.
    pub fn client_config(&self) -> VppConfig {
        let mut config = VppConfig {
            base_url: self.api_base_url(),
            root_certificates_der: self.root_der.clone().into_iter().collect(),
            status_poll_interval: Duration::ZERO,
            max_status_polls: self.shared.config.pending_polls + 5,
            ..VppConfig::default()
        };
        config.retry.initial_backoff = Duration::from_millis(10);
        config.retry.max_backoff = Duration::from_millis(50);
        config
    }

    /// Adds a location and returns its content token as Apple School Manager would let one download it
    /// (valid for a year by the server's clock).
    pub fn add_location(&self, name: &str) -> String {
        let expires_at = self.shared.now().plus_seconds(365 * 86_400);
        let bearer = ContentToken::encode(&random_hex(48), expires_at, name);
        self.shared.lock().locations.insert(
            bearer.clone(),
            Location {
                name: name.to_owned(),
                uid: format!(
                    "{}",
                    rand::thread_rng().gen_range(1_000_000_000_000u64..9_999_999_999_999)
                ),
                expires_at,
                revoked: false,
                mdm_info: None,
                assets: BTreeMap::new(),
                associations: BTreeSet::new(),
                events: HashMap::new(),
                version: 1,
            },
        );
        bearer
    }

    /// A second token for the same location (renewal): the old one is revoked (9625) as at Apple.
    pub fn renew_token(&self, token: &str) -> Option<String> {
        let expires_at = self.shared.now().plus_seconds(365 * 86_400);
        let mut state = self.shared.lock();
        let mut location = state.locations.remove(token)?;
        let bearer = ContentToken::encode(&random_hex(48), expires_at, &location.name);
        location.expires_at = expires_at;
        let old = Location {
            name: location.name.clone(),
            uid: location.uid.clone(),
            expires_at: location.expires_at,
            revoked: true,
            mdm_info: None,
            assets: BTreeMap::new(),
            associations: BTreeSet::new(),
            events: HashMap::new(),
            version: 0,
        };
        state.locations.insert(bearer.clone(), location);
        state.locations.insert(token.to_owned(), old);
        Some(bearer)
    }

    /// Adds (or replaces) an app with `total` STDQ licences.
    pub fn add_asset(&self, token: &str, adam_id: &str, total: i64, device_assignable: bool) {
        let Ok(adam_id) = AdamId::parse(adam_id) else {
            return;
        };
        self.with_location(token, |l| {
            l.assets.insert(
                AssetRef {
                    adam_id,
                    pricing_param: PricingParam::Stdq,
                },
                FakeAsset {
                    total,
                    device_assignable,
                    revocable: true,
                    product_type: "App".into(),
                },
            );
            l.version += 1;
        });
    }

    /// Buys (or retires) licences: sets an app's total.
    pub fn set_total(&self, token: &str, adam_id: &str, total: i64) {
        self.with_location(token, |l| {
            for (asset, fake) in l.assets.iter_mut() {
                if asset.adam_id.as_str() == adam_id {
                    fake.total = total;
                }
            }
            l.version += 1;
        });
    }

    /// Another MDM claims the location (as if it had posted client config with its own `mdmInfo`).
    pub fn claim_by_other(&self, token: &str, other: MdmInfo) {
        self.with_location(token, |l| l.mdm_info = Some(other));
    }

    pub fn mdm_info(&self, token: &str) -> Option<MdmInfo> {
        self.shared
            .lock()
            .locations
            .get(token)
            .and_then(|l| l.mdm_info.clone())
    }

    pub fn revoke_token(&self, token: &str) {
        self.with_location(token, |l| l.revoked = true);
    }

    /// Makes the token expire now (by the server's clock).
    pub fn expire_token(&self, token: &str) {
        let now = self.shared.now();
        self.with_location(token, |l| l.expires_at = now.plus_seconds(-1));
    }

    /// `(adamId, serial)` of every licence associated in the location.
    pub fn associations(&self, token: &str) -> BTreeSet<(String, String)> {
        self.shared
            .lock()
            .locations
            .get(token)
            .map(|l| {
                l.associations
                    .iter()
                    .map(|(a, s)| (a.adam_id.to_string(), s.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `(total, assigned, available)` of an app.
    pub fn counts(&self, token: &str, adam_id: &str) -> Option<(i64, i64, i64)> {
        let state = self.shared.lock();
        let location = state.locations.get(token)?;
        let (asset, fake) = location
            .assets
            .iter()
            .find(|(a, _)| a.adam_id.as_str() == adam_id)?;
        let assigned = location.assigned(asset);
        Some((fake.total, assigned, (fake.total - assigned).max(0)))
    }

    /// Whether any location has a licence for `adam_id` associated to `serial` (what the App Store checks when
    /// the device installs).
    pub fn is_associated(&self, serial: &str, adam_id: &str) -> bool {
        is_associated(&self.shared.lock(), serial, adam_id)
    }

    /// The next `count` API requests are answered `status` (with `Retry-After` when given).
    pub fn inject_fault(&self, status: u16, retry_after: Option<u64>, count: usize) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut state = self.shared.lock();
        for _ in 0..count {
            state.faults.push_back(Some(Fault {
                status,
                retry_after,
            }));
        }
    }

    /// Drops the injected faults not served yet (Apple is back).
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Lets the next `skip` API requests through, then answers one with `status` (a failure in the middle of a
    /// batched submission).
    pub fn inject_fault_after(&self, skip: usize, status: u16, retry_after: Option<u64>) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut state = self.shared.lock();
        for _ in 0..skip {
            state.faults.push_back(None);
        }
        state.faults.push_back(Some(Fault {
            status,
            retry_after,
        }));
    }

    /// Every event touching `serial` fails for it with `error_number` until [`FakeVppServer::heal_serial`].
    pub fn fail_serial(&self, serial: &str, error_number: i64) {
        self.shared
            .lock()
            .failing_serials
            .insert(serial.to_owned(), error_number);
    }

    pub fn heal_serial(&self, serial: &str) {
        self.shared.lock().failing_serials.remove(serial);
    }

    pub fn stats(&self) -> FakeVppStats {
        self.shared.lock().stats.clone()
    }

    fn with_location(&self, token: &str, change: impl FnOnce(&mut Location)) {
        if let Some(l) = self.shared.lock().locations.get_mut(token) {
            change(l);
        }
    }
}

impl Drop for FakeVppServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn is_associated(state: &FakeState, serial: &str, adam_id: &str) -> bool {
    state.locations.values().any(|l| {
        !l.revoked
            && l.associations
                .iter()
                .any(|(a, s)| s == serial && a.adam_id.as_str() == adam_id)
    })
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
                    tracing::warn!(error = %e, "fake vpp accept failed");
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

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/mdm/v2/service/config", get(service_config))
        .route(
            "/mdm/v2/client/config",
            get(get_client_config).post(post_client_config),
        )
        .route("/mdm/v2/assets", get(assets))
        .route("/mdm/v2/assets/associate", post(associate))
        .route("/mdm/v2/assets/disassociate", post(disassociate))
        .route("/mdm/v2/assets/revoke", post(revoke))
        .route("/mdm/v2/assignments", get(assignments))
        .route("/mdm/v2/status", get(status))
        .route("/fake/licence", get(licence_lookup))
        .with_state(shared)
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn apple_error(status: StatusCode, number: i64, message: &str) -> Response {
    json(
        status,
        &ApiError {
            error_number: number,
            error_message: Some(message.to_owned()),
            error_info: None,
        },
    )
}

/// Counts the request and serves an injected fault if one is queued.
#[allow(clippy::result_large_err)] // handler-local: the error is the answer
fn admit(shared: &Shared) -> Result<(), Response> {
    let mut state = shared.lock();
    state.stats.requests += 1;
    if let Some(Some(fault)) = state.faults.pop_front() {
        state.stats.faults_served += 1;
        let mut response = apple_error(fault.status, INTERNAL_ERROR, "Internal error.");
        if let Some(seconds) = fault.retry_after {
            if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(RETRY_AFTER, v);
            }
        }
        return Err(response);
    }
    Ok(())
}

/// The location a request's bearer token names, checked like Apple does.
#[allow(clippy::result_large_err)] // handler-local: the error is the answer
fn authenticate<'a>(
    state: &'a mut FakeState,
    headers: &HeaderMap,
    now: UnixTime,
) -> Result<(&'a str, &'a mut Location), Response> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| apple_error(StatusCode::UNAUTHORIZED, LOGIN_REQUIRED, "Login required."))?;
    let (key, location) = state
        .locations
        .iter_mut()
        .find(|(k, _)| k.as_str() == bearer)
        .ok_or_else(|| {
            apple_error(
                StatusCode::UNAUTHORIZED,
                INVALID_TOKEN,
                "Invalid authentication token.",
            )
        })?;
    if location.revoked {
        return Err(apple_error(
            StatusCode::UNAUTHORIZED,
            TOKEN_REVOKED,
            "The sToken has been revoked.",
        ));
    }
    if location.expires_at <= now {
        return Err(apple_error(
            StatusCode::UNAUTHORIZED,
            TOKEN_EXPIRED,
            "The token has expired. Generate a new token in Apple School Manager.",
        ));
    }
    Ok((key.as_str(), location))
}

async fn service_config(State(shared): State<Arc<Shared>>) -> Response {
    if let Err(r) = admit(&shared) {
        return r;
    }
    let codes = [
        (MISSING_ARGUMENT, "Missing required argument."),
        (LOGIN_REQUIRED, "Login required."),
        (INVALID_ARGUMENT, "Invalid argument."),
        (INTERNAL_ERROR, "Internal error."),
        (LICENSE_NOT_FOUND, "License not found."),
        (LICENSE_NOT_ASSOCIATED, "License not associated."),
        (
            TOKEN_EXPIRED,
            "The token has expired. Generate a new token in Apple School Manager.",
        ),
        (INVALID_TOKEN, "Invalid authentication token."),
        (TOKEN_REVOKED, "The sToken has been revoked."),
        (
            INELIGIBLE_DEVICE_ASSIGNMENT,
            "Ineligible device assignment.",
        ),
    ];
    let base = "https://vpp.itunes.apple.com/mdm/v2";
    let config = ServiceConfig {
        error_codes: codes
            .iter()
            .map(|(n, m)| ApiError {
                error_number: *n,
                error_message: Some((*m).into()),
                error_info: None,
            })
            .collect(),
        limits: shared.config.limits.clone(),
        notification_types: [
            "ASSET_MANAGEMENT",
            "ASSET_COUNT",
            "USER_ASSOCIATED",
            "USER_MANAGEMENT",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        urls: ["assets", "assignments", "clientConfig", "status"]
            .iter()
            .map(|k| {
                (
                    (*k).to_owned(),
                    serde_json::Value::String(format!("{base}/{k}")),
                )
            })
            .collect(),
    };
    json(StatusCode::OK, &config)
}

fn client_config_of(location: &Location) -> ClientConfig {
    ClientConfig {
        country_code: Some("SE".into()),
        default_platform: Some("volumestore".into()),
        location_name: Some(location.name.clone()),
        mdm_info: location.mdm_info.clone(),
        notification_url: None,
        subscribed_notification_types: Vec::new(),
        token_expiration_date: Some(format_apple_time(location.expires_at)),
        u_id: Some(location.uid.clone()),
        website_url: Some("https://school.apple.com".into()),
    }
}

async fn get_client_config(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(r) = admit(&shared) {
        return r;
    }
    let now = shared.now();
    let mut state = shared.lock();
    match authenticate(&mut state, &headers, now) {
        Ok((_, location)) => json(StatusCode::OK, &client_config_of(location)),
        Err(r) => r,
    }
}

async fn post_client_config(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = admit(&shared) {
        return r;
    }
    let Ok(request) = serde_json::from_slice::<ClientConfigRequest>(&body) else {
        return apple_error(
            StatusCode::BAD_REQUEST,
            INVALID_ARGUMENT,
            "Invalid argument.",
        );
    };
    let now = shared.now();
    let mut state = shared.lock();
    state.stats.claims += 1;
    match authenticate(&mut state, &headers, now) {
        Ok((_, location)) => {
            if let Some(info) = request.mdm_info {
                location.mdm_info = Some(info);
            }
            json(StatusCode::OK, &client_config_of(location))
        }
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageQuery {
    page_index: Option<u32>,
    adam_id: Option<String>,
    serial_number: Option<String>,
}

fn paging(location: &Location, index: usize, total_items: usize, page_size: usize) -> Paging {
    let page_size = page_size.max(1);
    let total_pages = total_items.div_ceil(page_size).max(1);
    Paging {
        current_page_index: index as u32,
        next_page_index: (index + 1 < total_pages).then_some(index as u32 + 1),
        size: 0,
        total_pages: total_pages as u32,
        version_id: Some(format!("v{}", location.version)),
        token_expiration_date: Some(format_apple_time(location.expires_at)),
        u_id: Some(location.uid.clone()),
        mdm_info: location.mdm_info.clone(),
    }
}

async fn assets(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    if let Err(r) = admit(&shared) {
        return r;
    }
    let now = shared.now();
    let page_size = shared.config.page_size.max(1);
    let mut state = shared.lock();
    let (_, location) = match authenticate(&mut state, &headers, now) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let all: Vec<Asset> = location
        .assets
        .iter()
        .filter(|(a, _)| {
            query
                .adam_id
                .as_deref()
                .is_none_or(|id| a.adam_id.as_str() == id)
        })
        .map(|(asset, fake)| {
            let assigned = location.assigned(asset);
            Asset {
                adam_id: asset.adam_id.clone(),
                pricing_param: asset.pricing_param.clone(),
                assigned_count: assigned,
                available_count: (fake.total - assigned).max(0),
                total_count: fake.total,
                retired_count: 0,
                device_assignable: fake.device_assignable,
                revocable: fake.revocable,
                product_type: Some(fake.product_type.clone()),
                supported_platforms: vec!["iOS".into(), "iPadOS".into()],
            }
        })
        .collect();
    let index = query.page_index.unwrap_or(0) as usize;
    let mut paging = paging(location, index, all.len(), page_size);
    let page: Vec<Asset> = all
        .into_iter()
        .skip(index * page_size)
        .take(page_size)
        .collect();
    paging.size = page.len() as u32;
    json(
        StatusCode::OK,
        &AssetsPage {
            assets: page,
            paging,
        },
    )
}

async fn assignments(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    if let Err(r) = admit(&shared) {
        return r;
    }
    let now = shared.now();
    let page_size = shared.config.page_size.max(1);
    let mut state = shared.lock();
    let (_, location) = match authenticate(&mut state, &headers, now) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let all: Vec<Assignment> = location
        .associations
        .iter()
        .filter(|(a, _)| {
            query
                .adam_id
                .as_deref()
                .is_none_or(|id| a.adam_id.as_str() == id)
        })
        .filter(|(_, s)| query.serial_number.as_deref().is_none_or(|q| q == s))
        .map(|(a, s)| Assignment {
            adam_id: a.adam_id.clone(),
            pricing_param: a.pricing_param.clone(),
            serial_number: Some(s.clone()),
            client_user_id: None,
        })
        .collect();
    let index = query.page_index.unwrap_or(0) as usize;
    let mut paging = paging(location, index, all.len(), page_size);
    let page: Vec<Assignment> = all
        .into_iter()
        .skip(index * page_size)
        .take(page_size)
        .collect();
    paging.size = page.len() as u32;
    json(
        StatusCode::OK,
        &AssignmentsPage {
            assignments: page,
            paging,
        },
    )
}

async fn associate(State(s): State<Arc<Shared>>, h: HeaderMap, b: Bytes) -> Response {
    submit(&s, &h, &b, EventKind::Associate)
}

async fn disassociate(State(s): State<Arc<Shared>>, h: HeaderMap, b: Bytes) -> Response {
    submit(&s, &h, &b, EventKind::Disassociate)
}

async fn revoke(State(s): State<Arc<Shared>>, h: HeaderMap, b: Bytes) -> Response {
    submit(&s, &h, &b, EventKind::Revoke)
}

fn submit(shared: &Shared, headers: &HeaderMap, body: &[u8], kind: EventKind) -> Response {
    if let Err(r) = admit(shared) {
        return r;
    }
    let now = shared.now();
    let limits = shared.config.limits.clone();
    let mut state = shared.lock();
    let (_, location) = match authenticate(&mut state, headers, now) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let Ok(request) = serde_json::from_slice::<ManageAssetsRequest>(body) else {
        return apple_error(
            StatusCode::BAD_REQUEST,
            INVALID_ARGUMENT,
            "Invalid argument.",
        );
    };
    let needs_assets = kind != EventKind::Revoke;
    if request.serial_numbers.is_empty() || (needs_assets && request.assets.is_empty()) {
        return apple_error(
            StatusCode::BAD_REQUEST,
            MISSING_ARGUMENT,
            "Missing required argument.",
        );
    }
    if request.serial_numbers.len() > limits.max_serial_numbers
        || request.assets.len() > limits.max_assets
    {
        return apple_error(
            StatusCode::BAD_REQUEST,
            INVALID_ARGUMENT,
            "Invalid argument.",
        );
    }
    let event_id = uuid::Uuid::new_v4().to_string();
    let answer = SubmittedEvent {
        event_id: crate::types::EventId(event_id.clone()),
        mdm_info: location.mdm_info.clone(),
        token_expiration_date: Some(format_apple_time(location.expires_at)),
        u_id: Some(location.uid.clone()),
    };
    let serials = request.serial_numbers.len();
    let assets = request.assets.len();
    location.events.insert(
        event_id,
        FakeEvent {
            kind: kind.clone(),
            request,
            polls: 0,
            outcome: None,
        },
    );
    let stats = &mut state.stats;
    match kind {
        EventKind::Associate => stats.associate_requests += 1,
        EventKind::Disassociate => stats.disassociate_requests += 1,
        _ => stats.revoke_requests += 1,
    }
    stats.max_serials_in_request = stats.max_serials_in_request.max(serials);
    stats.max_assets_in_request = stats.max_assets_in_request.max(assets);
    json(StatusCode::OK, &answer)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusQuery {
    event_id: Option<String>,
}

async fn status(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<StatusQuery>,
) -> Response {
    if let Err(r) = admit(&shared) {
        return r;
    }
    let now = shared.now();
    let pending_polls = shared.config.pending_polls;
    let mut guard = shared.lock();
    guard.stats.status_polls += 1;
    let state = &mut *guard;
    let failing = state.failing_serials.clone();
    let (_, location) = match authenticate(state, &headers, now) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let Some(event_id) = query.event_id else {
        return apple_error(
            StatusCode::BAD_REQUEST,
            MISSING_ARGUMENT,
            "Missing required argument.",
        );
    };
    let Some(mut event) = location.events.remove(&event_id) else {
        return apple_error(StatusCode::NOT_FOUND, RESULT_NOT_FOUND, "Result not found.");
    };
    event.polls += 1;
    if event.outcome.is_none() && event.polls > pending_polls {
        event.outcome = Some(complete(location, &event, &failing));
    }
    let answer = event.outcome.clone().unwrap_or_else(|| EventStatus {
        event_status: EventStatusKind::Pending,
        event_type: Some(event.kind.clone()),
        failures: Vec::new(),
        num_completed: Some(0),
        num_requested: None,
        token_expiration_date: Some(format_apple_time(location.expires_at)),
        u_id: Some(location.uid.clone()),
    });
    location.events.insert(event_id, event);
    json(StatusCode::OK, &answer)
}

/// Applies an event to the location and says what happened, per serial.
fn complete(
    location: &mut Location,
    event: &FakeEvent,
    failing: &BTreeMap<String, i64>,
) -> EventStatus {
    let mut failures: BTreeMap<i64, (BTreeSet<String>, BTreeSet<AssetRef>)> = BTreeMap::new();
    let mut fail = |number: i64, serial: &str, asset: Option<&AssetRef>| {
        let entry = failures.entry(number).or_default();
        entry.0.insert(serial.to_owned());
        if let Some(a) = asset {
            entry.1.insert(a.clone());
        }
    };
    let mut requested = 0i64;
    let mut completed = 0i64;
    let serials: Vec<String> = {
        let mut seen = BTreeSet::new();
        event
            .request
            .serial_numbers
            .iter()
            .filter(|s| seen.insert((*s).clone()))
            .cloned()
            .collect()
    };
    match event.kind {
        EventKind::Revoke => {
            for serial in &serials {
                requested += 1;
                if let Some(number) = failing.get(serial) {
                    fail(*number, serial, None);
                    continue;
                }
                location.associations.retain(|(_, s)| s != serial);
                completed += 1;
            }
        }
        _ => {
            for asset in &event.request.assets {
                for serial in &serials {
                    requested += 1;
                    if let Some(number) = failing.get(serial) {
                        fail(*number, serial, Some(asset));
                        continue;
                    }
                    let key = (asset.clone(), serial.clone());
                    if event.kind == EventKind::Associate {
                        let Some(fake) = location.assets.get(asset).cloned() else {
                            fail(LICENSE_NOT_FOUND, serial, Some(asset));
                            continue;
                        };
                        if !fake.device_assignable {
                            fail(INELIGIBLE_DEVICE_ASSIGNMENT, serial, Some(asset));
                            continue;
                        }
                        if location.associations.contains(&key) {
                            completed += 1;
                            continue;
                        }
                        if location.assigned(asset) >= fake.total {
                            fail(LICENSE_NOT_FOUND, serial, Some(asset));
                            continue;
                        }
                        location.associations.insert(key);
                        completed += 1;
                    } else if location.associations.remove(&key) {
                        completed += 1;
                    } else {
                        fail(LICENSE_NOT_ASSOCIATED, serial, Some(asset));
                    }
                }
            }
        }
    }
    location.version += 1;
    let failures: Vec<ApiError> = failures
        .into_iter()
        .map(|(number, (serials, assets))| ApiError {
            error_number: number,
            error_message: Some(
                match number {
                    LICENSE_NOT_FOUND => "License not found.",
                    LICENSE_NOT_ASSOCIATED => "License not associated.",
                    INELIGIBLE_DEVICE_ASSIGNMENT => "Ineligible device assignment.",
                    _ => "Internal error.",
                }
                .into(),
            ),
            error_info: Some(ErrorInfo {
                serial_numbers: serials.into_iter().collect(),
                client_user_ids: Vec::new(),
                assets: assets.into_iter().collect(),
            }),
        })
        .collect();
    EventStatus {
        event_status: if failures.is_empty() {
            EventStatusKind::Complete
        } else {
            EventStatusKind::Failed
        },
        event_type: Some(event.kind.clone()),
        failures,
        num_completed: Some(completed),
        num_requested: Some(requested),
        token_expiration_date: Some(format_apple_time(location.expires_at)),
        u_id: Some(location.uid.clone()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LicenceQuery {
    serial_number: String,
    adam_id: String,
}

/// The simulator's question: does this serial hold a licence for this app?
async fn licence_lookup(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<LicenceQuery>,
) -> Response {
    let associated = is_associated(&shared.lock(), &query.serial_number, &query.adam_id);
    json(
        StatusCode::OK,
        &serde_json::json!({ "associated": associated }),
    )
}
