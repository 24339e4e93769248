//! Attack tests on the surfaces' hygiene and abuse limits (issue 10, findings 5 and 6), against the real binary
//! over TLS on SQLite and PostgreSQL: slow clients (headers byte by byte, a body that never ends, silence) are
//! disconnected after the configured time; one address cannot hold more than its share of connections; the
//! break-glass account stays usable for the right password while others keep guessing; unknown user and wrong
//! password answer alike; a viewer's bulk request is refused before its body is read; HEAD and the landing page
//! of an enrollment link spend nothing and a link's downloads are rate limited; a caller's `x-request-id` never
//! becomes the audit log's; device-surface error bodies carry no internals; `/metrics` names nothing and can be
//! put behind a token.
//!
//! Timeouts are configured small and the tests assert that the server hangs up, never how long it took.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use orchard_sim::{SimDevice, SimError};
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::Role;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

// ---------------------------------------------------------------------------------------------------------
// Raw TLS clients: what a hostile client does byte by byte.

fn server_addr(server: &TestServer) -> Result<SocketAddr> {
    let host_port = server
        .base_url
        .strip_prefix("https://")
        .context("https base url")?;
    Ok(host_port.parse()?)
}

fn tls_client_config(server: &TestServer) -> Result<Arc<rustls::ClientConfig>> {
    orchard_testkit::device_tls_config(&server.ca_pem)
}

/// A TLS connection to the server from the loopback address `source` (every 127.x address reaches the server,
/// which sees each as a different client).
async fn connect_from(server: &TestServer, source: &str) -> Result<TlsStream<TcpStream>> {
    let addr = server_addr(server)?;
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.parse()?, 0))?;
    let tcp = socket.connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(server)?);
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = tokio::time::timeout(Duration::from_secs(20), connector.connect(name, tcp))
        .await
        .context("handshake did not finish")??;
    Ok(tls)
}

/// Sends `head`, then `trickle` one byte every 100 ms, until the server ends the connection. True when it did
/// (before the trickle ran out, or soon after); the time it took is not asserted.
async fn server_hangs_up(
    stream: TlsStream<TcpStream>,
    head: &[u8],
    trickle: &[u8],
) -> Result<bool> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let ended = tokio::spawn(async move {
        let mut answer = Vec::new();
        // EOF and a reset both mean the server hung up.
        let _ = reader.read_to_end(&mut answer).await;
        answer
    });
    if !head.is_empty() {
        writer.write_all(head).await?;
        writer.flush().await?;
    }
    for byte in trickle {
        if ended.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if writer.write_all(&[*byte]).await.is_err() || writer.flush().await.is_err() {
            break;
        }
    }
    // Bounded only so that a regression fails instead of hanging the suite.
    Ok(tokio::time::timeout(Duration::from_secs(30), ended)
        .await
        .is_ok())
}

/// Writes a request head and reads the status line of the answer (without sending any body).
async fn status_of_head_only(stream: &mut TlsStream<TcpStream>, head: &str) -> Result<u16> {
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
            .await
            .context("no answer before the body was sent")??;
        if n == 0 {
            bail!("connection closed without an answer");
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&answer);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("status line: {line}"))
}

fn client_from(server: &TestServer, source: &str) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&server.ca_pem)?)
        .local_address(source.parse::<IpAddr>()?)
        .timeout(Duration::from_secs(30))
        .build()?)
}

// ---------------------------------------------------------------------------------------------------------
// Slow clients and the per-address connection cap.

async fn connection_limits(backend: Backend) -> Result<()> {
    let args: Vec<String> = [
        "--header-timeout-seconds",
        "1",
        "--body-timeout-seconds",
        "1",
        "--idle-timeout-seconds",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let Some(server) = TestServer::start_with(backend, &args).await? else {
        return Ok(());
    };

    // Headers sent byte by byte: every byte keeps the connection busy, yet the header deadline ends it.
    let stream = connect_from(&server, "127.0.0.4").await?;
    let endless_header = vec![b'a'; 600];
    ensure!(
        server_hangs_up(
            stream,
            b"GET /healthz HTTP/1.1\r\nHost: orchard\r\nX-Slow: ",
            &endless_header
        )
        .await?,
        "a client sending its headers byte by byte keeps its connection"
    );

    // A body that never finishes (trickled, so never idle): the body deadline ends it.
    let stream = connect_from(&server, "127.0.0.4").await?;
    let endless_body = vec![b' '; 600];
    ensure!(
        server_hangs_up(
            stream,
            b"POST /auth/local HTTP/1.1\r\nHost: orchard\r\nContent-Type: application/json\r\n\
              Content-Length: 100000\r\n\r\n{\"username\":",
            &endless_body
        )
        .await?,
        "a client that never finishes its body keeps its connection"
    );

    // Silence after the handshake.
    let stream = connect_from(&server, "127.0.0.4").await?;
    ensure!(
        server_hangs_up(stream, b"", b"").await?,
        "an idle connection is kept"
    );

    // A kept-alive connection that goes quiet after a request is closed too.
    let mut stream = connect_from(&server, "127.0.0.4").await?;
    let status = status_of_head_only(
        &mut stream,
        "GET /healthz HTTP/1.1\r\nHost: orchard\r\n\r\n",
    )
    .await?;
    ensure!(status == 200, "healthz → {status}");
    ensure!(
        server_hangs_up(stream, b"", b"").await?,
        "an idle kept-alive connection is kept"
    );

    // Normal clients are unaffected by all of this.
    let ok = server.http.get(server.url("/healthz")).send().await?;
    ensure!(ok.status() == 200, "healthz → {}", ok.status());
    drop(server);

    // One address may hold only its share of connections (here 3); other addresses still get in.
    let Some(server) = TestServer::start_with(
        backend,
        &["--max-connections-per-ip".to_string(), "3".to_string()],
    )
    .await?
    else {
        return Ok(());
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(&server, "127.0.0.3").await?);
    }
    ensure!(
        connect_from(&server, "127.0.0.3").await.is_err(),
        "a fourth connection from one address is accepted"
    );
    let other = server.http.get(server.url("/healthz")).send().await?;
    ensure!(
        other.status() == 200,
        "another address is refused: {}",
        other.status()
    );
    // Closing one gives its place back (the server notices the close, so allow it a moment).
    drop(held.pop());
    let mut admitted = false;
    for _ in 0..100 {
        if connect_from(&server, "127.0.0.3").await.is_ok() {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(admitted, "a closed connection's place is never given back");
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Break-glass sign-in under attack.

/// A sign-in's status, its JSON body without the request id, and its header names (without the per-request
/// ones).
async fn sign_in(
    server: &TestServer,
    http: &reqwest::Client,
    username: &str,
    password: &str,
) -> Result<(u16, Value, Vec<String>)> {
    let resp = http
        .post(server.url("/auth/local"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let mut names: Vec<String> = resp
        .headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| !matches!(k.as_str(), "date" | "x-request-id" | "content-length"))
        .collect();
    names.sort();
    let text = resp.text().await?;
    let mut body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if let Some(error) = body.get_mut("error").and_then(Value::as_object_mut) {
        error.remove("request_id");
    }
    Ok((status, body, names))
}

async fn break_glass_under_attack(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let password = "correct horse battery staple 42";
    server.set_local_account("it-oncall", password)?;

    // Unknown user and wrong password: the same answer (each from a fresh address).
    let unknown = sign_in(
        &server,
        &client_from(&server, "127.0.0.8")?,
        "nobody-here",
        password,
    )
    .await?;
    let wrong = sign_in(
        &server,
        &client_from(&server, "127.0.0.9")?,
        "it-oncall",
        "not the password at all",
    )
    .await?;
    ensure!(unknown.0 == 401, "unknown user → {unknown:?}");
    ensure!(
        unknown == wrong,
        "unknown user and wrong password answer differently: {unknown:?} vs {wrong:?}"
    );

    // An attacker keeps guessing from one address: after a few tries it is told to wait (429), whatever it
    // names, even with the right password.
    let attacker = client_from(&server, "127.0.0.5")?;
    let mut statuses = Vec::new();
    for i in 0..20 {
        let (status, _, _) =
            sign_in(&server, &attacker, "it-oncall", &format!("guess {i}")).await?;
        statuses.push(status);
    }
    ensure!(
        statuses[..5].iter().all(|s| *s == 401),
        "first guesses: {statuses:?}"
    );
    ensure!(
        statuses[5..].iter().all(|s| *s == 429),
        "the guessing address is not slowed down: {statuses:?}"
    );
    let (status, _, _) = sign_in(&server, &attacker, "it-oncall", password).await?;
    ensure!(
        status == 429,
        "throttled address with the right password → {status}"
    );

    // Guesses from other addresses while the account is in backoff: each such address is heard a couple of
    // times, then even the right password from it is refused like a wrong one.
    let second = client_from(&server, "127.0.0.7")?;
    for i in 0..2 {
        let (status, _, _) = sign_in(&server, &second, "it-oncall", &format!("other {i}")).await?;
        ensure!(status == 401, "second attacker → {status}");
    }
    let (status, _, _) = sign_in(&server, &second, "it-oncall", password).await?;
    ensure!(
        status == 401,
        "an address that guessed gets past the account's backoff → {status}"
    );

    // The operator at a clean machine gets in with the right password all along.
    let operator = client_from(&server, "127.0.0.6")?;
    let (status, body, _) = sign_in(&server, &operator, "it-oncall", password).await?;
    ensure!(
        status == 204,
        "the real operator is locked out by the attackers → {status} {body}"
    );
    // And again while the attacker goes on.
    let (status, _, _) = sign_in(&server, &attacker, "it-oncall", "still guessing").await?;
    ensure!(status == 429, "attacker → {status}");
    let (status, _, _) = sign_in(&server, &operator, "it-oncall", password).await?;
    ensure!(status == 204, "operator again → {status}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Authorization before expensive work: bulk commands.

async fn bulk_refused_before_work(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let viewer = server.create_token(Role::Viewer, Some(&physics), "viewer")?;
    let operator = server.token.clone();

    // A viewer announces a 100 MB body and sends none of it: refused at once (403), so nothing of the body
    // was read and no database work was done for it.
    let mut stream = connect_from(&server, "127.0.0.10").await?;
    let head = format!(
        "POST /api/v1/commands/bulk HTTP/1.1\r\nHost: orchard\r\nAuthorization: Bearer {viewer}\r\n\
         Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n"
    );
    let status = status_of_head_only(&mut stream, &head).await?;
    ensure!(status == 403, "viewer's oversize bulk request → {status}");

    // With a well-formed body: still 403, and nothing queued.
    let (status, body) = server
        .api(
            &viewer,
            reqwest::Method::POST,
            "/api/v1/commands/bulk",
            Some(json!({"command": {"type": "DeviceInformation", "queries": ["UDID"]}})),
        )
        .await?;
    ensure!(status == 403, "viewer's bulk request → {status} {body}");

    // A helpdesk token may not queue a command that changes devices: refused before the database too.
    let helpdesk = server.create_token(Role::Helpdesk, None, "helpdesk")?;
    let (status, body) = server
        .api(
            &helpdesk,
            reqwest::Method::POST,
            "/api/v1/commands/bulk",
            Some(json!({"command": {"type": "DeviceLock"}})),
        )
        .await?;
    ensure!(
        status == 403,
        "helpdesk's bulk DeviceLock → {status} {body}"
    );
    // The operator's request goes through (nothing enrolled: a dry run of none).
    let (status, body) = server
        .api(
            &operator,
            reqwest::Method::POST,
            "/api/v1/commands/bulk",
            Some(json!({"command": {"type": "DeviceInformation", "queries": ["UDID"]}, "dry_run": true})),
        )
        .await?;
    ensure!(status == 200, "operator's dry run → {status} {body}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Enrollment links: landing page and HEAD spend nothing; downloads are rate limited per link.

async fn link_uses(server: &TestServer, tenant: &str) -> Result<Vec<i64>> {
    let v = server
        .get(&format!("/api/v1/tenants/{tenant}/enrollment-links"))
        .await?;
    let items = v
        .get("items")
        .and_then(Value::as_array)
        .or_else(|| v.as_array())
        .cloned()
        .context("links")?;
    Ok(items.iter().filter_map(|l| l["uses"].as_i64()).collect())
}

async fn links_spend_only_on_download(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start_with(
        backend,
        &["--link-downloads-per-minute".to_string(), "3".to_string()],
    )
    .await?
    else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let link = server.enrollment_link(&physics, Some(1)).await?;

    // A preview bot and a HEAD: answered, nothing spent.
    for url in [link.clone(), format!("{link}/profile")] {
        let head = server.http.head(&url).send().await?;
        ensure!(head.status() == 200, "HEAD {url} → {}", head.status());
    }
    let page = server
        .http
        .get(&link)
        .header("user-agent", "Slackbot-LinkExpanding 1.0")
        .send()
        .await?;
    ensure!(page.status() == 200, "landing page → {}", page.status());
    ensure!(
        page.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html")),
        "landing page is not a page"
    );
    ensure!(
        page.headers().get("referrer-policy").is_some(),
        "the landing page lets the link leak through Referer"
    );
    ensure!(
        link_uses(&server, &physics).await? == vec![0],
        "looking at the link spent it"
    );

    // The iPad downloads through the page's button: one use, and it enrolls.
    let mut ipad = SimDevice::new_random(&server.sim_config());
    ipad.enroll(&link)
        .await
        .context("enrollment through the landing page")?;
    ensure!(link_uses(&server, &physics).await? == vec![1], "uses");
    for url in [link.clone(), format!("{link}/profile")] {
        let head = server.http.head(&url).send().await?;
        ensure!(
            head.status() == 410,
            "HEAD of a used-up link {url} → {}",
            head.status()
        );
    }

    let used_up = server.http.get(&link).send().await?;
    ensure!(
        used_up.status() == 410,
        "used-up link's page → {}",
        used_up.status()
    );
    ensure!(
        used_up.text().await?.contains("cannot be used"),
        "the used-up link's page does not say so"
    );

    // Per-link rate: an unlimited link hands out 3 profiles this minute, then asks to wait (nothing minted).
    let chemistry = server.create_tenant("Chemistry", "chemistry").await?;
    let open = server.enrollment_link(&chemistry, None).await?;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            server
                .http
                .get(format!("{open}/profile"))
                .send()
                .await?
                .status()
                .as_u16(),
        );
    }
    ensure!(statuses == vec![200, 200, 200, 429], "{statuses:?}");
    ensure!(
        link_uses(&server, &chemistry).await? == vec![3],
        "a refused download was counted"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Request ids.

async fn request_ids_are_ours(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start(backend).await? else {
        return Ok(());
    };
    let post_tenant = |name: &'static str, code: &'static str, request_id: String| {
        let req = server
            .http
            .post(server.url("/api/v1/tenants"))
            .bearer_auth(&server.token)
            .header("x-request-id", request_id)
            .json(&json!({"name": name, "code": code}));
        async move {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let id = resp
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            anyhow::Ok((status, id))
        }
    };
    // A 5,000-character id: not ours, not kept.
    let long = "x".repeat(5000);
    let (status, first) = post_tenant("Physics", "physics", long.clone()).await?;
    ensure!(status == 201, "create → {status}");
    ensure!(
        uuid::Uuid::parse_str(&first).is_ok() && first != long,
        "answer's request id: {first:.80}"
    );
    // Someone else's id (the one Orchard gave the request above): the new request gets its own.
    let (status, second) = post_tenant("Chemistry", "chemistry", first.clone()).await?;
    ensure!(status == 201, "create → {status}");
    ensure!(
        second != first && uuid::Uuid::parse_str(&second).is_ok(),
        "{second}"
    );

    let audit = server
        .get("/api/v1/audit?action=tenant.create&limit=100")
        .await?;
    let ids: Vec<String> = audit["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|e| e["request_id"].as_str().map(str::to_owned))
        .collect();
    ensure!(ids.len() == 2, "{audit}");
    ensure!(ids.contains(&first) && ids.contains(&second), "{ids:?}");
    ensure!(
        !audit.to_string().contains(&long[..100]),
        "the caller's long id reached the audit log"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Device-surface errors and metrics.

const UNIFORM_BODIES: [&str; 5] = [
    "bad request",
    "forbidden",
    "not found",
    "gone",
    "internal error",
];

fn uniform(what: &str, status: u16, body: &[u8]) -> Result<()> {
    let text = String::from_utf8_lossy(body);
    ensure!(
        UNIFORM_BODIES.contains(&text.as_ref()) || text.contains("com.apple.unrecognized.device"),
        "{what} → {status}: body carries details: {text}"
    );
    for leak in [
        "CN=",
        "error:",
        "openssl",
        "OpenSSL",
        "routines",
        "certificate",
        "udid",
    ] {
        ensure!(!text.contains(leak), "{what} → {status}: {text}");
    }
    Ok(())
}

async fn device_errors_and_metrics(backend: Backend) -> Result<()> {
    let Some(server) = TestServer::start_with(
        backend,
        &[
            "--metrics-token".to_string(),
            "metrics-secret-1".to_string(),
        ],
    )
    .await?
    else {
        return Ok(());
    };
    let physics = server
        .create_tenant("Physics Secret Department", "physics")
        .await?;
    let link = server.enrollment_link(&physics, None).await?;
    let config = server.sim_config();
    let mut a = SimDevice::new_random(&config);
    let b = {
        let mut b = SimDevice::new_random(&config);
        b.enroll(&link).await?;
        b
    };
    a.enroll(&link).await?;

    // A body that is not a plist, with a signature that is not base64, and with none.
    let (status, body) = a
        .send_checkin_raw(b"not a plist".to_vec(), Some("%%%not base64".into()))
        .await?;
    uniform("garbage check-in", status, &body)?;
    let (status, body) = a.send_checkin_raw(b"<plist/>".to_vec(), None).await?;
    uniform("unsigned check-in", status, &body)?;
    let (status, body) = a
        .send_checkin_raw(
            b"<plist/>".to_vec(),
            Some("MIIBkQYJKoZIhvcNAQcCoIIBgjCCAX4CAQExDzANBglg".into()),
        )
        .await?;
    uniform("truncated CMS", status, &body)?;

    // Device A signs a request naming device B's UDID: refused, without naming either.
    a.state.udid = b.state.udid.clone();
    match a.poll().await {
        Err(SimError::Status { status, body, .. }) => {
            ensure!(status == 403, "mismatch → {status}");
            uniform("identity mismatch", status, body.as_bytes())?;
        }
        other => bail!("a device answered for another's UDID: {other:?}"),
    }

    // SCEP garbage, an unknown operation, an unknown link.
    for (what, req) in [
        (
            "scep garbage",
            server
                .http
                .post(server.url("/scep?operation=PKIOperation"))
                .body(b"\x30\x82\x01\x00garbage".to_vec()),
        ),
        (
            "scep unknown operation",
            server.http.get(server.url("/scep?operation=Nope")),
        ),
        (
            "scep bad base64",
            server
                .http
                .get(server.url("/scep?operation=PKIOperation&message=%%%")),
        ),
        (
            "unknown link",
            server.http.get(server.url("/enroll/not-a-link/profile")),
        ),
    ] {
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        ensure!(status >= 400 && status != 401, "{what} → {status}");
        uniform(what, status, &resp.bytes().await?)?;
    }

    // /metrics needs the configured token; and names nothing.
    let anonymous = server.http.get(server.url("/metrics")).send().await?;
    ensure!(
        anonymous.status() == 403,
        "metrics without token → {}",
        anonymous.status()
    );
    let wrong = server
        .http
        .get(server.url("/metrics"))
        .bearer_auth("metrics-secret-2")
        .send()
        .await?;
    ensure!(
        wrong.status() == 403,
        "metrics with a wrong token → {}",
        wrong.status()
    );
    let scraped = server
        .http
        .get(server.url("/metrics"))
        .bearer_auth("metrics-secret-1")
        .send()
        .await?;
    ensure!(
        scraped.status() == 200,
        "metrics with the token → {}",
        scraped.status()
    );
    let text = scraped.text().await?;
    ensure!(text.contains("orchard_"), "{text}");
    ensure!(
        !text.contains("Physics") && !text.contains("physics"),
        "{text}"
    );
    let health = server.http.get(server.url("/healthz")).send().await?;
    ensure!(health.status() == 200, "healthz needs no token");
    Ok(())
}

orchard_testkit::backend_tests! {
    slow_clients_and_connection_cap => connection_limits;
    break_glass_stays_usable_under_attack => break_glass_under_attack;
    viewer_bulk_refused_before_body_and_database => bulk_refused_before_work;
    enrollment_links_spend_only_on_download => links_spend_only_on_download;
    client_request_ids_never_become_ours => request_ids_are_ours;
    device_errors_uniform_and_metrics_nameless => device_errors_and_metrics;
}
