//! Automated Device Enrollment, first slice: DEP server tokens (Orchard makes the key pair, the operator uploads
//! its certificate to Apple School Manager and the `.p7m` ASM hands back) and device sync into the store.
//!
//! Secrets (the token key and the decrypted server token) are sealed with the data key, bound to their row.
//! Each sync page is applied together with its cursor in one transaction, so a sync that stops resumes from the
//! last page applied, with nothing lost or applied twice.

pub mod templates;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use orchard_dep::{
    DepClient, DepConfig, DepCursor, DepError, DevicePage, DeviceSink, ServerToken, SinkError,
    SyncPhase,
};
use orchard_pki::Identity;
use orchard_store::{DepDeviceFilter, DepDeviceRecord, DepTokenRecord, DepTokenUpload, Store};
use orchard_types::{Clock, TokenId, UnixTime};
use serde::Serialize;

use crate::access::capability::OperatorCtx;
use crate::access::capability::SystemCtx;
use crate::{CoreError, Orchard};

/// Longest accepted token name.
const MAX_NAME_CHARS: usize = 200;
/// Server tokens are warned about from this many days before they expire (they last a year).
pub const DEP_TOKEN_WARNING_DAYS: i64 = 30;

/// Where the Device Assignment service is. Default: Apple's production URL and the public roots.
#[derive(Debug, Clone, Default)]
pub struct DepSettings {
    pub config: DepConfig,
    /// Certificates (DER) the ADE profile tells devices to trust for our enrollment URL (`anchor_certs`):
    /// Orchard's CA when Orchard made its own TLS certificate; empty when the TLS certificate chains to a
    /// public root the device already trusts.
    pub anchor_certs_der: Vec<Vec<u8>>,
    /// Roots that sign devices' MachineInfo (Apple's device CA chain in production, a test CA in tests).
    /// Empty: the zero-touch endpoint refuses every device, with a clear log line.
    pub device_roots_der: Vec<Vec<u8>>,
    /// Seconds between background syncs of every uploaded token (0: only on request).
    pub sync_interval_seconds: u64,
}

impl DepSettings {
    /// Another service than Apple's (a local DEP server in tests), trusting the certificates of `roots_pem`
    /// (PEM, one or more) instead of the public roots when given.
    pub fn with_base_url(base_url: &str, roots_pem: Option<&[u8]>) -> Result<Self, CoreError> {
        let root_certificates_der = match roots_pem {
            Some(pem) => pem_certificates(pem)?,
            None => Vec::new(),
        };
        Ok(Self {
            config: DepConfig {
                base_url: base_url.to_owned(),
                root_certificates_der,
                ..DepConfig::default()
            },
            ..Self::default()
        })
    }
}

/// The DER of every `CERTIFICATE` block of a PEM file (the TLS client checks each one when it is built).
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, CoreError> {
    use base64::Engine;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::str::from_utf8(pem)
        .map_err(|_| CoreError::Invalid("dep roots: the pem file is not text".into()))?;
    let mut certificates = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after = rest.get(start + BEGIN.len()..).unwrap_or_default();
        let end = after
            .find(END)
            .ok_or_else(|| CoreError::Invalid("dep roots: unterminated certificate".into()))?;
        let body: String = after
            .get(..end)
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| CoreError::Invalid("dep roots: certificate is not base64".into()))?;
        certificates.push(der);
        rest = after.get(end + END.len()..).unwrap_or_default();
    }
    if certificates.is_empty() {
        return Err(CoreError::Invalid(
            "dep roots: no certificate in the pem file".into(),
        ));
    }
    Ok(certificates)
}

/// DEP state of one node: the settings, and a lock so two syncs of this node never interleave their cursors.
#[derive(Debug, Default)]
pub(crate) struct DepState {
    pub(crate) settings: DepSettings,
    /// Built once from `settings.device_roots_der`; `None` when no roots are configured.
    pub(crate) machine_info_verifier: Option<orchard_dep::MachineInfoVerifier>,
    sync_lock: tokio::sync::Mutex<()>,
}

impl DepState {
    pub(crate) fn new(settings: DepSettings) -> Self {
        let machine_info_verifier = if settings.device_roots_der.is_empty() {
            None
        } else {
            match orchard_dep::MachineInfoVerifier::new(&settings.device_roots_der) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::error!(error = %e, "dep device roots unusable; zero-touch enrollment is off");
                    None
                }
            }
        };
        Self {
            settings,
            machine_info_verifier,
            sync_lock: tokio::sync::Mutex::new(()),
        }
    }
}

/// A new token: the certificate to upload to the MDM server in ASM.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedDepToken {
    pub id: String,
    pub certificate_pem: String,
}

/// A token as the API shows it (no secrets).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DepTokenStatus {
    pub id: String,
    pub name: String,
    pub certificate_pem: String,
    /// A server token has been uploaded.
    pub uploaded: bool,
    pub access_token_expiry: Option<String>,
    pub token_expired: bool,
    /// Whole days until the server token expires (negative once expired).
    pub days_left: Option<i64>,
    pub server_name: Option<String>,
    pub org_name: Option<String>,
    pub last_sync_at: Option<String>,
    /// Why the last sync (or the account check at upload) failed; says what to do.
    pub last_sync_error: Option<String>,
    pub created_at: String,
}

/// What one sync run did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DepSyncSummary {
    pub pages: u32,
    pub records: u64,
    pub duplicates_dropped: u64,
    pub skipped_invalid: u64,
    /// A full fetch ran (first sync, or the cursor had expired).
    pub full_fetch: bool,
    pub restarted_after_expired_cursor: bool,
    /// Devices a completed full fetch no longer listed, marked deleted.
    pub removed: u64,
    /// Devices of this token currently assigned (not deleted) after the run.
    pub active_devices: i64,
    /// New serials given the token's auto-assign template.
    pub auto_assigned: u64,
    /// Assignments sent to Apple after the sync.
    pub assignments: crate::dep::templates::AssignCounts,
}

/// One DEP device as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DepDeviceView {
    pub token_id: String,
    pub serial_number: String,
    pub model: Option<String>,
    pub description: Option<String>,
    pub color: Option<String>,
    pub asset_tag: Option<String>,
    pub os: Option<String>,
    pub device_family: Option<String>,
    pub profile_status: Option<String>,
    pub profile_uuid: Option<String>,
    pub profile_assign_time: Option<String>,
    pub device_assigned_date: Option<String>,
    pub device_assigned_by: Option<String>,
    pub op_type: Option<String>,
    pub op_date: Option<String>,
    /// When the device last fetched its ADE profile from Apple.
    pub profile_push_time: Option<String>,
    /// Set when ASM will migrate the device to another MDM server (without an erase) by this time.
    pub mdm_migration_deadline: Option<String>,
    /// Apple's status for the record, when it gave one.
    pub response_status: Option<String>,
    pub deleted: bool,
    pub updated_at: String,
}

impl From<DepDeviceRecord> for DepDeviceView {
    fn from(record: DepDeviceRecord) -> Self {
        let d = record.device;
        Self {
            token_id: record.token_id,
            serial_number: d.serial_number.to_string(),
            model: d.model,
            description: d.description,
            color: d.color,
            asset_tag: d.asset_tag,
            os: d.os,
            device_family: d.device_family,
            profile_status: d.profile_status.map(|s| s.as_str().to_owned()),
            profile_uuid: d.profile_uuid.map(String::from),
            profile_assign_time: d.profile_assign_time.map(UnixTime::to_rfc3339),
            device_assigned_date: d.device_assigned_date.map(UnixTime::to_rfc3339),
            device_assigned_by: d.device_assigned_by,
            op_type: d.op_type.map(|o| o.as_str().to_owned()),
            op_date: d.op_date.map(UnixTime::to_rfc3339),
            profile_push_time: d.profile_push_time.map(UnixTime::to_rfc3339),
            mdm_migration_deadline: d.mdm_migration_deadline.map(UnixTime::to_rfc3339),
            response_status: d.response_status.map(|s| s.as_str().to_owned()),
            deleted: record.deleted,
            updated_at: record.updated_at.to_rfc3339(),
        }
    }
}

fn key_seal_context(id: &str) -> Vec<u8> {
    format!("dep_tokens:{id}:key").into_bytes()
}

fn token_seal_context(id: &str) -> Vec<u8> {
    format!("dep_tokens:{id}:token").into_bytes()
}

/// Errors from Apple that the operator must act on are conflicts (the message says what to do); faults of
/// the service or the network are internal.
fn dep_error(e: DepError) -> CoreError {
    match e {
        DepError::InvalidToken(_) | DepError::TokenKeyMismatch(_) => {
            CoreError::Invalid(e.to_string())
        }
        DepError::TokenExpired { .. }
        | DepError::TermsNotSigned
        | DepError::AccessDenied(_)
        | DepError::Unauthorized(_)
        | DepError::RateLimited { .. } => CoreError::Conflict(e.to_string()),
        other => CoreError::Internal(other.to_string()),
    }
}

fn status(record: DepTokenRecord, now: UnixTime) -> DepTokenStatus {
    DepTokenStatus {
        uploaded: record.token_encrypted.is_some(),
        access_token_expiry: record.access_token_expiry.map(UnixTime::to_rfc3339),
        token_expired: record.access_token_expiry.is_some_and(|t| now >= t),
        days_left: record
            .access_token_expiry
            .map(|t| (t.0 - now.0).div_euclid(86_400)),
        id: record.id,
        name: record.name,
        certificate_pem: record.certificate_pem,
        server_name: record.server_name,
        org_name: record.org_name,
        last_sync_at: record.last_sync_at.map(UnixTime::to_rfc3339),
        last_sync_error: record.last_sync_error,
        created_at: record.created_at.to_rfc3339(),
    }
}

/// Writes each page and then its cursor to the store. During a full fetch started in this run it remembers
/// every serial listed, so that when the fetch completes the devices it no longer lists are marked deleted.
/// A fetch resumed from a saved cursor does not know the earlier pages and therefore removes nothing.
struct StoreSink {
    store: Store,
    token_id: String,
    clock: Arc<dyn Clock>,
    fetched: Option<HashSet<String>>,
    removed: u64,
    /// The previous page, being stored while the client fetches the next one. At most one page is in flight
    /// and each page waits for the one before, so pages and their cursors are still stored in order; a page
    /// that fails to store fails the sync at the next page (its cursor was not stored: the next run fetches it
    /// again).
    in_flight: Option<tokio::task::JoinHandle<Result<u64, orchard_store::StoreError>>>,
}

impl StoreSink {
    /// Waits for the page in flight.
    async fn settle(&mut self) -> Result<(), SinkError> {
        if let Some(task) = self.in_flight.take() {
            task.await
                .map_err(|e| format!("dep page store task: {e}"))??;
        }
        Ok(())
    }

    /// Ends a `DepClient::sync` run: nothing may still be writing when it returns (the sync lock is released
    /// after it, and a cursor reset must not be overtaken by an older page). A failure to store the last page
    /// in flight fails an otherwise successful run; after a failed run the first error is kept.
    async fn finish(
        &mut self,
        result: Result<orchard_dep::SyncOutcome, DepError>,
    ) -> Result<orchard_dep::SyncOutcome, DepError> {
        let settled = self.settle().await;
        match (result, settled) {
            (Ok(outcome), Ok(())) => Ok(outcome),
            (Ok(_), Err(e)) => Err(DepError::Sink(e)),
            (Err(e), Ok(())) => Err(e),
            (Err(e), Err(store_error)) => {
                tracing::warn!(token = %self.token_id, error = %store_error, "dep page not stored");
                Err(e)
            }
        }
    }

    async fn apply(&mut self, page: &DevicePage) -> Result<(), SinkError> {
        let now = self.clock.now();
        let rows: Vec<DepDeviceRecord> = page
            .devices
            .iter()
            .map(|r| DepDeviceRecord::new(&self.token_id, r.clone(), now))
            .collect();
        let fetch_done = page.phase == SyncPhase::Fetch && !page.more_to_follow;
        if page.phase == SyncPhase::Fetch {
            if let Some(seen) = self.fetched.as_mut() {
                seen.extend(rows.iter().map(|r| r.device.serial_number.to_string()));
            }
        }
        self.settle().await?;
        match (fetch_done, self.fetched.take()) {
            (true, Some(seen)) => {
                // The last fetch page: the devices, the devices no longer listed and the cursor in one unit,
                // so the cursor never says "done" without the removals.
                let (_, released) = self
                    .store
                    .apply_last_fetch_page(&self.token_id, &rows, &seen, page.cursor.as_str(), now)
                    .await?;
                if released > 0 {
                    tracing::info!(
                        token = %self.token_id,
                        count = released,
                        "dep devices no longer assigned to this mdm server"
                    );
                }
                self.removed += released;
            }
            (_, fetched) => {
                self.fetched = fetched;
                if page.more_to_follow {
                    // Stored while the client fetches the next page (the network and the database overlap).
                    let store = self.store.clone();
                    let token_id = self.token_id.clone();
                    let cursor = page.cursor.as_str().to_owned();
                    self.in_flight = Some(tokio::spawn(async move {
                        store.apply_dep_page(&token_id, &rows, &cursor, now).await
                    }));
                } else {
                    self.store
                        .apply_dep_page(&self.token_id, &rows, page.cursor.as_str(), now)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// A sync dropped midway (its caller cancelled) must not leave a page being written after the sync lock is
/// released: the page in flight is abandoned, its transaction rolls back with its cursor, and the next run
/// fetches it again.
impl Drop for StoreSink {
    fn drop(&mut self) {
        if let Some(task) = self.in_flight.take() {
            task.abort();
        }
    }
}

impl DeviceSink for StoreSink {
    fn on_full_fetch_start(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        self.fetched = Some(HashSet::new());
        std::future::ready(Ok(()))
    }

    fn on_page(&mut self, page: &DevicePage) -> impl Future<Output = Result<(), SinkError>> + Send {
        self.apply(page)
    }
}

impl Orchard {
    /// The DEP service settings (Apple's production service unless set with [`Orchard::with_dep_settings`]).
    pub fn with_dep_settings(mut self, settings: DepSettings) -> Self {
        self.dep = DepState::new(settings);
        self
    }

    pub fn dep_settings(&self) -> &DepSettings {
        &self.dep.settings
    }

    /// Makes a key pair for a new ASM "MDM server" (operators only). The certificate goes to ASM; the key stays
    /// sealed in the store.
    pub async fn create_dep_token(
        &self,
        operator: &OperatorCtx,
        name: &str,
    ) -> Result<CreatedDepToken, CoreError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            return Err(CoreError::Invalid(format!(
                "name must be 1..={MAX_NAME_CHARS} characters"
            )));
        }
        let now = self.clock.now();
        let common_name = format!("Orchard DEP {name}");
        // RSA key generation takes tens of milliseconds of CPU: keep it off the async workers.
        let keypair = tokio::task::spawn_blocking(move || {
            orchard_dep::generate_token_keypair(&common_name, now)
        })
        .await
        .map_err(|e| CoreError::Internal(format!("dep key task: {e}")))?
        .map_err(dep_error)?;
        let id = TokenId::new().to_string();
        let certificate_pem = String::from_utf8(keypair.cert_pem())
            .map_err(|_| CoreError::Internal("certificate pem is not utf-8".into()))?;
        let key_encrypted = self
            .pki
            .data_key
            .seal(keypair.key_pem().expose(), &key_seal_context(&id))?;
        self.store
            .create_dep_token(&DepTokenRecord {
                id: id.clone(),
                name: name.to_owned(),
                certificate_pem: certificate_pem.clone(),
                key_encrypted,
                token_encrypted: None,
                consumer_key: None,
                access_token_expiry: None,
                server_name: None,
                org_name: None,
                cursor: None,
                cursor_saved_at: None,
                last_sync_at: None,
                last_sync_error: None,
                created_at: now,
            })
            .await?;
        tracing::info!(token = %id, actor = %operator.principal().actor(), "dep token key pair created");
        Ok(CreatedDepToken {
            id,
            certificate_pem,
        })
    }

    /// Stores the `.p7m` server token downloaded from ASM (operators only): decrypted with the token's key,
    /// sealed, and checked with `GET /account` (whose server and organization names are kept). A failing
    /// account check does not refuse the upload; its reason shows as the token's last error.
    pub async fn upload_dep_token(
        &self,
        operator: &OperatorCtx,
        id: &str,
        p7m: &[u8],
    ) -> Result<DepTokenStatus, CoreError> {
        let record = self.store.dep_token(id).await?.ok_or(CoreError::NotFound)?;
        let key_pem = self
            .pki
            .data_key
            .open(&record.key_encrypted, &key_seal_context(id))?;
        let keypair = Identity::from_pem(record.certificate_pem.as_bytes(), key_pem.expose())?;
        let token = orchard_dep::decrypt_server_token(p7m, &keypair).map_err(dep_error)?;
        let now = self.clock.now();
        if token.is_expired(now) {
            return Err(CoreError::Invalid(
                DepError::TokenExpired {
                    expired_at: token.access_token_expiry.to_rfc3339(),
                }
                .to_string(),
            ));
        }
        let token_encrypted = self
            .pki
            .data_key
            .seal(token.to_json().expose().as_bytes(), &token_seal_context(id))?;
        let consumer_key = token.consumer_key.clone();
        let access_token_expiry = token.access_token_expiry;
        let account = match self.dep_client(token) {
            Ok(client) => client.account().await,
            Err(e) => Err(e),
        };
        let (server_name, org_name, account_error) = match account {
            Ok(a) => (a.server_name, a.org_name, None),
            Err(e) => {
                tracing::warn!(token = %id, error = %e, "dep account check failed after upload");
                (None, None, Some(e.to_string()))
            }
        };
        self.store
            .set_dep_token_uploaded(
                id,
                &DepTokenUpload {
                    token_encrypted,
                    consumer_key,
                    access_token_expiry,
                    server_name,
                    org_name,
                },
            )
            .await?;
        self.store
            .record_dep_sync(id, now, account_error.as_deref())
            .await?;
        tracing::info!(token = %id, actor = %operator.principal().actor(), "dep server token uploaded");
        let record = self.store.dep_token(id).await?.ok_or(CoreError::NotFound)?;
        Ok(status(record, now))
    }

    /// Fetches (first run, or after an expired cursor) or syncs the token's devices into the store (operators
    /// only). Failures are kept as the token's last error (with what to do, e.g. accept Apple's new terms).
    pub async fn sync_dep_token(
        &self,
        _operator: &OperatorCtx,
        id: &str,
    ) -> Result<DepSyncSummary, CoreError> {
        self.run_dep_sync(&self.system(), id).await
    }

    /// The sync itself (counted by outcome for `/metrics`), for the API and for a scheduler acting as the system.
    pub async fn run_dep_sync(
        &self,
        system: &SystemCtx,
        id: &str,
    ) -> Result<DepSyncSummary, CoreError> {
        let result = self.dep_sync_uncounted(system, id).await;
        // A sync of a token that does not exist is no sync (a mistyped id): not counted.
        if !matches!(result, Err(CoreError::NotFound)) {
            self.metrics.dep_sync(result.is_err());
        }
        result
    }

    /// The sync itself, uncounted.
    async fn dep_sync_uncounted(
        &self,
        _system: &SystemCtx,
        id: &str,
    ) -> Result<DepSyncSummary, CoreError> {
        let _running = self.dep.sync_lock.lock().await;
        let record = self.store.dep_token(id).await?.ok_or(CoreError::NotFound)?;
        let sealed = record.token_encrypted.as_ref().ok_or_else(|| {
            CoreError::Conflict(
                "no server token uploaded yet: download it from apple school manager and upload it"
                    .into(),
            )
        })?;
        let json = self.pki.data_key.open(sealed, &token_seal_context(id))?;
        let token = ServerToken::from_json(json.expose()).map_err(dep_error)?;
        let client = self.dep_client(token).map_err(dep_error)?;
        let saved = record.cursor.as_deref().and_then(|c| match DepCursor::parse(c) {
            Ok(cursor) => Some(cursor),
            Err(e) => {
                tracing::warn!(token = %id, error = %e, "stored dep cursor unusable; fetching everything");
                None
            }
        });
        let mut sink = StoreSink {
            store: self.store.clone(),
            token_id: id.to_owned(),
            clock: self.clock.clone(),
            fetched: None,
            removed: 0,
            in_flight: None,
        };
        let first = client.sync(saved.clone(), &mut sink).await;
        let mut result = sink.finish(first).await;
        if saved.is_some()
            && matches!(
                result,
                Err(DepError::InvalidCursor | DepError::CursorRequired)
            )
        {
            tracing::warn!(token = %id, "apple refused the stored dep cursor; fetching everything");
            self.store
                .save_dep_cursor(id, None, self.clock.now())
                .await?;
            let refetch = client.sync(None, &mut sink).await;
            result = sink.finish(refetch).await;
        }
        let now = self.clock.now();
        match result {
            Ok(outcome) => {
                // The sync's end and the token's assignment rule on its new serials commit together; due
                // assignments (new, changed templates, throttled ones whose wait is over) then go to Apple:
                // `pending` rows are the outbox, so a failure there is completed by the next run.
                let mut unit = self.store.begin_unit().await?;
                unit.record_dep_sync(id, now, None).await?;
                let auto_assigned = unit.auto_assign_dep_devices(id).await?;
                // Service-wide: DEP tokens are central IT's, so only global endpoints hear of a sync.
                self.record_webhook_event(
                    &mut unit,
                    None,
                    crate::webhooks::EVENT_DEP_SYNC,
                    serde_json::json!({
                        "dep_token_id": id,
                        "dep_token_name": record.name,
                        "devices_removed": sink.removed,
                        "auto_assigned": auto_assigned,
                    }),
                    now,
                )
                .await?;
                let events = unit.recorded_webhook_events();
                unit.commit().await?;
                if events {
                    self.wake_webhooks();
                }
                if auto_assigned > 0 {
                    tracing::info!(token = %id, count = auto_assigned, "new dep serials assigned by rule");
                }
                let assignments = self.push_dep_assignments(_system, id).await?;
                let active_devices = self
                    .store
                    .count_dep_devices(DepDeviceFilter {
                        token_id: Some(id),
                        only_active: true,
                    })
                    .await?;
                Ok(DepSyncSummary {
                    pages: outcome.pages,
                    records: outcome.records,
                    duplicates_dropped: outcome.duplicates_dropped,
                    skipped_invalid: outcome.skipped_invalid,
                    full_fetch: outcome.full_fetch,
                    restarted_after_expired_cursor: outcome.restarted_after_expired_cursor,
                    removed: sink.removed,
                    active_devices,
                    auto_assigned,
                    assignments,
                })
            }
            Err(e) => {
                tracing::warn!(token = %id, error = %e, "dep sync failed");
                self.store
                    .record_dep_sync(id, now, Some(&e.to_string()))
                    .await?;
                Err(dep_error(e))
            }
        }
    }

    /// Days left of every uploaded server token, for `/metrics` (no tenant data): (id, name, days left).
    pub async fn dep_token_days_left(
        &self,
        _system: &SystemCtx,
    ) -> Result<Vec<(String, String, i64)>, CoreError> {
        let now = self.clock.now();
        Ok(self
            .store
            .list_dep_tokens()
            .await?
            .into_iter()
            .filter_map(|t| {
                let expiry = t.access_token_expiry?;
                Some((t.id, t.name, (expiry.0 - now.0).div_euclid(86_400)))
            })
            .collect())
    }

    /// Every DEP token (operators only).
    pub async fn list_dep_tokens(
        &self,
        _operator: &OperatorCtx,
    ) -> Result<Vec<DepTokenStatus>, CoreError> {
        let now = self.clock.now();
        Ok(self
            .store
            .list_dep_tokens()
            .await?
            .into_iter()
            .map(|r| status(r, now))
            .collect())
    }

    /// DEP devices, of one token or all, optionally only those still assigned (operators only for now).
    pub async fn list_dep_devices(
        &self,
        _operator: &OperatorCtx,
        token_id: Option<&str>,
        only_active: bool,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<DepDeviceView>, CoreError> {
        let filter = DepDeviceFilter {
            token_id,
            only_active,
        };
        Ok(self
            .store
            .list_dep_devices(filter, limit.clamp(1, 1000), offset.max(0))
            .await?
            .into_iter()
            .map(DepDeviceView::from)
            .collect())
    }

    /// Seconds between DEP sync rounds (`--dep-sync-minutes`); zero switches the scheduler off.
    pub fn dep_sync_interval_seconds(&self) -> u64 {
        self.dep.settings.sync_interval_seconds
    }

    /// One round of the scheduler (public so tests drive it with a manual clock).
    pub async fn dep_scheduler_tick(&self, system: &SystemCtx, owner: &str, lease_seconds: u64) {
        let tokens = match self.store.list_dep_tokens().await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "dep scheduler: listing tokens failed");
                return;
            }
        };
        let now = self.clock.now();
        for token in tokens {
            if token.token_encrypted.is_none() {
                continue;
            }
            if let Some(expiry) = token.access_token_expiry {
                let days_left = (expiry.0 - now.0).div_euclid(86_400);
                if days_left < 0 {
                    tracing::error!(token = %token.id, name = %token.name, "dep server token expired: download a new one from apple school manager and upload it");
                    continue;
                } else if days_left <= DEP_TOKEN_WARNING_DAYS {
                    tracing::warn!(token = %token.id, name = %token.name, days_left, "dep server token expires soon: renew it in apple school manager");
                }
            }
            // A lease longer than the interval: a node that dies mid-sync is replaced after it expires.
            let until = now.plus_seconds(lease_seconds.max(60) as i64 * 2);
            match self
                .store
                .claim_dep_sync_lease(&token.id, owner, now, until)
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::error!(token = %token.id, error = %e, "dep scheduler: lease failed");
                    continue;
                }
            }
            match self.run_dep_sync(system, &token.id).await {
                Ok(summary) => {
                    tracing::info!(token = %token.id, records = summary.records, active = summary.active_devices, "scheduled dep sync done")
                }
                Err(e) => {
                    tracing::warn!(token = %token.id, error = %e, "scheduled dep sync failed")
                }
            }
            if let Err(e) = self.store.release_dep_sync_lease(&token.id, owner).await {
                tracing::error!(token = %token.id, error = %e, "dep scheduler: releasing the lease failed");
            }
        }
    }

    /// Releases every token lease `owner` holds (a scheduler round that shutdown interrupted mid-sync), so
    /// another node syncs those tokens at its next round instead of after the leases run out.
    pub(crate) async fn release_dep_sync_leases(&self, owner: &str) {
        let tokens = match self.store.list_dep_tokens().await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "dep scheduler: listing tokens to release their leases failed");
                return;
            }
        };
        for token in tokens {
            // Only the lease `owner` holds is released; another node's stays.
            if let Err(e) = self.store.release_dep_sync_lease(&token.id, owner).await {
                tracing::error!(token = %token.id, error = %e, "dep scheduler: releasing the lease failed");
            }
        }
    }

    fn dep_client(&self, token: ServerToken) -> Result<DepClient, DepError> {
        DepClient::new(self.dep.settings.config.clone(), token, self.clock.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_talk_to_apple_with_public_roots() {
        let settings = DepSettings::default();
        assert_eq!(settings.config.base_url, orchard_dep::APPLE_DEP_BASE_URL);
        assert!(settings.config.root_certificates_der.is_empty());
    }

    #[test]
    fn roots_come_from_every_pem_certificate() {
        let a = Identity::generate_self_signed_rsa("a", UnixTime(1_800_000_000), 1).unwrap();
        let b = Identity::generate_self_signed_rsa("b", UnixTime(1_800_000_000), 1).unwrap();
        let mut pem = a.cert_pem();
        pem.extend_from_slice(&b.cert_pem());
        let settings = DepSettings::with_base_url("https://127.0.0.1:9", Some(&pem)).unwrap();
        assert_eq!(settings.config.base_url, "https://127.0.0.1:9");
        assert_eq!(
            settings.config.root_certificates_der,
            vec![a.cert_der(), b.cert_der()]
        );
        assert!(DepSettings::with_base_url("https://x", Some(b"no pem here")).is_err());
        assert!(DepSettings::with_base_url(
            "https://x",
            Some(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n")
        )
        .is_err());
    }
}
