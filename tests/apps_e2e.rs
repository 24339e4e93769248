//! Apps and Books per tenant, end to end through the real binary and the local Apps and Books server over TLS
//! (`--apps-url` / `--apps-ca`): a department admin uploads its content token (never answered back, nor in the
//! audit log), Orchard claims the unclaimed location and syncs the apps with counts matching the server's after
//! every change; an expired token and a location claimed by another MDM are reported and nothing is taken over
//! until the admin confirms the other MDM's name; renewal keeps the apps; another tenant's people see nothing
//! (404 like a missing tenant) and a viewer cannot act (403).

use anyhow::{ensure, Context, Result};
use orchard_testkit::apple::AppleVpp;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::Role;
use orchard_vpp::fake::FakeVppConfig;
use orchard_vpp::MdmInfo;
use reqwest::Method;
use serde_json::{json, Value};

async fn call(
    server: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    server.api(token, method, path, body).await
}

/// The app's `(total, assigned, available)` as Orchard lists it.
fn counts(apps: &Value, adam_id: &str) -> Option<(i64, i64, i64)> {
    let app = apps["items"]
        .as_array()?
        .iter()
        .find(|a| a["adam_id"] == adam_id)?;
    Some((
        app["total"].as_i64()?,
        app["assigned"].as_i64()?,
        app["available"].as_i64()?,
    ))
}

async fn scenario(backend: Backend) -> Result<()> {
    let vpp = AppleVpp::start(FakeVppConfig {
        pending_polls: 0,
        page_size: 2,
        ..FakeVppConfig::default()
    })
    .await?;
    let fake = &vpp.server;
    let Some(server) = TestServer::start_with(backend, &vpp.serve_args()).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "phys").await?;
    let chemistry = server.create_tenant("Chemistry", "chem").await?;
    let admin = server.create_token(Role::Admin, Some(&physics), "physics-admin")?;
    let viewer = server.create_token(Role::Viewer, Some(&physics), "physics-viewer")?;
    let chem_admin = server.create_token(Role::Admin, Some(&chemistry), "chem-admin")?;

    let token = fake.add_location("Physics Library");
    for (id, total) in [("361309726", 10), ("408709785", 3), ("284882215", 1)] {
        fake.add_asset(&token, id, total, true);
    }
    let token_path = format!("/api/v1/tenants/{physics}/apps/token");
    let apps_path = format!("/api/v1/tenants/{physics}/apps");

    // Nothing uploaded yet.
    let (status, _) = call(&server, &admin, Method::GET, &token_path, None).await?;
    ensure!(status == 404, "no token yet → {status}");

    // Bad input names the problem; a viewer and another tenant's admin cannot upload.
    let (status, body) = call(
        &server,
        &admin,
        Method::PUT,
        &token_path,
        Some(json!({"content_token": "not a token"})),
    )
    .await?;
    ensure!(
        status == 400 && body.to_string().contains("base64"),
        "{status} {body}"
    );
    let (status, _) = call(
        &server,
        &viewer,
        Method::PUT,
        &token_path,
        Some(json!({"content_token": token})),
    )
    .await?;
    ensure!(status == 403, "viewer upload → {status}");
    let (status, _) = call(
        &server,
        &chem_admin,
        Method::PUT,
        &token_path,
        Some(json!({"content_token": token})),
    )
    .await?;
    ensure!(status == 404, "other tenant's admin upload → {status}");
    ensure!(
        fake.mdm_info(&token).is_none(),
        "refused uploads claimed the location"
    );

    // Upload: claimed, synced, token never in the answer.
    let (status, uploaded) = call(
        &server,
        &admin,
        Method::PUT,
        &token_path,
        Some(json!({"content_token": token})),
    )
    .await?;
    ensure!(status == 200, "upload → {status}: {uploaded}");
    ensure!(uploaded["claim_state"] == "claimed", "{uploaded}");
    ensure!(uploaded["org_name"] == "Physics Library", "{uploaded}");
    ensure!(uploaded["location_name"] == "Physics Library", "{uploaded}");
    ensure!(
        uploaded["days_to_expiry"]
            .as_i64()
            .is_some_and(|d| d >= 364),
        "{uploaded}"
    );
    ensure!(!uploaded.to_string().contains(&token), "token echoed");
    let claim = fake.mdm_info(&token).context("claimed")?;
    ensure!(claim.name.starts_with("Orchard"), "{claim:?}");

    let apps = server.get(&apps_path).await?;
    ensure!(apps["items"].as_array().map(Vec::len) == Some(3), "{apps}");
    for id in ["361309726", "408709785", "284882215"] {
        ensure!(counts(&apps, id) == fake.counts(&token, id), "{id}: {apps}");
    }

    // Counts follow the server after licences are bought and assigned elsewhere.
    fake.set_total(&token, "408709785", 7);
    let (status, summary) = call(
        &server,
        &admin,
        Method::POST,
        &format!("/api/v1/tenants/{physics}/apps/sync"),
        None,
    )
    .await?;
    ensure!(status == 200 && summary["apps"] == 3, "{status} {summary}");
    let apps = server.get(&apps_path).await?;
    ensure!(counts(&apps, "408709785") == Some((7, 0, 7)), "{apps}");
    let (status, _) = call(
        &server,
        &viewer,
        Method::POST,
        &format!("/api/v1/tenants/{physics}/apps/sync"),
        None,
    )
    .await?;
    ensure!(status == 403, "viewer sync → {status}");
    let (status, listed) = call(&server, &viewer, Method::GET, &apps_path, None).await?;
    ensure!(status == 200 && listed == apps, "viewer list → {status}");

    // The CLI shows the same, never the token.
    let out = server
        .client_command(&["apps", "list", "--tenant", &physics])?
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains("408709785") && text.contains("AVAILABLE"),
        "{text}"
    );
    let out = server
        .client_command(&["apps", "status", "--tenant", &physics, "--json"])?
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains("\"claimed\""),
        "{text}"
    );
    ensure!(!text.contains(token.as_str()), "the CLI printed the token");

    // Another tenant sees nothing of it.
    for path in [&token_path, &apps_path] {
        let (status, _) = call(&server, &chem_admin, Method::GET, path, None).await?;
        ensure!(status == 404, "chemistry admin GET {path} → {status}");
    }
    let (status, chem_apps) = call(
        &server,
        &chem_admin,
        Method::GET,
        &format!("/api/v1/tenants/{chemistry}/apps"),
        None,
    )
    .await?;
    ensure!(
        status == 200 && chem_apps["items"] == json!([]),
        "{chem_apps}"
    );

    // Renewal: a new token for the same location keeps the apps; the old one is revoked at Apple.
    let renewed = fake.renew_token(&token).context("renew")?;
    fake.claim_by_other(&renewed, claim.clone());
    let (status, body) = call(
        &server,
        &admin,
        Method::PUT,
        &token_path,
        Some(json!({"content_token": renewed})),
    )
    .await?;
    ensure!(
        status == 200 && body["claim_state"] == "claimed",
        "renewal → {status}: {body}"
    );
    ensure!(
        server.get(&apps_path).await?["items"]
            .as_array()
            .map(Vec::len)
            == Some(3),
        "apps lost on renewal"
    );

    // Another MDM claims the location: reported with its name, nothing taken over.
    let jamf = MdmInfo {
        id: "jamf-42".into(),
        metadata: None,
        name: "Jamf Pro".into(),
    };
    fake.claim_by_other(&renewed, jamf.clone());
    let (status, summary) = call(
        &server,
        &admin,
        Method::POST,
        &format!("/api/v1/tenants/{physics}/apps/sync"),
        None,
    )
    .await?;
    ensure!(
        status == 200 && summary["claim_state"] == "claimed_elsewhere",
        "{status} {summary}"
    );
    let status_now = server.get(&token_path).await?;
    ensure!(status_now["other_mdm_name"] == "Jamf Pro", "{status_now}");
    ensure!(
        fake.mdm_info(&renewed) == Some(jamf.clone()),
        "taken over silently"
    );
    // Taking over needs the exact name, and a viewer cannot.
    let take_over = format!("{token_path}/take-over");
    let (status, _) = call(
        &server,
        &admin,
        Method::POST,
        &take_over,
        Some(json!({"confirm_other_mdm": "jamf"})),
    )
    .await?;
    ensure!(status == 400, "wrong confirmation → {status}");
    let (status, _) = call(
        &server,
        &viewer,
        Method::POST,
        &take_over,
        Some(json!({"confirm_other_mdm": "Jamf Pro"})),
    )
    .await?;
    ensure!(status == 403, "viewer take-over → {status}");
    ensure!(
        fake.mdm_info(&renewed) == Some(jamf),
        "taken over on a refused request"
    );
    let (status, body) = call(
        &server,
        &admin,
        Method::POST,
        &take_over,
        Some(json!({"confirm_other_mdm": "Jamf Pro"})),
    )
    .await?;
    ensure!(
        status == 200 && body["claim_state"] == "claimed",
        "take-over → {status}: {body}"
    );
    ensure!(
        fake.mdm_info(&renewed)
            .is_some_and(|m| m.name.starts_with("Orchard")),
        "not claimed"
    );
    let (status, _) = call(
        &server,
        &admin,
        Method::POST,
        &take_over,
        Some(json!({"confirm_other_mdm": "Jamf Pro"})),
    )
    .await?;
    ensure!(status == 409, "nothing to take over → {status}");

    // An expired token: reported, with what to do.
    fake.expire_token(&renewed);
    let (status, _) = call(
        &server,
        &admin,
        Method::POST,
        &format!("/api/v1/tenants/{physics}/apps/sync"),
        None,
    )
    .await?;
    ensure!(
        status == 200 || status == 409,
        "sync with an expired token → {status}"
    );
    let status_now = server.get(&token_path).await?;
    ensure!(status_now["claim_state"] == "token_error", "{status_now}");
    ensure!(
        status_now["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("expired")),
        "{status_now}"
    );
    // Uploading an expired token is refused.
    let chem_token = fake.add_location("Chemistry Library");
    fake.expire_token(&chem_token);
    let (status, body) = call(
        &server,
        &chem_admin,
        Method::PUT,
        &format!("/api/v1/tenants/{chemistry}/apps/token"),
        Some(json!({"content_token": chem_token})),
    )
    .await?;
    ensure!(
        status == 400 && body.to_string().contains("expired"),
        "{status} {body}"
    );
    ensure!(
        fake.mdm_info(&chem_token).is_none(),
        "expired token claimed"
    );

    // The token is in no audit event.
    let audit = server.get("/api/v1/audit?limit=500").await?;
    let text = audit.to_string();
    ensure!(
        text.contains("apps_token.upload"),
        "upload not audited: {text}"
    );
    for secret in [&token, &renewed, &chem_token] {
        ensure!(
            !text.contains(secret.as_str()),
            "a content token is in the audit log"
        );
    }
    Ok(())
}

orchard_testkit::backend_tests! {
    apps_token_claim_sync_and_isolation => scenario;
}
