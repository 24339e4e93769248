//! End to end with push: the real `orchard` binary talks HTTP/2 + TLS to a local APNs server (orchard-apns'
//! `fake`), which delivers each push to the simulated iPad it belongs to. 200 iPads enroll; a command queued
//! for all of them through the API is pushed, and every device wakes, fetches and acknowledges it. No device
//! polls on its own: each session is started by a push. Also: the push-certificate renewal guard over the API.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use orchard_apns::fake::random_topic;
use orchard_apns::DeviceToken;
use orchard_sim::SimDevice;
use orchard_testkit::apple::ApplePush;
use orchard_testkit::server::TestServer;
use orchard_testkit::Backend;
use orchard_types::{Clock, SystemClock};
use serde_json::json;
use tokio::sync::Mutex;

const FLEET: usize = 200;

/// The API's upload body for a new push certificate of `topic` from Apple's push CA.
fn push_cert_json(
    apple: &ApplePush,
    topic: &orchard_types::ApnsTopic,
    force: bool,
) -> Result<serde_json::Value> {
    let cert = apple.certificate(topic, SystemClock.now(), 365)?;
    Ok(json!({
        "certificate_pem": String::from_utf8(cert.cert_pem())?,
        "private_key_pem": String::from_utf8(cert.key_pem().expose().clone())?,
        "force": force,
    }))
}

async fn start(backend: Backend, apple: &ApplePush) -> Result<Option<TestServer>> {
    TestServer::start_with(backend, &apple.serve_args()).await
}

async fn scenario(backend: Backend) -> Result<()> {
    let apple = ApplePush::start(SystemClock.now()).await?;
    let Some(server) = start(backend, &apple).await? else {
        return Ok(());
    };
    let topic = random_topic()?;
    let (status, body) = server
        .api(
            &server.token,
            reqwest::Method::PUT,
            "/api/v1/push-certificate",
            Some(push_cert_json(&apple, &topic, false)?),
        )
        .await?;
    ensure!(status == 200, "upload: {status} {body}");
    ensure!(body["topic"] == topic.as_str(), "{body}");

    let tenant = server.create_tenant("Physics", "physics").await?;
    let link = server.enrollment_link(&tenant, None).await?;
    let config = server.sim_config();
    // Each simulated iPad runs a session only when APNs delivers a push for its token. The APNs token is the
    // device's own (as on a real iPad, it exists before enrollment), so the subscription is in place before the
    // first push can arrive.
    let sessions = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut devices_by_push: Vec<Arc<Mutex<SimDevice>>> = Vec::new();
    let mut runners = Vec::new();
    for _ in 0..FLEET {
        let mut device = SimDevice::new_random(&config);
        let mut token_bytes = uuid::Uuid::new_v4().as_bytes().to_vec();
        token_bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        device.state.push_token = token_bytes;
        let token = DeviceToken::from_bytes(&device.state.push_token)?;
        let mut pushes = apple.apns.subscribe_token(&token);
        let device = Arc::new(Mutex::new(device));
        devices_by_push.push(device.clone());
        let sessions = sessions.clone();
        runners.push(tokio::spawn(async move {
            while pushes.recv().await.is_some() {
                let mut d = device.lock().await;
                if let Err(e) = d.poll().await {
                    eprintln!("session failed for {}: {e}", d.state.udid);
                }
                sessions.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }));
    }
    for chunk in devices_by_push.chunks(20) {
        let enrollments = chunk.iter().map(|d| {
            let link = link.clone();
            async move { d.lock().await.enroll(&link).await }
        });
        for r in futures::future::join_all(enrollments).await {
            r.context("enrollment")?;
        }
    }
    for d in &devices_by_push {
        ensure!(
            d.lock().await.state.topic == topic.as_str(),
            "enrolled under the push topic"
        );
    }

    // The inventory queued at enrollment was pushed: wait until every device has answered it.
    let devices = server.devices().await?;
    ensure!(devices.len() == FLEET);
    let ids: Vec<String> = devices
        .iter()
        .filter_map(|d| d["id"].as_str().map(String::from))
        .collect();
    wait_for(&server, &ids, |h| {
        h.iter().filter(|c| c["status"] == "acknowledged").count() >= 4
    })
    .await?;

    // One command for every device, through the API.
    for id in &ids {
        server
            .post(
                &format!("/api/v1/devices/{id}/commands"),
                json!({"type": "DeviceLock", "message": "pushed"}),
            )
            .await?;
    }
    wait_for(&server, &ids, |h| {
        h.iter()
            .any(|c| c["request_type"] == "DeviceLock" && c["status"] == "acknowledged")
    })
    .await?;
    for d in &devices_by_push {
        ensure!(d.lock().await.state.locked, "a device did not lock");
    }
    // Pushes were coalesced: at most one per channel per burst, so no more than 2 per device here
    // (enrollment inventory, the lock) plus any sent again while a session was running.
    let delivered = apple.apns.delivered_count();
    ensure!(
        delivered >= (2 * FLEET) as u64,
        "every device was pushed twice: {delivered}"
    );
    ensure!(
        delivered <= (4 * FLEET) as u64,
        "pushes were not coalesced: {delivered}"
    );
    // Sessions only ever start from a push in this test; at least one per device per burst happened.
    ensure!(sessions.load(std::sync::atomic::Ordering::SeqCst) >= 2 * FLEET);

    // Renewal guard: the same topic is accepted, another topic refused, and accepted with force.
    let (s, _) = server
        .api(
            &server.token,
            reqwest::Method::PUT,
            "/api/v1/push-certificate",
            Some(push_cert_json(&apple, &topic, false)?),
        )
        .await?;
    ensure!(s == 200, "renewal with the same topic: {s}");
    let other = random_topic()?;
    let (s, body) = server
        .api(
            &server.token,
            reqwest::Method::PUT,
            "/api/v1/push-certificate",
            Some(push_cert_json(&apple, &other, false)?),
        )
        .await?;
    ensure!(s == 409, "another topic must be refused: {s} {body}");
    ensure!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("would be lost"),
        "{body}"
    );
    let (s, body) = server
        .api(
            &server.token,
            reqwest::Method::PUT,
            "/api/v1/push-certificate",
            Some(push_cert_json(&apple, &other, true)?),
        )
        .await?;
    ensure!(
        s == 200 && body["topic"] == other.as_str(),
        "forced replacement: {s} {body}"
    );
    for r in runners {
        r.abort();
    }
    Ok(())
}

/// Waits (generously; the assertion is on state, not on speed) until every device's history satisfies `done`.
async fn wait_for(
    server: &TestServer,
    ids: &[String],
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let mut pending: Vec<String> = ids.to_vec();
    loop {
        let mut still = Vec::new();
        for id in &pending {
            let h = server.commands_of(id).await?;
            if !done(&h) {
                still.push(id.clone());
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{} devices never finished: first {}",
            pending.len(),
            pending[0]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

orchard_testkit::backend_tests! {
    push_wakes_200_ipads => scenario;
}
