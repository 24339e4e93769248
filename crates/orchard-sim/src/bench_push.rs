//! S1 push-all benchmark: N enrolled simulated iPads, one command queued for every one of them through the
//! API, and the time until every result is stored, with the server's CPU time and peak memory.
//!
//! The iPads never poll on their own: this process runs the local APNs server (orchard-apns `fake`), issues
//! the push certificate from a stand-in Apple CA and uploads it through the API, and each device runs a
//! command session only when APNs delivers a push for its token, as a real iPad does.
//!
//! Because `orchard serve` needs the APNs URL and root when it starts, a run is a handshake with the driver
//! script (scripts/bench-s1.sh): this process starts APNs and writes `apns-root.pem` then `apns-url` into the
//! work directory; the script starts the server with them and writes `server.json` (`url`, `token`, `ca`,
//! `pid`, optional `db_name`); this process then does the rest. The fleet is kept in `fleet.json` in the
//! same directory (with the push topic in `topic`), so the slow part, enrolling thousands of devices with
//! real SCEP and RSA-2048 keys, is done once per server database and reused by later runs.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use orchard_apns::fake::{issue_push_certificate, random_topic, FakeApnsServer};
use orchard_apns::DeviceToken;
use orchard_pki::CertificateAuthority;
use orchard_types::{ApnsTopic, Clock, CommandStatus, SystemClock};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;

use crate::device::SimDevice;
use crate::fleet::{save_states, Fleet};
use crate::key_pool::KeyPool;
use crate::net::{build_client, session_client, session_tls_config, ClientOptions};
use crate::{SimConfig, SimError};

/// The command queued for every device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushCommand {
    /// Answered with a result the server parses and stores (the heavier case).
    DeviceInformation,
    /// Acknowledged without a payload.
    DeviceLock,
}

impl PushCommand {
    fn request_type(self) -> &'static str {
        match self {
            PushCommand::DeviceInformation => "DeviceInformation",
            PushCommand::DeviceLock => "DeviceLock",
        }
    }

    fn api_json(self) -> serde_json::Value {
        match self {
            PushCommand::DeviceInformation => json!({
                "type": "DeviceInformation",
                "queries": ["DeviceName", "OSVersion", "BuildVersion", "SerialNumber", "BatteryLevel",
                            "AvailableDeviceCapacity", "IsSupervised", "WiFiMAC"],
            }),
            PushCommand::DeviceLock => json!({"type": "DeviceLock", "message": "S1 benchmark"}),
        }
    }
}

/// What to do.
#[derive(Debug, Clone)]
pub struct BenchPushOptions {
    /// Work directory shared with the driver script (fleet state, topic, handshake files).
    pub dir: PathBuf,
    pub devices: usize,
    /// Enrollments in flight at once (RSA keys are generated on blocking threads ahead of them).
    pub enroll_concurrency: usize,
    /// API requests in flight while queuing and confirming.
    pub api_concurrency: usize,
    /// Enroll missing devices, wait for their enrollment inventory to be answered, save, and stop.
    pub setup_only: bool,
    pub command: PushCommand,
    /// How long to wait for every result before giving up.
    pub timeout: Duration,
    /// Kernel clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`).
    pub clock_ticks_per_second: u64,
    /// Queue through one `POST /api/v1/commands/bulk` instead of one request per device.
    pub bulk: bool,
    /// Each device session opens its own TLS connection (a full handshake) and closes it at the end, as an
    /// iPad woken by a push does; otherwise sessions share one keep-alive pool (cheaper for the server than
    /// any real fleet).
    pub connection_per_session: bool,
}

/// What the driver script tells us once the server runs.
#[derive(Debug, Clone, Deserialize)]
struct ServerInfo {
    /// `https://host:port` of the server.
    url: String,
    /// Operator API token.
    token: String,
    /// Path of the server's CA PEM.
    ca: PathBuf,
    /// Process id of `orchard serve`, for its CPU time and peak memory.
    pid: u32,
    /// PostgreSQL database name, so that its backends' CPU time is counted too.
    db_name: Option<String>,
    /// Every node when the server runs as several (`url` and `pid` are the first); devices are spread over
    /// them by index, as a load balancer in front of the nodes would.
    #[serde(default)]
    nodes: Vec<ServerNode>,
}

/// One `orchard serve` process of a multi-node server.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
struct ServerNode {
    url: String,
    pid: u32,
}

impl ServerInfo {
    fn nodes(&self) -> Vec<ServerNode> {
        if self.nodes.is_empty() {
            vec![ServerNode {
                url: self.url.clone(),
                pid: self.pid,
            }]
        } else {
            self.nodes.clone()
        }
    }
}

/// `url` with the scheme, host and port of `origin` (the path and query kept).
fn with_origin(url: &str, origin: &str) -> Result<String, SimError> {
    let mut url = reqwest::Url::parse(url).map_err(|e| bench_error("device url", e))?;
    let origin = reqwest::Url::parse(origin).map_err(|e| bench_error("node url", e))?;
    url.set_scheme(origin.scheme())
        .map_err(|()| bench_error("node url", "scheme"))?;
    url.set_host(origin.host_str())
        .map_err(|e| bench_error("node url", e))?;
    url.set_port(origin.port())
        .map_err(|()| bench_error("node url", "port"))?;
    Ok(url.into())
}

/// CPU time (seconds) of the processes that make up the server side.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct CpuSample {
    server: f64,
    database: f64,
    simulator: f64,
}

/// What was measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BenchPushReport {
    pub devices: usize,
    pub request_type: &'static str,
    pub newly_enrolled: usize,
    pub enroll_seconds: f64,
    /// False for a `setup_only` run (nothing below is filled in).
    pub measured: bool,
    pub enqueue_seconds: f64,
    /// First enqueue until the last device's report was answered (the server answers after storing).
    pub seconds: f64,
    pub p50: Duration,
    pub p90: Duration,
    pub max: Duration,
    pub server_cpu_seconds: f64,
    /// PostgreSQL backends of the server's database (0 on SQLite).
    pub database_cpu_seconds: f64,
    pub simulator_cpu_seconds: f64,
    /// Cores of this machine, which the servers, their database and the simulator share.
    pub cores: usize,
    pub server_peak_rss_kib: u64,
    /// Each node's peak, when there are several (`server_peak_rss_kib` is the largest).
    pub node_peak_rss_kib: Vec<u64>,
    pub nodes: usize,
    pub connection_per_session: bool,
    pub pushes_delivered: u64,
    pub sessions: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Results confirmed through `GET /api/v1/devices/{id}/commands` after the window.
    pub confirmed: usize,
    pub load_before: String,
    pub load_after: String,
}

impl BenchPushReport {
    pub fn results_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.devices as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Server CPU (including PostgreSQL backends) per device, in milliseconds.
    pub fn cpu_ms_per_device(&self) -> f64 {
        if self.devices == 0 {
            return 0.0;
        }
        (self.server_cpu_seconds + self.database_cpu_seconds) * 1000.0 / self.devices as f64
    }

    /// The shortest this window could have lasted on this machine: the CPU everyone in it spent (servers,
    /// database, simulator), spread perfectly over the cores. A window near it is bound by CPU, not by
    /// waiting; the goal of a shorter window then needs less CPU, not more concurrency.
    pub fn cpu_floor_seconds(&self) -> f64 {
        (self.server_cpu_seconds + self.database_cpu_seconds + self.simulator_cpu_seconds)
            / self.cores.max(1) as f64
    }
}

impl fmt::Display for BenchPushReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        if self.newly_enrolled > 0 {
            writeln!(
                f,
                "enrolled {} new devices in {:.1} s ({:.1}/s)",
                self.newly_enrolled,
                self.enroll_seconds,
                self.newly_enrolled as f64 / self.enroll_seconds.max(f64::EPSILON)
            )?;
        }
        if !self.measured {
            return write!(f, "fleet ready: {} enrolled devices", self.devices);
        }
        writeln!(
            f,
            "queued {} x {} through the API in {:.2} s",
            self.devices, self.request_type, self.enqueue_seconds
        )?;
        writeln!(
            f,
            "every result stored {:.2} s after the first enqueue = {:.0} results/s (per device: p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms)",
            self.seconds,
            self.results_per_second(),
            ms(self.p50),
            ms(self.p90),
            ms(self.max)
        )?;
        writeln!(
            f,
            "server CPU {:.2} s + database backends {:.2} s = {:.2} ms per device; simulator CPU {:.2} s",
            self.server_cpu_seconds,
            self.database_cpu_seconds,
            self.cpu_ms_per_device(),
            self.simulator_cpu_seconds
        )?;
        if self.cores > 0 && self.seconds > 0.0 {
            writeln!(
                f,
                "CPU floor on {} cores: {:.2} s (servers, database and simulator on every core at once); the window was {:.0} % of the machine",
                self.cores,
                self.cpu_floor_seconds(),
                100.0 * self.cpu_floor_seconds() / self.seconds
            )?;
        }
        let per_node: Vec<String> = self
            .node_peak_rss_kib
            .iter()
            .map(|k| format!("{:.1}", *k as f64 / 1024.0))
            .collect();
        writeln!(
            f,
            "server peak RSS (VmHWM) {:.1} MiB{}; {} node(s); {}",
            self.server_peak_rss_kib as f64 / 1024.0,
            if per_node.len() > 1 {
                format!(" (per node: {} MiB)", per_node.join(", "))
            } else {
                String::new()
            },
            self.nodes.max(1),
            if self.connection_per_session {
                "one TLS connection per device session"
            } else {
                "sessions share keep-alive connections"
            }
        )?;
        writeln!(
            f,
            "pushes delivered {}, sessions {}, session errors {}{}",
            self.pushes_delivered,
            self.sessions,
            self.errors,
            self.first_error
                .as_ref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        )?;
        writeln!(
            f,
            "confirmed through the API: {} of {} results stored",
            self.confirmed, self.devices
        )?;
        writeln!(
            f,
            "load average before {}, after {}",
            self.load_before, self.load_after
        )?;
        write!(
            f,
            "S1 n={} nodes={} seconds={:.2} results_per_s={:.0} server_cpu_s={:.2} db_cpu_s={:.2} cpu_ms_per_device={:.2} sim_cpu_s={:.2} cpu_floor_s={:.2} peak_rss_mib={:.1} load=\"{}\"",
            self.devices,
            self.nodes.max(1),
            self.seconds,
            self.results_per_second(),
            self.server_cpu_seconds,
            self.database_cpu_seconds,
            self.cpu_ms_per_device(),
            self.simulator_cpu_seconds,
            self.cpu_floor_seconds(),
            self.server_peak_rss_kib as f64 / 1024.0,
            self.load_after
        )
    }
}

/// Counters shared by every device's push-driven session loop.
#[derive(Default)]
struct Sessions {
    started: AtomicU64,
    in_flight: AtomicI64,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
    /// Milliseconds since `epoch` when the last session ended.
    last_end_ms: AtomicU64,
    /// While set, acknowledgements of `request_type` are recorded.
    window_open: AtomicBool,
    request_type: OnceLock<&'static str>,
    acked: AtomicUsize,
    /// Command UUID → when the device had its report answered.
    acks: std::sync::Mutex<HashMap<String, Instant>>,
    /// UDID → the command UUID it acknowledged in the window (bulk queuing answers no UUIDs).
    acked_by_udid: std::sync::Mutex<HashMap<String, String>>,
    epoch: OnceLock<Instant>,
}

impl Sessions {
    fn now_ms(&self) -> u64 {
        self.epoch
            .get_or_init(Instant::now)
            .elapsed()
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX)
    }

    fn record_error(&self, error: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(error);
    }

    /// Waits until no session has run for `quiet` (and none is running), or `limit` passes.
    async fn settle(&self, quiet: Duration, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let idle_for = self
                .now_ms()
                .saturating_sub(self.last_end_ms.load(Ordering::Relaxed));
            if self.in_flight.load(Ordering::Relaxed) == 0
                && Duration::from_millis(idle_for) >= quiet
            {
                return;
            }
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One simulated iPad and its pre-signed Idle report (filled in before the measured window).
struct PushedDevice {
    device: Arc<Mutex<SimDevice>>,
    signed_idle: Arc<OnceLock<(Vec<u8>, String)>>,
}

/// Runs one handshake with the driver script: setup, and the measurement unless `setup_only`.
pub async fn run(options: &BenchPushOptions) -> Result<BenchPushReport, SimError> {
    if options.devices == 0 {
        return Err(SimError::InvalidArgument(
            "bench-push needs at least one device".into(),
        ));
    }
    std::fs::create_dir_all(&options.dir).map_err(|e| bench_error("work directory", e))?;

    // Apple's side: a push CA, and the local APNs server trusting it.
    let now = SystemClock.now();
    let apple_ca = CertificateAuthority::generate("Orchard bench Apple Push CA", now, 30)?;
    let apns = FakeApnsServer::start(&apple_ca.cert_pem())
        .await
        .map_err(|e| bench_error("local apns", e))?;
    write_file(&options.dir.join("apns-root.pem"), apns.root_cert_pem())?;
    write_file(&options.dir.join("apns-url"), apns.url().as_bytes())?;
    println!("local apns listening on {}", apns.url());

    let server =
        wait_for_server(&options.dir.join("server.json"), Duration::from_secs(300)).await?;
    let server_ca = std::fs::read(&server.ca).map_err(|e| bench_error("server ca", e))?;
    let server_ca_pem = server_ca.clone();
    let api = Api {
        client: build_client(&ClientOptions {
            ca_pem: Some(server_ca.clone()),
            ..ClientOptions::default()
        })?,
        base: server.url.trim_end_matches('/').to_owned(),
        token: server.token.clone(),
    };

    // The push certificate, always for the same topic: devices enrolled in an earlier run keep theirs.
    let topic = load_or_create_topic(&options.dir.join("topic"))?;
    let push_cert = issue_push_certificate(
        &apple_ca,
        &topic,
        now.plus_seconds(-60),
        now.plus_seconds(365 * 86_400),
    )
    .map_err(|e| bench_error("push certificate", e))?;
    let key_pem = String::from_utf8_lossy(push_cert.key_pem().expose()).into_owned();
    api.call(
        reqwest::Method::PUT,
        "/api/v1/push-certificate",
        Some(json!({
            "certificate_pem": String::from_utf8_lossy(&push_cert.cert_pem()),
            "private_key_pem": key_pem,
            "force": false,
        })),
    )
    .await?;

    // The fleet: reused devices first, then new ones for what is missing.
    let fleet_path = options.dir.join("fleet.json");
    let mut fleet = Fleet::load_or_new(&fleet_path)?;
    fleet.devices.retain(|d| d.state.enrolled);
    let missing = options.devices.saturating_sub(fleet.len());
    let config = SimConfig {
        ca_pem: Some(server_ca),
        ..SimConfig::default()
    };
    fleet.add_random(&config, missing)?;
    // Enrolled devices talk to the nodes in turn (new ones enroll through the first node's link).
    let nodes = server.nodes();
    for (i, device) in fleet.devices.iter_mut().enumerate() {
        let node = &nodes[i % nodes.len()];
        if device.state.enrolled {
            device.state.server_url = with_origin(&device.state.server_url, &node.url)?;
            device.state.check_in_url = with_origin(&device.state.check_in_url, &node.url)?;
        }
    }
    let session_tls = if options.connection_per_session {
        Some(Arc::new(session_tls_config(&server_ca_pem)?))
    } else {
        None
    };

    let sessions = Arc::new(Sessions::default());
    sessions.now_ms();
    let mut devices = Vec::with_capacity(fleet.len());
    let mut runners = Vec::with_capacity(fleet.len());
    for mut device in std::mem::take(&mut fleet.devices) {
        if device.state.push_token.is_empty() {
            // An iPad has its APNs token before it enrolls, so the subscription precedes the first push.
            let mut token = uuid::Uuid::new_v4().as_bytes().to_vec();
            token.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
            device.state.push_token = token;
        }
        let token = DeviceToken::from_bytes(&device.state.push_token)
            .map_err(|e| bench_error("device token", e))?;
        let pushes = apns.subscribe_token(&token);
        let pushed = PushedDevice {
            device: Arc::new(Mutex::new(device)),
            signed_idle: Arc::new(OnceLock::new()),
        };
        runners.push(tokio::spawn(session_loop(
            pushes,
            pushed.device.clone(),
            pushed.signed_idle.clone(),
            sessions.clone(),
            session_tls.clone(),
        )));
        devices.push(pushed);
    }

    let mut report = BenchPushReport {
        request_type: options.command.request_type(),
        ..BenchPushReport::default()
    };
    if missing > 0 {
        // Device keys from the pool file in the work directory (made once, on every core), so enrollment
        // measures enrollment, not RSA key generation.
        let pool_path = crate::key_pool::pool_path_from_env()
            .unwrap_or_else(|| options.dir.join("device-keys-2048.pool"));
        let pool_started = Instant::now();
        let keys = tokio::task::spawn_blocking(move || {
            KeyPool::load_or_generate(&pool_path, 2048, missing)
        })
        .await
        .map_err(|e| bench_error("key pool", e))??;
        println!(
            "{missing} device keys ready in {:.1} s",
            pool_started.elapsed().as_secs_f64()
        );
        let started = Instant::now();
        let link = api.enrollment_link().await?;
        let to_enroll = devices.get(devices.len() - missing..).unwrap_or_default();
        let enrolled = enroll_with_keys(
            to_enroll,
            &link,
            options.enroll_concurrency,
            &keys,
            &sessions,
        )
        .await;
        report.newly_enrolled = enrolled;
        report.enroll_seconds = started.elapsed().as_secs_f64();
        // The inventory queued at enrollment is pushed and answered; let it finish before anything else.
        sessions
            .settle(Duration::from_secs(5), Duration::from_secs(900))
            .await;
        save_fleet(&devices, &fleet_path).await?;
    }

    let result = if options.setup_only {
        let mut enrolled = 0;
        for d in &devices {
            if d.device.lock().await.state.enrolled {
                enrolled += 1;
            }
        }
        report.devices = enrolled;
        if enrolled < options.devices {
            Err(SimError::Fleet {
                failed: options.devices - enrolled,
                total: options.devices,
                first: first_error(&sessions).unwrap_or_else(|| "enrollment failed".into()),
            })
        } else {
            Ok(report)
        }
    } else {
        measure(options, &api, &server, &apns, &devices, &sessions, report).await
    };
    for runner in &runners {
        runner.abort();
    }
    if !options.setup_only {
        save_fleet(&devices, &fleet_path).await?;
    }
    result
}

/// The measured window: queue, wait for every acknowledgement, then confirm through the API.
async fn measure(
    options: &BenchPushOptions,
    api: &Api,
    server: &ServerInfo,
    apns: &FakeApnsServer,
    devices: &[PushedDevice],
    sessions: &Arc<Sessions>,
    mut report: BenchPushReport,
) -> Result<BenchPushReport, SimError> {
    // The server's ids of our enrolled devices.
    let ids_by_udid = api.enrolled_device_ids().await?;
    let mut chosen: Vec<(String, &PushedDevice)> = Vec::with_capacity(options.devices);
    for d in devices {
        if chosen.len() == options.devices {
            break;
        }
        let mut device = d.device.lock().await;
        if !device.state.enrolled {
            continue;
        }
        if let Some(id) = ids_by_udid.get(&device.state.udid) {
            // Signed now, replayed in the window: the simulator's signing should not eat the server's CPU.
            // The key is parsed now too; the Acknowledged report is still signed in the session.
            device.load_identity()?;
            let signed = device.signed_idle()?;
            let _ = d.signed_idle.set(signed);
            chosen.push((id.clone(), d));
        }
    }
    if chosen.len() < options.devices {
        return Err(SimError::InvalidArgument(format!(
            "only {} of {} devices are enrolled on this server; run the setup phase",
            chosen.len(),
            options.devices
        )));
    }
    report.devices = chosen.len();
    sessions
        .settle(Duration::from_secs(2), Duration::from_secs(120))
        .await;

    let request_type = options.command.request_type();
    let _ = sessions.request_type.set(request_type);
    let ticks = options.clock_ticks_per_second.max(1) as f64;
    report.load_before = load_average();
    // Marker files for a profiler attached to the server (scripts/profile-s1.sh): the window's edges.
    let _ = std::fs::remove_file(options.dir.join("window-closed"));
    let _ = std::fs::write(options.dir.join("window-open"), b"");
    let cpu_before = cpu_sample(server, ticks);
    let backends_before = server
        .db_name
        .as_deref()
        .map(postgres_backend_ticks)
        .unwrap_or_default();
    let pushes_before = apns.delivered_count();
    let sessions_before = sessions.started.load(Ordering::Relaxed);
    let errors_before = sessions.errors.load(Ordering::Relaxed);
    sessions.window_open.store(true, Ordering::SeqCst);
    let started = Instant::now();

    let body = options.command.api_json();
    let uuids: Vec<String> = if options.bulk {
        let ids: Vec<&str> = chosen.iter().map(|(id, _)| id.as_str()).collect();
        let outcome = api
            .call(
                reqwest::Method::POST,
                "/api/v1/commands/bulk",
                Some(serde_json::json!({"command": body, "device_ids": ids})),
            )
            .await?;
        if outcome["queued"].as_u64() != Some(chosen.len() as u64) {
            return Err(SimError::Bench(format!("bulk queue answered {outcome}")));
        }
        report.enqueue_seconds = started.elapsed().as_secs_f64();
        // The UUIDs are learnt from the devices' acknowledgements below.
        Vec::new()
    } else {
        queue_one_by_one(options, api, &chosen, &body).await?
    };
    if !options.bulk {
        report.enqueue_seconds = started.elapsed().as_secs_f64();
    }
    let expected = chosen.len();

    let deadline = started + options.timeout;
    while sessions.acked.load(Ordering::SeqCst) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let uuids: Vec<String> = if options.bulk {
        let by_udid = sessions
            .acked_by_udid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = Vec::with_capacity(chosen.len());
        for (_, d) in &chosen {
            let udid = d.device.lock().await.state.udid.clone();
            out.push(by_udid.get(&udid).cloned().unwrap_or_default());
        }
        out
    } else {
        uuids
    };
    let finished = Instant::now();
    sessions.window_open.store(false, Ordering::SeqCst);
    let cpu_after = cpu_sample(server, ticks);
    let _ = std::fs::remove_file(options.dir.join("window-open"));
    let _ = std::fs::write(options.dir.join("window-closed"), b"");
    let backends_after = server
        .db_name
        .as_deref()
        .map(postgres_backend_ticks)
        .unwrap_or_default();
    report.load_after = load_average();
    report.nodes = server.nodes().len();
    report.connection_per_session = options.connection_per_session;
    report.node_peak_rss_kib = server
        .nodes()
        .iter()
        .map(|n| peak_rss_kib(n.pid).unwrap_or(0))
        .collect();
    report.server_peak_rss_kib = report.node_peak_rss_kib.iter().copied().max().unwrap_or(0);
    report.server_cpu_seconds = cpu_after.server - cpu_before.server;
    report.simulator_cpu_seconds = cpu_after.simulator - cpu_before.simulator;
    report.cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    report.database_cpu_seconds = backends_after
        .iter()
        .map(|(pid, after)| after.saturating_sub(backends_before.get(pid).copied().unwrap_or(0)))
        .sum::<u64>() as f64
        / ticks;
    report.pushes_delivered = apns.delivered_count() - pushes_before;
    report.sessions = sessions.started.load(Ordering::Relaxed) - sessions_before;
    report.errors = sessions.errors.load(Ordering::Relaxed) - errors_before;
    report.first_error = first_error(sessions);

    let mut latencies: Vec<Duration> = {
        let acks = sessions.acks.lock().unwrap_or_else(|p| p.into_inner());
        uuids
            .iter()
            .filter_map(|u| acks.get(u).map(|at| at.saturating_duration_since(started)))
            .collect()
    };
    latencies.sort();
    let missing = uuids.len() - latencies.len();
    report.seconds = latencies
        .last()
        .copied()
        .unwrap_or_else(|| finished - started)
        .as_secs_f64();
    report.p50 = percentile(&latencies, 50.0);
    report.p90 = percentile(&latencies, 90.0);
    report.max = latencies.last().copied().unwrap_or_default();
    report.measured = true;

    // "Result stored" is what counts: every one must be in the API's command history.
    let confirmations: Vec<bool> = stream::iter(
        chosen
            .iter()
            .zip(&uuids)
            .map(|((id, _), uuid)| api.result_stored(id, uuid, options.command)),
    )
    .buffer_unordered(options.api_concurrency.max(1))
    .collect()
    .await;
    report.confirmed = confirmations.iter().filter(|ok| **ok).count();
    if missing > 0 || report.confirmed < report.devices {
        return Err(SimError::Bench(format!(
            "{missing} devices never acknowledged within {:?}, {} of {} results confirmed; {report}",
            options.timeout, report.confirmed, report.devices
        )));
    }
    Ok(report)
}

/// Queues the command with one API request per device (as a script without bulk support would).
async fn queue_one_by_one(
    options: &BenchPushOptions,
    api: &Api,
    chosen: &[(String, &PushedDevice)],
    body: &serde_json::Value,
) -> Result<Vec<String>, SimError> {
    let queued: Vec<Result<String, SimError>> = stream::iter(chosen.iter().map(|(id, _)| {
        let body = body.clone();
        async move {
            let view = api
                .call(
                    reqwest::Method::POST,
                    &format!("/api/v1/devices/{id}/commands"),
                    Some(body),
                )
                .await?;
            view["command_uuid"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| SimError::Bench(format!("no command_uuid in {view}")))
        }
    }))
    .buffered(options.api_concurrency.max(1))
    .collect()
    .await;
    queued.into_iter().collect()
}

/// Runs a command session each time APNs delivers a push to this device, and nothing else.
async fn session_loop(
    mut pushes: tokio::sync::mpsc::UnboundedReceiver<orchard_apns::fake::FakePush>,
    device: Arc<Mutex<SimDevice>>,
    signed_idle: Arc<OnceLock<(Vec<u8>, String)>>,
    sessions: Arc<Sessions>,
    session_tls: Option<Arc<rustls::ClientConfig>>,
) {
    while pushes.recv().await.is_some() {
        // Pushes that piled up while a session ran are answered by that session's successor, once.
        while pushes.try_recv().is_ok() {}
        let mut device = device.lock().await;
        if !device.state.enrolled {
            // Pushed while still enrolling (the lock was held by the enrollment): nothing to do yet.
            continue;
        }
        sessions.started.fetch_add(1, Ordering::Relaxed);
        sessions.in_flight.fetch_add(1, Ordering::SeqCst);
        // A connection of the session's own, closed with it (the shared client comes back afterwards).
        let mut shared_client = None;
        if let Some(tls) = &session_tls {
            match session_client(tls, &ClientOptions::default()) {
                Ok(client) => {
                    let trust = device.trust_pem();
                    shared_client = Some((device.raw_client().clone(), trust.clone()));
                    device.set_client(client, trust);
                }
                Err(e) => sessions.record_error(format!("{}: {e}", device.state.udid)),
            }
        }
        let result = match signed_idle.get() {
            Some(signed) => device.poll_with_signed_idle(signed).await,
            None => device.poll().await,
        };
        if let Some((client, trust)) = shared_client {
            device.set_client(client, trust);
        }
        let answered_at = Instant::now();
        match result {
            Ok(summary) => {
                if sessions.window_open.load(Ordering::SeqCst) {
                    let request_type = sessions.request_type.get().copied().unwrap_or_default();
                    let mut acks = sessions.acks.lock().unwrap_or_else(|p| p.into_inner());
                    for handled in summary.handled.iter().filter(|h| {
                        h.request_type == request_type && h.status == CommandStatus::Acknowledged
                    }) {
                        if acks.insert(handled.uuid.clone(), answered_at).is_none() {
                            sessions.acked.fetch_add(1, Ordering::SeqCst);
                            sessions
                                .acked_by_udid
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(device.state.udid.clone(), handled.uuid.clone());
                        }
                    }
                }
            }
            Err(e) => sessions.record_error(format!("{}: {e}", device.state.udid)),
        }
        sessions
            .last_end_ms
            .store(sessions.now_ms(), Ordering::Relaxed);
        sessions.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Enrolls `devices`, `concurrency` at a time, each with its own key from `keys`. Returns how many enrolled.
async fn enroll_with_keys(
    devices: &[PushedDevice],
    link: &str,
    concurrency: usize,
    keys: &KeyPool,
    sessions: &Sessions,
) -> usize {
    let total = devices.len();
    let done = AtomicUsize::new(0);
    let started = Instant::now();
    let results: Vec<bool> = stream::iter(devices.iter().map(|d| {
        let done = &done;
        async move {
            let mut device = d.device.lock().await;
            if let Some(key) = keys.take() {
                device.set_scep_key(key);
            }
            let result = device.enroll(link).await;
            let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
            if finished.is_multiple_of(250) || finished == total {
                eprintln!(
                    "enrolled {finished}/{total} ({:.1}/s)",
                    finished as f64 / started.elapsed().as_secs_f64().max(f64::EPSILON)
                );
            }
            match result {
                Ok(()) => true,
                Err(e) => {
                    sessions.record_error(format!("enrollment of {}: {e}", device.state.udid));
                    false
                }
            }
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .collect()
    .await;
    results.into_iter().filter(|ok| *ok).count()
}

async fn save_fleet(devices: &[PushedDevice], path: &Path) -> Result<(), SimError> {
    let mut states = Vec::with_capacity(devices.len());
    for d in devices {
        states.push(d.device.lock().await.state.clone());
    }
    save_states(states, path)
}

fn first_error(sessions: &Sessions) -> Option<String> {
    sessions
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// The admin API, as an operator.
struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// One JSON call that must succeed (2xx); returns the JSON answer.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, SimError> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            return Err(SimError::Bench(format!("{path}: {status}: {text}")));
        }
        serde_json::from_str(&text).map_err(|e| SimError::Bench(format!("{path}: {e}: {text}")))
    }

    /// A new tenant and an unlimited enrollment link in it.
    async fn enrollment_link(&self) -> Result<String, SimError> {
        let suffix: String = uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .chars()
            .take(8)
            .collect();
        let code = format!("s1-{suffix}");
        let tenant = self
            .call(
                reqwest::Method::POST,
                "/api/v1/tenants",
                Some(json!({"name": "S1 benchmark", "code": code})),
            )
            .await?;
        let tenant_id = tenant["id"]
            .as_str()
            .ok_or_else(|| SimError::Bench(format!("no tenant id in {tenant}")))?;
        let link = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/tenants/{tenant_id}/enrollment-links"),
                Some(json!({"name": "S1 benchmark"})),
            )
            .await?;
        link["url"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| SimError::Bench(format!("no link url in {link}")))
    }

    /// UDID → device id of every enrolled device on the server.
    async fn enrolled_device_ids(&self) -> Result<HashMap<String, String>, SimError> {
        const PAGE: usize = 1000;
        let mut ids = HashMap::new();
        for offset in (0..).step_by(PAGE) {
            let page = self
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/devices?limit={PAGE}&offset={offset}"),
                    None,
                )
                .await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            for item in &items {
                if let (Some(udid), Some(id), Some("enrolled")) = (
                    item["udid"].as_str(),
                    item["id"].as_str(),
                    item["enrollment_state"].as_str(),
                ) {
                    ids.insert(udid.to_owned(), id.to_owned());
                }
            }
            if items.len() < PAGE {
                break;
            }
        }
        Ok(ids)
    }

    /// Whether the server holds an acknowledged result for `uuid` on device `id`.
    async fn result_stored(&self, id: &str, uuid: &str, command: PushCommand) -> bool {
        let Ok(history) = self
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/devices/{id}/commands?limit=20"),
                None,
            )
            .await
        else {
            return false;
        };
        history["items"].as_array().is_some_and(|items| {
            items.iter().any(|c| {
                c["command_uuid"] == uuid
                    && c["status"] == "acknowledged"
                    && !c["completed_at"].is_null()
                    && (command != PushCommand::DeviceInformation || !c["result"].is_null())
            })
        })
    }
}

fn bench_error(what: &str, e: impl fmt::Display) -> SimError {
    SimError::Bench(format!("{what}: {e}"))
}

/// Writes a file through a temporary name, so a reader polling for it never sees it half written.
fn write_file(path: &Path, contents: &[u8]) -> Result<(), SimError> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    std::fs::write(&temporary, contents)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|e| bench_error(&path.display().to_string(), e))
}

async fn wait_for_server(path: &Path, limit: Duration) -> Result<ServerInfo, SimError> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read(path) {
            return serde_json::from_slice(&text)
                .map_err(|e| bench_error(&path.display().to_string(), e));
        }
        if Instant::now() >= deadline {
            return Err(SimError::Bench(format!(
                "{} did not appear within {limit:?}",
                path.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn load_or_create_topic(path: &Path) -> Result<ApnsTopic, SimError> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return ApnsTopic::parse(text.trim()).map_err(|e| bench_error("stored topic", e));
    }
    let topic = random_topic().map_err(|e| bench_error("topic", e))?;
    write_file(path, topic.as_str().as_bytes())?;
    Ok(topic)
}

/// utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/<pid>/stat).
fn process_ticks(stat_path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    let after_name = stat.rsplit_once(')')?.1;
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn cpu_sample(server: &ServerInfo, ticks_per_second: f64) -> CpuSample {
    let seconds = |path: &str| process_ticks(path).unwrap_or(0) as f64 / ticks_per_second;
    CpuSample {
        server: server
            .nodes()
            .iter()
            .map(|n| seconds(&format!("/proc/{}/stat", n.pid)))
            .sum(),
        database: 0.0,
        simulator: seconds("/proc/self/stat"),
    }
}

/// CPU ticks of every PostgreSQL backend serving `database` (their process title names it).
fn postgres_backend_ticks(database: &str) -> HashMap<u32, u64> {
    let mut ticks = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return ticks;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        // The title reads `postgres: [15/main: ]USER DATABASE HOST(PORT) STATE`, NUL-padded.
        let title = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if title.starts_with("postgres: ") && title.split_whitespace().any(|w| w == database) {
            if let Some(t) = process_ticks(&format!("/proc/{pid}/stat")) {
                ticks.insert(pid, t);
            }
        }
    }
    ticks
}

/// VmHWM (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The `p`th percentile (nearest rank) of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_and_peak_memory_are_readable() {
        assert!(process_ticks("/proc/self/stat").is_some());
        assert!(peak_rss_kib(std::process::id()).unwrap() > 0);
        assert!(process_ticks("/proc/does-not-exist/stat").is_none());
        assert_eq!(load_average().split(' ').count(), 3);
    }

    #[test]
    fn percentiles_and_rates() {
        let samples: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(5));
        assert_eq!(percentile(&samples, 90.0), Duration::from_millis(9));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
        let report = BenchPushReport {
            devices: 1000,
            seconds: 4.0,
            server_cpu_seconds: 3.0,
            database_cpu_seconds: 1.0,
            simulator_cpu_seconds: 2.0,
            cores: 2,
            measured: true,
            ..BenchPushReport::default()
        };
        assert_eq!(report.results_per_second(), 250.0);
        assert_eq!(report.cpu_ms_per_device(), 4.0);
        assert_eq!(report.cpu_floor_seconds(), 3.0);
        let printed = report.to_string();
        assert!(
            printed.contains("S1 n=1000 nodes=1 seconds=4.00"),
            "{printed}"
        );
        assert!(
            printed.contains("CPU floor on 2 cores: 3.00 s")
                && printed.contains("75 % of the machine"),
            "{printed}"
        );
        assert!(
            printed.contains("sim_cpu_s=2.00 cpu_floor_s=3.00"),
            "{printed}"
        );
    }

    #[test]
    fn devices_are_spread_over_the_nodes() {
        assert_eq!(
            with_origin(
                "https://127.0.0.1:18444/mdm/checkin?x=1",
                "https://127.0.0.1:18445"
            )
            .expect("rewritten"),
            "https://127.0.0.1:18445/mdm/checkin?x=1"
        );
        let one: ServerInfo = serde_json::from_value(json!({
            "url": "https://127.0.0.1:18444", "token": "t", "ca": "/ca.pem", "pid": 7, "db_name": null
        }))
        .expect("one node");
        assert_eq!(
            one.nodes(),
            vec![ServerNode {
                url: "https://127.0.0.1:18444".into(),
                pid: 7
            }]
        );
        let two: ServerInfo = serde_json::from_value(json!({
            "url": "https://127.0.0.1:18444", "token": "t", "ca": "/ca.pem", "pid": 7, "db_name": "db",
            "nodes": [{"url": "https://127.0.0.1:18444", "pid": 7}, {"url": "https://127.0.0.1:18445", "pid": 8}]
        }))
        .expect("two nodes");
        assert_eq!(two.nodes().len(), 2);
        assert_eq!(two.nodes()[1].pid, 8);
    }

    #[test]
    fn the_topic_is_kept_between_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topic");
        let first = load_or_create_topic(&path).unwrap();
        assert_eq!(load_or_create_topic(&path).unwrap(), first);
    }

    #[tokio::test]
    async fn a_missing_server_file_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let result =
            wait_for_server(&dir.path().join("server.json"), Duration::from_millis(50)).await;
        assert!(matches!(result, Err(SimError::Bench(_))));
    }
}
