//! End to end through the API of the real binary: a DEP token is created (its certificate comes back), the
//! `.p7m` a local DEP server's "ASM" encrypts to that certificate is uploaded as base64, a sync pulls the
//! devices over TLS with real OAuth, and the tokens and devices are listed. `--dep-url` / `--dep-ca` point the
//! server at the local DEP service.

use anyhow::{ensure, Context, Result};
use base64::Engine;
use orchard_dep::fake::{encrypt_server_token, FakeDepConfig, FakeDepServer, TokenCipher};
use orchard_testkit::apple::AppleDep;
use orchard_testkit::server::TestServer;
use orchard_testkit::webhooks::WebhookReceiver;
use orchard_testkit::Backend;
use serde_json::json;

async fn scenario(backend: Backend) -> Result<()> {
    let dep = AppleDep::start(FakeDepConfig::default()).await?;
    let fake = &dep.server;
    fake.add_devices(&FakeDepServer::make_serials("E2E", 0, 1_200));
    // Central IT's webhook hears of every DEP sync; a department's endpoint never does (DEP is service-wide).
    let central_it = WebhookReceiver::start().await?;
    let department = WebhookReceiver::start().await?;
    let mut args = dep.serve_args();
    args.extend([
        "--danger-webhook-allow-http-localhost".into(),
        "--webhook-interval-seconds".into(),
        "1".into(),
    ]);
    let Some(server) = TestServer::start_with(backend, &args).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let wants_dep = |url: &str| json!({"url": url, "event_types": ["dep.sync"]});
    server
        .post("/api/v1/webhooks", wants_dep(&central_it.url))
        .await?;
    server
        .post(
            &format!("/api/v1/tenants/{physics}/webhooks"),
            wants_dep(&department.url),
        )
        .await?;

    let created = server
        .post("/api/v1/dep-tokens", json!({"name": "ASM Physics"}))
        .await?;
    let id = created["id"].as_str().context("id")?.to_owned();
    let certificate = created["certificate_pem"]
        .as_str()
        .context("certificate_pem")?;
    let p7m = encrypt_server_token(
        &fake.server_token(),
        certificate.as_bytes(),
        TokenCipher::Aes256Cbc,
    )?;
    let (status, uploaded) = server
        .api(
            &server.token,
            reqwest::Method::PUT,
            &format!("/api/v1/dep-tokens/{id}/token"),
            Some(json!({"p7m_base64": base64::engine::general_purpose::STANDARD.encode(&p7m)})),
        )
        .await?;
    ensure!(status == 200, "upload → {status}: {uploaded}");
    ensure!(uploaded["uploaded"] == true, "{uploaded}");
    ensure!(uploaded["server_name"].is_string(), "{uploaded}");

    // Garbage is a 400 with our error shape.
    let (status, refused) = server
        .api(
            &server.token,
            reqwest::Method::PUT,
            &format!("/api/v1/dep-tokens/{id}/token"),
            Some(json!({"p7m_base64": "bm90IGEgdG9rZW4="})),
        )
        .await?;
    ensure!(status == 400, "garbage upload → {status}: {refused}");

    let summary = server
        .post(&format!("/api/v1/dep-tokens/{id}/sync"), json!({}))
        .await?;
    ensure!(summary["full_fetch"] == true, "{summary}");
    ensure!(summary["active_devices"] == 1_200, "{summary}");

    let tokens = server.get("/api/v1/dep-tokens").await?;
    let items = tokens["items"].as_array().context("items")?;
    ensure!(
        items.len() == 1 && items[0]["id"] == id.as_str(),
        "{tokens}"
    );
    ensure!(items[0]["last_sync_error"].is_null(), "{tokens}");

    let devices = server
        .get(&format!(
            "/api/v1/dep-devices?token={id}&limit=50&offset=10"
        ))
        .await?;
    let items = devices["items"].as_array().context("items")?;
    ensure!(items.len() == 50, "{devices}");
    ensure!(items[0]["serial_number"] == "E2E000000010", "{devices}");
    ensure!(
        items[0]["os"] == "iPadOS",
        "protocol version 7+ names iPadOS: {devices}"
    );

    // ASM schedules a migration of one iPad to another MDM server: the next sync (protocol version 8) brings
    // the deadline, and the API shows it so central IT sees the device is about to leave.
    ensure!(
        fake.stats().last_protocol_version == Some(8),
        "{:?}",
        fake.stats()
    );
    let leaving = orchard_types::SerialNumber::parse("E2E000000011")?;
    let deadline = orchard_types::UnixTime(1_900_000_000);
    ensure!(fake.modify_device(&leaving, |r| r.mdm_migration_deadline = Some(deadline)));
    let summary = server
        .post(&format!("/api/v1/dep-tokens/{id}/sync"), json!({}))
        .await?;
    ensure!(summary["full_fetch"] == false, "{summary}");
    let devices = server
        .get(&format!("/api/v1/dep-devices?token={id}&limit=2&offset=10"))
        .await?;
    let items = devices["items"].as_array().context("items")?;
    ensure!(items[1]["serial_number"] == "E2E000000011", "{devices}");
    ensure!(
        items[1]["mdm_migration_deadline"] == deadline.to_rfc3339().as_str(),
        "{devices}"
    );
    ensure!(items[0]["mdm_migration_deadline"].is_null(), "{devices}");

    // Each sync was one dep.sync event at central IT's endpoint, none at the department's.
    let received = central_it
        .wait_until(std::time::Duration::from_secs(30), |r| r.len() >= 2)
        .await?;
    for r in &received {
        let event: serde_json::Value = serde_json::from_slice(&r.body)?;
        ensure!(
            event["type"] == "dep.sync"
                && event["tenant"].is_null()
                && event["data"]["dep_token_id"] == id.as_str()
                && event["data"]["dep_token_name"] == "ASM Physics",
            "{event}"
        );
    }
    ensure!(
        department.received().is_empty(),
        "a department heard of a DEP sync"
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    dep_token_upload_and_sync => scenario;
}
