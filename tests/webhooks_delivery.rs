//! Webhook delivery on a hand-moved clock, on SQLite and PostgreSQL: a receiver answering 500, 503 and then
//! 200 gets the same event three times with growing, jittered delays recorded in the delivery log (no
//! wall-clock waits) and one delivery; repeated failures give a delivery up and then disable the endpoint
//! (audited, and it gets no new events); two nodes stepping at once send a delivery once; an expiry warning
//! published for one tenant never reaches another tenant's endpoint; finished deliveries are pruned after the
//! retention.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use orchard_core::access::bootstrap::LocalBootstrap;
use orchard_core::push::PushSettings;
use orchard_core::webhooks::{NewWebhook, WebhookSettings, EVENT_EXPIRY_WARNING};
use orchard_core::Orchard;
use orchard_testkit::service::{test_node, test_pki};
use orchard_testkit::webhooks::WebhookReceiver;
use orchard_testkit::{Backend, TestDatabase};
use orchard_types::{Clock, ManualClock, SystemClock, UnixTime, WebhookId};
use serde_json::json;

const BASE: i64 = 60;

fn settings() -> WebhookSettings {
    WebhookSettings {
        timeout: Duration::from_secs(5),
        retry_base_seconds: BASE,
        retry_max_seconds: 3600,
        max_attempts: 4,
        disable_after_failures: 6,
        danger_allow_http_localhost: true,
        ..WebhookSettings::default()
    }
}

fn hmac_hex(secret: &str, message: &str) -> Result<String> {
    let key = openssl::pkey::PKey::hmac(secret.as_bytes())?;
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key)?;
    signer.update(message.as_bytes())?;
    Ok(signer
        .sign_to_vec()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn seconds(rfc3339: &serde_json::Value) -> Result<i64> {
    let text = rfc3339.as_str().context("a time")?;
    Ok(UnixTime::parse_rfc3339(text).context("rfc 3339")?.0)
}

async fn delivery(backend: Backend) -> Result<()> {
    let Some(database) = TestDatabase::create(backend).await? else {
        return Ok(());
    };
    let clock = ManualClock::new(SystemClock.now());
    let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
    let pki = Arc::new(test_pki(clock.now()));
    let node = |store, scopes| {
        Arc::new(
            test_node(
                store,
                scopes,
                pki.clone(),
                clock_dyn.clone(),
                PushSettings::default(),
            )
            .with_webhook_settings(settings()),
        )
    };
    let (store, scopes) = database.store().await?;
    let bootstrap =
        LocalBootstrap::for_opened_database(store.clone(), scopes.clone(), clock_dyn.clone());
    let operator = bootstrap.operator()?;
    let orchard: Arc<Orchard> = node(store, scopes);
    let (store_b, scopes_b) = database.store().await?;
    let other_node: Arc<Orchard> = node(store_b, scopes_b);
    let system = orchard.system();

    let physics = orchard
        .create_tenant(&operator, "Physics", "physics")
        .await?;
    let music = orchard.create_tenant(&operator, "Music", "music").await?;
    let receiver = WebhookReceiver::start().await?;
    let music_receiver = WebhookReceiver::start().await?;
    let wanted = |url: &str| NewWebhook {
        url: url.to_owned(),
        event_types: vec![EVENT_EXPIRY_WARNING.to_owned()],
        enabled: None,
    };
    let global = orchard
        .create_global_webhook(&operator, &wanted(&receiver.url))
        .await?;
    let music_admin = bootstrap.act_as(
        "music-it",
        "Music IT",
        orchard_types::Role::Admin,
        Some(music.id),
    )?;
    orchard
        .create_tenant_webhook(&music_admin, music.id, &wanted(&music_receiver.url))
        .await?;
    let global_id = WebhookId::parse(&global.webhook.id)?;

    // Physics' expiry warning: the global endpoint only (music's endpoint wants the type but not the tenant).
    receiver.answer_next(&[500, 503]);
    let queued = orchard
        .publish_expiry_warning(
            &system,
            Some(physics.id),
            json!({"credential": "apps_token", "days_left": 30}),
        )
        .await?;
    ensure!(queued == 1, "deliveries queued: {queued}");

    // Attempt 1 answers 500; nothing is due until its next try, and then attempt 2 answers 503, attempt 3 200.
    let mut next_tries = Vec::new();
    for (attempt, answer) in [(1, 500), (2, 503), (3, 200)] {
        let stats = orchard.deliver_webhooks_once(&system, "node-a").await?;
        ensure!(stats.claimed == 1, "attempt {attempt}: {stats:?}");
        let early = orchard.deliver_webhooks_once(&system, "node-a").await?;
        ensure!(early.claimed == 0, "claimed again before it was due");
        let log = orchard
            .global_webhook_deliveries(&operator, global_id)
            .await?;
        let d = log.first().context("a delivery")?;
        ensure!(d.attempts == attempt, "{d:?}");
        ensure!(d.last_status == Some(answer), "{d:?}");
        if answer == 200 {
            ensure!(
                d.state == "delivered" && d.next_attempt_at.is_none(),
                "{d:?}"
            );
            break;
        }
        let last = d.attempt_log.last().context("attempt log")?;
        let attempted = seconds(&json!(last.attempted_at))?;
        let next = seconds(&json!(last.next_attempt_at))?;
        let delay = next - attempted;
        // BASE · 2^(attempt−1) plus at most 20 % jitter.
        let base = BASE << (attempt - 1);
        ensure!(
            delay >= base && delay <= base + base / 5,
            "attempt {attempt}: delay {delay}"
        );
        next_tries.push(delay);
        clock.set(UnixTime(next));
    }
    ensure!(next_tries.windows(2).all(|w| w[1] > w[0]), "{next_tries:?}");
    let log = orchard
        .global_webhook_deliveries(&operator, global_id)
        .await?;
    ensure!(log.len() == 1, "one delivery: {log:?}");
    let statuses: Vec<Option<i64>> = log[0].attempt_log.iter().map(|a| a.status_code).collect();
    ensure!(
        statuses == [Some(500), Some(503), Some(200)],
        "{statuses:?}"
    );

    // The receiver saw the same event thrice, each signed at its own attempt's time.
    let received = receiver.received();
    ensure!(received.len() == 3, "{}", received.len());
    let first_id = received[0]
        .header("orchard-event-id")
        .context("id")?
        .to_owned();
    for r in &received {
        ensure!(r.header("orchard-event-id") == Some(first_id.as_str()));
        let header = r.header("orchard-signature").context("signature")?;
        let (t, v1) = header
            .strip_prefix("t=")
            .and_then(|rest| rest.split_once(",v1="))
            .context("signature format")?;
        ensure!(v1 == hmac_hex(&global.secret, &format!("{t}.{}", r.body_text()))?);
        let event: serde_json::Value = serde_json::from_slice(&r.body)?;
        ensure!(event["type"] == EVENT_EXPIRY_WARNING && event["tenant"] == physics.id.to_string());
    }
    let times: Vec<&str> = received
        .iter()
        .filter_map(|r| r.header("orchard-signature"))
        .collect();
    ensure!(times[0] != times[1] && times[1] != times[2], "{times:?}");
    ensure!(
        music_receiver.received().is_empty(),
        "music got physics' warning"
    );

    // Two nodes stepping at once send one delivery once.
    receiver.answer_next(&[]);
    orchard
        .publish_expiry_warning(&system, None, json!({"credential": "push_certificate"}))
        .await?;
    let other_system = other_node.system();
    let (a, b) = tokio::join!(
        orchard.deliver_webhooks_once(&system, "node-a"),
        other_node.deliver_webhooks_once(&other_system, "node-b"),
    );
    ensure!(a?.claimed + b?.claimed == 1, "claimed by both nodes");
    ensure!(receiver.received().len() == 4);

    // Failing for good: a delivery is given up after its 4 attempts; with the next event's first 2 that makes
    // 6 consecutive failures, which disable the endpoint (audited); a disabled endpoint gets no new events and
    // its pending delivery waits.
    receiver.answer_next(&[500; 6]);
    orchard
        .publish_expiry_warning(&system, None, json!({"credential": "dep_token"}))
        .await?;
    for attempt in 1..=4 {
        let stats = orchard.deliver_webhooks_once(&system, "node-a").await?;
        ensure!(
            stats.claimed == 1 && stats.failed == 1,
            "attempt {attempt}: {stats:?}"
        );
        clock.advance(3600 * 2);
    }
    ensure!(orchard.global_webhook(&operator, global_id).await?.enabled);
    orchard
        .publish_expiry_warning(&system, None, json!({"credential": "vpp_token"}))
        .await?;
    for _ in 0..2 {
        ensure!(
            orchard
                .deliver_webhooks_once(&system, "node-a")
                .await?
                .claimed
                == 1
        );
        clock.advance(3600 * 2);
    }
    let endpoint = orchard.global_webhook(&operator, global_id).await?;
    ensure!(
        !endpoint.enabled
            && endpoint.consecutive_failures == 6
            && endpoint.disabled_at.is_some()
            && endpoint
                .disabled_reason
                .as_deref()
                .is_some_and(|r| r.contains("6 consecutive")),
        "{endpoint:?}"
    );
    let log = orchard
        .global_webhook_deliveries(&operator, global_id)
        .await?;
    let given_up: Vec<_> = log.iter().filter(|d| d.state == "failed").collect();
    ensure!(
        given_up.len() == 1 && given_up[0].attempts == 4 && given_up[0].next_attempt_at.is_none(),
        "{log:?}"
    );
    let waiting: Vec<_> = log.iter().filter(|d| d.state == "pending").collect();
    ensure!(waiting.len() == 1 && waiting[0].attempts == 2, "{log:?}");
    let audit = audit_actions(&orchard, &operator).await?;
    ensure!(
        audit.iter().any(|a| a == "webhook.endpoint.disabled"),
        "{audit:?}"
    );
    let before = receiver.received().len();
    let queued = orchard
        .publish_expiry_warning(&system, None, json!({"credential": "ca"}))
        .await?;
    ensure!(queued == 0, "a disabled endpoint got an event");
    ensure!(
        orchard
            .deliver_webhooks_once(&system, "node-a")
            .await?
            .claimed
            == 0,
        "a disabled endpoint's pending delivery was sent"
    );
    ensure!(receiver.received().len() == before);

    // Enabled again, its failure count starts over and the waiting delivery goes out.
    let enabled = orchard
        .update_global_webhook(
            &operator,
            global_id,
            &orchard_core::webhooks::WebhookPatch {
                enabled: Some(true),
                ..Default::default()
            },
        )
        .await?;
    ensure!(enabled.enabled && enabled.consecutive_failures == 0 && enabled.disabled_at.is_none());
    let stats = orchard.deliver_webhooks_once(&system, "node-a").await?;
    ensure!(stats.claimed == 1 && stats.delivered == 1, "{stats:?}");

    // After the retention (30 days) the finished deliveries are pruned from the log.
    ensure!(!orchard
        .global_webhook_deliveries(&operator, global_id)
        .await?
        .is_empty());
    clock.advance(31 * 86_400);
    orchard.deliver_webhooks_once(&system, "node-a").await?;
    let log = orchard
        .global_webhook_deliveries(&operator, global_id)
        .await?;
    ensure!(log.is_empty(), "{log:?}");
    Ok(())
}

async fn audit_actions(
    orchard: &Orchard,
    operator: &orchard_core::access::capability::OperatorCtx,
) -> Result<Vec<String>> {
    let (events, _) = orchard
        .list_audit(
            &operator.principal().oversight()?,
            &orchard_core::reporting::audit::AuditQuery {
                action: Some("webhook.*".into()),
                ..Default::default()
            },
            orchard_store::Page::default(),
        )
        .await?;
    Ok(events.into_iter().map(|e| e.action).collect())
}

/// A department's endpoint reaches public addresses only: one naming a loopback address, directly or through a
/// host name, is refused without a connection (and says why in its log); an operator's global endpoint may name
/// any host. (Loopback stands in for the campus network and the cloud's metadata address here.)
async fn department_endpoints_reach_public_addresses_only(backend: Backend) -> Result<()> {
    let Some(database) = TestDatabase::create(backend).await? else {
        return Ok(());
    };
    let clock = ManualClock::new(SystemClock.now());
    let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
    let pki = Arc::new(test_pki(clock.now()));
    let (store, scopes) = database.store().await?;
    let bootstrap =
        LocalBootstrap::for_opened_database(store.clone(), scopes.clone(), clock_dyn.clone());
    let operator = bootstrap.operator()?;
    let orchard = Arc::new(
        test_node(store, scopes, pki, clock_dyn, PushSettings::default()).with_webhook_settings(
            WebhookSettings {
                danger_allow_http_localhost: false,
                ..settings()
            },
        ),
    );
    let system = orchard.system();
    let music = orchard.create_tenant(&operator, "Music", "music").await?;
    let music_admin = bootstrap.act_as(
        "music-it",
        "Music IT",
        orchard_types::Role::Admin,
        Some(music.id),
    )?;

    // Counts the connections anyone makes to it (no TLS: an attempt is what matters).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(socket);
        }
    });

    let wanted = |url: String| NewWebhook {
        url,
        event_types: vec![EVENT_EXPIRY_WARNING.to_owned()],
        enabled: None,
    };
    let mut department = Vec::new();
    for url in [
        format!("https://127.0.0.1:{port}/hook"),
        format!("https://localhost:{port}/hook"),
        format!("https://[::ffff:127.0.0.1]:{port}/hook"),
    ] {
        let created = orchard
            .create_tenant_webhook(&music_admin, music.id, &wanted(url))
            .await?;
        department.push(WebhookId::parse(&created.webhook.id)?);
    }
    orchard
        .create_global_webhook(
            &operator,
            &wanted(format!("https://127.0.0.1:{port}/global")),
        )
        .await?;
    let queued = orchard
        .publish_expiry_warning(&system, Some(music.id), json!({"credential": "apps_token"}))
        .await?;
    ensure!(queued == 4, "deliveries queued: {queued}");
    let stats = orchard.deliver_webhooks_once(&system, "node-a").await?;
    ensure!(stats.claimed == 4 && stats.delivered == 0, "{stats:?}");
    let made = connections.load(std::sync::atomic::Ordering::SeqCst);
    ensure!(
        made == 1,
        "{made} connections: only the global endpoint may connect"
    );
    for id in department {
        let log = orchard
            .tenant_webhook_deliveries(&music_admin, music.id, id)
            .await?;
        ensure!(
            log.len() == 1
                && log[0].last_status.is_none()
                && log[0]
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("refused")),
            "{log:?}"
        );
    }
    Ok(())
}

orchard_testkit::backend_tests! {
    retries_back_off_then_deliver_and_repeated_failure_disables_the_endpoint => delivery;
    department_endpoints_reach_only_public_addresses => department_endpoints_reach_public_addresses_only;
}
