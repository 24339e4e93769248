//! Issue 16, point 5 (fault harness): PostgreSQL crashes and comes back in the middle of a push-all on two
//! nodes; the nodes reconnect and nothing is lost or repeated.
//!
//! The database server is a private cluster of this test (orchard_testkit's `PostgresCluster`): the shared one
//! serves every test running in parallel and must not be restarted. Once some but not all results are stored,
//! the cluster is stopped the hard way (`pg_ctl stop -m immediate`: every backend killed, no checkpoint) and
//! started again, which recovers from its write-ahead log. Requests that meet the dead database fail (the iPads
//! try again, sending first the report whose answer they never got); then the outcome is checked as after a
//! kill: every command ran once on its device, every result is stored once, nothing is left pending.
//! PostgreSQL only: SQLite has no server to restart (its node's kill -9 is tests/fault_kill.rs).

mod fault_harness;

use anyhow::{ensure, Result};
use fault_harness::Harness;
use orchard_testkit::postgres_cluster::PostgresCluster;
use orchard_testkit::TestDatabase;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_crash_mid_push_all_loses_and_repeats_nothing() -> Result<()> {
    orchard_testkit::install_crypto_provider();
    if std::env::var(orchard_testkit::database::SKIP_POSTGRES_VAR).as_deref() == Ok("1") {
        eprintln!("PostgreSQL skipped on purpose");
        return Ok(());
    }
    // Declared first, so it is dropped last: the test database is dropped on it.
    let cluster = PostgresCluster::start()?;
    let database = TestDatabase::create_postgres_on(&cluster.admin_url()).await?;
    let mut harness = Harness::start_on(database, 80).await?;
    harness.add_node().await?;
    harness.enroll().await?;
    harness.push_all().await?;

    let devices = harness.devices;
    harness
        .wait_stored((devices / 3).max(1), "a third of the results stored")
        .await?;
    let stored_at_crash = harness.stored().await?;
    tokio::task::block_in_place(|| cluster.crash_and_restart())?;
    ensure!(
        stored_at_crash < devices,
        "the push-all finished before the crash ({stored_at_crash} of {devices}): the fault hit nothing"
    );
    // The test's own connection died with the server.
    harness.reconnect().await?;
    let summary = harness.check_exactly_once().await?;
    eprintln!(
        "fault_database {summary}; {stored_at_crash} results were stored when PostgreSQL crashed"
    );
    Ok(())
}
