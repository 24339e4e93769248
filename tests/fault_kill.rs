//! Issue 16, point 5 (fault harness): `kill -9` in the middle of a push-all, then nothing lost or repeated.
//!
//! Simulated iPads reach Orchard through a load balancer (orchard_testkit's [`Balancer`], which the enrollment
//! profile's ServerURL names) and run a command session only when the local APNs server wakes them, or to try
//! again after a session broke (as an iPad does). One DeviceInformation is queued for every iPad through the
//! bulk command API; once some but not all results are stored, a node is killed with SIGKILL:
//! - PostgreSQL: two `orchard serve` nodes on one database (same KEK), one of them killed; the balancer sends
//!   the iPads to the other, which also takes over the killed node's push claims when their lease runs out.
//! - SQLite: the single node killed and started again on the same data directory and address.
//!
//! Then, once every result is stored (a bounded wait), the outcome is checked from the database and from the
//! devices' own logs: every command ran exactly once on its device, every result is stored once, nothing is
//! left pending. `ORCHARD_FAULT_DEVICES` sets the fleet size (default [`DEFAULT_DEVICES`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::stream::{self, StreamExt};
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use orchard_apns::fake::random_topic;
use orchard_apns::DeviceToken;
use orchard_sim::SimDevice;
use orchard_testkit::apple::ApplePush;
use orchard_testkit::balancer::Balancer;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::{Clock, SystemClock};
use serde_json::json;
use sqlx::Row;
use tokio::sync::Mutex;

/// iPads in the suite's run; `ORCHARD_FAULT_DEVICES=2000` for the size.
const DEFAULT_DEVICES: usize = 150;
/// Enrollments in flight at once.
const ENROLL_CONCURRENCY: usize = 16;
/// Generous bounds on waits for conditions (the assertions are on state, not on speed).
const ENROLL_BOUND: Duration = Duration::from_secs(900);
const RUN_BOUND: Duration = Duration::from_secs(600);

fn fleet_size() -> Result<usize> {
    match std::env::var("ORCHARD_FAULT_DEVICES") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("ORCHARD_FAULT_DEVICES={v}")),
        Err(_) => Ok(DEFAULT_DEVICES),
    }
}

/// What the device runners saw.
#[derive(Default)]
struct Sessions {
    completed: AtomicUsize,
    failed: AtomicUsize,
    first_failure: StdMutex<Option<String>>,
}

/// The simulated iPads, each woken by APNs (or retrying a broken session) in a task of its own.
struct PushedFleet {
    devices: Vec<Arc<Mutex<SimDevice>>>,
    runners: Vec<tokio::task::JoinHandle<()>>,
    sessions: Arc<Sessions>,
}

impl Drop for PushedFleet {
    fn drop(&mut self) {
        for runner in &self.runners {
            runner.abort();
        }
    }
}

impl PushedFleet {
    fn new(server: &TestServer, apple: &ApplePush, count: usize) -> Result<PushedFleet> {
        let config = server.sim_config();
        let sessions = Arc::new(Sessions::default());
        let mut devices = Vec::with_capacity(count);
        let mut runners = Vec::with_capacity(count);
        for _ in 0..count {
            let mut device = SimDevice::new_random(&config);
            // An iPad has its APNs token before it enrolls, so the subscription precedes the first push.
            let mut token = uuid::Uuid::new_v4().as_bytes().to_vec();
            token.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
            device.state.push_token = token;
            let pushes = apple
                .apns
                .subscribe_token(&DeviceToken::from_bytes(&device.state.push_token)?);
            let device = Arc::new(Mutex::new(device));
            runners.push(tokio::spawn(run_device(
                pushes,
                device.clone(),
                sessions.clone(),
            )));
            devices.push(device);
        }
        Ok(PushedFleet {
            devices,
            runners,
            sessions,
        })
    }

    /// Enrolls every device through `link`, each with an RSA key made on a blocking thread.
    async fn enroll(&self, link: &str) -> Result<()> {
        let results: Vec<Result<()>> = stream::iter(self.devices.iter().map(|device| async move {
            let key = tokio::task::spawn_blocking(|| Rsa::generate(2048).and_then(PKey::from_rsa))
                .await??;
            let mut device = device.lock().await;
            device.set_scep_key(key);
            device.enroll(link).await.context("enrollment")
        }))
        .buffer_unordered(ENROLL_CONCURRENCY)
        .collect()
        .await;
        results.into_iter().collect()
    }

    /// Every command UUID each device ran, with how many times.
    async fn executions(&self) -> Vec<(String, HashMap<String, usize>)> {
        let mut out = Vec::with_capacity(self.devices.len());
        for device in &self.devices {
            let device = device.lock().await;
            let mut ran: HashMap<String, usize> = HashMap::new();
            for handled in &device.state.handled_commands {
                if device.executions(&handled.uuid) > 0 {
                    ran.insert(handled.uuid.clone(), device.executions(&handled.uuid));
                }
            }
            out.push((device.state.udid.clone(), ran));
        }
        out
    }

    fn failure_summary(&self) -> String {
        let failed = self.sessions.failed.load(Ordering::SeqCst);
        let first = self
            .sessions
            .first_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        format!("{failed} broken sessions (first: {first})")
    }
}

/// One iPad: a command session whenever APNs delivers a push for it; a session that broke (its node died) is
/// tried again a little later, as an iPad retries, sending first the report whose answer it never got.
async fn run_device(
    mut pushes: tokio::sync::mpsc::UnboundedReceiver<orchard_apns::fake::FakePush>,
    device: Arc<Mutex<SimDevice>>,
    sessions: Arc<Sessions>,
) {
    let mut retry_in: Option<Duration> = None;
    loop {
        match retry_in {
            Some(delay) => tokio::time::sleep(delay).await,
            None => {
                if pushes.recv().await.is_none() {
                    return;
                }
            }
        }
        // Pushes that piled up are answered by this one session.
        while pushes.try_recv().is_ok() {}
        let mut device = device.lock().await;
        if !device.state.enrolled {
            // Pushed while still enrolling: the session after enrollment follows the next push.
            retry_in = None;
            continue;
        }
        match device.poll().await {
            Ok(_) => {
                sessions.completed.fetch_add(1, Ordering::SeqCst);
                retry_in = None;
            }
            Err(e) => {
                sessions.failed.fetch_add(1, Ordering::SeqCst);
                sessions
                    .first_failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(|| format!("{}: {e}", device.state.udid));
                let next = retry_in.map_or(Duration::from_millis(100), |d| d * 2);
                retry_in = Some(next.min(Duration::from_secs(2)));
            }
        }
    }
}

/// Commands not finished yet (queued, sent, or put off with NotNow).
async fn pending_commands(db: &mut sqlx::AnyConnection) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM commands WHERE status IN ('queued', 'sent', 'not_now')",
    )
    .fetch_one(db)
    .await?)
}

/// The push-all's commands (the only ones queued through an API token), wherever they are now: the queue or
/// the history. One row per stored command: uuid, status, whether a result is stored.
async fn push_all_commands(db: &mut sqlx::AnyConnection) -> Result<Vec<(String, String, i64)>> {
    let rows = sqlx::query(
        "SELECT command_uuid, status, CAST(CASE WHEN result IS NULL THEN 0 ELSE 1 END AS BIGINT) AS has_result \
         FROM commands WHERE queued_by LIKE 'token:%' \
         UNION ALL \
         SELECT command_uuid, status, CAST(CASE WHEN result IS NULL THEN 0 ELSE 1 END AS BIGINT) AS has_result \
         FROM command_history WHERE queued_by LIKE 'token:%'",
    )
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<String, _>("command_uuid")?,
                r.try_get::<String, _>("status")?,
                r.try_get::<i64, _>("has_result")?,
            ))
        })
        .collect()
}

async fn acknowledged(db: &mut sqlx::AnyConnection) -> Result<usize> {
    Ok(push_all_commands(db)
        .await?
        .iter()
        .filter(|(_, status, _)| status == "acknowledged")
        .count())
}

/// Waits (bounded) until `done` holds for the database.
async fn wait_until<F>(
    db: &mut sqlx::AnyConnection,
    bound: Duration,
    what: &str,
    done: F,
) -> Result<()>
where
    F: for<'c> Fn(&'c mut sqlx::AnyConnection) -> futures::future::BoxFuture<'c, Result<bool>>,
{
    let deadline = Instant::now() + bound;
    loop {
        if done(db).await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: not reached within {bound:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn kill_mid_push_all(backend: Backend) -> Result<()> {
    let devices = fleet_size()?;
    let apple = ApplePush::start(SystemClock.now()).await?;
    let balancer = Balancer::start().await?;
    let mut extra = apple.serve_args();
    extra.extend(
        [
            "--public-url",
            &balancer.url(),
            // A dead node's push claims go to the other after this long (the smallest lease allowed).
            "--push-claim-lease-seconds",
            "10",
            // A command handed out whose session broke is handed out again at the device's next request; the
            // device sends the report of a command it ran before anything else, so it never runs one twice.
            "--command-resend-after-minutes",
            "0",
        ]
        .map(str::to_owned),
    );
    let Some(mut server) = TestServer::start_with(backend, &extra).await? else {
        return Ok(());
    };
    let topic = random_topic()?;
    let cert = apple.certificate(&topic, SystemClock.now(), 365)?;
    let (status, body) = server
        .api(
            &server.token,
            reqwest::Method::PUT,
            "/api/v1/push-certificate",
            Some(json!({
                "certificate_pem": String::from_utf8(cert.cert_pem())?,
                "private_key_pem": String::from_utf8(cert.key_pem().expose().clone())?,
            })),
        )
        .await?;
    ensure!(status == 200, "push certificate upload: {status} {body}");

    // PostgreSQL: a second node with its own data directory and the first one's KEK, behind the balancer too.
    let second_dir = tempfile::tempdir()?;
    let second = if backend == Backend::Postgres {
        let mut node_extra = extra.clone();
        node_extra.extend([
            "--kek-file".to_owned(),
            server.kek_path().display().to_string(),
        ]);
        let node = server.start_node_in(second_dir.path(), &node_extra).await?;
        balancer.set_backends(&[&server.base_url, &node.base_url])?;
        Some(node)
    } else {
        balancer.set_backends(&[&server.base_url])?;
        None
    };

    let tenant = server.create_tenant("Physics", "physics").await?;
    let link = server.enrollment_link(&tenant, None).await?;
    ensure!(
        link.starts_with(&balancer.url()),
        "the enrollment link leads through the balancer: {link}"
    );
    let fleet = PushedFleet::new(&server, &apple, devices)?;
    let started = Instant::now();
    fleet.enroll(&link).await?;
    let mut db = server.connect_database().await?;
    // The inventory queued at enrollment is pushed and answered everywhere before the push-all.
    wait_until(
        &mut db,
        ENROLL_BOUND,
        "enrollment inventory answered",
        move |db| Box::pin(async move { Ok(pending_commands(db).await? == 0) }),
    )
    .await?;
    let enrolled_in = started.elapsed();

    let ids: Vec<String> = {
        let rows = sqlx::query("SELECT id FROM devices")
            .fetch_all(&mut db)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("id"))
            .collect::<Result<_, _>>()?
    };
    ensure!(ids.len() == devices, "{} devices enrolled", ids.len());
    let started = Instant::now();
    let outcome = server
        .post(
            "/api/v1/commands/bulk",
            json!({
                "command": {"type": "DeviceInformation", "queries": ["DeviceName", "OSVersion", "SerialNumber", "BatteryLevel"]},
                "device_ids": ids,
            }),
        )
        .await?;
    ensure!(
        outcome["queued"].as_u64() == Some(devices as u64),
        "bulk: {outcome}"
    );

    // Some results stored, not all: kill -9 now.
    let threshold = (devices / 3).max(1);
    wait_until(
        &mut db,
        RUN_BOUND,
        "a third of the results stored",
        move |db| Box::pin(async move { Ok(acknowledged(db).await? >= threshold) }),
    )
    .await?;
    let stored_at_kill = acknowledged(&mut db).await?;
    let killed_after = started.elapsed();
    match second {
        Some(node) => drop(node),
        None => server.restart(&extra).await?,
    }
    ensure!(
        stored_at_kill < devices,
        "the push-all finished before the kill ({stored_at_kill} of {devices}): the fault hit nothing"
    );

    wait_until(&mut db, RUN_BOUND, "every result stored", move |db| {
        Box::pin(async move { Ok(acknowledged(db).await? == devices) })
    })
    .await
    .with_context(|| fleet.failure_summary())?;
    let finished_in = started.elapsed();
    // Nothing is left pending (a command handed out twice would show as sent or as a second row).
    wait_until(&mut db, RUN_BOUND, "nothing pending", move |db| {
        Box::pin(async move { Ok(pending_commands(db).await? == 0) })
    })
    .await?;

    // The database: one row per command, acknowledged, with its result.
    let stored = push_all_commands(&mut db).await?;
    ensure!(stored.len() == devices, "{} push-all rows", stored.len());
    let uuids: HashSet<&str> = stored.iter().map(|(u, _, _)| u.as_str()).collect();
    ensure!(uuids.len() == devices, "a command is stored twice");
    for (uuid, status, has_result) in &stored {
        ensure!(
            status == "acknowledged" && *has_result == 1,
            "{uuid}: {status}, result stored: {has_result}"
        );
    }

    // The devices' own logs: each ran exactly one push-all command, once, and no command ran twice.
    let mut ran_push_all = 0;
    for (udid, ran) in fleet.executions().await {
        for (uuid, times) in &ran {
            ensure!(*times == 1, "{udid} ran {uuid} {times} times");
        }
        let mine = ran.keys().filter(|u| uuids.contains(u.as_str())).count();
        ensure!(mine == 1, "{udid} ran {mine} push-all commands");
        ran_push_all += mine;
    }
    ensure!(ran_push_all == devices);
    let mut reports_sent_again = 0;
    for device in &fleet.devices {
        let device = device.lock().await;
        ensure!(
            !device.has_unsent_report(),
            "{} still holds an unsent report",
            device.state.udid
        );
        reports_sent_again += device.reports_sent_again();
    }
    eprintln!(
        "fault_kill {backend:?}: {devices} iPads enrolled in {:.1} s; push-all: {stored_at_kill} results stored when \
         the node was killed after {:.1} s, all {devices} after {:.1} s; {}; {} sessions completed, {} connections \
         through the balancer, {} pushes delivered, {reports_sent_again} reports sent again after a lost answer",
        enrolled_in.as_secs_f64(),
        killed_after.as_secs_f64(),
        finished_in.as_secs_f64(),
        fleet.failure_summary(),
        fleet.sessions.completed.load(Ordering::SeqCst),
        balancer.connections(),
        apple.apns.delivered_count(),
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    kill_9_mid_push_all_loses_and_repeats_nothing => kill_mid_push_all [workers = 4];
}
