//! The web UI in a real browser: Debian's headless Chromium driven through chromedriver (fantoccini), against the
//! real binary with simulated iPads and the real test OpenID provider, on SQLite and PostgreSQL.
//!
//! A Physics admin signs in through single sign-on, sees only Physics' iPads, opens one, reads its checklist,
//! locks it, tries to erase it without the serial (refused) and with it (accepted), exports CSV and switches to
//! Swedish; a Physics viewer sees no action button and her forged form post is refused. Screenshots of the main
//! pages go to `target/tmp/webui-screenshots/` (CARGO_TARGET_TMPDIR).
//!
//! chromedriver runs in its own process group, killed by a guard even when the test panics (STACK.md pitfall
//! 12); each browser gets its own profile directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use fantoccini::{Client, ClientBuilder, Locator};
use orchard_testkit::oidc::OidcProvider;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use serde_json::{json, Value};

const CLIENT_ID: &str = "orchard-webui-browser";
const CLIENT_SECRET: &str = "webui-browser-client-secret-0123456789";

/// The test OpenID provider (npm `oidc-provider`); killed when dropped.
/// chromedriver in its own process group; the whole group (chromedriver and every Chromium it started) is
/// killed when this is dropped, also when the test panics.
struct Chromedriver {
    child: Child,
    url: String,
    profiles: tempfile::TempDir,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

impl Chromedriver {
    async fn start() -> Result<Chromedriver> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting chromedriver (Debian package chromium-driver; scripts/test.sh installs it)")?;
        let driver = Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profiles: tempfile::tempdir()?,
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(driver);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("chromedriver did not listen on port {port}")
    }

    /// A new headless Chromium with its own profile, preferring `language`.
    async fn browser(&self, name: &str, language: &str) -> Result<Client> {
        let profile = self.profiles.path().join(name);
        let mut caps = serde_json::Map::new();
        caps.insert("acceptInsecureCerts".into(), json!(true));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium_binary(),
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,1000",
                    format!("--lang={language}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {"intl.accept_languages": language},
            }),
        );
        Ok(ClientBuilder::native()
            .capabilities(caps)
            .connect(&self.url)
            .await?)
    }
}

/// The real browser binary (`/usr/bin/chromium` is a wrapper script).
fn chromium_binary() -> String {
    let real = Path::new("/usr/lib/chromium/chromium");
    if real.exists() {
        real.display().to_string()
    } else {
        "/usr/bin/chromium".into()
    }
}

fn screenshots_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("webui-screenshots")
}

/// Saves a screenshot of the page under the test output directory, and checks the page with axe-core: every
/// page worth a screenshot is a main page, and none may have a serious or critical WCAG 2.1 A/AA violation.
async fn screenshot(browser: &Client, name: &str) -> Result<()> {
    let dir = screenshots_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("{name}.png")), browser.screenshot().await?)?;
    let violations = axe_violations(browser).await?;
    let grave: Vec<&Value> = violations
        .iter()
        .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
        .collect();
    ensure!(
        grave.is_empty(),
        "axe-core finds serious or critical accessibility violations on {name}: {grave:#?}"
    );
    println!(
        "{name}: axe-core, {} minor accessibility findings: {violations:?}",
        violations.len()
    );
    Ok(())
}

/// axe-core (npm, test-only: `tests/oidc/node_modules/axe-core`), injected into the page by WebDriver (which is
/// not bound by the page's CSP) and run over WCAG 2.0/2.1 A and AA rules: each violation's rule, impact, help
/// text and first targets.
async fn axe_violations(browser: &Client) -> Result<Vec<Value>> {
    let source = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/oidc/node_modules/axe-core/axe.min.js"),
    )
    .context(
        "axe-core is not installed: run `npm ci --prefix tests/oidc` (scripts/test.sh does it)",
    )?;
    let script = format!(
        "const done = arguments[arguments.length - 1];\n{source}\n\
         axe.run(document, {{runOnly: {{type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}}}})\
           .then(r => done(JSON.stringify({{passes: r.passes.length, violations: r.violations.map(v => ({{id: v.id, \
             impact: v.impact, help: v.help, targets: v.nodes.slice(0, 3).map(n => n.target)}}))}})))\
           .catch(e => done('axe failed: ' + e));"
    );
    let answer = browser.execute_async(&script, vec![]).await?;
    let text = answer.as_str().context("axe answered no text")?;
    ensure!(!text.starts_with("axe failed"), "{text}");
    let report: Value = serde_json::from_str(text)?;
    // A run that checked nothing would prove nothing: every page passes some rules (lang, title, labels…).
    ensure!(
        report["passes"].as_u64().unwrap_or(0) > 0,
        "axe-core checked no rule: {report}"
    );
    Ok(report["violations"].as_array().cloned().unwrap_or_default())
}

async fn wait_for(browser: &Client, css: &str) -> Result<fantoccini::elements::Element> {
    Ok(browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await?)
}

async fn body_text(browser: &Client) -> Result<String> {
    Ok(browser.find(Locator::Css("body")).await?.text().await?)
}

/// Signs in from the sign-in page through the provider's forms (devInteractions), back to Orchard.
async fn sign_in(browser: &Client, server: &TestServer, login: &str) -> Result<()> {
    browser.goto(&server.url("/ui")).await?;
    let sso = wait_for(browser, "#sso").await?;
    sso.click().await?;
    for _ in 0..10 {
        let url = browser.current_url().await?;
        if url.as_str().starts_with(&server.base_url) && url.path().starts_with("/ui") {
            return Ok(());
        }
        if let Ok(field) = browser.find(Locator::Css("input[name=login]")).await {
            field.send_keys(login).await?;
            browser
                .find(Locator::Css("input[name=password]"))
                .await?
                .send_keys("devInteractions accepts any")
                .await?;
        }
        if let Ok(submit) = browser.find(Locator::Css("button[type=submit]")).await {
            submit.click().await?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    bail!(
        "sign-in did not come back to Orchard: {}",
        browser.current_url().await?
    )
}

/// A form post the page did not offer, made by script in the signed-in browser (same origin, with the session
/// cookie and a CSRF token taken from the page): the server's answer status.
async fn forged_post(browser: &Client, path: &str, fields: Value) -> Result<u16> {
    let status = browser
        .execute(
            "const [path, fields] = arguments; \
             const body = new URLSearchParams(fields); \
             return fetch(path, {method: 'POST', body, redirect: 'manual'}).then(r => r.status);",
            vec![json!(path), fields],
        )
        .await?;
    status.as_u64().map(|s| s as u16).context("status")
}

async fn commands_named(server: &TestServer, device: &str, request_type: &str) -> Result<usize> {
    Ok(server
        .commands_of(device)
        .await?
        .iter()
        .filter(|c| c["request_type"] == request_type)
        .count())
}

async fn scenario(backend: Backend) -> Result<()> {
    let mut provider = OidcProvider::start()?;
    let args: Vec<String> = [
        "--oidc-issuer",
        provider.issuer.as_str(),
        "--oidc-client-id",
        CLIENT_ID,
        "--oidc-client-secret",
        CLIENT_SECRET,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let Some(server) = TestServer::start_with(backend, &args).await? else {
        return Ok(());
    };
    provider.configure(CLIENT_ID, CLIENT_SECRET, &server.url("/auth/callback"))?;
    let physics = server.create_tenant("Physics", "phys").await?;
    let music = server.create_tenant("Music", "mus").await?;
    for (group, role, tenant) in [
        ("physics-it-admins", "admin", Some(&physics)),
        ("physics-viewers", "viewer", Some(&physics)),
        ("central-it", "operator", None),
    ] {
        server
            .post(
                "/api/v1/role-mappings",
                json!({"claim": "groups", "value": group, "role": role, "tenant_id": tenant}),
            )
            .await?;
    }
    let config = server.sim_config();
    let ours = server.enroll_devices(&config, &physics, 2).await?;
    let theirs = server.enroll_devices(&config, &music, 1).await?;
    let device = server.device_by_udid(ours[0].udid()).await?;
    let device_id = device["id"].as_str().context("id")?.to_string();
    let serial = device["serial_number"]
        .as_str()
        .context("serial")?
        .to_string();
    let foreign = server.device_by_udid(theirs[0].udid()).await?;
    let foreign_serial = foreign["serial_number"]
        .as_str()
        .context("serial")?
        .to_string();

    let driver = Chromedriver::start().await?;
    let operator = driver.browser("operator", "en-GB").await?;
    let outcome = operator_walk(&operator, &server).await;
    let _ = operator.close().await;
    outcome?;

    let admin = driver.browser("admin", "en-GB").await?;
    let outcome = admin_walk(&admin, &server, &device_id, &serial, &foreign_serial).await;
    let _ = admin.close().await;
    outcome?;

    let viewer = driver.browser("viewer", "en-GB").await?;
    let outcome = viewer_walk(&viewer, &server, &device_id).await;
    let _ = viewer.close().await;
    outcome
}

/// The maintenance notice's English text, published by the operator and read by the department.
const NOTICE_EN: &str = "Orchard is upgraded: iPads cannot be managed during the window.";

/// Central IT announces planned maintenance through the operator page.
async fn operator_walk(browser: &Client, server: &TestServer) -> Result<()> {
    sign_in(browser, server, "olle").await?;
    wait_for(browser, "#count-total").await?;
    browser
        .find(Locator::Css("a[href='/ui/maintenance']"))
        .await?
        .click()
        .await?;
    wait_for(browser, "#publish-notice").await?;
    // A day from now for two hours, as the browser's datetime-local fields give it (read as UTC).
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 86_400;
    let local = |secs: u64| {
        let t = orchard_types::UnixTime(secs as i64).to_rfc3339();
        t.chars().take(16).collect::<String>()
    };
    browser
        .execute(
            "const [s, e] = arguments; \
             document.getElementById('starts_at').value = s; \
             document.getElementById('ends_at').value = e;",
            vec![json!(local(start)), json!(local(start + 7_200))],
        )
        .await?;
    browser
        .find(Locator::Id("text_sv"))
        .await?
        .send_keys("Orchard uppgraderas: iPads kan inte hanteras under tiden.")
        .await?;
    browser
        .find(Locator::Id("text_en"))
        .await?
        .send_keys(NOTICE_EN)
        .await?;
    browser
        .find(Locator::Css("#publish-notice button[type=submit]"))
        .await?
        .click()
        .await?;
    wait_for(browser, "#notices").await?;
    let text = body_text(browser).await?;
    ensure!(
        text.contains(NOTICE_EN),
        "the published notice is listed: {text}"
    );
    screenshot(browser, "maintenance").await?;
    // Central IT's own pages, each checked by axe-core.
    for (page, element) in [
        ("/ui/operator/tenants", "#tenants"),
        ("/ui/operator/people", "#mapping-form"),
        ("/ui/operator/tokens", "#token-form"),
        ("/ui/operator/apple", "#push"),
        ("/ui/operator/links", "main h1"),
        ("/ui/operator/expiring", "main h1"),
    ] {
        browser.goto(&server.url(page)).await?;
        wait_for(browser, element).await?;
        screenshot(browser, &page.trim_start_matches("/ui/").replace('/', "-")).await?;
    }
    let listed = server.get("/api/v1/maintenance").await?;
    ensure!(
        listed["items"][0]["text_en"] == NOTICE_EN,
        "the API lists the notice: {listed}"
    );
    Ok(())
}

async fn admin_walk(
    browser: &Client,
    server: &TestServer,
    device_id: &str,
    serial: &str,
    foreign_serial: &str,
) -> Result<()> {
    browser.goto(&server.url("/ui")).await?;
    wait_for(browser, "#sso").await?;
    screenshot(browser, "login").await?;
    // The checker itself: an unlabelled field and an image without text are what it must find.
    browser
        .execute(
            "const f = document.createElement('input'); document.body.appendChild(f); \
             const i = document.createElement('img'); i.src = '/ui/assets/none.png'; document.body.appendChild(i);",
            vec![],
        )
        .await?;
    let found: Vec<String> = axe_violations(browser)
        .await?
        .iter()
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect();
    ensure!(
        found.contains(&"label".to_string()) && found.contains(&"image-alt".to_string()),
        "axe-core missed planted violations: {found:?}"
    );
    sign_in(browser, server, "alice").await?;
    wait_for(browser, "#count-total").await?;
    let banner = wait_for(browser, "#maintenance-banner")
        .await?
        .text()
        .await?;
    ensure!(
        banner.contains(NOTICE_EN),
        "the department sees central IT's notice: {banner}"
    );
    ensure!(
        browser
            .find(Locator::Css("a[href='/ui/maintenance']"))
            .await
            .is_err(),
        "a department admin has no operator menu"
    );
    screenshot(browser, "dashboard").await?;
    let acting = browser
        .find(Locator::Id("acting-for"))
        .await?
        .text()
        .await?;
    assert!(acting.contains("Physics"), "{acting}");

    // The list: only Physics' iPads.
    browser
        .find(Locator::LinkText("iPads"))
        .await?
        .click()
        .await?;
    wait_for(browser, "table.devices").await?;
    let text = body_text(browser).await?;
    assert!(text.contains(serial), "{text}");
    assert!(!text.contains(foreign_serial), "another department's iPad");
    assert_eq!(
        browser.find_all(Locator::Css("a.device-link")).await?.len(),
        2
    );
    screenshot(browser, "devices").await?;

    // CSV export, fetched the way the link would (same cookie).
    let csv = browser
        .execute(
            "return fetch(document.getElementById('csv').href).then(r => r.text());",
            vec![],
        )
        .await?;
    let csv = csv.as_str().context("csv text")?.to_string();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.contains(serial) && !csv.contains(foreign_serial));

    // Open the iPad: the checklist runs on its data.
    browser
        .goto(&server.url(&format!("/ui/devices/{device_id}")))
        .await?;
    wait_for(browser, "#checklist").await?;
    let checks = browser.find_all(Locator::Css("li.check")).await?;
    assert_eq!(checks.len(), 6);
    let levels: Vec<Option<String>> =
        futures::future::try_join_all(checks.iter().map(|c| c.attr("data-level"))).await?;
    assert!(
        levels.iter().all(|l| l.as_deref() == Some("green")),
        "{levels:?}"
    );
    let summary = browser
        .find(Locator::Id("summary"))
        .await?
        .prop("value")
        .await?
        .unwrap_or_default();
    assert!(
        summary.contains(serial) && summary.contains("Troubleshooting checklist"),
        "{summary}"
    );
    screenshot(browser, "device").await?;

    // Lock with a message.
    browser
        .find(Locator::Id("open-lock"))
        .await?
        .click()
        .await?;
    browser
        .find(Locator::Id("lock-message"))
        .await?
        .send_keys("Return to the physics office")
        .await?;
    browser
        .find(Locator::Id("action-lock"))
        .await?
        .click()
        .await?;
    wait_for(browser, "#action-done").await?;
    assert_eq!(commands_named(server, device_id, "DeviceLock").await?, 1);

    // Erase: refused without the serial, accepted with it.
    browser
        .find(Locator::Id("open-erase"))
        .await?
        .click()
        .await?;
    browser
        .find(Locator::Id("action-erase"))
        .await?
        .click()
        .await?;
    wait_for(browser, "p.notice.error").await?;
    let refused = body_text(browser).await?;
    assert!(refused.contains("cannot be undone"), "{refused}");
    screenshot(browser, "erase-refused").await?;
    assert_eq!(commands_named(server, device_id, "EraseDevice").await?, 0);
    browser
        .goto(&server.url(&format!("/ui/devices/{device_id}")))
        .await?;
    wait_for(browser, "#open-erase").await?;
    browser
        .find(Locator::Id("open-erase"))
        .await?
        .click()
        .await?;
    browser
        .find(Locator::Id("erase-serial"))
        .await?
        .send_keys(serial)
        .await?;
    browser
        .find(Locator::Id("action-erase"))
        .await?
        .click()
        .await?;
    wait_for(browser, "#action-done").await?;
    assert_eq!(commands_named(server, device_id, "EraseDevice").await?, 1);
    screenshot(browser, "device-after-actions").await?;

    // Several iPads at once: every one matching the filter, restarted after a dry run that states the count; the
    // job's page follows the answers.
    browser.goto(&server.url("/ui/devices")).await?;
    wait_for(browser, "#bulk-all").await?;
    browser.find(Locator::Id("bulk-all")).await?.click().await?;
    browser
        .find(Locator::Css("#bulk-action option[value='restart']"))
        .await?
        .click()
        .await?;
    browser
        .find(Locator::Id("bulk-preview"))
        .await?
        .click()
        .await?;
    let dry_run = wait_for(browser, "#dry-run-summary").await?.text().await?;
    assert!(
        dry_run.contains("Restart: 2 enrolled iPad(s)."),
        "{dry_run}"
    );
    screenshot(browser, "bulk-preview").await?;
    browser
        .find(Locator::Id("bulk-start"))
        .await?
        .click()
        .await?;
    wait_for(browser, "#job-progress").await?;
    assert_eq!(commands_named(server, device_id, "RestartDevice").await?, 1);
    screenshot(browser, "job").await?;
    browser
        .goto(&server.url(&format!("/ui/devices/{device_id}")))
        .await?;
    wait_for(browser, "#checklist").await?;
    // Swedish, and it stays Swedish.
    browser.find(Locator::Id("lang-sv")).await?.click().await?;
    wait_for(browser, "#lang-en").await?;
    let lang = browser
        .find(Locator::Css("html"))
        .await?
        .attr("lang")
        .await?;
    assert_eq!(lang.as_deref(), Some("sv"));
    assert!(body_text(browser).await?.contains("Felsökningslista"));
    browser.goto(&server.url("/ui/devices")).await?;
    wait_for(browser, "#csv").await?;
    assert!(body_text(browser).await?.contains("Exportera som CSV"));
    screenshot(browser, "devices-sv").await?;
    for (page, table) in [("/ui/audit", "#audit"), ("/ui/usage", "#usage")] {
        browser.goto(&server.url(page)).await?;
        wait_for(browser, table).await?;
        screenshot(browser, page.trim_start_matches("/ui/")).await?;
    }
    Ok(())
}

async fn viewer_walk(browser: &Client, server: &TestServer, device_id: &str) -> Result<()> {
    sign_in(browser, server, "vera").await?;
    browser
        .goto(&server.url(&format!("/ui/devices/{device_id}")))
        .await?;
    wait_for(browser, "#checklist").await?;
    for id in [
        "actions",
        "action-lock",
        "action-erase",
        "action-restart",
        "action-inventory",
        "action-lost-mode",
        "action-shutdown",
        "action-clear-passcode",
    ] {
        assert!(
            browser.find(Locator::Id(id)).await.is_err(),
            "a viewer sees #{id}"
        );
    }
    screenshot(browser, "device-viewer").await?;
    let csrf = browser
        .find(Locator::Css("input[name=csrf]"))
        .await?
        .prop("value")
        .await?
        .context("csrf")?;
    let before = commands_named(server, device_id, "DeviceLock").await?;
    let status = forged_post(
        browser,
        &format!("/ui/devices/{device_id}/actions/lock"),
        json!({"csrf": csrf, "message": "forged"}),
    )
    .await?;
    assert_eq!(status, 403, "a viewer's forged lock");
    assert_eq!(
        commands_named(server, device_id, "DeviceLock").await?,
        before
    );
    // Nor can a department publish maintenance notices (the form is an operator's).
    let status = forged_post(
        browser,
        "/ui/maintenance",
        json!({"csrf": csrf, "starts_at": "2030-01-01T06:00", "ends_at": "2030-01-01T08:00",
               "text_sv": "förfalskad", "text_en": "forged"}),
    )
    .await?;
    assert_eq!(status, 403, "a viewer's forged maintenance notice");
    let listed = server.get("/api/v1/maintenance").await?;
    assert!(
        !listed.to_string().contains("forged"),
        "nothing was published: {listed}"
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    webui_in_chromium => scenario;
}
