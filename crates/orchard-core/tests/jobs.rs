//! Background jobs through the worker, on SQLite and PostgreSQL, with a hand-moved clock and no sleeping:
//! a cluster-leased job runs on one of two nodes once per interval and records its failures; a job without a
//! lease runs on every node; the worker's loop stops at shutdown.

// Tests may unwrap and panic: a failed expectation is exactly what should stop them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use orchard_core::jobs::{Job, Lease, Step, StepOutcome, Worker};
use orchard_core::push::PushSettings;
use orchard_core::CoreError;
use orchard_store::{ScopeAuthority, Store};
use orchard_testkit::{with_store, Backend};
use orchard_types::{Clock, ManualClock, UnixTime};

const START: UnixTime = UnixTime(1_800_000_000);

/// Counts its runs; fails while `failing` is set.
struct CountingJob {
    lease: Lease,
    runs: Arc<AtomicUsize>,
    failing: bool,
}

impl Job for CountingJob {
    fn name(&self) -> &str {
        "counting"
    }
    fn interval(&self) -> Duration {
        Duration::from_secs(3600)
    }
    fn lease(&self) -> Lease {
        self.lease
    }
    async fn run_once(&self) -> Result<Step, CoreError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if self.failing {
            return Err(CoreError::Invalid("the job's work failed".into()));
        }
        Ok(Step::Idle)
    }
}

async fn scenario(store: Store, scopes: ScopeAuthority) {
    let clock = ManualClock::new(START);
    let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
    let orchard = Arc::new(orchard_testkit::service::test_orchard(
        store,
        scopes,
        clock_dyn,
        PushSettings::default(),
    ));
    let (_stop, stopped) = tokio::sync::watch::channel(());
    let node_a = Worker::with_owner(orchard.clone(), orchard.system(), "node-a", stopped.clone());
    let node_b = Worker::with_owner(orchard.clone(), orchard.system(), "node-b", stopped.clone());
    let runs = Arc::new(AtomicUsize::new(0));
    let clustered = |failing| CountingJob {
        lease: Lease::Cluster {
            lease: Duration::from_secs(60),
        },
        runs: runs.clone(),
        failing,
    };

    // Once per interval across both nodes.
    assert_eq!(
        node_a.step(&clustered(false)).await,
        StepOutcome::Ran(Step::Idle)
    );
    assert_eq!(
        node_b.step(&clustered(false)).await,
        StepOutcome::NotClaimed
    );
    clock.advance(3599);
    assert_eq!(
        node_b.step(&clustered(false)).await,
        StepOutcome::NotClaimed
    );
    clock.advance(1);
    assert_eq!(
        node_b.step(&clustered(false)).await,
        StepOutcome::Ran(Step::Idle)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // A failing run is recorded for operators and the job is due again after its interval.
    clock.advance(3600);
    assert_eq!(node_a.step(&clustered(true)).await, StepOutcome::Failed);
    let recorded = orchard.job_runs(&orchard.system()).await.unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].name, "counting");
    assert_eq!(recorded[0].runs, 3);
    assert_eq!(
        recorded[0].last_error.as_deref(),
        Some("invalid request: the job's work failed")
    );
    assert_eq!(recorded[0].lease_owner, None);
    clock.advance(3600);
    assert_eq!(
        node_b.step(&clustered(false)).await,
        StepOutcome::Ran(Step::Idle)
    );
    assert_eq!(
        orchard.job_runs(&orchard.system()).await.unwrap()[0].last_error,
        None
    );

    // Without a lease every node runs the job, and nothing is recorded.
    let free_runs = Arc::new(AtomicUsize::new(0));
    let free = CountingJob {
        lease: Lease::None,
        runs: free_runs.clone(),
        failing: false,
    };
    assert_eq!(node_a.step(&free).await, StepOutcome::Ran(Step::Idle));
    assert_eq!(node_b.step(&free).await, StepOutcome::Ran(Step::Idle));
    assert_eq!(free_runs.load(Ordering::SeqCst), 2);
    assert_eq!(orchard.job_runs(&orchard.system()).await.unwrap().len(), 1);

    // The loop runs a first step at once and ends when shutdown fires.
    let (stop, stopped) = tokio::sync::watch::channel(());
    let looping_runs = Arc::new(AtomicUsize::new(0));
    let handle = Worker::with_owner(orchard.clone(), orchard.system(), "node-c", stopped).spawn(
        CountingJob {
            lease: Lease::None,
            runs: looping_runs.clone(),
            failing: false,
        },
    );
    while looping_runs.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    drop(stop);
    handle.await.unwrap();
}

async fn jobs(backend: Backend) {
    with_store(backend, scenario).await;
}

orchard_testkit::backend_tests! {
    worker_steps_and_leases => jobs;
}
