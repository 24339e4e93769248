//! Issue 16, point 5 (fault harness): Apple's services fail for a while, then come back; the work finishes and
//! nothing is done twice.
//!
//! APNs, during a push-all:
//! One DeviceInformation is queued for every simulated iPad while the local APNs server answers every push with
//! 500, then with 429 and `Retry-After`, then refuses connections (the balancer in front of it takes no node and
//! the open connection is dropped). During the outage no iPad is woken and no result is stored; once APNs is back
//! the pushes go out and the outcome is checked as after a kill: every command ran once on its device, every
//! result is stored once, nothing is left pending. Each phase lasts until the nodes have met it (bounded waits),
//! and at least `ORCHARD_FAULT_OUTAGE_SECONDS` (default 0) when set, for the minute-long outages of the issue.
//!
//! The Device Assignment (DEP) service, during a sync: 503s past the client's retries fail every sync tried during
//! the outage (at least `ORCHARD_FAULT_OUTAGE_SECONDS`, a sync every 5 s; the token keeps the error, the stored
//! devices do not change), a 429 whose Retry-After is too long to wait out fails it at once, then a few 429s with a
//! short Retry-After are waited out and the sync completes; on PostgreSQL two nodes then sync the same token at
//! once. Every device is stored once.
//!
//! Apps and Books, during a licence sync: 503s past the client's retries (for at least
//! `ORCHARD_FAULT_OUTAGE_SECONDS`, a sync every 5 s, the stored apps unchanged) and a too-long Retry-After fail the
//! sync, a 503 in the middle of the pages and short 429s are retried; the apps and their counts then match
//! Apple's, on PostgreSQL also after two nodes sync at once.

mod fault_harness;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use fault_harness::Harness;
use orchard_apns::fake::{Fault, FaultScope};
use orchard_dep::fake::{FakeDepConfig, FakeDepServer};
use orchard_testkit::apple::{AppleDep, AppleVpp};
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::Role;
use orchard_vpp::fake::FakeVppConfig;
use serde_json::Value;

/// How long each phase of an outage lasts at least.
fn phase_minimum() -> Result<Duration> {
    match std::env::var("ORCHARD_FAULT_OUTAGE_SECONDS") {
        Ok(v) => {
            Ok(Duration::from_secs(v.parse().with_context(|| {
                format!("ORCHARD_FAULT_OUTAGE_SECONDS={v}")
            })?))
        }
        Err(_) => Ok(Duration::ZERO),
    }
}

/// Waits (bounded) until `reached` holds and the phase has lasted `minimum`.
async fn phase(what: &str, minimum: Duration, reached: impl Fn() -> bool) -> Result<()> {
    let started = Instant::now();
    let deadline = started + minimum + Duration::from_secs(300);
    while !(reached() && started.elapsed() >= minimum) {
        if Instant::now() > deadline {
            bail!("{what}: not reached within the bound");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn apns_outage(backend: Backend) -> Result<()> {
    let Some(mut harness) = Harness::start(backend, 60).await? else {
        return Ok(());
    };
    if backend == Backend::Postgres {
        harness.add_node().await?;
    }
    harness.enroll().await?;
    let minimum = phase_minimum()?;
    let apns = &harness.apple.apns;
    let delivered_before = apns.delivered_count();

    // 500 for every push: the nodes back off and keep the pushes owed.
    apns.inject_always(FaultScope::AllTokens, Fault::InternalServerError);
    harness.push_all().await?;
    let apns = &harness.apple.apns;
    let rejected = apns.stats().rejected;
    phase("pushes answered 500", minimum, || {
        apns.stats().rejected > rejected
    })
    .await?;

    // 429 with Retry-After: the nodes wait as asked, then try again.
    apns.clear_faults();
    apns.inject_always(
        FaultScope::AllTokens,
        Fault::TooManyRequests {
            retry_after_seconds: Some(1),
        },
    );
    let rejected = apns.stats().rejected;
    phase("pushes answered 429 twice", minimum, || {
        apns.stats().rejected >= rejected + 2
    })
    .await?;

    // Connections refused: the balancer in front of APNs takes none, and the open ones are dropped.
    apns.clear_faults();
    harness.apns_balancer.set_backends(&[])?;
    apns.inject_always(FaultScope::AllTokens, Fault::DropConnection);
    let refused = harness.apns_balancer.refused();
    let apns_balancer = &harness.apns_balancer;
    phase("connections to APNs refused", minimum, || {
        apns_balancer.refused() > refused
    })
    .await?;
    ensure!(
        apns.delivered_count() == delivered_before,
        "a push was delivered during the outage"
    );
    let stored_during_outage = harness.stored().await?;
    ensure!(
        stored_during_outage == 0,
        "{stored_during_outage} results stored while no iPad could be woken"
    );

    // APNs is back.
    let apns = &harness.apple.apns;
    apns.clear_faults();
    let url = apns.url().to_owned();
    harness.apns_balancer.set_backends(&[&url])?;
    let summary = harness.check_exactly_once().await?;
    eprintln!(
        "fault_outages {summary}; {} connections to APNs refused during the outage",
        harness.apns_balancer.refused()
    );
    Ok(())
}

/// DEP devices stored, and distinct serial numbers among them.
async fn dep_device_counts(server: &TestServer) -> Result<(i64, i64)> {
    let mut db = server.connect_database().await?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dep_devices")
        .fetch_one(&mut db)
        .await?;
    let distinct: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT serial_number) FROM dep_devices")
        .fetch_one(&mut db)
        .await?;
    Ok((total, distinct))
}

/// `POST /api/v1/dep-tokens/{id}/sync` on the node at `base`.
async fn sync_on(server: &TestServer, base: &str, id: &str) -> Result<(u16, Value)> {
    let response = server
        .http
        .post(format!("{base}/api/v1/dep-tokens/{id}/sync"))
        .bearer_auth(&server.token)
        .json(&serde_json::json!({}))
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

const DEP_DEVICES: usize = 1_200;

async fn dep_outage(backend: Backend) -> Result<()> {
    let dep = AppleDep::start(FakeDepConfig::default()).await?;
    dep.server
        .add_devices(&FakeDepServer::make_serials("OUT", 0, DEP_DEVICES));
    let mut args = dep.serve_args();
    args.extend(["--dep-sync-minutes".to_owned(), "0".to_owned()]);
    let Some(server) = TestServer::start_with(backend, &args).await? else {
        return Ok(());
    };
    let (id, _) = server.upload_dep_token(&dep.server, "outage").await?;

    // 503 for longer than the client retries: every sync fails, the token says why, nothing half-stored. The
    // outage lasts at least `ORCHARD_FAULT_OUTAGE_SECONDS`, syncs tried every few seconds all along.
    let minimum = phase_minimum()?;
    let outage_started = Instant::now();
    dep.server.inject_server_errors(u32::MAX);
    let before_outage = dep_device_counts(&server).await?;
    let mut failed_syncs = 0;
    let outage_status = loop {
        let (status, body) = sync_on(&server, &server.base_url, &id).await?;
        ensure!(status != 200, "a sync during an outage succeeded: {body}");
        failed_syncs += 1;
        let during = dep_device_counts(&server).await?;
        ensure!(
            during == before_outage,
            "the DEP devices changed during the outage: {before_outage:?} → {during:?}"
        );
        if outage_started.elapsed() >= minimum {
            break status;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    let outage_seconds = outage_started.elapsed().as_secs_f64();
    let tokens = server.get("/api/v1/dep-tokens").await?;
    ensure!(
        tokens["items"][0]["last_sync_error"].is_string(),
        "the failed sync is not recorded: {tokens}"
    );
    // A Retry-After longer than the client waits fails the sync at once.
    dep.server.inject_server_errors(0);
    dep.server.inject_rate_limit(1, 3_600);
    let (throttled_status, body) = sync_on(&server, &server.base_url, &id).await?;
    ensure!(
        throttled_status != 200,
        "a rate-limited sync succeeded: {body}"
    );

    // Apple is back, still throttling a little: the short waits are waited out.
    dep.server.inject_rate_limit(2, 1);
    let summary = server
        .post(
            &format!("/api/v1/dep-tokens/{id}/sync"),
            serde_json::json!({}),
        )
        .await?;
    ensure!(
        summary["active_devices"] == DEP_DEVICES as u64,
        "after the outage: {summary}"
    );
    let (total, distinct) = dep_device_counts(&server).await?;
    ensure!(
        total == DEP_DEVICES as i64 && distinct == total,
        "{total} DEP rows, {distinct} serials"
    );

    // Two nodes sync the same token at once: still every device once.
    if backend == Backend::Postgres {
        let dir = tempfile::tempdir()?;
        let mut extra = args.clone();
        extra.extend([
            "--kek-file".to_owned(),
            server.kek_path().display().to_string(),
        ]);
        let node = server.start_node_in(dir.path(), &extra).await?;
        let (first, second) = tokio::join!(
            sync_on(&server, &server.base_url, &id),
            sync_on(&server, &node.base_url, &id)
        );
        let (first, second) = (first?, second?);
        ensure!(
            first.0 == 200 && second.0 == 200,
            "concurrent syncs: {first:?} {second:?}"
        );
        let (total, distinct) = dep_device_counts(&server).await?;
        ensure!(
            total == DEP_DEVICES as i64 && distinct == total,
            "after two nodes synced: {total} DEP rows, {distinct} serials"
        );
    }
    let tokens = server.get("/api/v1/dep-tokens").await?;
    ensure!(
        tokens["items"][0]["last_sync_error"].is_null(),
        "the error stays after a good sync: {tokens}"
    );
    eprintln!(
        "fault_outages DEP {backend:?}: {failed_syncs} syncs refused during the {outage_seconds:.0} s outage \
         ({outage_status}) and under a long Retry-After ({throttled_status}), then {DEP_DEVICES} devices stored once"
    );
    Ok(())
}

/// `method path` with `token` on the node at `base`.
async fn call_on(
    server: &TestServer,
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
) -> Result<(u16, Value)> {
    let response = server
        .http
        .request(method, format!("{base}{path}"))
        .bearer_auth(token)
        .json(&serde_json::json!({}))
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// Every app of the tenant as stored: adam id → (total, assigned, available).
async fn stored_apps(server: &TestServer) -> Result<Vec<(String, (i64, i64, i64))>> {
    use sqlx::Row;
    let mut db = server.connect_database().await?;
    let rows = sqlx::query(
        "SELECT adam_id, total_count, assigned_count, available_count FROM vpp_assets ORDER BY adam_id",
    )
    .fetch_all(&mut db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<String, _>("adam_id")?,
                (
                    r.try_get::<i64, _>("total_count")?,
                    r.try_get::<i64, _>("assigned_count")?,
                    r.try_get::<i64, _>("available_count")?,
                ),
            ))
        })
        .collect()
}

const VPP_APPS: usize = 10;

async fn apps_outage(backend: Backend) -> Result<()> {
    let vpp = AppleVpp::start(FakeVppConfig {
        pending_polls: 0,
        page_size: 2,
        ..FakeVppConfig::default()
    })
    .await?;
    let fake = &vpp.server;
    let args = vpp.serve_args();
    let Some(server) = TestServer::start_with(backend, &args).await? else {
        return Ok(());
    };
    let tenant = server.create_tenant("Physics", "phys").await?;
    let admin = server.create_token(Role::Admin, Some(&tenant), "physics-admin")?;
    let location = fake.add_location("Physics Library");
    let adam_ids: Vec<String> = (0..VPP_APPS).map(|i| format!("36130{i:04}")).collect();
    for (i, id) in adam_ids.iter().enumerate() {
        fake.add_asset(&location, id, 5 + i as i64, true);
    }
    fault_harness::upload_apps_token(&server, &admin, &tenant, &location).await?;
    let sync_path = format!("/api/v1/tenants/{tenant}/apps/sync");
    // One sync as the department admin: (status, body).
    let sync = || {
        call_on(
            &server,
            &server.base_url,
            &admin,
            reqwest::Method::POST,
            &sync_path,
        )
    };
    let expected = |apps: &[(String, (i64, i64, i64))]| -> Result<()> {
        ensure!(apps.len() == VPP_APPS, "{} apps stored", apps.len());
        for (id, counts) in apps {
            ensure!(
                Some(*counts) == fake.counts(&location, id),
                "{id}: stored {counts:?}, apple {:?}",
                fake.counts(&location, id)
            );
        }
        Ok(())
    };
    expected(&stored_apps(&server).await?)?;
    // Apple changes counts, then fails: 503 for every try of the first request, then a long Retry-After.
    for id in &adam_ids {
        fake.set_total(&location, id, 20);
    }
    // The outage lasts at least `ORCHARD_FAULT_OUTAGE_SECONDS`, syncs tried every few seconds all along, each
    // failing past the client's retries and changing nothing.
    let minimum = phase_minimum()?;
    let outage_started = Instant::now();
    let before_outage = stored_apps(&server).await?;
    // More 503s than any outage here uses up; cleared when Apple is back.
    fake.inject_fault(503, None, 100_000);
    let mut failed_syncs = 0;
    let outage_status = loop {
        let (status, body) = sync().await?;
        ensure!(status != 200, "a sync during the outage succeeded: {body}");
        failed_syncs += 1;
        ensure!(
            stored_apps(&server).await? == before_outage,
            "the stored apps changed during the outage"
        );
        if outage_started.elapsed() >= minimum {
            break status;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    let outage_seconds = outage_started.elapsed().as_secs_f64();
    fake.clear_faults();
    fake.inject_fault(429, Some(3_600), 1);
    let (throttled_status, body) = sync().await?;
    ensure!(
        throttled_status != 200,
        "a sync under a long Retry-After succeeded: {body}"
    );

    // Back, with a 503 in the middle of the pages and short 429s: retried, and the sync completes.
    fake.inject_fault_after(2, 503, None);
    fake.inject_fault(429, Some(1), 2);
    let (status, body) = sync().await?;
    ensure!(status == 200, "sync after the outage → {status}: {body}");
    expected(&stored_apps(&server).await?)?;

    if backend == Backend::Postgres {
        let dir = tempfile::tempdir()?;
        let mut extra = args.clone();
        extra.extend([
            "--kek-file".to_owned(),
            server.kek_path().display().to_string(),
        ]);
        let node = server.start_node_in(dir.path(), &extra).await?;
        for id in &adam_ids {
            fake.set_total(&location, id, 30);
        }
        let (first, second) = tokio::join!(
            call_on(
                &server,
                &server.base_url,
                &admin,
                reqwest::Method::POST,
                &sync_path
            ),
            call_on(
                &server,
                &node.base_url,
                &admin,
                reqwest::Method::POST,
                &sync_path
            )
        );
        let (first, second) = (first?, second?);
        ensure!(
            first.0 == 200 && second.0 == 200,
            "concurrent syncs: {first:?} {second:?}"
        );
        expected(&stored_apps(&server).await?)?;
    }
    eprintln!(
        "fault_outages Apps and Books {backend:?}: {failed_syncs} syncs refused during the {outage_seconds:.0} s \
         outage ({outage_status}) and under a long Retry-After ({throttled_status}); after it {VPP_APPS} apps stored \
         with Apple's counts"
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    apns_outage_then_every_result_once => apns_outage [workers = 4];
    dep_outage_then_every_device_once => dep_outage;
    apps_outage_then_counts_match => apps_outage;
}
