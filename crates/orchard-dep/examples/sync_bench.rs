//! Benchmark: a full fetch of 50,000 devices from the local DEP server over TLS (pages of 1,000, no added
//! latency), with a no-op sink standing in for the caller's per-page work.
//!
//! `cargo run --release -p orchard-dep --features fake --example sync_bench [devices]`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Instant;

use orchard_dep::fake::{FakeDepConfig, FakeDepServer};
use orchard_dep::sync::FnSink;
use orchard_dep::DepClient;
use orchard_types::SystemClock;

#[tokio::main]
async fn main() {
    let devices: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(50_000);
    let server = FakeDepServer::start(FakeDepConfig::default())
        .await
        .unwrap();
    server.add_devices(&FakeDepServer::make_serials("B", 1, devices));
    let client = DepClient::new(
        server.client_config(),
        server.server_token(),
        Arc::new(SystemClock),
    )
    .unwrap();

    let mut runs = Vec::new();
    for run in 1..=3 {
        // The caller's per-page work; here nothing.
        let mut sink = FnSink(|_page: &orchard_dep::DevicePage| Ok(()));
        let started = Instant::now();
        let outcome = client.sync(None, &mut sink).await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(outcome.records as usize, devices);
        println!(
            "run {run}: full fetch of {} devices in {} pages: {:.3} s ({:.0} devices/s)",
            outcome.records,
            outcome.pages,
            elapsed.as_secs_f64(),
            outcome.records as f64 / elapsed.as_secs_f64()
        );
        runs.push(elapsed.as_secs_f64());
    }
    let best = runs.iter().cloned().fold(f64::INFINITY, f64::min);
    println!(
        "best of 3: {best:.3} s (goal <= 1.5 s; first run includes the TLS handshake and /session)"
    );
    server.shutdown().await;
}
