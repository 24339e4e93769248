//! What the operators' monitoring sees of this node: counters kept in memory (requests, check-ins, command
//! results, pushes by APNs reason, DEP and Apps and Books syncs, background job runs), the figures read from
//! the database at scrape time (queue depth and age, job leases, sync lag, the connection pool), and the
//! request span's device fields.
//!
//! Counters are per node (Prometheus sums the nodes); the database figures are the same on every node. Every
//! label value is one of our own words (a route template, a message or request type, a status, one of
//! Apple's documented APNs reasons, a job name): nothing a client sends becomes a label, so the number of
//! series stays bounded whatever devices or attackers send. Rendering is the server's (`ops.rs`).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use orchard_apns::PushOutcome;
use orchard_store::{
    AppsTokenRecord, DepTokenRecord, JobRunRecord, PoolFigures, QueueStatusFigures,
};
use orchard_types::{TenantId, UnixTime};

use crate::access::capability::SystemCtx;
use crate::{CoreError, Orchard};

/// Upper bounds (seconds) of the request duration histogram's buckets; `+Inf` follows.
pub const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The APNs reasons Apple documents; any other answer is counted as `Other`, so a reason never grows the
/// number of series.
const APNS_REASONS: &[&str] = &[
    "BadCollapseId",
    "BadDeviceToken",
    "BadExpirationDate",
    "BadMessageId",
    "BadPriority",
    "BadTopic",
    "DeviceTokenNotForTopic",
    "DuplicateHeaders",
    "IdleTimeout",
    "InvalidPushType",
    "MissingDeviceToken",
    "MissingTopic",
    "PayloadEmpty",
    "TopicDisallowed",
    "BadCertificate",
    "BadCertificateEnvironment",
    "ExpiredProviderToken",
    "Forbidden",
    "InvalidProviderToken",
    "MissingProviderToken",
    "UnrelatedKeyIdInToken",
    "BadPath",
    "MethodNotAllowed",
    "ExpiredToken",
    "Unregistered",
    "PayloadTooLarge",
    "TooManyProviderTokenUpdates",
    "TooManyRequests",
    "InternalServerError",
    "ServiceUnavailable",
    "Shutdown",
];

/// A counter family: one count per label values.
struct Counters<K>(Mutex<BTreeMap<K, u64>>);

impl<K: Ord + Clone> Counters<K> {
    fn new() -> Self {
        Self(Mutex::new(BTreeMap::new()))
    }

    fn add(&self, key: K) {
        // A panic elsewhere while holding the lock leaves the map intact: counting goes on.
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *map.entry(key).or_insert(0) += 1;
    }

    fn snapshot(&self) -> Vec<(K, u64)> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Request durations of one route: counts per bucket (not cumulative), their sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DurationHistogram {
    /// `buckets[i]` counts requests no longer than [`DURATION_BUCKETS`]`[i]` and longer than the bucket before.
    pub buckets: [u64; DURATION_BUCKETS.len()],
    pub sum_seconds: f64,
    pub count: u64,
}

impl DurationHistogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = DURATION_BUCKETS.iter().position(|upper| seconds <= *upper) {
            if let Some(bucket) = self.buckets.get_mut(i) {
                *bucket += 1;
            }
        }
        self.sum_seconds += seconds;
        self.count += 1;
    }

    /// Cumulative counts per bucket, as Prometheus wants them (`le` buckets; `+Inf` is [`Self::count`]).
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        DURATION_BUCKETS
            .iter()
            .zip(self.buckets)
            .map(|(upper, n)| {
                total += n;
                (*upper, total)
            })
            .collect()
    }
}

/// This node's counters since it started.
pub struct Metrics {
    http_requests: Counters<(String, u16)>,
    http_durations: Mutex<BTreeMap<String, DurationHistogram>>,
    checkins: Counters<&'static str>,
    command_results: Counters<(&'static str, &'static str)>,
    push_results: Counters<&'static str>,
    dep_syncs: Counters<&'static str>,
    apps_syncs: Counters<&'static str>,
    job_runs: Counters<(String, &'static str)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            http_requests: Counters::new(),
            http_durations: Mutex::new(BTreeMap::new()),
            checkins: Counters::new(),
            command_results: Counters::new(),
            push_results: Counters::new(),
            dep_syncs: Counters::new(),
            apps_syncs: Counters::new(),
            job_runs: Counters::new(),
        }
    }
}

/// How one sync ended (`ok` or `error`), the label of the sync counters.
fn sync_outcome(failed: bool) -> &'static str {
    if failed {
        "error"
    } else {
        "ok"
    }
}

/// The counters' values at one moment, for rendering.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// (route template, status) → requests.
    pub http_requests: Vec<((String, u16), u64)>,
    pub http_durations: Vec<(String, DurationHistogram)>,
    /// MessageType → check-ins.
    pub checkins: Vec<(&'static str, u64)>,
    /// (RequestType, status) → results.
    pub command_results: Vec<((&'static str, &'static str), u64)>,
    /// APNs reason (`Success` for a delivered push) → pushes.
    pub push_results: Vec<(&'static str, u64)>,
    /// outcome → DEP syncs.
    pub dep_syncs: Vec<(&'static str, u64)>,
    /// outcome → Apps and Books syncs.
    pub apps_syncs: Vec<(&'static str, u64)>,
    /// (job, outcome) → steps.
    pub job_runs: Vec<((String, &'static str), u64)>,
}

impl Metrics {
    /// One answered HTTP request: `route` is the matched route template (never the raw path, which carries
    /// UDIDs and ids), or a fixed word for requests no route matched.
    pub fn http_request(&self, route: &str, status: u16, elapsed: Duration) {
        self.http_requests.add((route.to_owned(), status));
        let mut durations = self
            .http_durations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match durations.get_mut(route) {
            Some(h) => h.observe(elapsed.as_secs_f64()),
            None => {
                let mut h = DurationHistogram::default();
                h.observe(elapsed.as_secs_f64());
                durations.insert(route.to_owned(), h);
            }
        }
    }

    pub(crate) fn checkin(&self, message_type: &'static str) {
        self.checkins.add(message_type);
    }

    pub(crate) fn command_result(&self, request_type: &'static str, status: &'static str) {
        self.command_results.add((request_type, status));
    }

    pub(crate) fn push_result(&self, outcome: &PushOutcome) {
        self.push_results.add(push_reason(outcome));
    }

    pub(crate) fn dep_sync(&self, failed: bool) {
        self.dep_syncs.add(sync_outcome(failed));
    }

    pub(crate) fn apps_sync(&self, failed: bool) {
        self.apps_syncs.add(sync_outcome(failed));
    }

    pub(crate) fn job_run(&self, job: &str, outcome: &'static str) {
        self.job_runs.add((job.to_owned(), outcome));
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            http_requests: self.http_requests.snapshot(),
            http_durations: self
                .http_durations
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            checkins: self.checkins.snapshot(),
            command_results: self.command_results.snapshot(),
            push_results: self.push_results.snapshot(),
            dep_syncs: self.dep_syncs.snapshot(),
            apps_syncs: self.apps_syncs.snapshot(),
            job_runs: self.job_runs.snapshot(),
        }
    }
}

/// The label of a push's outcome: APNs' reason when it is one Apple documents, `Success` when delivered,
/// `Unreachable` when APNs could not be reached, `Other` for anything else.
fn push_reason(outcome: &PushOutcome) -> &'static str {
    let reason = match outcome {
        PushOutcome::Delivered { .. } => return "Success",
        PushOutcome::Failed(_) => return "Unreachable",
        PushOutcome::BadToken { reason, .. }
        | PushOutcome::CertificateProblem { reason, .. }
        | PushOutcome::Retry { reason, .. }
        | PushOutcome::Rejected { reason, .. } => reason,
    };
    APNS_REASONS
        .iter()
        .find(|known| **known == reason.as_str())
        .copied()
        .unwrap_or("Other")
}

/// What the database says at scrape time: the same on every node.
#[derive(Debug, Clone)]
pub struct OperationalFigures {
    pub now: UnixTime,
    pub queue: Vec<QueueStatusFigures>,
    /// The cluster-leased jobs: who holds each lease, the last run.
    pub jobs: Vec<JobRunRecord>,
    pub dep_tokens: Vec<DepSyncFigures>,
    pub apps_tokens: Vec<AppsSyncFigures>,
    /// This node's pool (not from the database).
    pub pool: PoolFigures,
}

/// One DEP token's sync state (labelled by the token's id, as the expiry gauges are: never its name).
#[derive(Debug, Clone)]
pub struct DepSyncFigures {
    pub token: String,
    pub last_sync_at: Option<UnixTime>,
    pub failing: bool,
}

/// One department's Apps and Books sync state.
#[derive(Debug, Clone)]
pub struct AppsSyncFigures {
    pub tenant: TenantId,
    pub last_sync_at: Option<UnixTime>,
    pub failing: bool,
}

impl From<&DepTokenRecord> for DepSyncFigures {
    fn from(t: &DepTokenRecord) -> Self {
        Self {
            token: t.id.clone(),
            last_sync_at: t.last_sync_at,
            failing: t.last_sync_error.is_some(),
        }
    }
}

impl From<&AppsTokenRecord> for AppsSyncFigures {
    fn from(t: &AppsTokenRecord) -> Self {
        Self {
            tenant: t.tenant_id,
            last_sync_at: t.last_sync_at,
            failing: t.last_error.is_some(),
        }
    }
}

impl Orchard {
    /// This node's counters (memory only, no tenant data).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The figures `/metrics` reads from the database: one aggregate query per family (the token tables hold a
    /// row per DEP token and per department).
    pub async fn operational_figures(
        &self,
        _system: &SystemCtx,
    ) -> Result<OperationalFigures, CoreError> {
        Ok(OperationalFigures {
            now: self.clock.now(),
            queue: self.store.command_queue_figures().await?,
            jobs: self.store.job_runs().await?,
            dep_tokens: self
                .store
                .list_dep_tokens()
                .await?
                .iter()
                .filter(|t| t.token_encrypted.is_some())
                .map(DepSyncFigures::from)
                .collect(),
            apps_tokens: self
                .store
                .list_apps_tokens()
                .await?
                .iter()
                .map(AppsSyncFigures::from)
                .collect(),
            pool: self.store.pool_figures(),
        })
    }
}

/// Puts the device of the current request (and its department) on the request's span, so every log line of
/// the request carries them. The span declares the fields; outside a request this does nothing.
pub(crate) fn note_device(udid: &impl std::fmt::Display, tenant: Option<TenantId>) {
    let span = tracing::Span::current();
    span.record("udid", tracing::field::display(udid));
    if let Some(tenant) = tenant {
        span.record("tenant", tracing::field::display(tenant));
    }
}

/// Puts the command a device reports on (and its request type) on the request's span.
pub(crate) fn note_command(uuid: &impl std::fmt::Display, request_type: &'static str) {
    let span = tracing::Span::current();
    span.record("command_uuid", tracing::field::display(uuid));
    span.record("request_type", request_type);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_their_bucket_and_add_up() {
        let m = Metrics::default();
        m.http_request("/mdm/checkin", 200, Duration::from_millis(3));
        m.http_request("/mdm/checkin", 200, Duration::from_millis(30));
        m.http_request("/mdm/checkin", 403, Duration::from_secs(60));
        let s = m.snapshot();
        assert_eq!(
            s.http_requests,
            vec![
                (("/mdm/checkin".to_string(), 200), 2),
                (("/mdm/checkin".to_string(), 403), 1)
            ]
        );
        let (_, h) = &s.http_durations[0];
        assert_eq!(h.count, 3);
        let cumulative = h.cumulative();
        assert_eq!(cumulative[0], (0.005, 1));
        assert_eq!(cumulative[3], (0.05, 2));
        // The minute-long request is only in +Inf.
        assert_eq!(cumulative.last().map(|c| c.1), Some(2));
        assert!((h.sum_seconds - 60.033).abs() < 1e-9);
    }

    #[test]
    fn only_documented_apns_reasons_become_labels() {
        let rejected = |reason: &str| PushOutcome::Rejected {
            status: 400,
            reason: reason.into(),
        };
        assert_eq!(push_reason(&rejected("BadPriority")), "BadPriority");
        assert_eq!(push_reason(&rejected("x\"} 1\nevil")), "Other");
        assert_eq!(
            push_reason(&PushOutcome::Delivered { apns_id: None }),
            "Success"
        );
        assert_eq!(
            push_reason(&PushOutcome::BadToken {
                status: 410,
                reason: "Unregistered".into(),
                unregistered_at: None
            }),
            "Unregistered"
        );
    }
}
