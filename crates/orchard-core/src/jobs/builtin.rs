//! The jobs every node runs: push dispatch, DEP sync, the usage snapshot, the command queue's hygiene and identity
//! renewal, each a thin [`Job`] over the domain's own step function (which tests also call directly).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Job, Lease, Step};
use crate::access::capability::SystemCtx;
use crate::reporting::usage::{UsageSnapshotter, SNAPSHOT_TICK};
use crate::{CoreError, Orchard};

/// How often the dispatcher reloads the push certificate, warns about its expiry and wakes inactive devices.
const PUSH_HOUSEKEEPING_EVERY: Duration = Duration::from_secs(30);

/// Turns owed pushes into APNs pushes, paced by a token bucket (`--push-rate`, `--push-burst`).
pub struct PushDispatchJob {
    orchard: Arc<Orchard>,
    system: SystemCtx,
    pacing: Mutex<Pacing>,
}

struct Pacing {
    tokens: f64,
    last_refill: Instant,
    last_housekeeping: Option<Instant>,
}

impl PushDispatchJob {
    pub fn new(orchard: Arc<Orchard>, system: SystemCtx) -> Self {
        let burst = f64::from(orchard.push.settings().burst.max(1));
        Self {
            orchard,
            system,
            pacing: Mutex::new(Pacing {
                tokens: burst,
                last_refill: Instant::now(),
                last_housekeeping: None,
            }),
        }
    }

    /// Refills the bucket and says how many pushes may go now, and whether housekeeping is due.
    fn budget(&self) -> (usize, bool) {
        let settings = self.orchard.push.settings();
        let rate = f64::from(settings.rate_per_second.max(1));
        let capacity = f64::from(settings.burst.max(1));
        let now = Instant::now();
        // A poisoned lock only means another step panicked; the pacing numbers are still usable.
        let mut pacing = self.pacing.lock().unwrap_or_else(|e| e.into_inner());
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

    fn spend(&self, pushes: usize) {
        let mut pacing = self.pacing.lock().unwrap_or_else(|e| e.into_inner());
        pacing.tokens -= pushes as f64;
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
        self.spend(stats.claimed);
        if stats.claimed > 0 && stats.claimed >= budget {
            // More may be owed: come back as soon as the bucket has refilled a little.
            let rate = f64::from(self.orchard.push.settings().rate_per_second.max(1));
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
