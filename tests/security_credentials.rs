//! Issue 10, finding 7 (credentials outlive their reason), on the real binary with SQLite and PostgreSQL:
//! a token minted by a person — and a token minted by that token — is refused once the person is disabled and
//! works again when they are enabled; each role has a maximum token lifetime (a department admin cannot mint a
//! three-year token; the server's `--token-max-days` changes it); `orchard token create` expires in 30 days
//! unless `--no-expiry` is given explicitly; resetting a break-glass password ends that account's sessions.

use anyhow::{ensure, Context, Result};
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::{Clock, Role, SystemClock, UnixTime};
use reqwest::Method;
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery staple 42";

/// A signed-in break-glass operator: its session cookie, CSRF token and user id.
struct Session {
    cookie: String,
    csrf: String,
    user_id: String,
}

async fn sign_in(server: &TestServer, username: &str) -> Result<Session> {
    let resp = server
        .http
        .post(server.url("/auth/local"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await?;
    ensure!(resp.status() == 204, "sign-in → {}", resp.status());
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("orchard_session="))
        .map(|c| c.split(';').next().unwrap_or_default().to_owned())
        .context("session cookie")?;
    let (status, me) = me(server, &cookie).await?;
    ensure!(status == 200, "/auth/me → {status}");
    Ok(Session {
        csrf: me["csrf_token"].as_str().context("csrf")?.to_owned(),
        user_id: me["user"]["id"].as_str().context("user id")?.to_owned(),
        cookie,
    })
}

async fn me(server: &TestServer, cookie: &str) -> Result<(u16, Value)> {
    let resp = server
        .http
        .get(server.url("/auth/me"))
        .header("cookie", cookie)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// `POST /api/v1/tokens` as the signed-in person; the new token's secret.
async fn mint_as_person(server: &TestServer, session: &Session, body: Value) -> Result<String> {
    let resp = server
        .http
        .post(server.url("/api/v1/tokens"))
        .header("cookie", &session.cookie)
        .header("x-csrf-token", &session.csrf)
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    let v: Value = resp.json().await?;
    ensure!(status == 201, "mint as person → {status} {v}");
    Ok(v["secret"].as_str().context("secret")?.to_owned())
}

async fn status_of(server: &TestServer, token: &str, path: &str) -> Result<u16> {
    Ok(server.api(token, Method::GET, path, None).await?.0)
}

async fn disable(server: &TestServer, user_id: &str, disabled: bool) -> Result<()> {
    let (status, body) = server
        .api(
            &server.token,
            Method::PATCH,
            &format!("/api/v1/users/{user_id}"),
            Some(json!({"disabled": disabled})),
        )
        .await?;
    ensure!(status == 200, "PATCH user → {status} {body}");
    Ok(())
}

async fn tokens_die_with_their_person(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    server.set_local_account("it-oncall", PASSWORD)?;
    let person = sign_in(&server, "it-oncall").await?;

    let personal = mint_as_person(
        &server,
        &person,
        json!({"name": "oncall laptop", "role": "operator"}),
    )
    .await?;
    // A token the personal token mints acts for the same person.
    let (status, minted) = server
        .api(
            &personal,
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "oncall script", "role": "admin", "tenant_id": physics})),
        )
        .await?;
    ensure!(status == 201, "token minted by a token → {status} {minted}");
    let derived = minted["secret"].as_str().context("secret")?.to_owned();
    // A service token minted by the bootstrap token acts for nobody and is unaffected.
    let (status, service) = server
        .api(
            &server.token,
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "inventory export", "role": "viewer", "tenant_id": physics})),
        )
        .await?;
    ensure!(status == 201, "{service}");
    let service = service["secret"].as_str().context("secret")?.to_owned();

    for token in [&personal, &derived, &service] {
        ensure!(status_of(&server, token, "/api/v1/devices").await? == 200);
    }

    disable(&server, &person.user_id, true).await?;
    ensure!(
        status_of(&server, &personal, "/api/v1/devices").await? == 401,
        "the disabled person's own token is refused"
    );
    ensure!(
        status_of(&server, &derived, "/api/v1/devices").await? == 401,
        "a token minted through the person's token is refused too"
    );
    ensure!(
        me(&server, &person.cookie).await?.0 == 401,
        "and the person's session"
    );
    ensure!(
        status_of(&server, &service, "/api/v1/devices").await? == 200,
        "a service token keeps working"
    );

    disable(&server, &person.user_id, false).await?;
    ensure!(
        status_of(&server, &personal, "/api/v1/devices").await? == 200,
        "enabled again, the person's tokens work again (they were never revoked)"
    );
    ensure!(status_of(&server, &derived, "/api/v1/devices").await? == 200);
    Ok(())
}

async fn token_lifetimes_per_role(backend: Backend) -> Result<()> {
    let Some(server) =
        TestServer::start_with(backend, &["--token-max-days".into(), "viewer=7".into()]).await?
    else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let admin = server.create_token(Role::Admin, Some(&physics), "physics admin")?;
    let mint = |token: String, body: Value| {
        let server = &server;
        async move {
            server
                .api(&token, Method::POST, "/api/v1/tokens", Some(body))
                .await
        }
    };
    let day = 86_400;
    let expires_in = |v: &Value| -> Result<i64> {
        let at = v["expires_at"].as_str().context("expires_at")?;
        let at = UnixTime::parse_rfc3339(at).context("rfc3339")?;
        Ok(at.0 - SystemClock.now().0)
    };

    // A department's admin cannot mint a three-year token, nor one beyond the admin maximum of 90 days.
    for days in [1095, 91] {
        let (status, body) = mint(
            admin.clone(),
            json!({"name": "long", "role": "admin", "tenant_id": physics, "expires_in_days": days}),
        )
        .await?;
        ensure!(
            status == 400,
            "admin token for {days} days → {status} {body}"
        );
    }
    let (status, body) = mint(
        admin.clone(),
        json!({"name": "quarter", "role": "admin", "tenant_id": physics, "expires_in_days": 90}),
    )
    .await?;
    ensure!(status == 201, "{body}");
    // Not asked: 30 days.
    let (status, body) = mint(
        admin.clone(),
        json!({"name": "default", "role": "admin", "tenant_id": physics}),
    )
    .await?;
    ensure!(status == 201, "{body}");
    let left = expires_in(&body)?;
    ensure!(
        (29 * day..=30 * day).contains(&left),
        "default lifetime is 30 days, got {left} s"
    );
    // The configured maximum for viewers (7) caps the default too.
    let (status, body) = mint(
        admin.clone(),
        json!({"name": "viewer", "role": "viewer", "tenant_id": physics}),
    )
    .await?;
    ensure!(status == 201, "{body}");
    ensure!(expires_in(&body)? <= 7 * day, "{body}");
    let (status, body) = mint(
        server.token.clone(),
        json!({"name": "viewer", "role": "viewer", "tenant_id": physics, "expires_in_days": 8}),
    )
    .await?;
    ensure!(
        status == 400,
        "the maximum binds operators too → {status} {body}"
    );
    let (status, body) = mint(
        server.token.clone(),
        json!({"name": "automation", "role": "operator", "expires_in_days": 365}),
    )
    .await?;
    ensure!(status == 201, "{body}");
    let (status, body) = mint(
        server.token.clone(),
        json!({"name": "automation", "role": "operator", "expires_in_days": 366}),
    )
    .await?;
    ensure!(status == 400, "{body}");
    Ok(())
}

/// The tokens named "console", as the operator lists them.
async fn console_tokens(server: &TestServer) -> Result<Vec<Value>> {
    let tokens = server.get("/api/v1/tokens?limit=1000").await?;
    Ok(tokens["items"]
        .as_array()
        .context("token list")?
        .iter()
        .filter(|t| t["name"] == "console")
        .cloned()
        .collect())
}

async fn bootstrap_tokens_expire_unless_told(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let create = |extra: &[&str]| -> Result<String> {
        let mut args = vec!["token", "create", "--role", "operator", "--name", "console"];
        args.extend_from_slice(extra);
        let out = server.database_command(&args)?.output()?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    };
    let default = create(&[])?;
    ensure!(status_of(&server, &default, "/api/v1/tokens").await? == 200);
    let console = console_tokens(&server).await?;
    ensure!(console.len() == 1, "{console:?}");
    let at = console[0]["expires_at"].as_str().context("expires")?;
    let left = UnixTime::parse_rfc3339(at).context("rfc3339")?.0 - SystemClock.now().0;
    ensure!(
        (29 * 86_400..=30 * 86_400).contains(&left),
        "`orchard token create` expires in 30 days by default, got {left} s"
    );

    let forever = create(&["--no-expiry"])?;
    ensure!(status_of(&server, &forever, "/api/v1/tokens").await? == 200);
    let never = console_tokens(&server)
        .await?
        .iter()
        .filter(|t| t["expires_at"].is_null())
        .count();
    ensure!(never == 1, "--no-expiry makes one that never expires");

    let conflicting = server
        .database_command(&[
            "token",
            "create",
            "--role",
            "operator",
            "--name",
            "x",
            "--no-expiry",
            "--expires-in-days",
            "5",
        ])?
        .output()?;
    ensure!(
        !conflicting.status.success(),
        "--no-expiry with --expires-in-days is refused"
    );
    Ok(())
}

async fn password_reset_ends_sessions(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    server.set_local_account("it-oncall", PASSWORD)?;
    let before = sign_in(&server, "it-oncall").await?;
    ensure!(me(&server, &before.cookie).await?.0 == 200);
    server.set_local_account("it-oncall", PASSWORD)?;
    ensure!(
        me(&server, &before.cookie).await?.0 == 401,
        "a session from before the reset is ended"
    );
    let after = sign_in(&server, "it-oncall").await?;
    ensure!(
        me(&server, &after.cookie).await?.0 == 200,
        "signing in again works"
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    tokens_die_with_their_person => tokens_die_with_their_person;
    token_lifetimes_per_role => token_lifetimes_per_role;
    bootstrap_tokens_expire_unless_told => bootstrap_tokens_expire_unless_told;
    password_reset_ends_sessions => password_reset_ends_sessions;
}
