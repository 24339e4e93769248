//! Assignments and the reconciler through the real binary (SQLite and PostgreSQL) with simulated iPads: a
//! profile assigned to the smart group "iOS older than 18.2" reaches exactly its members and leaves an iPad
//! that updates; a profile removed on the device by hand comes back; a new version replaces the old; removing
//! the assignment removes the profile (and nothing else); no command is queued twice for one difference; and
//! another tenant can neither see nor target any of it. A second scenario runs two reconciler passes of two
//! nodes concurrently on one database and counts the commands.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use orchard_sim::SimDevice;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::Role;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::Row;

const IDENTIFIER: &str = "edu.example.reconciled";

/// Polls the iPad until `done` holds (the reconciler runs beside the request that woke it). Bounded: a
/// reconciler that never acts fails the test instead of hanging it.
async fn poll_until(
    ipad: &mut SimDevice,
    what: &str,
    done: impl Fn(&SimDevice) -> bool,
) -> Result<()> {
    for _ in 0..400 {
        ipad.poll().await?;
        if done(ipad) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("gave up waiting: {what}")
}

fn installed_uuid(ipad: &SimDevice) -> Option<String> {
    ipad.state
        .installed_profiles
        .iter()
        .find(|p| p.identifier == IDENTIFIER)
        .map(|p| p.uuid.clone())
}

async fn profile_commands(server: &TestServer, device_id: &str) -> Result<(usize, usize)> {
    let commands = server.commands_of(device_id).await?;
    let count = |t: &str| commands.iter().filter(|c| c["request_type"] == t).count();
    Ok((count("InstallProfile"), count("RemoveProfile")))
}

async fn queue(server: &TestServer, device_id: &str, command: Value) -> Result<()> {
    server
        .post(&format!("/api/v1/devices/{device_id}/commands"), command)
        .await?;
    Ok(())
}

async fn scenario(backend: Backend) -> Result<()> {
    let Some(server) =
        TestServer::start_with(backend, &["--reconcile-retry-seconds".into(), "0".into()]).await?
    else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let music = server.create_tenant("Music", "music").await?;
    let mut ipads = server
        .enroll_devices(&server.sim_config(), &physics, 3)
        .await?;
    let mut device_ids = Vec::new();
    for ipad in &ipads {
        device_ids.push(
            server.device_by_udid(&ipad.state.udid).await?["id"]
                .as_str()
                .context("device id")?
                .to_owned(),
        );
    }
    let admin = server.create_token(Role::Admin, Some(&physics), "physics-admin")?;
    let viewer = server.create_token(Role::Viewer, Some(&physics), "physics-viewer")?;
    let music_admin = server.create_token(Role::Admin, Some(&music), "music-admin")?;

    // iPad 2 already runs 18.2.
    ipads[2].install_os_update("18.2", None);
    queue(
        &server,
        &device_ids[2],
        json!({"type": "DeviceInformation", "queries": ["OSVersion"]}),
    )
    .await?;
    ipads[2].poll().await?;

    let (status, group) = server
        .api(
            &admin,
            Method::POST,
            &format!("/api/v1/tenants/{physics}/groups"),
            Some(json!({"name": "iOS older than 18.2", "kind": "smart",
                        "filter": {"conditions": [{"field": "os_version", "op": "lt", "value": "18.2"}]}})),
        )
        .await?;
    ensure!(
        status == 201 && group["member_count"] == 2,
        "{status}: {group}"
    );
    let group_id = group["id"].as_str().context("group id")?.to_owned();
    let (status, profile) = server
        .api(
            &admin,
            Method::POST,
            &format!("/api/v1/tenants/{physics}/profiles"),
            Some(json!({"name": "Lab Wi-Fi", "identifier": IDENTIFIER,
                        "payloads": [{"PayloadType": "com.apple.wifi.managed", "SSID_STR": "lab"}]})),
        )
        .await?;
    ensure!(status == 201, "{status}: {profile}");
    let profile_id = profile["profile"]["id"]
        .as_str()
        .context("profile id")?
        .to_owned();
    let v1_uuid = profile["versions"][0]["payload_uuid"]
        .as_str()
        .context("uuid")?
        .to_owned();

    // Another tenant can target none of it: physics' group, device and profile are unknown to music.
    let music_assignments = format!("/api/v1/tenants/{music}/assignments");
    for (body, field) in [
        (
            json!({"object_kind": "profile", "object_id": profile_id, "all_devices": true}),
            "object_id",
        ),
        (
            json!({"object_kind": "profile", "object_id": profile_id, "groups": [group_id]}),
            "groups[0]",
        ),
        (
            json!({"object_kind": "profile", "object_id": profile_id, "devices": [device_ids[0]]}),
            "devices[0]",
        ),
    ] {
        let (status, refused) = server
            .api(&music_admin, Method::POST, &music_assignments, Some(body))
            .await?;
        ensure!(
            status == 422
                && refused["error"]["errors"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e["path"] == field)),
            "music targets physics' {field} → {status}: {refused}"
        );
    }
    // Viewers cannot assign.
    let assignments = format!("/api/v1/tenants/{physics}/assignments");
    let body = json!({"object_kind": "profile", "object_id": profile_id, "groups": [group_id]});
    let (status, _) = server
        .api(&viewer, Method::POST, &assignments, Some(body.clone()))
        .await?;
    ensure!(status == 403, "viewer assigns → {status}");

    // 1. Assigned to the group: exactly iPads 0 and 1 get it.
    let (status, assignment) = server
        .api(&admin, Method::POST, &assignments, Some(body.clone()))
        .await?;
    ensure!(status == 201, "{status}: {assignment}");
    let assignment_id = assignment["id"]
        .as_str()
        .context("assignment id")?
        .to_owned();
    let (status, twice) = server
        .api(&admin, Method::POST, &assignments, Some(body))
        .await?;
    ensure!(
        status == 409,
        "a second assignment of the object → {status}: {twice}"
    );
    for ipad in ipads.iter_mut().take(2) {
        poll_until(ipad, "the assigned profile", |d| {
            installed_uuid(d).as_deref() == Some(v1_uuid.as_str())
        })
        .await?;
    }
    ipads[2].poll().await?;
    ensure!(
        installed_uuid(&ipads[2]).is_none(),
        "iPad 2 (18.2) is not in the group"
    );
    ensure!(
        profile_commands(&server, &device_ids[2]).await? == (0, 0),
        "nothing queued for iPad 2"
    );
    // Both installs name one shared body (the profile is stored once, not per device), sealed at rest; the
    // queue rows hold no copy of it.
    let mut db = server.connect_database().await?;
    let rows = sqlx::query(
        "SELECT body_id, payload FROM commands WHERE request_type = 'InstallProfile' \
         UNION ALL SELECT body_id, payload FROM command_history WHERE request_type = 'InstallProfile'",
    )
    .fetch_all(&mut db)
    .await?;
    ensure!(rows.len() == 2, "{} InstallProfile rows", rows.len());
    let mut body_ids = std::collections::BTreeSet::new();
    for row in &rows {
        let body_id: Option<String> = row.try_get("body_id")?;
        let payload: Vec<u8> = row.try_get("payload")?;
        ensure!(payload.is_empty(), "a queue row holds its own payload");
        body_ids.insert(body_id.context("an install without a shared body")?);
    }
    ensure!(
        body_ids.len() == 1,
        "{} bodies for one profile version",
        body_ids.len()
    );
    let body = sqlx::query("SELECT body, body_sealed FROM command_bodies")
        .fetch_all(&mut db)
        .await?;
    ensure!(body.len() == 1, "{} stored bodies", body.len());
    ensure!(
        body[0].try_get::<i64, _>("body_sealed")? == 1,
        "the body is not sealed"
    );
    let stored: Vec<u8> = body[0].try_get("body")?;
    ensure!(
        !stored.windows(14).any(|w| w == b"InstallProfile"),
        "the profile body is stored readable"
    );

    // 2. iPad 1 updates to 18.10 (newer than 18.2 as a version): the profile leaves it.
    ipads[1].install_os_update("18.10", None);
    queue(
        &server,
        &device_ids[1],
        json!({"type": "DeviceInformation", "queries": ["OSVersion"]}),
    )
    .await?;
    poll_until(&mut ipads[1], "removal after the update", |d| {
        installed_uuid(d).is_none()
    })
    .await?;
    ensure!(
        profile_commands(&server, &device_ids[1]).await? == (1, 1),
        "one install, one removal"
    );

    // 3. Removed by hand on iPad 0: its ProfileList shows the drift and the profile comes back.
    ipads[0]
        .state
        .installed_profiles
        .retain(|p| p.identifier != IDENTIFIER);
    queue(&server, &device_ids[0], json!({"type": "ProfileList"})).await?;
    poll_until(&mut ipads[0], "reinstall after drift", |d| {
        installed_uuid(d).as_deref() == Some(v1_uuid.as_str())
    })
    .await?;
    ensure!(
        profile_commands(&server, &device_ids[0]).await? == (2, 0),
        "installed twice in all"
    );

    // 4. A new version replaces the old one.
    let (status, v2) = server
        .api(
            &admin,
            Method::POST,
            &format!("/api/v1/tenants/{physics}/profiles/{profile_id}/versions"),
            Some(json!({"name": "Lab Wi-Fi", "payloads": [{"PayloadType": "com.apple.wifi.managed", "SSID_STR": "lab-2"}]})),
        )
        .await?;
    ensure!(status == 201, "{status}: {v2}");
    let v2_uuid = v2["versions"][0]["payload_uuid"]
        .as_str()
        .context("v2 uuid")?
        .to_owned();
    poll_until(&mut ipads[0], "version 2", |d| {
        installed_uuid(d).as_deref() == Some(v2_uuid.as_str())
    })
    .await?;
    let state = server
        .get(&format!(
            "/api/v1/tenants/{physics}/profiles/{profile_id}/devices"
        ))
        .await?;
    let row = state["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["device_id"] == device_ids[0].as_str())
        .context("iPad 0's profile state")?;
    ensure!(
        row["installed_version"] == 2 && row["state"] == "installed",
        "{state}"
    );

    // 5. No difference, no command: more reports and passes queue nothing new.
    for _ in 0..3 {
        queue(&server, &device_ids[0], json!({"type": "ProfileList"})).await?;
        queue(
            &server,
            &device_ids[0],
            json!({"type": "DeviceInformation", "queries": ["OSVersion"]}),
        )
        .await?;
        ipads[0].poll().await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    ipads[0].poll().await?;
    ensure!(
        profile_commands(&server, &device_ids[0]).await? == (3, 0),
        "nothing queued twice"
    );

    // 6. Music cannot see physics' assignment.
    for (method, path) in [
        (Method::GET, format!("{assignments}/{assignment_id}")),
        (Method::DELETE, format!("{assignments}/{assignment_id}")),
        (Method::GET, assignments.clone()),
        (Method::GET, format!("{music_assignments}/{assignment_id}")),
    ] {
        let (status, body) = server
            .api(&music_admin, method.clone(), &path, None)
            .await?;
        ensure!(status == 404, "music {method} {path} → {status}: {body}");
    }
    let (_, mine) = server
        .api(&music_admin, Method::GET, &music_assignments, None)
        .await?;
    ensure!(
        mine["items"].as_array().is_some_and(Vec::is_empty),
        "{mine}"
    );

    // 7. Removing the assignment removes the profile from exactly the devices that had it.
    let (status, _) = server
        .api(
            &admin,
            Method::DELETE,
            &format!("{assignments}/{assignment_id}"),
            None,
        )
        .await?;
    ensure!(status == 204, "delete → {status}");
    poll_until(&mut ipads[0], "removal with the assignment", |d| {
        installed_uuid(d).is_none()
    })
    .await?;
    ensure!(
        ipads[0].state.enrollment_profile.is_some() && ipads[0].state.enrolled,
        "the enrollment profile is never touched"
    );
    ipads[1].poll().await?;
    ipads[2].poll().await?;
    ensure!(
        profile_commands(&server, &device_ids[0]).await? == (3, 1),
        "iPad 0: one removal"
    );
    ensure!(
        profile_commands(&server, &device_ids[1]).await? == (1, 1),
        "iPad 1: no second removal"
    );
    ensure!(
        profile_commands(&server, &device_ids[2]).await? == (0, 0),
        "iPad 2: never touched"
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    reconciler_e2e => scenario;
}

/// Two nodes on one database reconcile the same devices at the same time: every device gets its install
/// once. Then the race itself, made certain: two units that planned the same install for one device — the
/// second waits for the first's row lock (PostgreSQL) or write lock (SQLite) and queues nothing.
async fn two_nodes(backend: Backend) -> Result<()> {
    use orchard_core::desired::assignments::AssignmentInput;
    use orchard_core::desired::profiles::ProfileInput;
    use orchard_store::{NewCommand, PlannedProfileCommand};
    use orchard_types::{ChannelId, Clock, CommandUuid, ProfileId, QueuedBy, RequestType};

    let Some(setup) = orchard_testkit::service::PushSetup::start(backend).await else {
        return Ok(());
    };
    let profile = setup
        .orchard
        .create_global_profile(
            &setup.operator,
            ProfileInput::Json(serde_json::from_value(json!({
                "name": "Campus Wi-Fi", "identifier": IDENTIFIER,
                "payloads": [{"PayloadType": "com.apple.wifi.managed", "SSID_STR": "campus"}]
            }))?),
        )
        .await?;
    let profile_id = ProfileId::parse(&profile.profile.id)?;
    let mut devices = Vec::new();
    for i in 0..30 {
        let (channel, device) = setup.enrolled(format!("token-{i}").as_bytes()).await;
        setup
            .orchard
            .create_assignment(
                setup.operator.principal(),
                device.tenant_id,
                serde_json::from_value::<AssignmentInput>(json!({
                    "object_kind": "profile", "object_id": profile_id.to_string(), "all_devices": true
                }))?,
            )
            .await?;
        devices.push((channel, device));
    }
    let second = setup.another_node().await;
    let (one, two) = (setup.orchard.system(), second.system());
    let ids: Vec<_> = devices.iter().map(|(_, d)| d.id).collect();
    let mut queued = 0;
    for _ in 0..3 {
        // Both nodes find every device dirty (again).
        setup
            .store
            .mark_devices_dirty(&ids, setup.clock.now())
            .await?;
        let (a, b) = tokio::join!(
            setup.orchard.reconcile_once(&one),
            second.reconcile_once(&two)
        );
        queued += a?.queued + b?.queued;
    }
    ensure!(
        queued == devices.len(),
        "{queued} installs queued for {} devices",
        devices.len()
    );
    let operator = setup.operator.principal();
    for (_, d) in &devices {
        let commands = setup
            .orchard
            .command_history(
                operator,
                d.id,
                orchard_store::Page {
                    limit: 100,
                    offset: 0,
                },
            )
            .await?;
        let installs = commands
            .iter()
            .filter(|c| c.request_type == RequestType::InstallProfile.as_str())
            .count();
        ensure!(installs == 1, "device {} has {installs} installs", d.id);
    }

    // The race, certain: two units plan a RemoveProfile for the same device and profile.
    let (channel, device) = &devices[0];
    let pending_free = {
        // The install above is still pending; answer it so the row is free for a new command.
        let mut unit = setup.store.begin_unit().await?;
        let known = unit.known_profiles_of(&[device.id]).await?;
        let command = known[0]
            .pending_command
            .clone()
            .context("pending install")?;
        unit.profile_command_answered(
            device.id,
            &CommandUuid::parse(&command)?,
            None,
            0,
            setup.clock.now(),
        )
        .await?;
        unit.commit().await?;
        command
    };
    ensure!(!pending_free.is_empty(), "an install was pending");
    let plan = |uuid: CommandUuid| PlannedProfileCommand {
        command: NewCommand {
            uuid,
            device_id: device.id,
            tenant_id: device.tenant_id,
            channel: ChannelId::clone(channel),
            request_type: RequestType::RemoveProfile,
            payload: b"<plist/>".to_vec(),
            payload_sealed: false,
            body_id: None,
            deliver_once: false,
            queued_by: Some(QueuedBy::Reconciler),
            queued_at: setup.clock.now(),
            expires_at: None,
        },
        profile_id,
        action: "remove",
        version: None,
    };
    let mut first = setup.store.begin_unit().await?;
    let first_queued = first
        .queue_planned_profile_commands(&[plan(CommandUuid::new_random())], setup.clock.now())
        .await?;
    let store = setup.store.clone();
    let now = setup.clock.now();
    let racer = plan(CommandUuid::new_random());
    let second_unit = tokio::spawn(async move {
        let mut unit = store.begin_unit().await?;
        let n = unit.queue_planned_profile_commands(&[racer], now).await?;
        unit.commit().await?;
        Ok::<usize, anyhow::Error>(n)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.commit().await?;
    let second_queued = second_unit.await??;
    ensure!(
        first_queued == 1 && second_queued == 0,
        "first queued {first_queued}, second {second_queued}"
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    reconciler_two_nodes => two_nodes;
}
