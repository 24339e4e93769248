//! Device groups through the real binary (SQLite and PostgreSQL) with simulated iPads: a static group filled
//! by id, serial list and CSV (unknown serials reported back), a smart group "iOS older than 18.2" whose
//! members follow the devices' OS versions as versions (18.10 is newer than 18.2), its history, the
//! `group=` filter of the device list and of bulk commands, filters refused with the field named, viewers
//! read-only, and another tenant's people seeing none of it.

use anyhow::{ensure, Context, Result};
use orchard_sim::SimDevice;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::Role;
use reqwest::Method;
use serde_json::{json, Value};

/// The iPad reports a new OS version: it installed an update and answers a DeviceInformation.
async fn update_os(
    server: &TestServer,
    ipad: &mut SimDevice,
    device_id: &str,
    version: &str,
) -> Result<()> {
    ipad.install_os_update(version, None);
    server
        .post(
            &format!("/api/v1/devices/{device_id}/commands"),
            json!({"type": "DeviceInformation", "queries": ["OSVersion", "BuildVersion", "DeviceName", "IsMultiUser"]}),
        )
        .await?;
    ipad.poll().await?;
    Ok(())
}

fn ids(list: &Value) -> Vec<String> {
    let mut out: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            m["device_id"]
                .as_str()
                .or(m["id"].as_str())
                .map(str::to_owned)
        })
        .collect();
    out.sort();
    out
}

async fn scenario(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
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
    let groups = format!("/api/v1/tenants/{physics}/groups");

    // 1. A static group: by id, by serial list (one unknown serial reported), by CSV.
    let (status, cart) = server
        .api(
            &admin,
            Method::POST,
            &groups,
            Some(json!({"name": "Cart A", "kind": "static"})),
        )
        .await?;
    ensure!(
        status == 201 && cart["kind"] == "static",
        "{status}: {cart}"
    );
    let cart_id = cart["id"].as_str().context("id")?.to_owned();
    let members = format!("{groups}/{cart_id}/members");
    let (status, added) = server
        .api(
            &admin,
            Method::POST,
            &members,
            Some(json!({"device_ids": [device_ids[0]], "serials": [ipads[1].state.serial_number, "NOSUCHSERIAL1"]})),
        )
        .await?;
    ensure!(
        status == 200
            && added["changed"] == 2
            && added["unknown_serials"] == json!(["NOSUCHSERIAL1"]),
        "{status}: {added}"
    );
    let csv = format!(
        "serial_number\n{}\nNOSUCHSERIAL2\n",
        ipads[2].state.serial_number
    );
    let resp = server
        .http
        .post(server.url(&members))
        .bearer_auth(&admin)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let added: Value = resp.json().await?;
    ensure!(
        status == 200
            && added["changed"] == 1
            && added["unknown_serials"] == json!(["NOSUCHSERIAL2"]),
        "csv {status}: {added}"
    );
    let listed = server.get(&members).await?;
    ensure!(listed["total"] == 3, "{listed}");
    // Music's device id is unknown to physics' group, exactly like a missing one.
    let mut music_ipad = server
        .enroll_devices(&server.sim_config(), &music, 1)
        .await?;
    let music_device = server.device_by_udid(&music_ipad[0].state.udid).await?["id"]
        .as_str()
        .context("music device")?
        .to_owned();
    let (status, refused) = server
        .api(&admin, Method::POST, &members, Some(json!({"device_ids": [music_device], "serials": [music_ipad[0].state.serial_number]})))
        .await?;
    ensure!(
        status == 200
            && refused["changed"] == 0
            && refused["unknown_device_ids"] == json!([music_device])
            && refused["unknown_serials"].as_array().map(Vec::len) == Some(1),
        "{status}: {refused}"
    );
    music_ipad[0].poll().await?;
    let (status, removed) = server
        .api(
            &admin,
            Method::POST,
            &format!("{members}/remove"),
            Some(json!({"device_ids": [device_ids[2]]})),
        )
        .await?;
    ensure!(
        status == 200 && removed["changed"] == 1,
        "{status}: {removed}"
    );

    // 2. Filters are validated, each problem naming its field.
    let (status, problem) = server
        .api(
            &admin,
            Method::POST,
            &groups,
            Some(
                json!({"name": "Bad", "kind": "smart", "filter": {"conditions": [
                    {"field": "os_version", "op": "older", "value": "18.2"},
                    {"field": "os_version", "op": "lt", "value": "eighteen"},
                    {"field": "colour", "op": "is", "value": "red"}
                ]}}),
            ),
        )
        .await?;
    let paths: Vec<&str> = problem["error"]["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["path"].as_str())
        .collect();
    ensure!(
        status == 422
            && paths
                == [
                    "filter.conditions[0].op",
                    "filter.conditions[1].value",
                    "filter.conditions[2].field"
                ],
        "{status}: {problem}"
    );

    // 3. The smart group "iOS older than 18.2": iPad 2 already runs 18.2, so it starts with iPads 0 and 1.
    update_os(&server, &mut ipads[2], &device_ids[2], "18.2").await?;
    let older = json!({"conditions": [{"field": "os_version", "op": "lt", "value": "18.2"}]});
    let (status, smart) = server
        .api(
            &admin,
            Method::POST,
            &groups,
            Some(json!({"name": "iOS older than 18.2", "kind": "smart", "filter": older})),
        )
        .await?;
    ensure!(
        status == 201 && smart["member_count"] == 2,
        "{status}: {smart}"
    );
    let smart_id = smart["id"].as_str().context("id")?.to_owned();
    let smart_members = format!("{groups}/{smart_id}/members");
    let mut expected = vec![device_ids[0].clone(), device_ids[1].clone()];
    expected.sort();
    ensure!(
        ids(&server.get(&smart_members).await?) == expected,
        "smart members"
    );
    // iPad 1 updates to 18.10 — newer than 18.2 as a version, older as a string: it leaves.
    update_os(&server, &mut ipads[1], &device_ids[1], "18.10").await?;
    ensure!(
        ids(&server.get(&smart_members).await?) == vec![device_ids[0].clone()],
        "18.10 left the group"
    );
    // Its history says when it joined and left.
    let history = server
        .get(&format!(
            "{groups}/{smart_id}/history?device={}",
            device_ids[1]
        ))
        .await?;
    let mut events: Vec<(&str, &str)> = history["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h["event"].as_str().unwrap_or(""),
                h["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    // Within one second the order of the two is not defined; both are there.
    events.sort();
    ensure!(
        events == [("joined", "matched"), ("left", "inventory")],
        "{history}"
    );
    // A new filter recomputes the members at once.
    let (status, changed) = server
        .api(
            &admin,
            Method::PATCH,
            &format!("{groups}/{smart_id}"),
            Some(json!({"filter": {"conditions": [{"field": "os_version", "op": "ge", "value": "18.2"}]}})),
        )
        .await?;
    ensure!(
        status == 200 && changed["member_count"] == 2,
        "{status}: {changed}"
    );
    let mut expected = vec![device_ids[1].clone(), device_ids[2].clone()];
    expected.sort();
    ensure!(
        ids(&server.get(&smart_members).await?) == expected,
        "new filter"
    );
    // Checked out: it leaves its smart groups.
    ipads[2].check_out().await?;
    ensure!(
        ids(&server.get(&smart_members).await?) == vec![device_ids[1].clone()],
        "a checked-out iPad leaves smart groups"
    );

    // 4. The device list and bulk commands take a group.
    let listed = server
        .get(&format!("/api/v1/devices?group={cart_id}"))
        .await?;
    let mut expected = vec![device_ids[0].clone(), device_ids[1].clone()];
    expected.sort();
    ensure!(ids(&listed) == expected && listed["total"] == 2, "{listed}");
    let (status, bulk) = server
        .api(
            &admin,
            Method::POST,
            "/api/v1/commands/bulk",
            Some(json!({"command": {"type": "DeviceInformation", "queries": ["UDID"]}, "group_id": cart_id, "dry_run": true})),
        )
        .await?;
    ensure!(status == 200 && bulk["affected"] == 2, "{status}: {bulk}");

    // 5. Viewers read, never change; music sees nothing of physics' groups.
    let (status, _) = server.api(&viewer, Method::GET, &groups, None).await?;
    ensure!(status == 200, "viewer reads");
    let (status, _) = server
        .api(
            &viewer,
            Method::POST,
            &groups,
            Some(json!({"name": "V", "kind": "static"})),
        )
        .await?;
    ensure!(status == 403, "viewer creates → {status}");
    let (status, _) = server
        .api(
            &viewer,
            Method::POST,
            &members,
            Some(json!({"device_ids": [device_ids[0]]})),
        )
        .await?;
    ensure!(status == 403, "viewer adds → {status}");
    for (method, path, body) in [
        (Method::GET, format!("{groups}/{smart_id}"), None),
        (Method::GET, smart_members.clone(), None),
        (Method::DELETE, format!("{groups}/{cart_id}"), None),
        (
            Method::POST,
            members.clone(),
            Some(json!({"device_ids": [device_ids[0]]})),
        ),
        (
            Method::GET,
            format!("/api/v1/devices?group={cart_id}"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/tenants/{music}/groups/{cart_id}"),
            None,
        ),
    ] {
        let (status, body) = server
            .api(&music_admin, method.clone(), &path, body)
            .await?;
        ensure!(status == 404, "music {method} {path} → {status}: {body}");
    }
    let (status, missing) = server
        .api(
            &music_admin,
            Method::GET,
            &format!("/api/v1/devices?group={}", uuid::Uuid::now_v7()),
            None,
        )
        .await?;
    let (_, foreign) = server
        .api(
            &music_admin,
            Method::GET,
            &format!("/api/v1/devices?group={cart_id}"),
            None,
        )
        .await?;
    ensure!(
        status == 404 && missing["error"]["message"] == foreign["error"]["message"],
        "{missing} vs {foreign}"
    );
    let (status, bulk) = server
        .api(
            &music_admin,
            Method::POST,
            "/api/v1/commands/bulk",
            Some(json!({"command": {"type": "DeviceInformation", "queries": ["UDID"]}, "group_id": cart_id, "dry_run": true})),
        )
        .await?;
    ensure!(
        status == 404,
        "music bulk by physics' group → {status}: {bulk}"
    );

    // 6. Deleting a group.
    let (status, _) = server
        .api(&admin, Method::DELETE, &format!("{groups}/{cart_id}"), None)
        .await?;
    ensure!(status == 204, "delete → {status}");
    let (status, _) = server
        .api(&admin, Method::GET, &format!("{groups}/{cart_id}"), None)
        .await?;
    ensure!(status == 404, "deleted group → {status}");
    Ok(())
}

orchard_testkit::backend_tests! {
    groups_e2e => scenario;
}
