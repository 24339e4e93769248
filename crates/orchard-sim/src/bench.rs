//! Check-in benchmark: enroll N simulated iPads, then for S seconds run signed Idle round trips on the
//! ServerURL (a signed `Status=Idle` PUT and the server's reply) and report throughput and latency.
//!
//! By default each device signs its Idle report once and replays it: the simulator runs on the same
//! machine as the server in most measurements, and signing every request would spend CPU the server needs,
//! while the server's verification work per request is identical either way. `sign_each_request` turns
//! the real-device behaviour back on. If a reply carries a command (queued through the API), the device
//! answers it like in any session, and the whole session counts as one round trip plus its commands.

use std::fmt;
use std::time::{Duration, Instant};

use crate::cpu::{CpuOptions, CpuSample};
use crate::device::SimDevice;
use crate::fleet::Fleet;
use crate::key_pool::KeyPool;
use crate::{SimConfig, SimError};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub enrollment_url: String,
    pub devices: usize,
    pub duration: Duration,
    /// Round trips in flight at once (each device still has at most one session at a time).
    pub concurrency: usize,
    pub ca_pem: Option<Vec<u8>>,
    /// Open a new TCP+TLS connection for every request instead of keeping connections alive.
    pub new_connections: bool,
    pub sign_each_request: bool,
    /// Whose CPU time to report per round trip, and where to pin the processes.
    pub cpu: CpuOptions,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            enrollment_url: String::new(),
            devices: 100,
            duration: Duration::from_secs(10),
            concurrency: 16,
            ca_pem: None,
            new_connections: false,
            sign_each_request: false,
            cpu: CpuOptions::default(),
        }
    }
}

/// What was measured.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    pub devices: usize,
    pub enroll_seconds: f64,
    pub concurrency: usize,
    pub new_connections: bool,
    pub round_trips: u64,
    pub commands_answered: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub round_trips_per_second: f64,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// CPU time used during the measured window (not enrollment) by the server and by the database, when
    /// watched (see [`CpuOptions`]).
    pub cpu: CpuSample,
}

impl BenchReport {
    /// CPU time per round trip of one watched process (or group).
    fn per_round_trip(&self, total: Option<Duration>) -> Option<Duration> {
        let round_trips = u32::try_from(self.round_trips).ok().filter(|n| *n > 0)?;
        Some(total? / round_trips)
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        if self.enroll_seconds > 0.0 {
            writeln!(
                f,
                "enrolled {} devices in {:.1} s ({:.1}/s)",
                self.devices,
                self.enroll_seconds,
                self.devices as f64 / self.enroll_seconds
            )?;
        }
        writeln!(
            f,
            "{} signed Idle round trips in {:.1} s = {:.1}/s ({} connections, concurrency {})",
            self.round_trips,
            self.seconds,
            self.round_trips_per_second,
            if self.new_connections {
                "new"
            } else {
                "kept-alive"
            },
            self.concurrency
        )?;
        writeln!(
            f,
            "latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max)
        )?;
        write!(
            f,
            "commands answered {}, errors {}",
            self.commands_answered, self.errors
        )?;
        if let Some(first) = &self.first_error {
            write!(f, " (first: {first})")?;
        }
        let server = self.per_round_trip(self.cpu.server);
        let db = self.per_round_trip(self.cpu.db);
        if let Some(server) = server {
            write!(f, "\nserver CPU per round trip {:.3} ms", ms(server))?;
        }
        if let Some(db) = db {
            write!(f, ", database CPU per round trip {:.3} ms", ms(db))?;
        }
        if let (Some(server), Some(db)) = (server, db) {
            write!(f, ", server + database {:.3} ms", ms(server + db))?;
        }
        Ok(())
    }
}

/// Enrolls `options.devices` fresh iPads, then measures.
pub async fn run(options: &BenchOptions) -> Result<BenchReport, SimError> {
    let (mut fleet, enroll_seconds) = enroll(options).await?;
    let mut report = measure(&mut fleet, options).await?;
    report.enroll_seconds = enroll_seconds;
    Ok(report)
}

/// Enrolls like [`run`], measures, then hands over to a script and measures the same devices again (S5: the
/// same check-ins with 30 simulated days of finished commands in the database): after the first round it
/// creates `<handshake>.ready` and waits until `<handshake>` exists (the script filled the database meanwhile).
/// Before the first round it creates `<handshake>.enrolled` and waits for `<handshake>.go`, so the script can
/// read the server's CPU time exactly around each round.
pub async fn run_two_rounds(
    options: &BenchOptions,
    handshake: &std::path::Path,
) -> Result<(BenchReport, BenchReport), SimError> {
    let (mut fleet, enroll_seconds) = enroll(options).await?;
    handshake_step(
        &handshake.with_extension("enrolled"),
        &handshake.with_extension("go"),
        "",
    )
    .await?;
    let mut first = measure(&mut fleet, options).await?;
    first.enroll_seconds = enroll_seconds;
    let udids: Vec<String> = fleet.devices.iter().map(|d| d.state.udid.clone()).collect();
    handshake_step(
        &handshake.with_extension("ready"),
        handshake,
        &udids.join("\n"),
    )
    .await?;
    let second = measure(&mut fleet, options).await?;
    Ok((first, second))
}

/// A fleet of `options.devices` fresh iPads, enrolled; and how long that took in seconds.
async fn enroll(options: &BenchOptions) -> Result<(Fleet, f64), SimError> {
    if options.devices == 0 {
        return Err(SimError::InvalidArgument(
            "bench needs at least one device".into(),
        ));
    }
    let config = SimConfig {
        ca_pem: options.ca_pem.clone(),
        ..SimConfig::default()
    };
    let mut fleet = Fleet::new();
    fleet.add_random(&config, options.devices)?;
    // The keys are made first, on every core: this benchmark measures the server, not RSA key generation.
    let count = fleet.unenrolled();
    let keys = tokio::task::spawn_blocking(move || KeyPool::generate(2048, count))
        .await
        .map_err(|e| SimError::Bench(format!("key generation: {e}")))??;
    let started = Instant::now();
    fleet
        .enroll_all(&options.enrollment_url, options.concurrency, &keys)
        .await?;
    Ok((fleet, started.elapsed().as_secs_f64()))
}

/// Writes `signal` (with `content`), then waits until `wait_for` exists.
async fn handshake_step(
    signal: &std::path::Path,
    wait_for: &std::path::Path,
    content: &str,
) -> Result<(), SimError> {
    std::fs::write(signal, content)
        .map_err(|e| SimError::InvalidArgument(format!("{}: {e}", signal.display())))?;
    while !wait_for.exists() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Measures Idle round trips of the enrolled devices of an existing fleet for `duration`.
pub async fn measure(fleet: &mut Fleet, options: &BenchOptions) -> Result<BenchReport, SimError> {
    let (duration, concurrency, new_connections, sign_each_request) = (
        options.duration,
        options.concurrency,
        options.new_connections,
        options.sign_each_request,
    );
    fleet.share_clients(!new_connections)?;
    let (enrolled, others): (Vec<SimDevice>, Vec<SimDevice>) = std::mem::take(&mut fleet.devices)
        .into_iter()
        .partition(|d| d.state.enrolled);
    fleet.devices = others;
    if enrolled.is_empty() {
        return Err(SimError::InvalidArgument(
            "no enrolled device to measure".into(),
        ));
    }
    let device_count = enrolled.len();
    let workers = concurrency.clamp(1, device_count);
    let group_size = device_count.div_ceil(workers);

    let mut groups = Vec::with_capacity(workers);
    let mut rest = enrolled;
    while !rest.is_empty() {
        let tail = rest.split_off(group_size.min(rest.len()));
        groups.push(rest);
        rest = tail;
    }

    // Pinned now, not at start-up: the server may have started threads (and PostgreSQL backends) since.
    options.cpu.pin()?;
    let cpu_before = options.cpu.sample()?;
    let started = Instant::now();
    let deadline = started + duration;
    let handles: Vec<_> = groups
        .into_iter()
        .map(|group| tokio::spawn(worker(group, deadline, sign_each_request)))
        .collect();
    let mut stats = WorkerStats::default();
    let mut join_error = None;
    for handle in handles {
        match handle.await {
            Ok((group, worker_stats)) => {
                fleet.devices.extend(group);
                stats.merge(worker_stats);
            }
            Err(e) => join_error = Some(e.to_string()),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = options.cpu.sample()?.since(&cpu_before);
    if let Some(e) = join_error {
        return Err(SimError::InvalidArgument(format!("bench worker died: {e}")));
    }
    stats.latencies.sort_unstable();
    let round_trips = stats.latencies.len() as u64;
    Ok(BenchReport {
        devices: device_count,
        enroll_seconds: 0.0,
        concurrency: workers,
        new_connections,
        round_trips,
        commands_answered: stats.commands,
        errors: stats.errors,
        first_error: stats.first_error,
        seconds,
        round_trips_per_second: if seconds > 0.0 {
            round_trips as f64 / seconds
        } else {
            0.0
        },
        p50: percentile(&stats.latencies, 50.0),
        p90: percentile(&stats.latencies, 90.0),
        p99: percentile(&stats.latencies, 99.0),
        max: stats.latencies.last().copied().unwrap_or_default(),
        cpu,
    })
}

#[derive(Default)]
struct WorkerStats {
    latencies: Vec<Duration>,
    commands: u64,
    errors: u64,
    first_error: Option<String>,
}

impl WorkerStats {
    fn merge(&mut self, other: WorkerStats) {
        self.latencies.extend(other.latencies);
        self.commands += other.commands;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Cycles through its devices until the deadline, one session at a time.
async fn worker(
    mut group: Vec<SimDevice>,
    deadline: Instant,
    sign_each_request: bool,
) -> (Vec<SimDevice>, WorkerStats) {
    let mut stats = WorkerStats::default();
    let presigned: Vec<Option<(Vec<u8>, String)>> = group
        .iter()
        .map(|d| {
            if sign_each_request {
                None
            } else {
                d.signed_idle().ok()
            }
        })
        .collect();
    let mut index = 0_usize;
    while Instant::now() < deadline && !group.is_empty() {
        let slot = index % group.len();
        index = index.wrapping_add(1);
        let (Some(device), Some(signed)) = (group.get_mut(slot), presigned.get(slot)) else {
            break;
        };
        let started = Instant::now();
        let result = match signed {
            Some(signed) => device.poll_with_signed_idle(signed).await,
            None => device.poll().await,
        };
        match result {
            Ok(summary) => {
                stats.latencies.push(started.elapsed());
                stats.commands += summary.handled.len() as u64;
            }
            Err(e) => {
                stats.errors += 1;
                stats.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    (group, stats)
}

/// The `p`th percentile (nearest rank) of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.saturating_sub(1).min(sorted.len() - 1);
    sorted.get(index).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
        assert_eq!(
            percentile(&[Duration::from_millis(3)], 99.0),
            Duration::from_millis(3)
        );
    }

    #[tokio::test]
    async fn measuring_an_unenrolled_fleet_is_an_error() {
        let mut fleet = Fleet::new();
        fleet.add_random(&SimConfig::default(), 2).unwrap();
        let options = BenchOptions {
            duration: Duration::from_millis(10),
            concurrency: 4,
            ..BenchOptions::default()
        };
        let result = measure(&mut fleet, &options).await;
        assert!(matches!(result, Err(SimError::InvalidArgument(_))));
        assert_eq!(fleet.len(), 2, "devices are given back");
    }
}
