//! The tenant isolation matrix (issue 5), on the real binary with SQLite and PostgreSQL: every admin API route
//! of docs/openapi.json (a test below checks none is missing)
//! × {no token, expired token, revoked token, other tenant's viewer, other tenant's admin, own viewer, own admin,
//! helpdesk, operator} → the expected status. "Own" is the physics department, whose objects the routes name;
//! "other" is music. Lists, counts and error bodies seen by music's people never contain physics' ids, and
//! physics' objects answer music's people exactly like objects that do not exist.

use anyhow::{ensure, Context, Result};
use orchard_sim::SimDevice;
use orchard_testkit::apple::AppleVpp;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::Role;
use orchard_vpp::fake::FakeVppConfig;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::{Connection, Executor};

/// The principals, in the order of every row's expectations.
const PRINCIPALS: [&str; 9] = [
    "none",
    "expired",
    "revoked",
    "other_viewer",
    "other_admin",
    "own_viewer",
    "own_admin",
    "helpdesk",
    "operator",
];

struct Row {
    method: Method,
    path: String,
    body: Option<Value>,
    /// One status per principal, in `PRINCIPALS` order.
    expected: [u16; 9],
}

fn row(method: Method, path: impl Into<String>, body: Option<Value>, expected: [u16; 9]) -> Row {
    Row {
        method,
        path: path.into(),
        body,
        expected,
    }
}

/// Unauthenticated callers always get 401.
const U: u16 = 401;

async fn enroll_one(server: &TestServer, tenant: &str) -> Result<SimDevice> {
    let mut devices = server
        .enroll_devices(&server.sim_config(), tenant, 1)
        .await?;
    devices.pop().context("enroll")
}

async fn expire_token(server: &TestServer, name: &str) -> Result<()> {
    let mut conn = server.connect_database().await?;
    conn.execute(format!("UPDATE api_tokens SET expires_at = 1000 WHERE name = '{name}'").as_str())
        .await?;
    conn.close().await?;
    Ok(())
}

/// Whether a concrete path fits an OpenAPI path template (`{x}` = one segment).
fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(a, b)| (a.starts_with('{') && a.ends_with('}') && !b.is_empty()) || a == b)
}

async fn scenario(backend: Backend) -> Result<()> {
    // Apple's Apps and Books service, local: a location for Physics' content token.
    let vpp = AppleVpp::start(FakeVppConfig {
        pending_polls: 0,
        ..FakeVppConfig::default()
    })
    .await?;
    let apps_token = vpp.server.add_location("Physics Library");
    vpp.server.add_asset(&apps_token, "361309726", 5, true);
    let mut args: Vec<String> = vec![
        "--os-catalogue-url".into(),
        "http://127.0.0.1:9/v2/pmv".into(),
    ];
    args.extend(vpp.serve_args());
    let Some(server) = TestServer::start_with(backend, &args).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let music = server.create_tenant("Music", "music").await?;
    let physics_ipad = enroll_one(&server, &physics).await?;
    let music_ipad = enroll_one(&server, &music).await?;
    let device = server.device_by_udid(&physics_ipad.state.udid).await?;
    let device_id = device["id"].as_str().context("id")?.to_owned();
    let music_device = server.device_by_udid(&music_ipad.state.udid).await?;

    let token =
        |role: Role, tenant: Option<&str>, name: &str| server.create_token(role, tenant, name);
    let expired = token(Role::Admin, Some(&physics), "expired-admin")?;
    expire_token(&server, "expired-admin").await?;
    let (status, revoked_token) = server
        .api(
            &server.token,
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "revoked-admin", "role": "admin", "tenant_id": physics})),
        )
        .await?;
    ensure!(status == 201, "{revoked_token}");
    let revoked = revoked_token["secret"]
        .as_str()
        .context("secret")?
        .to_owned();
    let (status, _) = server
        .api(
            &server.token,
            Method::DELETE,
            &format!(
                "/api/v1/tokens/{}",
                revoked_token["id"].as_str().unwrap_or_default()
            ),
            None,
        )
        .await?;
    ensure!(status == 200, "revoke");
    let secrets = [
        String::new(),
        expired,
        revoked,
        token(Role::Viewer, Some(&music), "music-viewer")?,
        token(Role::Admin, Some(&music), "music-admin")?,
        token(Role::Viewer, Some(&physics), "physics-viewer")?,
        token(Role::Admin, Some(&physics), "physics-admin")?,
        token(Role::Helpdesk, None, "helpdesk")?,
        server.token.clone(),
    ];

    // Objects the routes name: a DEP token (no server token uploaded) with a physics template, a physics API
    // token to revoke.
    let dep = server
        .post("/api/v1/dep-tokens", json!({"name": "ASM"}))
        .await?;
    let dep_id = dep["id"].as_str().context("dep id")?.to_owned();
    let (status, template) = server
        .api(
            &server.token,
            Method::POST,
            &format!("/api/v1/dep-tokens/{dep_id}/templates"),
            Some(json!({"name": "Physics iPads", "tenant_id": physics})),
        )
        .await?;
    ensure!(status == 201, "template → {status}: {template}");
    let template_id = template["id"].as_str().context("template id")?.to_owned();
    let (status, victim) = server
        .api(
            &server.token,
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "victim", "role": "viewer", "tenant_id": physics})),
        )
        .await?;
    ensure!(status == 201, "{victim}");
    let victim_id = victim["id"].as_str().context("victim id")?.to_owned();
    let link = server
        .post(
            &format!("/api/v1/tenants/{physics}/enrollment-links"),
            json!({"name": "to revoke"}),
        )
        .await?;
    let link_id = link["id"].as_str().context("link id")?.to_owned();
    let link_url = link["url"].as_str().context("link url")?.to_owned();
    let mapping = server
        .post(
            "/api/v1/role-mappings",
            json!({"claim": "groups", "value": "to-delete", "role": "viewer", "tenant_id": physics}),
        )
        .await?;
    let mapping_id = mapping["id"].as_str().context("mapping id")?.to_owned();
    // A user to edit: a break-glass operator (users otherwise appear through single sign-on).
    let user_id = {
        use std::io::Write;
        let mut cmd =
            server.database_command(&["local-account", "set", "--username", "it-oncall"])?;
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(b"a long break-glass password\n")?;
        let out = child.wait_with_output()?;
        ensure!(out.status.success(), "local-account set");
        String::from_utf8(out.stdout)?.trim().to_owned()
    };

    // A physics profile and a global one (the profile library).
    let wifi = |identifier: &str| {
        json!({"name": "Matrix Wi-Fi", "identifier": identifier,
               "payloads": [{"PayloadType": "com.apple.wifi.managed", "SSID_STR": "matrix"}]})
    };
    let profile = server
        .post(
            &format!("/api/v1/tenants/{physics}/profiles"),
            wifi("edu.matrix.physics"),
        )
        .await?;
    let profile_id = profile["profile"]["id"]
        .as_str()
        .context("profile id")?
        .to_owned();
    let global = server
        .post("/api/v1/profiles", wifi("edu.matrix.global"))
        .await?;
    let global_id = global["profile"]["id"]
        .as_str()
        .context("global id")?
        .to_owned();
    // A physics group and an assignment of its profile (groups, assignments).
    let group = server
        .post(
            &format!("/api/v1/tenants/{physics}/groups"),
            json!({"name": "Matrix cart", "kind": "static"}),
        )
        .await?;
    let group_id = group["id"].as_str().context("group id")?.to_owned();
    let assignment = server
        .post(
            &format!("/api/v1/tenants/{physics}/assignments"),
            json!({"object_kind": "profile", "object_id": profile_id, "all_devices": true}),
        )
        .await?;
    let assignment_id = assignment["id"]
        .as_str()
        .context("assignment id")?
        .to_owned();
    let grp = |suffix: &str| format!("/api/v1/tenants/{physics}/groups/{group_id}{suffix}");
    let asg = |suffix: &str| format!("/api/v1/tenants/{physics}/assignments{suffix}");
    let prof = |suffix: &str| format!("/api/v1/tenants/{physics}/profiles/{profile_id}{suffix}");
    let glob = |suffix: &str| format!("/api/v1/profiles/{global_id}{suffix}");
    let new_version = json!({"name": "Matrix Wi-Fi", "payloads": [{"PayloadType": "com.apple.wifi.managed", "SSID_STR": "v2"}]});
    let on_device = json!({"device_id": device_id});
    let dev = |suffix: &str| format!("/api/v1/devices/{device_id}{suffix}");
    // A planned-maintenance notice (service-wide: every role reads, only operators write).
    let in_hours = |h: i64| -> Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        Ok(orchard_types::UnixTime(now + h * 3_600).to_rfc3339())
    };
    let window = json!({"starts_at": in_hours(24)?, "ends_at": in_hours(26)?, "text_sv": "Underhåll", "text_en": "Maintenance"});
    let notice = server.post("/api/v1/maintenance", window.clone()).await?;
    let notice_id = notice["id"].as_str().context("notice id")?.to_string();
    // Webhook endpoints: physics' (its admins and operators manage it) and a global one (operators only).
    let hook_body =
        json!({"url": "https://hooks.example.edu/orchard", "event_types": ["command.result"]});
    let physics_hook = server
        .post(
            &format!("/api/v1/tenants/{physics}/webhooks"),
            hook_body.clone(),
        )
        .await?;
    let physics_hook_id = physics_hook["webhook"]["id"]
        .as_str()
        .context("webhook id")?
        .to_owned();
    let global_hook = server.post("/api/v1/webhooks", hook_body.clone()).await?;
    let global_hook_id = global_hook["webhook"]["id"]
        .as_str()
        .context("global webhook id")?
        .to_owned();
    let hook = |suffix: &str| format!("/api/v1/tenants/{physics}/webhooks{suffix}");
    let ghook = |suffix: &str| format!("/api/v1/webhooks{suffix}");
    let today = "2026-11-30";
    #[rustfmt::skip]
    let rows = vec![
        //                                                      none exp rev oV  oA  V   A   HD  OP
        row(Method::GET, "/api/v1/tenants", None, [U, U, U, 200, 200, 200, 200, 200, 200]),
        row(Method::POST, "/api/v1/tenants", Some(json!({"name": "X", "code": "x-matrix"})), [U, U, U, 403, 403, 403, 403, 403, 201]),
        row(Method::GET, format!("/api/v1/tenants/{physics}"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::PATCH, format!("/api/v1/tenants/{physics}"), Some(json!({"cost_centre": "CC-1"})), [U, U, U, 404, 404, 403, 403, 403, 200]),
        row(Method::POST, format!("/api/v1/tenants/{physics}/enrollment-links"), Some(json!({"name": "cart"})), [U, U, U, 404, 404, 403, 201, 403, 201]),
        row(Method::GET, format!("/api/v1/tenants/{physics}/enrollment-links"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::DELETE, format!("/api/v1/tenants/{physics}/enrollment-links/{link_id}"), None, [U, U, U, 404, 404, 403, 204, 403, 204]),
        row(Method::GET, "/api/v1/devices", None, [U, U, U, 200, 200, 200, 200, 200, 200]),
        row(Method::GET, format!("/api/v1/devices?tenant={physics}"), None, [U, U, U, 200, 200, 200, 200, 200, 200]),
        row(Method::GET, dev(""), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::GET, dev("/commands"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::POST, dev("/commands"), Some(json!({"type": "DeviceLock"})), [U, U, U, 404, 404, 403, 201, 403, 201]),
        row(Method::POST, dev("/commands"), Some(json!({"type": "DeviceInformation", "queries": ["UDID"]})), [U, U, U, 404, 404, 403, 201, 201, 201]),
        row(Method::POST, dev("/commands"), Some(json!({"type": "EraseDevice"})), [U, U, U, 404, 404, 403, 400, 403, 400]),
        row(Method::POST, dev("/push"), None, [U, U, U, 404, 404, 403, 202, 202, 202]),
        row(Method::GET, dev("/setup"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::POST, dev("/setup/release"), None, [U, U, U, 404, 404, 403, 409, 403, 409]),
        // Shared iPad users: the matrix's device is a single-user iPad, so every allowed action is refused on
        // the device's kind (409) after the scope (404) and the role (403).
        row(Method::GET, dev("/users"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::POST, dev("/users/refresh"), None, [U, U, U, 404, 404, 403, 409, 409, 409]),
        row(Method::POST, dev("/users/log-out"), None, [U, U, U, 404, 404, 403, 409, 403, 409]),
        row(Method::POST, dev("/users/delete"), Some(json!({"user_name": "jane@example.edu"})), [U, U, U, 404, 404, 403, 409, 403, 409]),
        row(Method::POST, dev("/users/delete-all"), Some(json!({})), [U, U, U, 404, 404, 403, 409, 403, 409]),
        row(Method::GET, dev("/activation-lock"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::POST, dev("/activation-lock/clear"), None, [U, U, U, 404, 404, 403, 409, 403, 409]),
        row(Method::GET, dev("/identity"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        // Operator-only actions: every other role is refused before the device is looked up; the operator's
        // request is refused on its content (so the device keeps its identity and tenant for the other rows).
        row(Method::POST, dev("/identity/revoke"), Some(json!({"reason": "bored"})), [U, U, U, 403, 403, 403, 403, 403, 400]),
        row(Method::POST, dev("/release"), Some(json!({"expires_in_seconds": 0})), [U, U, U, 403, 403, 403, 403, 403, 400]),
        row(Method::POST, dev("/move"), Some(json!({"tenant_id": physics, "keep_inventory": true})), [U, U, U, 403, 403, 403, 403, 403, 409]),
        row(Method::POST, "/api/v1/commands/bulk", Some(json!({"command": {"type": "DeviceInformation", "queries": ["UDID"]}, "dry_run": true})), [U, U, U, 403, 200, 403, 200, 200, 200]),
        row(Method::GET, "/api/v1/push-certificate", None, [U, U, U, 403, 403, 403, 403, 403, 200]),
        row(Method::PUT, "/api/v1/push-certificate", Some(json!({"certificate_pem": "not a certificate"})), [U, U, U, 403, 403, 403, 403, 403, 400]),
        row(Method::GET, "/api/v1/dep-tokens", None, [U, U, U, 403, 403, 403, 403, 403, 200]),
        row(Method::POST, "/api/v1/dep-tokens", Some(json!({"name": "matrix"})), [U, U, U, 403, 403, 403, 403, 403, 201]),
        row(Method::PUT, format!("/api/v1/dep-tokens/{dep_id}/token"), Some(json!({"p7m_base64": "!!"})), [U, U, U, 403, 403, 403, 403, 403, 400]),
        row(Method::POST, format!("/api/v1/dep-tokens/{dep_id}/sync"), None, [U, U, U, 403, 403, 403, 403, 403, 409]),
        row(Method::GET, format!("/api/v1/dep-tokens/{dep_id}/templates"), None, [U, U, U, 200, 200, 200, 200, 200, 200]),
        row(Method::POST, format!("/api/v1/dep-tokens/{dep_id}/assignments"), Some(json!({"serials": ["F9FXK0000001"], "template_id": template_id})), [U, U, U, 403, 403, 403, 403, 403, 200]),
        row(Method::GET, "/api/v1/dep-templates", None, [U, U, U, 200, 200, 200, 200, 200, 200]),
        row(Method::GET, format!("/api/v1/dep-templates/{template_id}"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::PUT, format!("/api/v1/dep-templates/{template_id}"), Some(json!({"name": "Physics iPads", "tenant_id": physics})), [U, U, U, 403, 403, 403, 403, 403, 200]),
        row(Method::GET, "/api/v1/dep-devices", None, [U, U, U, 200, 200, 200, 200, 200, 200]),
        row(Method::GET, "/api/v1/tokens", None, [U, U, U, 403, 200, 403, 200, 403, 200]),
        row(Method::POST, "/api/v1/tokens", Some(json!({"name": "kiosk", "role": "viewer", "tenant_id": physics})), [U, U, U, 403, 403, 403, 201, 403, 201]),
        row(Method::DELETE, format!("/api/v1/tokens/{victim_id}"), None, [U, U, U, 403, 404, 403, 200, 403, 200]),
        row(Method::GET, "/api/v1/role-mappings", None, [U, U, U, 403, 403, 403, 403, 403, 200]),
        row(Method::DELETE, format!("/api/v1/role-mappings/{mapping_id}"), None, [U, U, U, 403, 403, 403, 403, 403, 204]),
        row(Method::GET, "/api/v1/users", None, [U, U, U, 403, 200, 403, 200, 200, 200]),
        row(Method::PATCH, format!("/api/v1/users/{user_id}"), Some(json!({"disabled": false})), [U, U, U, 403, 404, 403, 404, 403, 200]),
        row(Method::POST, format!("/api/v1/dep-tokens/{dep_id}/templates"), Some(json!({"name": "Matrix", "tenant_id": physics})), [U, U, U, 403, 403, 403, 403, 403, 201]),
        row(Method::POST, "/api/v1/push-certificate/csr", None, [U, U, U, 403, 403, 403, 403, 403, 201]),
        row(Method::GET, "/api/v1/openapi.json", None, [200, 200, 200, 200, 200, 200, 200, 200, 200]),
        row(Method::GET, "/healthz", None, [200, 200, 200, 200, 200, 200, 200, 200, 200]),
        row(Method::GET, "/readyz", None, [200, 200, 200, 200, 200, 200, 200, 200, 200]),
        row(Method::GET, "/metrics", None, [200, 200, 200, 200, 200, 200, 200, 200, 200]),
        row(Method::POST, "/api/v1/role-mappings", Some(json!({"claim": "groups", "value": "physics-it", "role": "admin", "tenant_id": physics})), [U, U, U, 403, 403, 403, 403, 403, 201]),
        row(Method::GET, "/api/v1/audit", None, [U, U, U, 403, 200, 403, 200, 200, 200]),
        row(Method::GET, "/api/v1/audit.csv", None, [U, U, U, 403, 200, 403, 200, 200, 200]),
        row(Method::GET, format!("/api/v1/usage?from={today}&to={today}"), None, [U, U, U, 403, 200, 403, 200, 200, 200]),
        // The credential register: a department's admin sees its own (music's admin: music's only), viewers none.
        row(Method::GET, "/api/v1/credentials", None, [U, U, U, 403, 200, 403, 200, 200, 200]),
        row(Method::DELETE, format!("/api/v1/dep-templates/{template_id}"), None, [U, U, U, 403, 403, 403, 403, 403, 204]),
        row(Method::GET, format!("/api/v1/tenants/{physics}/groups"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        // The operator's copy collides with the admin's name.
        row(Method::POST, format!("/api/v1/tenants/{physics}/groups"), Some(json!({"name": "Matrix new", "kind": "static"})), [U, U, U, 404, 404, 403, 201, 403, 409]),
        row(Method::GET, grp(""), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::PATCH, grp(""), Some(json!({"name": "Matrix cart B"})), [U, U, U, 404, 404, 403, 200, 403, 200]),
        row(Method::GET, grp("/members"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::POST, grp("/members"), Some(json!({"device_ids": [device_id]})), [U, U, U, 404, 404, 403, 200, 403, 200]),
        row(Method::POST, grp("/members/remove"), Some(json!({"device_ids": [device_id]})), [U, U, U, 404, 404, 403, 200, 403, 200]),
        row(Method::GET, grp("/history"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::PUT, grp("/shared-ipad-policy"), Some(json!({"user_session_timeout": 0})), [U, U, U, 404, 404, 403, 200, 403, 200]),
        row(Method::DELETE, grp("/shared-ipad-policy"), None, [U, U, U, 404, 404, 403, 204, 403, 204]),
        // Once the admin deleted it, it is gone for everyone after.
        row(Method::DELETE, grp(""), None, [U, U, U, 404, 404, 403, 204, 404, 404]),
        row(Method::GET, asg(""), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        // The operator's copy assigns the object a second time.
        row(Method::POST, asg(""), Some(json!({"object_kind": "profile", "object_id": global_id, "all_devices": true})), [U, U, U, 404, 404, 403, 201, 403, 409]),
        row(Method::GET, asg(&format!("/{assignment_id}")), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::PUT, asg(&format!("/{assignment_id}")), Some(json!({"all_devices": true})), [U, U, U, 404, 404, 403, 200, 403, 200]),
        row(Method::DELETE, asg(&format!("/{assignment_id}")), None, [U, U, U, 404, 404, 403, 204, 404, 404]),
        row(Method::GET, format!("/api/v1/tenants/{physics}/profiles"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        // The operator's copy collides with the admin's identifier.
        row(Method::POST, format!("/api/v1/tenants/{physics}/profiles"), Some(wifi("edu.matrix.new")), [U, U, U, 404, 404, 403, 201, 403, 409]),
        row(Method::GET, prof(""), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::POST, prof("/versions"), Some(new_version.clone()), [U, U, U, 404, 404, 403, 201, 403, 201]),
        row(Method::GET, prof("/versions/1"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::GET, prof("/devices"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::POST, prof("/install"), Some(on_device.clone()), [U, U, U, 404, 404, 403, 202, 403, 202]),
        row(Method::POST, prof("/remove"), Some(on_device.clone()), [U, U, U, 404, 404, 403, 202, 403, 202]),
        row(Method::DELETE, prof(""), None, [U, U, U, 404, 404, 403, 204, 403, 409]),
        row(Method::GET, "/api/v1/profiles", None, [U, U, U, 200, 200, 200, 200, 200, 200]),
        row(Method::POST, "/api/v1/profiles", Some(wifi("edu.matrix.global-new")), [U, U, U, 403, 403, 403, 403, 403, 201]),
        row(Method::GET, glob(""), None, [U, U, U, 200, 200, 200, 200, 200, 200]),
        row(Method::POST, glob("/versions"), Some(new_version.clone()), [U, U, U, 403, 403, 403, 403, 403, 201]),
        row(Method::GET, glob("/versions/1"), None, [U, U, U, 200, 200, 200, 200, 200, 200]),
        row(Method::DELETE, glob(""), None, [U, U, U, 403, 403, 403, 403, 403, 204]),
        // Apps and Books: the admin's upload claims the location; the operator's is a renewal of the same one.
        row(Method::PUT, format!("/api/v1/tenants/{physics}/apps/token"), Some(json!({"content_token": apps_token})), [U, U, U, 404, 404, 403, 200, 403, 200]),
        row(Method::GET, format!("/api/v1/tenants/{physics}/apps/token"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::POST, format!("/api/v1/tenants/{physics}/apps/sync"), None, [U, U, U, 404, 404, 403, 200, 403, 200]),
        row(Method::GET, format!("/api/v1/tenants/{physics}/apps"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::GET, format!("/api/v1/tenants/{physics}/apps/361309726/devices"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        // Nobody else holds the location, so there is nothing to take over.
        row(Method::POST, format!("/api/v1/tenants/{physics}/apps/token/take-over"), Some(json!({"confirm_other_mdm": "Jamf"})), [U, U, U, 404, 404, 403, 409, 403, 409]),
        row(Method::GET, "/api/v1/maintenance", None, [U, U, U, 200, 200, 200, 200, 200, 200]),
        row(Method::POST, "/api/v1/maintenance", Some(window.clone()), [U, U, U, 403, 403, 403, 403, 403, 201]),
        row(Method::DELETE, format!("/api/v1/maintenance/{notice_id}"), None, [U, U, U, 403, 403, 403, 403, 403, 204]),
        // Webhooks: a tenant's are its admins' (viewers and helpdesk refused, other tenants see nothing); the
        // global ones are central IT's.
        row(Method::GET, hook(""), None, [U, U, U, 404, 404, 403, 200, 403, 200]),
        row(Method::POST, hook(""), Some(hook_body.clone()), [U, U, U, 404, 404, 403, 201, 403, 201]),
        row(Method::GET, hook(&format!("/{physics_hook_id}")), None, [U, U, U, 404, 404, 403, 200, 403, 200]),
        row(Method::PATCH, hook(&format!("/{physics_hook_id}")), Some(json!({"enabled": false})), [U, U, U, 404, 404, 403, 200, 403, 200]),
        row(Method::GET, hook(&format!("/{physics_hook_id}/deliveries")), None, [U, U, U, 404, 404, 403, 200, 403, 200]),
        row(Method::GET, hook(&format!("/{global_hook_id}")), None, [U, U, U, 404, 404, 403, 404, 403, 404]),
        // Once the admin deleted it, it is gone for everyone after.
        row(Method::DELETE, hook(&format!("/{physics_hook_id}")), None, [U, U, U, 404, 404, 403, 204, 403, 404]),
        row(Method::GET, ghook(""), None, [U, U, U, 403, 403, 403, 403, 403, 200]),
        row(Method::POST, ghook(""), Some(hook_body.clone()), [U, U, U, 403, 403, 403, 403, 403, 201]),
        row(Method::GET, ghook(&format!("/{global_hook_id}")), None, [U, U, U, 403, 403, 403, 403, 403, 200]),
        row(Method::PATCH, ghook(&format!("/{global_hook_id}")), Some(json!({"enabled": false})), [U, U, U, 403, 403, 403, 403, 403, 200]),
        row(Method::GET, ghook(&format!("/{global_hook_id}/deliveries")), None, [U, U, U, 403, 403, 403, 403, 403, 200]),
        row(Method::DELETE, ghook(&format!("/{global_hook_id}")), None, [U, U, U, 403, 403, 403, 403, 403, 204]),
        row(Method::GET, dev("/declarations"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::PUT, format!("/api/v1/tenants/{physics}/os-policy"), Some(json!({"target": "latest", "deadline": "2026-12-11T18:00:00"})), [U, U, U, 404, 404, 403, 200, 403, 200]),
        row(Method::GET, format!("/api/v1/tenants/{physics}/os-policy"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::GET, format!("/api/v1/tenants/{physics}/os-compliance"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::GET, format!("/api/v1/tenants/{physics}/shared-ipad-policy"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::PUT, format!("/api/v1/tenants/{physics}/shared-ipad-policy"), Some(json!({"temporary_session_only": false})), [U, U, U, 404, 404, 403, 200, 403, 200]),
        row(Method::GET, format!("/api/v1/tenants/{physics}/shared-ipad-compliance"), None, [U, U, U, 404, 404, 200, 200, 200, 200]),
        row(Method::GET, "/api/v1/os-catalogue", None, [U, U, U, 403, 403, 403, 403, 403, 200]),
        row(Method::PUT, "/api/v1/os-catalogue", Some(json!({"entries": []})), [U, U, U, 403, 403, 403, 403, 403, 200]),
        // The feed is a closed local port here: the operator's refresh is refused with the reason (409).
        row(Method::POST, "/api/v1/os-catalogue/refresh", None, [U, U, U, 403, 403, 403, 403, 403, 409]),
    ];

    // Every documented operation has a row (so a new route cannot skip the matrix).
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json"),
    )?)?;
    let mut uncovered = Vec::new();
    for (path, item) in doc["paths"].as_object().context("paths")? {
        for method in item.as_object().context("path item")?.keys() {
            let Ok(m) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let full = path.clone();
            let covered = rows.iter().any(|r| {
                r.method == m
                    && template_matches(&full, r.path.split('?').next().unwrap_or_default())
            });
            if !covered {
                uncovered.push(format!("{method} {full}"));
            }
        }
    }
    ensure!(
        uncovered.is_empty(),
        "routes missing from the matrix: {uncovered:?}"
    );

    // What must never appear in anything music's people are shown.
    let physics_secrets = [
        physics.clone(),
        device_id.clone(),
        physics_ipad.state.udid.clone(),
        physics_ipad.state.serial_number.clone(),
        template_id.clone(),
        victim_id.clone(),
        link_id.clone(),
        profile_id.clone(),
        group_id.clone(),
        assignment_id.clone(),
    ];
    let mut failures = Vec::new();
    for r in &rows {
        for (i, principal) in PRINCIPALS.iter().enumerate() {
            let secret = &secrets[i];
            let mut req = server.http.request(r.method.clone(), server.url(&r.path));
            if !secret.is_empty() {
                req = req.bearer_auth(secret);
            }
            if let Some(b) = &r.body {
                req = req.json(b);
            }
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let text = resp.text().await?;
            if status != r.expected[i] {
                failures.push(format!(
                    "{} {} as {principal}: {status}, expected {} ({text})",
                    r.method, r.path, r.expected[i]
                ));
            }
            // Audit events of music's own refused attempts name the physics ids music typed; what matters
            // there is that no physics event is listed (checked below).
            if principal.starts_with("other_") && !r.path.starts_with("/api/v1/audit") {
                if let Some(leak) = physics_secrets
                    .iter()
                    .find(|s| text.contains(s.as_str()) && !r.path.contains(s.as_str()))
                {
                    failures.push(format!(
                        "{} {} as {principal} leaks {leak}: {text}",
                        r.method, r.path
                    ));
                }
            }
            if status >= 400 && status != 401 {
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if !v["error"]["code"].is_string() || !v["error"]["request_id"].is_string() {
                    failures.push(format!(
                        "{} {} as {principal}: error without code/request id: {text}",
                        r.method, r.path
                    ));
                }
            }
        }
    }
    // The revoked link hands out no profile any more.
    let gone = server.http.get(&link_url).send().await?;
    ensure!(gone.status() == 410, "revoked link → {}", gone.status());
    // A missing object and another tenant's object answer the same body (apart from the request id).
    let missing = format!("/api/v1/devices/{}", uuid::Uuid::now_v7());
    let (s1, b1) = server.api(&secrets[4], Method::GET, &missing, None).await?;
    let (s2, b2) = server.api(&secrets[4], Method::GET, &dev(""), None).await?;
    ensure!(
        s1 == s2
            && b1["error"]["code"] == b2["error"]["code"]
            && b1["error"]["message"] == b2["error"]["message"],
        "missing {b1} vs foreign {b2}"
    );
    // Music's admin's audit log holds only music's events.
    let (_, audit) = server
        .api(&secrets[4], Method::GET, "/api/v1/audit?limit=1000", None)
        .await?;
    let events = audit["items"].as_array().context("audit items")?;
    ensure!(!events.is_empty(), "music sees its own events");
    ensure!(
        events.iter().all(|e| e["tenant_id"] == music.as_str()),
        "music's audit shows another tenant's events: {audit}"
    );
    ensure!(
        events.iter().all(|e| !e["actor_name"]
            .as_str()
            .unwrap_or_default()
            .starts_with("physics")),
        "physics actors in music's audit: {audit}"
    );
    // Music's admin sees music's device and nothing of physics'.
    let (_, listed) = server
        .api(&secrets[4], Method::GET, "/api/v1/devices", None)
        .await?;
    ensure!(
        listed["items"].as_array().map(Vec::len) == Some(1)
            && listed["items"][0]["id"] == music_device["id"],
        "{listed}"
    );
    ensure!(
        failures.is_empty(),
        "{} isolation failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    isolation_matrix => scenario;
}
