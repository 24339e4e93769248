//! Automated Device Enrollment end to end, through the real binary on SQLite and PostgreSQL.
//!
//! A local DEP server (TLS, real OAuth 1.0a) holds 2,000 serials. Three departments get one enrollment
//! template each (a fourth template is broken on purpose). Orchard syncs, the auto-assign rule and explicit
//! assignments (a list and a CSV export) put the serials on the templates, defining the profiles at "Apple"
//! through injected 429s and THROTTLED answers. Simulated iPads then activate the way a real one does: they ask
//! the DEP server for their cloud configuration, POST their MachineInfo signed by their Apple device identity
//! (a test device CA the server is told to trust) to `/enroll/dep`, enroll through SCEP into the template's
//! tenant, run the template's setup commands while Setup Assistant waits, and are released by
//! `DeviceConfigured`. A template demanding a newer iOS sends its iPad to a software update first. Tampered,
//! foreign and unknown-serial MachineInfo is refused. Later syncs with added, modified and deleted devices
//! and an expired cursor lose nothing and duplicate nothing.

use std::collections::HashMap;

use anyhow::{ensure, Context, Result};
use base64::Engine;
use orchard_dep::fake::FakeDepServer;
use orchard_dep::ProfileUuid;
use orchard_sim::{Activation, AppleDeviceCa, DepActivation, DeviceState, SimDevice, SimError};
use orchard_testkit::apple::AdeFixture;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::{Role, SerialNumber};
use serde_json::{json, Value};

const SERIALS: usize = 2_000;

/// A factory-fresh iPad with a given serial and its Apple identity.
fn ipad(server: &TestServer, ca: &AppleDeviceCa, serial: &str) -> Result<SimDevice> {
    let mut state = DeviceState::new_random(&server.sim_config());
    state.serial_number = serial.to_owned();
    let mut device = SimDevice::from_state(state);
    let identity = ca.issue(serial, &device.state.udid)?;
    device.set_apple_identity(&identity)?;
    Ok(device)
}

/// Command sessions until the server has nothing more for the device.
async fn settle(device: &mut SimDevice) -> Result<usize> {
    let mut handled = 0;
    for _ in 0..10 {
        let summary = device.poll().await?;
        if summary.handled.is_empty() {
            return Ok(handled);
        }
        handled += summary.handled.len();
    }
    anyhow::bail!("device {} kept getting commands", device.state.udid)
}

async fn api(
    server: &TestServer,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    server.api(token, method, path, body).await
}

async fn template(server: &TestServer, token_id: &str, spec: Value) -> Result<Value> {
    let (status, v) = api(
        server,
        &server.token,
        reqwest::Method::POST,
        &format!("/api/v1/dep-tokens/{token_id}/templates"),
        Some(spec),
    )
    .await?;
    ensure!(status == 201, "create template → {status}: {v}");
    ensure!(
        v["profile_uuid"].is_string(),
        "template not defined at apple: {v}"
    );
    Ok(v)
}

fn serial(i: usize) -> String {
    format!("ZT{i:010}")
}

async fn scenario(backend: Backend) -> Result<()> {
    let serials = FakeDepServer::make_serials("ZT", 0, SERIALS);
    ensure!(
        serials[5].as_str() == serial(5),
        "serial shape {}",
        serials[5]
    );
    let ade = AdeFixture::start(&serials).await?;
    let fake = &ade.dep.server;
    let apple = &ade.apple;
    let Some(server) = TestServer::start_with(backend, &ade.serve_args()).await? else {
        return Ok(());
    };

    let physics = server.create_tenant("Physics", "phys").await?;
    let chemistry = server.create_tenant("Chemistry", "chem").await?;
    let music = server.create_tenant("Music", "mus").await?;

    // The DEP token: key pair by Orchard, .p7m by "ASM".
    let (token_id, uploaded) = server.upload_dep_token(fake, "ASM University").await?;
    ensure!(
        uploaded["days_left"].as_i64().is_some_and(|d| d > 300),
        "token days left: {uploaded}"
    );
    let metrics = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        metrics.contains(&format!(
            "orchard_dep_token_days_left{{token=\"{token_id}\"}}"
        )),
        "{metrics}"
    );
    // Metrics name no token (nor tenant): they are readable by any scraper.
    ensure!(!metrics.contains("ASM University"), "{metrics}");
    ensure!(
        metrics.contains(&format!(
            "orchard_dep_token_expiry_warning{{token=\"{token_id}\"}} 0"
        )),
        "{metrics}"
    );

    // Templates. Physics takes every new serial (the rule); chemistry's iPads are Shared iPads; music needs
    // iPadOS 18.2 (the simulated iPads run 18.1); "Broken" runs a setup command every iPad refuses.
    let a = template(&server, &token_id, json!({
        "name": "Physics iPads", "tenant_id": physics, "auto_assign": true,
        "profile": {"skip_setup_items": ["Siri", "AppleID", "Privacy"], "department": "Physics", "support_phone_number": "+46 18 471 00 00"},
        "setup": {"device_name_pattern": "PHYS-{serial}", "organization": {"name": "Department of Physics", "email": "it@physics.example.edu"},
                  "commands": [{"type": "DeviceInformation", "queries": ["OSVersion", "DeviceName"]}]}
    })).await?;
    let b = template(
        &server,
        &token_id,
        json!({
            "name": "Chemistry carts", "tenant_id": chemistry,
            "profile": {"is_multi_user": true, "skip_setup_items": ["Siri"], "auto_advance_setup": true,
                        "is_return_to_service": true, "do_not_use_profile_from_backup": true},
            "setup": {"device_name_pattern": "CHEM-{serial}"}
        }),
    )
    .await?;
    let c = template(
        &server,
        &token_id,
        json!({
            "name": "Music studio", "tenant_id": music, "minimum_os_version": "18.2",
            "setup": {"device_name_pattern": "MUS-{serial}"}
        }),
    )
    .await?;
    let broken = template(&server, &token_id, json!({
        "name": "Broken", "tenant_id": chemistry,
        "setup": {"commands": [{"type": "InstallProfile", "payload": base64::engine::general_purpose::STANDARD.encode(b"not a profile")}]}
    })).await?;
    let uuid_of = |t: &Value| t["profile_uuid"].as_str().unwrap_or_default().to_owned();
    let defined = fake
        .profile(&ProfileUuid::parse(&uuid_of(&a))?)
        .context("profile a at apple")?;
    ensure!(
        defined.url.as_deref() == Some(server.url("/enroll/dep").as_str()),
        "profile url {:?}",
        defined.url
    );
    ensure!(!defined.anchor_certs.is_empty(), "anchor certs filled in");
    ensure!(
        defined.await_device_configured == Some(true) && defined.is_mdm_removable == Some(false),
        "{defined:?}"
    );
    ensure!(defined.skip_setup_items.len() == 3, "{defined:?}");
    // Current profile keys go to Apple only when a template sets them (Apple's default is false).
    ensure!(
        defined.auto_advance_setup.is_none() && defined.is_return_to_service.is_none(),
        "{defined:?}"
    );
    let cart = fake
        .profile(&ProfileUuid::parse(&uuid_of(&b))?)
        .context("profile b at apple")?;
    ensure!(
        cart.auto_advance_setup == Some(true)
            && cart.is_return_to_service == Some(true)
            && cart.do_not_use_profile_from_backup == Some(true)
            && cart.is_multi_user == Some(true),
        "{cart:?}"
    );
    // Another tenant's template answers like a missing one; bad specs are 400s.
    let physics_admin = server.create_token(Role::Admin, Some(&physics), "physics-admin")?;
    let chemistry_viewer = server.create_token(Role::Viewer, Some(&chemistry), "chem-viewer")?;
    let music_admin = server.create_token(Role::Admin, Some(&music), "music-admin")?;
    let (status, _) = api(
        &server,
        &physics_admin,
        reqwest::Method::GET,
        &format!(
            "/api/v1/dep-templates/{}",
            b["id"].as_str().unwrap_or_default()
        ),
        None,
    )
    .await?;
    ensure!(status == 404, "other tenant's template → {status}");
    let (status, _) = api(
        &server,
        &physics_admin,
        reqwest::Method::POST,
        &format!("/api/v1/dep-tokens/{token_id}/templates"),
        Some(json!({"name": "x", "tenant_id": physics})),
    )
    .await?;
    ensure!(status == 403, "tenant admin creating a template → {status}");
    let (status, v) = api(&server, &server.token, reqwest::Method::POST, &format!("/api/v1/dep-tokens/{token_id}/templates"),
        Some(json!({"name": "bad", "tenant_id": physics, "profile": {"skip_setup_items": ["NoSuchPane"]}}))).await?;
    ensure!(status == 400, "unknown skip key → {status}: {v}");

    // First sync through two 429s: every serial arrives and the rule assigns them all to physics.
    fake.inject_rate_limit(2, 1);
    let summary = server
        .post(&format!("/api/v1/dep-tokens/{token_id}/sync"), json!({}))
        .await?;
    ensure!(summary["active_devices"] == SERIALS, "{summary}");
    ensure!(summary["auto_assigned"] == SERIALS, "{summary}");
    ensure!(summary["assignments"]["assigned"] == SERIALS, "{summary}");

    // Chemistry by CSV export (some serials THROTTLED once), music by list, a few to the broken template.
    fake.throttle_serials(&serials[700..710], 1, 1);
    let mut csv = String::from("Asset Tag,Serial Number,Model\n");
    for i in 700..1_400 {
        csv.push_str(&format!("A-{i},{},iPad (10th generation)\n", serial(i)));
    }
    let (status, v) = api(
        &server,
        &server.token,
        reqwest::Method::POST,
        &format!("/api/v1/dep-tokens/{token_id}/assignments"),
        Some(json!({"csv": csv, "template_id": b["id"]})),
    )
    .await?;
    ensure!(
        status == 200 && v["updated"] == 700 && v["sent"]["assigned"] == 700,
        "chemistry → {status}: {v}"
    );
    let music_serials: Vec<String> = (1_400..1_990).map(serial).collect();
    let (status, v) = api(
        &server,
        &server.token,
        reqwest::Method::POST,
        &format!("/api/v1/dep-tokens/{token_id}/assignments"),
        Some(json!({"serials": music_serials, "template_id": c["id"]})),
    )
    .await?;
    ensure!(
        status == 200 && v["sent"]["assigned"] == 590,
        "music → {status}: {v}"
    );
    let broken_serials: Vec<String> = (1_990..2_000)
        .map(serial)
        .chain(["NOTOURS00001".to_owned()])
        .collect();
    let (status, v) = api(
        &server,
        &server.token,
        reqwest::Method::POST,
        &format!("/api/v1/dep-tokens/{token_id}/assignments"),
        Some(json!({"serials": broken_serials, "template_id": broken["id"]})),
    )
    .await?;
    ensure!(
        status == 200 && v["updated"] == 10 && v["unknown"] == json!(["NOTOURS00001"]),
        "broken → {status}: {v}"
    );
    for (i, t) in [
        (0, &a),
        (699, &a),
        (700, &b),
        (1_399, &b),
        (1_400, &c),
        (1_995, &broken),
    ] {
        ensure!(
            fake.assigned_profile(&serials[i])
                .map(|p| p.as_str().to_owned())
                == Some(uuid_of(t)),
            "serial {i} at apple"
        );
    }

    // Each tenant sees exactly the serials of its templates, before any has enrolled.
    for (token, expected) in [
        (&physics_admin, 700),
        (&chemistry_viewer, 710),
        (&music_admin, 590),
    ] {
        let (status, v) = api(
            &server,
            token,
            reqwest::Method::GET,
            "/api/v1/dep-devices?limit=5",
            None,
        )
        .await?;
        ensure!(
            status == 200 && v["total"] == expected,
            "tenant dep devices → {status}: {v}"
        );
    }
    let (_, v) = api(
        &server,
        &physics_admin,
        reqwest::Method::GET,
        &format!(
            "/api/v1/dep-devices?template={}",
            b["id"].as_str().unwrap_or_default()
        ),
        None,
    )
    .await?;
    ensure!(
        v["total"] == 0,
        "physics filtering on chemistry's template sees nothing: {v}"
    );

    // Zero-touch activation: two iPads per department, one on the broken template.
    let dep = DepActivation::for_server(fake);
    let mut fleet: Vec<(SimDevice, &str, &str)> = Vec::new();
    for (i, tenant, prefix) in [
        (0, physics.as_str(), "PHYS-"),
        (1, physics.as_str(), "PHYS-"),
        (700, chemistry.as_str(), "CHEM-"),
        (701, chemistry.as_str(), "CHEM-"),
        (1_400, music.as_str(), "MUS-"),
        (1_401, music.as_str(), "MUS-"),
    ] {
        let mut device = ipad(&server, apple, &serial(i))?;
        let activation = if prefix == "MUS-" {
            // Refused with the documented 403 until the iPad runs 18.2.
            match device.activate(&dep).await {
                Err(SimError::SoftwareUpdateRequired { os_version, .. }) => {
                    ensure!(os_version == "18.2", "{os_version}")
                }
                other => anyhow::bail!("music iPad on 18.1 should be sent to an update: {other:?}"),
            }
            device.activate_updating(&dep, 2).await?
        } else {
            device.activate(&dep).await?
        };
        let Activation::Enrolled(enrollment) = activation else {
            anyhow::bail!("serial {i} not enrolled: {activation:?}")
        };
        ensure!(enrollment.awaiting_configuration, "setup assistant waits");
        ensure!(
            enrollment.multi_user == (prefix == "CHEM-"),
            "shared ipad flag for {prefix}"
        );
        ensure!(
            device.is_awaiting_configuration(),
            "still in setup assistant before the first session"
        );
        fleet.push((device, tenant, prefix));
    }
    for (device, tenant, prefix) in fleet.iter_mut() {
        settle(device).await?;
        ensure!(
            !device.is_awaiting_configuration(),
            "{} still in setup assistant",
            device.state.serial_number
        );
        ensure!(
            device.device_configured_count() == 1,
            "one DeviceConfigured"
        );
        let name = format!("{prefix}{}", device.state.serial_number);
        ensure!(
            device.device_name() == name,
            "device name {} != {name}",
            device.device_name()
        );
        let found = server.device_by_udid(&device.state.udid).await?;
        ensure!(
            found["tenant_id"] == *tenant,
            "tenant of {}: {found}",
            device.state.serial_number
        );
        let id = found["id"].as_str().context("id")?;
        let setup = server.get(&format!("/api/v1/devices/{id}/setup")).await?;
        ensure!(
            setup["state"] == "configured" && setup["error"].is_null(),
            "{setup}"
        );
        let lock = server
            .get(&format!("/api/v1/devices/{id}/activation-lock"))
            .await?;
        if *prefix == "CHEM-" {
            // Apple forbids ActivationLockBypassCode on Shared iPad: not asked, nothing escrowed.
            ensure!(lock["bypass_code_escrowed"] == false, "{lock}");
        } else {
            ensure!(
                lock["bypass_code_escrowed"] == true
                    && lock["bypass_code"].as_str() == device.activation_lock_bypass_code(),
                "{lock}"
            );
        }
    }
    // The physics admin sees its two iPads and nobody else's; helpdesk-less viewers get no bypass code.
    let (_, listed) = api(
        &server,
        &physics_admin,
        reqwest::Method::GET,
        "/api/v1/devices",
        None,
    )
    .await?;
    let items = listed["items"].as_array().context("items")?;
    ensure!(
        items.len() == 2 && items.iter().all(|d| d["tenant_id"] == physics.as_str()),
        "{listed}"
    );
    let music_viewer = server.create_token(Role::Viewer, Some(&music), "music-viewer")?;
    let music_device = server.device_by_udid(&fleet[4].0.state.udid).await?;
    let (status, lock) = api(
        &server,
        &music_viewer,
        reqwest::Method::GET,
        &format!(
            "/api/v1/devices/{}/activation-lock",
            music_device["id"].as_str().unwrap_or_default()
        ),
        None,
    )
    .await?;
    ensure!(
        status == 200 && lock["bypass_code_escrowed"] == true && lock["bypass_code"].is_null(),
        "viewer sees no code: {lock}"
    );

    // The broken template: setup fails visibly, the iPad keeps waiting until its admin releases it.
    let mut stuck = ipad(&server, apple, &serial(1_995))?;
    let Activation::Enrolled(_) = stuck.activate(&dep).await? else {
        anyhow::bail!("broken-template ipad not enrolled")
    };
    settle(&mut stuck).await?;
    ensure!(
        stuck.is_awaiting_configuration(),
        "a failed setup does not release the iPad"
    );
    let stuck_id = server.device_by_udid(&stuck.state.udid).await?["id"]
        .as_str()
        .context("id")?
        .to_owned();
    let setup = server
        .get(&format!("/api/v1/devices/{stuck_id}/setup"))
        .await?;
    ensure!(
        setup["state"] == "failed"
            && setup["error"]
                .as_str()
                .is_some_and(|e| e.contains("InstallProfile")),
        "{setup}"
    );
    let (status, _) = api(
        &server,
        &chemistry_viewer,
        reqwest::Method::POST,
        &format!("/api/v1/devices/{stuck_id}/setup/release"),
        None,
    )
    .await?;
    ensure!(status == 403, "a viewer cannot release → {status}");
    let (status, released) = api(
        &server,
        &server.token,
        reqwest::Method::POST,
        &format!("/api/v1/devices/{stuck_id}/setup/release"),
        None,
    )
    .await?;
    ensure!(
        status == 200 && released["state"] == "releasing",
        "release → {status}: {released}"
    );
    settle(&mut stuck).await?;
    ensure!(!stuck.is_awaiting_configuration(), "released by hand");
    let setup = server
        .get(&format!("/api/v1/devices/{stuck_id}/setup"))
        .await?;
    ensure!(setup["state"] == "configured", "{setup}");

    // Refusals at /enroll/dep: tampered, foreign signer, a serial that is not ours. Nothing is enrolled.
    let before = server.devices().await?.len();
    let probe = ipad(&server, apple, &serial(2))?;
    let mut tampered = probe.signed_machine_info()?;
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x5a;
    let foreign = {
        let other_ca = AppleDeviceCa::generate()?;
        let mut d = ipad(&server, &other_ca, &serial(3))?;
        d.set_apple_identity(&other_ca.issue(&serial(3), &d.state.udid.clone())?)?;
        d.signed_machine_info()?
    };
    let unknown = ipad(&server, apple, "NOTOURS00002")?.signed_machine_info()?;
    for (what, body) in [
        ("tampered", tampered),
        ("foreign", foreign),
        ("unknown serial", unknown),
    ] {
        let resp = server
            .http
            .post(server.url("/enroll/dep"))
            .header("content-type", "application/pkcs7-signature")
            .body(body)
            .send()
            .await?;
        ensure!(
            resp.status() == 403,
            "{what} machineinfo → {}",
            resp.status()
        );
    }
    ensure!(
        server.devices().await?.len() == before,
        "refusals enrolled nothing"
    );

    // Later syncs: 50 new serials (taken by the rule), one modified, one released, an expired cursor and a
    // 429 on the way. Nothing is lost or duplicated.
    let added = FakeDepServer::make_serials("ZT", SERIALS, 50);
    fake.add_devices(&added);
    ensure!(
        fake.modify_device(&serials[10], |r| r.asset_tag = Some("PHYS-042".into())),
        "modify"
    );
    ensure!(fake.delete_device(&serials[11]), "delete");
    let summary = server
        .post(&format!("/api/v1/dep-tokens/{token_id}/sync"), json!({}))
        .await?;
    ensure!(
        summary["full_fetch"] == false
            && summary["auto_assigned"] == 50
            && summary["assignments"]["assigned"] == 50,
        "{summary}"
    );
    fake.expire_cursors();
    fake.inject_rate_limit(1, 1);
    let summary = server
        .post(&format!("/api/v1/dep-tokens/{token_id}/sync"), json!({}))
        .await?;
    ensure!(summary["active_devices"] == SERIALS + 50 - 1, "{summary}");
    let all = server
        .get("/api/v1/dep-devices?include_deleted=true&limit=1")
        .await?;
    ensure!(all["total"] == SERIALS + 50, "no duplicates: {all}");
    let (_, physics_view) = api(
        &server,
        &physics_admin,
        reqwest::Method::GET,
        "/api/v1/dep-devices?limit=1000",
        None,
    )
    .await?;
    ensure!(
        physics_view["total"] == 700 + 50 - 1,
        "physics after the syncs: {}",
        physics_view["total"]
    );
    let by_serial: HashMap<String, Value> = physics_view["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(|d| {
            (
                d["serial_number"].as_str().unwrap_or_default().to_owned(),
                d.clone(),
            )
        })
        .collect();
    ensure!(
        by_serial
            .get(&serial(10))
            .is_some_and(|d| d["asset_tag"] == "PHYS-042"),
        "modified device"
    );
    ensure!(
        !by_serial.contains_key(&serial(11)),
        "released device left the tenant's active list"
    );
    ensure!(
        fake.assigned_profile(&SerialNumber::parse(&serial(SERIALS + 49))?)
            .map(|p| p.as_str().to_owned())
            == Some(uuid_of(&a)),
        "new serial assigned at apple"
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    zero_touch_enrollment => scenario;
}
