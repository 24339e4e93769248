//! Benchmark (issue 4): a full DEP sync of N devices (default 50,000) from the local DEP server (TLS, real
//! OAuth, pages of 1,000, no added latency) into a fresh database through `Orchard::run_dep_sync`, with every
//! device checked in the database afterwards. Prints figures; asserts only that the data is right.
//!
//! `cargo run --release -p orchard-core --example dep_sync_bench -- sqlite|postgres [devices] [runs]`
//! (PostgreSQL: a fresh database per run on the server of `ORCHARD_TEST_POSTGRES_URL`, dropped afterwards).
//!
//! Each run, on a fresh database:
//! - fetch only: the same full fetch with a sink that does nothing (the network and JSON share of a sync);
//! - first sync: `run_dep_sync` of a new token (every device inserted), then every serial checked;
//! - store only: the fetched pages applied again with `apply_dep_page` into another token (the database share,
//!   without the network);
//! - full resync: the cursor cleared and 1 % of the devices released on the server, `run_dep_sync` again (every
//!   device updated, the released ones marked deleted by the end-of-fetch check).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchard_core::access::bootstrap::LocalBootstrap;
use orchard_core::dep::DepSettings;
use orchard_core::push::PushSettings;
use orchard_dep::fake::{encrypt_server_token, FakeDepConfig, FakeDepServer, TokenCipher};
use orchard_dep::{DepClient, DevicePage};
use orchard_store::{DepDeviceFilter, DepDeviceRecord};
use orchard_testkit::service::test_orchard;
use orchard_testkit::{Backend, TestDatabase};
use orchard_types::{Clock, SystemClock};
use sqlx::{AnyConnection, Connection, Row};

fn rate(devices: usize, elapsed: Duration) -> String {
    format!(
        "{:.3} s ({:.0} devices/s)",
        elapsed.as_secs_f64(),
        devices as f64 / elapsed.as_secs_f64()
    )
}

/// User + system CPU time of a process, from `/proc` (clock ticks of 1/100 s, Linux's USER_HZ).
fn process_cpu(pid: &str) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may contain spaces) start at field 3; utime and stime are 14, 15.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// CPU used so far by this process (sync client, Orchard, store client and the local DEP server) and by the
/// PostgreSQL backends serving the benchmark's database.
struct CpuMark {
    own: Duration,
    backends: HashMap<String, Duration>,
}

async fn cpu_mark(monitor: Option<&mut AnyConnection>) -> CpuMark {
    let mut backends = HashMap::new();
    if let Some(conn) = monitor {
        let rows = sqlx::query(
            "SELECT CAST(pid AS TEXT) AS pid FROM pg_stat_activity WHERE datname = current_database()",
        )
        .fetch_all(conn)
        .await
        .unwrap();
        for row in rows {
            let pid: String = row.get("pid");
            let cpu = process_cpu(&pid);
            backends.insert(pid, cpu);
        }
    }
    CpuMark {
        own: process_cpu("self"),
        backends,
    }
}

/// CPU between two marks: (this process, database backends). Backends that appeared in between count fully.
fn cpu_between(before: &CpuMark, after: &CpuMark) -> (Duration, Duration) {
    let backends = after
        .backends
        .iter()
        .map(|(pid, cpu)| cpu.saturating_sub(before.backends.get(pid).copied().unwrap_or_default()))
        .sum();
    (after.own.saturating_sub(before.own), backends)
}

fn cpu_text(backend: &str, (own, db): (Duration, Duration)) -> String {
    if backend == "postgres" {
        format!(
            "cpu {:.2} s + postgres {:.2} s",
            own.as_secs_f64(),
            db.as_secs_f64()
        )
    } else {
        format!("cpu {:.2} s", own.as_secs_f64())
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

struct RunFigures {
    fetch: Duration,
    sync: Duration,
    store_only: Duration,
    resync: Duration,
}

async fn run(backend: &str, devices: usize, run: usize) -> RunFigures {
    let fake = FakeDepServer::start(FakeDepConfig::default())
        .await
        .unwrap();
    fake.add_devices(&FakeDepServer::make_serials("BENCH", 0, devices));
    // A fresh database for the run (a PostgreSQL one is dropped when `database` is).
    let kind = match backend {
        "sqlite" => Backend::Sqlite,
        "postgres" => Backend::Postgres,
        other => panic!("backend must be sqlite or postgres, not {other:?}"),
    };
    let database = TestDatabase::create(kind)
        .await
        .unwrap()
        .expect("ORCHARD_TEST_SKIP_POSTGRES is set: no PostgreSQL to measure");
    let (store, scopes) = database.store().await.unwrap();
    let mut monitor = match kind {
        Backend::Postgres => Some(database.connect().await.unwrap()),
        Backend::Sqlite => None,
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // The benchmark opened the database itself: it acts as the local operator.
    let op = LocalBootstrap::for_opened_database(store.clone(), scopes.clone(), clock.clone())
        .operator()
        .unwrap();
    let orchard = test_orchard(
        store.clone(),
        scopes,
        clock.clone(),
        PushSettings::default(),
    )
    .with_dep_settings(DepSettings {
        config: fake.client_config(),
        ..DepSettings::default()
    });
    let created = orchard.create_dep_token(&op, "bench").await.unwrap();
    let p7m = encrypt_server_token(
        &fake.server_token(),
        created.certificate_pem.as_bytes(),
        TokenCipher::Aes256Cbc,
    )
    .unwrap();
    orchard
        .upload_dep_token(&op, &created.id, &p7m)
        .await
        .unwrap();

    // Fetch only: the network and JSON share. The pages are kept for the store-only replay.
    let client = DepClient::new(fake.client_config(), fake.server_token(), clock.clone()).unwrap();
    let mut pages: Vec<DevicePage> = Vec::new();
    let mut keep = orchard_dep::sync::FnSink(|page: &DevicePage| {
        pages.push(page.clone());
        Ok(())
    });
    let cpu_before = cpu_mark(monitor.as_mut()).await;
    let started = Instant::now();
    let outcome = client.sync(None, &mut keep).await.unwrap();
    let fetch = started.elapsed();
    let fetch_cpu = cpu_between(&cpu_before, &cpu_mark(monitor.as_mut()).await);
    assert_eq!(outcome.records as usize, devices);

    // First sync: every device inserted.
    let load_before = loadavg();
    let cpu_before = cpu_mark(monitor.as_mut()).await;
    let started = Instant::now();
    let summary = orchard
        .run_dep_sync(&orchard.system(), &created.id)
        .await
        .unwrap();
    let sync = started.elapsed();
    let sync_cpu = cpu_between(&cpu_before, &cpu_mark(monitor.as_mut()).await);
    assert!(summary.full_fetch);
    assert_eq!(summary.records as usize, devices);
    assert_eq!(summary.active_devices as usize, devices);
    let stored = store
        .dep_serials(DepDeviceFilter {
            token_id: Some(&created.id),
            only_active: true,
        })
        .await
        .unwrap();
    let mut expected: Vec<String> = fake.serials().iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(stored, expected, "every device is in the database");

    // The steps a sync runs after storing the pages (assignment rule, due assignments), timed again alone: with
    // no template they assign nothing, so this is their fixed cost over the token's devices.
    let started = Instant::now();
    let auto_assigned = store.auto_assign_dep_devices(&created.id).await.unwrap();
    let assignments = orchard
        .push_dep_assignments(&orchard.system(), &created.id)
        .await
        .unwrap();
    let after_sync = started.elapsed();
    assert_eq!(auto_assigned, 0);
    assert_eq!(assignments.waiting_for_profile, 0);

    // Store only: the same pages applied to another token, one transaction per page with its cursor.
    let other_token = orchard.create_dep_token(&op, "store only").await.unwrap();
    let other = other_token.id.as_str();
    let now = clock.now();
    let rows: Vec<(Vec<DepDeviceRecord>, String)> = pages
        .iter()
        .map(|p| {
            (
                p.devices
                    .iter()
                    .map(|r| DepDeviceRecord::new(other, r.clone(), now))
                    .collect(),
                p.cursor.as_str().to_owned(),
            )
        })
        .collect();
    let cpu_before = cpu_mark(monitor.as_mut()).await;
    let started = Instant::now();
    for (page, cursor) in &rows {
        store
            .apply_dep_page(other, page, cursor, now)
            .await
            .unwrap();
    }
    let store_only = started.elapsed();
    let store_cpu = cpu_between(&cpu_before, &cpu_mark(monitor.as_mut()).await);
    let other_count = store
        .count_dep_devices(DepDeviceFilter {
            token_id: Some(other),
            only_active: true,
        })
        .await
        .unwrap();
    assert_eq!(other_count as usize, devices);

    // Full resync into the populated database: every device updated, 1 % released on the server.
    let released: Vec<_> = FakeDepServer::make_serials("BENCH", 0, devices / 100);
    for serial in &released {
        assert!(fake.delete_device(serial));
    }
    store
        .save_dep_cursor(&created.id, None, clock.now())
        .await
        .unwrap();
    let cpu_before = cpu_mark(monitor.as_mut()).await;
    let started = Instant::now();
    let summary = orchard
        .run_dep_sync(&orchard.system(), &created.id)
        .await
        .unwrap();
    let resync = started.elapsed();
    let resync_cpu = cpu_between(&cpu_before, &cpu_mark(monitor.as_mut()).await);
    assert!(summary.full_fetch);
    assert_eq!(summary.removed as usize, released.len());
    assert_eq!(
        summary.active_devices as usize,
        devices - released.len(),
        "released devices are marked deleted"
    );

    println!("run {run} [{backend}, load {load_before}]:");
    println!(
        "  fetch only:   {} [{}]",
        rate(devices, fetch),
        cpu_text(backend, fetch_cpu)
    );
    println!(
        "  first sync:   {} [{}]",
        rate(devices, sync),
        cpu_text(backend, sync_cpu)
    );
    println!(
        "  of which the post-sync assignment steps, timed alone: {:.3} s",
        after_sync.as_secs_f64()
    );
    println!(
        "  store only:   {} [{}]",
        rate(devices, store_only),
        cpu_text(backend, store_cpu)
    );
    println!(
        "  full resync:  {} [{}] ({} released on the server, marked deleted)",
        rate(devices, resync),
        cpu_text(backend, resync_cpu),
        released.len()
    );
    if let Some(conn) = monitor {
        conn.close().await.unwrap();
    }
    store.close().await;
    fake.shutdown().await;
    drop(database);
    RunFigures {
        fetch,
        sync,
        store_only,
        resync,
    }
}

#[tokio::main]
async fn main() {
    orchard_testkit::install_crypto_provider();
    let mut args = std::env::args().skip(1);
    let backend = args.next().unwrap_or_else(|| "sqlite".into());
    let devices: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(50_000);
    let runs: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(3);
    println!(
        "dep sync benchmark: {backend}, {devices} devices, pages of 1,000, {runs} runs, load {}",
        loadavg()
    );
    let mut all = Vec::new();
    for n in 1..=runs {
        all.push(run(&backend, devices, n).await);
    }
    let best = |f: fn(&RunFigures) -> Duration| all.iter().map(f).min().unwrap_or_default();
    println!(
        "best of {runs}: fetch only {} | first sync {} | store only {} | full resync {} (goal: first sync <= 1.5 s); \
         load at end {}",
        rate(devices, best(|r| r.fetch)),
        rate(devices, best(|r| r.sync)),
        rate(devices, best(|r| r.store_only)),
        rate(devices, best(|r| r.resync)),
        loadavg()
    );
}
