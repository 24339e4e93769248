//! The jobs every node runs: push dispatch, DEP sync, the usage snapshot, the command queue's hygiene and identity
//! renewal, each a thin [`Job`] over the domain's own step function (which tests also call directly).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Job, Lease, Step};
use crate::access::capability::SystemCtx;
use crate::push::pacing::AdaptivePacer;
use crate::reporting::usage::{UsageSnapshotter, SNAPSHOT_TICK};
use crate::{CoreError, Orchard};

/// How often the dispatcher reloads the push certificate, warns about its expiry and wakes inactive devices.
const PUSH_HOUSEKEEPING_EVERY: Duration = Duration::from_secs(30);

/// Turns owed pushes into APNs pushes, paced by a token bucket (`--push-rate`, `--push-burst`) whose refill
/// rate the adaptive pacer sets (`push.adaptive`, on by default; the fixed rate is then its upper bound).
pub struct PushDispatchJob {
    orchard: Arc<Orchard>,
    system: SystemCtx,
    pacing: Mutex<Pacing>,
}

struct Pacing {
    tokens: f64,
    last_refill: Instant,
    last_housekeeping: Option<Instant>,
    /// None with a fixed rate.
    adaptive: Option<AdaptivePacer>,
    /// The last step ran out of budget with pushes possibly still owed.
    backlog: bool,
}

impl PushDispatchJob {
    pub fn new(orchard: Arc<Orchard>, system: SystemCtx) -> Self {
        let settings = orchard.push.settings();
        let adaptive = settings
            .adaptive
            .then(|| AdaptivePacer::new(settings.pacing()));
        // Adaptively paced, the first pushes after a start are a burst at the initial rate, not the full bucket.
        let tokens = match &adaptive {
            Some(pacer) => pacer.rate().min(f64::from(settings.burst.max(1))),
            None => f64::from(settings.burst.max(1)),
        };
        Self {
            orchard,
            system,
            pacing: Mutex::new(Pacing {
                tokens,
                last_refill: Instant::now(),
                last_housekeeping: None,
                adaptive,
                backlog: false,
            }),
        }
    }

    /// The refill rate now: the adaptive pacer's after it saw this node's device traffic, or the fixed rate.
    fn rate(&self, pacing: &mut Pacing, now: Instant) -> f64 {
        let fixed = f64::from(self.orchard.push.settings().rate_per_second.max(1));
        let Some(pacer) = pacing.adaptive.as_mut() else {
            return fixed;
        };
        let now = now.into_std();
        if !pacer.due(now) {
            return pacer.rate();
        }
        // Read only when the pacer may act: reading starts a new window of finished requests.
        let signal = self.orchard.push.serving().signal();
        let before = pacer.rate();
        let rate = pacer.adjust(now, signal, pacing.backlog);
        if rate != before {
            tracing::debug!(rate, in_flight = signal.in_flight, latency_ms = ?signal.latency.map(|l| l.as_millis()), "push pacing");
        }
        self.orchard.push.set_pacing_rate(rate);
        rate
    }

    /// Refills the bucket and says how many pushes may go now, and whether housekeeping is due.
    fn budget(&self) -> (usize, bool) {
        let settings = self.orchard.push.settings();
        let now = Instant::now();
        // A poisoned lock only means another step panicked; the pacing numbers are still usable.
        let mut pacing = self.pacing.lock().unwrap_or_else(|e| e.into_inner());
        let rate = self.rate(&mut pacing, now);
        // The bucket holds at most a quarter second at the adaptive rate, so a cut takes effect at once.
        let capacity = match pacing.adaptive {
            Some(_) => f64::from(settings.burst.max(1)).min((rate / 4.0).max(1.0)),
            None => f64::from(settings.burst.max(1)),
        };
        pacing.tokens = (pacing.tokens
            + now.duration_since(pacing.last_refill).as_secs_f64() * rate)
            .min(capacity);
        pacing.last_refill = now;
        let housekeeping = pacing
            .last_housekeeping
            .is_none_or(|t| now.duration_since(t) >= PUSH_HOUSEKEEPING_EVERY);
        if housekeeping {
            pacing.last_housekeeping = Some(now);
        }
        (pacing.tokens.floor() as usize, housekeeping)
    }

    /// Takes `pushes` from the bucket; `backlog`: the budget was the limit (more may be owed).
    fn spend(&self, pushes: usize, backlog: bool) {
        let mut pacing = self.pacing.lock().unwrap_or_else(|e| e.into_inner());
        pacing.tokens -= pushes as f64;
        pacing.backlog = backlog;
    }

    fn current_rate(&self) -> f64 {
        let pacing = self.pacing.lock().unwrap_or_else(|e| e.into_inner());
        match &pacing.adaptive {
            Some(pacer) => pacer.rate(),
            None => f64::from(self.orchard.push.settings().rate_per_second.max(1)),
        }
    }
}

impl Job for PushDispatchJob {
    fn name(&self) -> &str {
        "push-dispatch"
    }

    /// Without a wake-up (queued commands wake it), the dispatcher looks once a second.
    fn interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn wake_signal(&self) -> Option<Arc<Notify>> {
        Some(self.orchard.push.wake_signal())
    }

    async fn run_once(&self) -> Result<Step, CoreError> {
        let (budget, housekeeping) = self.budget();
        if housekeeping {
            self.orchard.push_housekeeping().await;
        }
        if budget == 0 {
            return Ok(Step::More(Duration::from_millis(10)));
        }
        let stats = self
            .orchard
            .dispatch_pushes_once(&self.system, budget)
            .await?;
        let backlog = stats.claimed > 0 && stats.claimed >= budget;
        self.spend(stats.claimed, backlog);
        if backlog {
            // More may be owed: come back as soon as the bucket has refilled a little.
            let rate = self.current_rate();
            let pause = Duration::from_secs_f64((budget.min(100) as f64 / rate).max(0.01));
            return Ok(Step::More(pause));
        }
        Ok(Step::Idle)
    }
}

/// Syncs every uploaded DEP server token and sends its due assignments. One node per interval does the round
/// (cluster lease); within it each token is leased too, so a round that overruns cannot sync a token twice.
pub struct DepSyncJob {
    orchard: Arc<Orchard>,
    system: SystemCtx,
    owner: String,
    interval: Duration,
}

impl DepSyncJob {
    /// None when DEP sync is switched off (`--dep-sync-minutes 0`).
    pub fn new(orchard: Arc<Orchard>, system: SystemCtx, owner: &str) -> Option<Self> {
        let seconds = orchard.dep_sync_interval_seconds();
        (seconds > 0).then(|| Self {
            orchard,
            system,
            owner: owner.to_owned(),
            interval: Duration::from_secs(seconds),
        })
    }
}

impl Job for DepSyncJob {
    fn name(&self) -> &str {
        "dep-sync"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn lease(&self) -> Lease {
        // A sync of a large token against a slow Apple can take minutes; twice the interval (at least two
        // minutes) before another node may assume this one died.
        Lease::Cluster {
            lease: (self.interval * 2).max(Duration::from_secs(120)),
        }
    }

    async fn run_once(&self) -> Result<Step, CoreError> {
        self.orchard
            .dep_scheduler_tick(&self.system, &self.owner, self.interval.as_secs())
            .await;
        Ok(Step::Idle)
    }

    async fn release_interrupted(&self) {
        self.orchard.release_dep_sync_leases(&self.owner).await;
    }
}

/// Renews device identities before they run out (see [`crate::enrollment::renewal`]): one node per interval
/// queues the renewal profiles of the devices whose identity is inside the renewal window.
pub struct IdentityRenewalJob {
    orchard: Arc<Orchard>,
    system: SystemCtx,
}

impl IdentityRenewalJob {
    /// How often the job looks: identities are valid for months, an hour is plenty.
    pub const INTERVAL: Duration = Duration::from_secs(3600);

    pub fn new(orchard: Arc<Orchard>, system: SystemCtx) -> Self {
        Self { orchard, system }
    }
}

impl Job for IdentityRenewalJob {
    fn name(&self) -> &str {
        "identity-renewal"
    }

    fn interval(&self) -> Duration {
        Self::INTERVAL
    }

    fn lease(&self) -> Lease {
        // Two nodes queueing for the same device at once would each mint a challenge: one node at a time.
        Lease::Cluster {
            lease: Duration::from_secs(600),
        }
    }

    async fn run_once(&self) -> Result<Step, CoreError> {
        self.orchard
            .renew_expiring_identities_once(&self.system)
            .await?;
        Ok(Step::Idle)
    }
}

/// Tries failed command-driven OS updates (iPads older than iOS 17) again once their backoff has passed
/// (`osupdate::legacy::RETRY_FAILED_AFTER_SECONDS`); one node per interval.
pub struct OsUpdateRetryJob {
    orchard: Arc<Orchard>,
    system: SystemCtx,
}

impl OsUpdateRetryJob {
    /// How often the job looks; the backoff itself is hours.
    pub const INTERVAL: Duration = Duration::from_secs(900);

    pub fn new(orchard: Arc<Orchard>, system: SystemCtx) -> Self {
        Self { orchard, system }
    }
}

impl Job for OsUpdateRetryJob {
    fn name(&self) -> &str {
        "os-update-retry"
    }

    fn interval(&self) -> Duration {
        Self::INTERVAL
    }

    fn lease(&self) -> Lease {
        Lease::Cluster {
            lease: Duration::from_secs(600),
        }
    }

    async fn run_once(&self) -> Result<Step, CoreError> {
        let claimed = self
            .orchard
            .retry_failed_os_updates_once(&self.system)
            .await?;
        let full = i64::try_from(claimed).is_ok_and(|n| n >= crate::osupdate::legacy::RETRY_BATCH);
        Ok(if full {
            Step::More(Duration::ZERO)
        } else {
            Step::Idle
        })
    }
}

/// Takes each UTC day's usage snapshot at this node's first step of the day (idempotent across nodes).
pub struct UsageSnapshotJob {
    orchard: Arc<Orchard>,
    system: SystemCtx,
    snapshotter: tokio::sync::Mutex<UsageSnapshotter>,
}

impl UsageSnapshotJob {
    pub fn new(orchard: Arc<Orchard>, system: SystemCtx) -> Self {
        Self {
            orchard,
            system,
            snapshotter: tokio::sync::Mutex::new(UsageSnapshotter::new()),
        }
    }
}

impl Job for UsageSnapshotJob {
    fn name(&self) -> &str {
        "usage-snapshot"
    }

    fn interval(&self) -> Duration {
        SNAPSHOT_TICK
    }

    async fn run_once(&self) -> Result<Step, CoreError> {
        self.snapshotter
            .lock()
            .await
            .tick(&self.orchard, &self.system)
            .await?;
        Ok(Step::Idle)
    }
}

/// Pushes devices for commands they never answered, moves finished commands to the history and prunes it
/// (`--command-*` flags). Every node may run it: each step is safe concurrently.
pub struct CommandHygieneJob {
    orchard: Arc<Orchard>,
    system: SystemCtx,
}

impl CommandHygieneJob {
    pub fn new(orchard: Arc<Orchard>, system: SystemCtx) -> Self {
        Self { orchard, system }
    }
}

impl Job for CommandHygieneJob {
    fn name(&self) -> &str {
        "command-hygiene"
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(60)
    }

    async fn run_once(&self) -> Result<Step, CoreError> {
        self.orchard.command_queue_hygiene(&self.system).await?;
        Ok(Step::Idle)
    }
}

/// Syncs every tenant's Apps and Books location (claim check, apps and licence counts). One node per interval
/// (cluster lease), so Apple sees one client per deployment.
pub struct AppsSyncJob {
    orchard: Arc<Orchard>,
    system: SystemCtx,
    interval: Duration,
}

impl AppsSyncJob {
    /// None when the sync is switched off (`--apps-sync-minutes 0`).
    pub fn new(orchard: Arc<Orchard>, system: SystemCtx) -> Option<Self> {
        let seconds = orchard.apps_sync_interval_seconds();
        (seconds > 0).then(|| Self {
            orchard,
            system,
            interval: Duration::from_secs(seconds),
        })
    }
}

impl Job for AppsSyncJob {
    fn name(&self) -> &str {
        "apps-sync"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn lease(&self) -> Lease {
        Lease::Cluster {
            lease: (self.interval * 2).max(Duration::from_secs(120)),
        }
    }

    async fn run_once(&self) -> Result<Step, CoreError> {
        self.orchard.apps_sync_round(&self.system).await;
        Ok(Step::Idle)
    }
}
