//! Shared by the fault tests (tests/fault_*.rs): a fleet of simulated iPads woken by the local APNs server,
//! reaching one or more `orchard serve` nodes through the test kit's balancer, one DeviceInformation queued for
//! all of them through the bulk command API, and the exactly-once checks on the outcome, from the database and
//! from the devices' own logs. `ORCHARD_FAULT_DEVICES` sets the fleet size (each test has its own default: the fault, not the
//! fleet, is what it tests, and enrollment is most of a run's time).

#![allow(dead_code)]

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
use orchard_testkit::server::{Node, TestServer};
use orchard_testkit::{Backend, TestDatabase};
use orchard_types::{Clock, SystemClock};
use serde_json::json;
use sqlx::Row;
use tokio::sync::Mutex;

/// iPads in the suite's run of the kill test; `ORCHARD_FAULT_DEVICES=2000` for the size.
pub const DEFAULT_DEVICES: usize = 150;
/// Tries of one device's enrollment before the test fails.
const ENROLL_ATTEMPTS: u32 = 5;
/// Enrollments in flight at once.
const ENROLL_CONCURRENCY: usize = 16;
/// Generous bounds on waits for conditions (the assertions are on state, not on speed): enrollment gets a
/// second per device (at least 15 minutes), the push-all 10 minutes.
pub fn enroll_bound(devices: usize) -> Duration {
    Duration::from_secs(900.max(devices as u64))
}
pub const RUN_BOUND: Duration = Duration::from_secs(600);

/// `ORCHARD_FAULT_DEVICES`, or `default`.
pub fn fleet_size(default: usize) -> Result<usize> {
    match std::env::var("ORCHARD_FAULT_DEVICES") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("ORCHARD_FAULT_DEVICES={v}")),
        Err(_) => Ok(default),
    }
}

/// `count` device keys from the pool file under the build's target directory (`ORCHARD_SIM_KEY_POOL` names
/// another), made on every core the first time and reused after: RSA key generation was most of a fleet's
/// enrollment. `ORCHARD_FAULT_KEY_POOL=off`: none, each device makes its key as it enrolls (to compare).
pub async fn device_keys(count: usize) -> Result<Option<orchard_sim::KeyPool>> {
    if std::env::var("ORCHARD_FAULT_KEY_POOL").is_ok_and(|v| v == "off") {
        return Ok(None);
    }
    let path = orchard_sim::key_pool::pool_path_from_env().unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("orchard-sim-device-keys-2048.pool")
    });
    let started = Instant::now();
    let pool = tokio::task::spawn_blocking(move || {
        orchard_sim::KeyPool::load_or_generate(&path, 2048, count)
    })
    .await??;
    eprintln!(
        "{count} device keys ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Some(pool))
}

/// What the device runners saw.
#[derive(Default)]
pub struct Sessions {
    pub completed: AtomicUsize,
    pub failed: AtomicUsize,
    first_failure: StdMutex<Option<String>>,
}

/// The simulated iPads, each woken by APNs (or retrying a broken session) in a task of its own.
pub struct PushedFleet {
    pub devices: Vec<Arc<Mutex<SimDevice>>>,
    runners: Vec<tokio::task::JoinHandle<()>>,
    pub sessions: Arc<Sessions>,
}

impl Drop for PushedFleet {
    fn drop(&mut self) {
        for runner in &self.runners {
            runner.abort();
        }
    }
}

impl PushedFleet {
    pub fn new(server: &TestServer, apple: &ApplePush, count: usize) -> Result<PushedFleet> {
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

    /// Enrolls every device through `link`, each with its own key from the simulator's key pool (see
    /// [`device_keys`]).
    pub async fn enroll(&self, link: &str) -> Result<()> {
        let keys = device_keys(self.devices.len()).await?;
        let keys = &keys;
        let results: Vec<Result<()>> = stream::iter(self.devices.iter().map(|device| async move {
            let key = match keys {
                Some(pool) => pool.take().context("the key pool ran out")?,
                None => {
                    tokio::task::spawn_blocking(|| Rsa::generate(2048).and_then(PKey::from_rsa))
                        .await??
                }
            };
            let mut device = device.lock().await;
            device.set_scep_key(key);
            // A busy server may fail an enrollment step (SQLite answers 500 when its write lock stays taken
            // past the busy timeout on an overloaded machine): the iPad starts over, as a user taps again.
            let mut attempt = 1;
            loop {
                match device.enroll(link).await {
                    Ok(()) => return Ok(()),
                    Err(e) if attempt < ENROLL_ATTEMPTS && !device.state.enrolled => {
                        eprintln!("enrollment attempt {attempt} of {}: {e}", device.state.udid);
                        tokio::time::sleep(Duration::from_millis(500) * attempt).await;
                        attempt += 1;
                    }
                    Err(e) => return Err(e).context("enrollment"),
                }
            }
        }))
        .buffer_unordered(ENROLL_CONCURRENCY)
        .collect()
        .await;
        results.into_iter().collect()
    }

    /// Every command UUID each device ran, with how many times.
    pub async fn executions(&self) -> Vec<(String, HashMap<String, usize>)> {
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

    pub fn failure_summary(&self) -> String {
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
pub async fn pending_commands(db: &mut sqlx::AnyConnection) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM commands WHERE status IN ('queued', 'sent', 'not_now')",
    )
    .fetch_one(db)
    .await?)
}

/// The push-all's commands (the only ones queued through an API token), wherever they are now: the queue or
/// the history. One row per stored command: uuid, status, whether a result is stored.
pub async fn push_all_commands(db: &mut sqlx::AnyConnection) -> Result<Vec<(String, String, i64)>> {
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

pub async fn acknowledged(db: &mut sqlx::AnyConnection) -> Result<usize> {
    Ok(push_all_commands(db)
        .await?
        .iter()
        .filter(|(_, status, _)| status == "acknowledged")
        .count())
}

/// Waits (bounded) until `done` holds for the database.
pub async fn wait_until<F>(
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

/// Where a fault test stands: APNs, the balancer, the first node, and the fleet once enrolled.
pub struct Harness {
    pub backend: Backend,
    pub devices: usize,
    pub apple: ApplePush,
    pub balancer: Balancer,
    /// In front of APNs, so a test can make it refuse connections.
    pub apns_balancer: Balancer,
    /// Nodes after the first; declared before it, so they stop before its database is dropped.
    pub nodes: Vec<Node>,
    pub server: TestServer,
    /// The `orchard serve` arguments of every node (and of a restart).
    pub extra: Vec<String>,
    node_dirs: Vec<tempfile::TempDir>,
    pub db: Option<sqlx::AnyConnection>,
    pub fleet: Option<PushedFleet>,
    pub enrolled_in: Duration,
    /// When the push-all was queued.
    pub push_all_at: Option<Instant>,
}

impl Harness {
    /// The first node on a fresh database of `backend`, behind the balancer (its public URL), with a push
    /// certificate; `None` when PostgreSQL is skipped on purpose.
    pub async fn start(backend: Backend, default_devices: usize) -> Result<Option<Harness>> {
        Self::start_inner(backend, None, default_devices).await
    }

    /// [`Harness::start`] on a database the test made (on a PostgreSQL cluster of its own).
    pub async fn start_on(database: TestDatabase, default_devices: usize) -> Result<Harness> {
        Self::start_inner(database.backend(), Some(database), default_devices)
            .await?
            .context("no server")
    }

    async fn start_inner(
        backend: Backend,
        database: Option<TestDatabase>,
        default_devices: usize,
    ) -> Result<Option<Harness>> {
        let devices = fleet_size(default_devices)?;
        let apple = ApplePush::start(SystemClock.now()).await?;
        let balancer = Balancer::start().await?;
        let apns_balancer = Balancer::start().await?;
        apns_balancer.set_backends(&[apple.apns.url()])?;
        let mut extra: Vec<String> = apple
            .serve_args()
            .into_iter()
            .map(|arg| {
                if arg == apple.apns.url() {
                    apns_balancer.url()
                } else {
                    arg
                }
            })
            .collect();
        extra.extend(
            [
                "--public-url",
                &balancer.url(),
                // A dead node's push claims go to another after this long (the smallest lease allowed).
                "--push-claim-lease-seconds",
                "10",
                // A command handed out whose session broke is handed out again at the device's next request; the
                // device sends the report of a command it ran before anything else, so it never runs one twice.
                "--command-resend-after-minutes",
                "0",
                // The whole fleet enrolls through one link, faster (with the key pool) than the 300 profile
                // downloads a minute one link hands out by default.
                "--link-downloads-per-minute",
                "0",
            ]
            .map(str::to_owned),
        );
        let server = match database {
            Some(database) => TestServer::start_on(database, &extra).await?,
            None => match TestServer::start_with(backend, &extra).await? {
                Some(server) => server,
                None => return Ok(None),
            },
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
        balancer.set_backends(&[&server.base_url])?;
        Ok(Some(Harness {
            backend,
            devices,
            apple,
            balancer,
            apns_balancer,
            server,
            extra,
            nodes: Vec::new(),
            node_dirs: Vec::new(),
            db: None,
            fleet: None,
            enrolled_in: Duration::ZERO,
            push_all_at: None,
        }))
    }

    /// Another node on the same database with its own data directory and the first node's KEK, behind the
    /// balancer too.
    pub async fn add_node(&mut self) -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mut extra = self.extra.clone();
        extra.extend([
            "--kek-file".to_owned(),
            self.server.kek_path().display().to_string(),
        ]);
        let node = self.server.start_node_in(dir.path(), &extra).await?;
        self.nodes.push(node);
        self.node_dirs.push(dir);
        let mut urls: Vec<&str> = vec![&self.server.base_url];
        urls.extend(self.nodes.iter().map(|n| n.base_url.as_str()));
        self.balancer.set_backends(&urls)
    }

    /// Enrolls the fleet through a link (which leads through the balancer) and waits until the inventory
    /// queued at enrollment is answered everywhere.
    pub async fn enroll(&mut self) -> Result<()> {
        let tenant = self.server.create_tenant("Physics", "physics").await?;
        let link = self.server.enrollment_link(&tenant, None).await?;
        ensure!(
            link.starts_with(&self.balancer.url()),
            "the enrollment link leads through the balancer: {link}"
        );
        let fleet = PushedFleet::new(&self.server, &self.apple, self.devices)?;
        let started = Instant::now();
        fleet.enroll(&link).await?;
        let mut db = self.server.connect_database().await?;
        wait_until(
            &mut db,
            enroll_bound(self.devices),
            "enrollment inventory answered",
            move |db| Box::pin(async move { Ok(pending_commands(db).await? == 0) }),
        )
        .await
        .with_context(|| fleet.failure_summary())?;
        self.enrolled_in = started.elapsed();
        self.db = Some(db);
        self.fleet = Some(fleet);
        Ok(())
    }

    pub fn db(&mut self) -> Result<&mut sqlx::AnyConnection> {
        self.db.as_mut().context("enroll first")
    }

    /// A new connection to the database (after the old one broke, say).
    pub async fn reconnect(&mut self) -> Result<()> {
        self.db = Some(self.server.connect_database().await?);
        Ok(())
    }

    /// One DeviceInformation for every device, through the bulk command API of the first node.
    pub async fn push_all(&mut self) -> Result<()> {
        let ids: Vec<String> = {
            let rows = sqlx::query("SELECT id FROM devices")
                .fetch_all(self.db()?)
                .await?;
            rows.iter()
                .map(|r| r.try_get::<String, _>("id"))
                .collect::<Result<_, _>>()?
        };
        ensure!(ids.len() == self.devices, "{} devices enrolled", ids.len());
        self.push_all_at = Some(Instant::now());
        let outcome = self
            .server
            .post(
                "/api/v1/commands/bulk",
                json!({
                    "command": {"type": "DeviceInformation", "queries": ["DeviceName", "OSVersion", "SerialNumber", "BatteryLevel"]},
                    "device_ids": ids,
                }),
            )
            .await?;
        ensure!(
            outcome["queued"].as_u64() == Some(self.devices as u64),
            "bulk: {outcome}"
        );
        Ok(())
    }

    /// Push-all results stored so far.
    pub async fn stored(&mut self) -> Result<usize> {
        acknowledged(self.db()?).await
    }

    /// Waits (bounded) until at least `count` push-all results are stored.
    pub async fn wait_stored(&mut self, count: usize, what: &str) -> Result<()> {
        let summary = self
            .fleet
            .as_ref()
            .map(PushedFleet::failure_summary)
            .unwrap_or_default();
        wait_until(self.db()?, RUN_BOUND, what, move |db| {
            Box::pin(async move { Ok(acknowledged(db).await? >= count) })
        })
        .await
        .with_context(|| summary)
    }

    /// Waits until every result is stored and nothing is pending, then checks: one row per push-all command,
    /// acknowledged, with its result; every device ran exactly one push-all command, once; no device ran any
    /// command twice; no device holds a report it could not send. Returns a line for the test's log.
    pub async fn check_exactly_once(&mut self) -> Result<String> {
        let devices = self.devices;
        self.wait_stored(devices, "every result stored").await?;
        let finished_in = self.push_all_at.map(|t| t.elapsed()).unwrap_or_default();
        // Nothing is left pending (a command handed out twice would show as sent or as a second row).
        wait_until(self.db()?, RUN_BOUND, "nothing pending", move |db| {
            Box::pin(async move { Ok(pending_commands(db).await? == 0) })
        })
        .await?;

        let stored = push_all_commands(self.db()?).await?;
        ensure!(stored.len() == devices, "{} push-all rows", stored.len());
        let uuids: HashSet<&str> = stored.iter().map(|(u, _, _)| u.as_str()).collect();
        ensure!(uuids.len() == devices, "a command is stored twice");
        for (uuid, status, has_result) in &stored {
            ensure!(
                status == "acknowledged" && *has_result == 1,
                "{uuid}: {status}, result stored: {has_result}"
            );
        }

        let fleet = self.fleet.as_ref().context("enroll first")?;
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
        Ok(format!(
            "{:?}: {devices} iPads enrolled in {:.1} s; every result stored {:.1} s after the push-all; {}; {} \
             sessions completed, {} connections through the balancer, {} pushes delivered, {} push requests \
             refused, {reports_sent_again} reports sent again after a lost answer",
            self.backend,
            self.enrolled_in.as_secs_f64(),
            finished_in.as_secs_f64(),
            fleet.failure_summary(),
            fleet.sessions.completed.load(Ordering::SeqCst),
            self.balancer.connections(),
            self.apple.apns.delivered_count(),
            self.apple.apns.stats().rejected,
        ))
    }
}

/// Uploads a department's Apps and Books content token through the API as its admin (must answer 200).
pub async fn upload_apps_token(
    server: &orchard_testkit::server::TestServer,
    admin: &str,
    tenant: &str,
    location: &str,
) -> Result<()> {
    let (status, body) = server
        .api(
            admin,
            reqwest::Method::PUT,
            &format!("/api/v1/tenants/{tenant}/apps/token"),
            Some(serde_json::json!({"content_token": location})),
        )
        .await?;
    anyhow::ensure!(status == 200, "apps token upload → {status}: {body}");
    Ok(())
}
