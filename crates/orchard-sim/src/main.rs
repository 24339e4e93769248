//! `orchard-sim`: simulated iPads against a running Orchard server, from the command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use orchard_sim::bench::{self, BenchOptions};
use orchard_sim::bench_push::{self, BenchPushOptions, PushCommand};
use orchard_sim::cpu::CpuOptions;
use orchard_sim::{Activation, AppleDeviceCa, DepActivation, Fleet, KeyPool, SimConfig};

#[derive(Parser)]
#[command(
    name = "orchard-sim",
    version,
    about = "Simulated iPads that enroll in and obey an Orchard MDM server",
    long_about = "Simulated iPads that enroll in and obey an Orchard MDM server.\n\n\
        Each device downloads the signed enrollment profile, gets an identity by SCEP, checks in \
        (Authenticate, TokenUpdate) and answers commands like a real iPad, changing its own state. \
        Devices are kept in a JSON state file (it holds private keys: it is written mode 0600), so a \
        fleet enrolled once can be polled again in later runs.\n\n\
        Example:\n  orchard-sim enroll --url https://mdm.example.edu/enroll/TOKEN --count 20 --state fleet.json --ca ca.pem\n  \
        orchard-sim poll --state fleet.json\n  orchard-sim status --state fleet.json\n  \
        orchard-sim activate --dep-url https://127.0.0.1:8443 --dep-ca dep-root.pem --device-ca-dir apple-ca \
        --serial F9FXK01ABCDE --state fleet.json --ca ca.pem\n\n\
        Logs go to stderr; set RUST_LOG=debug for more."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create COUNT new iPads, enroll them with the enrollment URL and add them to the state file.
    Enroll {
        /// Enrollment profile URL (`https://HOST/enroll/LINK_TOKEN`).
        #[arg(long)]
        url: String,
        /// How many new devices to create.
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Fleet state file (created if missing; new devices are appended).
        #[arg(long)]
        state: PathBuf,
        #[command(flatten)]
        device: DeviceArgs,
        /// Enrollments in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// File of pre-generated device keys (made on every core if missing or short, then reused); without
        /// it the keys are made on every core before enrolling and not kept. `ORCHARD_SIM_KEY_POOL` sets it too.
        #[arg(long)]
        key_pool: Option<PathBuf>,
    },
    /// Automated Device Enrollment: add iPads (COUNT random ones and/or the given serial numbers), give
    /// each an Apple device identity from the device CA in DEVICE_CA_DIR (created there if missing: configure
    /// the server to trust DEVICE_CA_DIR/apple-root.pem), then activate every device of the state file that
    /// is not enrolled: ask the DEP server for its cloud configuration, post the signed MachineInfo and
    /// enroll with the profile the server answers (installing required OS updates on the way).
    Activate {
        /// Base URL of the local DEP server.
        #[arg(long)]
        dep_url: String,
        /// PEM root of the DEP server's TLS certificate (omit for plain HTTP).
        #[arg(long)]
        dep_ca: Option<PathBuf>,
        /// Directory of the test Apple device CA (apple-root.pem, apple-device-ca.pem, apple-device-ca.key.pem).
        #[arg(long)]
        device_ca_dir: PathBuf,
        /// Fleet state file (created if missing; new devices are appended).
        #[arg(long)]
        state: PathBuf,
        /// How many new devices with random serial numbers to add.
        #[arg(long, default_value_t = 0)]
        count: usize,
        /// Serial numbers of new devices (repeatable, or comma-separated).
        #[arg(long, value_delimiter = ',')]
        serial: Vec<String>,
        #[command(flatten)]
        device: DeviceArgs,
        /// Activations in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Required OS updates a device installs before it gives up.
        #[arg(long, default_value_t = orchard_sim::MAX_OS_UPDATES_PER_ACTIVATION)]
        max_os_updates: u32,
    },
    /// Run one command session (Idle, then every queued command) for each enrolled device.
    Poll {
        #[arg(long)]
        state: PathBuf,
        /// Sessions in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Show the devices of a state file.
    Status {
        #[arg(long)]
        state: PathBuf,
        /// Print the full device states as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send CheckOut for every enrolled device (as if the MDM profile were removed by the user).
    Checkout {
        #[arg(long)]
        state: PathBuf,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Enroll DEVICES fresh iPads, then run signed Idle round trips for SECONDS and print round trips/s
    /// and latency percentiles.
    Bench {
        /// Enrollment profile URL; the link must allow DEVICES uses.
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 100)]
        devices: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Round trips (and enrollments) in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// PEM trust anchor for the server (otherwise trust on first use).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Open a new TCP+TLS connection per request instead of keeping connections alive.
        #[arg(long)]
        new_connections: bool,
        /// Sign every Idle report (a real device does) instead of replaying one signed report per device,
        /// which keeps the simulator's CPU use off the server's share.
        #[arg(long)]
        sign_each_request: bool,
        /// Measure twice with the same devices: after the first round create FILE.ready (the enrolled
        /// UDIDs, one a line) and wait until FILE exists (S5: scripts/bench-s5.sh fills the database between).
        #[arg(long)]
        pause_between: Option<PathBuf>,
        /// The server's process id: its CPU time during the measured window is reported per round trip.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Processes with this command name are the database (e.g. `postgres`): their CPU time during the
        /// measured window is reported per round trip too.
        #[arg(long)]
        db_process_name: Option<String>,
        /// Pin every thread of the server (`--server-pid`) to this core before measuring.
        #[arg(long, requires = "server_pid")]
        pin_server: Option<usize>,
        /// Pin this simulator to this core before measuring.
        #[arg(long)]
        pin_self: Option<usize>,
        /// Pin every database process (`--db-process-name`) to this core before measuring.
        #[arg(long, requires = "db_process_name")]
        pin_db: Option<usize>,
    },
    /// S1 push-all benchmark with a local APNs server: enroll (or reuse) DEVICES iPads that only wake on
    /// push, queue one command for all of them through the API and time until every result is stored.
    /// Run by scripts/bench-s1.sh, which starts `orchard serve` in between (see the handshake files below).
    ///
    /// Writes DIR/apns-root.pem and DIR/apns-url, waits for DIR/server.json
    /// ({"url", "token", "ca", "pid", "db_name"?, "nodes"?: [{"url", "pid"}]}) and keeps the fleet in
    /// DIR/fleet.json.
    BenchPush {
        /// Work directory shared with the driver script; reused between runs.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        /// Enroll missing devices and wait for their inventory, then stop without measuring.
        #[arg(long)]
        setup_only: bool,
        /// Enrollments in flight at once.
        #[arg(long, default_value_t = 16)]
        enroll_concurrency: usize,
        /// API requests in flight while queuing the command and confirming results.
        #[arg(long, default_value_t = 32)]
        api_concurrency: usize,
        /// The command queued for every device: device-information (a stored result) or device-lock.
        #[arg(long, default_value = "device-information")]
        command: String,
        #[arg(long, default_value_t = 900)]
        timeout_seconds: u64,
        /// Kernel clock ticks per second (`getconf CLK_TCK`), for /proc CPU times.
        #[arg(long, default_value_t = 100)]
        clock_ticks: u64,
        /// Queue one request per device instead of one bulk request (`POST /api/v1/commands/bulk`).
        #[arg(long)]
        one_by_one: bool,
        /// Let device sessions share keep-alive connections instead of each opening (and closing) its own
        /// TLS connection as an iPad woken by a push does.
        #[arg(long)]
        shared_connections: bool,
    },
}

#[derive(clap::Args)]
struct DeviceArgs {
    /// PEM trust anchor for the server before the profile is installed; without it the simulator trusts
    /// the first server certificate it sees for the profile download, then pins the profile's root.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Apple model identifier of the new devices.
    #[arg(long, default_value = "iPad13,18")]
    model: String,
    #[arg(long, default_value = "18.1")]
    os_version: String,
    #[arg(long, default_value = "22B83")]
    build_version: String,
}

fn read_ca(path: Option<&PathBuf>) -> anyhow::Result<Option<Vec<u8>>> {
    path.map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .transpose()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    orchard_sim::install_crypto_provider();

    match Cli::parse().command {
        Command::Enroll {
            url,
            count,
            state,
            device,
            concurrency,
            key_pool,
        } => {
            let config = SimConfig {
                ca_pem: read_ca(device.ca.as_ref())?,
                model: device.model,
                os_version: device.os_version,
                build_version: device.build_version,
            };
            let mut fleet = Fleet::load_or_new(&state)?;
            fleet.add_random(&config, count)?;
            let needed = fleet.unenrolled();
            let key_pool = key_pool.or_else(orchard_sim::key_pool::pool_path_from_env);
            let keys = tokio::task::spawn_blocking(move || match key_pool {
                Some(path) => KeyPool::load_or_generate(&path, 2048, needed),
                None => KeyPool::generate(2048, needed),
            })
            .await??;
            let result = fleet.enroll_all(&url, concurrency, &keys).await;
            // Saved whatever happened: enrolled devices must not be lost because another one failed.
            fleet.save(&state)?;
            let enrolled = fleet.devices.iter().filter(|d| d.state.enrolled).count();
            println!(
                "{enrolled} of {} devices enrolled; state in {}",
                fleet.len(),
                state.display()
            );
            result?;
        }
        Command::Activate {
            dep_url,
            dep_ca,
            device_ca_dir,
            state,
            count,
            serial,
            device,
            concurrency,
            max_os_updates,
        } => {
            let config = SimConfig {
                ca_pem: read_ca(device.ca.as_ref())?,
                model: device.model,
                os_version: device.os_version,
                build_version: device.build_version,
            };
            let dep_root_der = match read_ca(dep_ca.as_ref())? {
                Some(pem) => Some(
                    openssl::x509::X509::from_pem(&pem)
                        .and_then(|cert| cert.to_der())
                        .context("reading --dep-ca")?,
                ),
                None => None,
            };
            let apple = AppleDeviceCa::load_or_generate(&device_ca_dir)?;
            let mut fleet = Fleet::load_or_new(&state)?;
            fleet.add_random(&config, count)?;
            fleet.add_with_serials(&config, &serial)?;
            fleet.provision_apple_identities(&apple)?;
            let summaries = fleet
                .activate_all(
                    &DepActivation::new(dep_url, dep_root_der),
                    concurrency,
                    max_os_updates,
                )
                .await;
            // Saved whatever happened, as after `enroll`.
            fleet.save(&state)?;
            let mut failed = 0;
            for summary in &summaries {
                let what = match &summary.outcome {
                    Ok(Activation::NotAssigned) => "not assigned to an mdm server".to_owned(),
                    Ok(Activation::Enrolled(e)) => format!(
                        "enrolled via {}{}{}",
                        e.enrollment_url,
                        if e.awaiting_configuration {
                            ", awaiting DeviceConfigured"
                        } else {
                            ""
                        },
                        if e.os_updates.is_empty() {
                            String::new()
                        } else {
                            format!(", updated to {}", e.os_updates.join(" then "))
                        }
                    ),
                    Err(e) => {
                        failed += 1;
                        format!("failed: {e}")
                    }
                };
                println!("{} {}: {what}", summary.serial_number, summary.udid);
            }
            println!(
                "device ca root: {}; state in {}",
                device_ca_dir.join("apple-root.pem").display(),
                state.display()
            );
            if failed > 0 {
                anyhow::bail!("{failed} of {} activations failed", summaries.len());
            }
        }
        Command::Poll { state, concurrency } => {
            let mut fleet = Fleet::load(&state)?;
            let summaries = fleet.poll_all(concurrency).await;
            fleet.save(&state)?;
            let mut failed = 0;
            for summary in &summaries {
                match &summary.error {
                    Some(e) => {
                        failed += 1;
                        println!("{}: session failed: {e}", summary.udid);
                    }
                    None if summary.handled.is_empty() => {
                        println!("{}: nothing queued", summary.udid)
                    }
                    None => {
                        let handled: Vec<String> = summary
                            .handled
                            .iter()
                            .map(|h| format!("{} {}", h.request_type, h.status.as_str()))
                            .collect();
                        println!("{}: {}", summary.udid, handled.join(", "));
                    }
                }
            }
            if failed > 0 {
                anyhow::bail!("{failed} of {} sessions failed", summaries.len());
            }
        }
        Command::Status { state, json } => {
            let fleet = Fleet::load(&state)?;
            if json {
                let states: Vec<_> = fleet.devices.iter().map(|d| &d.state).collect();
                println!("{}", serde_json::to_string_pretty(&states)?);
            } else {
                println!(
                    "{:<36}  {:<10}  {:<14}  {:<8}  {:>8}  {:>4}  {:<6}  {:<4}  {:>8}",
                    "UDID",
                    "SERIAL",
                    "NAME",
                    "ENROLLED",
                    "PROFILES",
                    "APPS",
                    "LOCKED",
                    "LOST",
                    "COMMANDS"
                );
                for d in &fleet.devices {
                    let s = &d.state;
                    println!(
                        "{:<36}  {:<10}  {:<14}  {:<8}  {:>8}  {:>4}  {:<6}  {:<4}  {:>8}",
                        s.udid,
                        s.serial_number,
                        s.device_name.chars().take(14).collect::<String>(),
                        if s.enrolled { "yes" } else { "no" },
                        s.installed_profiles.len(),
                        s.installed_apps.len(),
                        if s.locked { "yes" } else { "no" },
                        if s.lost_mode.is_some() { "yes" } else { "no" },
                        s.handled_commands.len()
                    );
                }
            }
        }
        Command::Checkout { state, concurrency } => {
            let mut fleet = Fleet::load(&state)?;
            let failed = fleet.check_out_all(concurrency).await;
            fleet.save(&state)?;
            if failed > 0 {
                anyhow::bail!("{failed} CheckOut requests failed (devices are unenrolled anyway)");
            }
        }
        Command::Bench {
            url,
            devices,
            seconds,
            concurrency,
            ca,
            new_connections,
            sign_each_request,
            pause_between,
            server_pid,
            db_process_name,
            pin_server,
            pin_self,
            pin_db,
        } => {
            let options = BenchOptions {
                enrollment_url: url,
                devices,
                duration: Duration::from_secs(seconds),
                concurrency,
                ca_pem: read_ca(ca.as_ref())?,
                new_connections,
                sign_each_request,
                cpu: CpuOptions {
                    server_pid,
                    db_process_name,
                    pin_server,
                    pin_self,
                    pin_db,
                },
            };
            match pause_between {
                None => println!("{}", bench::run(&options).await?),
                Some(handshake) => {
                    let (first, second) = bench::run_two_rounds(&options, &handshake).await?;
                    println!("round 1:\n{first}\nround 2:\n{second}");
                }
            }
        }
        Command::BenchPush {
            dir,
            devices,
            setup_only,
            enroll_concurrency,
            api_concurrency,
            command,
            timeout_seconds,
            clock_ticks,
            one_by_one,
            shared_connections,
        } => {
            let command = match command.as_str() {
                "device-information" => PushCommand::DeviceInformation,
                "device-lock" => PushCommand::DeviceLock,
                other => anyhow::bail!("unknown --command {other}"),
            };
            let report = bench_push::run(&BenchPushOptions {
                dir,
                devices,
                enroll_concurrency,
                api_concurrency,
                setup_only,
                command,
                timeout: Duration::from_secs(timeout_seconds),
                clock_ticks_per_second: clock_ticks,
                bulk: !one_by_one,
                connection_per_session: !shared_connections,
            })
            .await?;
            println!("{report}");
        }
    }
    Ok(())
}
