//! App installs through Apps and Books device licences, end to end on SQLite and PostgreSQL: the real binary, the
//! local Apps and Books server over TLS and simulated iPads that ask it whether their serial holds a licence
//! before they install (and refuse without one, as a real iPad does).
//!
//! `installs`: an app assigned to a department's group gets licences for exactly the member serials, is installed
//! and reported Managed; Orchard's counts match the server's after every step; running out of licences shows the
//! shortfall per app and per device and completes once licences are added; leaving the group removes the app and
//! frees its licence; an erase frees the licence; another department sees none of it; bad input names its field.
//!
//! `apple_trouble`: batches within the announced limits with a 429 (Retry-After) on the way and one serial that
//! Apple refuses: every other serial associated exactly once, the refused one failed with Apple's reason; an expired
//! token and a location claimed by another MDM are reported, their devices wait, and nothing is taken over.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use orchard_sim::SimDevice;
use orchard_testkit::apple::AppleVpp;
use orchard_testkit::server::TestServer;
use orchard_testkit::webhooks::WebhookReceiver;
use orchard_testkit::Backend;
use orchard_types::Role;
use orchard_vpp::fake::{FakeVppConfig, FakeVppServer};
use orchard_vpp::{Limits, MdmInfo};
use reqwest::Method;
use serde_json::{json, Value};

const APP: &str = "361309726";
const CONFIGURATION: &str =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>\
    <key>serverURL</key><string>https://notes.example.edu</string></dict></plist>";

/// A client that trusts the local Apps and Books server, for the simulated iPads' licence question.
fn app_store_client(fake: &FakeVppServer) -> Result<reqwest::Client> {
    let root = fake.root_certificate_der().context("fake vpp root")?;
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_der(&root)?)
        .build()?)
}

fn has_app(ipad: &SimDevice) -> bool {
    ipad.state
        .installed_apps
        .iter()
        .any(|a| a.itunes_store_id == Some(APP.parse().unwrap_or_default()) && a.managed)
}

/// Lets every iPad run its commands until `done` holds (the reconciler and the licence pass run beside the
/// requests that woke them). Bounded: a pass that never acts fails the test instead of hanging it.
async fn settle<F, Fut>(ipads: &mut [SimDevice], what: &str, done: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    for _ in 0..400 {
        for ipad in ipads.iter_mut() {
            if ipad.state.enrolled {
                ipad.poll().await?;
            }
        }
        if done().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("gave up waiting: {what}")
}

/// `{serial: state}` of the app's devices as Orchard shows them.
async fn device_states(
    server: &TestServer,
    tenant: &str,
) -> Result<std::collections::BTreeMap<String, (String, Option<String>)>> {
    let v = server
        .get(&format!("/api/v1/tenants/{tenant}/apps/{APP}/devices"))
        .await?;
    Ok(v["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(|d| {
            (
                d["serial_number"].as_str().unwrap_or_default().to_owned(),
                (
                    d["state"].as_str().unwrap_or_default().to_owned(),
                    d["reason"].as_str().map(str::to_owned),
                ),
            )
        })
        .collect())
}

async fn app_view(server: &TestServer, tenant: &str) -> Result<Value> {
    let apps = server
        .get(&format!("/api/v1/tenants/{tenant}/apps"))
        .await?;
    apps["items"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["adam_id"] == APP))
        .cloned()
        .context("app listed")
}

async fn counts_match(
    server: &TestServer,
    tenant: &str,
    fake: &FakeVppServer,
    token: &str,
) -> Result<()> {
    // Orchard syncs the counts right after the licence pass that changed them, in the same job run: a check
    // made between the pass's last Apple call and that sync sees the old counts, so it waits (bounded) for
    // the sync instead of depending on when it looks.
    let mut last = String::new();
    for _ in 0..200 {
        let app = app_view(server, tenant).await?;
        let ours = (
            app["total"].as_i64().context("total")?,
            app["assigned"].as_i64().context("assigned")?,
            app["available"].as_i64().context("available")?,
        );
        let theirs = fake.counts(token, APP).context("server counts")?;
        if ours == theirs {
            return Ok(());
        }
        last = format!("orchard {ours:?} ≠ server {theirs:?}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    anyhow::bail!("{last}")
}

fn serials(ipads: &[SimDevice], which: &[usize]) -> BTreeSet<(String, String)> {
    which
        .iter()
        .map(|&i| (APP.to_owned(), ipads[i].state.serial_number.clone()))
        .collect()
}

struct Department {
    id: String,
    admin: String,
    ipads: Vec<SimDevice>,
    device_ids: Vec<String>,
}

async fn department(
    server: &TestServer,
    fake: &FakeVppServer,
    name: &str,
    slug: &str,
    ipads: usize,
) -> Result<Department> {
    let id = server.create_tenant(name, slug).await?;
    let admin = server.create_token(Role::Admin, Some(&id), &format!("{slug}-admin"))?;
    let mut list = server
        .enroll_devices(&server.sim_config(), &id, ipads)
        .await?;
    let client = app_store_client(fake)?;
    let mut device_ids = Vec::new();
    for ipad in &mut list {
        ipad.use_app_store(fake.base_url(), client.clone());
        device_ids.push(
            server.device_by_udid(&ipad.state.udid).await?["id"]
                .as_str()
                .context("device id")?
                .to_owned(),
        );
    }
    Ok(Department {
        id,
        admin,
        ipads: list,
        device_ids,
    })
}

async fn upload(server: &TestServer, d: &Department, token: &str) -> Result<Value> {
    let (status, v) = server
        .api(
            &d.admin,
            Method::PUT,
            &format!("/api/v1/tenants/{}/apps/token", d.id),
            Some(json!({"content_token": token})),
        )
        .await?;
    ensure!(status == 200, "upload → {status}: {v}");
    Ok(v)
}

async fn static_group(
    server: &TestServer,
    d: &Department,
    name: &str,
    members: &[usize],
) -> Result<String> {
    let groups = format!("/api/v1/tenants/{}/groups", d.id);
    let (status, group) = server
        .api(
            &d.admin,
            Method::POST,
            &groups,
            Some(json!({"name": name, "kind": "static"})),
        )
        .await?;
    ensure!(status == 201, "{status}: {group}");
    let group_id = group["id"].as_str().context("group id")?.to_owned();
    let ids: Vec<&String> = members.iter().map(|&i| &d.device_ids[i]).collect();
    let (status, added) = server
        .api(
            &d.admin,
            Method::POST,
            &format!("{groups}/{group_id}/members"),
            Some(json!({"device_ids": ids})),
        )
        .await?;
    ensure!(status == 200, "{status}: {added}");
    Ok(group_id)
}

async fn assign(server: &TestServer, d: &Department, group: &str) -> Result<Value> {
    let (status, created) = server
        .api(
            &d.admin,
            Method::POST,
            &format!("/api/v1/tenants/{}/assignments", d.id),
            Some(
                json!({"object_kind": "app", "object_id": APP, "groups": [group],
                        "app": {"configuration": CONFIGURATION}}),
            ),
        )
        .await?;
    ensure!(status == 201, "assignment → {status}: {created}");
    Ok(created)
}

async fn installs(backend: Backend) -> Result<()> {
    let vpp = AppleVpp::start(FakeVppConfig {
        pending_polls: 0,
        ..FakeVppConfig::default()
    })
    .await?;
    let fake = &vpp.server;
    let mut args = vpp.serve_args();
    args.extend(["--reconcile-retry-seconds".into(), "0".into()]);
    // Physics' webhook receiver hears of its licences and app installs.
    let receiver = WebhookReceiver::start().await?;
    args.extend([
        "--danger-webhook-allow-http-localhost".into(),
        "--webhook-interval-seconds".into(),
        "1".into(),
    ]);
    let Some(server) = TestServer::start_with(backend, &args).await? else {
        return Ok(());
    };
    let mut physics = department(&server, fake, "Physics", "phys", 3).await?;
    let chemistry = department(&server, fake, "Chemistry", "chem", 1).await?;
    let viewer = server.create_token(Role::Viewer, Some(&physics.id), "phys-viewer")?;
    let token = fake.add_location("Physics Library");
    fake.add_asset(&token, APP, 2, true);
    fake.add_asset(&token, "408709785", 5, false);
    upload(&server, &physics, &token).await?;
    let (status, hook) = server
        .api(
            &physics.admin,
            Method::POST,
            &format!("/api/v1/tenants/{}/webhooks", physics.id),
            Some(json!({"url": receiver.url, "event_types": ["app.licence", "app.result"]})),
        )
        .await?;
    ensure!(status == 201, "{status} {hook}");
    let cart = static_group(&server, &physics, "Cart A", &[0, 1]).await?;
    let assignments = format!("/api/v1/tenants/{}/assignments", physics.id);

    // Bad input names its field; a viewer is refused; another department's app is unknown.
    for (body, field) in [
        (
            json!({"object_kind": "app", "object_id": "999999999", "groups": [cart]}),
            "object_id",
        ),
        (
            json!({"object_kind": "app", "object_id": "408709785", "groups": [cart]}),
            "object_id",
        ),
        (
            json!({"object_kind": "app", "object_id": APP, "groups": [cart], "app": {"configuration": "not a plist"}}),
            "app.configuration",
        ),
        (
            json!({"object_kind": "app", "object_id": APP, "groups": [cart], "app": {"install_behaviour": "maybe"}}),
            "app.install_behaviour",
        ),
        (
            json!({"object_kind": "profile", "object_id": APP, "groups": [cart], "app": {}}),
            "app",
        ),
    ] {
        let (status, v) = server
            .api(
                &physics.admin,
                Method::POST,
                &assignments,
                Some(body.clone()),
            )
            .await?;
        ensure!(
            status == 422 && v.to_string().contains(&format!("\"{field}\"")),
            "{body} → {status}: {v}"
        );
    }
    let (status, _) = server
        .api(
            &viewer,
            Method::POST,
            &assignments,
            Some(json!({"object_kind": "app", "object_id": APP, "groups": [cart]})),
        )
        .await?;
    ensure!(status == 403, "viewer assignment → {status}");
    let (status, v) = server
        .api(
            &chemistry.admin,
            Method::POST,
            &format!("/api/v1/tenants/{}/assignments", chemistry.id),
            Some(json!({"object_kind": "app", "object_id": APP, "all_devices": true})),
        )
        .await?;
    ensure!(
        status == 422 && v.to_string().contains("object_id"),
        "{status}: {v}"
    );

    // Assigned to the cart: licences for exactly its serials, installed with the configuration, reported Managed.
    let created = assign(&server, &physics, &cart).await?;
    ensure!(
        created["app"]["install_behaviour"] == "required",
        "{created}"
    );
    let phys = physics.id.clone();
    settle(
        &mut physics.ipads,
        "cart installed and reported managed",
        || async {
            let states = device_states(&server, &phys).await?;
            Ok(states.len() == 2 && states.values().all(|(s, _)| s == "installed"))
        },
    )
    .await?;
    ensure!(
        fake.associations(&token) == serials(&physics.ipads, &[0, 1]),
        "{:?}",
        fake.associations(&token)
    );
    for i in [0, 1] {
        let ipad = &physics.ipads[i];
        ensure!(has_app(ipad), "iPad {i} has no app");
        let app = ipad
            .state
            .installed_apps
            .iter()
            .find(|a| a.itunes_store_id.is_some())
            .context("app")?;
        ensure!(
            app.device_based_vpp && app.has_configuration && app.management_flags == 1,
            "{app:?}"
        );
    }
    ensure!(!has_app(&physics.ipads[2]), "iPad 2 is not in the cart");
    counts_match(&server, &phys, fake, &token).await?;
    let commands = server.commands_of(&physics.device_ids[0]).await?;
    let installs = commands
        .iter()
        .filter(|c| c["request_type"] == "InstallApplication")
        .count();
    ensure!(installs == 1, "{installs} InstallApplication for iPad 0");

    // iPad 2 joins: no licence left → shortage, visible per app and per device; nothing installed.
    let members = format!("/api/v1/tenants/{phys}/groups/{cart}/members");
    server
        .api(
            &physics.admin,
            Method::POST,
            &members,
            Some(json!({"device_ids": [physics.device_ids[2]]})),
        )
        .await?;
    let serial2 = physics.ipads[2].state.serial_number.clone();
    settle(&mut physics.ipads, "iPad 2 short of a licence", || async {
        let states = device_states(&server, &phys).await?;
        Ok(states.get(&serial2).is_some_and(|(s, _)| s == "shortage"))
    })
    .await?;
    let states = device_states(&server, &phys).await?;
    ensure!(
        states[&serial2]
            .1
            .as_deref()
            .is_some_and(|r| r.contains("licence")),
        "{states:?}"
    );
    let app = app_view(&server, &phys).await?;
    ensure!(
        app["devices"]["shortage"] == 1 && app["devices"]["installed"] == 2,
        "{app}"
    );
    ensure!(!has_app(&physics.ipads[2]), "installed without a licence");
    counts_match(&server, &phys, fake, &token).await?;
    // The webhook told physics: two licences associated, iPad 2 short of one, and the installs' results.
    let events = |received: &[orchard_testkit::webhooks::ReceivedRequest]| -> Vec<Value> {
        received
            .iter()
            .filter_map(|r| serde_json::from_slice(&r.body).ok())
            .collect()
    };
    let received = receiver
        .wait_until(std::time::Duration::from_secs(60), |r| {
            let events = events(r);
            let licence = |outcome: &str| {
                events
                    .iter()
                    .filter(|e| e["type"] == "app.licence" && e["data"]["outcome"] == outcome)
                    .count()
            };
            licence("associated") >= 2
                && licence("shortage") >= 1
                && events.iter().any(|e| {
                    e["type"] == "app.result"
                        && e["data"]["request_type"] == "InstallApplication"
                        && e["data"]["status"] == "acknowledged"
                })
        })
        .await?;
    let received = events(&received);
    ensure!(
        received.iter().all(|e| e["tenant"] == phys.as_str()),
        "{received:?}"
    );
    ensure!(
        received.iter().any(|e| e["type"] == "app.licence"
            && e["data"]["outcome"] == "shortage"
            && e["data"]["serial_number"] == serial2.as_str()
            && e["data"]["adam_id"] == APP),
        "{received:?}"
    );

    // Licences bought: the next sync sees them and iPad 2 completes.
    fake.set_total(&token, APP, 3);
    let (status, _) = server
        .api(
            &physics.admin,
            Method::POST,
            &format!("/api/v1/tenants/{phys}/apps/sync"),
            None,
        )
        .await?;
    ensure!(status == 200, "sync → {status}");
    settle(
        &mut physics.ipads,
        "iPad 2 installed after licences were added",
        || async {
            let states = device_states(&server, &phys).await?;
            Ok(states.values().filter(|(s, _)| s == "installed").count() == 3)
        },
    )
    .await?;
    ensure!(has_app(&physics.ipads[2]), "iPad 2 has no app");
    ensure!(
        fake.associations(&token) == serials(&physics.ipads, &[0, 1, 2]),
        "associations"
    );
    counts_match(&server, &phys, fake, &token).await?;

    // iPad 1 leaves the cart: the app is removed and its licence freed.
    server
        .api(
            &physics.admin,
            Method::POST,
            &format!("{members}/remove"),
            Some(json!({"device_ids": [physics.device_ids[1]]})),
        )
        .await?;
    settle(&mut physics.ipads, "iPad 1's licence freed", || async {
        Ok(device_states(&server, &phys).await?.len() == 2)
    })
    .await?;
    // The licence and the RemoveApplication are separate steps of the reconciler: the licence can be freed
    // before iPad 1 has run the removal queued beside it, so let it run its commands (bounded).
    for _ in 0..400 {
        if !has_app(&physics.ipads[1]) {
            break;
        }
        physics.ipads[1].poll().await?;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    ensure!(!has_app(&physics.ipads[1]), "iPad 1 kept the app");
    ensure!(
        fake.associations(&token) == serials(&physics.ipads, &[0, 2]),
        "associations after leaving"
    );
    counts_match(&server, &phys, fake, &token).await?;

    // Token expiry on the open /metrics: the departments' tokens in aggregate (the soonest), never a tenant
    // id (it would tell anyone who can reach /metrics which departments exist), organization, location or
    // token. Per-department series need the metrics token (tests/credentials_e2e.rs).
    let metrics = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    // The local Apps and Books server issues tokens for a year.
    let days: Option<i64> = metrics.lines().find_map(|l| {
        l.strip_prefix(
            "orchard_credential_days_left{kind=\"apps_token\",owner=\"departments\",credential=\"soonest\"} ",
        )?
        .parse()
        .ok()
    });
    ensure!(
        days.is_some_and(|d| (360..=365).contains(&d)),
        "{days:?}: {metrics}"
    );
    ensure!(
        !metrics.contains(&phys.to_string())
            && !metrics.contains("Physics Library")
            && !metrics.contains(&token),
        "metrics name the department or the location: {metrics}"
    );

    // Renewal (a new token for the same location) keeps the assignment, the licences and the installs; the
    // next licence goes through the new token.
    let renewed = fake.renew_token(&token).context("renew")?;
    upload(&server, &physics, &renewed).await?;
    let token = renewed;
    let listed = server.get(&assignments).await?;
    ensure!(
        listed["items"].as_array().is_some_and(|a| a.len() == 1
            && a[0]["object_id"] == APP
            && a[0]["app"]["configuration"] == CONFIGURATION),
        "{listed}"
    );
    ensure!(
        device_states(&server, &phys)
            .await?
            .values()
            .filter(|(s, _)| s == "installed")
            .count()
            == 2,
        "installs after renewal"
    );
    server
        .api(
            &physics.admin,
            Method::POST,
            &members,
            Some(json!({"device_ids": [physics.device_ids[1]]})),
        )
        .await?;
    settle(
        &mut physics.ipads,
        "iPad 1 back in the cart after renewal",
        || async {
            let states = device_states(&server, &phys).await?;
            Ok(states.len() == 3 && states.values().all(|(s, _)| s == "installed"))
        },
    )
    .await?;
    ensure!(
        fake.associations(&token) == serials(&physics.ipads, &[0, 1, 2]),
        "associations after renewal"
    );
    counts_match(&server, &phys, fake, &token).await?;
    server
        .api(
            &physics.admin,
            Method::POST,
            &format!("{members}/remove"),
            Some(json!({"device_ids": [physics.device_ids[1]]})),
        )
        .await?;
    settle(
        &mut physics.ipads,
        "iPad 1's licence freed again",
        || async { Ok(device_states(&server, &phys).await?.len() == 2) },
    )
    .await?;

    // iPad 0 is erased: its licence goes back to the department.
    let serial0 = physics.ipads[0].state.serial_number.clone();
    let (status, v) = server
        .api(
            &physics.admin,
            Method::POST,
            &format!("/api/v1/devices/{}/commands", physics.device_ids[0]),
            Some(json!({"type": "EraseDevice", "confirm_serial": serial0})),
        )
        .await?;
    ensure!(status == 201, "erase → {status}: {v}");
    settle(
        &mut physics.ipads,
        "the erased iPad's licence freed",
        || async { Ok(!device_states(&server, &phys).await?.contains_key(&serial0)) },
    )
    .await?;
    ensure!(
        fake.associations(&token) == serials(&physics.ipads, &[2]),
        "associations after erase"
    );
    counts_match(&server, &phys, fake, &token).await?;

    // Another department sees none of it.
    for path in [
        format!("/api/v1/tenants/{phys}/apps/{APP}/devices"),
        format!("/api/v1/tenants/{phys}/apps"),
        format!("/api/v1/tenants/{phys}/assignments"),
    ] {
        let (status, v) = server
            .api(&chemistry.admin, Method::GET, &path, None)
            .await?;
        ensure!(
            status == 404 && !v.to_string().contains(&serial2),
            "{path} → {status}: {v}"
        );
    }
    let (status, _) = server
        .api(
            &chemistry.admin,
            Method::GET,
            &format!("/api/v1/tenants/{}/apps/{APP}/devices", chemistry.id),
            None,
        )
        .await?;
    ensure!(status == 404, "chemistry has no such app → {status}");
    Ok(())
}

orchard_testkit::backend_tests! {
    app_installs_e2e => installs;
}

async fn apple_trouble(backend: Backend) -> Result<()> {
    let vpp = AppleVpp::start(FakeVppConfig {
        pending_polls: 0,
        limits: Limits {
            max_serial_numbers: 2,
            ..Limits::default()
        },
        ..FakeVppConfig::default()
    })
    .await?;
    let fake = &vpp.server;
    let mut args = vpp.serve_args();
    args.extend(["--reconcile-retry-seconds".into(), "0".into()]);
    let Some(server) = TestServer::start_with(backend, &args).await? else {
        return Ok(());
    };
    let mut physics = department(&server, fake, "Physics", "phys", 5).await?;
    let token = fake.add_location("Physics Library");
    fake.add_asset(&token, APP, 10, true);
    upload(&server, &physics, &token).await?;
    let cart = static_group(&server, &physics, "Cart A", &[0, 1, 2, 3, 4]).await?;

    // Apple refuses one serial, and answers 429 with Retry-After once on the way.
    let refused = physics.ipads[3].state.serial_number.clone();
    fake.fail_serial(&refused, orchard_vpp::error_numbers::INTERNAL_ERROR);
    fake.inject_fault(429, Some(1), 1);
    let before = fake.stats();
    assign(&server, &physics, &cart).await?;
    let phys = physics.id.clone();
    settle(
        &mut physics.ipads,
        "four installed, one refused",
        || async {
            let states = device_states(&server, &phys).await?;
            Ok(states.len() == 5
                && states.values().filter(|(s, _)| s == "installed").count() == 4
                && states.get(&refused).is_some_and(|(s, _)| s == "failed"))
        },
    )
    .await?;
    let states = device_states(&server, &phys).await?;
    ensure!(
        states[&refused]
            .1
            .as_deref()
            .is_some_and(|r| r.contains("9603")),
        "{states:?}"
    );
    ensure!(
        fake.associations(&token) == serials(&physics.ipads, &[0, 1, 2, 4]),
        "associations"
    );
    let stats = fake.stats();
    ensure!(
        stats.faults_served > before.faults_served,
        "the 429 was served: {stats:?}"
    );
    ensure!(
        stats.max_serials_in_request <= 2,
        "batches within the limit: {stats:?}"
    );
    // Five serials in batches of two: three associate requests, none repeated.
    ensure!(
        stats.associate_requests - before.associate_requests == 3,
        "associate requests: {stats:?}"
    );
    ensure!(!has_app(&physics.ipads[3]), "the refused iPad installed it");
    counts_match(&server, &phys, fake, &token).await?;

    // An expired token: reported, the devices wait, nothing associated.
    let mut music = department(&server, fake, "Music", "music", 1).await?;
    let music_token = fake.add_location("Music Library");
    fake.add_asset(&music_token, APP, 10, true);
    upload(&server, &music, &music_token).await?;
    let music_cart = static_group(&server, &music, "Pianos", &[0]).await?;
    fake.expire_token(&music_token);
    assign(&server, &music, &music_cart).await?;
    let music_id = music.id.clone();
    settle(
        &mut music.ipads,
        "the expired token reported on the device",
        || async {
            let states = device_states(&server, &music_id).await?;
            Ok(states.values().any(|(s, r)| {
                s == "associating" && r.as_deref().is_some_and(|r| r.contains("expired"))
            }))
        },
    )
    .await?;
    let (_, status) = server
        .api(
            &music.admin,
            Method::POST,
            &format!("/api/v1/tenants/{music_id}/apps/sync"),
            None,
        )
        .await?;
    let token_status = server
        .get(&format!("/api/v1/tenants/{music_id}/apps/token"))
        .await?;
    ensure!(
        token_status["claim_state"] == "token_error",
        "{status} {token_status}"
    );
    ensure!(
        fake.associations(&music_token).is_empty(),
        "associated with an expired token"
    );

    // A location claimed by another MDM: reported, nothing associated, nothing taken over.
    let other = MdmInfo {
        id: "jamf-pro-1".into(),
        metadata: None,
        name: "Jamf Pro".into(),
    };
    fake.claim_by_other(&token, other.clone());
    server
        .api(
            &physics.admin,
            Method::POST,
            &format!("/api/v1/tenants/{phys}/apps/sync"),
            None,
        )
        .await?;
    let token_status = server
        .get(&format!("/api/v1/tenants/{phys}/apps/token"))
        .await?;
    ensure!(
        token_status["claim_state"] == "claimed_elsewhere",
        "{token_status}"
    );
    let members = format!("/api/v1/tenants/{phys}/groups/{cart}/members");
    server
        .api(
            &physics.admin,
            Method::POST,
            &format!("{members}/remove"),
            Some(json!({"device_ids": [physics.device_ids[0]]})),
        )
        .await?;
    let serial0 = physics.ipads[0].state.serial_number.clone();
    settle(&mut physics.ipads, "iPad 0 waits to be freed", || async {
        let states = device_states(&server, &phys).await?;
        Ok(states
            .get(&serial0)
            .is_some_and(|(s, _)| s == "disassociating"))
    })
    .await?;
    ensure!(
        fake.mdm_info(&token) == Some(other),
        "the location was taken over"
    );
    ensure!(
        fake.associations(&token)
            .contains(&(APP.to_owned(), serial0)),
        "a licence was touched in a location another MDM holds"
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    app_installs_apple_trouble => apple_trouble;
}
