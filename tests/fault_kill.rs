//! Issue 16, point 5 (fault harness): `kill -9` in the middle of a push-all, then nothing lost or repeated.
//!
//! Simulated iPads reach Orchard through a load balancer (orchard_testkit's `Balancer`, which the enrollment
//! profile's ServerURL names) and run a command session only when the local APNs server wakes them, or to try
//! again after a session broke (as an iPad does). One DeviceInformation is queued for every iPad through the
//! bulk command API; once some but not all results are stored, a node is killed with SIGKILL:
//! - PostgreSQL: two `orchard serve` nodes on one database (same KEK; `ORCHARD_FAULT_NODES` for more), one of them
//!   killed; the balancer sends the iPads to the others, which also take over the killed node's push claims when
//!   their lease runs out.
//! - SQLite: the single node killed and started again on the same data directory and address.
//!
//! Then, once every result is stored (a bounded wait), the outcome is checked from the database and from the
//! devices' own logs: every command ran exactly once on its device, every result is stored once, nothing is
//! left pending. `ORCHARD_FAULT_DEVICES` sets the fleet size.
//!
//! Also here: a node stopped the graceful way (SIGTERM) releases its job lease at once and answers the device
//! request it is in the middle of.

mod fault_harness;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use fault_harness::Harness;
use orchard_sim::SimDevice;
use orchard_testkit::apple::AppleVpp;
use orchard_testkit::balancer::Balancer;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::Role;
use orchard_vpp::fake::FakeVppConfig;
use sqlx::Row;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Nodes on PostgreSQL: `ORCHARD_FAULT_NODES` (2 to 3 and more), 2 by default.
fn node_count() -> Result<usize> {
    let nodes = match std::env::var("ORCHARD_FAULT_NODES") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("ORCHARD_FAULT_NODES={v}"))?,
        Err(_) => 2,
    };
    ensure!(
        nodes >= 2,
        "ORCHARD_FAULT_NODES={nodes}: one node must survive the kill"
    );
    Ok(nodes)
}

async fn kill_mid_push_all(backend: Backend) -> Result<()> {
    let Some(mut harness) = Harness::start(backend, fault_harness::DEFAULT_DEVICES).await? else {
        return Ok(());
    };
    if backend == Backend::Postgres {
        for _ in 1..node_count()? {
            harness.add_node().await?;
        }
    }
    harness.enroll().await?;
    harness.push_all().await?;

    // Some results stored, not all: kill -9 now (the last node added).
    let devices = harness.devices;
    harness
        .wait_stored((devices / 3).max(1), "a third of the results stored")
        .await?;
    let stored_at_kill = harness.stored().await?;
    match harness.nodes.pop() {
        Some(node) => drop(node),
        None => {
            let extra = harness.extra.clone();
            harness.server.restart(&extra).await?;
        }
    }
    ensure!(
        stored_at_kill < devices,
        "the push-all finished before the kill ({stored_at_kill} of {devices}): the fault hit nothing"
    );
    let summary = harness.check_exactly_once().await?;
    eprintln!(
        "fault_kill {summary}; {stored_at_kill} results were stored when the node was killed"
    );
    Ok(())
}

/// The Apps and Books sync job's lease as the database has it: (owner, lease until, last error).
async fn apps_sync_lease(
    server: &TestServer,
) -> Result<(Option<String>, Option<i64>, Option<String>)> {
    let mut db = server.connect_database().await?;
    let row = sqlx::query(
        "SELECT lease_owner, lease_until, last_error FROM job_runs WHERE name = 'apps-sync'",
    )
    .fetch_optional(&mut db)
    .await?;
    Ok(match row {
        Some(row) => (
            row.try_get("lease_owner")?,
            row.try_get("lease_until")?,
            row.try_get("last_error")?,
        ),
        None => (None, None, None),
    })
}

/// Waits (bounded) until `done` holds.
async fn until<F, Fut>(what: &str, mut done: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !done().await? {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within the bound"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Issue 16, point 1: SIGTERM (how systemd and Kubernetes stop a node) while the node holds a job lease and
/// answers a device. The node holds the Apps and Books sync's cluster lease, its sync stuck on an Apple that
/// accepts connections and never answers; a device's report is on its way (its headers read, the server
/// asked for the body with `100 Continue`). After SIGTERM: the lease is released at once, from the database's
/// view (not left for its expiry minutes later, when another node could take the job over), while the device's
/// request is still unanswered; the node stops taking connections; the device's report, sent after all that,
/// is answered 200; then the node exits cleanly.
async fn graceful_shutdown(backend: Backend) -> Result<()> {
    let vpp = AppleVpp::start(FakeVppConfig {
        pending_polls: 0,
        ..FakeVppConfig::default()
    })
    .await?;
    // Apple's Apps and Books service is reached through a proxy the test can point at a black hole.
    let apple = Balancer::start().await?;
    apple.set_backends(&[vpp.server.base_url()])?;
    let mut args = Vec::new();
    for pair in vpp.serve_args().chunks(2) {
        match pair {
            [flag, _] if flag == "--apps-url" => {
                args.extend([flag.clone(), format!("{}/mdm/v2", apple.url())])
            }
            // Hourly: the job's next run is the one this test starts.
            [flag, _] if flag == "--apps-sync-minutes" => args.extend([flag.clone(), "60".into()]),
            other => args.extend(other.iter().cloned()),
        }
    }
    let Some(mut server) = TestServer::start_with(backend, &args).await? else {
        return Ok(());
    };
    let tenant = server.create_tenant("Physics", "phys").await?;
    let admin = server.create_token(Role::Admin, Some(&tenant), "physics-admin")?;
    let location = vpp.server.add_location("Physics Library");
    vpp.server.add_asset(&location, "361309999", 5, true);
    fault_harness::upload_apps_token(&server, &admin, &tenant, &location).await?;
    let link = server.enrollment_link(&tenant, None).await?;
    let mut device = SimDevice::new_random(&server.sim_config());
    device.enroll(&link).await?;
    device.poll().await?;

    // Apple goes silent: connections are accepted and never answered.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hole_address = hole.local_addr()?;
    let swallowed = Arc::new(AtomicUsize::new(0));
    let swallowing = swallowed.clone();
    let black_hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            swallowing.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    apple.set_backends(&[&format!("https://{hole_address}")])?;
    // The sync is due now: the restarted node claims it at start and gets stuck in it.
    {
        let mut db = server.connect_database().await?;
        sqlx::query("UPDATE job_runs SET last_started_at = 0 WHERE name = 'apps-sync'")
            .execute(&mut db)
            .await?;
    }
    let restart_args = args.clone();
    server.restart(&restart_args).await?;
    until(
        "the restarted node holds the apps-sync lease, its sync stuck",
        || async {
            let (owner, _, _) = apps_sync_lease(&server).await?;
            Ok(owner.is_some() && swallowed.load(Ordering::SeqCst) > 0)
        },
    )
    .await?;

    // A device's report on its way: the server has read its headers and asks for the body.
    let (report, signature) = device.signed_idle()?;
    let address: std::net::SocketAddr = server
        .base_url
        .strip_prefix("https://")
        .context("https base url")?
        .parse()?;
    let mut request = device_connection(&server, address).await?;
    let head = format!(
        "PUT /mdm/command HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/x-apple-aspen-mdm\r\n\
         Mdm-Signature: {signature}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        report.len()
    );
    request.write_all(head.as_bytes()).await?;
    let interim = read_head(&mut request).await?;
    ensure!(
        interim.starts_with("HTTP/1.1 100"),
        "expected 100 Continue, got {interim:?}"
    );

    server.terminate()?;
    until("the lease released at SIGTERM", || async {
        Ok(apps_sync_lease(&server).await?.0.is_none())
    })
    .await?;
    let (_, _, last_error) = apps_sync_lease(&server).await?;
    ensure!(
        last_error.as_deref() == Some(orchard_core::jobs::INTERRUPTED_BY_SHUTDOWN),
        "the interrupted run is recorded: {last_error:?}"
    );
    // Draining: no new connections (a load balancer sends them to the other nodes).
    until("the listener closed", || async {
        Ok(tokio::net::TcpStream::connect(address).await.is_err())
    })
    .await?;

    // The device's report, sent only now, is still answered.
    request.write_all(&report).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), request.read_to_end(&mut answer))
        .await
        .context("no answer to the in-flight request")??;
    let answer = String::from_utf8_lossy(&answer);
    ensure!(
        answer.starts_with("HTTP/1.1 200"),
        "the in-flight request was not answered: {answer:?}"
    );
    let exit = server.wait_exit(Duration::from_secs(60)).await?;
    ensure!(
        exit.success(),
        "orchard serve exited with {exit} after SIGTERM"
    );
    black_hole.abort();
    eprintln!("graceful shutdown {backend:?}: lease released at SIGTERM, the in-flight report answered 200");
    Ok(())
}

/// A TLS connection to the node, trusting its CA, speaking HTTP/1.1.
async fn device_connection(
    server: &TestServer,
    address: std::net::SocketAddr,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let config = orchard_testkit::device_tls_config(&server.ca_pem)?;
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let name = rustls::pki_types::ServerName::IpAddress(address.ip().into());
    Ok(tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?)
}

/// Reads one response head (up to the blank line).
async fn read_head(stream: &mut (impl AsyncReadExt + Unpin)) -> Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut byte))
            .await
            .context("no response head")??;
        ensure!(
            n == 1,
            "connection closed in the response head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

orchard_testkit::backend_tests! {
    kill_9_mid_push_all_loses_and_repeats_nothing => kill_mid_push_all [workers = 4];
    sigterm_releases_job_leases_at_once_and_finishes_device_requests => graceful_shutdown [workers = 4];
}
