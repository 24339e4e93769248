//! A queue that never blocks, against the real `orchard` binary with a simulated iPad, on SQLite and
//! PostgreSQL: a command the iPad's MDM client dies on (never answered) is handed out again in later sessions,
//! `--command-max-attempts` times, then marked failed with an ErrorChain saying so, and the commands queued
//! behind it go through. The resend delay, the push for an unanswered command and the history retention are
//! tested with an injected clock in crates/orchard-core/tests/queue_hygiene.rs.

use anyhow::{ensure, Context, Result};
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use serde_json::{json, Value};

const MAX_ATTEMPTS: usize = 3;

fn status_of(history: &[Value], request_type: &str) -> Option<String> {
    history
        .iter()
        .find(|c| c["request_type"] == request_type)
        .and_then(|c| c["status"].as_str().map(str::to_owned))
}

async fn a_poison_command_stops_blocking_after_max_attempts(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start_with(
        backend,
        &[
            "--command-max-attempts".into(),
            MAX_ATTEMPTS.to_string(),
            // Every later session may hand an unanswered command out again.
            "--command-resend-after-minutes".into(),
            "0".into(),
        ],
    )
    .await?
    else {
        return Ok(());
    };
    let tenant = server.create_tenant("Physics", "physics").await?;
    let mut ipads = server
        .enroll_devices(&server.sim_config(), &tenant, 1)
        .await?;
    let ipad = &mut ipads[0];
    let device = server.device_by_udid(&ipad.state.udid).await?;
    let id = device["id"].as_str().context("device id")?.to_owned();

    // The iPad dies on every DeviceLock; a Settings command waits behind it.
    ipad.crash_on("DeviceLock");
    let path = format!("/api/v1/devices/{id}/commands");
    for body in [
        json!({"type": "DeviceLock", "message": "Return to the physics office"}),
        json!({"type": "DeviceInformation", "queries": ["DeviceName"]}),
    ] {
        let (status, v) = server
            .api(&server.token, reqwest::Method::POST, &path, Some(body))
            .await?;
        ensure!(status == 201, "queue: {status} {v}");
    }

    for attempt in 1..=MAX_ATTEMPTS {
        let session = ipad.poll().await?;
        ensure!(
            session.handled.is_empty(),
            "attempt {attempt}: the device answered something: {session:?}"
        );
        let history = server.commands_of(&id).await?;
        ensure!(
            status_of(&history, "DeviceLock").as_deref() == Some("sent"),
            "attempt {attempt}: {history:?}"
        );
        // Blocked: the command behind it has not gone out.
        ensure!(
            status_of(&history, "DeviceInformation").as_deref() == Some("queued"),
            "attempt {attempt}: {history:?}"
        );
    }

    // The next session gives the poison command up and the channel moves on.
    let session = ipad.poll().await?;
    ensure!(
        session
            .handled
            .iter()
            .any(|h| h.request_type == "DeviceInformation"),
        "{session:?}"
    );
    let history = server.commands_of(&id).await?;
    let lock = history
        .iter()
        .find(|c| c["request_type"] == "DeviceLock")
        .context("DeviceLock in the history")?;
    ensure!(lock["status"] == "failed", "{lock}");
    ensure!(
        lock["error_chain"][0]["LocalizedDescription"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("sent {MAX_ATTEMPTS} times"))),
        "{lock}"
    );
    ensure!(
        status_of(&history, "DeviceInformation").as_deref() == Some("acknowledged"),
        "{history:?}"
    );
    ensure!(!ipad.state.locked, "the device never ran the lock");
    Ok(())
}

orchard_testkit::backend_tests! {
    a_poison_command_stops_blocking_after_max_attempts => a_poison_command_stops_blocking_after_max_attempts;
}
