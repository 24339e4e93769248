//! Benchmark (ignored by the suite; `scripts/bench-webui.sh` runs it on a release build): with 10,000 iPads in
//! one department, how long the server takes to answer the web UI's main pages — the dashboard, the device
//! list (default order, sorted by last check-in, a search) and a device page — and how much each page weighs.
//! Goal (issue 14): ≤ 50 ms at p95 on the 2-core development machine, ≤ 100 KB per page before images.
//!
//! Three iPads enroll through the simulator (the device page shows a real one, with its inventory, checklist
//! and command history); the other 9,997 are written into the database directly, with varied models, iPadOS
//! versions, names and last check-ins, since enrolling 10,000 simulated iPads takes twenty minutes and the
//! pages only read the rows. Times are measured at the client over one kept-alive TLS connection on
//! loopback, so they include the request's full path through the server (session, principal, queries,
//! template), not only the template.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use reqwest::StatusCode;
use sqlx::Executor;

const DEVICES: usize = 10_000;
const REAL: usize = 3;
const WARM_UP: usize = 5;
const SAMPLES: usize = 100;

fn client(server: &TestServer) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&server.ca_pem)?)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()?)
}

fn input_value(page: &str, name: &str) -> Option<String> {
    let at = page.find(&format!("name=\"{name}\""))?;
    let rest = &page[at..];
    let v = rest.find("value=\"")? + 7;
    Some(rest[v..].chars().take_while(|c| *c != '"').collect())
}

/// Signs in through the break-glass form as an operator (central IT sees the department's 10,000 iPads).
async fn sign_in(server: &TestServer, browser: &reqwest::Client) -> Result<()> {
    let password = "benchmark password 0123456789";
    server.set_local_account("bench", password)?;
    let page = browser
        .get(server.url("/ui/login"))
        .send()
        .await?
        .text()
        .await?;
    let token = input_value(&page, "form_token").context("form token")?;
    let answer = browser
        .post(server.url("/ui/login/local"))
        .form(&[
            ("username", "bench"),
            ("password", password),
            ("form_token", token.as_str()),
        ])
        .send()
        .await?;
    ensure!(
        answer.status() == StatusCode::SEE_OTHER,
        "sign-in: {}",
        answer.status()
    );
    Ok(())
}

/// Writes `count` more iPads of `tenant` straight into the database, in batches of one statement each.
async fn seed(server: &TestServer, tenant: &str, count: usize) -> Result<()> {
    let mut db = server.connect_database().await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let models = [
        ("iPad13,18", "iPad (10th generation)"),
        ("iPad14,8", "iPad Air 11-inch (M2)"),
        ("iPad12,1", "iPad (9th generation)"),
        ("iPad16,3", "iPad Pro 11-inch (M4)"),
    ];
    let versions = [
        ("17.7.2", "21H221"),
        ("18.1", "22B83"),
        ("18.2", "22C152"),
        ("18.3.1", "22D72"),
    ];
    let mut done = 0;
    while done < count {
        let batch = (count - done).min(500);
        let rows: Vec<String> = (done..done + batch)
            .map(|i| {
                let (model, model_name) = models[i % models.len()];
                let (os, build) = versions[(i / 7) % versions.len()];
                let last_seen = now - (i as i64 % 20) * 86_400 - i as i64;
                format!(
                    "('{id}', 'BENCH-UDID-{i:08}', '{tenant}', 'BNCH{i:08}', 'enrolled', 'Elevplatta {i}', \
                     '{model}', '{model_name}', 'iPad', '{os}', '{build}', 1, {enrolled}, {last_seen}, \
                     {enrolled}, {now})",
                    id = uuid::Uuid::now_v7(),
                    enrolled = now - 200 * 86_400,
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO devices (id, udid, tenant_id, serial_number, state, device_name, model, model_name, \
             product_name, os_version, build_version, is_supervised, enrolled_at, last_seen_at, created_at, \
             updated_at) VALUES {}",
            rows.join(", ")
        );
        db.execute(sql.as_str()).await?;
        done += batch;
    }
    Ok(())
}

struct Figures {
    page: String,
    p50: Duration,
    p95: Duration,
    max: Duration,
    bytes: usize,
}

async fn measure(browser: &reqwest::Client, url: &str, page: &str) -> Result<Figures> {
    let mut times = Vec::with_capacity(SAMPLES);
    let mut bytes = 0;
    for i in 0..WARM_UP + SAMPLES {
        let started = Instant::now();
        let answer = browser.get(url).send().await?;
        let status = answer.status();
        let body = answer.bytes().await?;
        let took = started.elapsed();
        ensure!(status == StatusCode::OK, "{page}: {status}");
        if i >= WARM_UP {
            times.push(took);
            bytes = body.len();
        }
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    Ok(Figures {
        page: page.to_string(),
        p50: at(0.50),
        p95: at(0.95),
        max: at(1.0),
        bytes,
    })
}

async fn render_10k(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let tenant = server.create_tenant("Music", "mus").await?;
    let fleet = server
        .enroll_devices(&server.sim_config(), &tenant, REAL)
        .await?;
    let device = server.device_by_udid(fleet[0].udid()).await?;
    let device_id = device["id"].as_str().context("id")?.to_string();
    let seeding = Instant::now();
    seed(&server, &tenant, DEVICES - REAL).await?;
    println!(
        "seeded {} iPads in {:.1} s",
        DEVICES - REAL,
        seeding.elapsed().as_secs_f64()
    );
    let listed = server
        .get(&format!("/api/v1/devices?tenant={tenant}&limit=1"))
        .await?;
    ensure!(
        listed["total"] == DEVICES as u64,
        "the department has {DEVICES} iPads: {listed}"
    );

    let browser = client(&server)?;
    sign_in(&server, &browser).await?;
    let pages = [
        ("dashboard", "/ui".to_string()),
        ("device list", "/ui/devices".to_string()),
        (
            "device list, by last check-in",
            format!("/ui/devices?tenant={tenant}&sort=last_seen"),
        ),
        (
            "device list, search",
            "/ui/devices?q=Elevplatta%2042".to_string(),
        ),
        ("device page", format!("/ui/devices/{device_id}")),
    ];
    println!(
        "\nweb UI, {DEVICES} iPads in one department, {backend:?}, {SAMPLES} requests per page after {WARM_UP} \
         to warm up:"
    );
    println!("| page | p50 | p95 | max | weight |");
    println!("|---|---:|---:|---:|---:|");
    for (name, path) in pages {
        let f = measure(&browser, &server.url(&path), name).await?;
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} KB |",
            f.page,
            f.p50.as_secs_f64() * 1e3,
            f.p95.as_secs_f64() * 1e3,
            f.max.as_secs_f64() * 1e3,
            f.bytes as f64 / 1024.0
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: scripts/bench-webui.sh"]
async fn webui_render_10k_sqlite() -> Result<()> {
    render_10k(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: scripts/bench-webui.sh"]
async fn webui_render_10k_postgres() -> Result<()> {
    render_10k(Backend::Postgres).await
}
