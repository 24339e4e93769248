//! End to end, on SQLite and PostgreSQL: OS currency per tenant. The operator loads the catalogue (Apple's
//! feed shape, refreshed from a local server of that shape); physics pins iPadOS 18.2. Two iOS 18.1 iPads get
//! the enforcement declaration and move through downloading → installing → 18.2 by explicit simulator steps
//! (one fails instead, with its reason); an iOS 16 iPad is updated through AvailableOSUpdates →
//! ScheduleOSUpdate → OSUpdateStatus, each queued once. The compliance view follows every step and sums it
//! up ("2 of 3 on 18.2, 1 failed"). Tenant admins cannot touch the catalogue.

use anyhow::{ensure, Context, Result};
use orchard_sim::{SimConfig, SimDevice};
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::Role;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn feed() -> Value {
    json!({"PublicAssetSets": {"iOS": [
        {"ProductVersion": "18.2", "Build": "22C152", "PostingDate": "2024-12-11",
         "SupportedDevices": ["iPad13,18", "J307AP", "iPad7,5"]},
        {"ProductVersion": "18.1", "Build": "22B83", "PostingDate": "2024-10-28",
         "SupportedDevices": ["iPad13,18", "iPad7,5"]}
    ]}})
}

/// A local feed server of gdmf's shape (plain HTTP on loopback): answers every request with `doc`.
async fn serve_feed(doc: Value) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v2/pmv", listener.local_addr()?);
    let body = doc.to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    Ok(url)
}

async fn compliance(server: &TestServer, tenant: &str) -> Result<Value> {
    server
        .get(&format!("/api/v1/tenants/{tenant}/os-compliance"))
        .await
}

fn state_of(report: &Value, device_id: &str) -> (String, Option<String>) {
    report["devices"]
        .as_array()
        .and_then(|list| list.iter().find(|d| d["device_id"] == device_id))
        .map(|d| {
            (
                d["state"].as_str().unwrap_or("").to_owned(),
                d["reason"].as_str().map(str::to_owned),
            )
        })
        .unwrap_or_default()
}

async fn id_of(server: &TestServer, d: &SimDevice) -> Result<String> {
    Ok(server.device_by_udid(d.udid()).await?["id"]
        .as_str()
        .context("id")?
        .to_owned())
}

async fn scenario(backend: Backend) -> Result<()> {
    let url = serve_feed(feed()).await?;
    let Some(server) = TestServer::start_with(backend, &["--os-catalogue-url".into(), url]).await?
    else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let admin = server.create_token(Role::Admin, Some(&physics), "physics-admin")?;

    // The catalogue: operators only; refreshed from the feed.
    let (s, _) = server
        .api(&admin, Method::GET, "/api/v1/os-catalogue", None)
        .await?;
    ensure!(s == 403, "tenant admin reads the catalogue → {s}");
    let (s, _) = server
        .api(
            &admin,
            Method::PUT,
            "/api/v1/os-catalogue",
            Some(json!({"entries": []})),
        )
        .await?;
    ensure!(s == 403, "tenant admin replaces the catalogue → {s}");
    let (s, body) = server
        .api(
            &server.token,
            Method::PUT,
            "/api/v1/os-catalogue",
            Some(json!({"entries": [
            {"product_type": "iPad13,18", "os_version": "18.x", "build": "22C152"}]})),
        )
        .await?;
    ensure!(
        s == 400
            && body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("entries[0]: os_version"),
        "{body}"
    );
    let refreshed = server
        .post("/api/v1/os-catalogue/refresh", json!(null))
        .await?;
    ensure!(
        refreshed["entries"] == 4 && refreshed["revision"] == 1,
        "{refreshed}"
    );
    let latest = server.get("/api/v1/os-catalogue").await?;
    ensure!(
        latest["latest"].as_array().is_some_and(|l| l
            .iter()
            .any(|e| e["product_type"] == "iPad13,18" && e["os_version"] == "18.2")),
        "{latest}"
    );

    let config = |os: &str, build: &str| SimConfig {
        os_version: os.into(),
        build_version: build.into(),
        ..server.sim_config()
    };
    let mut modern = server
        .enroll_devices(&config("18.1", "22B83"), &physics, 2)
        .await?;
    let mut old = server
        .enroll_devices(&config("16.7", "20H19"), &physics, 1)
        .await?;
    let ids = [
        id_of(&server, &modern[0]).await?,
        id_of(&server, &modern[1]).await?,
        id_of(&server, &old[0]).await?,
    ];

    // Pinned 18.2 by a deadline far ahead.
    let (s, body) = server
        .api(
            &admin,
            Method::PUT,
            &format!("/api/v1/tenants/{physics}/os-policy"),
            Some(json!({"target": "pinned", "version": "18.2", "deadline": "2099-01-01T09:00:00"})),
        )
        .await?;
    ensure!(s == 200, "{body}");
    let report = compliance(&server, &physics).await?;
    ensure!(
        report["summary"]["text"] == "0 of 3 on 18.2, 3 behind",
        "{report}"
    );
    let old_history = server.commands_of(&ids[2]).await?;
    let available: Vec<&Value> = old_history
        .iter()
        .filter(|c| c["request_type"] == "AvailableOSUpdates")
        .collect();
    ensure!(available.len() == 1, "{old_history:?}");
    ensure!(!old_history
        .iter()
        .any(|c| c["request_type"] == "DeclarativeManagement"));

    // iOS 18: sync, then the update runs step by step, each step reported through the status channel.
    for d in modern.iter_mut() {
        d.poll().await?;
    }
    ensure!(modern[0].advance_software_update().await?.as_deref() == Some("downloading"));
    let report = compliance(&server, &physics).await?;
    ensure!(state_of(&report, &ids[0]).0 == "downloading", "{report}");
    ensure!(modern[0].advance_software_update().await?.as_deref() == Some("prepared"));
    let report = compliance(&server, &physics).await?;
    ensure!(state_of(&report, &ids[0]).0 == "installing", "{report}");
    modern[0].advance_software_update().await?;
    ensure!(modern[0].advance_software_update().await?.as_deref() == Some("none"));
    ensure!(modern[0].state.os_version == "18.2");
    modern[1].advance_software_update().await?;
    modern[1].fail_software_update("not enough storage").await?;
    let report = compliance(&server, &physics).await?;
    ensure!(state_of(&report, &ids[0]).0 == "current", "{report}");
    ensure!(
        state_of(&report, &ids[1]) == ("failed".into(), Some("not enough storage".into())),
        "{report}"
    );
    // The device's facts follow its declarative status.
    let detail = server.get(&format!("/api/v1/devices/{}", ids[0])).await?;
    ensure!(detail["os_version"] == "18.2", "{detail}");

    // iOS 16: AvailableOSUpdates → ScheduleOSUpdate (the offered product) → OSUpdateStatus, in one session.
    old[0].poll().await?;
    let history = server.commands_of(&ids[2]).await?;
    for kind in ["AvailableOSUpdates", "ScheduleOSUpdate", "OSUpdateStatus"] {
        let of_kind: Vec<&Value> = history
            .iter()
            .filter(|c| c["request_type"] == kind)
            .collect();
        ensure!(
            of_kind.len() == 1 && of_kind[0]["status"] == "acknowledged",
            "{kind}: {history:?}"
        );
    }
    let report = compliance(&server, &physics).await?;
    let (state, _) = state_of(&report, &ids[2]);
    ensure!(state == "installing", "{report}");
    // The iPad installs and restarts; the next inventory shows 18.2.
    server
        .post(
            &format!("/api/v1/devices/{}/commands", ids[2]),
            json!({"type": "DeviceInformation", "queries": ["OSVersion", "BuildVersion"]}),
        )
        .await?;
    old[0].poll().await?;
    ensure!(old[0].state.os_version == "18.2");
    let report = compliance(&server, &physics).await?;
    ensure!(state_of(&report, &ids[2]).0 == "current", "{report}");
    ensure!(
        report["summary"]["text"] == "2 of 3 on 18.2, 1 failed",
        "{report}"
    );
    ensure!(report["summary"]["current"] == 2 && report["summary"]["failed"] == 1);
    // Nothing is queued twice: a re-evaluation (the inventory just now) left the finished update alone.
    let history = server.commands_of(&ids[2]).await?;
    ensure!(
        history
            .iter()
            .filter(|c| c["request_type"] == "ScheduleOSUpdate")
            .count()
            == 1
    );

    // A deadline in the past: the device still behind shows it.
    let mut late = server
        .enroll_devices(&config("18.1", "22B83"), &physics, 1)
        .await?;
    server
        .api(
            &admin,
            Method::PUT,
            &format!("/api/v1/tenants/{physics}/os-policy"),
            Some(json!({"target": "latest", "deadline": "2020-01-01T09:00:00"})),
        )
        .await?;
    late[0].poll().await?;
    let late_id = id_of(&server, &late[0]).await?;
    let report = compliance(&server, &physics).await?;
    ensure!(
        state_of(&report, &late_id).0 == "deadline_missed",
        "{report}"
    );
    ensure!(report["policy"]["target"] == "latest");
    let audit = server
        .get("/api/v1/audit?action=os_catalogue.refresh")
        .await?;
    ensure!(
        audit["items"].as_array().map_or(0, Vec::len) == 1,
        "{audit}"
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    os_currency => scenario;
}
