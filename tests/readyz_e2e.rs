//! `/readyz` checks the database: 200 while it answers, on SQLite and PostgreSQL. On PostgreSQL the test then
//! takes the database away (connections refused and the server's dropped): `/readyz` answers 503 within its
//! timeout while `/healthz` (liveness) stays 200, and 200 again once the database is back.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use reqwest::Method;
use sqlx::Connection;

async fn status(server: &TestServer, path: &str) -> Result<u16> {
    Ok(server.api("", Method::GET, path, None).await?.0)
}

/// Polls `/readyz` until it answers `want` (bounded: the check itself gives up after a few seconds).
async fn readyz_becomes(server: &TestServer, want: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = status(server, "/readyz").await?;
        if got == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("/readyz still answers {got}, not {want}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn readiness(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    ensure!(status(&server, "/readyz").await? == 200);
    if backend == Backend::Sqlite {
        return Ok(());
    }

    let database_url = server.shared_database_url();
    let name = database_url
        .rsplit('/')
        .next()
        .and_then(|n| n.split('?').next())
        .context("database name")?
        .to_string();
    let admin_url = std::env::var(orchard_testkit::database::POSTGRES_URL_VAR)?;
    orchard_store::install_sqlx_drivers();
    let mut admin = sqlx::AnyConnection::connect(&admin_url).await?;
    sqlx::query(&format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
    ))
    .execute(&mut admin)
    .await?;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&mut admin)
        .await?;
    let outage = readyz_becomes(&server, 503).await;
    let alive = status(&server, "/healthz").await;
    sqlx::query(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await?;
    outage?;
    ensure!(alive? == 200, "liveness does not depend on the database");
    readyz_becomes(&server, 200).await?;
    Ok(())
}

orchard_testkit::backend_tests! {
    readyz_checks_the_database => readiness;
}
