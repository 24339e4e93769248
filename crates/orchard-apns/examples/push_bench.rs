//! Push throughput: 50,000 distinct device tokens pushed through `ApnsClient` to the local APNs server, in one
//! process, over real TLS 1.3 + HTTP/2 with client certificates. Run in release:
//!
//! ```text
//! cargo run --release -p orchard-apns --features fake --example push_bench
//! ```
//!
//! Environment knobs: `PUSH_BENCH_TOKENS` (50000), `PUSH_BENCH_CONNECTIONS` (2), `PUSH_BENCH_IN_FLIGHT` (2000),
//! `PUSH_BENCH_WORKERS` (runtime threads; all cores by default). Client and server share the cores, so the
//! figure is a lower bound for the client alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchard_apns::fake::{issue_push_certificate, random_topic, FakeApnsConfig, FakeApnsServer};
use orchard_apns::{ApnsClient, DeviceToken, PushOutcome};
use orchard_pki::CertificateAuthority;
use orchard_types::{Clock, PushMagic, SystemClock};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU seconds of this process so far (Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / 100.0)
}

fn main() {
    let tokens_total = env_or("PUSH_BENCH_TOKENS", 50_000);
    let connections = env_or("PUSH_BENCH_CONNECTIONS", 2);
    let in_flight = env_or("PUSH_BENCH_IN_FLIGHT", 2000);
    let workers = env_or(
        "PUSH_BENCH_WORKERS",
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(tokens_total, connections, in_flight, workers));
}

async fn run(tokens_total: usize, connections: usize, in_flight: usize, workers: usize) {
    let now = SystemClock.now();
    let apple_ca = CertificateAuthority::generate("Fake Apple Push CA", now, 365).unwrap();
    let topic = random_topic().unwrap();
    let certificate = issue_push_certificate(
        &apple_ca,
        &topic,
        now.plus_seconds(-3600),
        now.plus_seconds(86_400),
    )
    .unwrap();
    let mut server_config = FakeApnsConfig::new(&apple_ca.cert_pem());
    server_config.record_limit = 0;
    let server = FakeApnsServer::start_with(server_config).await.unwrap();
    let mut config = server.client_config();
    config.connections = connections;
    let client = ApnsClient::new(certificate, config, Arc::new(SystemClock)).unwrap();

    let work: Arc<Vec<(DeviceToken, PushMagic)>> = Arc::new(
        (0..tokens_total)
            .map(|i| {
                let mut bytes = [0u8; 32];
                bytes[..8].copy_from_slice(&(i as u64).to_be_bytes());
                (
                    DeviceToken::from_bytes(&bytes).unwrap(),
                    PushMagic::parse(&format!("{:08X}-4D3C-4B2A-9F8E-{:012X}", i, i)).unwrap(),
                )
            })
            .collect(),
    );

    // Warm up: every connection up before the clock starts.
    let warm = client.push(&work[0].0, &work[0].1).await;
    assert!(warm.is_delivered(), "{warm:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.status().ready < connections && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let delivered_before = server.delivered_count();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..in_flight.min(tokens_total).max(1) {
        let (client, work, next, failures) =
            (client.clone(), work.clone(), next.clone(), failures.clone());
        tasks.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some((token, magic)) = work.get(index) else {
                    break;
                };
                match client.push(token, magic).await {
                    PushOutcome::Delivered { .. } => {}
                    other => {
                        if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("push {index} not delivered: {other:?}");
                        }
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let cpu = cpu_before.zip(cpu_seconds()).map(|(a, b)| b - a);

    let delivered = server.delivered_count() - delivered_before;
    let rate = tokens_total as f64 / elapsed.as_secs_f64();
    println!("push_bench: {tokens_total} distinct tokens, {connections} HTTP/2 connections, {in_flight} in flight, {workers} runtime threads");
    println!(
        "push_bench: total {:.3} s, {:.0} pushes/s",
        elapsed.as_secs_f64(),
        rate
    );
    println!(
        "push_bench: delivered {delivered}, not delivered {}",
        failures.load(Ordering::Relaxed)
    );
    if let Some(cpu) = cpu {
        println!(
            "push_bench: process CPU {:.2} s (client + server), {:.1} µs CPU per push",
            cpu,
            cpu * 1e6 / tokens_total as f64
        );
    }
}
