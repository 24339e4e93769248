//! Benchmark (issue 13): one app assigned to 5,000 iPads of a department against the local Apps and Books server
//! over TLS — licences associated by serial in batches within the limits service config announces (one event per
//! batch, polled to completion), and the time until every InstallApplication is queued. In-process (core's
//! reconciler and licence pass, as the server's reconciler job runs them) on SQLite or PostgreSQL.
//!
//! Run: `scripts/bench-app-installs.sh` (release; `ORCHARD_BENCH_DEVICES` to change the fleet size).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use orchard_core::access::bootstrap::LocalBootstrap;
use orchard_core::apps::AppsSettings;
use orchard_core::desired::assignments::AssignmentInput;
use orchard_core::push::PushSettings;
use orchard_store::{AuthenticateDevice, DeviceFacts, Tenant, TokenUpdateRecord};
use orchard_testkit::service::test_orchard;
use orchard_testkit::{Backend, TestDatabase};
use orchard_types::{ChannelId, Clock, SystemClock, TenantId, Udid};
use orchard_vpp::fake::{FakeVppConfig, FakeVppServer};

const APP: &str = "361309726";

async fn bench(backend: Backend) -> Result<()> {
    let devices: usize = std::env::var("ORCHARD_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    orchard_testkit::install_crypto_provider();
    let Some(database) = TestDatabase::create(backend).await? else {
        return Ok(());
    };
    let (store, scopes) = database.store().await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let fake = FakeVppServer::start(FakeVppConfig {
        pending_polls: 1,
        ..FakeVppConfig::default()
    })
    .await?;
    let orchard = Arc::new(
        test_orchard(
            store.clone(),
            scopes.clone(),
            clock.clone(),
            PushSettings::default(),
        )
        .with_apps_settings(AppsSettings {
            config: fake.client_config(),
            sync_interval_seconds: 0,
        }),
    );
    let operator = LocalBootstrap::for_opened_database(store.clone(), scopes, clock.clone())
        .operator()
        .context("operator")?;
    let now = clock.now();
    let tenant = Tenant {
        id: TenantId::new(),
        name: "Physics".into(),
        code: "physics".into(),
        created_at: now,
    };
    store.create_tenant(&tenant).await?;
    let started = Instant::now();
    for i in 0..devices {
        let udid = Udid::parse(&uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase())?;
        let device = store
            .authenticate_device(&AuthenticateDevice {
                udid: udid.clone(),
                tenant_id: tenant.id,
                cert_fingerprint: uuid::Uuid::new_v4().simple().to_string(),
                topic: "t".into(),
                facts: DeviceFacts {
                    serial_number: Some(format!("B{i:011}")),
                    ..DeviceFacts::default()
                },
                now,
            })
            .await?;
        store
            .update_token(&TokenUpdateRecord {
                device_id: device.id,
                channel: ChannelId::device(&udid),
                user_short_name: None,
                user_id: None,
                push_token: vec![1; 32],
                push_magic: "4D7D2A9C-0000-0000-0000-000000000001".into(),
                unlock_token: None,
                awaiting_configuration: false,
                now,
            })
            .await?;
    }
    let enrolled = started.elapsed();
    let token = fake.add_location("Physics Library");
    fake.add_asset(&token, APP, devices as i64, true);
    let who = operator.principal();
    orchard.upload_apps_token(who, tenant.id, &token).await?;
    // Whatever the enrollments queued is not this benchmark's.
    let system = orchard.system();
    while orchard.reconcile_once(&system).await?.devices > 0 {}

    let started = Instant::now();
    orchard
        .create_assignment(
            who,
            tenant.id,
            serde_json::from_value::<AssignmentInput>(serde_json::json!({
                "object_kind": "app", "object_id": APP, "all_devices": true
            }))?,
        )
        .await?;
    let mut installs = 0;
    let mut passes = 0;
    while installs < devices {
        passes += 1;
        ensure!(
            passes < 1_000,
            "no progress: {installs} of {devices} installs queued"
        );
        let reconciled = orchard.reconcile_once(&system).await?;
        installs += reconciled.queued;
        orchard.app_licences_once(&system).await?;
    }
    let elapsed = started.elapsed();
    let stats = fake.stats();
    ensure!(
        fake.associations(&token).len() == devices,
        "{} associations",
        fake.associations(&token).len()
    );
    println!(
        "app installs bench ({backend:?}): {devices} iPads (set up in {:.1} s); assignment → every \
         InstallApplication queued in {:.2} s ({passes} reconciler passes); {} associate requests of at most {} \
         serials (limit {}), {} status polls",
        enrolled.as_secs_f64(),
        elapsed.as_secs_f64(),
        stats.associate_requests,
        stats.max_serials_in_request,
        orchard_vpp::Limits::default().max_serial_numbers,
        stats.status_polls,
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-app-installs.sh"]
async fn app_installs_bench_sqlite() -> Result<()> {
    bench(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-app-installs.sh"]
async fn app_installs_bench_postgres() -> Result<()> {
    bench(Backend::Postgres).await
}
