//! Background jobs through the worker, on SQLite and PostgreSQL, with a hand-moved clock and no sleeping:
//! a cluster-leased job runs on one of two nodes once per interval and records its failures; a job without a
//! lease runs on every node; the worker's loop stops at shutdown.

// Tests may unwrap and panic: a failed expectation is exactly what should stop them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use orchard_core::jobs::{Job, Lease, Step, StepOutcome, Worker};
use orchard_core::push::PushSettings;
use orchard_core::{CoreConfig, CoreError, Orchard};
use orchard_store::{ScopeAuthority, Store};
use orchard_types::{ApnsTopic, Clock, ManualClock, UnixTime};
use sqlx::{AnyConnection, Connection, Executor};

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

fn orchard(store: Store, scopes: ScopeAuthority, dir: &Path, clock: &ManualClock) -> Arc<Orchard> {
    let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
    let pki = orchard_core::pki_files::load_or_create(dir, &[], &[], clock.now()).unwrap();
    let config = CoreConfig {
        public_url: "https://mdm.example.edu".into(),
        topic: ApnsTopic::parse("com.apple.mgmt.External.orchard-dev-test").unwrap(),
        organization: "Orchard University".into(),
        challenge_ttl_seconds: 3600,
        identity_validity_days: 365,
    };
    Arc::new(Orchard::new(
        store,
        scopes,
        Arc::new(pki.material),
        config,
        clock_dyn,
        PushSettings::default(),
    ))
}

async fn scenario(store: Store, scopes: ScopeAuthority, dir: &Path) {
    let clock = ManualClock::new(START);
    let orchard = orchard(store, scopes, dir, &clock);
    let (_stop, stopped) = tokio::sync::watch::channel(());
    let node_a = Worker::with_owner(orchard.clone(), "node-a", stopped.clone());
    let node_b = Worker::with_owner(orchard.clone(), "node-b", stopped.clone());
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
    let recorded = orchard.job_runs().await.unwrap();
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
    assert_eq!(orchard.job_runs().await.unwrap()[0].last_error, None);

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
    assert_eq!(orchard.job_runs().await.unwrap().len(), 1);

    // The loop runs a first step at once and ends when shutdown fires.
    let (stop, stopped) = tokio::sync::watch::channel(());
    let looping_runs = Arc::new(AtomicUsize::new(0));
    let handle = Worker::with_owner(orchard.clone(), "node-c", stopped).spawn(CountingJob {
        lease: Lease::None,
        runs: looping_runs.clone(),
        failing: false,
    });
    while looping_runs.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    drop(stop);
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (store, scopes) =
        Store::connect(&format!("sqlite://{}", dir.path().join("o.db").display()))
            .await
            .unwrap();
    scenario(store.clone(), scopes, dir.path()).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_on_postgres() {
    let Ok(admin_url) = std::env::var("ORCHARD_TEST_POSTGRES_URL") else {
        assert_eq!(
            std::env::var("ORCHARD_TEST_SKIP_POSTGRES").as_deref(),
            Ok("1"),
            "ORCHARD_TEST_POSTGRES_URL is not set; set ORCHARD_TEST_SKIP_POSTGRES=1 to skip deliberately"
        );
        return;
    };
    sqlx::any::install_default_drivers();
    let name = format!("orchard_t_{}", uuid::Uuid::new_v4().simple());
    let mut admin = AnyConnection::connect(&admin_url).await.unwrap();
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let (store, scopes) = Store::connect(&format!("{base}/{name}")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    scenario(store.clone(), scopes, dir.path()).await;
    store.close().await;
    let _ = admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await;
}
