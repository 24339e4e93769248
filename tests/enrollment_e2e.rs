//! End to end: the real `orchard` binary, 20 simulated iPads of tenant "physics" enrolling over the air,
//! inventory arriving by itself, a DeviceLock through the API, NotNow handling, and re-enrollment — on SQLite
//! and on PostgreSQL.

use anyhow::{ensure, Context, Result};
use orchard_sim::SimDevice;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use serde_json::json;

const FLEET: usize = 20;

async fn scenario(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let link = server.enrollment_link(&physics, None).await?;

    // 20 iPads enroll through the physics link.
    let config = server.sim_config();
    let mut fleet: Vec<SimDevice> = (0..FLEET).map(|_| SimDevice::new_random(&config)).collect();
    let enrollments = fleet.iter_mut().map(|d| d.enroll(&link));
    for r in futures::future::join_all(enrollments).await {
        r.context("enrollment")?;
    }
    let devices = server.devices().await?;
    ensure!(
        devices.len() == FLEET,
        "expected {FLEET} devices, got {}",
        devices.len()
    );
    for d in &devices {
        ensure!(
            d["tenant_id"] == physics.as_str(),
            "device not in physics: {d}"
        );
        ensure!(d["enrollment_state"] == "enrolled", "not enrolled: {d}");
    }

    // Nobody asked for inventory: Orchard queued it after TokenUpdate. One session per device answers it.
    for d in fleet.iter_mut() {
        d.poll().await?;
    }
    for d in &fleet {
        let detail = server.device_by_udid(&d.state.udid).await?;
        let info = &detail["inventory"]["device_information"];
        ensure!(
            !info.is_null(),
            "no device information for {}: {detail}",
            d.state.udid
        );
        ensure!(
            detail["serial_number"] == d.state.serial_number.as_str(),
            "serial not promoted: {detail}"
        );
        ensure!(
            detail["os_version"] == d.state.os_version.as_str(),
            "os version: {detail}"
        );
        for section in ["security_info", "installed_applications", "profiles"] {
            ensure!(
                !detail["inventory"][section].is_null(),
                "missing inventory section {section}: {detail}"
            );
        }
        let history = server
            .commands_of(detail["id"].as_str().unwrap_or(""))
            .await?;
        ensure!(
            history.len() == 4,
            "expected the 4 inventory commands: {history:?}"
        );
        ensure!(history.iter().all(|c| c["status"] == "acknowledged"));
    }

    // A DeviceLock queued through the API is acknowledged and its result shown.
    let target = &mut fleet[0];
    let detail = server.device_by_udid(&target.state.udid).await?;
    let id = detail["id"].as_str().context("id")?.to_string();
    let queued = server
        .post(
            &format!("/api/v1/devices/{id}/commands"),
            json!({"type": "DeviceLock", "message": "Return to the physics office", "phone_number": "+46 8 000 00"}),
        )
        .await?;
    ensure!(queued["status"] == "queued", "{queued}");
    let uuid = queued["command_uuid"].as_str().context("uuid")?.to_string();
    target.poll().await?;
    ensure!(target.state.locked, "simulated iPad did not lock");
    let history = server.commands_of(&id).await?;
    let lock = history
        .iter()
        .find(|c| c["command_uuid"] == uuid.as_str())
        .context("lock in history")?;
    ensure!(lock["status"] == "acknowledged", "{lock}");
    ensure!(lock["completed_at"].is_string(), "{lock}");

    // A device that answers NotNow gets the command again later and acknowledges it.
    let busy = &mut fleet[1];
    let busy_id = server.device_by_udid(&busy.state.udid).await?["id"]
        .as_str()
        .context("id")?
        .to_string();
    busy.answer_not_now(1);
    let queued = server
        .post(
            &format!("/api/v1/devices/{busy_id}/commands"),
            json!({"type": "DeviceLock"}),
        )
        .await?;
    let uuid = queued["command_uuid"].as_str().context("uuid")?.to_string();
    busy.poll().await?;
    let status_of = |h: &[serde_json::Value]| {
        h.iter()
            .find(|c| c["command_uuid"] == uuid.as_str())
            .map(|c| c["status"].clone())
    };
    let h = server.commands_of(&busy_id).await?;
    ensure!(
        status_of(&h) == Some(json!("not_now")),
        "after NotNow: {h:?}"
    );
    ensure!(!busy.state.locked);
    busy.poll().await?;
    let h = server.commands_of(&busy_id).await?;
    ensure!(
        status_of(&h) == Some(json!("acknowledged")),
        "after retry: {h:?}"
    );
    ensure!(busy.state.locked);

    // Re-enrolling a device (a new profile download, new identity) keeps one device record.
    let again = &mut fleet[2];
    let before = server.device_by_udid(&again.state.udid).await?;
    again.enroll(&link).await?;
    let devices = server.devices().await?;
    ensure!(
        devices.len() == FLEET,
        "re-enrollment duplicated a device: {}",
        devices.len()
    );
    let after = server.device_by_udid(&again.state.udid).await?;
    ensure!(
        before["id"] == after["id"],
        "device id changed on re-enrollment"
    );
    // The new enrollment gets fresh inventory; the device keeps working.
    again.poll().await?;
    let h = server
        .commands_of(after["id"].as_str().unwrap_or(""))
        .await?;
    ensure!(
        h.iter()
            .filter(|c| c["request_type"] == "DeviceInformation")
            .count()
            == 2
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    enrollment_inventory_lock_notnow_reenroll => scenario;
}
