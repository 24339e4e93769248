//! Profiles delivered through declarative management (`configuration.legacy`), end to end on SQLite and
//! PostgreSQL with the real server and simulated iPads. An assignment with delivery `declaration` puts the
//! profile in the declaration set of iPads on iOS 15 or later — they download it from Orchard's ProfileURL,
//! install it and report it, and no InstallProfile is queued for them — while an iPad on iOS 14 gets
//! InstallProfile. A new version is fetched again under a new URL, the old URL stops working; unassigning
//! removes the profile through the set (no RemoveProfile). The URL works only as Orchard made it: an altered
//! tag, another device's id or an outdated version answer 404, and a bad delivery value is refused naming it.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use orchard_sim::{SimConfig, SimDevice};
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::Role;
use reqwest::Method;
use serde_json::{json, Value};

const IDENTIFIER: &str = "edu.example.declared-wifi";

fn ios(server: &TestServer, version: &str, build: &str) -> SimConfig {
    SimConfig {
        os_version: version.into(),
        build_version: build.into(),
        ..server.sim_config()
    }
}

fn installed_uuid(ipad: &SimDevice) -> Option<String> {
    ipad.state
        .installed_profiles
        .iter()
        .find(|p| p.identifier == IDENTIFIER)
        .map(|p| p.uuid.clone())
}

/// Polls the iPad (it runs the DeclarativeManagement command and syncs) until `done` holds; bounded.
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

/// The ProfileURL of the profile's declaration as the iPad holds it.
fn profile_url(ipad: &SimDevice, profile_id: &str) -> Option<String> {
    ipad.state
        .ddm
        .get("")?
        .declarations
        .get(&format!("configuration/orchard.profile.{profile_id}"))?
        .payload
        .get("ProfileURL")?
        .as_str()
        .map(str::to_owned)
}

async fn count_commands(server: &TestServer, device_id: &str, kind: &str) -> Result<usize> {
    Ok(server
        .commands_of(device_id)
        .await?
        .iter()
        .filter(|c| c["request_type"] == kind)
        .count())
}

async fn device_row(
    server: &TestServer,
    tenant: &str,
    profile_id: &str,
    device_id: &str,
) -> Result<Value> {
    let state = server
        .get(&format!(
            "/api/v1/tenants/{tenant}/profiles/{profile_id}/devices"
        ))
        .await?;
    state["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["device_id"] == device_id)
        .cloned()
        .with_context(|| format!("{device_id}'s profile state in {state}"))
}

/// Polls the API until the device's row satisfies `done`; bounded.
async fn row_until(
    server: &TestServer,
    tenant: &str,
    profile_id: &str,
    device_id: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let mut last = Value::Null;
    for _ in 0..200 {
        if let Ok(row) = device_row(server, tenant, profile_id, device_id).await {
            if done(&row) {
                return Ok(row);
            }
            last = row;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("row never reached the expected state: {last}")
}

async fn scenario(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let admin = server.create_token(Role::Admin, Some(&physics), "physics-admin")?;
    let mut modern = server
        .enroll_devices(&ios(&server, "18.1", "22B83"), &physics, 2)
        .await?;
    let mut old = server
        .enroll_devices(&ios(&server, "14.8", "18H17"), &physics, 1)
        .await?;
    let mut ids = Vec::new();
    for ipad in modern.iter().chain(old.iter()) {
        ids.push(
            server.device_by_udid(ipad.udid()).await?["id"]
                .as_str()
                .context("device id")?
                .to_owned(),
        );
    }
    // The server learns each iPad's OS version from its inventory.
    for (ipad, id) in modern.iter_mut().chain(old.iter_mut()).zip(&ids) {
        server
            .post(
                &format!("/api/v1/devices/{id}/commands"),
                json!({"type": "DeviceInformation", "queries": ["OSVersion"]}),
            )
            .await?;
        ipad.poll().await?;
    }

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

    // A delivery that does not exist is refused, naming the field.
    let assignments = format!("/api/v1/tenants/{physics}/assignments");
    let (status, refused) = server
        .api(
            &admin,
            Method::POST,
            &assignments,
            Some(
                json!({"object_kind": "profile", "object_id": profile_id, "all_devices": true,
                        "delivery": "carrier-pigeon"}),
            ),
        )
        .await?;
    ensure!(
        status == 422
            && refused["error"]["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["path"] == "delivery")),
        "bad delivery → {status}: {refused}"
    );

    // 1. Assigned as a declaration: the iOS 18 iPads get it through their declaration set.
    let (status, assignment) = server
        .api(
            &admin,
            Method::POST,
            &assignments,
            Some(
                json!({"object_kind": "profile", "object_id": profile_id, "all_devices": true,
                        "delivery": "declaration"}),
            ),
        )
        .await?;
    ensure!(
        status == 201 && assignment["delivery"] == "declaration",
        "{status}: {assignment}"
    );
    let assignment_id = assignment["id"].as_str().context("id")?.to_owned();
    for (ipad, id) in modern.iter_mut().zip(&ids) {
        poll_until(ipad, "the declared profile installed", |d| {
            installed_uuid(d).as_deref() == Some(v1_uuid.as_str())
        })
        .await?;
        ensure!(
            count_commands(&server, id, "InstallProfile").await? == 0,
            "no InstallProfile for an iOS 18 iPad"
        );
        ensure!(count_commands(&server, id, "DeclarativeManagement").await? >= 1);
        let row = row_until(&server, &physics, &profile_id, id, |r| {
            r["installed_version"] == 1
        })
        .await?;
        ensure!(
            row["declared_version"] == 1 && row["state"] == "installed" && row["assigned"] == true,
            "{row}"
        );
    }
    // The iOS 14 iPad cannot take it as a declaration: InstallProfile.
    poll_until(&mut old[0], "InstallProfile on iOS 14", |d| {
        installed_uuid(d).as_deref() == Some(v1_uuid.as_str())
    })
    .await?;
    ensure!(count_commands(&server, &ids[2], "InstallProfile").await? == 1);

    // 2. The ProfileURL works exactly as Orchard made it.
    let v1_url = profile_url(&modern[0], &profile_id).context("iPad 0's ProfileURL")?;
    let other_url = profile_url(&modern[1], &profile_id).context("iPad 1's ProfileURL")?;
    ensure!(
        v1_url.starts_with("https://") && v1_url != other_url,
        "{v1_url}"
    );
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&server.ca_pem)?)
        .build()?;
    let fetched = client.get(&v1_url).send().await?;
    ensure!(fetched.status() == 200, "{}", fetched.status());
    ensure!(
        fetched
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/x-apple-aspen-config"),
        "{:?}",
        fetched.headers()
    );
    ensure!(!fetched.bytes().await?.is_empty());
    let (head, tag) = v1_url.rsplit_once('/').context("tag")?;
    let mut altered = tag.to_owned();
    altered.replace_range(0..1, if tag.starts_with('0') { "1" } else { "0" });
    let other_device = v1_url.replace(&ids[0], &ids[1]);
    let other_version = format!("{}/2/{tag}", head.rsplit_once('/').context("version")?.0);
    for (what, url) in [
        ("altered tag", format!("{head}/{altered}")),
        ("another device's id", other_device),
        ("another version", other_version),
        ("no tag", head.to_owned()),
        ("a tag that is not hex", format!("{head}/zz")),
    ] {
        let status = client.get(&url).send().await?.status();
        ensure!(status == 404, "{what} → {status}");
    }

    // 3. A new version: fetched again under a new URL; the old URL stops working.
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
    poll_until(&mut modern[0], "version 2 from its declaration", |d| {
        installed_uuid(d).as_deref() == Some(v2_uuid.as_str())
    })
    .await?;
    row_until(&server, &physics, &profile_id, &ids[0], |r| {
        r["installed_version"] == 2 && r["declared_version"] == 2
    })
    .await?;
    ensure!(profile_url(&modern[0], &profile_id).is_some_and(|u| u != v1_url));
    let status = client.get(&v1_url).send().await?.status();
    ensure!(status == 404, "the outdated URL → {status}");
    ensure!(count_commands(&server, &ids[0], "InstallProfile").await? == 0);

    // A retired iPad's URL stops working: iPad 1 takes version 2, then checks out.
    poll_until(&mut modern[1], "version 2 on iPad 1", |d| {
        installed_uuid(d).as_deref() == Some(v2_uuid.as_str())
    })
    .await?;
    let retired_url = profile_url(&modern[1], &profile_id).context("iPad 1's v2 URL")?;
    ensure!(client.get(&retired_url).send().await?.status() == 200);
    modern[1].check_out().await?;
    let status = client.get(&retired_url).send().await?.status();
    ensure!(status == 404, "a checked-out iPad's URL → {status}");

    // 4. Unassigned: the declaration goes and the iPad removes the profile; no RemoveProfile.
    let profile_url_before_unassign =
        profile_url(&modern[0], &profile_id).context("iPad 0's v2 URL")?;
    let (status, _) = server
        .api(
            &admin,
            Method::DELETE,
            &format!("{assignments}/{assignment_id}"),
            None,
        )
        .await?;
    ensure!(status == 204, "delete → {status}");
    poll_until(&mut modern[0], "removal through the set", |d| {
        installed_uuid(d).is_none()
    })
    .await?;
    ensure!(
        modern[0].state.enrolled && modern[0].state.enrollment_profile.is_some(),
        "the enrollment profile is never touched"
    );
    ensure!(count_commands(&server, &ids[0], "RemoveProfile").await? == 0);
    let status = client
        .get(profile_url_before_unassign.as_str())
        .send()
        .await?
        .status();
    ensure!(status == 404, "an unassigned profile's URL → {status}");
    let row = row_until(&server, &physics, &profile_id, &ids[0], |r| {
        r["declared_version"].is_null()
    })
    .await?;
    ensure!(row["installed_version"].is_null(), "{row}");
    let url = profile_url(&modern[0], &profile_id);
    ensure!(url.is_none(), "the declaration is gone from iPad 0's set");
    Ok(())
}

orchard_testkit::backend_tests! {
    declared_profiles_e2e => scenario;
}
