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
    let mut device = physics_fleet.into_iter().next().context("device")?;
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
