//! The web UI over plain HTTP, on the real binary with simulated iPads and the real test OpenID provider
//! (tests/oidc/provider.mjs), on SQLite and PostgreSQL. A browser is played by reqwest with a cookie store.
//!
//! Alice (Physics admin) signs in through single sign-on, sees only Physics' iPads, opens one, reads its
//! checklist, locks and erases it (refused without the CSRF token, refused without the serial), exports CSV and
//! switches language; another department's device id fails exactly like a missing one, for reading and for a
//! posted form. Vera (Physics viewer) sees no action and her forged post is refused. Carol (admin of Physics,
//! viewer of Music) must pick a department, and a forged tenant cookie gets her nothing. Every UI response
//! carries the security headers; every action is in the audit log. A second scenario signs an operator in
//! through the break-glass form and watches the session expire.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use orchard_testkit::oidc::OidcProvider;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};

const CLIENT_ID: &str = "orchard-webui-e2e";
const CLIENT_SECRET: &str = "webui-e2e-client-secret-0123456789";

/// The test OpenID provider process (npm `oidc-provider`); killed when dropped.
/// A browser: trusts Orchard's CA, keeps cookies, does not follow redirects by itself.
fn browser(server: &TestServer, accept_language: &str) -> Result<reqwest::Client> {
    browser_with(server, accept_language, None)
}

/// [`browser`] with a cookie jar the test can write to (a hand-made cookie).
fn browser_with(
    server: &TestServer,
    accept_language: &str,
    jar: Option<std::sync::Arc<reqwest::cookie::Jar>>,
) -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::ACCEPT_LANGUAGE, accept_language.parse()?);
    let builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&server.ca_pem)?);
    let builder = match jar {
        Some(jar) => builder.cookie_provider(jar),
        None => builder.cookie_store(true),
    };
    Ok(builder
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// A page's answer.
struct Answer {
    status: StatusCode,
    location: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn answer(response: reqwest::Response) -> Result<Answer> {
    let status = response.status();
    let headers = response.headers().clone();
    let location = headers
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .map(str::to_string);
    Ok(Answer {
        status,
        location,
        headers,
        body: response.text().await?,
    })
}

async fn get(b: &reqwest::Client, server: &TestServer, path: &str) -> Result<Answer> {
    answer(b.get(server.url(path)).send().await?).await
}

async fn post(
    b: &reqwest::Client,
    server: &TestServer,
    path: &str,
    form: &[(&str, &str)],
) -> Result<Answer> {
    answer(b.post(server.url(path)).form(form).send().await?).await
}

/// The value of the first `<input … name="{name}" value="…">` of a page.
fn input_value(page: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let at = page.find(&marker)? + marker.len();
    Some(page[at..].split('"').next()?.to_string())
}

/// The provider's form on a page: its action and the hidden `prompt`.
fn provider_form(page: &str) -> Option<(String, String)> {
    let form = &page[page.find("<form")?..];
    let action = form
        .split("action=\"")
        .nth(1)?
        .split('"')
        .next()?
        .to_string();
    let prompt = input_value(form, "prompt")?;
    Some((action.replace("&amp;", "&"), prompt))
}

/// Signs in as `login` through the sign-in page's single sign-on link; returns where Orchard sent the browser.
async fn sso_sign_in(b: &reqwest::Client, server: &TestServer, login: &str) -> Result<Answer> {
    let page = get(b, server, "/ui/login").await?;
    ensure!(page.body.contains("href=\"/auth/login\""), "{}", page.body);
    let callback = Url::parse(&server.url("/auth/callback"))?;
    let mut url = Url::parse(&server.url("/auth/login"))?;
    let mut form: Option<Vec<(&str, String)>> = None;
    for _ in 0..20 {
        let request = match form.take() {
            Some(fields) => b.request(Method::POST, url.clone()).form(&fields),
            None => b.get(url.clone()),
        };
        let a = answer(request.send().await?).await?;
        if url.path() == callback.path() && url.origin() == callback.origin() {
            return Ok(a);
        }
        if a.status.is_redirection() {
            url = url.join(a.location.as_deref().context("redirect without Location")?)?;
            continue;
        }
        let Some((action, prompt)) = provider_form(&a.body) else {
            bail!("unexpected {} from {url}: {}", a.status, a.body);
        };
        let mut fields = vec![("prompt", prompt.clone())];
        if prompt == "login" {
            fields.push(("login", login.to_string()));
            fields.push(("password", "devInteractions accepts any".into()));
        }
        form = Some(fields);
        url = url.join(&action)?;
    }
    bail!("sign-in did not reach the callback")
}

fn assert_security_headers(a: &Answer, what: &str) {
    let h = |name: &str| {
        a.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let csp = h("content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(
            csp.contains(directive),
            "{what}: CSP {csp:?} lacks {directive}"
        );
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: {csp}"
    );
    assert!(
        h("strict-transport-security").starts_with("max-age="),
        "{what}"
    );
    assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(h("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(h("x-frame-options"), "DENY", "{what}");
}

/// No inline script or style in a page: every `<script` has a `src`, no `<style`, no `style=` or `on…=` attribute.
fn assert_no_inline_code(page: &str, what: &str) {
    for (at, _) in page.match_indices("<script") {
        let tag: String = page[at..].chars().take_while(|c| *c != '>').collect();
        assert!(
            tag.contains(" src=\"/ui/assets/"),
            "{what}: inline script {tag}"
        );
    }
    assert!(!page.contains("<style"), "{what}: a style element");
    assert!(!page.contains(" style=\""), "{what}: a style attribute");
    assert!(
        !page.contains(" onclick=") && !page.contains(" onload="),
        "{what}: an inline handler"
    );
}

async fn commands_named(server: &TestServer, device: &str, request_type: &str) -> Result<usize> {
    Ok(server
        .commands_of(device)
        .await?
        .iter()
        .filter(|c| c["request_type"] == request_type)
        .count())
}

async fn map_group(server: &TestServer, group: &str, role: &str, tenant: &str) -> Result<()> {
    server
        .post(
            "/api/v1/role-mappings",
            json!({"claim": "groups", "value": group, "role": role, "tenant_id": tenant}),
        )
        .await?;
    Ok(())
}

async fn department_scenario(backend: Backend) -> Result<()> {
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
    map_group(&server, "physics-it-admins", "admin", &physics).await?;
    map_group(&server, "physics-viewers", "viewer", &physics).await?;
    map_group(&server, "music-viewers", "viewer", &music).await?;
    let config = server.sim_config();
    let physics_fleet = server.enroll_devices(&config, &physics, 2).await?;
    let music_fleet = server.enroll_devices(&config, &music, 1).await?;
    let physics_udid = physics_fleet[0].udid().to_string();
    let ours = server.device_by_udid(physics_fleet[0].udid()).await?;
    let our_id = ours["id"].as_str().context("id")?.to_string();
    let our_serial = ours["serial_number"]
        .as_str()
        .context("serial")?
        .to_string();
    let theirs = server.device_by_udid(music_fleet[0].udid()).await?;
    let their_id = theirs["id"].as_str().context("id")?.to_string();
    let their_serial = theirs["serial_number"]
        .as_str()
        .context("serial")?
        .to_string();

    // `/` leads to the UI, and the UI to the sign-in page, which works without a session.
    let alice = browser(&server, "en-GB,en;q=0.9")?;
    let root = get(&alice, &server, "/").await?;
    assert_eq!(root.location.as_deref(), Some("/ui"));
    let signed_out = get(&alice, &server, "/ui/devices").await?;
    assert_eq!(signed_out.status, StatusCode::SEE_OTHER);
    assert_eq!(signed_out.location.as_deref(), Some("/ui/login"));
    assert_security_headers(&signed_out, "a redirect");
    let login = get(&alice, &server, "/ui/login").await?;
    assert_eq!(login.status, StatusCode::OK);
    assert_security_headers(&login, "the sign-in page");
    assert_no_inline_code(&login.body, "the sign-in page");

    // Alice signs in through single sign-on and lands on the UI.
    let landed = sso_sign_in(&alice, &server, "alice").await?;
    assert_eq!(landed.status, StatusCode::SEE_OTHER, "{}", landed.body);
    assert_eq!(landed.location.as_deref(), Some("/ui"));
    let dashboard = get(&alice, &server, "/ui").await?;
    assert_eq!(dashboard.status, StatusCode::OK, "{}", dashboard.body);
    assert_security_headers(&dashboard, "the dashboard");
    assert_no_inline_code(&dashboard.body, "the dashboard");
    assert!(
        dashboard.body.contains("id=\"count-total\">2<"),
        "{}",
        dashboard.body
    );
    assert!(
        dashboard.body.contains("<strong>Physics</strong>"),
        "acting for Physics, visibly"
    );

    // The list holds Physics' iPads only; the CSV export too.
    let list = get(&alice, &server, "/ui/devices").await?;
    assert_eq!(list.status, StatusCode::OK);
    assert_no_inline_code(&list.body, "the device list");
    assert!(list.body.contains(&our_serial));
    assert!(
        !list.body.contains(&their_serial),
        "another department's iPad is listed"
    );
    assert!(list.body.contains("Showing 1–2 of 2"), "{}", list.body);
    let searched = get(
        &alice,
        &server,
        &format!("/ui/devices?q={our_serial}&sort=name&order=desc"),
    )
    .await?;
    assert!(
        searched.body.contains("Showing 1–1 of 1"),
        "{}",
        searched.body
    );
    let bad = get(&alice, &server, "/ui/devices?not_seen_days=forever").await?;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("Days must be a whole number"));
    let csv = get(&alice, &server, "/ui/devices.csv?state=enrolled").await?;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.headers["content-type"]
        .to_str()?
        .starts_with("text/csv"));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two iPads: {}", csv.body);
    assert!(lines[0].starts_with("id,name,serial_number"));
    assert!(csv.body.contains(&our_serial) && !csv.body.contains(&their_serial));

    // Her iPad's page: facts, the checklist, the summary for the service desk, the actions.
    let page = get(&alice, &server, &format!("/ui/devices/{our_id}")).await?;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_no_inline_code(&page.body, "the device page");
    for fragment in [
        "Troubleshooting checklist",
        "data-level=\"green\"",
        "Last check-in",
        "Identity certificate",
        "id=\"summary\"",
        "id=\"action-lock\"",
        "id=\"action-erase\"",
        "id=\"action-inventory\"",
        "DeviceInformation",
    ] {
        assert!(
            page.body.contains(fragment),
            "{fragment} missing: {}",
            page.body
        );
    }
    let csrf = input_value(&page.body, "csrf").context("csrf field")?;

    // Another department's iPad answers exactly like one that does not exist.
    let missing = get(
        &alice,
        &server,
        "/ui/devices/0190a0a0-0000-7000-8000-000000000000",
    )
    .await?;
    let foreign = get(&alice, &server, &format!("/ui/devices/{their_id}")).await?;
    let malformed = get(&alice, &server, "/ui/devices/not-an-id").await?;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    for other in [&foreign, &malformed] {
        assert_eq!(other.status, missing.status);
        assert_eq!(
            strip_request_id(&other.body),
            strip_request_id(&missing.body)
        );
    }

    // Lock: refused without the CSRF token (nothing queued), done with it.
    let lock_path = format!("/ui/devices/{our_id}/actions/lock");
    let no_token = post(&alice, &server, &lock_path, &[("message", "Lost")]).await?;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    let wrong_token = post(
        &alice,
        &server,
        &lock_path,
        &[("csrf", "0000"), ("message", "Lost")],
    )
    .await?;
    assert_eq!(wrong_token.status, StatusCode::FORBIDDEN);
    assert_eq!(commands_named(&server, &our_id, "DeviceLock").await?, 0);
    let locked = post(
        &alice,
        &server,
        &lock_path,
        &[
            ("csrf", &csrf),
            ("message", "Return to the physics office"),
            ("phone", "+46 8 000 00"),
        ],
    )
    .await?;
    assert_eq!(locked.status, StatusCode::SEE_OTHER, "{}", locked.body);
    let back = locked.location.clone().context("back to the device")?;
    assert_eq!(back, format!("/ui/devices/{our_id}?done=lock"));
    assert_eq!(commands_named(&server, &our_id, "DeviceLock").await?, 1);
    let after = get(&alice, &server, &back).await?;
    assert!(after.body.contains("id=\"action-done\""), "{}", after.body);
    assert!(
        after.body.contains("data-level=\"amber\""),
        "a command waits: the checklist says so"
    );
    // The iPad fetches the lock; the history shows it done.
    let mut fleet = physics_fleet.into_iter();
    let mut device = fleet.next().context("device")?;
    // The second iPad answers the bulk job below (the first has an erase waiting).
    let mut second = fleet.next().context("second device")?;
    device.poll().await?;
    let history = get(&alice, &server, &format!("/ui/devices/{our_id}")).await?;
    assert!(
        history.body.contains("<td>DeviceLock</td><td>done</td>"),
        "{}",
        history.body
    );

    // Lost Mode: a message or a phone number is needed (Apple's rule, said before anything is queued); then
    // locate, sound and off. Shut down. Clearing the passcode is confirmed by the serial like erasing.
    let lost_path = format!("/ui/devices/{our_id}/actions/lost_mode");
    let empty = post(
        &alice,
        &server,
        &lost_path,
        &[("csrf", &csrf), ("footnote", "x")],
    )
    .await?;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST, "{}", empty.body);
    assert!(empty
        .body
        .contains("Lost Mode needs a message or a phone number"));
    assert_eq!(commands_named(&server, &our_id, "EnableLostMode").await?, 0);
    let long = "x".repeat(201);
    let too_long = post(
        &alice,
        &server,
        &lost_path,
        &[("csrf", &csrf), ("message", "Lost"), ("footnote", &long)],
    )
    .await?;
    assert_eq!(too_long.status, StatusCode::BAD_REQUEST);
    let lost = post(
        &alice,
        &server,
        &lost_path,
        &[
            ("csrf", &csrf),
            ("message", "This iPad belongs to Physics"),
            ("phone", "+46 8 000 00"),
            ("footnote", "Room A4"),
        ],
    )
    .await?;
    assert_eq!(lost.status, StatusCode::SEE_OTHER, "{}", lost.body);
    assert_eq!(
        lost.location.as_deref(),
        Some(format!("/ui/devices/{our_id}?done=lost_mode").as_str())
    );
    for (action, request_type) in [
        ("lost_mode_locate", "DeviceLocation"),
        ("lost_mode_sound", "PlayLostModeSound"),
        ("lost_mode_disable", "DisableLostMode"),
        ("shutdown", "ShutDownDevice"),
    ] {
        let done = post(
            &alice,
            &server,
            &format!("/ui/devices/{our_id}/actions/{action}"),
            &[("csrf", &csrf)],
        )
        .await?;
        assert_eq!(
            done.status,
            StatusCode::SEE_OTHER,
            "{action}: {}",
            done.body
        );
        assert_eq!(
            commands_named(&server, &our_id, request_type).await?,
            1,
            "{action}"
        );
    }
    assert_eq!(commands_named(&server, &our_id, "EnableLostMode").await?, 1);
    let clear_path = format!("/ui/devices/{our_id}/actions/clear_passcode");
    let unconfirmed = post(&alice, &server, &clear_path, &[("csrf", &csrf)]).await?;
    assert_eq!(
        unconfirmed.status,
        StatusCode::CONFLICT,
        "{}",
        unconfirmed.body
    );
    assert_eq!(commands_named(&server, &our_id, "ClearPasscode").await?, 0);
    let cleared = post(
        &alice,
        &server,
        &clear_path,
        &[("csrf", &csrf), ("confirm_serial", &our_serial)],
    )
    .await?;
    assert_eq!(cleared.status, StatusCode::SEE_OTHER, "{}", cleared.body);
    assert_eq!(commands_named(&server, &our_id, "ClearPasscode").await?, 1);
    let page = get(&alice, &server, &format!("/ui/devices/{our_id}")).await?;
    for id in [
        "action-lost-mode",
        "action-shutdown",
        "action-clear-passcode",
        "erase-rts",
    ] {
        assert!(
            page.body.contains(&format!("id=\"{id}\"")),
            "the admin sees #{id}"
        );
    }

    // Erase: refused without the serial and with a wrong one, done with it.
    let erase_path = format!("/ui/devices/{our_id}/actions/erase");
    let unconfirmed = post(&alice, &server, &erase_path, &[("csrf", &csrf)]).await?;
    assert_eq!(
        unconfirmed.status,
        StatusCode::CONFLICT,
        "{}",
        unconfirmed.body
    );
    assert!(unconfirmed.body.contains("serial number"));
    let wrong = post(
        &alice,
        &server,
        &erase_path,
        &[("csrf", &csrf), ("confirm_serial", &their_serial)],
    )
    .await?;
    assert_eq!(wrong.status, StatusCode::CONFLICT);
    assert_eq!(commands_named(&server, &our_id, "EraseDevice").await?, 0);
    let erased = post(
        &alice,
        &server,
        &erase_path,
        &[("csrf", &csrf), ("confirm_serial", &our_serial)],
    )
    .await?;
    assert_eq!(erased.status, StatusCode::SEE_OTHER, "{}", erased.body);
    assert_eq!(commands_named(&server, &our_id, "EraseDevice").await?, 1);
    let inventory = post(
        &alice,
        &server,
        &format!("/ui/devices/{our_id}/actions/inventory"),
        &[("csrf", &csrf)],
    )
    .await?;
    assert_eq!(inventory.status, StatusCode::SEE_OTHER);

    // A form posted with another department's id fails exactly like a missing id, and queues nothing.
    let foreign_lock = post(
        &alice,
        &server,
        &format!("/ui/devices/{their_id}/actions/lock"),
        &[("csrf", &csrf)],
    )
    .await?;
    let missing_lock = post(
        &alice,
        &server,
        "/ui/devices/0190a0a0-0000-7000-8000-000000000000/actions/lock",
        &[("csrf", &csrf)],
    )
    .await?;
    assert_eq!(foreign_lock.status, StatusCode::NOT_FOUND);
    assert_eq!(foreign_lock.status, missing_lock.status);
    assert_eq!(
        strip_request_id(&foreign_lock.body),
        strip_request_id(&missing_lock.body)
    );
    let foreign_erase = post(
        &alice,
        &server,
        &format!("/ui/devices/{their_id}/actions/erase"),
        &[("csrf", &csrf), ("confirm_serial", &their_serial)],
    )
    .await?;
    assert_eq!(foreign_erase.status, StatusCode::NOT_FOUND);
    assert!(server
        .commands_of(&their_id)
        .await?
        .iter()
        .all(|c| c["request_type"] != "DeviceLock" && c["request_type"] != "EraseDevice"));

    // The audit log and the usage report: the department's own events and amount only.
    let audit = get(&alice, &server, "/ui/audit").await?;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.body);
    assert!(
        audit.body.contains("device.command.queue"),
        "{}",
        audit.body
    );
    assert!(
        audit.body.contains(&physics),
        "Physics' own tenant.create is listed"
    );
    assert!(
        !audit.body.contains(&music),
        "nothing filed under Music: {}",
        audit.body
    );
    let filtered = get(&alice, &server, "/ui/audit?action=device.command.*").await?;
    assert!(filtered.body.contains("device.command.queue"));
    assert!(
        !filtered.body.contains("tenant.create"),
        "{}",
        filtered.body
    );
    let bad = get(&alice, &server, "/ui/audit?from=yesterday").await?;
    assert_eq!(bad.status, StatusCode::OK);
    assert!(bad.body.contains("RFC 3339"), "{}", bad.body);
    let usage = get(&alice, &server, "/ui/usage").await?;
    assert_eq!(usage.status, StatusCode::OK, "{}", usage.body);
    assert!(usage.body.contains("id=\"amount-phys\""), "{}", usage.body);
    assert!(!usage.body.contains("id=\"amount-mus\""), "{}", usage.body);
    let reversed = get(&alice, &server, "/ui/usage?from=2026-12-02&to=2026-12-01").await?;
    assert!(
        reversed.body.contains("from is after to"),
        "{}",
        reversed.body
    );

    // Central IT's pages are central IT's: a department admin is refused, reading and posting.
    for page in [
        "/ui/operator/tenants",
        "/ui/operator/people",
        "/ui/operator/tokens",
        "/ui/operator/apple",
        "/ui/operator/links",
        "/ui/operator/expiring",
    ] {
        let refused = get(&alice, &server, page).await?;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{page}");
    }
    let tokens_before = server.get("/api/v1/tokens").await?;
    let forged_token = post(
        &alice,
        &server,
        "/ui/operator/tokens",
        &[("csrf", &csrf), ("name", "mine"), ("role", "operator")],
    )
    .await?;
    assert_eq!(forged_token.status, StatusCode::FORBIDDEN);
    assert_eq!(
        server.get("/api/v1/tokens").await?["items"]
            .as_array()
            .map(Vec::len),
        tokens_before["items"].as_array().map(Vec::len),
        "no token was made"
    );
    assert!(!dashboard.body.contains("href=\"/ui/operator/tenants\""));
    // Nothing of Apple School Manager is waiting for Physics.
    assert!(
        dashboard.body.contains("id=\"count-asm-waiting\">0<"),
        "{}",
        dashboard.body
    );

    // Clearing Activation Lock: the admin sees the action; without an escrowed code Orchard says so and asks
    // nobody; another department's iPad answers like a missing one.
    let page = get(&alice, &server, &format!("/ui/devices/{our_id}")).await?;
    assert!(page.body.contains("id=\"action-activation-lock\""));
    let unlock = post(
        &alice,
        &server,
        &format!("/ui/devices/{our_id}/activation-lock/clear"),
        &[("csrf", &csrf)],
    )
    .await?;
    assert_eq!(unlock.status, StatusCode::BAD_REQUEST, "{}", unlock.body);
    assert!(
        unlock
            .body
            .contains("no activation lock bypass code is escrowed"),
        "{}",
        unlock.body
    );
    let foreign_unlock = post(
        &alice,
        &server,
        &format!("/ui/devices/{their_id}/activation-lock/clear"),
        &[("csrf", &csrf)],
    )
    .await?;
    let missing_unlock = post(
        &alice,
        &server,
        "/ui/devices/0190a0a0-0000-7000-8000-000000000000/activation-lock/clear",
        &[("csrf", &csrf)],
    )
    .await?;
    assert_eq!(foreign_unlock.status, StatusCode::NOT_FOUND);
    assert_eq!(
        strip_request_id(&foreign_unlock.body),
        strip_request_id(&missing_unlock.body)
    );
    let no_csrf = post(
        &alice,
        &server,
        &format!("/ui/devices/{our_id}/activation-lock/clear"),
        &[],
    )
    .await?;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);

    // Bulk: a dry run states the action and the count before anything is queued; another department's id among
    // the ticked ones is left out like a missing one.
    let second_id = server.device_by_udid(second.udid()).await?["id"]
        .as_str()
        .context("id")?
        .to_string();
    let restarts_before = commands_named(&server, &second_id, "RestartDevice").await?;
    let list = get(&alice, &server, "/ui/devices").await?;
    assert!(list.body.contains("id=\"bulk-preview\""), "{}", list.body);
    assert!(list.body.contains(&format!("value=\"{our_id}\"")));
    let selection = [
        ("csrf", csrf.as_str()),
        ("action", "restart"),
        ("device", second_id.as_str()),
        ("device", their_id.as_str()),
    ];
    let dry = post(&alice, &server, "/ui/bulk/preview", &selection).await?;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
    assert!(
        dry.body.contains("Restart: 1 enrolled iPad(s)."),
        "{}",
        dry.body
    );
    assert!(dry.body.contains("1 of the chosen iPads are left out"));
    assert_eq!(
        commands_named(&server, &second_id, "RestartDevice").await?,
        restarts_before,
        "a dry run queues nothing"
    );
    assert!(dry.body.contains("id=\"bulk-start\""));
    let forged = post(
        &alice,
        &server,
        "/ui/bulk",
        &[("action", "restart"), ("device", &our_id)],
    )
    .await?;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "no CSRF token");
    let nothing = post(
        &alice,
        &server,
        "/ui/bulk/preview",
        &[("csrf", &csrf), ("action", "restart")],
    )
    .await?;
    assert_eq!(nothing.status, StatusCode::BAD_REQUEST);
    assert!(nothing.body.contains("Tick at least one iPad"));
    let unknown = post(
        &alice,
        &server,
        "/ui/bulk/preview",
        &[("csrf", &csrf), ("action", "explode"), ("device", &our_id)],
    )
    .await?;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let started = post(&alice, &server, "/ui/bulk", &selection).await?;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.body);
    let job_path = started.location.clone().context("the job's page")?;
    assert!(job_path.starts_with("/ui/jobs/"), "{job_path}");
    assert_eq!(
        commands_named(&server, &second_id, "RestartDevice").await?,
        restarts_before + 1
    );
    assert_eq!(
        commands_named(&server, &their_id, "RestartDevice").await?,
        0
    );
    // The job's progress is read from the queue: waiting, then done once the iPad answered; a reload (a new
    // GET) shows the same, and the page polls itself while work is left.
    let waiting = get(&alice, &server, &job_path).await?;
    assert_eq!(waiting.status, StatusCode::OK, "{}", waiting.body);
    assert_no_inline_code(&waiting.body, "the job page");
    assert!(
        waiting.body.contains("data-finished=\"false\""),
        "{}",
        waiting.body
    );
    assert!(waiting.body.contains("hx-trigger=\"every 2s\""));
    assert!(
        waiting.body.contains("1 waiting for the iPad"),
        "{}",
        waiting.body
    );
    for _ in 0..5 {
        if second.poll().await?.handled.is_empty() {
            break;
        }
    }
    let finished = get(&alice, &server, &job_path).await?;
    assert!(
        finished.body.contains("data-finished=\"true\""),
        "{}",
        finished.body
    );
    assert!(
        finished.body.contains("1 done, 0 failed"),
        "{}",
        finished.body
    );
    assert!(!finished.body.contains("hx-trigger"));
    let jobs = get(&alice, &server, "/ui/jobs").await?;
    assert!(jobs.body.contains(job_path.as_str()), "{}", jobs.body);
    // Every iPad matching the filter: erasing them needs the count typed in.
    let all = [
        ("csrf", csrf.as_str()),
        ("action", "erase"),
        ("all_matching", "1"),
        ("state", "enrolled"),
    ];
    let dry_all = post(&alice, &server, "/ui/bulk/preview", &all).await?;
    assert!(
        dry_all.body.contains("Erase: 2 enrolled iPad(s)."),
        "{}",
        dry_all.body
    );
    assert!(dry_all.body.contains("id=\"confirm-count\""));
    let erases_before = commands_named(&server, &our_id, "EraseDevice").await?;
    let unconfirmed = post(&alice, &server, "/ui/bulk", &all).await?;
    assert_eq!(
        unconfirmed.status,
        StatusCode::CONFLICT,
        "{}",
        unconfirmed.body
    );
    let wrong_count = [all.as_slice(), &[("confirm_count", "3")]].concat();
    assert_eq!(
        post(&alice, &server, "/ui/bulk", &wrong_count)
            .await?
            .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        commands_named(&server, &our_id, "EraseDevice").await?,
        erases_before
    );
    let confirmed = [all.as_slice(), &[("confirm_count", "2")]].concat();
    let erased_all = post(&alice, &server, "/ui/bulk", &confirmed).await?;
    assert_eq!(
        erased_all.status,
        StatusCode::SEE_OTHER,
        "{}",
        erased_all.body
    );
    assert_eq!(
        commands_named(&server, &our_id, "EraseDevice").await?,
        erases_before + 1
    );
    assert_eq!(commands_named(&server, &their_id, "EraseDevice").await?, 0);
    // Another department's job, or no job at all, is not found alike.
    let missing_job = get(
        &alice,
        &server,
        "/ui/jobs/0190a0a0-0000-7000-8000-000000000000",
    )
    .await?;
    let bad_job = get(&alice, &server, "/ui/jobs/not-a-job").await?;
    assert_eq!(missing_job.status, StatusCode::NOT_FOUND);
    assert_eq!(
        strip_request_id(&bad_job.body),
        strip_request_id(&missing_job.body)
    );

    // Columns: chosen on the list, kept in a cookie, followed by the CSV export.
    let chose = post(
        &alice,
        &server,
        "/ui/devices/columns",
        &[
            ("csrf", &csrf),
            ("back", "/ui/devices?state=enrolled"),
            ("col_os", "1"),
            ("col_udid", "1"),
        ],
    )
    .await?;
    assert_eq!(chose.status, StatusCode::SEE_OTHER, "{}", chose.body);
    assert_eq!(
        chose.location.as_deref(),
        Some("/ui/devices?state=enrolled")
    );
    let narrowed = get(&alice, &server, "/ui/devices?state=enrolled").await?;
    assert!(
        narrowed.body.contains("<th scope=\"col\">UDID</th>"),
        "{}",
        narrowed.body
    );
    assert!(!narrowed
        .body
        .contains("<th scope=\"col\">Serial number</th>"));
    assert!(narrowed.body.contains(physics_udid.as_str()));
    assert!(narrowed
        .body
        .contains("id=\"col-udid\" name=\"col_udid\" value=\"1\" checked"));
    let csv = get(&alice, &server, "/ui/devices.csv?state=enrolled").await?;
    assert!(
        csv.body.starts_with("id,name,os_version,udid\n")
            || csv.body.starts_with("id,name,os_version,udid\r\n"),
        "{}",
        csv.body
    );
    let off_site = post(
        &alice,
        &server,
        "/ui/devices/columns",
        &[
            ("csrf", &csrf),
            ("back", "https://evil.example/"),
            ("col_serial", "1"),
        ],
    )
    .await?;
    assert_eq!(off_site.location.as_deref(), Some("/ui/devices"));
    let no_token = post(
        &alice,
        &server,
        "/ui/devices/columns",
        &[("col_serial", "1")],
    )
    .await?;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);

    // Language: Swedish on request, remembered in a cookie; a browser that prefers Swedish gets it at once.
    let switched = get(&alice, &server, "/ui/language?lang=sv&back=/ui/devices").await?;
    assert_eq!(switched.location.as_deref(), Some("/ui/devices"));
    let swedish = get(&alice, &server, "/ui/devices").await?;
    assert!(swedish.body.contains("<html lang=\"sv\">"));
    assert!(
        swedish.body.contains("Exportera som CSV"),
        "{}",
        swedish.body
    );
    let escape = get(
        &alice,
        &server,
        "/ui/language?lang=en&back=https://evil.example/",
    )
    .await?;
    assert_eq!(
        escape.location.as_deref(),
        Some("/ui"),
        "never a redirect off our pages"
    );
    let svensk = browser(&server, "sv-SE,sv;q=0.9,en;q=0.5")?;
    let sv_login = get(&svensk, &server, "/ui/login").await?;
    assert!(sv_login.body.contains("Logga in i Orchard"));

    // Vera, a Physics viewer: the page without any action; a forged post with her own token is refused.
    let vera = browser(&server, "en")?;
    assert_eq!(
        sso_sign_in(&vera, &server, "vera").await?.status,
        StatusCode::SEE_OTHER
    );
    let viewed = get(&vera, &server, &format!("/ui/devices/{our_id}")).await?;
    assert_eq!(viewed.status, StatusCode::OK);
    assert!(viewed.body.contains("Troubleshooting checklist"));
    for button in [
        "action-lock",
        "action-erase",
        "action-restart",
        "action-inventory",
        "id=\"actions\"",
    ] {
        assert!(!viewed.body.contains(button), "a viewer sees {button}");
    }
    let vera_csrf = input_value(&viewed.body, "csrf").context("sign-out form's csrf")?;
    assert!(!viewed.body.contains("action-activation-lock"));
    let vera_list = get(&vera, &server, "/ui/devices").await?;
    assert!(
        !vera_list.body.contains("id=\"bulk-preview\""),
        "a viewer gets no bulk actions"
    );
    let vera_bulk = post(
        &vera,
        &server,
        "/ui/bulk/preview",
        &[
            ("csrf", &vera_csrf),
            ("action", "inventory"),
            ("device", &our_id),
        ],
    )
    .await?;
    assert_eq!(
        vera_bulk.status,
        StatusCode::FORBIDDEN,
        "{}",
        vera_bulk.body
    );
    let vera_unlock = post(
        &vera,
        &server,
        &format!("/ui/devices/{our_id}/activation-lock/clear"),
        &[("csrf", &vera_csrf)],
    )
    .await?;
    assert_eq!(vera_unlock.status, StatusCode::FORBIDDEN);
    // A job of her own department she may read.
    assert_eq!(get(&vera, &server, &job_path).await?.status, StatusCode::OK);
    let locks_before = commands_named(&server, &our_id, "DeviceLock").await?;
    let forged = post(&vera, &server, &lock_path, &[("csrf", &vera_csrf)]).await?;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);
    let forged_erase = post(
        &vera,
        &server,
        &erase_path,
        &[("csrf", &vera_csrf), ("confirm_serial", &our_serial)],
    )
    .await?;
    assert_eq!(forged_erase.status, StatusCode::FORBIDDEN);
    assert_eq!(
        commands_named(&server, &our_id, "DeviceLock").await?,
        locks_before
    );
    // Nor does she read the audit log on her dashboard.
    for page in ["/ui/audit", "/ui/usage"] {
        let refused = get(&vera, &server, page).await?;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "a viewer reads {page}"
        );
    }
    let vera_home = get(&vera, &server, "/ui").await?;
    assert!(
        !vera_home.body.contains("href=\"/ui/audit\""),
        "no audit link for a viewer"
    );
    assert!(!vera_home.body.contains("id=\"recent\""));

    // Carol holds roles in two departments: she picks one, visibly, and a forged choice gets her nothing.
    let carol_jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let carol = browser_with(&server, "en", Some(carol_jar.clone()))?;
    assert_eq!(
        sso_sign_in(&carol, &server, "carol").await?.status,
        StatusCode::SEE_OTHER
    );
    let home = get(&carol, &server, "/ui").await?;
    assert_eq!(home.location.as_deref(), Some("/ui/tenant"));
    let picker = get(&carol, &server, "/ui/tenant").await?;
    assert!(
        picker.body.contains("Physics") && picker.body.contains("Music"),
        "{}",
        picker.body
    );
    let carol_csrf = input_value(&picker.body, "csrf").context("csrf")?;
    let chose = post(
        &carol,
        &server,
        "/ui/tenant",
        &[("csrf", &carol_csrf), ("tenant", &music)],
    )
    .await?;
    assert_eq!(chose.status, StatusCode::SEE_OTHER, "{}", chose.body);
    let music_home = get(&carol, &server, "/ui").await?;
    assert!(
        music_home.body.contains("<strong>Music</strong>"),
        "{}",
        music_home.body
    );
    assert!(music_home.body.contains("id=\"count-total\">1<"));
    let physics_job = get(&carol, &server, &job_path).await?;
    assert_eq!(
        physics_job.status,
        StatusCode::NOT_FOUND,
        "another department's job"
    );
    assert_eq!(
        strip_request_id(&physics_job.body),
        strip_request_id(&missing_job.body)
    );
    let other = server.create_tenant("Chemistry", "chem").await?;
    let refused = post(
        &carol,
        &server,
        "/ui/tenant",
        &[("csrf", &carol_csrf), ("tenant", &other)],
    )
    .await?;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let no_csrf = post(&carol, &server, "/ui/tenant", &[("tenant", &physics)]).await?;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    // The tenant cookie is only a choice: set by hand to a tenant not hers, it is forgotten.
    carol_jar.add_cookie_str(
        &format!("orchard_tenant={other}; Path=/; Secure; HttpOnly"),
        &Url::parse(&server.base_url)?,
    );
    let forged_home = get(&carol, &server, "/ui/devices").await?;
    assert_eq!(
        forged_home.location.as_deref(),
        Some("/ui/tenant"),
        "a tenant not hers"
    );
    let cleared = forged_home
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|c| c.starts_with("orchard_tenant=;"));
    assert!(cleared, "the forged choice is cleared");

    // Signing out needs the token and ends the session.
    let out_without = post(&alice, &server, "/ui/logout", &[]).await?;
    assert_ne!(out_without.location.as_deref(), Some("/ui/login"));
    let out = post(&alice, &server, "/ui/logout", &[("csrf", &csrf)]).await?;
    assert_eq!(out.location.as_deref(), Some("/ui/login"));
    let after_out = get(&alice, &server, "/ui/devices").await?;
    assert_eq!(after_out.status, StatusCode::SEE_OTHER);
    assert!(after_out
        .location
        .as_deref()
        .unwrap_or("")
        .starts_with("/ui/login"));

    // Page weight (the bound is 100 KB per page before images; the shared script and style sheet are
    // cached files of their own).
    for (what, body) in [
        ("dashboard", &dashboard.body),
        ("device list", &list.body),
        ("device page", &history.body),
    ] {
        println!("page weight: {what} {} bytes", body.len());
        assert!(body.len() < 100_000, "{what} weighs {} bytes", body.len());
    }

    // Every action through the UI is in the audit log, refusals included, under the API's action name.
    let audit = server
        .get("/api/v1/audit?action=device.command.queue&limit=100")
        .await?;
    let web: Vec<&Value> = audit["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter(|e| e["details"]["via"] == "web")
        .collect();
    let outcomes: Vec<&str> = web.iter().filter_map(|e| e["outcome"].as_str()).collect();
    assert!(
        outcomes.iter().filter(|o| **o == "ok").count() >= 3,
        "{audit}"
    );
    assert!(
        outcomes.contains(&"denied"),
        "refusals are recorded: {audit}"
    );
    Ok(())
}

/// A page without its request id (which differs on every answer).
fn strip_request_id(page: &str) -> String {
    match page.find("class=\"rid\"") {
        Some(at) => page[..at].to_string(),
        None => page.to_string(),
    }
}

orchard_testkit::backend_tests! {
    webui_department_admin_viewer_and_tenants => department_scenario;
}

/// Break-glass sign-in through the form, the sign-in form's own CSRF token, and session expiry (a session of
/// two seconds, configured, then waited out).
async fn break_glass_and_expiry(backend: Backend) -> Result<()> {
    let args = vec!["--session-ttl-seconds".to_string(), "2".to_string()];
    let Some(server) = TestServer::start_with(backend, &args).await? else {
        return Ok(());
    };
    let password = "correct horse battery staple 42";
    server.set_local_account("it-oncall", password)?;
    let tenant = server.create_tenant("Physics", "phys").await?;
    let fleet = server
        .enroll_devices(&server.sim_config(), &tenant, 1)
        .await?;
    let device = server.device_by_udid(fleet[0].udid()).await?;
    let device_id = device["id"].as_str().context("id")?.to_string();

    let op = browser(&server, "en")?;
    let page = get(&op, &server, "/ui/login").await?;
    assert!(
        !page.body.contains("href=\"/auth/login\""),
        "no single sign-on configured here"
    );
    let token = input_value(&page.body, "form_token").context("form token")?;
    // A form posted from elsewhere carries no matching cookie.
    let stranger = browser(&server, "en")?;
    let forged = post(
        &stranger,
        &server,
        "/ui/login/local",
        &[
            ("username", "it-oncall"),
            ("password", password),
            ("form_token", &token),
        ],
    )
    .await?;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let wrong = post(
        &op,
        &server,
        "/ui/login/local",
        &[
            ("username", "it-oncall"),
            ("password", "wrong"),
            ("form_token", &token),
        ],
    )
    .await?;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("Wrong username or password"));
    let token = input_value(&wrong.body, "form_token").context("a fresh form token")?;
    let signed_in = post(
        &op,
        &server,
        "/ui/login/local",
        &[
            ("username", "it-oncall"),
            ("password", password),
            ("form_token", &token),
        ],
    )
    .await?;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    let cookie = signed_in
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("orchard_session="))
        .context("session cookie")?
        .to_string();
    assert!(
        cookie.contains("Max-Age=2") && cookie.contains("HttpOnly") && cookie.contains("Secure"),
        "{cookie}"
    );

    // The session runs out. The browser drops the cookie at its Max-Age; the server refuses it anyway: a kept or
    // replayed cookie sends the person to sign in again, and a form posted with it does nothing.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let dropped = get(&op, &server, &format!("/ui/devices/{device_id}")).await?;
    assert_eq!(dropped.location.as_deref(), Some("/ui/login"));
    let session = cookie.split(';').next().context("cookie pair")?.to_string();
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    jar.add_cookie_str(
        &format!("{session}; Path=/; Secure; HttpOnly"),
        &Url::parse(&server.base_url)?,
    );
    let replay = browser_with(&server, "en", Some(jar.clone()))?;
    let expired = get(&replay, &server, &format!("/ui/devices/{device_id}")).await?;
    assert_eq!(expired.status, StatusCode::SEE_OTHER);
    assert_eq!(expired.location.as_deref(), Some("/ui/login?expired=1"));
    // The answer cleared the cookie; the replay sends it again with a form.
    jar.add_cookie_str(
        &format!("{session}; Path=/; Secure; HttpOnly"),
        &Url::parse(&server.base_url)?,
    );
    let restart = post(
        &replay,
        &server,
        &format!("/ui/devices/{device_id}/actions/restart"),
        &[("csrf", "whatever it was")],
    )
    .await?;
    assert_eq!(restart.status, StatusCode::SEE_OTHER);
    assert_eq!(restart.location.as_deref(), Some("/ui/login?expired=1"));
    assert_eq!(
        commands_named(&server, &device_id, "RestartDevice").await?,
        0
    );
    let notice = get(&op, &server, "/ui/login?expired=1").await?;
    assert!(notice.body.contains("Your session has ended"));
    Ok(())
}

orchard_testkit::backend_tests! {
    webui_break_glass_sign_in_and_session_expiry => break_glass_and_expiry;
}

/// The dashboard's "expiring soon": iPads whose identity certificate runs out within 60 days are counted and
/// linked to the device list filtered to exactly them (identities of 30 days here, so the one iPad is).
async fn expiring_identities(backend: Backend) -> Result<()> {
    let args: Vec<String> = [
        "--device-identity-days",
        "30",
        "--identity-renewal-days",
        "7",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let Some(server) = TestServer::start_with(backend, &args).await? else {
        return Ok(());
    };
    let password = "correct horse battery staple 43";
    server.set_local_account("it-oncall", password)?;
    let tenant = server.create_tenant("Physics", "phys").await?;
    let fleet = server
        .enroll_devices(&server.sim_config(), &tenant, 1)
        .await?;
    let device = server.device_by_udid(fleet[0].udid()).await?;
    let serial = device["serial_number"]
        .as_str()
        .context("serial")?
        .to_string();
    let op = browser(&server, "en")?;
    let page = get(&op, &server, "/ui/login").await?;
    let token = input_value(&page.body, "form_token").context("form token")?;
    let signed_in = post(
        &op,
        &server,
        "/ui/login/local",
        &[
            ("username", "it-oncall"),
            ("password", password),
            ("form_token", &token),
        ],
    )
    .await?;
    ensure!(
        signed_in.status == StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    let home = get(&op, &server, "/ui").await?;
    ensure!(
        home.body.contains("id=\"count-identities-expiring\">1<"),
        "{}",
        home.body
    );
    ensure!(
        home.body
            .contains("href=\"/ui/devices?state=enrolled&#38;identity_expires_days=60\""),
        "{}",
        home.body
    );
    let listed = get(
        &op,
        &server,
        "/ui/devices?state=enrolled&identity_expires_days=60",
    )
    .await?;
    ensure!(listed.body.contains(&serial), "{}", listed.body);
    let later = get(&op, &server, "/ui/devices?identity_expires_days=10").await?;
    ensure!(
        !later.body.contains(&serial),
        "not within 10 days: {}",
        later.body
    );
    let bad = get(&op, &server, "/ui/devices?identity_expires_days=soon").await?;
    ensure!(
        bad.body.contains("class=\"notice error\""),
        "a bad filter is said: {}",
        bad.body
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    webui_dashboard_counts_expiring_identities => expiring_identities;
}

/// Signs an operator in through the break-glass form; the browser and the page's CSRF token.
async fn break_glass_operator(
    server: &TestServer,
    password: &str,
) -> Result<(reqwest::Client, String)> {
    server.set_local_account("it-oncall", password)?;
    let op = browser(server, "en")?;
    let page = get(&op, server, "/ui/login").await?;
    let token = input_value(&page.body, "form_token").context("form token")?;
    let signed_in = post(
        &op,
        server,
        "/ui/login/local",
        &[
            ("username", "it-oncall"),
            ("password", password),
            ("form_token", &token),
        ],
    )
    .await?;
    ensure!(
        signed_in.status == StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    let home = get(&op, server, "/ui").await?;
    let csrf = input_value(&home.body, "csrf").context("csrf")?;
    Ok((op, csrf))
}

/// Central IT's pages: departments with their counts, people and role mappings, API tokens (the secret shown once,
/// revoked), Apple's side (push certificate, DEP token synced from its page, the template and its department),
/// enrollment links and expiring credentials; the dashboard counts the serials ASM assigned that have not
/// enrolled. Forms need the CSRF token; bad input is a 4xx naming the field.
async fn operator_pages(backend: Backend) -> Result<()> {
    let serials = orchard_dep::fake::FakeDepServer::make_serials("WU", 0, 3);
    let ade = orchard_testkit::apple::AdeFixture::start(&serials).await?;
    let mut args = ade.serve_args();
    args.extend(["--device-identity-days".to_string(), "30".to_string()]);
    args.extend(["--identity-renewal-days".to_string(), "7".to_string()]);
    let Some(server) = TestServer::start_with(backend, &args).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "phys").await?;
    let _music = server.create_tenant("Music", "mus").await?;
    server
        .enroll_devices(&server.sim_config(), &physics, 2)
        .await?;
    let (token_id, _) = server
        .upload_dep_token(&ade.dep.server, "ASM University")
        .await?;
    let (status, template) = server
        .api(
            &server.token,
            reqwest::Method::POST,
            &format!("/api/v1/dep-tokens/{token_id}/templates"),
            Some(json!({"name": "Physics carts", "tenant_id": physics, "auto_assign": true})),
        )
        .await?;
    ensure!(status == 201, "template: {status} {template}");
    let (op, csrf) = break_glass_operator(&server, "correct horse battery staple 44").await?;

    // Departments with their iPads.
    let tenants = get(&op, &server, "/ui/operator/tenants").await?;
    assert_eq!(tenants.status, StatusCode::OK, "{}", tenants.body);
    assert_no_inline_code(&tenants.body, "the departments page");
    assert!(
        tenants.body.contains("id=\"tenant-total-phys\">2<"),
        "{}",
        tenants.body
    );
    assert!(tenants.body.contains("id=\"tenant-total-mus\">0<"));
    assert!(tenants.body.contains("id=\"tenants-total\">2<"));

    // Apple: no push certificate yet (the development topic), the DEP token uploaded; a sync from the page.
    let apple = get(&op, &server, "/ui/operator/apple").await?;
    assert_eq!(apple.status, StatusCode::OK, "{}", apple.body);
    assert!(apple.body.contains("id=\"push-missing\""), "{}", apple.body);
    assert!(apple.body.contains("ASM University"));
    assert!(apple.body.contains("Physics carts") && apple.body.contains("<td>Physics</td>"));
    assert!(
        apple.body.contains(&format!("id=\"dep-sync-{token_id}\"")),
        "{}",
        apple.body
    );
    // Before the sync Orchard knows no serial of Apple's.
    let home = get(&op, &server, "/ui").await?;
    assert!(
        home.body.contains("id=\"count-asm-waiting\">0<"),
        "{}",
        home.body
    );
    let sync_path = format!("/ui/operator/dep-tokens/{token_id}/sync");
    assert_eq!(
        post(&op, &server, &sync_path, &[]).await?.status,
        StatusCode::FORBIDDEN,
        "no CSRF token"
    );
    let synced = post(&op, &server, &sync_path, &[("csrf", &csrf)]).await?;
    assert_eq!(synced.status, StatusCode::SEE_OTHER, "{}", synced.body);
    let apple = get(&op, &server, synced.location.as_deref().context("back")?).await?;
    assert!(apple.body.contains("id=\"operator-done\""));
    let unknown_sync = post(
        &op,
        &server,
        "/ui/operator/dep-tokens/no-such-token/sync",
        &[("csrf", &csrf)],
    )
    .await?;
    assert_eq!(unknown_sync.status, StatusCode::NOT_FOUND);
    // The three serials are assigned to Physics by the template's rule and wait for their iPads.
    let home = get(&op, &server, "/ui").await?;
    assert!(
        home.body.contains("id=\"count-asm-waiting\">3<"),
        "{}",
        home.body
    );
    assert!(home.body.contains("href=\"/ui/operator/tenants\""));

    // People and role mappings: made and deleted through the page; bad input names the field.
    let mapped = post(
        &op,
        &server,
        "/ui/operator/role-mappings",
        &[
            ("csrf", &csrf),
            ("claim", "groups"),
            ("value", "physics-staff"),
            ("role", "viewer"),
            ("tenant", &physics),
        ],
    )
    .await?;
    assert_eq!(mapped.status, StatusCode::SEE_OTHER, "{}", mapped.body);
    let people = get(&op, &server, "/ui/operator/people").await?;
    assert_eq!(people.status, StatusCode::OK);
    assert!(people.body.contains("physics-staff"), "{}", people.body);
    assert!(
        people.body.contains("id=\"people\""),
        "the operator signed in"
    );
    let listed = server.get("/api/v1/role-mappings").await?;
    let mapping_id = listed["items"]
        .as_array()
        .context("items")?
        .iter()
        .find(|m| m["value"] == "physics-staff")
        .and_then(|m| m["id"].as_str())
        .context("mapping")?
        .to_string();
    let bad_role = post(
        &op,
        &server,
        "/ui/operator/role-mappings",
        &[
            ("csrf", &csrf),
            ("claim", "groups"),
            ("value", "x"),
            ("role", "king"),
        ],
    )
    .await?;
    assert_eq!(bad_role.status, StatusCode::BAD_REQUEST);
    assert!(bad_role.body.contains("role:"), "{}", bad_role.body);
    let bad_tenant = post(
        &op,
        &server,
        "/ui/operator/role-mappings",
        &[
            ("csrf", &csrf),
            ("claim", "groups"),
            ("value", "x"),
            ("role", "viewer"),
            ("tenant", "physics"),
        ],
    )
    .await?;
    assert_eq!(bad_tenant.status, StatusCode::BAD_REQUEST);
    assert!(bad_tenant.body.contains("tenant:"), "{}", bad_tenant.body);
    let deleted = post(
        &op,
        &server,
        &format!("/ui/operator/role-mappings/{mapping_id}/delete"),
        &[("csrf", &csrf)],
    )
    .await?;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
    assert!(!get(&op, &server, "/ui/operator/people")
        .await?
        .body
        .contains("physics-staff"));

    // API tokens: the secret once, on the answer to the form; it works until revoked from the page.
    let made = post(
        &op,
        &server,
        "/ui/operator/tokens",
        &[
            ("csrf", &csrf),
            ("name", "physics inventory"),
            ("role", "viewer"),
            ("tenant", &physics),
            ("days", "7"),
        ],
    )
    .await?;
    assert_eq!(made.status, StatusCode::OK, "{}", made.body);
    let secret = made
        .body
        .split("id=\"token-secret\" class=\"mono\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .context("the secret on the page")?
        .to_string();
    let (status, _) = server
        .api(&secret, reqwest::Method::GET, "/api/v1/devices", None)
        .await?;
    assert_eq!(status, 200, "the new token works");
    let tokens = get(&op, &server, "/ui/operator/tokens").await?;
    assert!(tokens.body.contains("physics inventory"));
    assert!(
        !tokens.body.contains(&secret),
        "the secret is shown only once"
    );
    let created = server.get("/api/v1/tokens").await?;
    let made_id = created["items"]
        .as_array()
        .context("items")?
        .iter()
        .find(|t| t["name"] == "physics inventory")
        .and_then(|t| t["id"].as_str())
        .context("token id")?
        .to_string();
    let too_long = post(
        &op,
        &server,
        "/ui/operator/tokens",
        &[
            ("csrf", &csrf),
            ("name", "x"),
            ("role", "viewer"),
            ("tenant", &physics),
            ("days", "soon"),
        ],
    )
    .await?;
    assert_eq!(too_long.status, StatusCode::BAD_REQUEST);
    assert!(too_long.body.contains("days:"), "{}", too_long.body);
    let revoked = post(
        &op,
        &server,
        &format!("/ui/operator/tokens/{made_id}/revoke"),
        &[("csrf", &csrf)],
    )
    .await?;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.body);
    let (status, _) = server
        .api(&secret, reqwest::Method::GET, "/api/v1/devices", None)
        .await?;
    assert_eq!(status, 401, "the revoked token is refused");
    let missing = post(
        &op,
        &server,
        "/ui/operator/tokens/0190a0a0-0000-7000-8000-000000000000/revoke",
        &[("csrf", &csrf)],
    )
    .await?;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // Enrollment links of every department; revoked from the page.
    server.enrollment_link(&physics, Some(10)).await?;
    let links = server
        .get(&format!("/api/v1/tenants/{physics}/enrollment-links"))
        .await?;
    let link_id = links["items"]
        .as_array()
        .context("items")?
        .iter()
        .find(|l| l["active"] == true)
        .and_then(|l| l["id"].as_str())
        .context("an active link")?
        .to_string();
    let page = get(&op, &server, "/ui/operator/links").await?;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains(&format!("id=\"revoke-link-{link_id}\"")),
        "{}",
        page.body
    );
    let revoke_link = post(
        &op,
        &server,
        &format!("/ui/operator/tenants/{physics}/links/{link_id}/revoke"),
        &[("csrf", &csrf)],
    )
    .await?;
    assert_eq!(
        revoke_link.status,
        StatusCode::SEE_OTHER,
        "{}",
        revoke_link.body
    );
    let links = server
        .get(&format!("/api/v1/tenants/{physics}/enrollment-links"))
        .await?;
    assert!(
        links["items"]
            .as_array()
            .context("items")?
            .iter()
            .all(|l| l["id"] != link_id.as_str() || l["active"] == false),
        "{links}"
    );

    // Expiring credentials: the two iPad identities of 30 days.
    let expiring = get(&op, &server, "/ui/operator/expiring").await?;
    assert_eq!(expiring.status, StatusCode::OK, "{}", expiring.body);
    assert!(
        expiring
            .body
            .contains("2 enrolled iPad identity certificate(s)"),
        "{}",
        expiring.body
    );

    // Every post is in the audit log under the API's names.
    let audit = server.get("/api/v1/audit?limit=200").await?;
    let web: Vec<String> = audit["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter(|e| e["details"]["via"] == "web")
        .filter_map(|e| e["action"].as_str().map(str::to_string))
        .collect();
    for action in ["dep_token.sync", "token.create", "token.revoke"] {
        assert!(web.iter().any(|a| a == action), "{action} in {web:?}");
    }
    Ok(())
}

orchard_testkit::backend_tests! {
    webui_operator_pages => operator_pages;
}
