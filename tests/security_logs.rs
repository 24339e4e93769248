//! No secret in any log line (issue 10, finding 5): the real binary logs at TRACE (every crate, ours and the
//! libraries') into a file while an iPad enrolls through a link, an API token of two roles is used, the
//! break-glass operator signs in and uses the session, a ClearPasscode carries the escrowed UnlockToken and the
//! iPad reports its Activation Lock bypass code; then every line is searched for each of those secrets. On
//! SQLite and PostgreSQL.

use anyhow::{ensure, Context, Result};
use base64::Engine;
use orchard_sim::SimDevice;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::Role;
use serde_json::{json, Value};

/// The log without ANSI colour sequences, so a secret split by one would still be found.
fn without_terminal_colours(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn scenario(backend: Backend) -> Result<()> {
    let logs = tempfile::tempdir()?;
    let log_path = logs.path().join("orchard.log");
    let Some(server) = TestServer::start_logged(backend, &[], "trace", &log_path).await? else {
        return Ok(());
    };
    let mut secrets: Vec<(&str, String)> = vec![("operator token", server.token.clone())];

    // An enrollment link, and an iPad enrolling through it (landing page, then the download).
    let physics = server.create_tenant("Physics", "physics").await?;
    let link = server.enrollment_link(&physics, None).await?;
    let link_secret = link.rsplit('/').next().context("link secret")?.to_owned();
    secrets.push(("enrollment link secret", link_secret));
    let mut ipad = SimDevice::new_random(&server.sim_config());
    ipad.enroll(&link).await.context("enrollment")?;
    ipad.poll().await?;
    let detail = server.device_by_udid(&ipad.state.udid).await?;
    let id = detail["id"].as_str().context("device id")?.to_owned();
    let serial = detail["serial_number"]
        .as_str()
        .context("serial")?
        .to_owned();

    // A viewer's token in use.
    let viewer = server.create_token(Role::Viewer, Some(&physics), "viewer")?;
    let (status, _) = server
        .api(&viewer, reqwest::Method::GET, "/api/v1/devices", None)
        .await?;
    ensure!(status == 200, "viewer lists devices → {status}");
    secrets.push(("viewer token", viewer));

    // The break-glass operator signs in and uses the session (cookie and CSRF token).
    let password = "correct horse battery staple 42";
    server.set_local_account("it-oncall", password)?;
    secrets.push(("break-glass password", password.to_owned()));
    let signed_in = server
        .http
        .post(server.url("/auth/local"))
        .json(&json!({"username": "it-oncall", "password": password}))
        .send()
        .await?;
    ensure!(
        signed_in.status() == 204,
        "sign-in → {}",
        signed_in.status()
    );
    let cookie = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("orchard_session="))
        .and_then(|c| c.split(';').next())
        .context("session cookie")?
        .to_owned();
    let me: Value = server
        .http
        .get(server.url("/auth/me"))
        .header("cookie", &cookie)
        .send()
        .await?
        .json()
        .await?;
    let csrf = me["csrf_token"].as_str().context("csrf")?.to_owned();
    let created = server
        .http
        .post(server.url("/api/v1/tenants"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"name": "Chemistry", "code": "chemistry"}))
        .send()
        .await?;
    ensure!(
        created.status() == 201,
        "session use → {}",
        created.status()
    );
    let session = cookie
        .strip_prefix("orchard_session=")
        .context("cookie value")?
        .to_owned();
    secrets.push(("session cookie", session));
    secrets.push(("csrf token", csrf));

    // ClearPasscode carries the UnlockToken the iPad escrowed at TokenUpdate.
    ensure!(
        !ipad.state.unlock_token.is_empty(),
        "the iPad escrowed no UnlockToken"
    );
    let unlock_token = ipad.state.unlock_token.clone();
    let queued = server
        .post(
            &format!("/api/v1/devices/{id}/commands"),
            json!({"type": "ClearPasscode", "confirm_serial": serial}),
        )
        .await?;
    ensure!(queued["status"] == "queued", "{queued}");
    ipad.poll().await?;
    secrets.push((
        "UnlockToken (base64)",
        base64::engine::general_purpose::STANDARD.encode(&unlock_token),
    ));
    secrets.push((
        "UnlockToken (hex)",
        unlock_token.iter().map(|b| format!("{b:02x}")).collect(),
    ));

    // The iPad reports its Activation Lock bypass code.
    server
        .post(
            &format!("/api/v1/devices/{id}/commands"),
            json!({"type": "ActivationLockBypassCode"}),
        )
        .await?;
    ipad.poll().await?;
    let code = ipad
        .state
        .activation_lock_bypass_code
        .clone()
        .context("a supervised simulated iPad has a bypass code")?;
    secrets.push(("bypass code", code));

    // A caller's request ids: a plain one is logged beside ours, a 5,000-character one not at all.
    let long_id = "y".repeat(5000);
    for client_id in ["client-trace-42", long_id.as_str()] {
        let resp = server
            .http
            .get(server.url("/healthz"))
            .header("x-request-id", client_id)
            .send()
            .await?;
        ensure!(resp.status() == 200, "healthz → {}", resp.status());
    }

    // Stop the server so that everything it logged is in the file.
    drop(server);
    let log = without_terminal_colours(&std::fs::read_to_string(&log_path)?);
    ensure!(
        log.lines().count() > 100,
        "the server logged almost nothing at TRACE: {log}"
    );
    ensure!(
        log.contains("/enroll/[redacted]"),
        "the enrollment requests are not in the log (redacted)"
    );
    ensure!(
        log.contains("client_request_id=client-trace-42"),
        "a plain client request id is not logged beside ours"
    );
    ensure!(
        !log.contains(&long_id[..200]),
        "a 5,000-character client request id reached the log"
    );
    for (what, secret) in &secrets {
        ensure!(secret.len() >= 8, "{what} is too short to search for");
        if let Some(line) = log.lines().find(|l| l.contains(secret.as_str())) {
            let excerpt: String = line.chars().take(400).collect();
            anyhow::bail!("the log carries the {what}: {excerpt}");
        }
    }
    Ok(())
}

orchard_testkit::backend_tests! {
    no_secret_in_any_log_line => scenario;
}
