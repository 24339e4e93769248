//! Break-glass sign-in, on the real binary (SQLite and PostgreSQL): `orchard local-account set` makes a local
//! operator (password from stdin, argon2id), `POST /auth/local` signs in with the same session cookie as single
//! sign-on, the session works on the admin API (state changes with the CSRF token), five wrong passwords make
//! the guessing address wait (429, even with the right password) while another address still gets in, and every
//! attempt is in the audit log. (Before issue 10 five failures locked the account for everyone.)

use anyhow::{ensure, Context, Result};
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use serde_json::{json, Value};

/// An HTTPS client trusting the server's CA whose connections come from `source` (any 127.x address reaches the
/// server on loopback, and the server sees each as a different client).
fn client_from(server: &TestServer, source: &str) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&server.ca_pem)?)
        .local_address(source.parse::<std::net::IpAddr>()?)
        .build()?)
}

async fn sign_in(
    server: &TestServer,
    username: &str,
    password: &str,
) -> Result<(u16, Option<String>)> {
    sign_in_with(server, &server.http, username, password).await
}

async fn sign_in_with(
    server: &TestServer,
    http: &reqwest::Client,
    username: &str,
    password: &str,
) -> Result<(u16, Option<String>)> {
    let resp = http
        .post(server.url("/auth/local"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("orchard_session="))
        .map(|c| c.split(';').next().unwrap_or_default().to_owned());
    Ok((status, cookie))
}

async fn scenario(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let password = "correct horse battery staple 42";
    let short = server.local_account_set("it-oncall", "too short")?;
    ensure!(!short.status.success(), "a short password is refused");
    let made = server.local_account_set("it-oncall", password)?;
    ensure!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    // Unknown user and wrong password look the same (the unknown name is tried from another address, so the
    // five wrong passwords below are this address's first failures).
    let (status, cookie) = sign_in_with(
        &server,
        &client_from(&server, "127.0.0.3")?,
        "nobody",
        password,
    )
    .await?;
    ensure!(status == 401 && cookie.is_none(), "unknown user → {status}");
    for _ in 0..5 {
        let (status, cookie) = sign_in(&server, "it-oncall", "wrong password, sorry").await?;
        ensure!(
            status == 401 && cookie.is_none(),
            "wrong password → {status}"
        );
    }
    let (status, _) = sign_in(&server, "it-oncall", password).await?;
    ensure!(
        status == 429,
        "five failures make this address wait, even with the right password → {status}"
    );
    let reset = server.local_account_set("it-oncall", password)?;
    ensure!(reset.status.success(), "reset");

    // The operator at another machine is not held out by the guesses from the first one.
    let elsewhere = client_from(&server, "127.0.0.2")?;
    let (status, cookie) = sign_in_with(&server, &elsewhere, "it-oncall", password).await?;
    ensure!(status == 204, "right password → {status}");
    let cookie = cookie.context("session cookie")?;
    let me: Value = server
        .http
        .get(server.url("/auth/me"))
        .header("cookie", &cookie)
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        me["memberships"] == json!([{"role": "operator", "tenant_id": null}]),
        "{me}"
    );
    let csrf = me["csrf_token"].as_str().context("csrf")?.to_owned();
    let resp = server
        .http
        .post(server.url("/api/v1/tenants"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"name": "Physics", "code": "physics"}))
        .send()
        .await?;
    ensure!(
        resp.status() == 201,
        "a break-glass operator acts as operator → {}",
        resp.status()
    );

    let audit = server
        .get("/api/v1/audit?action=auth.local_login&limit=100")
        .await?;
    let outcomes: Vec<&str> = audit["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    ensure!(
        outcomes.iter().filter(|o| **o == "ok").count() == 1,
        "{audit}"
    );
    ensure!(
        outcomes.iter().filter(|o| **o == "denied").count() == 7,
        "{audit}"
    );
    ensure!(
        audit.to_string().find(password).is_none(),
        "no password in the audit log"
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    break_glass_sign_in => scenario;
}
