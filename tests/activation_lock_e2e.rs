//! End to end: clearing Activation Lock with the escrowed bypass code. The real `orchard` binary, a simulated
//! iPad enrolled through a link, and a local stand-in for Apple's activation service (orchard-dep's `fake`)
//! that only talks to TLS clients holding a certificate from the test "Apple push CA": the iPad reports its
//! bypass code, an admin clears the lock, and the service receives the device's serial, product type and that
//! code over a connection authenticated with the uploaded push certificate. Also: who may do it (403 for a
//! viewer, 404 for another tenant's admin), 409 without an escrowed code or a push certificate, and 502 with
//! Apple's reason when Apple refuses — on SQLite and on PostgreSQL.

use anyhow::{ensure, Context, Result};
use orchard_apns::fake::random_topic;
use orchard_sim::SimDevice;
use orchard_testkit::apple::{AppleActivation, ApplePush};
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::{Clock, Role, SystemClock};
use serde_json::{json, Value};

/// Apple's side: the push CA, APNs (so pushes after the certificate upload go somewhere local) and the
/// activation service, both trusting client certificates of that CA.
struct Apple {
    push: ApplePush,
    activation: AppleActivation,
}

async fn apple() -> Result<Apple> {
    let push = ApplePush::start(SystemClock.now()).await?;
    let activation = AppleActivation::start(&push).await?;
    Ok(Apple { push, activation })
}

async fn clear(server: &TestServer, token: &str, device_id: &str) -> Result<(u16, Value)> {
    server
        .api(
            token,
            reqwest::Method::POST,
            &format!("/api/v1/devices/{device_id}/activation-lock/clear"),
            None,
        )
        .await
}

fn error_message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn scenario(backend: Backend) -> Result<()> {
    let apple = apple().await?;
    let Some(server) = TestServer::start_with(
        backend,
        &[apple.activation.serve_args(), apple.push.serve_args()].concat(),
    )
    .await?
    else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let chemistry = server.create_tenant("Chemistry", "chemistry").await?;
    let link = server.enrollment_link(&physics, None).await?;

    // A supervised iPad enrolls and answers the inventory Orchard queued.
    let mut ipad = SimDevice::new_random(&server.sim_config());
    ipad.enroll(&link).await.context("enrollment")?;
    ipad.poll().await?;
    let detail = server.device_by_udid(&ipad.state.udid).await?;
    let id = detail["id"].as_str().context("device id")?.to_string();

    // Nothing escrowed yet: nothing to send.
    let (status, body) = clear(&server, &server.token, &id).await?;
    ensure!(status == 409, "clear without a code: {status} {body}");
    ensure!(
        error_message(&body).contains("no activation lock bypass code is escrowed"),
        "{body}"
    );

    // The iPad reports its bypass code; Orchard keeps it.
    let queued = server
        .post(
            &format!("/api/v1/devices/{id}/commands"),
            json!({"type": "ActivationLockBypassCode"}),
        )
        .await?;
    ensure!(queued["status"] == "queued", "{queued}");
    ipad.poll().await?;
    let code = ipad
        .state
        .activation_lock_bypass_code
        .clone()
        .context("a supervised simulated iPad has a bypass code")?;
    let view = server
        .get(&format!("/api/v1/devices/{id}/activation-lock"))
        .await?;
    ensure!(view["bypass_code_escrowed"] == true, "{view}");
    ensure!(view["bypass_code"] == code.as_str(), "{view}");

    // Without a push certificate Orchard cannot identify itself to Apple.
    let (status, body) = clear(&server, &server.token, &id).await?;
    ensure!(
        status == 409,
        "clear without a push certificate: {status} {body}"
    );
    ensure!(error_message(&body).contains("push certificate"), "{body}");
    ensure!(apple.activation.server.requests().is_empty());

    // Upload a push certificate issued by the test Apple CA (force: it replaces the development topic).
    let topic = random_topic()?;
    let push_cert = apple.push.certificate(&topic, SystemClock.now(), 365)?;
    let (status, body) = server
        .api(
            &server.token,
            reqwest::Method::PUT,
            "/api/v1/push-certificate",
            Some(json!({
                "certificate_pem": String::from_utf8(push_cert.cert_pem())?,
                "private_key_pem": String::from_utf8(push_cert.key_pem().expose().clone())?,
                "force": true,
            })),
        )
        .await?;
    ensure!(status == 200, "push certificate upload: {status} {body}");

    // Who may ask: a physics viewer may not; chemistry's admin does not even see the device.
    let physics_viewer = server.create_token(Role::Viewer, Some(&physics), "physics-viewer")?;
    let physics_admin = server.create_token(Role::Admin, Some(&physics), "physics-admin")?;
    let chemistry_admin = server.create_token(Role::Admin, Some(&chemistry), "chemistry-admin")?;
    let (status, body) = clear(&server, &physics_viewer, &id).await?;
    ensure!(status == 403, "viewer: {status} {body}");
    let (status, body) = clear(&server, &chemistry_admin, &id).await?;
    ensure!(status == 404, "another tenant's admin: {status} {body}");
    ensure!(
        apple.activation.server.requests().is_empty(),
        "a refused caller reached Apple"
    );

    // The tenant's admin clears the lock.
    let (status, outcome) = clear(&server, &physics_admin, &id).await?;
    ensure!(status == 200, "clear: {status} {outcome}");
    ensure!(outcome["cleared"] == true, "{outcome}");
    ensure!(outcome["cleared_with"] == "device", "{outcome}");
    ensure!(outcome["device_id"] == id.as_str(), "{outcome}");
    ensure!(
        outcome["serial_number"] == ipad.state.serial_number.as_str(),
        "{outcome}"
    );
    let attempts = outcome["attempts"].as_array().context("attempts")?;
    ensure!(attempts.len() == 1, "{outcome}");
    ensure!(attempts[0]["result"] == "cleared", "{outcome}");
    ensure!(
        !outcome.to_string().contains(&code),
        "the code leaked into the answer"
    );

    let requests = apple.activation.server.requests();
    ensure!(requests.len() == 1, "{requests:?}");
    let request = &requests[0];
    let field = |name: &str| request.fields.get(name).map(String::as_str);
    ensure!(field("serial") == Some(ipad.state.serial_number.as_str()));
    ensure!(field("productType") == Some(ipad.state.product_name.as_str()));
    ensure!(
        field("escrowKey") == Some(code.as_str()),
        "escrowKey is not the iPad's code"
    );
    ensure!(field("orgName").is_some_and(|o| !o.is_empty()));
    ensure!(field("guid") == attempts[0]["guid"].as_str());
    // The simulated iPad is Wi-Fi only: no cellular identifiers are invented.
    ensure!(field("imei").is_none() && field("meid").is_none());
    ensure!(
        request.client_certificate_der == push_cert.identity().cert_der(),
        "the client certificate is not the uploaded push certificate"
    );
    ensure!(
        request
            .client_subject
            .contains(&format!("UID={}", topic.as_str())),
        "{}",
        request.client_subject
    );

    // Apple refuses: the caller gets 502 with Apple's status and reason, and the outcome.
    apple
        .activation
        .server
        .inject_failure(400, "Invalid escrow key", 1);
    let (status, body) = clear(&server, &server.token, &id).await?;
    ensure!(status == 502, "refused by apple: {status} {body}");
    ensure!(
        body["error"]["code"] == "activation_lock_not_cleared",
        "{body}"
    );
    let message = error_message(&body);
    ensure!(
        message.contains("(400)") && message.contains("Invalid escrow key"),
        "{body}"
    );
    ensure!(body["outcome"]["cleared"] == false, "{body}");
    ensure!(
        body["outcome"]["attempts"][0]["result"] == "refused",
        "{body}"
    );
    ensure!(body["outcome"]["attempts"][0]["status"] == 400, "{body}");
    ensure!(apple.activation.server.requests().len() == 2);

    // Every request is in the audit log under one action: the refused callers (403, 404) as denied, the
    // cleared lock as ok, and Apple's refusal and the 409s as errors.
    let audit = server
        .get("/api/v1/audit?action=device.activation_lock.clear")
        .await?;
    let events: Vec<&Value> = audit["items"]
        .as_array()
        .context("audit items")?
        .iter()
        .filter(|e| e["target"] == id.as_str())
        .collect();
    let count = |outcome: &str| events.iter().filter(|e| e["outcome"] == outcome).count();
    ensure!(count("ok") == 1, "audit: {audit}");
    ensure!(count("denied") == 2, "audit: {audit}");
    ensure!(count("error") == 3, "audit: {audit}");
    let cleared = events
        .iter()
        .find(|e| e["outcome"] == "ok")
        .context("cleared event")?;
    ensure!(cleared["tenant_id"] == physics.as_str(), "{cleared}");
    ensure!(cleared["details"]["cleared"] == true, "{cleared}");
    Ok(())
}

orchard_testkit::backend_tests! {
    activation_lock_is_cleared_with_the_escrowed_code => scenario;
}
