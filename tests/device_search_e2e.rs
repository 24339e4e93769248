//! The device list as people search it, through the API of the real binary (SQLite and PostgreSQL): filters by
//! tenant, model, OS version, state and last seen, a text search over name, serial and UDID, sorting and
//! paging — and a tenant's people never reach another tenant's devices through any of them.

use anyhow::{ensure, Result};
use orchard_sim::{SimConfig, SimDevice};
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::Role;
use reqwest::Method;
use serde_json::Value;

async fn enroll(
    server: &TestServer,
    tenant: &str,
    os: &str,
    count: usize,
) -> Result<Vec<SimDevice>> {
    let config = SimConfig {
        os_version: os.to_owned(),
        ..server.sim_config()
    };
    server.enroll_devices(&config, tenant, count).await
}

fn serials(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|d| d["serial_number"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn scenario(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let music = server.create_tenant("Music", "music").await?;
    let physics_ipads = enroll(&server, &physics, "18.1", 3).await?;
    let music_ipads = enroll(&server, &music, "17.5", 2).await?;
    let music_admin = server.create_token(Role::Admin, Some(&music), "music-admin")?;

    // The operator narrows to one tenant; the OS version filter takes a prefix.
    let v = server
        .get(&format!("/api/v1/devices?tenant={physics}"))
        .await?;
    ensure!(v["total"] == 3 && serials(&v).len() == 3, "{v}");
    let v = server.get("/api/v1/devices?os_version=17.").await?;
    ensure!(v["total"] == 2, "17.x → {v}");
    let v = server
        .get("/api/v1/devices?os_version=18.1&state=enrolled")
        .await?;
    ensure!(v["total"] == 3, "{v}");
    let v = server.get("/api/v1/devices?model=ipad13,18").await?;
    ensure!(v["total"] == 5, "model identifier, any case → {v}");

    // Text search: part of a serial, any case; part of a UDID.
    let serial = physics_ipads[1].state.serial_number.clone();
    let part = serial[2..8].to_lowercase();
    let v = server.get(&format!("/api/v1/devices?q={part}")).await?;
    ensure!(serials(&v).contains(&serial), "search {part} → {v}");
    let udid_part = &physics_ipads[2].state.udid[..13];
    let v = server
        .get(&format!("/api/v1/devices?q={udid_part}"))
        .await?;
    ensure!(
        v["total"] == 1 && v["items"][0]["udid"] == physics_ipads[2].state.udid.as_str(),
        "{v}"
    );
    let v = server.get("/api/v1/devices?q=%25").await?;
    ensure!(v["total"] == 0, "a literal % matches nothing: {v}");

    // The CLI passes the same filters: `orchard device list --search … --json`.
    let out = server
        .client_command(&[
            "device",
            "list",
            "--search",
            &part,
            "--os-version",
            "18.",
            "--json",
        ])?
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(serials(&v).contains(&serial), "cli search → {v}");

    // Sorting and paging: serials descending, two per page, stable across pages.
    let mut all: Vec<String> = physics_ipads
        .iter()
        .chain(&music_ipads)
        .map(|d| d.state.serial_number.clone())
        .collect();
    all.sort();
    all.reverse();
    let first = server
        .get("/api/v1/devices?sort=serial&order=desc&limit=2")
        .await?;
    let second = server
        .get("/api/v1/devices?sort=serial&order=desc&limit=2&offset=2")
        .await?;
    let third = server
        .get("/api/v1/devices?sort=serial&order=desc&limit=2&offset=4")
        .await?;
    let paged: Vec<String> = [first, second, third].iter().flat_map(serials).collect();
    ensure!(paged == all, "paged {paged:?} != sorted {all:?}");

    // Last seen: everything was seen just now.
    let v = server
        .get("/api/v1/devices?last_seen_after=2000-01-01")
        .await?;
    ensure!(v["total"] == 5, "{v}");
    let v = server
        .get("/api/v1/devices?last_seen_before=2000-01-01")
        .await?;
    ensure!(v["total"] == 0, "{v}");

    // A tenant's admin: its own devices only, whatever it asks for.
    let (status, v) = server
        .api(
            &music_admin,
            Method::GET,
            &format!("/api/v1/devices?tenant={physics}"),
            None,
        )
        .await?;
    ensure!(
        status == 200 && v["total"] == 0,
        "music asking for physics → {status}: {v}"
    );
    let (_, v) = server
        .api(
            &music_admin,
            Method::GET,
            &format!("/api/v1/devices?q={part}"),
            None,
        )
        .await?;
    ensure!(
        v["total"] == 0 && !v.to_string().contains(&serial),
        "music searching physics' serial → {v}"
    );
    let (_, v) = server
        .api(
            &music_admin,
            Method::GET,
            "/api/v1/devices?os_version=18.1",
            None,
        )
        .await?;
    ensure!(v["total"] == 0, "{v}");
    let (_, v) = server
        .api(&music_admin, Method::GET, "/api/v1/devices", None)
        .await?;
    ensure!(v["total"] == 2, "{v}");

    // Bad input: 400 with our error shape.
    for bad in [
        "sort=id;drop",
        "order=sideways",
        "state=asleep",
        "colour=blue",
        "last_seen_after=yesterday",
    ] {
        let (status, v) = server
            .api(
                &server.token,
                Method::GET,
                &format!("/api/v1/devices?{bad}"),
                None,
            )
            .await?;
        ensure!(
            status == 400 && v["error"]["request_id"].is_string(),
            "{bad} → {status}: {v}"
        );
    }
    Ok(())
}

orchard_testkit::backend_tests! {
    device_search => scenario;
}
