//! Issue 16, point 5 (fault harness): `kill -9` in the middle of a push-all, then nothing lost or repeated.
//!
//! Simulated iPads reach Orchard through a load balancer (orchard_testkit's `Balancer`, which the enrollment
//! profile's ServerURL names) and run a command session only when the local APNs server wakes them, or to try
//! again after a session broke (as an iPad does). One DeviceInformation is queued for every iPad through the
//! bulk command API; once some but not all results are stored, a node is killed with SIGKILL:
//! - PostgreSQL: two `orchard serve` nodes on one database (same KEK), one of them killed; the balancer sends
//!   the iPads to the other, which also takes over the killed node's push claims when their lease runs out.
//! - SQLite: the single node killed and started again on the same data directory and address.
//!
//! Then, once every result is stored (a bounded wait), the outcome is checked from the database and from the
//! devices' own logs: every command ran exactly once on its device, every result is stored once, nothing is
//! left pending. `ORCHARD_FAULT_DEVICES` sets the fleet size.

mod fault_harness;

use anyhow::{ensure, Result};
use fault_harness::Harness;
use orchard_testkit::Backend;

async fn kill_mid_push_all(backend: Backend) -> Result<()> {
    let Some(mut harness) = Harness::start(backend, fault_harness::DEFAULT_DEVICES).await? else {
        return Ok(());
    };
    if backend == Backend::Postgres {
        harness.add_node().await?;
    }
    harness.enroll().await?;
    harness.push_all().await?;

    // Some results stored, not all: kill -9 now.
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

orchard_testkit::backend_tests! {
    kill_9_mid_push_all_loses_and_repeats_nothing => kill_mid_push_all [workers = 4];
}
