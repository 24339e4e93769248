//! Dangerous actions and bulk commands through the API of the real binary (SQLite and PostgreSQL): EraseDevice
//! needs the tenant admin role and the device's serial number as confirmation; a bulk command reaches only the
//! caller's enrolled devices, a dry run counts them first, a destructive bulk command needs that count, and the
//! simulated iPads receive what was queued.

use anyhow::{ensure, Context, Result};
use orchard_sim::SimDevice;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::Role;
use reqwest::Method;
use serde_json::json;

async fn enroll(server: &TestServer, tenant: &str, count: usize) -> Result<Vec<SimDevice>> {
    server
        .enroll_devices(&server.sim_config(), tenant, count)
        .await
}

async fn scenario(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let music = server.create_tenant("Music", "music").await?;
    let mut physics_ipads = enroll(&server, &physics, 4).await?;
    let music_ipads = enroll(&server, &music, 2).await?;
    let admin = server.create_token(Role::Admin, Some(&physics), "physics-admin")?;
    let viewer = server.create_token(Role::Viewer, Some(&physics), "physics-viewer")?;
    let helpdesk = server.create_token(Role::Helpdesk, None, "helpdesk")?;
    let music_admin = server.create_token(Role::Admin, Some(&music), "music-admin")?;

    // Erase one iPad: confirmation rule.
    let target = server.device_by_udid(&physics_ipads[0].state.udid).await?;
    let id = target["id"].as_str().context("id")?.to_owned();
    let serial = target["serial_number"]
        .as_str()
        .context("serial")?
        .to_owned();
    let erase = |confirm: Option<&str>| {
        let mut body = json!({"type": "EraseDevice"});
        if let Some(c) = confirm {
            body["confirm_serial"] = json!(c);
        }
        body
    };
    let path = format!("/api/v1/devices/{id}/commands");
    for (who, secret, body, expected, code) in [
        (
            "admin without confirmation",
            &admin,
            erase(None),
            400,
            "confirmation_required",
        ),
        (
            "admin with a wrong serial",
            &admin,
            erase(Some("F00000000000")),
            400,
            "confirmation_required",
        ),
        ("viewer", &viewer, erase(Some(&serial)), 403, "forbidden"),
        (
            "helpdesk",
            &helpdesk,
            erase(Some(&serial)),
            403,
            "forbidden",
        ),
        (
            "other tenant's admin",
            &music_admin,
            erase(Some(&serial)),
            404,
            "not_found",
        ),
    ] {
        let (status, v) = server.api(secret, Method::POST, &path, Some(body)).await?;
        ensure!(
            status == expected && v["error"]["code"] == code,
            "{who} → {status}: {v}"
        );
        ensure!(v["error"]["request_id"].is_string(), "{v}");
    }
    ensure!(
        server
            .commands_of(&id)
            .await?
            .iter()
            .all(|c| c["request_type"] != "EraseDevice"),
        "nothing queued by refusals"
    );
    let (status, v) = server
        .api(
            &admin,
            Method::POST,
            &path,
            Some(erase(Some(&serial.to_lowercase()))),
        )
        .await?;
    ensure!(
        status == 201 && v["request_type"] == "EraseDevice",
        "confirmed erase → {status}: {v}"
    );
    // Harmless commands need no confirmation.
    let (status, v) = server
        .api(
            &admin,
            Method::POST,
            &path,
            Some(json!({"type": "DeviceLock", "message": "Return to the physics office"})),
        )
        .await?;
    ensure!(status == 201, "device lock → {status}: {v}");

    // Bulk: the physics admin reaches physics' 4 iPads only, whatever ids it lists.
    let music_id = server.device_by_udid(&music_ipads[0].state.udid).await?["id"]
        .as_str()
        .context("id")?
        .to_owned();
    let (status, dry) = server.api(&admin, Method::POST, "/api/v1/commands/bulk",
        Some(json!({"command": {"type": "DeviceInformation", "queries": ["OSVersion"]}, "dry_run": true}))).await?;
    ensure!(
        status == 200 && dry["affected"] == 4 && dry["queued"] == 0,
        "dry run → {status}: {dry}"
    );
    let (status, listed) = server.api(&admin, Method::POST, "/api/v1/commands/bulk",
        Some(json!({"command": {"type": "DeviceInformation", "queries": ["OSVersion"]}, "device_ids": [id, music_id], "dry_run": true}))).await?;
    ensure!(
        status == 200 && listed["affected"] == 1 && listed["skipped"] == 1,
        "listed ids → {status}: {listed}"
    );
    let (status, v) = server
        .api(
            &viewer,
            Method::POST,
            "/api/v1/commands/bulk",
            Some(json!({"command": {"type": "DeviceInformation", "queries": ["OSVersion"]}})),
        )
        .await?;
    ensure!(status == 403, "viewer bulk → {status}: {v}");
    let (status, queued) = server
        .api(
            &admin,
            Method::POST,
            "/api/v1/commands/bulk",
            Some(json!({"command": {"type": "InstalledApplicationList"}})),
        )
        .await?;
    ensure!(
        status == 201 && queued["queued"] == 4,
        "bulk → {status}: {queued}"
    );
    // Destructive bulk needs the dry run's count.
    let (status, v) = server
        .api(
            &admin,
            Method::POST,
            "/api/v1/commands/bulk",
            Some(json!({"command": {"type": "EraseDevice"}})),
        )
        .await?;
    ensure!(
        status == 400 && v["error"]["code"] == "confirmation_required",
        "bulk erase without count → {status}: {v}"
    );
    let (status, v) = server
        .api(
            &admin,
            Method::POST,
            "/api/v1/commands/bulk",
            Some(json!({"command": {"type": "EraseDevice"}, "confirm_count": 3})),
        )
        .await?;
    ensure!(
        status == 400,
        "bulk erase with a wrong count → {status}: {v}"
    );
    let (status, v) = server
        .api(
            &helpdesk,
            Method::POST,
            "/api/v1/commands/bulk",
            Some(json!({"command": {"type": "EraseDevice"}, "confirm_count": 6})),
        )
        .await?;
    ensure!(status == 403, "helpdesk bulk erase → {status}: {v}");

    // The bulk command's dictionary is stored once: the four queue rows name one shared body and hold no
    // payload of their own.
    let mut db = server.connect_database().await?;
    let shared: (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT body_id), COALESCE(SUM(LENGTH(payload)), 0) FROM commands \
         WHERE request_type = 'InstalledApplicationList' AND status = 'queued' AND body_id IS NOT NULL",
    )
    .fetch_one(&mut db)
    .await?;
    ensure!(
        shared == (4, 1, 0),
        "bulk rows, bodies, payload bytes: {shared:?}"
    );

    // The iPads get what was queued, each under a CommandUUID of its own: physics' devices the app list, the
    // music iPad nothing new.
    let mut uuids = std::collections::BTreeSet::new();
    for d in physics_ipads.iter_mut().skip(1) {
        let session = d.poll().await?;
        let handled: Vec<_> = session
            .handled
            .iter()
            .filter(|h| h.request_type == "InstalledApplicationList")
            .collect();
        ensure!(!handled.is_empty(), "{:?}", session.handled);
        uuids.extend(handled.iter().map(|h| h.uuid.clone()));
    }
    ensure!(uuids.len() == 3, "one CommandUUID per device: {uuids:?}");
    let music_history = server.commands_of(&music_id).await?;
    // Only the enrollment inventory's own InstalledApplicationList, not the bulk one.
    let app_lists = music_history
        .iter()
        .filter(|c| c["request_type"] == "InstalledApplicationList")
        .count();
    ensure!(app_lists == 1, "music untouched: {app_lists} app lists");
    Ok(())
}

orchard_testkit::backend_tests! {
    dangerous_and_bulk_actions => scenario;
}
