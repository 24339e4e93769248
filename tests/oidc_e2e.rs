//! University single sign-on end to end: a real OpenID provider (npm `oidc-provider`, tests/oidc/provider.mjs)
//! and the real `orchard serve`, on SQLite and PostgreSQL. A browser is played by reqwest with a cookie store:
//! it follows the redirects and fills in the provider's login and consent forms.
//!
//! Alice is in the `physics-it-admins` group, which an operator maps to the Physics tenant's admin role: she
//! signs in and `/auth/me` shows that membership. Bob is in no group: he is refused with a 403 page and gets
//! no session.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use anyhow::{bail, Context, Result};
use orchard_testkit::oidc::OidcProvider;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::Role;
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};

const CLIENT_ID: &str = "orchard-e2e";
const CLIENT_SECRET: &str = "e2e-client-secret-0123456789";

/// A browser: trusts Orchard's CA, keeps cookies, and does not follow redirects by itself (so the test sees
/// each hop, and the callback's answer in particular).
fn browser(server: &TestServer) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&server.ca_pem)?)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// What Orchard's `/auth/callback` answered.
struct CallbackAnswer {
    url: Url,
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

/// The `name="…" value="…"` of the hidden `prompt` input and the `action` of the page's form.
fn form_of(page: &str) -> Option<(String, String)> {
    let form = &page[page.find("<form")?..];
    let action = form
        .split("action=\"")
        .nth(1)?
        .split('"')
        .next()?
        .to_string();
    let prompt = form
        .split("name=\"prompt\" value=\"")
        .nth(1)?
        .split('"')
        .next()?
        .to_string();
    Some((action.replace("&amp;", "&"), prompt))
}

/// Signs in as `login` from `/auth/login`, through the provider's forms, up to Orchard's callback answer.
async fn sign_in(
    browser: &reqwest::Client,
    server: &TestServer,
    login: &str,
) -> Result<CallbackAnswer> {
    let callback = Url::parse(&server.url("/auth/callback"))?;
    let mut url = Url::parse(&server.url("/auth/login"))?;
    let mut form: Option<Vec<(&str, String)>> = None;
    for _ in 0..20 {
        let request = match form.take() {
            Some(fields) => browser.request(Method::POST, url.clone()).form(&fields),
            None => browser.get(url.clone()),
        };
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await?;
        if url.origin() == callback.origin() && url.path() == callback.path() {
            return Ok(CallbackAnswer {
                url,
                status,
                headers,
                body,
            });
        }
        if status.is_redirection() {
            let location = headers
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .with_context(|| format!("{status} without Location from {url}"))?;
            url = url.join(location)?;
            continue;
        }
        let Some((action, prompt)) = form_of(&body).filter(|_| status == StatusCode::OK) else {
            bail!("unexpected {status} from {url}: {body}");
        };
        let mut fields = vec![("prompt", prompt.clone())];
        if prompt == "login" {
            fields.push(("login", login.to_string()));
            fields.push((
                "password",
                "any password: devInteractions accepts it".into(),
            ));
        }
        form = Some(fields);
        url = url.join(&action)?;
    }
    bail!("sign-in did not reach the callback in 20 steps")
}

fn set_cookies(headers: &reqwest::header::HeaderMap) -> Vec<String> {
    headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect()
}

async fn get_json(browser: &reqwest::Client, url: &str) -> Result<(StatusCode, Value)> {
    let r = browser.get(url).send().await?;
    let status = r.status();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

async fn sso_end_to_end(backend: Backend) -> Result<()> {
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

    // An operator maps the physics IT admins' group to the Physics tenant's admin role.
    let physics = server.create_tenant("Physics", "phys").await?;
    let (status, body) = server
        .api(
            &server.token,
            Method::POST,
            "/api/v1/role-mappings",
            Some(json!({"claim": "groups", "value": "physics-it-admins", "role": "admin"})),
        )
        .await?;
    assert_eq!(status, 400, "an admin mapping needs a tenant: {body}");
    let mapping = server
        .post(
            "/api/v1/role-mappings",
            json!({"claim": "groups", "value": "physics-it-admins", "role": "admin", "tenant_id": physics}),
        )
        .await?;
    let mapping_id = mapping["id"].as_str().context("mapping id")?.to_string();
    let (status, _) = server
        .api(
            &server.token,
            Method::POST,
            "/api/v1/role-mappings",
            Some(json!({"claim": "groups", "value": "physics-it-admins", "role": "admin", "tenant_id": physics})),
        )
        .await?;
    assert_eq!(status, 409, "the same rule twice");
    // Tenant people do not manage mappings.
    let viewer = server.create_token(Role::Admin, Some(&physics), "physics admin token")?;
    let (status, _) = server
        .api(&viewer, Method::GET, "/api/v1/role-mappings", None)
        .await?;
    assert_eq!(status, 403);
    let (status, _) = server
        .api(
            &viewer,
            Method::DELETE,
            &format!("/api/v1/role-mappings/{mapping_id}"),
            None,
        )
        .await?;
    assert_eq!(status, 403);
    let listed = server.get("/api/v1/role-mappings").await?;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["items"][0]["tenant_id"], physics.as_str());

    // Bob's claims map to no role: a clear 403 page, and no session.
    let bob = browser(&server)?;
    let answer = sign_in(&bob, &server, "bob").await?;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert!(
        answer.body.contains("has no role in Orchard"),
        "{}",
        answer.body
    );
    assert!(answer.body.contains("bob@example.edu"), "{}", answer.body);
    assert!(
        !set_cookies(&answer.headers)
            .iter()
            .any(|c| c.starts_with("orchard_session=")),
        "a refused person gets no session cookie"
    );
    let (status, body) = get_json(&bob, &server.url("/auth/me")).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthenticated");

    // Alice is a physics IT admin: she signs in and is the Physics tenant's admin.
    let alice = browser(&server)?;
    let answer = sign_in(&alice, &server, "alice").await?;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let session_cookie = set_cookies(&answer.headers)
        .into_iter()
        .find(|c| c.starts_with("orchard_session="))
        .context("no session cookie")?;
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(
            session_cookie.contains(attribute),
            "{attribute} missing in {session_cookie}"
        );
    }
    let (status, me) = get_json(&alice, &server.url("/auth/me")).await?;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["user"]["email"], "alice@physics.example.edu");
    assert_eq!(me["user"]["display_name"], "Alice Admin");
    assert_eq!(me["user"]["subject"], "alice");
    assert_eq!(me["user"]["issuer"], provider.issuer.as_str());
    assert_eq!(
        me["memberships"],
        json!([{"role": "admin", "tenant_id": physics}])
    );
    let csrf = me["csrf_token"].as_str().context("csrf token")?.to_string();
    assert!(csrf.len() >= 32);

    // The session works on the admin API as the physics admin: reads need only the cookie, a state change
    // also the CSRF token; another tenant's objects stay invisible; the audit log names the person.
    let (status, devices) = get_json(&alice, &server.url("/api/v1/devices")).await?;
    assert_eq!(status, StatusCode::OK, "{devices}");
    let (status, tenants) = get_json(&alice, &server.url("/api/v1/tenants")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        tenants["items"].as_array().map(Vec::len),
        Some(1),
        "{tenants}"
    );
    let link_url = server.url(&format!("/api/v1/tenants/{physics}/enrollment-links"));
    let r = alice
        .post(&link_url)
        .json(&json!({"name": "cart"}))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no csrf token");
    let r = alice
        .post(&link_url)
        .header("x-csrf-token", &csrf)
        .json(&json!({"name": "cart"}))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::CREATED);
    let music = server.create_tenant("Music", "mus").await?;
    let r = alice
        .post(server.url(&format!("/api/v1/tenants/{music}/enrollment-links")))
        .header("x-csrf-token", &csrf)
        .json(&json!({"name": "cart"}))
        .send()
        .await?;
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "another tenant looks missing"
    );
    let r = alice
        .get(server.url("/api/v1/devices"))
        .header("x-orchard-tenant", music.as_str())
        .send()
        .await?;
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "acting on a tenant that is not hers"
    );
    let audit = server
        .get("/api/v1/audit?action=enrollment_link.create")
        .await?;
    let user_id = me["user"]["id"].as_str().context("user id")?;
    assert!(
        audit["items"].as_array().is_some_and(|items| items
            .iter()
            .any(|e| e["actor"] == format!("user:{user_id}").as_str() && e["outcome"] == "ok")),
        "{audit}"
    );

    // The provider's answer is good once, and only in the browser that started the sign-in.
    let replay = alice.get(answer.url.clone()).send().await?;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);

    // A second sign-in is the same user, with the memberships recomputed.
    let alice_again = browser(&server)?;
    let again = sign_in(&alice_again, &server, "alice").await?;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.body);
    let (_, me_again) = get_json(&alice_again, &server.url("/auth/me")).await?;
    assert_eq!(me_again["user"]["id"], me["user"]["id"]);
    assert_ne!(me_again["csrf_token"], me["csrf_token"]);

    // Logging out is a state change: without the CSRF token it is refused.
    let r = alice.post(server.url("/auth/logout")).send().await?;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = alice
        .post(server.url("/auth/logout"))
        .header("x-csrf-token", "not-the-token")
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (status, _) = get_json(&alice, &server.url("/auth/me")).await?;
    assert_eq!(
        status,
        StatusCode::OK,
        "a refused logout leaves the session"
    );
    let r = alice
        .post(server.url("/auth/logout"))
        .header("x-csrf-token", &csrf)
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (status, _) = get_json(&alice, &server.url("/auth/me")).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Users: the operator sees Alice (physics admin); the physics admin sees Alice too;
    // disabling Alice ends her other session at its next request.
    let users = server.get("/api/v1/users").await?;
    let emails: Vec<&str> = users["items"]
        .as_array()
        .context("users")?
        .iter()
        .filter_map(|u| u["email"].as_str())
        .collect();
    // Bob, refused at sign-in, was never provisioned.
    assert_eq!(emails, ["alice@physics.example.edu"], "{users}");
    let physics_admin = server.create_token(Role::Admin, Some(&physics), "physics-admin")?;
    let (_, seen) = server
        .api(&physics_admin, Method::GET, "/api/v1/users", None)
        .await?;
    assert_eq!(seen["items"].as_array().map(Vec::len), Some(1), "{seen}");
    assert_eq!(seen["items"][0]["email"], "alice@physics.example.edu");
    let alice_id = me_again["user"]["id"]
        .as_str()
        .context("alice id")?
        .to_owned();
    let (status, _) = server
        .api(
            &physics_admin,
            Method::PATCH,
            &format!("/api/v1/users/{alice_id}"),
            Some(json!({"disabled": true})),
        )
        .await?;
    assert_eq!(status, 403, "only operators disable");
    let (status, disabled) = server
        .api(
            &server.token,
            Method::PATCH,
            &format!("/api/v1/users/{alice_id}"),
            Some(json!({"disabled": true})),
        )
        .await?;
    assert_eq!(status, 200, "{disabled}");
    assert!(disabled["disabled_at"].is_string());
    let (status, _) = get_json(&alice_again, &server.url("/api/v1/devices")).await?;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a disabled user's session stops working"
    );
    let (status, _) = server
        .api(
            &server.token,
            Method::PATCH,
            &format!("/api/v1/users/{alice_id}"),
            Some(json!({"disabled": false})),
        )
        .await?;
    assert_eq!(status, 200);
    // The same through the CLI: `orchard user list --json` and `orchard user disable/enable`.
    let cli = |args: &[&str]| -> Result<std::process::Output> {
        Ok(server.client_command(args)?.output()?)
    };
    let listed = cli(&["user", "list", "--json"])?;
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed: Value = serde_json::from_slice(&listed.stdout)?;
    assert_eq!(listed["items"][0]["id"], alice_id.as_str());
    let disabled = cli(&["user", "disable", &alice_id])?;
    assert!(
        disabled.status.success(),
        "{}",
        String::from_utf8_lossy(&disabled.stderr)
    );
    assert!(String::from_utf8_lossy(&disabled.stdout).contains("disabled"));
    let enabled = cli(&["user", "enable", &alice_id, "--json"])?;
    let enabled: Value = serde_json::from_slice(&enabled.stdout)?;
    assert!(enabled["disabled_at"].is_null(), "{enabled}");

    // Once the mapping is gone, Alice is refused at her next sign-in.
    let (status, _) = server
        .api(
            &server.token,
            Method::DELETE,
            &format!("/api/v1/role-mappings/{mapping_id}"),
            None,
        )
        .await?;
    assert_eq!(status, 204);
    let (status, _) = server
        .api(
            &server.token,
            Method::DELETE,
            &format!("/api/v1/role-mappings/{mapping_id}"),
            None,
        )
        .await?;
    assert_eq!(status, 404);
    let late = browser(&server)?;
    let answer = sign_in(&late, &server, "alice").await?;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    // Her earlier session lost the membership with it.
    let (_, me_after) = get_json(&alice_again, &server.url("/auth/me")).await?;
    assert_eq!(me_after["memberships"], json!([]));

    // Every sign-in is in the audit log.
    let audit = server
        .get("/api/v1/audit?action=auth.login&limit=100")
        .await?;
    let outcomes: Vec<&str> = audit["items"]
        .as_array()
        .context("audit items")?
        .iter()
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "ok").count(),
        2,
        "{audit}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| **o == "denied").count(),
        2,
        "{audit}"
    );
    let logouts = server.get("/api/v1/audit?action=auth.logout").await?;
    assert_eq!(
        logouts["items"].as_array().map(Vec::len),
        Some(1),
        "{logouts}"
    );
    assert_eq!(
        logouts["items"][0]["actor"],
        format!("user:{}", me["user"]["id"].as_str().unwrap_or(""))
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    oidc_sign_in => sso_end_to_end;
}

async fn sign_in_without_configuration(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let r = browser(&server)?
        .get(server.url("/auth/login"))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await?.contains("Single sign-on is not configured"));
    Ok(())
}

orchard_testkit::backend_tests! {
    sign_in_without_configuration_is_a_clear_404 => sign_in_without_configuration;
}
