//! The typed Apps and Books API client over reqwest (rustls). Every call but service config sends the content
//! token as `Authorization: Bearer`; Apple's `errorNumber`s become [`VppError`] variants; 429 and 5xx are
//! retried a bounded number of times, waiting out `Retry-After` when it is short and returning
//! [`VppError::RateLimited`] when it is long, so the caller (a job) schedules the retry instead of holding a task.
//! Associate / disassociate are split into batches within service config's limits; each batch is one event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng as _;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::token::ContentToken;
use crate::types::{
    ApiError, Asset, AssetRef, AssetsPage, Assignment, AssignmentFilter, AssignmentsPage,
    ClientConfig, ClientConfigRequest, EventId, EventStatus, Limits, ManageAssetsRequest, MdmInfo,
    ServiceConfig, SubmittedEvent,
};
use crate::VppError;

/// Apple's production endpoint.
pub const APPLE_VPP_BASE_URL: &str = "https://vpp.itunes.apple.com/mdm/v2";

/// A page of assets or assignments is small; this only stops a runaway answer.
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;
/// Pages followed in one listing before giving up (a server that never ends a listing).
const MAX_PAGES: u32 = 10_000;

/// How hard to try before giving up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request for 429, 5xx and transport errors (the first one included).
    pub max_attempts: u32,
    /// Backoff before the 2nd attempt when there is no `Retry-After`; doubles each time, with jitter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not waited out inside a call: the call fails with
    /// [`VppError::RateLimited`] and the caller schedules the retry.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// Where and how to reach Apps and Books.
#[derive(Debug, Clone)]
pub struct VppConfig {
    /// [`APPLE_VPP_BASE_URL`] in production (up to and including `/mdm/v2`). `http://` only for loopback.
    pub base_url: String,
    /// DER roots to trust instead of the public web PKI (the local server's test root).
    pub root_certificates_der: Vec<Vec<u8>>,
    pub user_agent: String,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// Pause between two status polls of one event.
    pub status_poll_interval: Duration,
    /// Status polls before [`VppClient::wait_for_event`] gives up with [`VppError::EventPending`] (the event
    /// stays at Apple; the caller polls it again later).
    pub max_status_polls: u32,
}

impl Default for VppConfig {
    fn default() -> Self {
        Self {
            base_url: APPLE_VPP_BASE_URL.into(),
            root_certificates_der: Vec::new(),
            user_agent: concat!("orchard-vpp/", env!("CARGO_PKG_VERSION")).into(),
            request_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            status_poll_interval: Duration::from_secs(2),
            max_status_polls: 30,
        }
    }
}

/// One associate / disassociate request that Apple accepted: its event and exactly what it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmittedBatch {
    pub event: SubmittedEvent,
    pub assets: Vec<AssetRef>,
    pub serial_numbers: Vec<String>,
}

/// The outcome of a batched submission: batches Apple accepted, and (if a batch was refused) the error and the
/// serials never sent, so the caller records the first and retries the second without repeating anything.
#[derive(Debug, Default)]
pub struct BatchSubmission {
    pub submitted: Vec<SubmittedBatch>,
    pub error: Option<VppError>,
    pub not_sent: Vec<String>,
}

/// A client for one content token. Cheap to share behind an `Arc`; methods take `&self`.
pub struct VppClient {
    http: reqwest::Client,
    base_url: String,
    config: VppConfig,
    token: ContentToken,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl std::fmt::Debug for VppClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VppClient")
            .field("base_url", &self.base_url)
            .field("org_name", &self.token.org_name)
            .finish()
    }
}

impl VppClient {
    pub fn new(config: VppConfig, token: ContentToken) -> Result<Self, VppError> {
        let base = Url::parse(&config.base_url)
            .map_err(|e| VppError::Config(format!("base url {:?}: {e}", config.base_url)))?;
        let loopback = matches!(base.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        match base.scheme() {
            "https" => {}
            "http" if loopback => {}
            other => {
                return Err(VppError::Config(format!(
                    "base url scheme {other:?}: https is required (http only for loopback test servers)"
                )))
            }
        }
        if config.retry.max_attempts == 0 {
            return Err(VppError::Config(
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
                    .map_err(|e| VppError::Config(format!("root certificate: {e}")))?;
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| VppError::Config(format!("http client: {}", error_chain(&e))))?;
        Ok(Self {
            http,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            config,
            token,
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &VppConfig {
        &self.config
    }

    pub fn token(&self) -> &ContentToken {
        &self.token
    }

    /// HTTP requests sent (retries included).
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests repeated after a 429, 5xx or transport failure.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// `GET service/config` (no authentication): limits, error codes, notification types.
    pub async fn service_config(&self) -> Result<ServiceConfig, VppError> {
        self.call_json::<(), _>(
            Method::GET,
            self.endpoint("/service/config", &[])?,
            None,
            false,
        )
        .await
    }

    /// `GET client/config`: the location's name, expiry and who claimed it (`mdmInfo`).
    pub async fn client_config(&self) -> Result<ClientConfig, VppError> {
        self.call_json::<(), _>(
            Method::GET,
            self.endpoint("/client/config", &[])?,
            None,
            true,
        )
        .await
    }

    /// `POST client/config` with Orchard's `mdmInfo`: claims the location. The caller reads client config first
    /// and does not call this when another MDM holds the location unless an admin chose to take it over.
    pub async fn claim(&self, mdm_info: &MdmInfo) -> Result<ClientConfig, VppError> {
        let body = ClientConfigRequest {
            mdm_info: Some(mdm_info.clone()),
            ..ClientConfigRequest::default()
        };
        self.call_json(
            Method::POST,
            self.endpoint("/client/config", &[])?,
            Some(&body),
            true,
        )
        .await
    }

    /// `GET assets?pageIndex=N`: one page.
    pub async fn assets_page(&self, page_index: u32) -> Result<AssetsPage, VppError> {
        let page = page_index.to_string();
        self.call_json::<(), _>(
            Method::GET,
            self.endpoint("/assets", &[("pageIndex", &page)])?,
            None,
            true,
        )
        .await
    }

    /// Every asset, following `nextPageIndex`.
    pub async fn assets(&self) -> Result<Vec<Asset>, VppError> {
        let mut out = Vec::new();
        let mut index = 0u32;
        for _ in 0..MAX_PAGES {
            let page = self.assets_page(index).await?;
            out.extend(page.assets);
            match page.paging.next_page_index {
                Some(next) if next > index => index = next,
                _ => return Ok(out),
            }
        }
        Err(VppError::Malformed(format!(
            "assets: more than {MAX_PAGES} pages"
        )))
    }

    /// `GET assignments?…&pageIndex=N`: one page.
    pub async fn assignments_page(
        &self,
        filter: &AssignmentFilter,
        page_index: u32,
    ) -> Result<AssignmentsPage, VppError> {
        let page = page_index.to_string();
        let mut query: Vec<(&str, &str)> = vec![("pageIndex", &page)];
        if let Some(adam_id) = &filter.adam_id {
            query.push(("adamId", adam_id.as_str()));
        }
        if let Some(serial) = &filter.serial_number {
            query.push(("serialNumber", serial));
        }
        self.call_json::<(), _>(
            Method::GET,
            self.endpoint("/assignments", &query)?,
            None,
            true,
        )
        .await
    }

    /// Every assignment matching `filter`, and the `versionId` of the last page.
    pub async fn assignments(
        &self,
        filter: &AssignmentFilter,
    ) -> Result<(Vec<Assignment>, Option<String>), VppError> {
        let mut out = Vec::new();
        let mut index = 0u32;
        for _ in 0..MAX_PAGES {
            let page = self.assignments_page(filter, index).await?;
            out.extend(page.assignments);
            match page.paging.next_page_index {
                Some(next) if next > index => index = next,
                _ => return Ok((out, page.paging.version_id)),
            }
        }
        Err(VppError::Malformed(format!(
            "assignments: more than {MAX_PAGES} pages"
        )))
    }

    /// `POST assets/associate`: one request, checked against `limits` first.
    pub async fn associate(
        &self,
        assets: &[AssetRef],
        serial_numbers: &[String],
        limits: &Limits,
    ) -> Result<SubmittedEvent, VppError> {
        self.manage("/assets/associate", assets, serial_numbers, limits)
            .await
    }

    /// `POST assets/disassociate`: one request, checked against `limits` first.
    pub async fn disassociate(
        &self,
        assets: &[AssetRef],
        serial_numbers: &[String],
        limits: &Limits,
    ) -> Result<SubmittedEvent, VppError> {
        self.manage("/assets/disassociate", assets, serial_numbers, limits)
            .await
    }

    /// `POST assets/revoke`: takes every licence off the serials (all assets).
    pub async fn revoke(
        &self,
        serial_numbers: &[String],
        limits: &Limits,
    ) -> Result<SubmittedEvent, VppError> {
        self.manage("/assets/revoke", &[], serial_numbers, limits)
            .await
    }

    /// Associates every asset with every serial in batches within `limits`, one event per batch.
    pub async fn associate_batched(
        &self,
        assets: &[AssetRef],
        serial_numbers: &[String],
        limits: &Limits,
    ) -> BatchSubmission {
        self.batched("/assets/associate", assets, serial_numbers, limits)
            .await
    }

    /// Disassociates in batches within `limits`, one event per batch.
    pub async fn disassociate_batched(
        &self,
        assets: &[AssetRef],
        serial_numbers: &[String],
        limits: &Limits,
    ) -> BatchSubmission {
        self.batched("/assets/disassociate", assets, serial_numbers, limits)
            .await
    }

    /// `GET status?eventId=…`: one poll.
    pub async fn event_status(&self, event_id: &EventId) -> Result<EventStatus, VppError> {
        self.call_json::<(), _>(
            Method::GET,
            self.endpoint("/status", &[("eventId", &event_id.0)])?,
            None,
            true,
        )
        .await
    }

    /// Polls an event until it is COMPLETE or FAILED, at most `max_status_polls` times.
    pub async fn wait_for_event(&self, event_id: &EventId) -> Result<EventStatus, VppError> {
        let polls = self.config.max_status_polls.max(1);
        for poll in 0..polls {
            let status = self.event_status(event_id).await?;
            if status.is_done() {
                return Ok(status);
            }
            if poll + 1 < polls && !self.config.status_poll_interval.is_zero() {
                tokio::time::sleep(self.config.status_poll_interval).await;
            }
        }
        Err(VppError::EventPending {
            event_id: event_id.0.clone(),
            polls,
        })
    }

    async fn batched(
        &self,
        path: &str,
        assets: &[AssetRef],
        serial_numbers: &[String],
        limits: &Limits,
    ) -> BatchSubmission {
        let mut out = BatchSubmission::default();
        let serials = unique(serial_numbers);
        let assets = unique(assets);
        let serial_chunk = limits.max_serial_numbers.max(1);
        let asset_chunk = limits.max_assets.max(1);
        let chunks: Vec<&[String]> = serials.chunks(serial_chunk).collect();
        for (i, serial_batch) in chunks.iter().enumerate() {
            for asset_batch in assets.chunks(asset_chunk) {
                match self.manage(path, asset_batch, serial_batch, limits).await {
                    Ok(event) => out.submitted.push(SubmittedBatch {
                        event,
                        assets: asset_batch.to_vec(),
                        serial_numbers: serial_batch.to_vec(),
                    }),
                    Err(e) => {
                        // Everything from this batch on was not sent; earlier batches stand.
                        out.error = Some(e);
                        out.not_sent = chunks[i..].iter().flat_map(|c| c.iter().cloned()).collect();
                        return out;
                    }
                }
            }
        }
        out
    }

    async fn manage(
        &self,
        path: &str,
        assets: &[AssetRef],
        serial_numbers: &[String],
        limits: &Limits,
    ) -> Result<SubmittedEvent, VppError> {
        if serial_numbers.is_empty() {
            return Err(VppError::InvalidRequest("no serial numbers".into()));
        }
        if serial_numbers.len() > limits.max_serial_numbers {
            return Err(VppError::InvalidRequest(format!(
                "{} serial numbers; apple allows {} per request",
                serial_numbers.len(),
                limits.max_serial_numbers
            )));
        }
        if assets.len() > limits.max_assets {
            return Err(VppError::InvalidRequest(format!(
                "{} assets; apple allows {} per request",
                assets.len(),
                limits.max_assets
            )));
        }
        let body = ManageAssetsRequest {
            assets: assets.to_vec(),
            serial_numbers: serial_numbers.to_vec(),
            client_user_ids: Vec::new(),
        };
        self.call_json(Method::POST, self.endpoint(path, &[])?, Some(&body), true)
            .await
    }

    fn endpoint(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, VppError> {
        let mut url = Url::parse(&format!("{}{path}", self.base_url))
            .map_err(|e| VppError::Config(format!("endpoint {path}: {e}")))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    async fn call_json<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
        authenticated: bool,
    ) -> Result<R, VppError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| VppError::InvalidRequest(format!("encoding the request: {e}")))?;
        let path = url.path().to_owned();
        let (status, bytes) = self
            .execute(&method, &url, body.as_deref(), authenticated)
            .await?;
        // Apple reports some errors in a 200 answer's body too.
        if let Ok(error) = serde_json::from_slice::<ApiError>(&bytes) {
            if error.error_number != 0 {
                return Err(VppError::from_api(&error));
            }
        }
        if !status.is_success() {
            return Err(VppError::Malformed(format!(
                "{path}: http {} without an apple error body",
                status.as_u16()
            )));
        }
        serde_json::from_slice(&bytes).map_err(|e| VppError::Malformed(format!("{path}: {e}")))
    }

    /// Sends one request, retrying 429, 5xx and transport failures per the retry policy.
    async fn execute(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
        authenticated: bool,
    ) -> Result<(StatusCode, Vec<u8>), VppError> {
        let policy = &self.config.retry;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(CONTENT_TYPE, "application/json");
            if authenticated {
                request = request.header(
                    AUTHORIZATION,
                    format!("Bearer {}", self.token.expose_bearer()),
                );
            }
            if let Some(body) = body {
                request = request.body(body.to_vec());
            }
            let failure = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(response.headers());
                    match read_body(response).await {
                        Ok(bytes) => {
                            let retryable =
                                status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                            if !retryable {
                                return Ok((status, bytes));
                            }
                            if let Some(wait) = retry_after {
                                if wait > policy.max_retry_after {
                                    return Err(VppError::RateLimited {
                                        retry_after_seconds: wait.as_secs(),
                                    });
                                }
                            }
                            if attempt >= policy.max_attempts {
                                if status == StatusCode::TOO_MANY_REQUESTS {
                                    return Err(VppError::RateLimited {
                                        retry_after_seconds: retry_after
                                            .unwrap_or(policy.max_backoff)
                                            .as_secs(),
                                    });
                                }
                                return Err(VppError::RetriesExhausted {
                                    attempts: attempt,
                                    last_status: status.as_u16().to_string(),
                                });
                            }
                            let wait = retry_after.unwrap_or_else(|| self.backoff(attempt));
                            tracing::warn!(
                                status = status.as_u16(),
                                path = url.path(),
                                attempt,
                                wait_ms = wait.as_millis() as u64,
                                "apps and books busy; retrying"
                            );
                            self.retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        Err(ReadError::TooLarge) => {
                            return Err(VppError::Malformed(format!(
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
                return Err(VppError::Transport(format!(
                    "{reason} (after {attempt} attempts)"
                )));
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(self.backoff(attempt)).await;
        }
    }

    /// Exponential backoff with up to 25 % jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let policy = &self.config.retry;
        let exp = policy
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let base = exp.min(policy.max_backoff);
        base + base.mul_f64(rand::thread_rng().gen_range(0.0..0.25))
    }
}

fn unique<T: Clone + Ord>(items: &[T]) -> Vec<T> {
    let mut seen = std::collections::BTreeSet::new();
    items
        .iter()
        .filter(|i| seen.insert((*i).clone()))
        .cloned()
        .collect()
}

enum ReadError {
    Transport(reqwest::Error),
    TooLarge,
}

async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `Retry-After` in seconds (Apple sends seconds; an HTTP date is not expected and is ignored).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_numbers;

    #[test]
    fn errors_map_to_types() {
        let e = |n| ApiError {
            error_number: n,
            error_message: Some("m".into()),
            error_info: None,
        };
        assert!(matches!(
            VppError::from_api(&e(error_numbers::TOKEN_EXPIRED)),
            VppError::TokenExpired { .. }
        ));
        assert!(matches!(
            VppError::from_api(&e(error_numbers::TOKEN_REVOKED)),
            VppError::TokenRevoked
        ));
        assert!(matches!(
            VppError::from_api(&e(error_numbers::INVALID_TOKEN)),
            VppError::InvalidToken { .. }
        ));
        assert!(matches!(
            VppError::from_api(&e(error_numbers::LOGIN_REQUIRED)),
            VppError::InvalidToken { .. }
        ));
        assert!(matches!(
            VppError::from_api(&e(9610)),
            VppError::Apple { number: 9610, .. }
        ));
        assert!(VppError::from_api(&e(9621)).is_token_problem());
        assert!(!VppError::from_api(&e(9610)).is_token_problem());
    }

    #[test]
    fn refuses_plain_http_to_other_hosts() {
        let token = ContentToken::parse(&ContentToken::encode(
            "t",
            orchard_types::UnixTime(2_000_000_000),
            "o",
        ))
        .unwrap();
        let config = VppConfig {
            base_url: "http://vpp.example.com/mdm/v2".into(),
            ..VppConfig::default()
        };
        assert!(matches!(
            VppClient::new(config, token),
            Err(VppError::Config(_))
        ));
    }
}
