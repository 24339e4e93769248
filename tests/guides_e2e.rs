//! The guides the server ships (`docs/guides`, compiled in) over the real binary and the real test OpenID provider
//! (tests/oidc/provider.mjs), on SQLite and PostgreSQL. A browser is played by reqwest with a cookie store.
//!
//! Signed out, the guides redirect to the sign-in page. Alice (Physics admin) and Vera (Physics viewer) read the
//! department handbook in their UI language and the other one through its link, and the operator guide answers
//! them exactly like an unknown guide; Olle (central IT, operator) reads both guides in both languages. Unknown
//! names, encoded path tricks and unknown languages are 404. Every command block of a guide shows its commands as
//! text, and raw HTML never reaches the page.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use orchard_testkit::oidc::OidcProvider;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use reqwest::{Method, StatusCode, Url};
use serde_json::json;

const CLIENT_ID: &str = "orchard-guides-e2e";
const CLIENT_SECRET: &str = "guides-e2e-client-secret-0123456789";

/// A browser: trusts Orchard's CA, keeps cookies, does not follow redirects by itself.
fn browser(server: &TestServer, accept_language: &str) -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::ACCEPT_LANGUAGE, accept_language.parse()?);
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&server.ca_pem)?)
        .cookie_store(true)
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?)
}

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

/// Signs in as `login` through single sign-on (the provider's accounts carry their `groups`).
async fn sso_sign_in(b: &reqwest::Client, server: &TestServer, login: &str) -> Result<()> {
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
            ensure!(
                a.status == StatusCode::SEE_OTHER && a.location.as_deref() == Some("/ui"),
                "{login} did not land on the UI: {} {}",
                a.status,
                a.body
            );
            return Ok(());
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

fn header(a: &Answer, name: &str) -> String {
    a.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// A guide page as it must be: 200, the UI's security headers, the guide's title, the language it is in, and a
/// link to the other language.
fn assert_guide(a: &Answer, title: &str, lang: &str, other_link: &str, what: &str) {
    assert_eq!(a.status, StatusCode::OK, "{what}: {}", a.body);
    let csp = header(a, "content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{what}: CSP {csp}"
    );
    assert_eq!(header(a, "x-frame-options"), "DENY", "{what}");
    assert_eq!(header(a, "cache-control"), "no-store", "{what}");
    assert!(
        a.body.contains("<h1 id=") && a.body.contains(&format!(">{title}</h1>")),
        "{what}: no title {title:?}"
    );
    assert!(
        a.body.contains(&format!(
            "<article class=\"guide\" id=\"guide\" lang=\"{lang}\">"
        )),
        "{what}: not in {lang}"
    );
    assert!(
        a.body.contains(&format!("href=\"{other_link}\"")),
        "{what}: no link {other_link}"
    );
    // The guide's own content is escaped text: no script or style of its own, no event handler.
    let article = &a.body[a.body.find("<article").unwrap_or(0)..];
    for forbidden in [
        "<script",
        "<style",
        " onclick=",
        " onerror=",
        "<iframe",
        "<img",
    ] {
        assert!(!article.contains(forbidden), "{what}: {forbidden}");
    }
}

/// Every `orchard …` line of the guide's code blocks appears, escaped, in the page.
fn assert_commands_shown(a: &Answer, markdown: &str, what: &str) {
    let mut shown = 0;
    let mut in_block = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block || !line.starts_with("orchard ") {
            continue;
        }
        let escaped = line
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;");
        assert!(a.body.contains(&escaped), "{what}: {line} not shown");
        shown += 1;
    }
    assert!(shown >= 10, "{what}: only {shown} commands");
}

fn guide_source(lang: &str, name: &str) -> Result<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/guides")
        .join(lang)
        .join(format!("{name}.md"));
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

async fn guides(backend: Backend) -> Result<()> {
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

    // Signed out: every guide address leads to the sign-in page, and shows nothing of a guide.
    let anonymous = browser(&server, "en")?;
    for path in [
        "/ui/guides",
        "/ui/guides/department",
        "/ui/guides/operator",
        "/ui/guides/department?lang=sv",
        "/ui/guides/nope",
    ] {
        let a = get(&anonymous, &server, path).await?;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(a.location.as_deref(), Some("/ui/login"), "{path}");
        assert!(!a.body.contains("orchard "), "{path}: {}", a.body);
    }

    let department_en = guide_source("en", "department")?;
    let department_sv = guide_source("sv", "department")?;
    let operator_en = guide_source("en", "operator")?;
    let operator_sv = guide_source("sv", "operator")?;

    // Alice (Physics admin, English browser): the department handbook only.
    let alice = browser(&server, "en-GB,en;q=0.9")?;
    sso_sign_in(&alice, &server, "alice").await?;
    let home = get(&alice, &server, "/ui").await?;
    assert!(
        home.body.contains("href=\"/ui/guides\""),
        "the menu has the guides"
    );
    let list = get(&alice, &server, "/ui/guides").await?;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert!(list.body.contains("href=\"/ui/guides/department\""));
    assert!(list.body.contains("Department handbook"));
    assert!(
        !list.body.contains("/ui/guides/operator"),
        "a department admin is not offered the operator guide"
    );
    let page = get(&alice, &server, "/ui/guides/department").await?;
    assert_guide(
        &page,
        "Department handbook",
        "en",
        "/ui/guides/department?lang=sv",
        "alice, department, en",
    );
    assert_commands_shown(&page, &department_en, "alice, department, en");
    assert!(page.body.contains("Läs på svenska"));
    let swedish = get(&alice, &server, "/ui/guides/department?lang=sv").await?;
    assert_guide(
        &swedish,
        "Handbok för institutioner",
        "sv",
        "/ui/guides/department?lang=en",
        "alice, department, sv",
    );
    assert_commands_shown(&swedish, &department_sv, "alice, department, sv");
    // The page's frame stays in her UI language.
    assert!(swedish.body.contains("<html lang=\"en\">"));

    // The operator guide answers her exactly like a guide that does not exist.
    let refused = get(&alice, &server, "/ui/guides/operator").await?;
    let unknown = get(&alice, &server, "/ui/guides/nope").await?;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let strip = |body: &str| -> String {
        body.lines()
            .filter(|l| !l.contains("class=\"rid\""))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&refused.body), strip(&unknown.body));
    let refused_sv = get(&alice, &server, "/ui/guides/operator?lang=sv").await?;
    assert_eq!(refused_sv.status, StatusCode::NOT_FOUND);

    // Path tricks and unknown languages: 404, never another file and never a server error.
    for path in [
        "/ui/guides/..%2Foperator",
        "/ui/guides/%2E%2E%2Foperator",
        "/ui/guides/..%2F..%2F..%2Fetc%2Fpasswd",
        "/ui/guides/department%2F..%2Foperator",
        "/ui/guides/operator.md",
        "/ui/guides/en%2Fdepartment.md",
        "/ui/guides/DEPARTMENT",
        "/ui/guides/department%00",
        "/ui/guides/department/extra",
        "/ui/guides/department?lang=de",
        "/ui/guides/department?lang=..%2Fen",
    ] {
        let a = get(&alice, &server, path).await?;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}: {}", a.body);
        assert!(!a.body.contains("<article"), "{path}");
    }

    // Alice again with a Swedish browser: the handbook comes in Swedish, with a link to the English one.
    let alice_sv = browser(&server, "sv-SE,sv;q=0.9")?;
    sso_sign_in(&alice_sv, &server, "alice").await?;
    let page = get(&alice_sv, &server, "/ui/guides/department").await?;
    assert_guide(
        &page,
        "Handbok för institutioner",
        "sv",
        "/ui/guides/department?lang=en",
        "alice, department, sv browser",
    );
    assert!(page.body.contains("Read in English") && page.body.contains("Handböcker"));

    // Vera (Physics viewer) reads the department handbook too.
    let vera = browser(&server, "en")?;
    sso_sign_in(&vera, &server, "vera").await?;
    let page = get(&vera, &server, "/ui/guides/department").await?;
    assert_guide(
        &page,
        "Department handbook",
        "en",
        "/ui/guides/department?lang=sv",
        "vera",
    );
    assert_eq!(
        get(&vera, &server, "/ui/guides/operator").await?.status,
        StatusCode::NOT_FOUND
    );

    // Olle (central IT) reads both guides in both languages.
    let olle = browser(&server, "en")?;
    sso_sign_in(&olle, &server, "olle").await?;
    let list = get(&olle, &server, "/ui/guides").await?;
    assert!(list.body.contains("href=\"/ui/guides/department\""));
    assert!(list.body.contains("href=\"/ui/guides/operator\""));
    assert!(list.body.contains("Operator guide"));
    for (path, title, lang, other, source) in [
        (
            "/ui/guides/operator",
            "Operator guide",
            "en",
            "/ui/guides/operator?lang=sv",
            &operator_en,
        ),
        (
            "/ui/guides/operator?lang=sv",
            "Handbok för drift",
            "sv",
            "/ui/guides/operator?lang=en",
            &operator_sv,
        ),
        (
            "/ui/guides/department",
            "Department handbook",
            "en",
            "/ui/guides/department?lang=sv",
            &department_en,
        ),
        (
            "/ui/guides/department?lang=sv",
            "Handbok för institutioner",
            "sv",
            "/ui/guides/department?lang=en",
            &department_sv,
        ),
    ] {
        let page = get(&olle, &server, path).await?;
        assert_guide(&page, title, lang, other, &format!("olle, {path}"));
        assert_commands_shown(&page, source, &format!("olle, {path}"));
    }
    assert_eq!(
        get(&olle, &server, "/ui/guides/nope").await?.status,
        StatusCode::NOT_FOUND
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    guides_are_served_to_signed_in_people_by_role_and_language => guides;
}
