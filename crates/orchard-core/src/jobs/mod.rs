//! Background work as jobs: one abstraction for everything Orchard does without a request — the push
//! dispatcher, the DEP scheduler, the daily usage snapshot, the reconciler, webhook delivery, and next the
//! expiry watcher.
//!
//! A job is a value with a [`Job::run_once`] step. The [`Worker`] runs steps until shutdown: again at once
//! while a step says there is more, else after the job's interval or when its wake signal fires. Tests call
//! `run_once` directly, so they drain work without sleeping.
//!
//! Jobs that are safe on every node at once (the push dispatcher claims rows with `FOR UPDATE SKIP LOCKED`;
//! the DEP scheduler leases each token) take no lease. A job that must run on one node at a time and at most
//! once per interval across all nodes says [`Lease::Cluster`]: the worker claims its `job_runs` row in the
//! database before each step and records the outcome after it; a node that dies mid-step is replaced once
//! its lease runs out.

mod builtin;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use orchard_store::{JobClaim, JobRunRecord};
use tokio::sync::{watch, Notify};
use tracing::Instrument;

use crate::access::capability::SystemCtx;
use crate::{CoreError, Orchard};

pub use builtin::{
    AppsSyncJob, CommandHygieneJob, DepSyncJob, IdentityRenewalJob, OsUpdateRetryJob,
    PushDispatchJob, UsageSnapshotJob,
};

/// What a step found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing more to do now: wait for the interval or a wake-up.
    Idle,
    /// More work is waiting: run the next step after this pause (zero: at once).
    More(Duration),
}

/// Whether a job may run on several nodes at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Every node runs the job; the job itself makes concurrent runs safe.
    None,
    /// One node at a time, at most once per interval across all nodes; a step that outlives `lease` is
    /// assumed dead and another node may take the job over.
    Cluster { lease: Duration },
}

/// One kind of background work.
pub trait Job: Send + Sync + 'static {
    /// Stable name: log field, `job_runs` row.
    fn name(&self) -> &str;
    /// How long to wait after an idle step (and, with a cluster lease, the least time between runs).
    fn interval(&self) -> Duration;
    fn lease(&self) -> Lease {
        Lease::None
    }
    /// A signal that ends the wait early (queued work for the push dispatcher).
    fn wake_signal(&self) -> Option<Arc<Notify>> {
        None
    }
    /// One step of the work.
    fn run_once(&self) -> impl Future<Output = Result<Step, CoreError>> + Send;
    /// Gives back what a step under lease held besides the job's own lease (leases of its own rows), after
    /// shutdown dropped the step part-way.
    fn release_interrupted(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Runs jobs until shutdown. `owner` names this node in leases (`node-<uuid>` per process).
pub struct Worker {
    orchard: Arc<Orchard>,
    /// Leases are the server's own bookkeeping.
    system: SystemCtx,
    owner: String,
    shutdown: watch::Receiver<()>,
}

/// What [`Worker::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// The step ran and said this.
    Ran(Step),
    /// Another node holds the job or it is not due yet.
    NotClaimed,
    /// The step failed (logged; for cluster jobs recorded in `job_runs`).
    Failed,
}

impl Worker {
    pub fn new(orchard: Arc<Orchard>, system: SystemCtx, shutdown: watch::Receiver<()>) -> Self {
        Self::with_owner(
            orchard,
            system,
            format!("node-{}", uuid::Uuid::new_v4()),
            shutdown,
        )
    }

    /// A worker with a chosen lease owner (tests model two nodes with two owners).
    pub fn with_owner(
        orchard: Arc<Orchard>,
        system: SystemCtx,
        owner: impl Into<String>,
        shutdown: watch::Receiver<()>,
    ) -> Self {
        Self {
            orchard,
            system,
            owner: owner.into(),
            shutdown,
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Starts `job` on the runtime; it stops when the shutdown sender fires or is dropped.
    pub fn spawn<J: Job>(&self, job: J) -> tokio::task::JoinHandle<()> {
        let worker = Worker {
            orchard: self.orchard.clone(),
            system: self.system.clone(),
            owner: self.owner.clone(),
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(async move { worker.run(job).await })
    }

    /// The loop: a step, then a pause chosen by the step, a wake-up or the interval.
    pub async fn run<J: Job>(mut self, job: J) {
        let wake = job.wake_signal();
        loop {
            let pause = match self.step(&job).await {
                StepOutcome::Ran(Step::More(pause)) => Some(pause),
                StepOutcome::Ran(Step::Idle) | StepOutcome::NotClaimed | StepOutcome::Failed => {
                    None
                }
            };
            let wait = pause.unwrap_or_else(|| job.interval());
            let woken = async {
                match (&wake, pause) {
                    // A job with work left waits only its pause.
                    (Some(signal), None) => signal.notified().await,
                    _ => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = woken => {}
                _ = self.shutdown.changed() => return,
            }
        }
    }

    /// One step of `job`, under its lease when it has one, in a `job` span (job name, node, outcome) and
    /// counted by outcome. Tests call this to act as one node.
    pub async fn step<J: Job>(&self, job: &J) -> StepOutcome {
        let span = tracing::info_span!(
            "job",
            job = job.name(),
            node = %self.owner,
            outcome = tracing::field::Empty,
        );
        let outcome = self.step_unobserved(job).instrument(span.clone()).await;
        let label = match outcome {
            StepOutcome::Ran(Step::Idle) => "idle",
            StepOutcome::Ran(Step::More(_)) => "more",
            StepOutcome::NotClaimed => "not_claimed",
            StepOutcome::Failed => "failed",
        };
        span.record("outcome", label);
        // Every second for the push dispatcher: debug only.
        tracing::debug!(parent: &span, "background job step done");
        self.orchard.metrics.job_run(job.name(), label);
        outcome
    }

    async fn step_unobserved<J: Job>(&self, job: &J) -> StepOutcome {
        match job.lease() {
            Lease::None => match job.run_once().await {
                Ok(step) => StepOutcome::Ran(step),
                Err(e) => {
                    tracing::error!(job = job.name(), error = %e, "background job step failed");
                    StepOutcome::Failed
                }
            },
            Lease::Cluster { lease } => self.step_under_lease(job, lease).await,
        }
    }

    async fn step_under_lease<J: Job>(&self, job: &J, lease: Duration) -> StepOutcome {
        let store = &self.orchard.store;
        let now = self.orchard.clock.now();
        let claim = JobClaim {
            name: job.name(),
            owner: &self.owner,
            now,
            lease_until: now.plus_seconds(seconds(lease).max(1)),
            due_if_started_before: now.plus_seconds(-seconds(job.interval())),
        };
        match store.claim_job_run(&claim).await {
            Ok(true) => {}
            Ok(false) => return StepOutcome::NotClaimed,
            Err(e) => {
                tracing::error!(job = job.name(), error = %e, "claiming a background job failed");
                return StepOutcome::Failed;
            }
        }
        // Shutdown does not wait for a step under lease (a sync against a slow Apple can take minutes): the
        // step is dropped, its open unit of work rolls back, and the lease is released now, so another node
        // takes the job at its next turn instead of after the lease runs out.
        let mut shutdown = self.shutdown.clone();
        let result = tokio::select! {
            result = job.run_once() => Some(result),
            _ = shutdown.changed() => None,
        };
        let error = match &result {
            Some(Ok(_)) => None,
            Some(Err(e)) => Some(e.to_string()),
            None => {
                job.release_interrupted().await;
                Some(INTERRUPTED_BY_SHUTDOWN.to_owned())
            }
        };
        let finished = self.orchard.clock.now();
        match store
            .finish_job_run(job.name(), &self.owner, finished, error.as_deref())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(job = job.name(), owner = %self.owner, "background job outlived its lease; another node may have run it too")
            }
            Err(e) => {
                tracing::error!(job = job.name(), error = %e, "recording a background job's run failed")
            }
        }
        match result {
            Some(Ok(step)) => StepOutcome::Ran(step),
            Some(Err(e)) => {
                tracing::error!(job = job.name(), error = %e, "background job step failed");
                StepOutcome::Failed
            }
            None => {
                tracing::info!(job = job.name(), owner = %self.owner, "background job step interrupted by shutdown; its lease is released");
                StepOutcome::Failed
            }
        }
    }
}

/// The error a step under lease records when shutdown interrupted it.
pub const INTERRUPTED_BY_SHUTDOWN: &str = "interrupted by shutdown";

fn seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

/// The running background jobs of one node.
pub struct RunningJobs {
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningJobs {
    /// Waits until every job has stopped (after shutdown).
    pub async fn join(self) {
        for handle in self.handles {
            let _ = handle.await;
        }
    }
}

impl Orchard {
    /// Starts this node's background jobs: push dispatch, DEP sync, the usage snapshot, identity renewal, the
    /// retry of failed OS updates, the reconciler and webhook delivery.
    /// Each job acts as the server itself: it holds a [`SystemCtx`] made here.
    pub fn start_jobs(self: &Arc<Self>, shutdown: watch::Receiver<()>) -> RunningJobs {
        let system = self.system();
        let worker = Worker::new(self.clone(), system.clone(), shutdown);
        let mut handles = vec![
            worker.spawn(PushDispatchJob::new(self.clone(), system.clone())),
            worker.spawn(UsageSnapshotJob::new(self.clone(), system.clone())),
            worker.spawn(CommandHygieneJob::new(self.clone(), system.clone())),
            worker.spawn(IdentityRenewalJob::new(self.clone(), system.clone())),
            worker.spawn(OsUpdateRetryJob::new(self.clone(), system.clone())),
            worker.spawn(crate::desired::reconciler::ReconcilerJob::new(
                self.clone(),
                system.clone(),
            )),
            worker.spawn(crate::webhooks::delivery::WebhookDeliveryJob::new(
                self.clone(),
                system.clone(),
                worker.owner(),
            )),
        ];
        if let Some(job) = AppsSyncJob::new(self.clone(), system.clone()) {
            handles.push(worker.spawn(job));
        }
        handles.push(
            worker.spawn(crate::credentials::warnings::CredentialExpiryJob::new(
                self.clone(),
                system.clone(),
                worker.owner(),
            )),
        );
        if let Some(job) = DepSyncJob::new(self.clone(), system, worker.owner()) {
            handles.push(worker.spawn(job));
        }
        RunningJobs { handles }
    }

    /// What the database knows of the cluster-leased jobs (for operators and tests).
    pub async fn job_runs(&self, _system: &SystemCtx) -> Result<Vec<JobRunRecord>, CoreError> {
        Ok(self.store.job_runs().await?)
    }
}
