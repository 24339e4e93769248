//! Signed webhooks end to end, on the real binary with SQLite and PostgreSQL: a physics admin and central IT
//! register endpoints (local receivers), a simulated iPad enrolls, answers its inventory commands and checks
//! out, and both receivers get signed events for each step — verified here independently with OpenSSL, as a
//! department's receiver would — while music's endpoint gets nothing. A tampered body or an old timestamp fails
//! the documented check. Department admins cannot see or change another tenant's or the global endpoints,
//! viewers are refused, bad input is a 400 naming the field, and the secret is shown once.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use orchard_testkit::server::TestServer;
use orchard_testkit::webhooks::{ReceivedRequest, WebhookReceiver};
use orchard_testkit::Backend;
use orchard_types::Role;
use reqwest::Method;
use serde_json::{json, Value};

/// The receiver's replay window (docs/webhooks.md).
const REPLAY_WINDOW_SECONDS: i64 = 300;

fn unix_now() -> Result<i64> {
    Ok(i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    )?)
}

/// The documented check: `Orchard-Signature: t=<t>,v1=<hex>` where hex is HMAC-SHA256 of `"<t>.<body>"` under
/// the secret, compared in constant time, and `t` within the replay window of the receiver's clock.
fn verify(secret: &str, header: &str, body: &[u8], now: i64) -> Result<()> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", t)) => timestamp = Some(t.parse::<i64>()?),
            Some(("v1", v)) => signatures.push(v.to_owned()),
            _ => {}
        }
    }
    let timestamp = timestamp.context("no timestamp")?;
    ensure!(
        (now - timestamp).abs() <= REPLAY_WINDOW_SECONDS,
        "timestamp {timestamp} outside the replay window of {now}"
    );
    let key = openssl::pkey::PKey::hmac(secret.as_bytes())?;
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key)?;
    signer.update(format!("{timestamp}.").as_bytes())?;
    signer.update(body)?;
    let expected = signer.sign_to_vec()?;
    let matches = signatures.iter().any(|s| {
        hex_decode(s).is_some_and(|given| {
            given.len() == expected.len() && openssl::memcmp::eq(&given, &expected)
        })
    });
    ensure!(matches, "no v1 signature matches");
    Ok(())
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

fn event_types(received: &[ReceivedRequest]) -> Vec<String> {
    received
        .iter()
        .filter(|r| r.answered == 200)
        .filter_map(|r| r.header("orchard-event-type").map(str::to_owned))
        .collect()
}

fn has_all(received: &[ReceivedRequest], types: &[&str]) -> bool {
    let got = event_types(received);
    types.iter().all(|t| got.iter().any(|g| g == t))
}

async fn webhooks(backend: Backend) -> Result<()> {
    let physics_receiver = WebhookReceiver::start().await?;
    let global_receiver = WebhookReceiver::start().await?;
    let music_receiver = WebhookReceiver::start().await?;
    let args: Vec<String> = vec![
        "--danger-webhook-allow-http-localhost".into(),
        "--webhook-interval-seconds".into(),
        "1".into(),
    ];
    let Some(server) = TestServer::start_with(backend, &args).await? else {
        return Ok(());
    };
    let physics = server.create_tenant("Physics", "physics").await?;
    let music = server.create_tenant("Music", "music").await?;
    let physics_admin = server.create_token(Role::Admin, Some(&physics), "physics-admin")?;
    let physics_viewer = server.create_token(Role::Viewer, Some(&physics), "physics-viewer")?;
    let music_admin = server.create_token(Role::Admin, Some(&music), "music-admin")?;
    let device_events = ["device.enrolled", "device.checked_out", "command.result"];

    // Endpoints: physics' (by its admin), music's (by its admin) and a global one (central IT).
    let create = |token: &str, path: String, url: &str| {
        let token = token.to_owned();
        let url = url.to_owned();
        let server = &server;
        async move {
            let (status, body) = server
                .api(
                    &token,
                    Method::POST,
                    &path,
                    Some(json!({"url": url, "event_types": device_events})),
                )
                .await?;
            ensure!(status == 201, "create {path}: {status} {body}");
            anyhow::Ok(body)
        }
    };
    let physics_hook = create(
        &physics_admin,
        format!("/api/v1/tenants/{physics}/webhooks"),
        &physics_receiver.url,
    )
    .await?;
    let music_hook = create(
        &music_admin,
        format!("/api/v1/tenants/{music}/webhooks"),
        &music_receiver.url,
    )
    .await?;
    let global_hook = create(
        &server.token,
        "/api/v1/webhooks".into(),
        &global_receiver.url,
    )
    .await?;
    let secret = |hook: &Value| -> Result<String> {
        Ok(hook["secret"].as_str().context("secret")?.to_owned())
    };
    let physics_secret = secret(&physics_hook)?;
    let global_secret = secret(&global_hook)?;
    ensure!(physics_secret.len() >= 40, "a long secret: {physics_hook}");
    let id = |hook: &Value| -> Result<String> {
        Ok(hook["webhook"]["id"].as_str().context("id")?.to_owned())
    };
    let (physics_id, music_id, global_id) =
        (id(&physics_hook)?, id(&music_hook)?, id(&global_hook)?);
    ensure!(physics_hook["webhook"]["tenant_id"] == physics.as_str());
    ensure!(global_hook["webhook"]["tenant_id"].is_null());

    // The secret is shown once: never in a list or a detail.
    let listed = server
        .api(
            &physics_admin,
            Method::GET,
            &format!("/api/v1/tenants/{physics}/webhooks"),
            None,
        )
        .await?;
    ensure!(listed.0 == 200, "{listed:?}");
    ensure!(
        !listed.1.to_string().contains(&physics_secret)
            && listed.1["items"][0].get("secret").is_none(),
        "{}",
        listed.1
    );

    // Isolation: another tenant's endpoints answer like missing ones, the global ones are central IT's, a
    // viewer is refused.
    #[rustfmt::skip]
    let refusals = [
        (&physics_admin, Method::GET, format!("/api/v1/tenants/{music}/webhooks"), None, 404),
        (&physics_admin, Method::POST, format!("/api/v1/tenants/{music}/webhooks"), Some(json!({"url": "https://x.example.edu/", "event_types": ["command.result"]})), 404),
        (&physics_admin, Method::GET, format!("/api/v1/tenants/{music}/webhooks/{music_id}"), None, 404),
        (&physics_admin, Method::PATCH, format!("/api/v1/tenants/{music}/webhooks/{music_id}"), Some(json!({"enabled": false})), 404),
        (&physics_admin, Method::DELETE, format!("/api/v1/tenants/{music}/webhooks/{music_id}"), None, 404),
        (&physics_admin, Method::GET, format!("/api/v1/tenants/{music}/webhooks/{music_id}/deliveries"), None, 404),
        // Another tenant's endpoint under one's own tenant, and the global one: not there.
        (&physics_admin, Method::GET, format!("/api/v1/tenants/{physics}/webhooks/{music_id}"), None, 404),
        (&physics_admin, Method::PATCH, format!("/api/v1/tenants/{physics}/webhooks/{global_id}"), Some(json!({"url": "https://evil.example.com/"})), 404),
        (&physics_admin, Method::GET, "/api/v1/webhooks".to_owned(), None, 403),
        (&physics_admin, Method::GET, format!("/api/v1/webhooks/{global_id}"), None, 403),
        (&physics_admin, Method::PATCH, format!("/api/v1/webhooks/{global_id}"), Some(json!({"enabled": false})), 403),
        (&physics_admin, Method::DELETE, format!("/api/v1/webhooks/{global_id}"), None, 403),
        (&physics_admin, Method::POST, "/api/v1/webhooks".to_owned(), Some(json!({"url": "https://x.example.edu/", "event_types": ["command.result"]})), 403),
        (&physics_viewer, Method::GET, format!("/api/v1/tenants/{physics}/webhooks"), None, 403),
        (&physics_viewer, Method::GET, format!("/api/v1/tenants/{physics}/webhooks/{physics_id}"), None, 403),
        (&physics_viewer, Method::POST, format!("/api/v1/tenants/{physics}/webhooks"), Some(json!({"url": "https://x.example.edu/", "event_types": ["command.result"]})), 403),
        (&physics_viewer, Method::DELETE, format!("/api/v1/tenants/{physics}/webhooks/{physics_id}"), None, 403),
        (&music_admin, Method::GET, format!("/api/v1/tenants/{physics}/webhooks/{physics_id}/deliveries"), None, 404),
    ];
    for (token, method, path, body, expected) in refusals {
        let (status, answer) = server.api(token, method.clone(), &path, body).await?;
        ensure!(
            status == expected,
            "{method} {path}: {status} (wanted {expected}) {answer}"
        );
        ensure!(
            !answer.to_string().contains(&music_receiver.url)
                && !answer.to_string().contains(&global_receiver.url),
            "an error shows another owner's endpoint: {answer}"
        );
    }

    // Bad input: a 400 naming the field, never a 5xx.
    #[rustfmt::skip]
    let bad = [
        (json!({"url": "http://hooks.example.edu/", "event_types": ["command.result"]}), "url"),
        (json!({"url": "https://", "event_types": ["command.result"]}), "url"),
        (json!({"url": "https://user:pw@hooks.example.edu/", "event_types": ["command.result"]}), "url"),
        (json!({"url": format!("https://hooks.example.edu/{}", "a".repeat(3000)), "event_types": ["command.result"]}), "url"),
        (json!({"url": "https://hooks.example.edu/", "event_types": []}), "event_types"),
        (json!({"url": "https://hooks.example.edu/", "event_types": ["device.exploded"]}), "event_types"),
        (json!({"url": "https://hooks.example.edu/", "event_types": ["command.result"], "secret": "mine"}), "secret"),
        (json!({"event_types": ["command.result"]}), "url"),
    ];
    for (body, field) in bad {
        let (status, answer) = server
            .api(
                &physics_admin,
                Method::POST,
                &format!("/api/v1/tenants/{physics}/webhooks"),
                Some(body.clone()),
            )
            .await?;
        ensure!(
            status == 400 && answer.to_string().contains(field),
            "{body} → {status} {answer}"
        );
    }
    let (status, answer) = server
        .api(
            &physics_admin,
            Method::GET,
            &format!("/api/v1/tenants/{physics}/webhooks/not-a-uuid"),
            None,
        )
        .await?;
    ensure!(status == 404 || status == 400, "{status} {answer}");

    // A physics iPad enrolls (answering its inventory commands) and checks out.
    let mut ipads = server
        .enroll_devices(&server.sim_config(), &physics, 1)
        .await?;
    let mut ipad = ipads.pop().context("ipad")?;
    let device = server.device_by_udid(&ipad.state.udid).await?;
    let device_id = device["id"].as_str().context("device id")?.to_owned();
    ipad.check_out().await?;

    let limit = Duration::from_secs(60);
    let at_physics = physics_receiver
        .wait_until(limit, |r| has_all(r, &device_events))
        .await?;
    let at_global = global_receiver
        .wait_until(limit, |r| has_all(r, &device_events))
        .await?;

    // Every request is signed with its endpoint's secret, carries its event id, and is the event of physics'
    // device.
    let now = unix_now()?;
    for (received, secret) in [(&at_physics, &physics_secret), (&at_global, &global_secret)] {
        for r in received.iter() {
            ensure!(r.method == "POST" && r.path == "/hook", "{r:?}");
            ensure!(
                r.header("content-type") == Some("application/json"),
                "{r:?}"
            );
            let signature = r.header("orchard-signature").context("signature")?;
            verify(secret, signature, &r.body, now)
                .with_context(|| format!("{signature} over {}", r.body_text()))?;
            let event: Value = serde_json::from_slice(&r.body)?;
            ensure!(
                event["id"].as_str() == r.header("orchard-event-id"),
                "{event}"
            );
            ensure!(
                event["type"].as_str() == r.header("orchard-event-type"),
                "{event}"
            );
            ensure!(event["tenant"] == physics.as_str(), "{event}");
            ensure!(event["data"]["device_id"] == device_id.as_str(), "{event}");
            ensure!(event["occurred_at"].as_str().is_some(), "{event}");
        }
        // The other endpoint's secret does not verify these.
        let other = if secret == &physics_secret {
            &global_secret
        } else {
            &physics_secret
        };
        let first = received.first().context("a request")?;
        ensure!(verify(
            other,
            first.header("orchard-signature").unwrap_or_default(),
            &first.body,
            now
        )
        .is_err());
    }
    let results: Vec<Value> = at_physics
        .iter()
        .filter(|r| r.header("orchard-event-type") == Some("command.result"))
        .map(|r| serde_json::from_slice(&r.body))
        .collect::<Result<_, _>>()?;
    ensure!(
        results
            .iter()
            .any(|e| e["data"]["request_type"] == "DeviceInformation"
                && e["data"]["status"] == "acknowledged"),
        "{results:?}"
    );
    // Each event once per endpoint (retries would carry the same id; none were needed).
    let mut ids: Vec<&str> = at_physics
        .iter()
        .filter_map(|r| r.header("orchard-event-id"))
        .collect();
    let all = ids.len();
    ids.sort_unstable();
    ids.dedup();
    ensure!(ids.len() == all, "an event was delivered twice");

    // A tampered body, a forged signature or an old timestamp fails the documented check.
    let sample = at_physics.first().context("sample")?;
    let header = sample.header("orchard-signature").context("signature")?;
    let mut tampered = sample.body.clone();
    tampered.extend_from_slice(b" ");
    ensure!(verify(&physics_secret, header, &tampered, now).is_err());
    let forged = sample.body_text().replace(physics.as_str(), music.as_str());
    ensure!(verify(&physics_secret, header, forged.as_bytes(), now).is_err());
    ensure!(verify(
        &physics_secret,
        header,
        &sample.body,
        now + REPLAY_WINDOW_SECONDS + 60
    )
    .is_err());

    // Music's endpoint heard nothing of physics' iPad (wait for a sweep of the delivery job after the last
    // physics event before looking).
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        music_receiver.received().is_empty(),
        "music's endpoint received {:?}",
        event_types(&music_receiver.received())
    );

    // The delivery log: every delivery made once, answered 200 (bounded wait for the last ones in flight).
    let deliveries_path = format!("/api/v1/tenants/{physics}/webhooks/{physics_id}/deliveries");
    let deadline = tokio::time::Instant::now() + limit;
    let deliveries = loop {
        let (status, log) = server
            .api(&physics_admin, Method::GET, &deliveries_path, None)
            .await?;
        ensure!(status == 200, "{status} {log}");
        let deliveries = log["items"].as_array().context("items")?.clone();
        if deliveries.iter().all(|d| d["state"] == "delivered") {
            break deliveries;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "not all delivered: {log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(
        deliveries.len() == physics_receiver.received().len(),
        "{deliveries:?}"
    );
    for d in &deliveries {
        ensure!(d["attempts"] == 1 && d["last_status"] == 200, "{d}");
        ensure!(d["next_attempt_at"].is_null(), "{d}");
        ensure!(d["attempt_log"].as_array().map(Vec::len) == Some(1), "{d}");
    }

    // Disable: nothing more is sent; the CLI shows it.
    let (status, changed) = server
        .api(
            &physics_admin,
            Method::PATCH,
            &format!("/api/v1/tenants/{physics}/webhooks/{physics_id}"),
            Some(json!({"enabled": false})),
        )
        .await?;
    ensure!(status == 200 && changed["enabled"] == false, "{changed}");
    let out = server
        .client_command(&["webhook", "list", "--tenant", &physics, "--json"])?
        .env("ORCHARD_TOKEN", &physics_admin)
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        cli["items"][0]["id"] == physics_id.as_str() && cli["items"][0]["enabled"] == false,
        "{cli}"
    );
    let out = server
        .client_command(&["webhook", "deliveries", &global_id])?
        .output()?;
    let table = String::from_utf8(out.stdout)?;
    ensure!(
        out.status.success() && table.contains("delivered"),
        "{table}"
    );

    // The audit log names the changes.
    let audit = server.get("/api/v1/audit?action=webhook.*").await?;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .context("audit items")?
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in ["webhook.create", "webhook.update"] {
        ensure!(actions.contains(&action), "{actions:?}");
    }
    let audit = server.get("/api/v1/audit?action=global_webhook.*").await?;
    ensure!(
        audit.to_string().contains("global_webhook.create"),
        "{audit}"
    );
    ensure!(
        !audit.to_string().contains(&global_secret),
        "the secret reached the audit log"
    );
    Ok(())
}

orchard_testkit::backend_tests! {
    signed_events_reach_their_tenants_endpoint_and_the_global_one_only => webhooks;
}
