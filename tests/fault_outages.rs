//! Issue 16, point 5 (fault harness): Apple's push service fails for a while during a push-all, then comes
//! back; the push-all finishes and nothing is done twice.
//!
//! One DeviceInformation is queued for every simulated iPad while the local APNs server answers every push with
//! 500, then with 429 and `Retry-After`, then refuses connections (the balancer in front of it takes no node and
//! the open connection is dropped). During the outage no iPad is woken and no result is stored; once APNs is back
//! the pushes go out and the outcome is checked as after a kill: every command ran once on its device, every
//! result is stored once, nothing is left pending. Each phase lasts until the nodes have met it (bounded waits),
//! and at least `ORCHARD_FAULT_OUTAGE_SECONDS` (default 0) when set, for the minute-long outages of the issue.

mod fault_harness;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use fault_harness::Harness;
use orchard_apns::fake::{Fault, FaultScope};
use orchard_testkit::Backend;

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

orchard_testkit::backend_tests! {
    apns_outage_then_every_result_once => apns_outage [workers = 4];
}
