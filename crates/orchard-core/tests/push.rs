//! The push dispatcher and the push certificate against a local APNs server over real TLS + HTTP/2, with an
//! injected clock: expiry warnings, dead tokens revived by TokenUpdate, retried server errors, and a refused
//! certificate stopping pushes — all without sleeping. Pushes survive: a push claimed by a node that died is sent
//! after its lease, a TokenUpdate during a push keeps its new token, Retry-After holds a push (and a 503 the
//! whole node) until then, a refused certificate stops every node on the database, and a node whose
//! certificate was replaced on another node takes the new one at its first failed push.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use orchard_apns::fake::{random_topic, Fault, FaultScope};
use orchard_apns::DeviceToken;
use orchard_testkit::service::PushSetup as Setup;
use orchard_testkit::Backend;
use orchard_types::{Clock, RequestType};

const DAY: i64 = 86_400;

async fn expiry_is_warned_from_60_days_and_an_expired_certificate_stops_pushes_cleanly(
    backend: Backend,
) {
    let Some(s) = Setup::start(backend).await else {
        return;
    };
    let topic = random_topic().unwrap();
    let status = s
        .orchard
        .upload_push_certificate(&s.operator, s.push_certificate(&topic, 100), false)
        .await
        .unwrap();
    assert_eq!(status.topic, topic.as_str());
    assert!(!status.expiry_warning);
    assert!(status.days_left >= 99);

    s.clock.advance(41 * DAY);
    let status = s.orchard.push_certificate_status().unwrap();
    assert!(status.expiry_warning, "{status:?}");
    assert!(!status.expired);

    s.clock.advance(60 * DAY);
    let status = s.orchard.push_certificate_status().unwrap();
    assert!(status.expired);
    assert!(status.pushes_stopped.is_some());
    // Work is queued but nothing is pushed and nothing panics; the push stays owed.
    let token = [7u8; 32];
    let (channel, device) = s.enrolled(&token).await;
    s.queue(&device, &channel, RequestType::DeviceLock).await;
    let stats = s.dispatch().await;
    assert_eq!(stats.delivered, 0);
    assert_eq!(s.push.apns.delivered_count(), 0);
    assert!(s.store.count_due_pushes().await.unwrap() >= 1);
    // An expired certificate cannot be uploaded either.
    let late = s
        .orchard
        .upload_push_certificate(&s.operator, s.push_certificate(&topic, -1), false)
        .await;
    assert!(late.is_err());
}

async fn dead_tokens_retries_and_refused_certificates(backend: Backend) {
    let Some(s) = Setup::start(backend).await else {
        return;
    };
    let topic = s.upload_push_certificate().await;
    let token = [0x42u8; 32];
    let device_token = DeviceToken::from_bytes(&token).unwrap();
    let (channel, device) = s.enrolled(&token).await;

    // 410 Unregistered: the token is dead; later work is not pushed.
    s.push.apns.mark_unregistered(&device_token);
    s.queue(&device, &channel, RequestType::DeviceLock).await;
    let stats = s.dispatch().await;
    assert_eq!(stats.dead_tokens, 1, "{stats:?}");
    s.queue(&device, &channel, RequestType::DeviceLock).await;
    assert_eq!(s.dispatch().await.claimed, 0);
    // The device API says why it gets no push: the token is dead, and the lock is owed.
    let push = push_view(&s, &device).await;
    assert_eq!(push.token_dead_reason.as_deref(), Some("Unregistered"));
    assert!(push.token_dead_at.is_some() && push.owed, "{push:?}");
    assert_eq!(
        push.last_result.as_deref(),
        Some("token dead: 410 Unregistered")
    );
    assert_eq!(push.last_delivered_at, None);

    // A new TokenUpdate revives it, and the owed push is delivered.
    s.push.apns.mark_registered(&device_token);
    s.token_update(&device, &channel, &token).await;
    let stats = s.dispatch().await;
    assert_eq!(stats.delivered, 1, "{stats:?}");
    let push = push_view(&s, &device).await;
    assert_eq!(push.last_result.as_deref(), Some("delivered"), "{push:?}");
    assert!(push.last_delivered_at.is_some() && !push.owed, "{push:?}");
    assert_eq!(push.token_dead_at, None);

    // Two 500s are retried inside the client and the push arrives.
    s.push
        .apns
        .inject(FaultScope::AllTokens, Fault::InternalServerError, 2);
    s.queue(&device, &channel, RequestType::DeviceLock).await;
    let stats = s.dispatch().await;
    assert_eq!(stats.delivered, 1, "{stats:?}");
    assert_eq!(s.push.apns.pushes_for(&device_token).len(), 2);

    // 403: the certificate is refused; pushes stop with a reason and the push stays owed.
    s.push.apns.inject(
        FaultScope::AllTokens,
        Fault::Status {
            status: 403,
            reason: "BadCertificate".into(),
        },
        1,
    );
    s.queue(&device, &channel, RequestType::DeviceLock).await;
    let stats = s.dispatch().await;
    assert_eq!(stats.requeued, 1, "{stats:?}");
    let status = s.orchard.push_certificate_status().unwrap();
    assert!(status.pushes_stopped.is_some(), "{status:?}");
    assert_eq!(s.dispatch().await.claimed, 0);
    assert_eq!(s.store.count_due_pushes().await.unwrap(), 1);

    // Uploading a (renewed, same-topic) certificate resumes pushing.
    s.orchard
        .upload_push_certificate(&s.operator, s.push_certificate(&topic, 365), false)
        .await
        .unwrap();
    let stats = s.dispatch().await;
    assert_eq!(stats.delivered, 1, "{stats:?}");
}

async fn renewal_guard(backend: Backend) {
    let Some(s) = Setup::start(backend).await else {
        return;
    };
    let topic = s.upload_push_certificate().await;
    // Same topic: a renewal.
    s.orchard
        .upload_push_certificate(&s.operator, s.push_certificate(&topic, 365), false)
        .await
        .unwrap();
    // Another topic: refused with an explanation, accepted with force.
    let other = random_topic().unwrap();
    let refused = s
        .orchard
        .upload_push_certificate(&s.operator, s.push_certificate(&other, 365), false)
        .await;
    let message = format!("{}", refused.err().unwrap());
    assert!(message.contains("would be lost"), "{message}");
    assert_eq!(s.orchard.current_topic(), topic);
    s.orchard
        .upload_push_certificate(&s.operator, s.push_certificate(&other, 365), true)
        .await
        .unwrap();
    assert_eq!(s.orchard.current_topic(), other);
}

/// A node claims a push and dies before sending it (its lease is in the database, nothing went to APNs): no
/// node pushes it while the lease holds, and the first pass after the lease ran out sends it, once.
async fn a_push_claimed_by_a_node_that_died_is_sent_after_its_lease(backend: Backend) {
    let Some(s) = Setup::start(backend).await else {
        return;
    };
    s.upload_push_certificate().await;
    let token = [0x31u8; 32];
    let device_token = DeviceToken::from_bytes(&token).unwrap();
    let (channel, device) = s.enrolled(&token).await;
    s.queue(&device, &channel, RequestType::DeviceLock).await;

    // What the dying node did: its claim, and nothing after it.
    let now = s.clock.now();
    let lease = s.settings.claim_lease_seconds;
    let claimed = s
        .store
        .claim_push_leases(10, "node-that-died", now, now.plus_seconds(lease))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].channel, channel);

    // The push is still owed, but leased: this node leaves it alone until the lease runs out.
    assert_eq!(s.store.count_due_pushes().await.unwrap(), 1);
    assert_eq!(s.dispatch().await.claimed, 0);
    s.clock.advance(lease - 1);
    assert_eq!(s.dispatch().await.claimed, 0);
    assert!(s.push.apns.pushes_for(&device_token).is_empty());

    s.clock.advance(1);
    let stats = s.dispatch().await;
    assert_eq!(stats.delivered, 1, "{stats:?}");
    assert_eq!(s.push.apns.pushes_for(&device_token).len(), 1);
    // Settled only now that APNs answered: nothing is owed any more, and the late node cannot undo it.
    assert_eq!(s.store.count_due_pushes().await.unwrap(), 0);
    s.store
        .release_push(
            &channel,
            "node-that-died",
            None,
            &orchard_store::PushResult::Failed { error: "late" },
            s.clock.now(),
        )
        .await
        .unwrap();
    assert_eq!(s.dispatch().await.claimed, 0);
    assert_eq!(s.push.apns.pushes_for(&device_token).len(), 1);
}

/// APNs answers "Unregistered" for the token a push went to, but the device sent a new TokenUpdate between the
/// claim and that answer: the new token stays alive and gets the push.
async fn a_token_update_during_a_push_keeps_the_new_token(backend: Backend) {
    let Some(s) = Setup::start(backend).await else {
        return;
    };
    s.upload_push_certificate().await;
    let old = [0x41u8; 32];
    let new = [0x42u8; 32];
    let (channel, device) = s.enrolled(&old).await;
    s.queue(&device, &channel, RequestType::DeviceLock).await;

    // The dispatcher's claim carries the old token …
    let now = s.clock.now();
    let claimed = s
        .store
        .claim_push_leases(10, "dispatcher", now, now.plus_seconds(300))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].push_token, old.to_vec());
    // … the device rotates its token while the push is in flight …
    s.token_update(&device, &channel, &new).await;
    // … and APNs's answer for the old token arrives.
    let marked = s
        .store
        .mark_push_token_dead(&claimed[0], "dispatcher", 410, "Unregistered", now)
        .await
        .unwrap();
    assert!(!marked, "the new token was marked dead");
    let stored = s.store.get_channel(&channel).await.unwrap().unwrap();
    assert_eq!(stored.push_token, Some(new.to_vec()));

    // The push is still owed and goes to the new token over real APNs.
    let stats = s.dispatch().await;
    assert_eq!(stats.delivered, 1, "{stats:?}");
    let new_token = DeviceToken::from_bytes(&new).unwrap();
    assert_eq!(s.push.apns.pushes_for(&new_token).len(), 1);

    // The same answer for the token the channel still has does mark it dead.
    let dead = DeviceToken::from_bytes(&new).unwrap();
    s.push.apns.mark_unregistered(&dead);
    s.queue(&device, &channel, RequestType::DeviceLock).await;
    let stats = s.dispatch().await;
    assert_eq!(stats.dead_tokens, 1, "{stats:?}");
    assert_eq!(s.store.count_due_pushes().await.unwrap(), 0);
}

/// 429 with Retry-After holds that device's push until then (the other devices go on); a 503 pauses the whole
/// node until its retry time. The injected clock moves; nothing sleeps (the client does not retry by itself).
async fn retry_after_is_honoured(backend: Backend) {
    let Some(s) = Setup::start_with(backend, |settings| {
        settings.apns.retry.max_attempts = 1;
    })
    .await
    else {
        return;
    };
    s.upload_push_certificate().await;
    let throttled = [0x51u8; 32];
    let other = [0x52u8; 32];
    let throttled_token = DeviceToken::from_bytes(&throttled).unwrap();
    let other_token = DeviceToken::from_bytes(&other).unwrap();
    let (c1, d1) = s.enrolled(&throttled).await;
    let (c2, d2) = s.enrolled(&other).await;

    s.push.apns.inject(
        FaultScope::Token(throttled_token.clone()),
        Fault::TooManyRequests {
            retry_after_seconds: Some(120),
        },
        1,
    );
    s.queue(&d1, &c1, RequestType::DeviceLock).await;
    let stats = s.dispatch().await;
    assert_eq!((stats.delivered, stats.requeued), (0, 1), "{stats:?}");
    // The device API shows the throttling and until when nothing is pushed.
    let push = push_view(&s, &d1).await;
    assert!(
        push.last_result
            .as_deref()
            .is_some_and(|r| r.starts_with("retry later: 429")),
        "{push:?}"
    );
    assert_eq!(
        push.not_before,
        Some(s.clock.now().plus_seconds(120).to_rfc3339())
    );
    assert!(push.owed);
    // Still owed, but not before Retry-After; another device's push is not held up.
    s.queue(&d2, &c2, RequestType::DeviceLock).await;
    let stats = s.dispatch().await;
    assert_eq!((stats.claimed, stats.delivered), (1, 1), "{stats:?}");
    s.clock.advance(119);
    assert_eq!(s.dispatch().await.claimed, 0);
    s.clock.advance(1);
    let stats = s.dispatch().await;
    assert_eq!(stats.delivered, 1, "{stats:?}");
    assert_eq!(s.push.apns.pushes_for(&throttled_token).len(), 1);

    // 503: the whole node waits (the client's backoff is the retry time without a Retry-After header).
    s.push
        .apns
        .inject(FaultScope::AllTokens, Fault::ServiceUnavailable, 1);
    s.queue(&d1, &c1, RequestType::DeviceLock).await;
    let stats = s.dispatch().await;
    assert_eq!(stats.requeued, 1, "{stats:?}");
    s.queue(&d2, &c2, RequestType::DeviceLock).await;
    assert_eq!(s.dispatch().await.claimed, 0);
    s.clock.advance(1);
    let stats = s.dispatch().await;
    assert_eq!(stats.delivered, 2, "{stats:?}");
    assert_eq!(s.push.apns.pushes_for(&other_token).len(), 2);
}

/// The push state of the device's channel as the device API shows it (operator's view).
async fn push_view(
    s: &Setup,
    device: &orchard_store::Device,
) -> orchard_core::device::views::ChannelPushView {
    let detail = s
        .orchard
        .device_detail(s.operator.principal(), device.id)
        .await
        .unwrap();
    let mut channels = detail.channels.into_iter();
    let channel = channels.next().expect("the device channel");
    assert!(channels.next().is_none());
    channel.push
}

/// APNs refuses the certificate while node 1 pushes: node 2 on the same database stops too (and says why),
/// and a newly uploaded certificate lets both push again.
async fn a_refused_certificate_stops_every_node(backend: Backend) {
    let Some(s) = Setup::start(backend).await else {
        return;
    };
    let topic = s.upload_push_certificate().await;
    let second = s.another_node().await;
    second
        .load_push_certificate(&second.system())
        .await
        .unwrap();
    assert!(second
        .push_certificate_status()
        .unwrap()
        .pushes_stopped
        .is_none());
    let token = [0x61u8; 32];
    let device_token = DeviceToken::from_bytes(&token).unwrap();
    let (channel, device) = s.enrolled(&token).await;

    s.push.apns.inject(
        FaultScope::AllTokens,
        Fault::Status {
            status: 403,
            reason: "BadCertificate".into(),
        },
        1,
    );
    s.queue(&device, &channel, RequestType::DeviceLock).await;
    let stats = s.dispatch().await;
    assert_eq!(stats.requeued, 1, "{stats:?}");
    // Node 2 never talked to APNs, yet it stops: the refusal is in the database.
    assert_eq!(
        second
            .dispatch_pushes_once(&second.system(), 100)
            .await
            .unwrap()
            .claimed,
        0
    );
    let status = second.push_certificate_status().unwrap();
    assert!(
        status
            .pushes_stopped
            .as_deref()
            .is_some_and(|r| r.contains("BadCertificate")),
        "{status:?}"
    );
    assert_eq!(s.store.count_due_pushes().await.unwrap(), 1);
    assert_eq!(s.push.apns.delivered_count(), 0);

    // A new certificate uploaded on node 1 clears it for everyone: node 2 takes it at its next pass.
    s.orchard
        .upload_push_certificate(&s.operator, s.push_certificate(&topic, 365), false)
        .await
        .unwrap();
    next_pass_delivers_the_push(&s, &second, &device_token).await;
}

/// Node 2 holds a certificate APNs no longer takes (here: from a CA the local APNs does not trust, so the
/// TLS handshake fails) while node 1 uploads its replacement: node 2's first failed push makes it read the
/// active certificate, and its next pass delivers, without waiting for the housekeeping's reload.
async fn a_certificate_replaced_on_another_node_is_taken_at_the_first_failed_push(
    backend: Backend,
) {
    let Some(s) = Setup::start(backend).await else {
        return;
    };
    let topic = random_topic().unwrap();
    let now = s.clock.now();
    let foreign_ca = orchard_pki::CertificateAuthority::generate(
        "Not Apple's Push CA",
        orchard_types::UnixTime(now.0 - DAY),
        400,
    )
    .unwrap();
    let stale = orchard_apns::fake::issue_push_certificate(
        &foreign_ca,
        &topic,
        orchard_types::UnixTime(now.0 - 60),
        now.plus_seconds(365 * DAY),
    )
    .unwrap();
    s.orchard
        .upload_push_certificate(
            &s.operator,
            orchard_core::push::PushCertificateUpload::Pem {
                certificate: stale.cert_pem(),
                private_key: stale.key_pem().expose().clone(),
            },
            false,
        )
        .await
        .unwrap();
    let second = s.another_node().await;
    second
        .load_push_certificate(&second.system())
        .await
        .unwrap();
    let token = [0x62u8; 32];
    let device_token = DeviceToken::from_bytes(&token).unwrap();
    let (channel, device) = s.enrolled(&token).await;

    // Node 1 renews the certificate; node 2 has not reloaded it.
    s.orchard
        .upload_push_certificate(&s.operator, s.push_certificate(&topic, 365), false)
        .await
        .unwrap();
    s.queue(&device, &channel, RequestType::DeviceLock).await;
    let failing = second
        .dispatch_pushes_once(&second.system(), 100)
        .await
        .unwrap();
    assert_eq!(
        (failing.claimed, failing.delivered, failing.requeued),
        (1, 0, 1),
        "{failing:?}"
    );
    assert!(s.push.apns.stats().tls_failures >= 1);
    assert_eq!(
        s.store.count_due_pushes().await.unwrap(),
        1,
        "the push stays owed"
    );

    next_pass_delivers_the_push(&s, &second, &device_token).await;
}

/// `node`'s next dispatcher pass delivers the one push owed, to `token`.
async fn next_pass_delivers_the_push(s: &Setup, node: &orchard_core::Orchard, token: &DeviceToken) {
    let stats = node
        .dispatch_pushes_once(&node.system(), 100)
        .await
        .unwrap();
    assert_eq!(stats.delivered, 1, "{stats:?}");
    assert_eq!(s.push.apns.pushes_for(token).len(), 1);
}

orchard_testkit::backend_tests! {
    a_certificate_replaced_on_another_node_is_taken_at_the_first_failed_push => a_certificate_replaced_on_another_node_is_taken_at_the_first_failed_push;
    expiry_is_warned_from_60_days_and_an_expired_certificate_stops_pushes_cleanly => expiry_is_warned_from_60_days_and_an_expired_certificate_stops_pushes_cleanly;
    dead_tokens_retries_and_refused_certificates => dead_tokens_retries_and_refused_certificates;
    renewal_guard => renewal_guard;
    a_push_claimed_by_a_node_that_died_is_sent_after_its_lease => a_push_claimed_by_a_node_that_died_is_sent_after_its_lease;
    a_token_update_during_a_push_keeps_the_new_token => a_token_update_during_a_push_keeps_the_new_token;
    retry_after_is_honoured => retry_after_is_honoured;
    a_refused_certificate_stops_every_node => a_refused_certificate_stops_every_node;
}
