//! API tokens through the API, on the real binary (SQLite and PostgreSQL): an operator makes a tenant admin's
//! token (secret shown once, works at once), the admin makes a viewer token of its own tenant but no central or
//! foreign one, each sees only the tokens it manages, use is recorded, and a revoked token is refused at once.

use anyhow::{ensure, Context, Result};
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use reqwest::Method;
use serde_json::json;

async fn scenario(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let music = server.create_tenant("Music", "music").await?;

    let (status, admin) = server
        .api(&server.token, Method::POST, "/api/v1/tokens",
            Some(json!({"name": "physics admin", "role": "admin", "tenant_id": physics, "expires_in_days": 30})))
        .await?;
    ensure!(status == 201, "operator creates → {status}: {admin}");
    let admin_secret = admin["secret"]
        .as_str()
        .context("secret shown once")?
        .to_owned();
    ensure!(
        admin["created_by"]
            .as_str()
            .is_some_and(|c| c.contains("e2e-operator")),
        "{admin}"
    );
    ensure!(
        admin["active"] == true && admin["expires_at"].is_string(),
        "{admin}"
    );
    let (status, _) = server
        .api(&admin_secret, Method::GET, "/api/v1/devices", None)
        .await?;
    ensure!(status == 200, "the new token works → {status}");

    // A tenant admin: viewer of its own tenant yes; central roles or another tenant no.
    let (status, viewer) = server
        .api(
            &admin_secret,
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "physics kiosk", "role": "viewer", "tenant_id": physics})),
        )
        .await?;
    ensure!(status == 201, "admin creates viewer → {status}: {viewer}");
    let viewer_secret = viewer["secret"].as_str().context("secret")?.to_owned();
    for (what, body) in [
        ("operator", json!({"name": "x", "role": "operator"})),
        ("helpdesk", json!({"name": "x", "role": "helpdesk"})),
        (
            "other tenant",
            json!({"name": "x", "role": "admin", "tenant_id": music}),
        ),
    ] {
        let (status, v) = server
            .api(&admin_secret, Method::POST, "/api/v1/tokens", Some(body))
            .await?;
        ensure!(
            status == 403 && v["error"]["code"] == "forbidden",
            "{what} → {status}: {v}"
        );
    }
    let (status, v) = server
        .api(
            &viewer_secret,
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "x", "role": "viewer", "tenant_id": physics})),
        )
        .await?;
    ensure!(status == 403, "viewer creates → {status}: {v}");
    let (status, v) = server
        .api(
            &server.token,
            Method::POST,
            "/api/v1/tokens",
            Some(
                json!({"name": "x", "role": "viewer", "tenant_id": physics, "expires_in_days": 0}),
            ),
        )
        .await?;
    ensure!(status == 400, "zero-day token → {status}: {v}");
    let (status, v) = server
        .api(
            &server.token,
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "x", "role": "viewer"})),
        )
        .await?;
    ensure!(status == 400, "tenant role without tenant → {status}: {v}");

    // Listing is scoped: the operator sees all, the physics admin only physics' tokens.
    let (status, music_token) = server
        .api(
            &server.token,
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "music admin", "role": "admin", "tenant_id": music})),
        )
        .await?;
    ensure!(status == 201, "{music_token}");
    let all = server.get("/api/v1/tokens").await?;
    ensure!(
        all["items"].as_array().map(Vec::len) == Some(4),
        "operator lists all 4: {all}"
    );
    ensure!(
        all.to_string().find("secret").is_none() && all.to_string().find("hash").is_none(),
        "no secrets listed: {all}"
    );
    let (status, mine) = server
        .api(&admin_secret, Method::GET, "/api/v1/tokens", None)
        .await?;
    let names: Vec<&str> = mine["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    ensure!(
        status == 200 && names == ["physics admin", "physics kiosk"],
        "physics admin lists {names:?}"
    );
    // Token use is in the audit log, once per token per hour (not once per request).
    let uses = server
        .get("/api/v1/audit?action=token.use&limit=100")
        .await?;
    let admin_id = admin["id"].as_str().context("admin id")?;
    let admin_uses = uses["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter(|e| e["target"] == admin_id)
        .count();
    ensure!(
        admin_uses == 1,
        "one token.use event for the admin token despite several requests: {uses}"
    );
    let used = mine["items"][0]["last_used_at"].clone();
    ensure!(used.is_string(), "token use recorded: {mine}");

    // Revocation: another tenant's token looks missing; the own viewer token is refused at once afterwards.
    let music_id = music_token["id"].as_str().context("id")?;
    let (status, _) = server
        .api(
            &admin_secret,
            Method::DELETE,
            &format!("/api/v1/tokens/{music_id}"),
            None,
        )
        .await?;
    ensure!(status == 404, "other tenant's token → {status}");
    let viewer_id = viewer["id"].as_str().context("id")?;
    let (status, revoked) = server
        .api(
            &admin_secret,
            Method::DELETE,
            &format!("/api/v1/tokens/{viewer_id}"),
            None,
        )
        .await?;
    ensure!(
        status == 200 && revoked["active"] == false && revoked["revoked_at"].is_string(),
        "revoke → {status}: {revoked}"
    );
    let (status, v) = server
        .api(&viewer_secret, Method::GET, "/api/v1/devices", None)
        .await?;
    ensure!(
        status == 401 && v["error"]["code"] == "unauthenticated",
        "revoked token → {status}: {v}"
    );
    let (status, _) = server
        .api(
            &server.token,
            Method::DELETE,
            "/api/v1/tokens/not-a-token-id",
            None,
        )
        .await?;
    ensure!(status == 404, "malformed id → {status}");
    Ok(())
}

orchard_testkit::backend_tests! {
    api_tokens => scenario;
}
