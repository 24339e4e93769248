//! The OpenAPI document on the real binary: served without a token and equal to the committed
//! `docs/openapi.json`; every documented operation is routed (no router 404/405); query-string errors answer
//! the documented error body.

use anyhow::{ensure, Context, Result};
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use reqwest::Method;
use serde_json::{json, Value};

async fn scenario(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };

    let resp = server
        .http
        .get(server.url("/api/v1/openapi.json"))
        .send()
        .await?;
    ensure!(
        resp.status() == 200,
        "GET openapi.json without a token → {}",
        resp.status()
    );
    let served = resp.text().await?;
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))?;
    ensure!(
        served == committed,
        "the served document differs from docs/openapi.json: \
         ORCHARD_UPDATE_OPENAPI=1 cargo test -p orchard-server --test openapi"
    );

    let doc: Value = serde_json::from_str(&served)?;
    let absent_id = "01900000-0000-7000-8000-000000000000";
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().context("paths")? {
        let concrete = path.replace("{id}", absent_id);
        for method in item.as_object().context("path item")?.keys() {
            let method: Method = method.to_uppercase().parse()?;
            let body =
                matches!(method, Method::POST | Method::PUT | Method::PATCH).then(|| json!({}));
            let (status, answer) = server
                .api(&server.token, method.clone(), &concrete, body)
                .await?;
            ensure!(status != 405, "{method} {path}: not routed (405)");
            ensure!(
                status != 404 || answer["error"]["code"] == "not_found",
                "{method} {path}: router 404 (no handler): {answer}"
            );
            ensure!(status < 500, "{method} {path} → {status}: {answer}");
            checked += 1;
        }
    }
    ensure!(checked >= 40, "only {checked} operations");

    // A malformed query string answers the documented error shape, not axum's plain text.
    let (status, answer) = server
        .api(
            &server.token,
            Method::GET,
            &format!("/api/v1/devices/{absent_id}/commands?limit=many"),
            None,
        )
        .await?;
    ensure!(
        status == 400 && answer["error"]["code"] == "invalid_request",
        "{status}: {answer}"
    );
    ensure!(
        answer["error"]["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{answer}"
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    openapi_document_is_served_and_every_operation_is_routed => scenario;
}
