//! The typed Device Assignment API client over reqwest (rustls). Session handling is hidden inside: the OAuth
//! 1.0a `/session` call, the newest `X-ADM-Auth-Session` kept from every response, renewal on 401 or a 403
//! `FORBIDDEN` with one retry; 429 and 5xx are retried with backoff that honours `Retry-After`, a bounded
//! number of times. Base URL and trusted roots are configurable so tests reach the local DEP server over TLS.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use orchard_types::{Clock, SerialNumber, UnixTime};
use rand::Rng;
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::profile::{AdeProfile, MAX_SERIALS_PER_REQUEST};
use crate::sync::{DevicePage, SyncPhase};
use crate::token::ServerToken;
use crate::types::{
    format_time, Account, ActivationLockRequest, ActivationLockResponse, AssignStatus,
    AssignmentReport, CursorRequest, DefinedProfile, DepCursor, DeviceDetails,
    DeviceDetailsResponse, DeviceRecord, DevicesResponse, DisownResponse, ProfileDevicesRequest,
    ProfileDevicesResponse, ProfileUuid, SerialsRequest, SessionResponse,
};
use crate::{oauth, DepError};

/// Apple's production endpoint.
pub const APPLE_DEP_BASE_URL: &str = "https://mdmenrollment.apple.com";
/// The protocol version we speak: Apple's current one (8: `mdm_migration_deadline` on device records; 7: iPads
/// report `iPadOS`; 3: account and profile fields). Newer versions only add fields, which we keep or ignore.
pub const SERVER_PROTOCOL_VERSION: u32 = 8;
/// Apple's maximum `limit` for fetch and sync.
pub const MAX_PAGE_LIMIT: u32 = 1000;
/// Header carrying the session token, both ways.
pub const SESSION_HEADER: &str = "X-ADM-Auth-Session";
pub const PROTOCOL_VERSION_HEADER: &str = "X-Server-Protocol-Version";
/// The content type Apple documents (sic: `UTF8`).
pub const JSON_CONTENT_TYPE: &str = "application/json;charset=UTF8";

/// A page of 1,000 devices is well under 1 MiB; this only stops a runaway answer.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Wait for THROTTLED serials when Apple names no `retry_after_seconds`.
const DEFAULT_THROTTLE_WAIT: Duration = Duration::from_secs(5);

/// How hard to try before giving up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request for 429, 5xx and transport errors (the first one included).
    pub max_attempts: u32,
    /// Backoff before the 2nd attempt when there is no `Retry-After`; doubles each time, with jitter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` (or `retry_after_seconds`) longer than this is not waited out inside a call: the call
    /// fails with [`DepError::RateLimited`] and the caller schedules the retry.
    pub max_retry_after: Duration,
    /// Extra rounds for serials answered THROTTLED in profile assignment.
    pub throttled_retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
            throttled_retries: 5,
        }
    }
}

/// Where and how to reach the Device Assignment service.
#[derive(Debug, Clone)]
pub struct DepConfig {
    /// [`APPLE_DEP_BASE_URL`] in production. `http://` is accepted for loopback hosts only.
    pub base_url: String,
    pub server_protocol_version: u32,
    /// DER roots to trust instead of the built-in public roots (the local DEP server's test root). Empty:
    /// the public web PKI roots.
    pub root_certificates_der: Vec<Vec<u8>>,
    pub user_agent: String,
    /// Devices per fetch/sync page (1..=1000).
    pub page_limit: u32,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for DepConfig {
    fn default() -> Self {
        Self {
            base_url: APPLE_DEP_BASE_URL.into(),
            server_protocol_version: SERVER_PROTOCOL_VERSION,
            root_certificates_der: Vec::new(),
            user_agent: concat!("orchard-dep/", env!("CARGO_PKG_VERSION")).into(),
            page_limit: MAX_PAGE_LIMIT,
            request_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        }
    }
}

/// Where OAuth nonces come from (injected so tests can pin them).
pub trait NonceSource: Send + Sync + fmt::Debug {
    fn nonce(&self) -> String;
}

/// 32 random alphanumerics per request.
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomNonce;

impl NonceSource for RandomNonce {
    fn nonce(&self) -> String {
        rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect()
    }
}

/// How one request authenticates.
#[derive(Clone, Copy)]
enum Auth<'a> {
    /// `GET /session`: the OAuth 1.0a header, signed afresh for every attempt.
    OAuth,
    Session(&'a str),
}

/// A final HTTP answer (after retries of 429/5xx).
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

/// A client for one server token (one ASM "MDM server"). Cheap to share behind an `Arc`; methods take `&self`.
pub struct DepClient {
    http: reqwest::Client,
    base_url: String,
    config: DepConfig,
    token: ServerToken,
    clock: Arc<dyn Clock>,
    nonces: Arc<dyn NonceSource>,
    session: Mutex<Option<String>>,
    sessions_started: AtomicU64,
}

impl fmt::Debug for DepClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DepClient")
            .field("base_url", &self.base_url)
            .field("consumer_key", &self.token.consumer_key)
            .finish()
    }
}

impl DepClient {
    pub fn new(
        config: DepConfig,
        token: ServerToken,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, DepError> {
        let base = Url::parse(&config.base_url)
            .map_err(|e| DepError::Config(format!("base url {:?}: {e}", config.base_url)))?;
        let loopback = matches!(base.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        match base.scheme() {
            "https" => {}
            "http" if loopback => {}
            other => {
                return Err(DepError::Config(format!(
                    "base url scheme {other:?}: https is required (http only for loopback test servers)"
                )))
            }
        }
        if config.page_limit == 0 || config.page_limit > MAX_PAGE_LIMIT {
            return Err(DepError::Config(format!(
                "page_limit {} outside 1..={MAX_PAGE_LIMIT}",
                config.page_limit
            )));
        }
        if config.retry.max_attempts == 0 {
            return Err(DepError::Config(
                "retry.max_attempts must be at least 1".into(),
            ));
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .timeout(config.request_timeout)
            .connect_timeout(Duration::from_secs(15))
            .pool_idle_timeout(Duration::from_secs(60));
        if !config.root_certificates_der.is_empty() {
            builder = builder.tls_built_in_root_certs(false);
            for der in &config.root_certificates_der {
                let cert = reqwest::Certificate::from_der(der)
                    .map_err(|e| DepError::Config(format!("root certificate: {e}")))?;
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| DepError::Config(format!("http client: {}", error_chain(&e))))?;
        Ok(Self {
            http,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            config,
            token,
            clock,
            nonces: Arc::new(RandomNonce),
            session: Mutex::new(None),
            sessions_started: AtomicU64::new(0),
        })
    }

    /// Replaces the nonce source (tests).
    pub fn with_nonce_source(mut self, nonces: Arc<dyn NonceSource>) -> Self {
        self.nonces = nonces;
        self
    }

    pub fn config(&self) -> &DepConfig {
        &self.config
    }

    pub fn server_token(&self) -> &ServerToken {
        &self.token
    }

    /// How many `/session` calls succeeded (one, plus one per renewal).
    pub fn sessions_started(&self) -> u64 {
        self.sessions_started.load(Ordering::Relaxed)
    }

    /// `GET /account`.
    pub async fn account(&self) -> Result<Account, DepError> {
        self.call_json::<(), _>(Method::GET, self.endpoint("/account")?, None)
            .await
    }

    /// `POST /server/devices`: one page of the full device list. `cursor` is `None` for the first page.
    /// Returns the page as Apple sent it (see [`DepClient::sync`] for the loop with duplicate resolution).
    pub async fn fetch_devices(
        &self,
        cursor: Option<&DepCursor>,
        limit: Option<u32>,
    ) -> Result<DevicePage, DepError> {
        let body = CursorRequest {
            cursor: cursor.map(|c| c.as_str().to_owned()),
            limit: Some(self.limit(limit)),
        };
        let bytes = self
            .call(
                Method::POST,
                self.endpoint("/server/devices")?,
                Some(to_json(&body)?),
            )
            .await?;
        parse_device_page(&bytes, SyncPhase::Fetch)
    }

    /// `POST /devices/sync`: one page of changes since `cursor`.
    pub async fn sync_devices(
        &self,
        cursor: &DepCursor,
        limit: Option<u32>,
    ) -> Result<DevicePage, DepError> {
        let body = CursorRequest {
            cursor: Some(cursor.as_str().to_owned()),
            limit: Some(self.limit(limit)),
        };
        let bytes = self
            .call(
                Method::POST,
                self.endpoint("/devices/sync")?,
                Some(to_json(&body)?),
            )
            .await?;
        parse_device_page(&bytes, SyncPhase::Sync)
    }

    /// `POST /devices`: details of the given serials (1,000 per request). Serials Apple does not show come back
    /// with `response_status` NOT_ACCESSIBLE.
    pub async fn device_details(
        &self,
        serials: &[SerialNumber],
    ) -> Result<BTreeMap<SerialNumber, DeviceDetails>, DepError> {
        let mut out = BTreeMap::new();
        for chunk in unique(serials).chunks(MAX_SERIALS_PER_REQUEST) {
            let body = SerialsRequest {
                devices: chunk.iter().map(|s| s.to_string()).collect(),
            };
            let answer: DeviceDetailsResponse = self
                .call_json(Method::POST, self.endpoint("/devices")?, Some(&body))
                .await?;
            for (serial, details) in answer.devices {
                match SerialNumber::parse(&serial) {
                    Ok(serial) => {
                        out.insert(serial, details);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "device details for an invalid serial skipped")
                    }
                }
            }
        }
        Ok(out)
    }

    /// `POST /profile`: defines an ADE profile (validated first) and assigns the serials it lists.
    pub async fn define_profile(&self, profile: &AdeProfile) -> Result<DefinedProfile, DepError> {
        profile.validate()?;
        self.call_json(Method::POST, self.endpoint("/profile")?, Some(profile))
            .await
    }

    /// `GET /profile?profile_uuid=…`: reads a defined profile back.
    pub async fn get_profile(&self, profile_uuid: &ProfileUuid) -> Result<AdeProfile, DepError> {
        let mut url = self.endpoint("/profile")?;
        url.query_pairs_mut()
            .append_pair("profile_uuid", profile_uuid.as_str());
        self.call_json::<(), _>(Method::GET, url, None).await
    }

    /// `PUT /profile/devices`: assigns `profile_uuid` to every serial, 1,000 per request; serials answered
    /// THROTTLED are sent again after `retry_after_seconds`. Duplicates in `serials` are sent once.
    pub async fn assign_profile(
        &self,
        profile_uuid: &ProfileUuid,
        serials: &[SerialNumber],
    ) -> Result<AssignmentReport, DepError> {
        self.per_serial_in_chunks(Method::PUT, Some(profile_uuid), serials)
            .await
    }

    /// `DELETE /profile/devices`: removes the profile assignment of every serial (chunked like assignment).
    pub async fn remove_profile(
        &self,
        serials: &[SerialNumber],
    ) -> Result<AssignmentReport, DepError> {
        self.per_serial_in_chunks(Method::DELETE, None, serials)
            .await
    }

    /// `POST /devices/disown`: releases serials from the organization for good (Apple deprecated it in
    /// favour of ASM's own release; kept for organizations that still use it). Per serial SUCCESS,
    /// NOT_ACCESSIBLE or FAILED; at most 1,000 per request.
    pub async fn disown_devices(
        &self,
        serials: &[SerialNumber],
    ) -> Result<BTreeMap<String, AssignStatus>, DepError> {
        let mut out = BTreeMap::new();
        for chunk in serials.chunks(MAX_SERIALS_PER_REQUEST) {
            let request = SerialsRequest {
                devices: chunk.iter().map(|s| s.to_string()).collect(),
            };
            let answer: DisownResponse = self
                .call_json(
                    Method::POST,
                    self.endpoint("/devices/disown")?,
                    Some(&request),
                )
                .await?;
            out.extend(answer.devices);
        }
        Ok(out)
    }

    /// `POST /device/activationlock`.
    pub async fn activation_lock(
        &self,
        request: &ActivationLockRequest,
    ) -> Result<ActivationLockResponse, DepError> {
        self.call_json(
            Method::POST,
            self.endpoint("/device/activationlock")?,
            Some(request),
        )
        .await
    }

    fn limit(&self, limit: Option<u32>) -> u32 {
        limit
            .unwrap_or(self.config.page_limit)
            .clamp(1, MAX_PAGE_LIMIT)
    }

    fn endpoint(&self, path: &str) -> Result<Url, DepError> {
        Url::parse(&format!("{}{path}", self.base_url))
            .map_err(|e| DepError::Config(format!("endpoint {path}: {e}")))
    }

    async fn per_serial_in_chunks(
        &self,
        method: Method,
        profile_uuid: Option<&ProfileUuid>,
        serials: &[SerialNumber],
    ) -> Result<AssignmentReport, DepError> {
        let url = self.endpoint("/profile/devices")?;
        let mut report = AssignmentReport::default();
        for chunk in unique(serials).chunks(MAX_SERIALS_PER_REQUEST) {
            let mut pending: Vec<SerialNumber> = chunk.to_vec();
            let mut round = 0;
            loop {
                let body = ProfileDevicesRequest {
                    profile_uuid: profile_uuid.map(|p| p.as_str().to_owned()),
                    devices: pending.iter().map(|s| s.to_string()).collect(),
                };
                let answer: ProfileDevicesResponse = self
                    .call_json(method.clone(), url.clone(), Some(&body))
                    .await?;
                report.requests += 1;
                let mut throttled = Vec::new();
                for serial in pending.drain(..) {
                    match answer.devices.get(serial.as_str()) {
                        Some(AssignStatus::Success) => report.succeeded.push(serial),
                        Some(AssignStatus::NotAccessible) => report.not_accessible.push(serial),
                        Some(AssignStatus::Throttled) => throttled.push(serial),
                        Some(AssignStatus::Failed) => report.failed.push(serial),
                        Some(AssignStatus::Other(status)) => {
                            tracing::warn!(%serial, %status, "unknown per-serial status counted as failed");
                            report.failed.push(serial);
                        }
                        None => {
                            tracing::warn!(%serial, "serial missing from the answer, counted as failed");
                            report.failed.push(serial);
                        }
                    }
                }
                if throttled.is_empty() {
                    break;
                }
                round += 1;
                if round > self.config.retry.throttled_retries {
                    report.still_throttled.extend(throttled);
                    break;
                }
                let wait = answer
                    .retry_after_seconds
                    .map(Duration::from_secs)
                    .unwrap_or(DEFAULT_THROTTLE_WAIT);
                if wait > self.config.retry.max_retry_after {
                    report.still_throttled.extend(throttled);
                    break;
                }
                tracing::info!(
                    serials = throttled.len(),
                    wait_ms = wait.as_millis() as u64,
                    "serials throttled; retrying"
                );
                tokio::time::sleep(wait).await;
                pending = throttled;
            }
        }
        Ok(report)
    }

    async fn call_json<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<R, DepError> {
        let body = body.map(to_json).transpose()?;
        let path = url.path().to_owned();
        let bytes = self.call(method, url, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| DepError::Malformed(format!("{path}: {e}")))
    }

    /// One API call with a session: renews the session once on 401 / 403 FORBIDDEN, maps error answers.
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, DepError> {
        let mut renewed = false;
        loop {
            let session = self.session_token().await?;
            let answer = self
                .execute(&method, &url, body.as_deref(), Auth::Session(&session))
                .await?;
            if answer.status.is_success() {
                return Ok(answer.body);
            }
            let code = error_code(&answer.body);
            let session_expired = answer.status == StatusCode::UNAUTHORIZED
                || (answer.status == StatusCode::FORBIDDEN && has_code(&code, "FORBIDDEN"));
            if session_expired {
                self.forget_session(&session);
                if !renewed {
                    tracing::debug!(status = %answer.status, "dep session expired; renewing");
                    renewed = true;
                    continue;
                }
                return Err(DepError::Unauthorized(format!(
                    "a fresh session was refused too ({} {code})",
                    answer.status.as_u16()
                )));
            }
            return Err(map_error(answer.status, &code));
        }
    }

    fn lock_session(&self) -> MutexGuard<'_, Option<String>> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn session_token(&self) -> Result<String, DepError> {
        if let Some(token) = self.lock_session().clone() {
            return Ok(token);
        }
        self.start_session().await
    }

    fn forget_session(&self, token: &str) {
        let mut current = self.lock_session();
        // Another task may already have renewed it.
        if current.as_deref() == Some(token) {
            *current = None;
        }
    }

    /// `GET /session` with the OAuth 1.0a header.
    async fn start_session(&self) -> Result<String, DepError> {
        let now = self.clock.now();
        if self.token.is_expired(now) {
            return Err(DepError::TokenExpired {
                expired_at: format_time(self.token.access_token_expiry),
            });
        }
        let url = self.endpoint("/session")?;
        let answer = self.execute(&Method::GET, &url, None, Auth::OAuth).await?;
        if !answer.status.is_success() {
            let code = error_code(&answer.body);
            return Err(match answer.status {
                StatusCode::UNAUTHORIZED => DepError::Unauthorized(format!(
                    "oauth credentials refused by /session ({code}): check that the server token is current"
                )),
                status => map_error(status, &code),
            });
        }
        let session: SessionResponse = serde_json::from_slice(&answer.body)
            .map_err(|e| DepError::Malformed(format!("/session: {e}")))?;
        if session.auth_session_token.is_empty() {
            return Err(DepError::Malformed("/session: empty session token".into()));
        }
        self.sessions_started.fetch_add(1, Ordering::Relaxed);
        *self.lock_session() = Some(session.auth_session_token.clone());
        Ok(session.auth_session_token)
    }

    /// Keeps the newest session token Apple hands back in a response.
    fn remember_session(&self, headers: &HeaderMap) {
        if let Some(token) = headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|t| !t.is_empty())
        {
            let mut current = self.lock_session();
            if current.as_deref() != Some(token) {
                *current = Some(token.to_owned());
            }
        }
    }

    /// Sends one request, retrying 429, 5xx and transport failures per the retry policy.
    async fn execute(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
        auth: Auth<'_>,
    ) -> Result<Answer, DepError> {
        let policy = &self.config.retry;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(
                    PROTOCOL_VERSION_HEADER,
                    self.config.server_protocol_version.to_string(),
                )
                .header(CONTENT_TYPE, JSON_CONTENT_TYPE);
            request = match auth {
                Auth::OAuth => request.header(
                    AUTHORIZATION,
                    oauth::authorization_header(
                        method.as_str(),
                        url,
                        &self.token.oauth_credentials(),
                        self.clock.now().0,
                        &self.nonces.nonce(),
                    ),
                ),
                Auth::Session(token) => request.header(SESSION_HEADER, token),
            };
            if let Some(body) = body {
                request = request.body(body.to_vec());
            }
            let failure = match request.send().await {
                Ok(response) => {
                    if matches!(auth, Auth::Session(_)) {
                        self.remember_session(response.headers());
                    }
                    let status = response.status();
                    let retry_after = retry_after(response.headers(), self.clock.now());
                    match read_body(response).await {
                        Ok(body) => {
                            let retryable =
                                status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                            if !retryable {
                                return Ok(Answer { status, body });
                            }
                            if let Some(wait) = retry_after {
                                if wait > policy.max_retry_after {
                                    return Err(DepError::RateLimited {
                                        retry_after_seconds: wait.as_secs(),
                                    });
                                }
                            }
                            if attempt >= policy.max_attempts {
                                if status == StatusCode::TOO_MANY_REQUESTS {
                                    return Err(DepError::RateLimited {
                                        retry_after_seconds: retry_after
                                            .unwrap_or(policy.max_backoff)
                                            .as_secs(),
                                    });
                                }
                                return Err(DepError::RetriesExhausted {
                                    attempts: attempt,
                                    last_status: format!(
                                        "{} {}",
                                        status.as_u16(),
                                        error_code(&body)
                                    ),
                                });
                            }
                            let wait = retry_after.unwrap_or_else(|| self.backoff(attempt));
                            tracing::warn!(
                                status = status.as_u16(),
                                path = url.path(),
                                attempt,
                                wait_ms = wait.as_millis() as u64,
                                "device assignment service busy; retrying"
                            );
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        Err(ReadError::TooLarge) => {
                            return Err(DepError::Malformed(format!(
                                "{}: answer larger than {MAX_RESPONSE_BYTES} bytes",
                                url.path()
                            )))
                        }
                        Err(ReadError::Transport(e)) => e,
                    }
                }
                Err(e) => e,
            };
            let reason = error_chain(&failure);
            if attempt >= policy.max_attempts {
                return Err(DepError::Transport(format!(
                    "{reason} (after {attempt} attempts)"
                )));
            }
            let wait = self.backoff(attempt);
            tracing::warn!(error = %reason, attempt, path = url.path(), "request failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// Exponential backoff with up to 25 % jitter, so many clients do not retry in step.
    fn backoff(&self, attempt: u32) -> Duration {
        let policy = &self.config.retry;
        let exp = policy
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let base = exp.min(policy.max_backoff);
        let jitter = base.mul_f64(rand::thread_rng().gen_range(0.0..0.25));
        base + jitter
    }
}

enum ReadError {
    Transport(reqwest::Error),
    TooLarge,
}

async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, ReadError> {
    let hint = response
        .content_length()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
        .min(MAX_RESPONSE_BYTES);
    let mut body = Vec::with_capacity(hint);
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap, now: UnixTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = time::OffsetDateTime::parse(
        &value.replace(" GMT", " +0000"),
        &time::format_description::well_known::Rfc2822,
    )
    .ok()?;
    let seconds = when.unix_timestamp().saturating_sub(now.0).max(0);
    Some(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
}

/// The error code of an error answer: a JSON `code`/`error` field, or the plain text Apple usually sends,
/// trimmed and bounded for messages.
fn error_code(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.starts_with('{') {
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(text) {
            for key in ["code", "error"] {
                if let Some(serde_json::Value::String(code)) = map.get(key) {
                    return code.clone();
                }
            }
        }
    }
    text.chars().take(200).collect()
}

/// True when `code` names `wanted` as a whole word (`FORBIDDEN` but not `NOT_FORBIDDEN_X`).
fn has_code(code: &str, wanted: &str) -> bool {
    code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|word| word == wanted)
}

fn map_error(status: StatusCode, code: &str) -> DepError {
    if has_code(code, "T_C_NOT_SIGNED") {
        return DepError::TermsNotSigned;
    }
    if status == StatusCode::BAD_REQUEST {
        for (name, error) in [
            ("EXPIRED_CURSOR", DepError::ExpiredCursor),
            ("EXHAUSTED_CURSOR", DepError::ExhaustedCursor),
            ("INVALID_CURSOR", DepError::InvalidCursor),
            ("CURSOR_REQUIRED", DepError::CursorRequired),
        ] {
            if has_code(code, name) {
                return error;
            }
        }
    }
    match status {
        StatusCode::FORBIDDEN => DepError::AccessDenied(code.to_owned()),
        StatusCode::UNAUTHORIZED => DepError::Unauthorized(code.to_owned()),
        _ => DepError::Api {
            status: status.as_u16(),
            code: code.to_owned(),
        },
    }
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, DepError> {
    serde_json::to_vec(value).map_err(|e| DepError::Malformed(format!("request body: {e}")))
}

/// Serials in first-seen order without repeats (so no serial is sent, or reported, twice).
fn unique(serials: &[SerialNumber]) -> Vec<SerialNumber> {
    let mut seen = HashSet::with_capacity(serials.len());
    serials
        .iter()
        .filter(|s| seen.insert(s.as_str()))
        .cloned()
        .collect()
}

/// A reqwest error with its causes (reqwest's own message is only the outermost layer).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Reads a fetch/sync answer. The fast path decodes the page in one go; if one record is broken (say a serial
/// that is not a serial), the page is read record by record and the broken ones are skipped and counted.
pub(crate) fn parse_device_page(body: &[u8], phase: SyncPhase) -> Result<DevicePage, DepError> {
    let (wire, skipped_invalid) =
        match serde_json::from_slice::<DevicesResponse<DeviceRecord>>(body) {
            Ok(wire) => (wire, 0),
            Err(_) => {
                let loose: DevicesResponse<serde_json::Value> = serde_json::from_slice(body)
                    .map_err(|e| DepError::Malformed(format!("device page: {e}")))?;
                let mut devices = Vec::with_capacity(loose.devices.len());
                let mut skipped = 0;
                for value in loose.devices {
                    match serde_json::from_value::<DeviceRecord>(value) {
                        Ok(record) => devices.push(record),
                        Err(e) => {
                            skipped += 1;
                            tracing::warn!(error = %e, "device record skipped: it does not parse");
                        }
                    }
                }
                (
                    DevicesResponse {
                        devices,
                        cursor: loose.cursor,
                        more_to_follow: loose.more_to_follow,
                        fetched_until: loose.fetched_until,
                    },
                    skipped,
                )
            }
        };
    let cursor = wire
        .cursor
        .ok_or_else(|| DepError::Malformed("device page has no cursor".into()))
        .and_then(|c| {
            DepCursor::try_from(c).map_err(|e| DepError::Malformed(format!("device page: {e}")))
        })?;
    Ok(DevicePage {
        phase,
        devices: wire.devices,
        cursor,
        more_to_follow: wire.more_to_follow,
        fetched_until: wire.fetched_until,
        skipped_invalid,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(
            retry_after(&headers, UnixTime(0)),
            Some(Duration::from_secs(7))
        );
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 30 Nov 2025 00:00:30 GMT"),
        );
        assert_eq!(
            retry_after(&headers, UnixTime(1_764_460_800)),
            Some(Duration::from_secs(30))
        );
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers, UnixTime(0)), None);
    }

    #[test]
    fn error_codes_map_to_typed_errors() {
        assert_eq!(error_code(b" EXPIRED_CURSOR\n"), "EXPIRED_CURSOR");
        assert_eq!(
            error_code(br#"{"code":"T_C_NOT_SIGNED","message":"x"}"#),
            "T_C_NOT_SIGNED"
        );
        assert!(matches!(
            map_error(StatusCode::BAD_REQUEST, "EXPIRED_CURSOR"),
            DepError::ExpiredCursor
        ));
        assert!(matches!(
            map_error(StatusCode::BAD_REQUEST, "EXHAUSTED_CURSOR"),
            DepError::ExhaustedCursor
        ));
        assert!(matches!(
            map_error(StatusCode::BAD_REQUEST, "INVALID_CURSOR"),
            DepError::InvalidCursor
        ));
        assert!(matches!(
            map_error(StatusCode::FORBIDDEN, "T_C_NOT_SIGNED"),
            DepError::TermsNotSigned
        ));
        assert!(matches!(
            map_error(StatusCode::FORBIDDEN, "ACCESS_DENIED"),
            DepError::AccessDenied(_)
        ));
        assert!(has_code("FORBIDDEN", "FORBIDDEN"));
        assert!(!has_code("NOT_FORBIDDEN_X", "FORBIDDEN"));
    }

    #[test]
    fn broken_records_are_skipped_not_fatal() {
        let body = br#"{"devices":[{"serial_number":"AAA111"},{"serial_number":"bad serial"},
            {"model":"no serial"},{"serial_number":"BBB222","op_type":"added"}],
            "cursor":"c1","more_to_follow":true,"fetched_until":"2025-11-30T00:00:00Z"}"#;
        let page = parse_device_page(body, SyncPhase::Sync).unwrap();
        assert_eq!(page.devices.len(), 2);
        assert_eq!(page.skipped_invalid, 2);
        assert!(page.more_to_follow);
        assert_eq!(page.fetched_until, Some(UnixTime(1_764_460_800)));
        assert!(parse_device_page(br#"{"devices":[]}"#, SyncPhase::Fetch).is_err());
        assert!(parse_device_page(b"<html>", SyncPhase::Fetch).is_err());
    }

    #[test]
    fn config_is_checked() {
        let token = crate::ServerToken::from_json(
            br#"{"consumer_key":"a","consumer_secret":"b","access_token":"c","access_secret":"d",
                "access_token_expiry":"2030-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let clock: Arc<dyn Clock> = Arc::new(orchard_types::SystemClock);
        let bad = |config: DepConfig| DepClient::new(config, token.clone(), clock.clone()).is_err();
        assert!(bad(DepConfig {
            base_url: "http://mdmenrollment.apple.com".into(),
            ..DepConfig::default()
        }));
        assert!(bad(DepConfig {
            page_limit: 1001,
            ..DepConfig::default()
        }));
        assert!(bad(DepConfig {
            root_certificates_der: vec![b"junk".to_vec()],
            ..DepConfig::default()
        }));
        assert!(!bad(DepConfig {
            base_url: "http://127.0.0.1:9/".into(),
            ..DepConfig::default()
        }));
        assert_eq!(
            unique(&[
                SerialNumber::parse("A").unwrap(),
                SerialNumber::parse("B").unwrap(),
                SerialNumber::parse("A").unwrap()
            ])
            .len(),
            2
        );
    }
}
