//! End to end, on SQLite and PostgreSQL: declarative device management with the real server and simulated
//! iPads. A tenant's OS policy makes Orchard queue one DeclarativeManagement command per iOS 17+ device; the
//! iPad syncs (tokens, declaration-items, each declaration), applies the enforcement declaration and reports
//! status, which the device API shows per declaration. The DeclarationsToken changes exactly when the policy
//! does, and no second command is queued while one waits. A Shared iPad user channel gets its user-scoped set.
//! Another tenant cannot see or change the policy or the declarations; a device identity cannot read another
//! device's declarations; hostile DeclarativeManagement check-ins are refused.

use anyhow::{ensure, Context, Result};
use orchard_protocol::checkin::{CheckinMessage, DeclarativeManagementCheckin};
use orchard_sim::{SimConfig, SimDevice};
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::{Role, Udid};
use reqwest::Method;
use serde_json::{json, Value};

fn ios(server: &TestServer, version: &str, build: &str) -> SimConfig {
    SimConfig {
        os_version: version.into(),
        build_version: build.into(),
        ..server.sim_config()
    }
}

async fn device_id(server: &TestServer, device: &SimDevice) -> Result<String> {
    Ok(server.device_by_udid(device.udid()).await?["id"]
        .as_str()
        .context("device id")?
        .to_owned())
}

async fn sync_commands(server: &TestServer, id: &str) -> Result<Vec<Value>> {
    Ok(server
        .commands_of(id)
        .await?
        .into_iter()
        .filter(|c| c["request_type"] == "DeclarativeManagement")
        .collect())
}

fn policy(deadline: &str) -> Value {
    json!({"target": "pinned", "version": "18.2", "build": "22C152", "deadline": deadline})
}

/// A DeclarativeManagement check-in signed by `signer` that names `udid`; status and body.
async fn raw_ddm(
    signer: &SimDevice,
    udid: &str,
    endpoint: &str,
    data: Option<Vec<u8>>,
) -> Result<(u16, Vec<u8>)> {
    let body = CheckinMessage::DeclarativeManagement(DeclarativeManagementCheckin {
        udid: Udid::parse(udid)?,
        endpoint: endpoint.into(),
        data,
        user: None,
    })
    .encode();
    let signature = signer.sign(&body)?;
    Ok(signer.send_checkin_raw(body, Some(signature)).await?)
}

async fn scenario(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let music = server.create_tenant("Music", "music").await?;
    let admin = server.create_token(Role::Admin, Some(&physics), "physics-admin")?;
    let viewer = server.create_token(Role::Viewer, Some(&physics), "physics-viewer")?;
    let music_admin = server.create_token(Role::Admin, Some(&music), "music-admin")?;

    let mut fleet = server
        .enroll_devices(&ios(&server, "17.5", "21F79"), &physics, 2)
        .await?;
    let ipad_id = device_id(&server, &fleet[0]).await?;
    // Without a policy nothing declarative is queued.
    ensure!(sync_commands(&server, &ipad_id).await?.is_empty());

    // The tenant's admin sets the policy: one DeclarativeManagement per device, pushed.
    let (s, saved) = server
        .api(
            &admin,
            Method::PUT,
            &format!("/api/v1/tenants/{physics}/os-policy"),
            Some(policy("2026-12-11T18:00:00")),
        )
        .await?;
    ensure!(s == 200, "put policy → {s}: {saved}");
    ensure!(
        saved["revision"] == 1 && saved["version"] == "18.2",
        "{saved}"
    );
    let queued = sync_commands(&server, &ipad_id).await?;
    ensure!(queued.len() == 1, "one sync command: {queued:?}");

    // The iPad runs it and syncs: it fetches every declaration, and reports full status.
    let ipad = &mut fleet[0];
    ipad.poll().await?;
    let channel = ipad
        .state
        .ddm
        .get("")
        .context("device channel synced")?
        .clone();
    ensure!(
        channel
            .declarations
            .contains_key("configuration/orchard.os-update"),
        "{channel:?}"
    );
    ensure!(ipad.state.software_update.pending_version.as_deref() == Some("18.2"));
    let view = server
        .get(&format!("/api/v1/devices/{ipad_id}/declarations"))
        .await?;
    let device_channel = &view["channels"][0];
    ensure!(device_channel["channel"] == "device", "{view}");
    ensure!(device_channel["sync_pending"] == false, "{view}");
    let token = device_channel["declarations_token"]
        .as_str()
        .context("token")?
        .to_owned();
    ensure!(channel.declarations_token.as_deref() == Some(token.as_str()));
    ensure!(
        device_channel["announced_token"] == token.as_str(),
        "{view}"
    );
    let enforcement = device_channel["declarations"]
        .as_array()
        .context("declarations")?
        .iter()
        .find(|d| d["identifier"] == "orchard.os-update")
        .context("enforcement shown")?;
    ensure!(
        enforcement["state"] == "applied" && enforcement["valid"] == "valid",
        "{enforcement}"
    );
    ensure!(
        enforcement["payload"]["TargetOSVersion"] == "18.2",
        "{enforcement}"
    );
    ensure!(enforcement["payload"]["TargetLocalDateTime"] == "2026-12-11T18:00:00");
    ensure!(
        device_channel["status"]["softwareupdate"]["pending-version"]["os-version"] == "18.2",
        "{view}"
    );
    // A second sync finds the same token and fetches nothing.
    let again = ipad.declarative_sync().await?;
    ensure!(
        again.declarations_token == token && again.fetched.is_empty(),
        "{again:?}"
    );

    // The same policy again: the set and its token do not change, and nothing is queued.
    let (s, saved) = server
        .api(
            &admin,
            Method::PUT,
            &format!("/api/v1/tenants/{physics}/os-policy"),
            Some(policy("2026-12-11T18:00:00")),
        )
        .await?;
    ensure!(s == 200 && saved["revision"] == 2, "{saved}");
    ensure!(
        sync_commands(&server, &ipad_id).await?.len() == 1,
        "nothing new queued"
    );
    let view = server
        .get(&format!("/api/v1/devices/{ipad_id}/declarations"))
        .await?;
    ensure!(view["channels"][0]["declarations_token"] == token.as_str());

    // A new deadline changes the token: one command; a second change while it waits queues none.
    server
        .api(
            &admin,
            Method::PUT,
            &format!("/api/v1/tenants/{physics}/os-policy"),
            Some(policy("2026-12-12T18:00:00")),
        )
        .await?;
    server
        .api(
            &admin,
            Method::PUT,
            &format!("/api/v1/tenants/{physics}/os-policy"),
            Some(policy("2026-12-13T18:00:00")),
        )
        .await?;
    let queued = sync_commands(&server, &ipad_id).await?;
    ensure!(
        queued.len() == 2,
        "exactly one more sync command while one waits: {queued:?}"
    );
    let view = server
        .get(&format!("/api/v1/devices/{ipad_id}/declarations"))
        .await?;
    let new_token = view["channels"][0]["declarations_token"]
        .as_str()
        .context("token")?
        .to_owned();
    ensure!(new_token != token, "the token changed with the policy");
    ensure!(view["channels"][0]["sync_pending"] == true, "{view}");
    let ipad = &mut fleet[0];
    ipad.poll().await?;
    let synced = ipad.state.ddm.get("").context("channel")?;
    ensure!(synced.declarations_token.as_deref() == Some(new_token.as_str()));
    let enforcement = synced
        .declarations
        .get("configuration/orchard.os-update")
        .context("enforcement")?;
    ensure!(enforcement.payload["TargetLocalDateTime"] == "2026-12-13T18:00:00");

    // A Shared iPad user channel gets a user-scoped set: no OS enforcement, its user named.
    let user_sync = fleet[1].declarative_sync_user("jane").await?;
    ensure!(
        !user_sync.fetched.iter().any(|id| id == "orchard.os-update"),
        "{user_sync:?}"
    );
    ensure!(
        user_sync.status_sent == Some(true),
        "first user report is full"
    );
    let other_id = device_id(&server, &fleet[1]).await?;
    let view = server
        .get(&format!("/api/v1/devices/{other_id}/declarations"))
        .await?;
    let user_channel = view["channels"]
        .as_array()
        .context("channels")?
        .iter()
        .find(|c| c["channel"] == "user")
        .context("user channel shown")?;
    ensure!(user_channel["user"] == "jane", "{user_channel}");
    let properties = user_channel["declarations"]
        .as_array()
        .context("declarations")?
        .iter()
        .find(|d| d["identifier"] == "orchard.properties")
        .context("properties")?;
    ensure!(
        properties["payload"]["orchard.user"] == "jane",
        "{properties}"
    );
    ensure!(properties["state"] == "applied", "{properties}");

    // Another tenant's admin: the policy, the compliance and the declarations answer like missing ids.
    for (method, path, body) in [
        (
            Method::GET,
            format!("/api/v1/tenants/{physics}/os-policy"),
            None,
        ),
        (
            Method::PUT,
            format!("/api/v1/tenants/{physics}/os-policy"),
            Some(policy("2027-01-01T00:00:00")),
        ),
        (
            Method::GET,
            format!("/api/v1/tenants/{physics}/os-compliance"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/devices/{ipad_id}/declarations"),
            None,
        ),
    ] {
        let (s, body) = server
            .api(&music_admin, method.clone(), &path, body)
            .await?;
        ensure!(s == 404, "{method} {path} by music → {s}: {body}");
    }
    // The tenant's viewer may look but not change.
    let (s, _) = server
        .api(
            &viewer,
            Method::GET,
            &format!("/api/v1/tenants/{physics}/os-policy"),
            None,
        )
        .await?;
    ensure!(s == 200);
    let (s, body) = server
        .api(
            &viewer,
            Method::PUT,
            &format!("/api/v1/tenants/{physics}/os-policy"),
            Some(policy("2027-01-01T00:00:00")),
        )
        .await?;
    ensure!(s == 403, "viewer put → {s}: {body}");
    let (s, body) = server
        .api(
            &admin,
            Method::PUT,
            &format!("/api/v1/tenants/{physics}/os-policy"),
            Some(json!({"target": "pinned", "deadline": "soon"})),
        )
        .await?;
    ensure!(
        s == 400
            && body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("version"),
        "{body}"
    );

    // A device identity cannot read another device's declarations (403, nothing answered).
    let other_udid = fleet[1].udid().to_owned();
    let (s, body) = raw_ddm(&fleet[0], &other_udid, "declaration-items", None).await?;
    ensure!(
        s == 403,
        "cross-device read → {s}: {}",
        String::from_utf8_lossy(&body)
    );
    ensure!(!String::from_utf8_lossy(&body).contains("Declarations"));
    // Hostile input: an unknown endpoint, a declaration that does not exist, a status that is not JSON.
    let own = fleet[0].udid().to_owned();
    for (endpoint, data) in [
        ("declarations/../tokens", None),
        ("declaration/configuration/orchard.nothing", None),
        ("status", Some(b"{not json".to_vec())),
        ("status", None),
    ] {
        let (s, _) = raw_ddm(&fleet[0], &own, endpoint, data).await?;
        ensure!(s == 400, "{endpoint} → {s}");
    }
    // The audit log names the policy changes.
    let audit = server.get("/api/v1/audit?action=os_policy.update").await?;
    ensure!(
        audit["items"].as_array().map_or(0, Vec::len) >= 4,
        "{audit}"
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    declarative_management => scenario;
}
