//! Waking devices: the MDM push certificate's life cycle (upload, renewal guard, expiry warnings) and the
//! push dispatcher, which turns "this channel owes a push" rows into APNs pushes, coalesced and paced.
//!
//! Pending pushes live in the database (see orchard-store's push bookkeeping), so a restart loses none and any
//! node can dispatch them; this module only holds the APNs client and a wake-up signal. A dispatcher leases the
//! channels it pushes and settles each only once APNs answered: a node that dies in between loses nothing, the
//! lease runs out and any node pushes again. APNs' Retry-After and its refusal of the certificate are honoured
//! by every node (the refusal is stored with the certificate).

pub mod pacing;

use std::sync::{Arc, RwLock};

use futures::StreamExt;
use orchard_apns::{ApnsClient, ApnsConfig, DeviceToken, PushCertificate, PushOutcome};
use orchard_store::{PushCertificateRecord, PushResult, PushTarget};
use orchard_types::{ApnsTopic, DeviceId, PushMagic, UnixTime};
use serde::Serialize;
use tokio::sync::Notify;

use crate::access::capability::OperatorCtx;
use crate::access::capability::SystemCtx;
use crate::access::principal::Principal;
use crate::access::roles::Ability;
use crate::{CoreError, Orchard};

/// Days before expiry from which the push certificate is warned about (log and metrics).
pub const EXPIRY_WARNING_DAYS: i64 = 60;

/// How the dispatcher paces and where it sends.
#[derive(Debug, Clone)]
pub struct PushSettings {
    pub apns: ApnsConfig,
    /// Sustained pushes per second (token bucket refill), so a push to 50,000 iPads does not bring 50,000
    /// simultaneous check-ins.
    pub rate_per_second: u32,
    /// Bucket size: how many pushes may go out at once after a quiet period.
    pub burst: u32,
    /// Pushes in flight at once.
    pub concurrency: usize,
    /// A device not seen for this long gets a wake-up push (at most once per this period).
    pub wake_inactive_after_seconds: i64,
    /// How long a claimed push belongs to the node that claimed it. Longer than one push can take with the
    /// client's own retries; after it another node may push again (at worst a duplicate push, never a lost one).
    pub claim_lease_seconds: i64,
    /// Pace by what this node serves ([`pacing`]): `rate_per_second` becomes the upper bound. Off: the fixed
    /// rate.
    pub adaptive: bool,
    /// Adaptive pacing: more device requests in flight on this node than this is congestion.
    pub max_in_flight: u64,
    /// Adaptive pacing: a smoothed device-request latency above this (milliseconds) is congestion.
    pub target_latency_ms: u64,
}

impl PushSettings {
    /// The adaptive pacer's settings from these.
    pub fn pacing(&self) -> pacing::PacingSettings {
        pacing::PacingSettings {
            max_in_flight: self.max_in_flight.max(1),
            target_latency: std::time::Duration::from_millis(self.target_latency_ms.max(1)),
            ..pacing::PacingSettings::for_max_rate(f64::from(self.rate_per_second.max(1)))
        }
    }
}

impl Default for PushSettings {
    fn default() -> Self {
        Self {
            apns: ApnsConfig::production(),
            rate_per_second: 2_000,
            burst: 2_000,
            concurrency: 256,
            wake_inactive_after_seconds: 86_400,
            claim_lease_seconds: 300,
            adaptive: true,
            max_in_flight: 64,
            target_latency_ms: 500,
        }
    }
}

/// The running push machinery of one node.
pub struct PushState {
    settings: PushSettings,
    /// The APNs client for the active certificate; None before a certificate is uploaded or when it expired.
    client: RwLock<Option<LoadedCertificate>>,
    /// Set when APNs refuses our certificate: pushes stop until a new certificate is uploaded.
    halted: RwLock<Option<String>>,
    /// Rung when work was queued, so the dispatcher does not wait for its next tick.
    wake: Arc<Notify>,
    /// Who holds this node's push leases (random per process: a restarted node does not own its old leases).
    node_id: String,
    /// APNs answered 503 with Retry-After: this node sends nothing before then.
    paused_until: RwLock<Option<UnixTime>>,
    /// This node's device requests, which adaptive pacing reads.
    serving: Arc<pacing::ServingLoad>,
    /// The adaptive pacer's current rate (pushes per second, as f64 bits), for metrics and operators.
    pacing_rate: std::sync::atomic::AtomicU64,
}

#[derive(Clone)]
struct LoadedCertificate {
    id: String,
    client: Option<ApnsClient>,
    topic: ApnsTopic,
    /// The certificate's subject common name (Apple's `APSP:…`), shown to operators.
    subject: Option<String>,
    not_after: UnixTime,
}

impl PushState {
    pub fn new(settings: PushSettings) -> Self {
        Self {
            settings,
            client: RwLock::new(None),
            halted: RwLock::new(None),
            wake: Arc::new(Notify::new()),
            node_id: format!("node-{}", uuid::Uuid::new_v4().simple()),
            paused_until: RwLock::new(None),
            serving: Arc::default(),
            pacing_rate: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// This node's device traffic (adaptive pacing's signal).
    pub(crate) fn serving(&self) -> &Arc<pacing::ServingLoad> {
        &self.serving
    }

    pub(crate) fn set_pacing_rate(&self, rate: f64) {
        self.pacing_rate
            .store(rate.to_bits(), std::sync::atomic::Ordering::Relaxed);
    }

    /// The name this node's push leases are held under.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    fn paused_until(&self) -> Option<UnixTime> {
        self.paused_until.read().ok().and_then(|g| *g)
    }

    fn pause_until(&self, until: UnixTime) {
        if let Ok(mut g) = self.paused_until.write() {
            if g.is_none_or(|current| current < until) {
                *g = Some(until);
            }
        }
    }

    pub fn settings(&self) -> &PushSettings {
        &self.settings
    }

    /// What the dispatcher job waits on besides its interval.
    pub(crate) fn wake_signal(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    fn loaded(&self) -> Option<LoadedCertificate> {
        self.client.read().ok().and_then(|g| g.clone())
    }

    fn halted_reason(&self) -> Option<String> {
        self.halted.read().ok().and_then(|g| g.clone())
    }

    fn set_halted(&self, reason: Option<String>) {
        if let Ok(mut g) = self.halted.write() {
            *g = reason;
        }
    }
}

/// What an upload carries: the certificate from Apple's portal and its key, as PEM or as PKCS#12, or the
/// certificate alone when Orchard made the CSR and keeps the key.
#[derive(Debug)]
pub enum PushCertificateUpload {
    Pem {
        certificate: Vec<u8>,
        private_key: Vec<u8>,
    },
    Pkcs12 {
        der: Vec<u8>,
        password: String,
    },
    /// The certificate alone (PEM or DER), issued for a CSR made by [`Orchard::create_push_csr`]: its key is
    /// the one kept sealed in the store whose public key matches the certificate's.
    CertificateOnly {
        certificate: Vec<u8>,
    },
}

/// The push certificate as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushCertificateStatus {
    pub topic: String,
    /// The certificate's subject common name (Apple's `APSP:…`).
    pub subject: Option<String>,
    pub not_after: String,
    pub days_left: i64,
    pub expired: bool,
    /// Within [`EXPIRY_WARNING_DAYS`] of expiry (or expired).
    pub expiry_warning: bool,
    /// Why pushes are stopped, if they are.
    pub pushes_stopped: Option<String>,
}

/// One dispatcher pass.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct DispatchStats {
    pub claimed: usize,
    pub delivered: usize,
    pub dead_tokens: usize,
    pub requeued: usize,
    pub rejected: usize,
    /// Outcomes that could not be recorded (the store failed): those pushes stay leased until the lease runs
    /// out and are then pushed again; the rest of the batch is still settled.
    pub store_errors: usize,
}

fn days_left(not_after: UnixTime, now: UnixTime) -> i64 {
    (not_after.0 - now.0).div_euclid(86_400)
}

/// What a push certificate's key is sealed to (its row).
pub(crate) fn seal_context(id: &str) -> Vec<u8> {
    format!("push_certificates:{id}").into_bytes()
}

impl Orchard {
    /// The topic devices must name: the push certificate's, or the development topic before one exists.
    pub fn current_topic(&self) -> ApnsTopic {
        self.push
            .loaded()
            .map(|l| l.topic)
            .unwrap_or_else(|| self.config.topic.clone())
    }

    /// Loads the active push certificate from the store (at start, and when another node uploaded a new one).
    /// An expired certificate is loaded without a client: pushes stop with a clear error, nothing panics.
    pub async fn load_push_certificate(&self, _system: &SystemCtx) -> Result<(), CoreError> {
        let Some(record) = self.store.active_push_certificate().await? else {
            return Ok(());
        };
        if self.push.loaded().is_some_and(|l| l.id == record.id) {
            return Ok(());
        }
        let key = self
            .pki
            .data_key
            .open(&record.key_encrypted, &seal_context(&record.id))?;
        let cert = PushCertificate::from_pem(record.cert_pem.as_bytes(), key.expose())
            .map_err(|e| CoreError::Internal(format!("stored push certificate: {e}")))?;
        self.install_push_certificate(&record.id, cert);
        Ok(())
    }

    fn install_push_certificate(&self, id: &str, cert: PushCertificate) {
        let now = self.clock.now();
        let topic = cert.topic().clone();
        let not_after = cert.not_after();
        let subject = cert.subject_common_name();
        let client = match ApnsClient::new(
            cert,
            self.push.settings.apns.clone(),
            self.clock.clone(),
        ) {
            Ok(c) => {
                self.push.set_halted(None);
                Some(c)
            }
            Err(e) => {
                tracing::error!(%topic, error = %e, "push certificate cannot be used: pushes are stopped");
                self.push.set_halted(Some(e.to_string()));
                None
            }
        };
        let left = days_left(not_after, now);
        if left <= EXPIRY_WARNING_DAYS {
            tracing::warn!(%topic, days_left = left, "the mdm push certificate expires soon: renew it with the same apple account");
        }
        tracing::info!(%topic, days_left = left, "push certificate loaded");
        if let Ok(mut g) = self.push.client.write() {
            *g = Some(LoadedCertificate {
                id: id.to_string(),
                client,
                topic,
                subject,
                not_after,
            });
        }
        self.push.wake.notify_one();
    }

    /// Uploads a push certificate (operators only). A certificate for another topic than the current one is
    /// refused unless `force`: every iPad enrolled under the old topic would be lost until it is re-enrolled.
    /// The API and `orchard push-cert upload` (through its [`crate::access::bootstrap::LocalBootstrap`]) both
    /// come here with an operator's handle.
    pub async fn upload_push_certificate(
        &self,
        operator: &OperatorCtx,
        upload: PushCertificateUpload,
        force: bool,
    ) -> Result<PushCertificateStatus, CoreError> {
        let actor = operator.principal().actor();
        let now = self.clock.now();
        let cert = match &upload {
            PushCertificateUpload::Pem {
                certificate,
                private_key,
            } => PushCertificate::from_pem(certificate, private_key),
            PushCertificateUpload::Pkcs12 { der, password } => {
                PushCertificate::from_pkcs12(der, password)
            }
            PushCertificateUpload::CertificateOnly { certificate } => {
                self.pair_with_push_csr_key(certificate).await?
            }
        }
        .map_err(|e| CoreError::Invalid(e.to_string()))?;
        cert.check_valid_at(now)
            .map_err(|e| CoreError::Invalid(e.to_string()))?;
        let new_topic = cert.topic().clone();
        let current = self.current_topic();
        if new_topic != current && !force {
            let has_cert = self.store.active_push_certificate().await?.is_some();
            let enrolled = self.store.count_devices(operator.scope()).await?;
            if has_cert || enrolled > 0 {
                return Err(CoreError::Conflict(format!(
                    "this certificate is for topic {new_topic}, but the current topic is {current}: every \
                     enrolled iPad ({enrolled}) would be lost to management until it is erased and re-enrolled. \
                     Renew the certificate in the Apple Push Certificates Portal with the same Apple Account \
                     (a renewal keeps the topic), or pass force to replace it anyway"
                )));
            }
        }
        let id = orchard_types::TokenId::new().to_string();
        let record = PushCertificateRecord {
            id: id.clone(),
            topic: new_topic.to_string(),
            cert_pem: String::from_utf8_lossy(&cert.cert_pem()).into_owned(),
            key_encrypted: self
                .pki
                .data_key
                .seal(cert.key_pem().expose(), &seal_context(&id))?,
            not_before: cert.not_before(),
            not_after: cert.not_after(),
            uploaded_at: now,
            uploaded_by: Some(actor.to_string()),
            active: true,
        };
        self.store.save_push_certificate(&record).await?;
        if new_topic != current {
            tracing::warn!(old = %current, new = %new_topic, %actor, "push topic replaced (forced)");
        }
        self.install_push_certificate(&id, cert);
        self.push_certificate_status()
            .ok_or_else(|| CoreError::Internal("push certificate vanished".into()))
    }

    /// The loaded push certificate's state; None before one is uploaded.
    pub fn push_certificate_status(&self) -> Option<PushCertificateStatus> {
        let now = self.clock.now();
        self.push.loaded().map(|l| {
            let left = days_left(l.not_after, now);
            let expired = l.not_after <= now;
            PushCertificateStatus {
                topic: l.topic.to_string(),
                subject: l.subject.clone(),
                not_after: l.not_after.to_rfc3339(),
                days_left: left,
                expired,
                expiry_warning: left <= EXPIRY_WARNING_DAYS,
                pushes_stopped: if expired {
                    Some("the push certificate has expired".into())
                } else {
                    self.push.halted_reason()
                },
            }
        })
    }

    /// A device request (check-in or command session) that arrived at `arrived` and whose signature verified is
    /// served from now on; the guard ends it when dropped. Core takes it after verification, so adaptive push
    /// pacing sees only the requests of devices we enrolled, not whoever floods the device endpoints.
    pub(crate) fn device_request_verified(
        &self,
        arrived: std::time::Instant,
    ) -> pacing::DeviceRequestGuard {
        self.push.serving.start(arrived)
    }

    /// Verified device requests being served on this node now (for `/metrics`).
    pub fn device_requests_in_flight(&self) -> u64 {
        self.push.serving.in_flight()
    }

    /// Verified device requests this node served since it started (for `/metrics`).
    pub fn device_requests_served(&self) -> u64 {
        self.push.serving.served()
    }

    /// The push rate this node paces at now (pushes per second): the adaptive pacer's, or the fixed rate.
    pub fn push_pacing_rate(&self) -> f64 {
        let bits = self
            .push
            .pacing_rate
            .load(std::sync::atomic::Ordering::Relaxed);
        if bits == 0 {
            f64::from(self.push.settings.rate_per_second)
        } else {
            f64::from_bits(bits)
        }
    }

    /// Tells the dispatcher there is work (after commands were queued).
    pub(crate) fn wake_dispatcher(&self) {
        self.push.wake.notify_one();
    }

    /// Channels that owe a push, on every tenant (a gauge for `/metrics`; no tenant's data).
    pub async fn pending_push_count(&self, _system: &SystemCtx) -> Result<i64, CoreError> {
        Ok(self.store.count_due_pushes().await?)
    }

    /// `POST /devices/{id}/push`: push every channel of the device now. Read-only roles may not.
    pub async fn push_device(&self, who: &Principal, id: DeviceId) -> Result<u64, CoreError> {
        let device = self
            .store
            .get_device(who.scope(), id)
            .await?
            .ok_or(CoreError::NotFound)?;
        who.require(Ability::Query, device.tenant_id, "viewers may not push")?;
        let n = self
            .store
            .request_push_for_device(device.id, self.clock.now())
            .await?;
        self.wake_dispatcher();
        Ok(n)
    }

    /// One dispatcher pass: leases up to `limit` channels that owe a push and pushes them concurrently, acting
    /// on each answer. Tests call this directly instead of sleeping.
    pub async fn dispatch_pushes_once(
        &self,
        system: &SystemCtx,
        limit: usize,
    ) -> Result<DispatchStats, CoreError> {
        let mut stats = DispatchStats::default();
        if self.push.halted_reason().is_some() {
            // Stopped by a refused certificate: a replacement uploaded on another node lets this one push
            // again from its next pass (installing it clears the stop).
            self.load_push_certificate(system).await?;
        }
        let Some(loaded) = self.push.loaded() else {
            return Ok(stats);
        };
        let Some(client) = loaded.client else {
            return Ok(stats);
        };
        if self.push.halted_reason().is_some() || limit == 0 {
            return Ok(stats);
        }
        // Another node may have been told by APNs that this certificate is refused.
        if let Some(reason) = self.store.push_certificate_refusal(&loaded.id).await? {
            self.push.set_halted(Some(reason));
            return Ok(stats);
        }
        let now = self.clock.now();
        if self.push.paused_until().is_some_and(|until| until > now) {
            return Ok(stats);
        }
        let node = self.push.node_id.as_str();
        let lease_until = now.plus_seconds(self.push.settings.claim_lease_seconds.max(1));
        let targets = self
            .store
            .claim_push_leases(
                i64::try_from(limit).unwrap_or(i64::MAX),
                node,
                now,
                lease_until,
            )
            .await?;
        stats.claimed = targets.len();
        let concurrency = self.push.settings.concurrency.max(1);
        let outcomes: Vec<(PushTarget, PushOutcome)> = futures::stream::iter(targets)
            .map(|t| {
                let client = client.clone();
                async move {
                    let outcome = match (
                        DeviceToken::from_bytes(&t.push_token),
                        PushMagic::parse(&t.push_magic),
                    ) {
                        (Ok(token), Ok(magic)) => client.push(&token, &magic).await,
                        _ => PushOutcome::BadToken {
                            status: 0,
                            reason: "stored token or push magic is malformed".into(),
                            unregistered_at: None,
                        },
                    };
                    (t, outcome)
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        // Answers arrive over time: settle them at the time they are recorded.
        let now = self.clock.now();
        let node = self.push.node_id.as_str();
        let mut delivered = Vec::with_capacity(outcomes.len());
        let mut failed = false;
        for (t, outcome) in outcomes {
            self.metrics.push_result(&outcome);
            failed |= matches!(outcome, PushOutcome::Failed(_));
            if matches!(outcome, PushOutcome::Delivered { .. }) {
                delivered.push(t);
                continue;
            }
            // One failed write must not leave the rest of the batch unsettled; the failed one keeps its lease
            // and is pushed again when the lease runs out.
            if let Err(e) = self
                .settle_push(&loaded.id, &t, outcome, now, &mut stats)
                .await
            {
                tracing::error!(channel = %t.channel, error = %e, "recording a push outcome failed; it is pushed again after its lease");
                stats.store_errors += 1;
            }
        }
        // The usual answer, settled together: a statement per chunk instead of one per push.
        match self
            .store
            .complete_pushes(&delivered, node, &PushResult::Delivered, now)
            .await
        {
            Ok(()) => stats.delivered += delivered.len(),
            Err(e) => {
                tracing::error!(pushes = delivered.len(), error = %e, "recording delivered pushes failed; they are pushed again after their leases");
                stats.store_errors += delivered.len();
            }
        }
        if failed {
            // A push that failed before APNs answered (a refused TLS handshake, a dropped connection) may be
            // this node's certificate gone stale: another node may have uploaded its replacement. Taking it now,
            // not at the next housekeeping (up to 30 s later), keeps this node from failing every push it
            // claims meanwhile. One read; the certificate is installed only if it changed.
            if let Err(e) = self.load_push_certificate(system).await {
                tracing::error!(error = %e, "loading the push certificate failed");
            }
        }
        Ok(stats)
    }

    /// Records what APNs answered for one leased push that was not delivered (deliveries are settled together
    /// by [`Orchard::dispatch_pushes_once`]).
    async fn settle_push(
        &self,
        certificate_id: &str,
        t: &PushTarget,
        outcome: PushOutcome,
        now: UnixTime,
        stats: &mut DispatchStats,
    ) -> Result<(), CoreError> {
        let node = self.push.node_id.as_str();
        match outcome {
            // Not reached from a dispatcher pass, which settles its deliveries together; answered alike here.
            PushOutcome::Delivered { .. } => {
                self.store
                    .complete_pushes(std::slice::from_ref(t), node, &PushResult::Delivered, now)
                    .await?;
                stats.delivered += 1;
            }
            PushOutcome::BadToken { status, reason, .. } => {
                if self
                    .store
                    .mark_push_token_dead(t, node, status, &reason, now)
                    .await?
                {
                    tracing::info!(channel = %t.channel, status, %reason, "push token dead until the next TokenUpdate");
                    stats.dead_tokens += 1;
                } else {
                    tracing::info!(channel = %t.channel, status, %reason, "pushed token is dead but the device sent a new one meanwhile: pushing that");
                    stats.requeued += 1;
                }
            }
            PushOutcome::CertificateProblem { status, reason } => {
                tracing::error!(?status, %reason, "apns refused the push certificate: pushes are stopped until a new certificate is uploaded");
                self.push.set_halted(Some(reason.clone()));
                if status.is_some() {
                    // APNs said so: every node stops, not just this one.
                    self.store
                        .refuse_push_certificate(certificate_id, &reason, now)
                        .await?;
                }
                let result = PushResult::CertificateRefused { reason: &reason };
                self.store
                    .release_push(&t.channel, node, None, &result, now)
                    .await?;
                stats.requeued += 1;
            }
            PushOutcome::Retry {
                after,
                status,
                reason,
            } => {
                let seconds = i64::try_from(after.as_secs()).unwrap_or(i64::MAX / 2)
                    + i64::from(after.subsec_nanos() > 0);
                let not_before = now.plus_seconds(seconds.max(1));
                if status == 429 {
                    tracing::warn!(channel = %t.channel, status, %reason, retry_at = %not_before.to_rfc3339(), "apns throttles this device: its push waits");
                } else {
                    // The service itself is unavailable: this node sends nothing before then.
                    tracing::warn!(status, %reason, retry_at = %not_before.to_rfc3339(), "apns asked us to wait: pushes paused");
                    self.push.pause_until(not_before);
                }
                let result = PushResult::RetryLater {
                    status,
                    reason: &reason,
                };
                self.store
                    .release_push(&t.channel, node, Some(not_before), &result, now)
                    .await?;
                stats.requeued += 1;
            }
            PushOutcome::Failed(e) => {
                tracing::warn!(channel = %t.channel, error = %e, "push failed; it stays owed");
                let error = e.to_string();
                let result = PushResult::Failed { error: &error };
                self.store
                    .release_push(&t.channel, node, None, &result, now)
                    .await?;
                stats.requeued += 1;
            }
            PushOutcome::Rejected { status, reason } => {
                // APNs refused the request itself; sending it again would not help.
                tracing::warn!(channel = %t.channel, status, %reason, "apns rejected the push request");
                let result = PushResult::Rejected {
                    status,
                    reason: &reason,
                };
                self.store
                    .complete_pushes(std::slice::from_ref(t), node, &result, now)
                    .await?;
                stats.rejected += 1;
            }
        }
        Ok(())
    }

    /// The dispatcher's housekeeping (every 30 s, from [`crate::jobs::PushDispatchJob`]): reloads the
    /// certificate when another node replaced it, warns about its expiry, and asks inactive devices to check in.
    pub(crate) async fn push_housekeeping(&self) {
        if let Err(e) = self.load_push_certificate(&self.system()).await {
            tracing::error!(error = %e, "loading the push certificate failed");
        }
        if let Some(loaded) = self.push.loaded() {
            match self.store.push_certificate_refusal(&loaded.id).await {
                Ok(Some(reason)) => self.push.set_halted(Some(reason)),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "reading the push certificate's state failed")
                }
            }
        }
        if let Some(status) = self.push_certificate_status() {
            if status.expired {
                tracing::error!(topic = %status.topic, "the mdm push certificate has expired: no device can be woken");
            } else if status.expiry_warning {
                tracing::warn!(topic = %status.topic, days_left = status.days_left, "the mdm push certificate expires soon");
            }
        }
        let now = self.clock.now();
        let after = self.push.settings.wake_inactive_after_seconds;
        if after > 0 {
            let cutoff = UnixTime(now.0 - after);
            match self
                .store
                .request_wake_for_inactive(cutoff, cutoff, 10_000, now)
                .await
            {
                Ok(n) if n > 0 => {
                    tracing::info!(devices = n, "wake-up pushes for inactive devices")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "wake-up sweep failed"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Push certificate requests: Orchard makes the key and CSR, keeps the key sealed, and pairs Apple's
// certificate with it on upload, so the private key never leaves the server.

/// Subject common name of the push CSRs Orchard makes (Apple replaces the subject in the certificate).
pub const PUSH_CSR_COMMON_NAME: &str = "Orchard MDM Push Certificate";

/// An MDM vendor signing identity (Apple Developer Enterprise Program "MDM CSR" certificate): the PEM chain
/// (vendor certificate, Apple WWDR intermediate, Apple Root CA) and the vendor's unencrypted PEM key.
#[derive(Debug, Clone)]
pub struct VendorIdentity {
    pub cert_chain_pem: Vec<u8>,
    pub key_pem: orchard_types::Secret<Vec<u8>>,
}

/// A push certificate request for the Apple Push Certificates Portal. The private key is not here: it stays
/// sealed in the database until the certificate is uploaded.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushCsr {
    /// The PKCS#10 CSR (PEM), to be signed by an MDM vendor.
    pub csr_pem: String,
    /// With a vendor identity: the signed request the portal accepts (base64 of the request plist).
    pub vendor_signed_request_b64: Option<String>,
}

fn csr_seal_context(id: &str) -> Vec<u8> {
    format!("push_csr_keys:{id}").into_bytes()
}

impl Orchard {
    /// Makes a new push key and CSR (operators only); with a vendor identity, also the vendor-signed request.
    /// The key is stored sealed with the data key; upload Apple's certificate alone afterwards
    /// ([`PushCertificateUpload::CertificateOnly`]).
    /// The API and `orchard push-cert csr` (through its [`crate::access::bootstrap::LocalBootstrap`]) both come
    /// here with an operator's handle.
    pub async fn create_push_csr(
        &self,
        operator: &OperatorCtx,
        vendor: Option<VendorIdentity>,
    ) -> Result<PushCsr, CoreError> {
        let actor = operator.principal().actor();
        let now = self.clock.now();
        let subject = orchard_pki::push_csr::PushCsrSubject {
            common_name: PUSH_CSR_COMMON_NAME.into(),
            organization: Some(self.config.organization.clone()).filter(|o| !o.trim().is_empty()),
            country: None,
            email: None,
        };
        // RSA key generation takes tens of milliseconds of CPU: keep it off the async workers.
        let (generated, signed) = tokio::task::spawn_blocking(move || {
            let generated = orchard_pki::push_csr::generate_push_csr(&subject)
                .map_err(|e| CoreError::Internal(format!("making the push csr: {e}")))?;
            // Signed before anything is stored, so a bad vendor identity leaves no orphan key behind.
            let signed = vendor
                .map(|v| {
                    orchard_pki::push_csr::vendor_sign_push_csr(
                        &generated.csr_der,
                        &v.cert_chain_pem,
                        v.key_pem.expose(),
                        now,
                    )
                    .map_err(|e| match e {
                        orchard_pki::PkiError::Expired | orchard_pki::PkiError::NotYetValid => {
                            CoreError::Invalid(format!("mdm vendor certificate: {e}"))
                        }
                        other => CoreError::Invalid(format!("mdm vendor signing: {other}")),
                    })
                })
                .transpose()?;
            Ok::<_, CoreError>((generated, signed))
        })
        .await
        .map_err(|e| CoreError::Internal(format!("push csr task: {e}")))??;
        let id = orchard_types::TokenId::new().to_string();
        let record = orchard_store::PushCsrKeyRecord {
            id: id.clone(),
            public_key_sha256: generated.public_key_sha256.clone(),
            key_encrypted: self
                .pki
                .data_key
                .seal(generated.key_pem.expose(), &csr_seal_context(&id))?,
            created_at: now,
        };
        self.store.save_push_csr_key(&record).await?;
        tracing::info!(
            %actor,
            public_key_sha256 = %generated.public_key_sha256,
            vendor_signed = signed.is_some(),
            "push certificate request made; its key is kept sealed until the certificate is uploaded"
        );
        Ok(PushCsr {
            csr_pem: String::from_utf8_lossy(&generated.csr_pem).into_owned(),
            vendor_signed_request_b64: signed,
        })
    }

    /// Pairs a certificate uploaded alone with the stored key of the CSR it was issued for.
    async fn pair_with_push_csr_key(
        &self,
        certificate: &[u8],
    ) -> Result<Result<PushCertificate, orchard_apns::ApnsError>, CoreError> {
        let certificate_pem = orchard_pki::push_csr::certificate_to_pem(certificate)
            .map_err(|e| CoreError::Invalid(format!("push certificate: {e}")))?;
        let public_key_sha256 = orchard_pki::push_csr::cert_public_key_sha256_hex(&certificate_pem)
            .map_err(|e| CoreError::Invalid(format!("push certificate: {e}")))?;
        let Some(record) = self
            .store
            .push_csr_key_by_public_key(&public_key_sha256)
            .await?
        else {
            return Err(CoreError::Invalid(
                "no stored key matches this certificate: it was not issued for a push certificate request \
                 made by this server. Upload it together with its private key (or as PKCS#12), or make a new \
                 request (POST /api/v1/push-certificate/csr or `orchard push-cert csr`) and submit that to \
                 the Apple Push Certificates Portal"
                    .into(),
            ));
        };
        let key = self
            .pki
            .data_key
            .open(&record.key_encrypted, &csr_seal_context(&record.id))?;
        Ok(PushCertificate::from_pem(&certificate_pem, key.expose()))
    }
}
